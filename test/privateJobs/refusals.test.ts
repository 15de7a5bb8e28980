import t, { type Test } from 'tap';
import { executePrivateJobCommand } from '../../src/privateJobs/commands.ts';
import { encodeBase64url, generateX25519SecretKey, openRequest, sealResponse, transportKeyId, x25519PublicKey } from '../../src/privateJobs/transport.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { signReceipt, type Receipt } from '../../src/receipts/receipt.ts';
import { signDocument } from '../../src/receipts/signedDocument.ts';
import { enrollNode, heartbeatBody, profile } from '../support/nodeClient.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { eventually } from '../support/waiting.ts';
import {
  account,
  adminToken,
  devModel,
  fundedCustomer,
  jobBody,
  queueAndClaim as queueAndClaimWith,
  receiptFor,
  scriptedNode,
  sealFor,
  startPrivateLedger,
} from './support.ts';

/**
 * Everything a private job refuses, and when: bad bodies before any money moves, business refusals
 * with nothing appended, a node's protocol mistakes and false receipts with nothing appended, and
 * jobs that are never claimed or never finished, which expire and give the money back.
 */

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startPrivateLedger(server, {
  // Deadlines are far enough that a loaded machine never hits them by accident; the expiry test
  // moves the ledger's clock past them instead.
  privateSettings: { claimTimeoutMs: 30_000, runTimeoutMs: 30_000, sweepIntervalMs: 100, settleGraceMs: 200 },
});
t.teardown(() => ledger.close());
const { app } = ledger;
const node = await scriptedNode(ledger);
const deposit = 10_000_000_000_000n;
const request = { model: devModel, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8 };

async function unchanged(t: Test, customer: { customerId: string; headers: Record<string, string> }, run: () => Promise<void>) {
  await ledger.settled();
  const head = await ledger.ledger.store.headPosition();
  await run();
  await ledger.settled();
  t.equal(await ledger.ledger.store.headPosition(), head, 'nothing was appended');
  t.same(await account(app, customer), { customer_id: customer.customerId, balance_wei: String(deposit), reserved_wei: '0', available_wei: String(deposit) }, 'nothing was reserved');
}

function post(customer: { headers: Record<string, string> }, payload: unknown, headers: Record<string, string> = {}) {
  return app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: { ...customer.headers, ...headers }, payload: payload as object });
}

