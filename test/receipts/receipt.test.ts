import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { canonicalJson } from '../../src/canonicalJson.ts';
import { generateIdentity, type NodeIdentity } from '../../src/receipts/ed25519.ts';
import { verifySignedReceiptPortable } from '../../src/receipts/portableVerify.ts';
import {
  canonicalReceiptBytes,
  computeCostWei,
  receiptHash,
  signReceipt,
  verifySignedReceipt,
  type Receipt,
  type ReceiptVerification,
  type SignedReceipt,
} from '../../src/receipts/receipt.ts';
import { mulberry32, pick, randomBigint, randomInt, seedFromEnvironment, type Random } from '../support/random.ts';

const node = generateIdentity();
const otherNode = generateIdentity();

const baseReceipt: Receipt = {
  version: 'b3iq-receipt-v1',
  job_id: 'job_01HZX3Q4',
  node_id: 'node-7f3a',
  model_id: 'meta-llama/Llama-3.1-8B-Instruct',
  runtime_kind: 'vllm',
  stream: true,
  usage: { prompt_tokens: 1200, completion_tokens: 350, total_tokens: 1550 },
  pricing: { prompt_price_per_million_wei: '150000000000000', completion_price_per_million_wei: '600000000000000' },
  quoted_price_wei: '400000000000',
  reserved_price_wei: '500000000000',
  debited_price_wei: '390000000000',
  payout_price_wei: '351000000000',
  policy_version: '2025-06-01',
  started_at: '2025-06-01T12:00:00.000Z',
  completed_at: '2025-06-01T12:00:04.250Z',
  commitments: { request_sha256: 'a'.repeat(64), response_sha256: 'b'.repeat(64) },
};

/** Wraps arbitrary text as a correctly hashed and signed document, to isolate the later checks. */
function signText(text: string, identity: NodeIdentity = node): SignedReceipt {
  const bytes = Buffer.from(text, 'utf8');
  return {
    receipt_canonical: text,
    receipt_hash: receiptHash(bytes),
    signature_ed25519: identity.sign(bytes),
    node_key_id: identity.keyId,
    node_public_key: identity.publicKeyBase64url,
  };
}

/** Runs both verifiers, asserts that they agree, and returns the server result. */
function verifyBoth(t: Test, signed: unknown, expectedKey = node.publicKeyBase64url): ReceiptVerification {
  const server = verifySignedReceipt(signed, expectedKey);
  const portable = verifySignedReceiptPortable(signed, expectedKey);
  const summary = (result: ReceiptVerification) =>
    result.ok ? { ok: true, hash: result.receiptHash } : { ok: false, code: result.code };
  t.same(summary(portable), summary(server), `portable agrees with server (${server.ok ? 'ok' : server.code})`);
  if (server.ok && portable.ok) t.same(portable.receipt, server.receipt);
  return server;
}

function expectFailure(t: Test, signed: unknown, code: string, expectedKey?: string): void {
  const result = verifyBoth(t, signed, expectedKey);
  t.equal(result.ok ? 'ok' : result.code, code, result.ok ? 'verified' : result.detail);
}

t.test('sign and verify round trip', async (t) => {
  const signed = signReceipt(baseReceipt, node);
  t.equal(signed.receipt_canonical, canonicalJson(baseReceipt));
  t.equal(signed.receipt_canonical, canonicalReceiptBytes(baseReceipt).toString('utf8'));
  t.equal(signed.receipt_hash, createHash('sha256').update(signed.receipt_canonical).digest('hex'));
  t.equal(signed.node_key_id, node.keyId);
  t.equal(signed.node_public_key, node.publicKeyBase64url);
  const result = verifyBoth(t, signed);
  t.ok(result.ok);
  if (result.ok) {
    t.same(result.receipt, baseReceipt);
    t.equal(result.receiptHash, signed.receipt_hash);
  }
  t.equal(signed.receipt_canonical.indexOf('"commitments"'), 1, 'keys are sorted');
  const invalid = { ...baseReceipt, stream: 'yes' } as unknown as Receipt;
  t.throws(() => signReceipt(invalid, node), 'refuses to sign an invalid receipt');
});

const identifierAlphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@/+-';

function randomIdentifier(random: Random): string {
  let text = pick(random, [...'abcdefghijklmnopqrstuvwxyz0123456789']);
  for (let length = randomInt(random, 40); length > 0; length--) text += pick(random, [...identifierAlphabet]);
  return text.includes('://') ? text.replaceAll('://', ':x/') : text;
}

function randomWei(random: Random): string {
  return randomBigint(random, pick(random, [10n, 10n ** 18n, 10n ** 78n])).toString();
}

function randomReceipt(random: Random): Receipt {
  const prompt = randomInt(random, pick(random, [10, 100_000, 2 ** 52]));
  const completion = randomInt(random, pick(random, [10, 100_000, 2 ** 52]));
  const started = 1_577_836_800_000 + randomInt(random, 315_360_000_000);
  const precision = pick(random, [0, 3]);
  const iso = (milliseconds: number) => new Date(milliseconds).toISOString().replace(precision === 0 ? /\.\d{3}Z$/ : /$^/, 'Z');
  const hex = () => randomBigint(random, 2n ** 256n).toString(16).padStart(64, '0');
  return {
    version: 'b3iq-receipt-v1',
    job_id: randomIdentifier(random),
    node_id: randomIdentifier(random),
    model_id: randomIdentifier(random),
    runtime_kind: randomIdentifier(random),
    stream: random() < 0.5,
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
    pricing: { prompt_price_per_million_wei: randomWei(random), completion_price_per_million_wei: randomWei(random) },
    quoted_price_wei: randomWei(random),
    reserved_price_wei: randomWei(random),
    debited_price_wei: randomWei(random),
    payout_price_wei: randomWei(random),
    policy_version: randomIdentifier(random),
    started_at: iso(started - (precision === 0 ? started % 1000 : 0)),
    completed_at: iso(started + randomInt(random, 600_000) * 1000),
    commitments: { request_sha256: hex(), response_sha256: hex() },
  };
}

t.test('server and portable verifiers agree on random receipts', async (t) => {
  const seed = seedFromEnvironment();
  t.comment(`seed ${seed} (rerun with B3IQ_SEED=${seed})`);
  const random = mulberry32(seed);
  for (let index = 0; index < 50; index++) {
    const receipt = randomReceipt(random);
    const signer = pick(random, [node, otherNode]);
    const signed = signReceipt(receipt, signer);
    const result = verifyBoth(t, signed, signer.publicKeyBase64url);
    t.ok(result.ok, `receipt ${index} verifies`);
    if (result.ok) t.same(result.receipt, receipt);
    expectFailure(t, signed, 'invalid_signature', (signer === node ? otherNode : node).publicKeyBase64url);

    const bytes = Buffer.from(signed.receipt_canonical, 'utf8');
    const position = randomInt(random, bytes.length);
    bytes[position] = (bytes[position] ?? 0) ^ (1 << randomInt(random, 7));
    const flipped = { ...signed, receipt_canonical: bytes.toString('utf8') };
    expectFailure(t, flipped, 'receipt_hash_mismatch', signer.publicKeyBase64url);
    // With the hash recomputed, the flip must be caught by the schema or by the signature, alike in both.
    const rehashed = { ...flipped, receipt_hash: receiptHash(Buffer.from(flipped.receipt_canonical, 'utf8')) };
    const rehashedResult = verifyBoth(t, rehashed, signer.publicKeyBase64url);
    t.not(rehashedResult.ok, true, 'a flipped byte never verifies');
  }
});

