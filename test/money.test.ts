import t from 'tap';
import { formatWei, maxWeiDigits, parsePositiveWei, parseWei, splitCost, weiStringPattern } from '../src/money.ts';
import { mulberry32, randomBigint, seedFromEnvironment } from './support/random.ts';

const seventyEight = '9'.repeat(78);
const seventyNine = '1' + '0'.repeat(78);
const wirePattern = new RegExp(weiStringPattern);

t.test('parseWei', async (t) => {
  t.test('accepts canonical decimal strings up to 78 digits', async (t) => {
    t.equal(maxWeiDigits, 78);
    t.equal(parseWei('0', 'amount_wei'), 0n);
    t.equal(parseWei('1', 'amount_wei'), 1n);
    t.equal(parseWei('1000000000000000000', 'amount_wei'), 10n ** 18n);
    t.equal(parseWei(seventyEight, 'amount_wei'), 10n ** 78n - 1n);
  });

  const refused: Array<[string, unknown]> = [
    ['a negative amount', '-1'],
    ['negative zero', '-0'],
    ['a fraction', '1.5'],
    ['a trailing point', '1.'],
    ['an exponent', '1e18'],
    ['an upper-case exponent', '1E3'],
    ['a leading zero', '01'],
    ['two zeros', '00'],
    ['a plus sign', '+1'],
    ['a leading space', ' 1'],
    ['a trailing space', '1 '],
    ['a trailing newline', '1\n'],
    ['hexadecimal', '0x10'],
    ['an underscore separator', '1_000'],
    ['non-ASCII digits', '١٢'],
    ['the empty string', ''],
    ['79 digits', seventyNine],
    ['a number', 1],
    ['a bigint', 1n],
    ['null', null],
    ['undefined', undefined],
    ['an object', { amount: '1' }],
  ];
  for (const [name, value] of refused) {
    t.test(`refuses ${name}`, async (t) => {
      t.throws(() => parseWei(value, 'amount_wei'), { name: 'DomainError', code: 'invalid_amount', param: 'amount_wei' });
    });
  }

  t.test('agrees with the wire pattern published for zod and OpenAPI', async (t) => {
    for (const [name, value] of refused) {
      if (typeof value === 'string') t.notOk(wirePattern.test(value), `the pattern refuses ${name}`);
    }
    for (const value of ['0', '1', '10', seventyEight]) t.ok(wirePattern.test(value), `the pattern accepts ${value.length} digits`);
  });
});

t.test('parsePositiveWei refuses zero and accepts one', async (t) => {
  t.throws(() => parsePositiveWei('0', 'amount_wei'), { code: 'invalid_amount' });
  t.equal(parsePositiveWei('1', 'amount_wei'), 1n);
});

t.test('formatWei round-trips through parseWei', async (t) => {
  for (const amountWei of [0n, 1n, 10n ** 18n, 10n ** 78n - 1n]) t.equal(parseWei(formatWei(amountWei), 'amount_wei'), amountWei);
});

t.test('splitCost', async (t) => {
  t.test('known splits: the node rounds down, the fee takes the remainder', async (t) => {
    t.same(splitCost(0n, 8000), { nodePayableWei: 0n, protocolFeeWei: 0n });
    t.same(splitCost(100n, 8000), { nodePayableWei: 80n, protocolFeeWei: 20n });
    t.same(splitCost(333n, 3333), { nodePayableWei: 110n, protocolFeeWei: 223n });
    t.same(splitCost(1n, 9999), { nodePayableWei: 0n, protocolFeeWei: 1n });
    t.same(splitCost(600n, 10_000), { nodePayableWei: 600n, protocolFeeWei: 0n });
    t.same(splitCost(600n, 0), { nodePayableWei: 0n, protocolFeeWei: 600n });
  });

  t.test('refuses a node share outside 0..10000 whole basis points as a bug', async (t) => {
    for (const bps of [-1, 10_001, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      t.throws(() => splitCost(100n, bps), /Invariant violated/, String(bps));
    }
  });

  t.test('invariants over random costs and shares', async (t) => {
    const seed = seedFromEnvironment();
    t.comment(`seed ${seed} (reproduce with B3IQ_SEED=${seed})`);
    const random = mulberry32(seed);
    let failures = 0;
    for (let round = 0; round < 5000 && failures < 5; round += 1) {
      const costWei = randomBigint(random, 10n ** BigInt(1 + Math.floor(random() * 78)));
      const bps = Math.floor(random() * 10_001);
      const { nodePayableWei, protocolFeeWei } = splitCost(costWei, bps);
      const exactNodeTimes10k = costWei * BigInt(bps);
      const holds =
        nodePayableWei + protocolFeeWei === costWei &&
        nodePayableWei >= 0n &&
        protocolFeeWei >= 0n &&
        nodePayableWei * 10_000n <= exactNodeTimes10k &&
        exactNodeTimes10k < (nodePayableWei + 1n) * 10_000n;
      if (!holds) {
        failures += 1;
        t.fail(`splitCost(${costWei}, ${bps}) = ${nodePayableWei} + ${protocolFeeWei} (seed ${seed})`);
      }
    }
    t.equal(failures, 0, 'node + fee = cost, both non-negative, node = floor(cost × bps / 10000)');
  });
});