t.test('every malformed body is 400 invalid_encrypted_request before any reservation', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const { envelope } = await sealFor(app, node.nodeId, request);
  const valid = jobBody(node.nodeId, envelope);
  const lowOrder = Buffer.alloc(32).toString('base64url');
  const { aad_hash: _hash, ...noHash } = envelope;
  const cases: Array<[string, unknown, string]> = [
    ['an extra top-level field', { ...valid, prompt: 'plaintext smuggled in' }, 'body'],
    ['an extra envelope field', { ...valid, encrypted_request: { ...envelope, plaintext: 'x' } }, 'encrypted_request'],
    ['a wrong version', { ...valid, encrypted_request: { ...envelope, version: 'b3iq-private-transport-v0' } }, 'encrypted_request.version'],
    ['a wrong algorithm', { ...valid, encrypted_request: { ...envelope, algorithm: 'x25519-hkdf-sha512-chacha20poly1305' } }, 'encrypted_request.algorithm'],
    ['padded base64url', { ...valid, encrypted_request: { ...envelope, nonce: `${envelope.nonce}==` } }, 'encrypted_request.nonce'],
    ['standard base64', { ...valid, encrypted_request: { ...envelope, ciphertext: `${envelope.ciphertext.slice(0, -4)}+/+/` } }, 'encrypted_request.ciphertext'],
    ['a 31-byte client key', { ...valid, encrypted_request: { ...envelope, client_public_key_x25519: Buffer.alloc(31, 9).toString('base64url') } }, 'encrypted_request.client_public_key_x25519'],
    ['a 13-byte nonce', { ...valid, encrypted_request: { ...envelope, nonce: Buffer.alloc(13).toString('base64url') } }, 'encrypted_request.nonce'],
    ['a ciphertext shorter than its tag', { ...valid, encrypted_request: { ...envelope, ciphertext: Buffer.alloc(15).toString('base64url') } }, 'encrypted_request.ciphertext'],
    ['a ciphertext over 512 KiB', { ...valid, encrypted_request: { ...envelope, ciphertext: Buffer.alloc(600 * 1024).toString('base64url') } }, 'encrypted_request.ciphertext'],
    ['an aad_hash of another header', { ...valid, encrypted_request: { ...envelope, aad_hash: 'ab'.repeat(32) } }, 'encrypted_request.aad_hash'],
    ['a low-order client key', { ...valid, encrypted_request: { ...noHash, client_public_key_x25519: lowOrder } }, 'encrypted_request.client_public_key_x25519'],
    ['no envelope', { node_id: node.nodeId, model_id: devModel }, 'encrypted_request'],
    ['a malformed node id', { ...valid, node_id: 'node-1' }, 'node_id'],
    ['a model id that is a URL', { ...valid, model_id: 'http://example.com/model' }, 'model_id'],
    ['a fractional max_price_wei', { ...valid, max_price_wei: '1.5' }, 'max_price_wei'],
    ['a job id with a space', { ...valid, job_id: 'my job' }, 'job_id'],
    ['an array', [valid], 'body'],
  ];
  for (const [what, payload, param] of cases) {
    await t.test(what, async (t) => {
      await unchanged(t, customer, async () => {
        const response = await post(customer, payload);
        t.equal(response.statusCode, 400, response.body);
        t.equal(response.json().error.code, 'invalid_encrypted_request');
        t.equal(response.json().error.param, param);
        t.equal(response.json().error.status, 400, 'the native envelope');
      });
    });
  }
  await t.test('transport refusals: malformed JSON, too large, another media type, no credentials', async (t) => {
    await unchanged(t, customer, async () => {
      const broken = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: { ...customer.headers, 'content-type': 'application/json' }, payload: '{"node_id":' });
      t.equal(broken.json().error.code, 'invalid_json');
      const huge = await post(customer, { ...valid, encrypted_request: { ...envelope, ciphertext: 'A'.repeat(1_100_000) } });
      t.equal(huge.statusCode, 413);
      const text = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: { ...customer.headers, 'content-type': 'text/plain' }, payload: 'hello' });
      t.equal(text.statusCode, 415);
      const anonymous = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', payload: { ...valid, extra: true } });
      t.equal(anonymous.statusCode, 401, 'credentials are checked before the body');
      const admin = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: { 'x-b3iq-admin-token': adminToken }, payload: valid });
      t.equal(admin.statusCode, 403);
    });
  });
});

t.test('a node, key, model, price or balance that cannot serve the job is a stable 4xx with nothing appended', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const { envelope } = await sealFor(app, node.nodeId, request);
  const bare = await enrollNode(app, generateIdentity());
  const unpriced = 'unpriced-model';
  await app.inject({
    method: 'POST',
    url: `/v1/nodes/${node.nodeId}/heartbeats`,
    payload: heartbeatBody(node, { endpointUrl: 'http://127.0.0.1:9', sentAt: new Date(), profiles: [profile(devModel), profile(unpriced)] }),
  });
  const cases: Array<[string, unknown, number, string]> = [
    ['an unknown node', jobBody(`node_${'0'.repeat(24)}`, envelope), 404, 'node_not_found'],
    ['a node without a transport key', jobBody(bare.nodeId, envelope), 404, 'transport_key_not_found'],
    ['a key id the node does not use', jobBody(node.nodeId, { ...envelope, key_id: 'x25519:0000000000000000', aad_hash: undefined }), 409, 'transport_key_mismatch'],
    ['a model the node does not serve', { ...jobBody(node.nodeId, envelope), model_id: 'other-model' }, 404, 'model_not_found'],
    ['a model without a price', { ...jobBody(node.nodeId, envelope), model_id: unpriced }, 404, 'model_not_found'],
    ['a ceiling below the worst case', jobBody(node.nodeId, envelope, { max_price_wei: '1000' }), 402, 'max_price_exceeded'],
  ];
  for (const [what, payload, status, code] of cases) {
    await t.test(what, async (t) => {
      await unchanged(t, customer, async () => {
        const response = await post(customer, JSON.parse(JSON.stringify(payload)));
        t.equal(response.statusCode, status, response.body);
        t.equal(response.json().error.code, code);
      });
    });
  }
  await t.test('a balance below the worst case', async (t) => {
    const poor = await fundedCustomer(app, '1000');
    await ledger.settled();
    const head = await ledger.ledger.store.headPosition();
    const response = await post(poor, jobBody(node.nodeId, envelope));
    t.equal(response.statusCode, 402);
    t.equal(response.json().error.code, 'insufficient_balance');
    await ledger.settled();
    t.equal(await ledger.ledger.store.headPosition(), head);
  });
});

