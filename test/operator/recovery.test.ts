/**
 * Stale-reservation recovery on real PostgreSQL: reservations a crashed gateway left open in each
 * state are listed by a dry run, released by a real run exactly once, and recorded with the
 * operator's reason; customer administration reads the same books.
 */
import t from 'tap';
import { executeAccountCommand, type CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import { executeJobCommand, type JobContext } from '../../src/commands/job.ts';
import { AggregateCache } from '../../src/commands/aggregateCache.ts';
import { privateJobEnvironment } from '../../src/http/routes/privateJobs.ts';
import { defaultRecoveryWindows, startRecoveryTimer } from '../../src/operator/recovery.ts';
import { devModel, fundedCustomerWithKey } from '../support/network.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { startTestLedger } from '../support/testApp.ts';
import { eventually } from '../support/waiting.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
/** The app's clock runs `skewMs` ahead of real time, so a test can age the reservations it made. */
let skewMs = 0;
const clock = () => new Date(Date.now() + skewMs);
const ledger = await startTestLedger(server, { now: clock });
t.teardown(() => ledger.close());
const admin = { 'x-b3iq-admin-token': ledger.adminToken };
const store = ledger.ledger.store;
// Commands of a gateway that died, run through the real handler on the same store.
const accounts: CustomerAccountContext = { store, cache: new AggregateCache() };
const jobs: JobContext = { store, cache: new AggregateCache() };

const customer = await fundedCustomerWithKey(ledger, { depositWei: '1000000' });

/**
 * What the gateway has done when it dies: reserved and recorded the job (queued), or also recorded
 * its completion but died before settling (awaiting a receipt).
 */
async function abandonedJob(jobId: string, amountWei: bigint, stage: 'queued' | 'awaiting-receipt'): Promise<void> {
  await executeAccountCommand(accounts, { type: 'Reserve', customerId: customer.customerId, jobId, amountWei });
  await executeJobCommand(jobs, {
    type: 'StartJob',
    attemptId: `${jobId}-attempt`,
    request: {
      job_id: jobId,
      customer_id: customer.customerId,
      key_id: customer.keyId,
      model_id: devModel,
      stream: false,
      max_tokens: 16,
      quoted_price_wei: String(amountWei),
      policy_version: 'launch-1',
      prompt_price_per_million_wei: '1',
      completion_price_per_million_wei: '1',
    },
  });
  if (stage === 'queued') return;
  const usage = { prompt_tokens: 3, completion_tokens: 4, total_tokens: 7 };
  await executeJobCommand(jobs, {
    type: 'FinishJob',
    jobId,
    outcome: { attempts: [{ nodeId: 'node_a', failure: null }], firstByteMs: 5, completion: { nodeId: 'node_a', usage, latencyMs: 9 }, receipt: null, failure: null },
  });
}

async function settled(): Promise<void> {
  await ledger.runner.waitFor(await store.headPosition(), 5_000);
}

async function available(): Promise<string> {
  await settled();
  const row = await ledger.ledger.db.selectFrom('customer_balances').select(['available_wei', 'reserved_wei']).where('customer_id', '=', customer.customerId).executeTakeFirstOrThrow();
  return `${row.available_wei}/${row.reserved_wei}`;
}

function recover(body: Record<string, unknown>) {
  return ledger.app.inject({ method: 'POST', url: '/v1/admin/reservations/recover', headers: admin, payload: body });
}

await abandonedJob('job_queued', 100n, 'queued');
await abandonedJob('job_queued2', 200n, 'queued');
await abandonedJob('job_awaiting', 300n, 'awaiting-receipt');
await settled();

t.test('given reservations younger than every window, a dry run lists nothing', async (t) => {
  const response = await recover({ reason: 'morning check' });
  t.equal(response.statusCode, 200, response.body);
  t.match(response.json(), { dry_run: true, stale: [], released: [] });
});

t.test('given aged reservations, a dry run lists those past their state window and changes nothing', async (t) => {
  skewMs = 120_000;
  const before = await store.headPosition();
  const response = await recover({ reason: 'after the gateway crash', windows_seconds: { queued: 60, claimed: 60, 'awaiting-receipt': 3600 } });
  t.equal(response.statusCode, 200, response.body);
  const report = response.json<{ stale: Array<{ job_id: string; state: string; reserved_wei: string; age_seconds: number }>; released: string[] }>();
  t.same(
    report.stale.map((entry) => [entry.job_id, entry.state, entry.reserved_wei]).sort(),
    [['job_queued', 'queued', '100'], ['job_queued2', 'queued', '200']],
    'the awaiting-receipt reservation is inside its hour',
  );
  t.ok(report.stale.every((entry) => entry.age_seconds >= 120));
  t.same(report.released, []);
  t.equal(await store.headPosition(), before, 'a dry run appends nothing');
  t.equal(await available(), '999400/600');
});

t.test('given the same windows, a real run releases exactly those, once, and records the reason', async (t) => {
  const windows = { queued: 60, claimed: 60, 'awaiting-receipt': 3600 };
  const response = await recover({ dry_run: false, reason: 'after the gateway crash', windows_seconds: windows });
  t.equal(response.statusCode, 200, response.body);
  t.same(response.json<{ released: string[] }>().released.sort(), ['job_queued', 'job_queued2']);
  t.equal(await available(), '999700/300', 'the two reservations are back in available funds');
  const jobRows = await ledger.ledger.db.selectFrom('jobs').select(['job_id', 'status', 'billing_status', 'failure_reason']).orderBy('job_id').execute();
  t.same(
    jobRows.map((row) => [row.job_id, row.status, row.billing_status, row.failure_reason]),
    [
      ['job_awaiting', 'completed', 'reserved', null],
      ['job_queued', 'failed', 'released', 'stale_reservation_recovered'],
      ['job_queued2', 'failed', 'released', 'stale_reservation_recovered'],
    ],
  );
  const recorded = await store.readStream('operator-reservation-recovery');
  t.equal(recorded.length, 1);
  t.match(recorded[0]?.data, { trigger: 'admin', reason: 'after the gateway crash', windows_seconds: windows });
  t.same((recorded[0]?.data['released'] as Array<{ job_id: string }>).map((entry) => entry.job_id).sort(), ['job_queued', 'job_queued2']);

  const before = await store.headPosition();
  const repeated = await recover({ dry_run: false, reason: 'after the gateway crash', windows_seconds: windows });
  t.match(repeated.json(), { stale: [], released: [] }, 'a repeated run finds nothing more');
  t.equal(await store.headPosition(), before, 'and appends nothing');
});

t.test('given a reservation the gateway resolves just before the run, it is reported as already resolved', async (t) => {
  // The run selects from the projection, which has not seen that release when it selects.
  await ledger.runner.stop();
  await executeAccountCommand(accounts, { type: 'Release', customerId: customer.customerId, jobId: 'job_awaiting', reason: 'no_accepted_receipt' });
  const response = await recover({ dry_run: false, reason: 'sweep', windows_seconds: { queued: 60, claimed: 60, 'awaiting-receipt': 60 } });
  ledger.runner.start();
  t.same(response.json<{ released: string[]; already_resolved: string[] }>().released, []);
  t.same(response.json<{ already_resolved: string[] }>().already_resolved, ['job_awaiting']);
  t.equal(await available(), '1000000/0', 'released once, not twice');
});

t.test('bad recovery requests get a stable code and append nothing', async (t) => {
  const before = await store.headPosition();
  for (const body of [{}, { reason: '' }, { reason: 'x', windows_seconds: { queued: 5 } }, { reason: 'x', dry_run: 'no' }, { reason: 'x', extra: true }]) {
    const response = await recover(body);
    t.equal(response.statusCode, 400, JSON.stringify(body));
    t.equal(response.json<{ error: { code: string } }>().error.code, 'invalid_request');
  }
  t.equal(await store.headPosition(), before);
});

t.test('the timer releases what the windows select, without an operator', async (t) => {
  await abandonedJob('job_timer', 50n, 'queued');
  await settled();
  const timer = startRecoveryTimer(
    { ...ledger.dependencies, accounts, jobs, privateJobFlows: privateJobEnvironment(ledger.dependencies) },
    { intervalMs: 50, windows: { ...defaultRecoveryWindows, queued: 60 }, now: () => new Date(Date.now() + 120_000), onError: (error) => t.fail(error.message) },
  );
  t.teardown(() => timer.stop());
  await eventually('the timer to release job_timer', async () => (await available()) === '1000000/0');
  await timer.stop();
  const runs = await store.readStream('operator-reservation-recovery');
  t.match(runs[runs.length - 1]?.data, { trigger: 'timer', reason: 'automatic stale-reservation recovery', released: [{ job_id: 'job_timer', state: 'queued', amount_wei: '50' }] });
});

t.test('customer administration: list with balances, keys without secrets, usage', async (t) => {
  const other = await fundedCustomerWithKey(ledger, { depositWei: '5' });
  await settled();
  const page = await ledger.app.inject({ method: 'GET', url: '/v1/admin/customers?limit=1', headers: admin });
  t.equal(page.statusCode, 200, page.body);
  const first = page.json<{ data: Array<{ customer_id: string }>; next_after: string | null }>();
  t.equal(first.data.length, 1);
  t.ok(first.next_after);
  const rest = await ledger.app.inject({ method: 'GET', url: `/v1/admin/customers?limit=10&after=${first.next_after}`, headers: admin });
  const all = [...first.data, ...rest.json<{ data: Array<{ customer_id: string }> }>().data];
  t.same(all.map((row) => row.customer_id).sort(), [customer.customerId, other.customerId].sort());
  t.match(all.find((row) => row.customer_id === other.customerId), { balance_wei: '5', reserved_wei: '0', available_wei: '5', paused: false });

  const keys = await ledger.app.inject({ method: 'GET', url: `/v1/admin/customers/${customer.customerId}/gateway-keys`, headers: admin });
  t.equal(keys.statusCode, 200, keys.body);
  t.match(keys.json(), { data: [{ key_id: customer.keyId, status: 'active', scopes: ['chat', 'models'] }] });
  t.notMatch(keys.body, customer.apiKey, 'no secret in the listing');

  const usage = await ledger.app.inject({ method: 'GET', url: `/v1/admin/customers/${customer.customerId}/usage?window_days=1`, headers: admin });
  t.equal(usage.statusCode, 200, usage.body);
  const kinds = usage.json<{ totals: Array<{ kind: string; count: number }> }>().totals.map((total) => [total.kind, total.count]);
  t.same(kinds, [['deposit', 1], ['release', 4], ['reservation', 4]]);

  const missing = await ledger.app.inject({ method: 'GET', url: '/v1/admin/customers/cus_000000000000000000000000/gateway-keys', headers: admin });
  t.equal(missing.statusCode, 404);
  t.equal(missing.json<{ error: { code: string } }>().error.code, 'customer_not_found');
  const unauthenticated = await ledger.app.inject({ method: 'GET', url: '/v1/admin/customers' });
  t.equal(unauthenticated.statusCode, 401);
});

t.test('route readiness of an unknown node is a 404; a bad query a 400', async (t) => {
  const unknown = await ledger.app.inject({ method: 'GET', url: `/v1/public/nodes/node_nope/route-readiness?model=${devModel}` });
  t.equal(unknown.statusCode, 404);
  t.equal(unknown.json<{ error: { code: string } }>().error.code, 'node_not_found');
  const noModel = await ledger.app.inject({ method: 'GET', url: '/v1/public/nodes/node_nope/route-readiness' });
  t.equal(noModel.statusCode, 400);
});