t.test('tampered receipts', async (t) => {
  const signed = signReceipt(baseReceipt, node);
  const canonical = signed.receipt_canonical;

  t.test('a flipped byte of the canonical bytes is a receipt_hash_mismatch', async (t) => {
    expectFailure(t, { ...signed, receipt_canonical: canonical.replace('Llama', 'Llam4') }, 'receipt_hash_mismatch');
    expectFailure(t, { ...signed, receipt_canonical: canonical.replace('{', '[') }, 'receipt_hash_mismatch');
    expectFailure(t, { ...signed, receipt_hash: 'c'.repeat(64) }, 'receipt_hash_mismatch');
  });

  t.test('a tamper with the hash recomputed is an invalid_signature', async (t) => {
    const tampered = canonical.replace('"debited_price_wei":"390000000000"', '"debited_price_wei":"390000000001"');
    t.not(tampered, canonical);
    const rehashed = { ...signed, receipt_canonical: tampered, receipt_hash: receiptHash(Buffer.from(tampered)) };
    expectFailure(t, rehashed, 'invalid_signature');
  });

  t.test("another node's key is an invalid_signature", async (t) => {
    expectFailure(t, signed, 'invalid_signature', otherNode.publicKeyBase64url);
    expectFailure(t, signReceipt(baseReceipt, otherNode), 'invalid_signature');
    const borrowedSignature = {
      ...signReceipt(baseReceipt, otherNode),
      node_key_id: node.keyId,
      node_public_key: node.publicKeyBase64url,
    };
    expectFailure(t, borrowedSignature, 'invalid_signature');
    expectFailure(t, { ...signed, signature_ed25519: Buffer.alloc(64, 7).toString('base64url') }, 'invalid_signature');
    expectFailure(t, signed, 'invalid_signature', 'not-a-key');
  });

  t.test('a correctly hashed and signed body that breaks the format is an invalid_request', async (t) => {
    const reordered = JSON.stringify(baseReceipt);
    const withUsage = (usage: object) => canonicalJson({ ...baseReceipt, usage });
    t.not(reordered, canonical);
    const cases: Array<[string, string]> = [
      ['non-canonical key order', reordered],
      ['insignificant whitespace', JSON.stringify(JSON.parse(canonical), null, 1)],
      ['a non-canonical number', canonical.replace('"total_tokens":1550', '"total_tokens":1550.0')],
      ['a duplicated key', canonical.replace('{', '{"commitments":{},')],
      ['an extra field', canonicalJson({ ...baseReceipt, prompt: 'hello' })],
      ['an extra nested field', withUsage({ ...baseReceipt.usage, cached_tokens: 0 })],
      ['a __proto__ field', canonical.replace('{', '{"__proto__":{},')],
      ['a missing field', canonicalJson({ ...baseReceipt, policy_version: undefined })],
      ['usage total mismatch', withUsage({ ...baseReceipt.usage, total_tokens: 1551 })],
      ['negative tokens', withUsage({ prompt_tokens: -1, completion_tokens: 1, total_tokens: 0 })],
      ['fractional tokens', withUsage({ prompt_tokens: 0.5, completion_tokens: 1, total_tokens: 1.5 })],
      ['unsafe integer tokens', withUsage({ prompt_tokens: 2 ** 53, completion_tokens: 0, total_tokens: 2 ** 53 })],
      ['wei with a leading zero', canonicalJson({ ...baseReceipt, payout_price_wei: '0351' })],
      ['wei of 79 digits', canonicalJson({ ...baseReceipt, quoted_price_wei: '1'.repeat(79) })],
      ['wei as a number', canonicalJson({ ...baseReceipt, reserved_price_wei: 5 })],
      ['an impossible date', canonicalJson({ ...baseReceipt, started_at: '2025-02-30T00:00:00Z' })],
      ['a local-time timestamp', canonicalJson({ ...baseReceipt, started_at: '2025-06-01T12:00:00+02:00' })],
      ['completed before started', canonicalJson({ ...baseReceipt, completed_at: '2025-06-01T11:59:59Z' })],
      ['a URL as an identifier', canonicalJson({ ...baseReceipt, node_id: 'http://10.0.0.5:8831' })],
      ['a path as an identifier', canonicalJson({ ...baseReceipt, model_id: '/home/operator/models/llama.gguf' })],
      ['a space in an identifier', canonicalJson({ ...baseReceipt, job_id: 'job 1' })],
      ['a lone surrogate', canonical.replace('node-7f3a', 'node-\ud800')],
      ['negative zero', canonical.replace('"completion_tokens":350', '"completion_tokens":-0')],
      ['a nanosecond timestamp before started_at', canonicalJson({ ...baseReceipt, completed_at: '2025-06-01T11:59:59.999999999Z' })],
      ['an upper-case commitment', canonical.replace('a'.repeat(64), 'A'.repeat(64))],
      ['another version', canonicalJson({ ...baseReceipt, version: 'b3iq-receipt-v2' })],
      ['stream as a string', canonicalJson({ ...baseReceipt, stream: 'true' })],
      ['an array', '[1]'],
      ['not JSON', '{"version":'],
    ];
    for (const [name, text] of cases) {
      t.test(name, async (t) => expectFailure(t, signText(text), 'invalid_request'));
    }
  });

  t.test('a malformed envelope is an invalid_request', async (t) => {
    const lastKeyCharacter = signed.node_public_key.at(-1) === 'A' ? 'E' : 'A';
    const cases: Array<[string, unknown]> = [
      ['null', null],
      ['a string', canonical],
      ['an array', [signed]],
      ['a missing field', { ...signed, node_key_id: undefined }],
      ['an extra field', { ...signed, customer_id: 'c1' }],
      ['an upper-case hash', { ...signed, receipt_hash: signed.receipt_hash.toUpperCase() }],
      ['a short signature', { ...signed, signature_ed25519: signed.signature_ed25519.slice(2) }],
      ['a padded signature', { ...signed, signature_ed25519: `${signed.signature_ed25519}==` }],
      ['non-zero unused public key bits', { ...signed, node_public_key: `${signed.node_public_key.slice(0, -1)}B` }],
      ['a key id that names another key', { ...signed, node_key_id: otherNode.keyId }],
      ['a key id for a changed key', { ...signed, node_public_key: `${signed.node_public_key.slice(0, -1)}${lastKeyCharacter}` }],
      ['an oversized body', signText(`{"a":"${'x'.repeat(16_384)}"}`)],
      ['a numeric hash', { ...signed, receipt_hash: 1 }],
    ];
    for (const [name, value] of cases) {
      t.test(name, async (t) => expectFailure(t, value, 'invalid_request'));
    }
  });
});

