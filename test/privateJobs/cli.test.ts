import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runPrivateCli, runPurgeCli, type PrivateCliIo } from '../../src/cli/private.ts';
import { privateJobBody } from '../../src/privateJobs/schemas.ts';
import { encodeBase64url, generateX25519SecretKey, openRequest, requestEnvelopeSchema, sealResponse, transportKeyId, x25519PublicKey, type Envelope } from '../../src/privateJobs/transport.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { devModel, fundedCustomer, jobBody, scriptedNode, sealFor, startPrivateLedger } from './support.ts';

/** `b3iq private seal|open` as a user runs them, and `b3iq admin purge` against a real database. */

const directory = await mkdtemp(join(tmpdir(), 'b3iq-private-cli-'));
t.teardown(() => rm(directory, { recursive: true, force: true }));
const nodeSecret = generateX25519SecretKey();
const nodePublic = x25519PublicKey(nodeSecret);
const nodeId = `node_${'ab'.repeat(12)}`;
const request = Buffer.from(JSON.stringify({ model: devModel, messages: [{ role: 'user', content: 'a private question' }] }), 'utf8');

function io(stdin: Buffer | string = '') {
  const out = { stdout: Buffer.alloc(0), stderr: '' };
  const streams: PrivateCliIo = {
    readStdin: async () => Buffer.from(stdin),
    stdout: (bytes) => void (out.stdout = Buffer.concat([out.stdout, Buffer.from(bytes)])),
    stderr: (text) => void (out.stderr += text),
  };
  return { streams, out };
}

t.test('seal creates a private client key, seals the request byte for byte, and open reads the answer', async (t) => {
  const keyPath = join(directory, 'job1.key');
  const sealing = io(request);
  t.equal(await runPrivateCli(['seal', '--node-public-key', encodeBase64url(nodePublic), '--client-key', keyPath], sealing.streams), 0, sealing.out.stderr);
  t.equal((await stat(keyPath)).mode & 0o777, 0o600, 'the client key file is owner-only');
  const envelope = JSON.parse(sealing.out.stdout.toString('utf8')) as Envelope;
  t.ok(requestEnvelopeSchema.safeParse(envelope).success);
  t.equal(envelope.key_id, transportKeyId(nodePublic));
  t.same(Buffer.from(openRequest(envelope, nodeSecret)), request, 'the node reads exactly the bytes given');
  t.notOk((await readFile(keyPath, 'utf8')).includes('private question'));

  const answer = Buffer.from('{"choices":[{"message":{"content":"the answer"}}]}');
  const response = sealResponse(answer, nodeSecret, Buffer.from(envelope.client_public_key_x25519, 'base64url'));
  const opening = io(JSON.stringify({ job_id: 'x', status: 'completed', encrypted_response: response }));
  t.equal(await runPrivateCli(['open', '--client-key', keyPath], opening.streams), 0, opening.out.stderr);
  t.same(opening.out.stdout, answer, 'a whole job on stdin opens its response');
  const bare = io(JSON.stringify(response));
  t.equal(await runPrivateCli(['open', '--client-key', keyPath], bare.streams), 0);
  t.same(bare.out.stdout, answer, 'so does a bare envelope');

  const bytes = Buffer.from(response.ciphertext, 'base64url');
  bytes[0]! ^= 1;
  const tampered = io(JSON.stringify({ ...response, ciphertext: bytes.toString('base64url') }));
  t.equal(await runPrivateCli(['open', '--client-key', keyPath], tampered.streams), 1, 'a tampered answer does not open');
  t.match(tampered.out.stderr, /does not authenticate/);
  t.equal(tampered.out.stdout.length, 0, 'and prints nothing');
  const pending = io(JSON.stringify({ job_id: 'x', encrypted_response: null }));
  t.equal(await runPrivateCli(['open', '--client-key', keyPath], pending.streams), 2);
});

t.test('a node public key that begins with a dash is taken as the value of --node-public-key', async (t) => {
  let secret = generateX25519SecretKey();
  for (let tries = 0; !encodeBase64url(x25519PublicKey(secret)).startsWith('-') && tries < 10_000; tries += 1) secret = generateX25519SecretKey();
  const key = encodeBase64url(x25519PublicKey(secret));
  t.ok(key.startsWith('-'), 'one key in 64 begins with a dash');
  const sealing = io(request);
  t.equal(await runPrivateCli(['seal', '--node-public-key', key, '--client-key', join(directory, 'dash.key')], sealing.streams), 0, sealing.out.stderr);
  const envelope = JSON.parse(sealing.out.stdout.toString('utf8')) as Envelope;
  t.same(Buffer.from(openRequest(envelope, secret)), request);
});

