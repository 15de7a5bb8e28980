import t from 'tap';
import { parseCommandLine } from '../../src/cli/arguments.ts';

/** Option values that begin with a dash, as one base64url key in 64 does. */

const options = {
  'node-public-key': { type: 'string' },
  'max-price-wei': { type: 'string' },
  out: { type: 'string', short: 'o' },
  body: { type: 'boolean' },
} as const;

t.test('a value that begins with a dash is the value of the option before it', async (t) => {
  const { values, positionals } = parseCommandLine({ args: ['--node-public-key', '-Xy_z', '-o', '-file', 'receipt.json'], options, allowPositionals: true });
  t.equal(values['node-public-key'], '-Xy_z');
  t.equal(values.out, '-file');
  t.same(positionals, ['receipt.json']);
  t.equal(parseCommandLine({ args: ['--max-price-wei', '-5'], options }).values['max-price-wei'], '-5', 'a negative number reaches the command, whose own validation refuses it');
});

t.test('the usual spellings parse as before', async (t) => {
  const { values } = parseCommandLine({ args: ['--node-public-key=-abc', '--out', 'x', '--body'], options });
  t.same({ ...values }, { 'node-public-key': '-abc', out: 'x', body: true });
});

t.test('a forgotten value is still an error, not the next option taken as the value', async (t) => {
  t.throws(() => parseCommandLine({ args: ['--out', '--body'], options }), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  t.throws(() => parseCommandLine({ args: ['--out', '--node-public-key=abc'], options }), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  t.throws(() => parseCommandLine({ args: ['--out'], options }), { code: 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' });
  t.throws(() => parseCommandLine({ args: ['--unknown', '-x'], options }), { code: 'ERR_PARSE_ARGS_UNKNOWN_OPTION' });
});

t.test('after -- everything is a positional', async (t) => {
  const { values, positionals } = parseCommandLine({ args: ['--', '--out', '-x'], options, allowPositionals: true });
  t.same({ ...values }, {});
  t.same(positionals, ['--out', '-x']);
});