t.test('computeCostWei rounds up to whole wei with bigint arithmetic', async (t) => {
  const cost = (prompt: number, completion: number, promptPrice: string, completionPrice: string) =>
    computeCostWei(
      { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion },
      { prompt_price_per_million_wei: promptPrice, completion_price_per_million_wei: completionPrice },
    );
  t.equal(cost(0, 0, '5', '7'), 0n, 'no usage is free');
  t.equal(cost(1_000_000, 0, '5', '7'), 5n, 'exact');
  t.equal(cost(1_000_000, 2_000_000, '5', '7'), 19n, 'prompt and completion priced separately');
  t.equal(cost(1, 0, '1', '0'), 1n, 'a millionth of a wei rounds up to one wei');
  t.equal(cost(999_999, 0, '1', '0'), 1n);
  t.equal(cost(1_000_001, 0, '1', '0'), 2n);
  t.equal(cost(3, 1, '333333', '1'), 1n, 'fractions of the two parts add before rounding');
  t.equal(cost(1200, 350, '150000000000000', '600000000000000'), 390_000_000_000n);
  const maxTokens = Number.MAX_SAFE_INTEGER;
  const expected = BigInt(`${maxTokens}${'0'.repeat(72)}`) - 9_007_199_254n;
  t.equal(cost(maxTokens, 0, '9'.repeat(78), '0'), expected, 'largest tokens × largest price, no precision lost');
  t.equal(cost(0, maxTokens, '0', '9'.repeat(78)), expected);
  t.throws(() => cost(-1, 0, '1', '1'), RangeError);
  t.throws(() => cost(0.5, 0, '1', '1'), RangeError);
  t.throws(() => cost(1, 0, '1e6', '1'), RangeError);
  t.throws(() => cost(1, 0, '-1', '1'), RangeError);
});