t.test('seal --body with a --node-key file prints a POST body the ledger accepts', async (t) => {
  const nodeKeyPath = join(directory, 'node-key.json');
  await writeFile(nodeKeyPath, JSON.stringify({ node_id: nodeId, key_id: transportKeyId(nodePublic), public_key_x25519: encodeBase64url(nodePublic) }));
  const sealing = io(request);
  const code = await runPrivateCli(['seal', '--node-key', nodeKeyPath, '--client-key', join(directory, 'job2.key'), '--body', '--job-id', 'job-cli-1', '--max-price-wei', '1000'], sealing.streams);
  t.equal(code, 0, sealing.out.stderr);
  const body = privateJobBody.parse(JSON.parse(sealing.out.stdout.toString('utf8')));
  t.same([body.job_id, body.node_id, body.model_id, body.max_price_wei], ['job-cli-1', nodeId, devModel, '1000']);
});

t.test('seal refuses what it cannot do safely, with usage errors', async (t) => {
  const keyPath = join(directory, 'job3.key');
  const first = io(request);
  await runPrivateCli(['seal', '--node-public-key', encodeBase64url(nodePublic), '--client-key', keyPath], first.streams);
  const otherNode = io(request);
  t.equal(await runPrivateCli(['seal', '--node-public-key', encodeBase64url(x25519PublicKey(generateX25519SecretKey())), '--client-key', keyPath], otherNode.streams), 2);
  t.match(otherNode.out.stderr, /another node key/);
  const notJson = io('hello');
  t.equal(await runPrivateCli(['seal', '--node-public-key', encodeBase64url(nodePublic), '--client-key', join(directory, 'job4.key')], notJson.streams), 2);
  const both = io(request);
  t.equal(await runPrivateCli(['seal', '--node-public-key', 'x', '--node-key', 'y', '--client-key', join(directory, 'job5.key')], both.streams), 2);
  const noKey = io(request);
  t.equal(await runPrivateCli(['seal', '--node-public-key', encodeBase64url(nodePublic)], noKey.streams), 2, 'the client key file is required');
  await chmod(keyPath, 0o644);
  await t.rejects(runPrivateCli(['open', '--client-key', keyPath], io('{}').streams), /accessible by group or others/, 'a readable private key is refused');
});

t.test('b3iq admin purge removes old terminal envelopes from a real database and leaves billing alone', async (t) => {
  const server = await startEmbeddedPostgres();
  t.teardown(() => server.stop());
  const ledger = await startPrivateLedger(server);
  t.teardown(() => ledger.close());
  const node = await scriptedNode(ledger);
  const customer = await fundedCustomer(ledger.app, '10000000000000');
  const sealed = await sealFor(ledger.app, node.nodeId, JSON.parse(request.toString('utf8')));
  const queued = (await ledger.app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) })).json();
  const failed = await node.send(`/v1/nodes/${node.nodeId}/commands/${queued.command_id}/fail`, node.request('fail', { command_id: queued.command_id, job_id: queued.job_id, reason: 'runtime_failed' }));
  t.equal(failed.statusCode, 200, failed.body);
  await new Promise((resolve) => setTimeout(resolve, 5));
  const cutoff = new Date().toISOString();
  const previous = process.env['DATABASE_URL'];
  process.env['DATABASE_URL'] = ledger.databaseUrl;
  t.teardown(() => {
    if (previous === undefined) delete process.env['DATABASE_URL'];
    else process.env['DATABASE_URL'] = previous;
  });
  const dry = io();
  t.equal(await runPurgeCli(['--terminal-before', cutoff, '--reason', 'cli retention', '--dry-run'], dry.streams), 0);
  t.match(dry.out.stdout.toString('utf8'), /would purge the envelopes of 1 private jobs/);
  const real = io();
  t.equal(await runPurgeCli(['--terminal-before', cutoff, '--reason', 'cli retention', '--limit', '1'], real.streams), 0, real.out.stderr);
  t.match(real.out.stdout.toString('utf8'), /purged the envelopes of 1 private jobs .* \(1 envelopes removed\)/);
  const rows = await ledger.ledger.pool.query('SELECT count(*)::int AS n FROM private_job_envelopes');
  t.equal(rows.rows[0].n, 0);
  const events = await ledger.ledger.store.readStream(`private-job-${queued.job_id}`);
  t.equal(events.at(-1)?.type, 'PrivateJobEnvelopesPurged');
  t.equal((events.at(-1)?.data as { reason: string }).reason, 'cli retention');
  const billing = (await ledger.app.inject({ method: 'GET', url: `/v1/billing/jobs/${queued.job_id}`, headers: customer.headers })).json();
  t.same([billing.status, billing.billing_status], ['failed', 'released']);
  t.equal(await runPurgeCli(['--reason', 'x'], io().streams), 2, '--terminal-before is required');
});
