import { sql } from 'kysely';
import t from 'tap';
import { privateJobsProjection } from '../../projections/privateJobs.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { signReceipt } from '../../src/receipts/receipt.ts';
import { buildReceipt } from '../../src/hostAgent/receipts.ts';
import type { ClaimView } from '../../src/privateJobs/schemas.ts';
import { sealResponse } from '../../src/privateJobs/transport.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { adminToken, devModel, fundedCustomer, jobBody, scriptedNode, sealFor, startPrivateLedger } from './support.ts';

/**
 * The private jobs read model after every kind of ending (completed, failed, expired, purged):
 * applying the same events again changes nothing, and a rebuild from the log equals the live rows.
 */

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
const ledger = await startPrivateLedger(server, { privateSettings: { claimTimeoutMs: 30_000, sweepIntervalMs: 50 } });
t.teardown(() => ledger.close());
const { app } = ledger;
const node = await scriptedNode(ledger);
const customer = await fundedCustomer(app, '10000000000000');
const request = { model: devModel, messages: [{ role: 'user', content: 'projection test' }] };

async function queue() {
  const sealed = await sealFor(app, node.nodeId, request);
  const queued = await app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) });
  return { sealed, job: queued.json<{ job_id: string; command_id: string }>() };
}

async function claim(job: { job_id: string; command_id: string }): Promise<ClaimView> {
  const claimed = await node.send(`/v1/nodes/${node.nodeId}/commands/${job.command_id}/claim`, node.request('claim', { command_id: job.command_id, job_id: job.job_id }));
  return claimed.json();
}

async function snapshot(): Promise<string[]> {
  const rows = await sql<{ row: string }>`SELECT t::text AS row FROM private_jobs t ORDER BY job_id`.execute(ledger.ledger.db);
  const keys = await sql<{ row: string }>`SELECT t::text AS row FROM node_transport_keys t ORDER BY node_id`.execute(ledger.ledger.db);
  return [...rows.rows, ...keys.rows].map((row) => row.row);
}

t.test('given jobs that ended every way, the read model is idempotent and rebuilds to the same rows', async (t) => {
  const completed = await queue();
  const terms = await claim(completed.job);
  const answer = Buffer.from('{"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}');
  const receipt = buildReceipt({
    dispatch: { job_id: terms.job_id, node_id: terms.node_id, model_id: terms.model_id, policy_version: terms.policy_version, pricing: terms.pricing, quoted_price_wei: terms.quoted_price_wei, reserved_price_wei: terms.reserved_price_wei, node_share_bps: terms.node_share_bps },
    nodeId: node.nodeId, runtimeKind: 'openai', stream: false, usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    startedAt: new Date(), completedAt: new Date(), requestSha256: '0'.repeat(64), responseSha256: '1'.repeat(64),
  });
  const result = await node.send(`/v1/nodes/${node.nodeId}/commands/${terms.command_id}/result`, node.request('result', {
    command_id: terms.command_id, job_id: terms.job_id, latency_ms: 3, signed_receipt: signReceipt(receipt, node.identity),
    encrypted_response: sealResponse(answer, node.transportSecretKey, completed.sealed.clientPublicKey),
  }));
  t.equal(result.json().status, 'completed', result.body);
  const failed = await queue();
  await node.send(`/v1/nodes/${node.nodeId}/commands/${failed.job.command_id}/fail`, node.request('fail', { command_id: failed.job.command_id, job_id: failed.job.job_id, reason: 'decrypt_failed' }));
  const expired = await queue();
  ledger.advanceClock(31_000);
  const read = await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${expired.job.job_id}?wait_ms=3000`, headers: customer.headers });
  t.equal(read.json().status, 'expired');
  await new Promise((resolve) => setTimeout(resolve, 5));
  const purge = await app.inject({
    method: 'POST',
    url: '/v1/admin/private-jobs/purge',
    headers: { 'x-b3iq-admin-token': adminToken },
    payload: { terminal_before: new Date().toISOString(), reason: 'projection test', limit: 1 },
  });
  t.equal(purge.json().job_ids.length, 1);
  const open = await queue();
  await claim(open.job);
  await ledger.settled();

  const live = await snapshot();
  t.equal(live.length, 5, 'four jobs and one transport key');
  t.match(live.join('\n'), /completed[\s\S]*captured/);
  const events = await ledger.ledger.store.readAll({ fromPosition: 0n, limit: 10_000 });
  await ledger.ledger.db.transaction().execute((transaction) => privateJobsProjection.apply(transaction, events));
  t.same(await snapshot(), live, 'applying every event again changes nothing');

  await ledger.runner.stop();
  const { replay: _setWise, ...eventByEvent } = privateJobsProjection;
  await new ProjectionRunner(ledger.ledger.store, ledger.ledger.db, [eventByEvent], { batchSize: 7 }).rebuild();
  t.same(await snapshot(), live, 'an event-by-event rebuild in small batches equals the live rows');
  await new ProjectionRunner(ledger.ledger.store, ledger.ledger.db, [privateJobsProjection]).rebuild();
  t.same(await snapshot(), live, 'a set-based rebuild equals the live rows');
  const envelopes = await ledger.ledger.pool.query('SELECT count(*)::int AS n FROM private_job_envelopes');
  t.ok(envelopes.rows[0].n > 0, 'a rebuild never touches the envelopes, which are not projected');
});