t.test('RFC 8785 canonicalization', async (t) => {
  t.test('§3.2.2 example: sorting, numbers and string escaping', async (t) => {
    const input = String.raw`{
      "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }`;
    const expected =
      String.raw`{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],` +
      String.raw`"string":"€$\u000f\nA'B\"\\\\\"/"}`;
    t.equal(canonicalJson(JSON.parse(input)), expected);
  });

  t.test('§3.2.3 example: keys sort by UTF-16 code units, not code points', async (t) => {
    const input = {
      '\u20ac': 'Euro Sign',
      '\r': 'Carriage Return',
      '\ufb33': 'Hebrew Letter Dalet With Dagesh',
      '1': 'One',
      '\ud83d\ude00': 'Emoji: Grinning Face',
      '\u0080': 'Control',
      '\u00f6': 'Latin Small Letter O With Diaeresis',
    };
    // Compared as text: Object.keys would move the integer-like key "1" to the front.
    const expected =
      '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",' +
      '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}';
    t.equal(canonicalJson(input), expected);
  });

  t.test('Appendix B: IEEE 754 numbers', async (t) => {
    const vectors: Array<[string, string]> = [
      ['0000000000000000', '0'],
      ['8000000000000000', '0'],
      ['0000000000000001', '5e-324'],
      ['8000000000000001', '-5e-324'],
      ['7fefffffffffffff', '1.7976931348623157e+308'],
      ['ffefffffffffffff', '-1.7976931348623157e+308'],
      ['4340000000000000', '9007199254740992'],
      ['c340000000000000', '-9007199254740992'],
      ['4430000000000000', '295147905179352830000'],
      ['44b52d02c7e14af5', '9.999999999999997e+22'],
      ['44b52d02c7e14af6', '1e+23'],
      ['44b52d02c7e14af7', '1.0000000000000001e+23'],
      ['444b1ae4d6e2ef4e', '999999999999999700000'],
      ['444b1ae4d6e2ef4f', '999999999999999900000'],
      ['444b1ae4d6e2ef50', '1e+21'],
      ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
      ['3eb0c6f7a0b5ed8d', '0.000001'],
      ['41b3de4355555553', '333333333.3333332'],
      ['41b3de4355555554', '333333333.33333325'],
      ['41b3de4355555555', '333333333.3333333'],
      ['becbf647612f3696', '-0.0000033333333333333333'],
      ['43143ff3c1cb0959', '1424953923781206.2'],
    ];
    for (const [bits, expected] of vectors) t.equal(canonicalJson(Buffer.from(bits, 'hex').readDoubleBE(0)), expected, bits);
    t.throws(() => canonicalJson(Number.NaN), 'NaN has no JSON form');
    t.throws(() => canonicalJson(Number.POSITIVE_INFINITY), 'Infinity has no JSON form');
  });

  t.test('strings: control characters as lower-case \\u escapes, everything else verbatim', async (t) => {
    t.equal(canonicalJson('\u0000\u0008\t\n\f\r\u001f'), String.raw`"\u0000\b\t\n\f\r\u001f"`);
    t.equal(canonicalJson('"\\/ é 😀 \u2028'), '"\\"\\\\/ é 😀 \u2028"');
    t.throws(() => canonicalJson('\ud800'), 'a lone surrogate is refused');
  });
});
