import { Writable } from 'node:stream';
import { exportLedger } from '../../src/audit/exportLedger.ts';
import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { verifyStoredChain } from '../../src/eventStore/postgres/verifyChain.ts';
import { openResponse, type Envelope } from '../../src/privateJobs/transport.ts';
import { acceptance, verifyCountersignature } from '../../src/receipts/acceptance.ts';
import { verifySignature } from '../../src/receipts/ed25519.ts';
import { verifySignedReceiptPortable } from '../../src/receipts/portableVerify.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import {
  account,
  adminToken,
  Capture,
  devModel,
  everyTableAsText,
  fundedCustomer,
  jobBody,
  ledgerIdentity,
  sealFor,
  startPrivateLedger,
  startPrivateNode,
} from './support.ts';

/**
 * Private jobs end to end over loopback with real PostgreSQL: a client seals a request to a real
 * host agent's transport key, the ledger reserves and queues it, the agent claims, decrypts, runs it
 * on the scripted runtime, signs a receipt and seals the answer, the ledger checks and settles, and
 * the client opens the answer. Then: nothing readable anywhere, tampering, and purge.
 */

const logs = new Capture();
const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startPrivateLedger(server, { logs });
t.teardown(() => ledger.close());
const node = await startPrivateNode(ledger, { logs });
t.teardown(() => node.close());
const { app } = ledger;
const deposit = 10_000_000_000_000n;
const canaries: string[] = [];
const secretOutputs: string[] = [];

function canaryRequest() {
  const canary = `canary-${randomBytes(12).toString('hex')}`;
  canaries.push(canary);
  return { model: devModel, messages: [{ role: 'user', content: `tell me about ${canary} please` }], max_tokens: 8 };
}

/** The signed receipt inside a public receipt lookup. */
function signedPart(lookup: Record<string, string>) {
  const { receipt_canonical, receipt_hash, signature_ed25519, node_key_id, node_public_key } = lookup;
  return { receipt_canonical, receipt_hash, signature_ed25519, node_key_id, node_public_key };
}

