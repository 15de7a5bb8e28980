import { createHash } from 'node:crypto';
import { chmod, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { LocalKeyFile, LocalKeyVerifier } from '../../src/hostAgent/localKeys.ts';
import { createKeyWithCli, runCli } from './fixtures/cliIo.ts';
import { temporaryDataDir } from './fixtures/agentHarness.ts';

/**
 * `b3iq host-agent keys create|list|revoke` on a data directory: the secret is printed once and
 * only on stdout, stored only as its SHA-256 in an owner-only file, never taken from argv, and
 * imported secrets come from a file or stdin. The agent's verifier follows the file.
 */

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');
const secretPattern = /^b3iq_local_[A-Za-z0-9_-]{43}$/;

t.test('create prints the secret once on stdout; the file holds only its hash, mode 0600', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const run = await runCli(['keys', 'create', '--scope', 'chat,models', '--name', 'my-app', '--data-dir', dataDir]);
  t.equal(run.code, 0);
  const secret = run.stdout.trim();
  t.match(secret, secretPattern, 'stdout is the secret alone');
  t.equal(run.stdout, `${secret}\n`, 'nothing else on stdout');
  t.notOk(run.stderr.includes(secret), 'stderr does not repeat the secret');
  t.match(run.stderr, /created local key lk_[0-9a-f]{24} \(scopes chat,models\)/);

  const path = join(dataDir, 'local-keys.json');
  t.equal((await stat(path)).mode & 0o777, 0o600, 'local-keys.json is 0600');
  const text = await readFile(path, 'utf8');
  t.notOk(text.includes(secret), 'the secret is not stored');
  t.notOk(text.includes(secret.slice('b3iq_local_'.length)), 'no part of it either');
  t.ok(text.includes(sha256(secret)), 'its SHA-256 is');

  const listed = await runCli(['keys', 'list', '--json', '--data-dir', dataDir]);
  t.equal(listed.code, 0);
  const { keys } = JSON.parse(listed.stdout) as { keys: Array<Record<string, unknown>> };
  t.equal(keys.length, 1);
  t.match(keys[0], { name: 'my-app', scopes: ['chat', 'models'], status: 'active', revoked_at: null });
  t.same(Object.keys(keys[0]!).sort(), ['created_at', 'key_id', 'name', 'revoked_at', 'scopes', 'status'], 'no secret, no hash');
  t.notOk(listed.stdout.includes(sha256(secret)));
});

t.test('list and revoke: revoked keys stay listed as revoked; revoking again is harmless; unknown ids fail', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const first = await createKeyWithCli(dataDir, 'chat');
  const second = await createKeyWithCli(dataDir, 'models');
  const revoked = await runCli(['keys', 'revoke', first.keyId, '--data-dir', dataDir]);
  t.equal(revoked.code, 0);
  t.match(revoked.stdout, new RegExp(`^revoked ${first.keyId} at \\d{4}-`));
  const again = await runCli(['keys', 'revoke', first.keyId, '--data-dir', dataDir]);
  t.equal(again.code, 0, 'revoking a revoked key succeeds');
  t.equal(again.stdout, revoked.stdout, 'and keeps the first revocation time');

  const table = await runCli(['keys', 'list', '--data-dir', dataDir]);
  const lines = table.stdout.trim().split('\n');
  t.equal(lines[0], 'KEY_ID\tSTATUS\tSCOPES\tCREATED\tNAME');
  t.match(lines[1], new RegExp(`^${first.keyId}\\trevoked\\tchat\\t`));
  t.match(lines[2], new RegExp(`^${second.keyId}\\tactive\\tmodels\\t`));
  for (const secret of [first.secret, second.secret]) t.notOk(table.stdout.includes(secret));

  const unknown = await runCli(['keys', 'revoke', 'lk_000000000000000000000000', '--data-dir', dataDir]);
  t.equal(unknown.code, 1);
  t.match(unknown.stderr, /no local key lk_0+/);
});

t.test('usage errors: scope required and closed; a secret typed on the command line is refused and not echoed', async (t) => {
  const dataDir = await temporaryDataDir(t);
  for (const argv of [
    ['keys', 'create', '--data-dir', dataDir],
    ['keys', 'create', '--scope', 'chat,admin', '--data-dir', dataDir],
    ['keys', 'create', '--scope', '', '--data-dir', dataDir],
  ]) {
    const run = await runCli(argv);
    t.equal(run.code, 2, argv.join(' '));
    t.match(run.stderr, /--scope is required/);
  }
  const typed = `b3iq_local_${'A'.repeat(43)}`;
  for (const argv of [
    ['keys', 'create', typed, '--scope', 'chat', '--data-dir', dataDir],
    ['keys', 'create', '--scope', 'chat', `--secret=${typed}`, '--data-dir', dataDir],
  ]) {
    const run = await runCli(argv);
    t.equal(run.code, 2, 'refused');
    t.notOk(run.stdout.includes(typed) || run.stderr.includes(typed), 'the typed secret is not printed back');
  }
  t.same(await new LocalKeyFile(dataDir).list(), [], 'nothing was created');
  t.equal((await runCli(['keys', 'rotate', '--data-dir', dataDir])).code, 2, 'unknown action');
});

