/**
 * Operator controls over private jobs on real PostgreSQL: a pause refuses new jobs before any
 * money moves, and stale-reservation recovery releases a job left queued and one whose node
 * claimed it and died, each in its own state, after which the job's own flow ends it.
 */
import t from 'tap';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { eventually } from '../support/waiting.ts';
import { account, adminToken, devModel, fundedCustomer, jobBody, scriptedNode, sealFor, startPrivateLedger } from '../privateJobs/support.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
// Deadlines far beyond the recovery windows used here, so recovery, not expiry, resolves the jobs.
const ledger = await startPrivateLedger(server, { privateSettings: { claimTimeoutMs: 3_600_000, runTimeoutMs: 3_600_000, sweepIntervalMs: 100 } });
t.teardown(() => ledger.close());
const { app } = ledger;
const admin = { 'x-b3iq-admin-token': adminToken };
const node = await scriptedNode(ledger);
const request = { model: devModel, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8 };
const deposit = '10000000000000';

async function queue(customer: { headers: Record<string, string> }) {
  const sealed = await sealFor(app, node.nodeId, request);
  return app.inject({ method: 'POST', url: '/v1/private-inference/jobs', headers: customer.headers, payload: jobBody(node.nodeId, sealed.envelope) });
}

async function jobStatus(customer: { headers: Record<string, string> }, jobId: string): Promise<string> {
  const response = await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${jobId}`, headers: customer.headers });
  return response.json<{ status: string }>().status;
}

t.test('given a paused node, a private job to it is refused with 503 node_paused and nothing moves', async (t) => {
  const customer = await fundedCustomer(app, deposit);
  const paused = await app.inject({ method: 'POST', url: '/v1/admin/incidents/pause', headers: admin, payload: { target_kind: 'node', target_id: node.nodeId, reason: 'maintenance' } });
  t.equal(paused.statusCode, 200, paused.body);
  await ledger.settled();
  const head = await ledger.ledger.store.headPosition();
  const refused = await queue(customer);
  t.equal(refused.statusCode, 503);
  t.equal(refused.json<{ error: { code: string } }>().error.code, 'node_paused');
  await ledger.settled();
  t.equal(await ledger.ledger.store.headPosition(), head, 'nothing appended');
  t.match(await account(app, customer), { reserved_wei: '0', available_wei: deposit });
  await app.inject({ method: 'POST', url: '/v1/admin/incidents/resume', headers: admin, payload: { target_kind: 'node', target_id: node.nodeId, reason: 'done' } });
  t.equal((await queue(customer)).statusCode, 202, 'resumed, the node takes jobs again');
});

t.test('given a job left queued and one claimed by a node that died, recovery releases both in their states', async (t) => {
  const customer = await fundedCustomer(app, deposit);
  const waiting = await queue(customer);
  t.equal(waiting.statusCode, 202, waiting.body);
  const claimedJob = await queue(customer);
  const claimedId = claimedJob.json<{ job_id: string }>().job_id;
  const poll = await node.send(`/v1/nodes/${node.nodeId}/commands/poll`, node.request('poll', { wait_ms: 0, limit: 16 }));
  const commands = (poll.json() as { commands: Array<{ job_id: string; command_id: string }> }).commands;
  const command = commands.find((entry) => entry.job_id === claimedId)!;
  const claim = await node.send(`/v1/nodes/${node.nodeId}/commands/${command.command_id}/claim`, node.request('claim', { command_id: command.command_id, job_id: claimedId }));
  t.equal(claim.statusCode, 200, claim.body);
  await ledger.settled();
  t.not((await account(app, customer)).reserved_wei, '0', 'both reservations are open');

  ledger.advanceClock(600_000);
  const windows = { queued: 60, claimed: 60, 'awaiting-receipt': 60 };
  const dry = await app.inject({ method: 'POST', url: '/v1/admin/reservations/recover', headers: admin, payload: { reason: 'node died', windows_seconds: windows } });
  const stale = dry.json<{ stale: Array<{ job_id: string; kind: string; state: string }> }>().stale;
  const ours = stale.filter((entry) => entry.job_id === claimedId || entry.job_id === waiting.json<{ job_id: string }>().job_id);
  t.same(ours.map((entry) => [entry.kind, entry.state]).sort(), [['private', 'claimed'], ['private', 'queued']]);

  const real = await app.inject({ method: 'POST', url: '/v1/admin/reservations/recover', headers: admin, payload: { dry_run: false, reason: 'node died', windows_seconds: windows } });
  t.equal(real.statusCode, 200, real.body);
  t.ok(real.json<{ released: string[] }>().released.includes(claimedId));
  await ledger.settled();
  t.match(await account(app, customer), { reserved_wei: '0', available_wei: deposit }, 'every wei is back');
  await eventually('the claimed job to end as failed', async () => (await jobStatus(customer, claimedId)) === 'failed');
});