/** Polls, claims, and returns the claim; the scripted node opens the request as a host agent would. */
function queueAndClaim(customer: { headers: Record<string, string> }) {
  return queueAndClaimWith(ledger, node, customer, request);
}

t.test('a node reads only its own claimed jobs; false results and receipts are refused with nothing appended', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const { sealed, claim } = await queueAndClaim(customer);
  t.same(Buffer.from(openRequest(claim.encrypted_request, node.transportSecretKey)), sealed.plaintext, 'the node, and only the node, opens the request');
  t.equal(claim.max_tokens, 1024);
  const path = (action: string) => `/v1/nodes/${node.nodeId}/commands/${claim.command_id}/${action}`;
  const answer = Buffer.from(JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion', choices: [], usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 } }));
  const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
  const envelope = sealResponse(answer, node.transportSecretKey, sealed.clientPublicKey);
  const result = (signed: unknown, sealedResponse = envelope) => node.request('result', { command_id: claim.command_id, job_id: claim.job_id, encrypted_response: sealedResponse, signed_receipt: signed, latency_ms: 12 });
  const good = signReceipt(receiptFor(claim, usage, answer), node.identity);

  const other = await scriptedNode(ledger);
  const refusals: Array<[string, () => Promise<{ statusCode: number; json: () => any }>, number, string]> = [
    ['another node claiming it', () => other.send(`/v1/nodes/${other.nodeId}/commands/${claim.command_id}/claim`, other.request('claim', { command_id: claim.command_id, job_id: claim.job_id })), 404, 'not_found'],
    ['a signature by another key', () => app.inject({ method: 'POST', url: path('claim'), payload: signDocument(node.request('claim', { command_id: claim.command_id, job_id: claim.job_id }), (bytes) => other.identity.sign(bytes)) }), 400, 'invalid_signature'],
    ['a stale request', () => node.send(path('claim'), { ...node.request('claim', { command_id: claim.command_id, job_id: claim.job_id }), sent_at: '2020-01-01T00:00:00.000Z' }), 400, 'invalid_request'],
    ['a payload for another command', () => node.send(path('claim'), node.request('claim', { command_id: `cmd_${'0'.repeat(24)}`, job_id: claim.job_id })), 400, 'invalid_request'],
    ['a receipt whose hash is not of its bytes', () => node.send(path('result'), result({ ...good, receipt_hash: 'f'.repeat(64) })), 400, 'receipt_hash_mismatch'],
    ['a receipt signed by another key', () => node.send(path('result'), result(signReceipt(receiptFor(claim, usage, answer), other.identity))), 400, 'invalid_signature'],
    ['usage beyond the quoted completion cap', () => node.send(path('result'), result(signReceipt(receiptFor(claim, { prompt_tokens: 5, completion_tokens: 2000, total_tokens: 2005 }, answer), node.identity))), 400, 'receipt_terms_mismatch'],
    ['a price other than the job’s', () => node.send(path('result'), result(signReceipt(receiptFor(claim, usage, answer, { quoted_price_wei: '1' }), node.identity))), 400, 'receipt_terms_mismatch'],
    ['a response sealed to another client', () => node.send(path('result'), result(good, sealResponse(answer, node.transportSecretKey, x25519PublicKey(generateX25519SecretKey())))), 400, 'invalid_encrypted_request'],
  ];
  for (const [what, send, status, code] of refusals) {
    await t.test(what, async (t) => {
      await ledger.settled();
      const head = await ledger.ledger.store.headPosition();
      const response = await send();
      t.equal(response.statusCode, status, JSON.stringify(response.json()));
      t.equal(response.json().error.code, code);
      await ledger.settled();
      t.equal(await ledger.ledger.store.headPosition(), head, 'nothing was appended');
    });
  }
  const replayedNonce = node.request('claim', { command_id: claim.command_id, job_id: claim.job_id });
  t.equal((await node.send(path('claim'), replayedNonce)).statusCode, 200, 'a claim retried by its node gets the claim again');
  const replay = await node.send(path('claim'), replayedNonce);
  t.equal(replay.statusCode, 401, 'a captured request cannot be replayed');

  const accepted = await node.send(path('result'), result(good));
  t.equal(accepted.statusCode, 200, JSON.stringify(accepted.json()));
  t.same(accepted.json(), { job_id: claim.job_id, status: 'completed', receipt_hash: good.receipt_hash, replayed: false });
  const again = await node.send(path('result'), result(good));
  t.equal(again.json().replayed, true, 'the same result again is a replay');
  const late = await node.send(path('fail'), node.request('fail', { command_id: claim.command_id, job_id: claim.job_id, reason: 'runtime_failed' }));
  t.equal(late.statusCode, 409);
  t.equal(late.json().error.code, 'private_job_state_conflict');
  const cost = (5n * 2_000_000_000n + 3n * 6_000_000_000n + 999_999n) / 1_000_000n;
  await ledger.settled();
  t.same(await account(app, customer), { customer_id: customer.customerId, balance_wei: String(deposit - cost), reserved_wei: '0', available_wei: String(deposit - cost) });
});