t.test('import: a secret from stdin or from an owner-only file; stdout is then the key id', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const fromStdin = `b3iq_local_${'s'.repeat(43)}`;
  const viaStdin = await runCli(['keys', 'create', '--scope', 'chat', '--secret-file', '-', '--data-dir', dataDir], `${fromStdin}\n`);
  t.equal(viaStdin.code, 0);
  t.match(viaStdin.stdout, /^lk_[0-9a-f]{24}\n$/);
  t.notOk(viaStdin.stdout.includes(fromStdin) || viaStdin.stderr.includes(fromStdin), 'an imported secret is never printed');

  const fromFile = `b3iq_local_${'f'.repeat(43)}`;
  const secretPath = join(dataDir, 'secret.txt');
  await writeFile(secretPath, `${fromFile}\n`, { mode: 0o644 });
  await chmod(secretPath, 0o644);
  const unsafe = await runCli(['keys', 'create', '--scope', 'models', '--secret-file', secretPath, '--data-dir', dataDir]);
  t.equal(unsafe.code, 1, 'a secret file others can read is refused');
  t.match(unsafe.stderr, /chmod 600/);
  await chmod(secretPath, 0o600);
  const viaFile = await runCli(['keys', 'create', '--scope', 'models', '--secret-file', secretPath, '--data-dir', dataDir]);
  t.equal(viaFile.code, 0);

  const duplicate = await runCli(['keys', 'create', '--scope', 'chat', '--secret-file', '-', '--data-dir', dataDir], fromStdin);
  t.equal(duplicate.code, 1);
  t.match(duplicate.stderr, /already registered/);
  const weak = await runCli(['keys', 'create', '--scope', 'chat', '--secret-file', '-', '--data-dir', dataDir], 'b3iq_local_short');
  t.equal(weak.code, 1);
  t.match(weak.stderr, /at least 43/);
  t.notOk(weak.stderr.includes('b3iq_local_short'), 'not even a refused secret is printed');

  const verifier = new LocalKeyVerifier(dataDir, () => t.fail('no read error expected'));
  await verifier.load();
  t.match(await verifier.check(fromStdin), { ok: true, scopes: ['chat'] });
  t.match(await verifier.check(fromFile), { ok: true, scopes: ['models'] });
});

t.test('the verifier follows the file: new keys, revocations, and a damaged file fails closed', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const errors: unknown[] = [];
  const verifier = new LocalKeyVerifier(dataDir, (error) => errors.push(error));
  await verifier.load();
  const file = new LocalKeyFile(dataDir);
  const { key, secret } = await file.create({ scopes: ['chat'], now: new Date() });
  t.match(await verifier.check(secret), { ok: true, keyId: key.key_id }, 'a key created after load is accepted');
  t.same(await verifier.check(`b3iq_local_${'x'.repeat(43)}`), { ok: false }, 'an unknown key is not');
  t.same(await verifier.check('b3iq_local_'), { ok: false }, 'nor a malformed one');
  await file.revoke(key.key_id, new Date());
  t.same(await verifier.check(secret), { ok: false }, 'a revoked key is refused at once');

  const second = await file.create({ scopes: ['models'], now: new Date() });
  await writeFile(join(dataDir, 'local-keys.json'), '{"version":', { mode: 0o600 });
  t.same(await verifier.check(second.secret), { ok: false }, 'a damaged file accepts nothing');
  t.same(await verifier.check(second.secret), { ok: false });
  t.equal(errors.length, 1, 'the failure is reported once');
  await t.rejects(file.list(), /not JSON/);
});

t.test('concurrent creates, as from several processes, do not lose a key (the lock file serialises them)', async (t) => {
  const dataDir = await temporaryDataDir(t);
  const created = await Promise.all(Array.from({ length: 8 }, () => new LocalKeyFile(dataDir).create({ scopes: ['chat'], now: new Date() })));
  const listed = await new LocalKeyFile(dataDir).list();
  t.same(listed.map((key) => key.key_id).sort(), created.map((entry) => entry.key.key_id).sort());
});