async function waitForEnd(customer: { headers: Record<string, string> }, jobId: string) {
  const response = await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${jobId}?wait_ms=15000`, headers: customer.headers });
  if (response.statusCode !== 200) throw new Error(response.body);
  return response.json();
}

t.test('seal → queue → claim → run → sealed response → open, with the balance and the receipt checked', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  // The client checks the node's key without trusting the ledger: the node signed it.
  const key = (await app.inject({ method: 'GET', url: `/v1/nodes/${node.nodeId}/transport-key` })).json();
  const nodeKeyRaw = Buffer.from(key.node_public_key_ed25519, 'base64url');
  t.equal(`node_${createHash('sha256').update(nodeKeyRaw).digest('hex').slice(0, 24)}`, node.nodeId, 'the Ed25519 key names the node');
  t.ok(verifySignature(key.node_public_key_ed25519, Buffer.from(key.registration.payload, 'utf8'), key.registration.signature_ed25519), 'the node signed its transport key');
  t.equal(JSON.parse(key.registration.payload).public_key_x25519, key.public_key_x25519);

  const sealed = await sealFor(app, node.nodeId, canaryRequest());
  const queued = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) });
  t.equal(queued.statusCode, 202, queued.body);
  const job = queued.json();
  t.equal(job.status, 'queued');
  t.match(job.command_id, /^cmd_[0-9a-f]{24}$/);
  t.equal(job.billing.status, 'reserved');
  t.equal(job.billing.quoted_price_wei, job.billing.reserved_price_wei);
  // Worst case: (plaintext bytes + 16) prompt tokens and the 1024-token cap.
  const promptBound = BigInt(sealed.plaintext.length + 16);
  t.equal(BigInt(job.billing.quoted_price_wei), (promptBound * 2_000_000_000n + 1024n * 6_000_000_000n + 999_999n) / 1_000_000n);

  const done = await waitForEnd(customer, job.job_id);
  t.equal(done.status, 'completed', JSON.stringify(done));
  t.same(done.encrypted_request, sealed.envelope, 'the request envelope as sent');
  const answer = Buffer.from(openResponse(done.encrypted_response as Envelope, sealed.clientSecretKey, sealed.nodePublicKey));
  const completion = JSON.parse(answer.toString('utf8'));
  t.equal(completion.object, 'chat.completion');
  t.ok(completion.choices[0].message.content.length > 0, 'the client reads the answer');
  secretOutputs.push(completion.id, completion.choices[0].message.content);

  await ledger.settled();
  const receipt = (await app.inject({ method: 'GET', url: `/v1/receipts/${done.receipt_hash}` })).json();
  t.ok(verifySignedReceiptPortable(signedPart(receipt), receipt.node_public_key).ok, 'anyone can verify the receipt');
  t.equal(receipt.node_id, node.nodeId);
  t.equal(receipt.job_id, job.job_id);
  t.equal(receipt.node_class, 'private_job', 'the public lookup says the receipt is of a private job');
  const usageExport = (await app.inject({ method: 'GET', url: '/v1/billing/usage', headers: customer.headers })).json();
  const debitEntry = usageExport.entries.find((entry: { kind: string; job_id: string }) => entry.kind === 'debit' && entry.job_id === job.job_id);
  t.match(debitEntry, { private_job_id: job.job_id, receipt_hash: done.receipt_hash }, 'the usage export names the private job');
  t.same(receipt.receipt.usage, completion.usage, 'the receipt binds the usage of the answer');
  t.equal(receipt.receipt.stream, false);
  t.equal(receipt.receipt.commitments.request_sha256, createHash('sha256').update(sealed.plaintext).digest('hex'), 'it commits to the request plaintext');
  t.equal(receipt.receipt.commitments.response_sha256, createHash('sha256').update(answer).digest('hex'), 'and to the answer the client opened');
  const debited = BigInt(receipt.receipt.debited_price_wei);
  const { prompt_tokens: prompt, completion_tokens: output } = completion.usage;
  t.equal(debited, (BigInt(prompt) * 2_000_000_000n + BigInt(output) * 6_000_000_000n + 999_999n) / 1_000_000n);
  const accepted = acceptance({
    receipt_hash: receipt.receipt_hash,
    job_id: receipt.job_id,
    node_id: receipt.node_id,
    debited_price_wei: receipt.receipt.debited_price_wei,
    payout_price_wei: receipt.receipt.payout_price_wei,
  });
  t.ok(verifyCountersignature(ledgerIdentity.publicKeyBase64url, accepted, receipt.ledger_countersignature), 'the ledger countersigned it');

  t.same(done.billing, {
    customer_id: customer.customerId,
    policy_version: 'private-1',
    quoted_price_wei: job.billing.quoted_price_wei,
    reserved_price_wei: job.billing.reserved_price_wei,
    payout_price_wei: receipt.receipt.payout_price_wei,
    debited_price_wei: String(debited),
    status: 'captured',
  });
  t.same(await account(app, customer), {
    customer_id: customer.customerId,
    balance_wei: String(deposit - debited),
    reserved_wei: '0',
    available_wei: String(deposit - debited),
  });
  const billing = (await app.inject({ method: 'GET', url: `/v1/billing/jobs/${job.job_id}`, headers: customer.headers })).json();
  t.equal(billing.billing_status, 'captured');
  t.equal(billing.status, 'completed');
  t.equal(billing.node_id, node.nodeId);
  t.equal(billing.receipt_hash, done.receipt_hash);
  t.equal(billing.debited_price_wei, String(debited));

  const jobEvents = await ledger.ledger.store.readStream(`job-${job.job_id}`);
  t.same(jobEvents.map((event) => event.type), ['JobRequested', 'JobRouted', 'JobCompleted', 'ReceiptAccepted', 'PayoutAccrued'], 'the same job events as chat');
  const privateEvents = await ledger.ledger.store.readStream(`private-job-${job.job_id}`);
  t.same(privateEvents.map((event) => event.type), ['PrivateJobQueued', 'PrivateJobClaimed', 'PrivateJobResultSubmitted', 'PrivateJobCompleted']);
  const payable = await ledger.ledger.db.selectFrom('ledger_accounts').select('balance_wei').where('account', '=', `node:${node.nodeId}:payable`).executeTakeFirst();
  t.equal(payable?.balance_wei, receipt.receipt.payout_price_wei, 'the node is owed its share');
  const total = await ledger.ledger.db.selectFrom('ledger_accounts').select('balance_wei').execute();
  t.equal(total.reduce((sum, row) => sum + BigInt(row.balance_wei), 0n), 0n, 'the ledger sums to zero');

  const stranger = await fundedCustomer(app, '0');
  for (const url of [`/v1/private-inference/jobs/${job.job_id}`, `/v1/billing/jobs/${job.job_id}`]) {
    const foreign = await app.inject({ method: 'GET', url, headers: stranger.headers });
    t.equal(foreign.statusCode, 404, `another customer gets 404 from ${url.split('/')[2]}`);
    t.equal(foreign.json().error.code, 'not_found');
  }
});

t.test('the same job id with the same body is the same job; another body is 409; neither appends', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const sealed = await sealFor(app, node.nodeId, canaryRequest());
  const jobId = `client-job-${randomBytes(6).toString('hex')}`;
  const body = jobBody(node.nodeId, sealed.envelope, { job_id: jobId, max_price_wei: '100000000000' });
  const first = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: body });
  t.equal(first.statusCode, 202, first.body);
  await waitForEnd(customer, jobId);
  const stranger = await fundedCustomer(app, String(deposit));
  await ledger.settled();
  const head = await ledger.ledger.store.headPosition();
  const again = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: body });
  t.equal(again.statusCode, 200);
  t.same(again.json(), first.json(), 'the same job, the same content');
  const other = await sealFor(app, node.nodeId, canaryRequest());
  const conflict = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: { ...body, encrypted_request: other.envelope } });
  t.equal(conflict.statusCode, 409);
  t.equal(conflict.json().error.code, 'idempotency_key_reused');
  const taken = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: stranger.headers, payload: body });
  t.equal(taken.statusCode, 409, "another customer cannot take the job id, nor learn anything from it");
  await ledger.settled();
  t.equal(await ledger.ledger.store.headPosition(), head, 'the replay and both refusals appended nothing');
  t.same(await account(app, stranger), { customer_id: stranger.customerId, balance_wei: String(deposit), reserved_wei: '0', available_wei: String(deposit) }, 'and reserved nothing');
});

t.test('a tampered ciphertext is accepted by the ledger, refused by the node, and the reservation released', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const sealed = await sealFor(app, node.nodeId, canaryRequest());
  const bytes = Buffer.from(sealed.envelope.ciphertext, 'base64url');
  bytes[5]! ^= 0x20;
  const tampered = { ...sealed.envelope, ciphertext: bytes.toString('base64url') };
  const queued = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, tampered) });
  t.equal(queued.statusCode, 202, 'the ledger cannot tell: it has no key');
  const done = await waitForEnd(customer, queued.json().job_id);
  t.equal(done.status, 'failed');
  t.equal(done.failure_reason, 'decrypt_failed');
  t.equal(done.encrypted_response, null);
  t.equal(done.billing.status, 'released');
  await ledger.settled();
  t.same(await account(app, customer), { customer_id: customer.customerId, balance_wei: String(deposit), reserved_wei: '0', available_wei: String(deposit) });
  const billing = (await app.inject({ method: 'GET', url: `/v1/billing/jobs/${done.job_id}`, headers: customer.headers })).json();
  t.equal(billing.status, 'failed');
  t.equal(billing.billing_status, 'released');
});

t.test('no canary prompt or answer is in any table or log line; only ciphertext is', async (t) => {
  await ledger.settled();
  const tables = await everyTableAsText(ledger.ledger);
  t.ok(tables.includes('b3iq-private-transport-v1') && tables.includes('PrivateJobQueued'), 'the search reads the real rows (envelopes, events)');
  t.ok(logs.text.includes('private job result accepted'), 'the logs of the ledger and the node were captured');
  t.ok(canaries.length >= 3 && secretOutputs.length >= 2);
  const chunks: Buffer[] = [];
  const sink = new Writable({ write: (chunk: Buffer, _encoding, done) => void (chunks.push(chunk), done()) });
  const exported = await exportLedger(ledger.ledger.pool, sink, { ledgerPublicKey: ledgerIdentity.publicKeyBase64url, now: new Date() });
  const exportText = Buffer.concat(chunks).toString('utf8');
  t.ok(exported.events > 0 && exportText.includes('PrivateJobQueued'), 'the export holds the private jobs’ events');
  for (const secret of [...canaries, ...secretOutputs]) {
    t.notOk(tables.includes(secret), `${secret.slice(0, 16)}… is in no table`);
    t.notOk(logs.text.includes(secret), `${secret.slice(0, 16)}… is in no log line`);
    t.notOk(exportText.includes(secret), `${secret.slice(0, 16)}… is in no export line`);
  }
});

t.test('purging old terminal envelopes keeps billing, receipts and the log verifiable', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const sealed = await sealFor(app, node.nodeId, canaryRequest());
  const queued = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) });
  const done = await waitForEnd(customer, queued.json().job_id);
  t.equal(done.status, 'completed');
  const admin = { 'x-b3iq-admin-token': adminToken };
  const cutoff = new Date(Date.now() + 5).toISOString();
  await new Promise((resolve) => setTimeout(resolve, 10));
  const preview = await app.inject({ method: 'POST', url: '/v1/admin/private-jobs/purge', headers: admin, payload: { terminal_before: cutoff, reason: 'retention test', dry_run: true } });
  t.equal(preview.statusCode, 200, preview.body);
  t.ok(preview.json().job_ids.includes(done.job_id), 'the dry run lists the job');
  t.equal(preview.json().envelopes_removed, 0);
  t.not((await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${done.job_id}`, headers: customer.headers })).json().encrypted_request, null, 'a dry run removes nothing');

  const purged = await app.inject({ method: 'POST', url: '/v1/admin/private-jobs/purge', headers: admin, payload: { terminal_before: cutoff, reason: 'retention test' } });
  t.same(purged.json().job_ids, preview.json().job_ids, 'the real run purges exactly what the dry run listed');
  t.ok(purged.json().envelopes_removed >= 2);
  const rows = await ledger.ledger.pool.query('SELECT count(*)::int AS n FROM private_job_envelopes WHERE job_id = $1', [done.job_id]);
  t.equal(rows.rows[0].n, 0, 'the ciphertext is gone');
  const after = (await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${done.job_id}`, headers: customer.headers })).json();
  t.equal(after.encrypted_request, null);
  t.equal(after.encrypted_response, null);
  t.ok(after.envelopes_purged_at);
  t.same(after.billing, done.billing, 'billing is untouched');
  t.equal(after.request_envelope_sha256, done.request_envelope_sha256, 'the hashes the log holds remain');
  const receipt = (await app.inject({ method: 'GET', url: `/v1/receipts/${done.receipt_hash}` })).json();
  t.ok(verifySignedReceiptPortable(signedPart(receipt), receipt.node_public_key).ok, 'the receipt still verifies');
  t.ok((await verifyStoredChain(ledger.ledger.pool)).ok, 'the hash chain of the log is intact');
  const again = await app.inject({ method: 'POST', url: '/v1/admin/private-jobs/purge', headers: admin, payload: { terminal_before: cutoff, reason: 'retention test' } });
  t.same(again.json().job_ids, [], 'purging again finds nothing');
  const future = await app.inject({ method: 'POST', url: '/v1/admin/private-jobs/purge', headers: admin, payload: { terminal_before: '2999-01-01T00:00:00Z', reason: 'x' } });
  t.equal(future.statusCode, 400);
  const noToken = await app.inject({ method: 'POST', url: '/v1/admin/private-jobs/purge', headers: customer.headers, payload: { terminal_before: cutoff, reason: 'x' } });
  t.equal(noToken.statusCode, 403, 'customer credentials cannot purge');
});