t.test('a job never claimed expires and is released; so is a job whose node claims and dies', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const sealed = await sealFor(app, node.nodeId, request);
  const unclaimed = (await post(customer, jobBody(node.nodeId, sealed.envelope))).json();
  const { claim } = await queueAndClaim(customer);
  ledger.advanceClock(31_000);
  const read = (jobId: string) => app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${jobId}?wait_ms=5000`, headers: customer.headers }).then((response) => response.json());
  const expired = await read(unclaimed.job_id);
  t.equal(expired.status, 'expired');
  t.equal(expired.failure_reason, 'timed_out');
  t.equal(expired.billing.status, 'released');
  const died = await read(claim.job_id);
  t.equal(died.status, 'expired', 'a claimed job without a result expires too');
  t.equal(died.billing.status, 'released');
  const events = await ledger.ledger.store.readStream(`private-job-${claim.job_id}`);
  t.same(events.map((event) => [event.type, (event.data as { from_status?: string }).from_status]).at(-1), ['PrivateJobExpired', 'claimed']);
  await ledger.settled();
  t.same(await account(app, customer), { customer_id: customer.customerId, balance_wei: String(deposit), reserved_wei: '0', available_wei: String(deposit) });
  const tooLate = await node.send(
    `/v1/nodes/${node.nodeId}/commands/${claim.command_id}/fail`,
    node.request('fail', { command_id: claim.command_id, job_id: claim.job_id, reason: 'runtime_failed' }),
  );
  t.equal(tooLate.json().error.code, 'private_job_state_conflict', 'an expired job cannot end another way');
  const billing = (await app.inject({ method: 'GET', url: `/v1/billing/jobs/${claim.job_id}`, headers: customer.headers })).json();
  t.same([billing.status, billing.billing_status, billing.node_id], ['failed', 'released', node.nodeId]);
});

t.test('a follow-up cut short by a crash is finished by the sweeper', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const failing = await queueAndClaim(customer);
  // The private job's own event is in the log, but the money command after it never ran.
  await executePrivateJobCommand(ledger.services.jobs, { type: 'FailPrivateJob', jobId: failing.claim.job_id, nodeId: node.nodeId, commandId: failing.claim.command_id, reason: 'runtime_failed', failedAt: new Date().toISOString() });
  await ledger.settled();
  t.equal((await account(app, customer)).reserved_wei, failing.claim.reserved_price_wei, 'still reserved right after the crash');
  const billing = () => app.inject({ method: 'GET', url: `/v1/billing/jobs/${failing.claim.job_id}`, headers: customer.headers }).then((response) => response.json());
  await eventually('the sweeper to release the failed job', async () => (await billing()).status === 'failed');
  t.equal((await billing()).billing_status, 'released');
  t.equal((await account(app, customer)).reserved_wei, '0');

  // A result accepted into the log whose capture never ran is settled, not released.
  const settling = await queueAndClaim(customer);
  const usage = { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 };
  const signed = signReceipt(receiptFor(settling.claim, usage, Buffer.from('{}')), node.identity);
  const terms = JSON.parse(signed.receipt_canonical) as Receipt;
  await executePrivateJobCommand(ledger.services.jobs, {
    type: 'SubmitPrivateResult',
    result: {
      job_id: settling.claim.job_id, node_id: node.nodeId, command_id: settling.claim.command_id, response_envelope_sha256: 'c'.repeat(64), usage,
      receipt_hash: signed.receipt_hash, receipt_canonical: signed.receipt_canonical, signature_ed25519: signed.signature_ed25519,
      node_key_id: signed.node_key_id, node_public_key: signed.node_public_key, debited_price_wei: terms.debited_price_wei,
      payout_price_wei: terms.payout_price_wei, latency_ms: 1, submitted_at: new Date().toISOString(),
    },
  });
  const settled = () => app.inject({ method: 'GET', url: `/v1/billing/jobs/${settling.claim.job_id}`, headers: customer.headers }).then((response) => response.json());
  await eventually('the sweeper to settle the submitted result', async () => (await settled()).status === 'completed');
  t.same([(await settled()).billing_status, (await settled()).debited_price_wei, (await settled()).receipt_hash], ['captured', terms.debited_price_wei, signed.receipt_hash]);
});

t.test('a rotated transport key replaces the old one; an older registration replayed cannot roll it back', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const before = await sealFor(app, node.nodeId, request);
  const oldKey = (await app.inject({ method: 'GET', url: `/v1/nodes/${node.nodeId}/transport-key` })).json();
  const rotated = x25519PublicKey(generateX25519SecretKey());
  const registration = (sentAt: Date, key: Uint8Array) =>
    signDocument(
      { version: 'b3iq-transport-key-v1', node_id: node.nodeId, key_id: transportKeyId(key), algorithm: 'x25519-hkdf-sha256-chacha20poly1305', public_key_x25519: encodeBase64url(key), sent_at: sentAt.toISOString() },
      (bytes) => node.identity.sign(bytes),
    );
  const registered = await app.inject({ method: 'POST', url: `/v1/nodes/${node.nodeId}/transport-keys`, payload: registration(new Date(), rotated) });
  t.equal(registered.statusCode, 201);
  const stale = await post(customer, jobBody(node.nodeId, before.envelope));
  t.equal(stale.statusCode, 409);
  t.equal(stale.json().error.code, 'transport_key_mismatch');
  const replayed = await app.inject({ method: 'POST', url: `/v1/nodes/${node.nodeId}/transport-keys`, payload: { payload: oldKey.registration.payload, signature_ed25519: oldKey.registration.signature_ed25519 } });
  t.same([replayed.statusCode, replayed.json().replayed], [200, true], 'an earlier registration replayed changes nothing');
  const older = await app.inject({ method: 'POST', url: `/v1/nodes/${node.nodeId}/transport-keys`, payload: registration(new Date(Date.now() - 60_000), Buffer.from(oldKey.public_key_x25519, 'base64url')) });
  t.equal(older.json().replayed, true, 'a registration signed before the current one changes nothing');
  t.equal((await app.inject({ method: 'GET', url: `/v1/nodes/${node.nodeId}/transport-key` })).json().key_id, transportKeyId(rotated));
  const forged = await app.inject({ method: 'POST', url: `/v1/nodes/${node.nodeId}/transport-keys`, payload: signDocument(JSON.parse(oldKey.registration.payload), (bytes) => generateIdentity().sign(bytes)) });
  t.equal(forged.json().error.code, 'invalid_signature');
});
