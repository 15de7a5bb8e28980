/**
 * Stale-reservation recovery (POST /v1/admin/reservations/recover) of private jobs that stopped
 * half-way, on real PostgreSQL through the real routes. A job its node claimed and never answered
 * (state `claimed`: no sealed response, no receipt) is listed by a dry run and released by a real
 * run, exactly it and exactly once. A job whose node's verified result is in the log but whose
 * settlement never ran (state `awaiting-receipt`) is settled as the sweeper settles it, not given
 * away. After every step the ledger's accounts sum to zero.
 */
import t from 'tap';
import { customerStreamName } from '../../src/events/customerAccount.ts';
import { privateJobStreamName } from '../../src/events/privateJob.ts';
import { reservationRecoveryStreamName } from '../../src/events/reservationRecovery.ts';
import { executePrivateJobCommand } from '../../src/privateJobs/commands.ts';
import { sealResponse } from '../../src/privateJobs/transport.ts';
import { signReceipt, type Receipt } from '../../src/receipts/receipt.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { account, adminToken, devModel, fundedCustomer, queueAndClaim, receiptFor, scriptedNode, startPrivateLedger, type Customer } from './support.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
// Deadlines and the sweeper's grace far beyond the clock moves made here: recovery, not expiry or
// the sweeper, is what resolves these jobs. The node signs with the real time, so the control plane,
// whose clock the tests move ahead, accepts its requests within an hour.
const ledger = await startPrivateLedger(server, {
  privateSettings: { claimTimeoutMs: 3_600_000, runTimeoutMs: 3_600_000, settleGraceMs: 3_600_000, sweepIntervalMs: 100, requestSkewMs: 3_600_000 },
});
t.teardown(() => ledger.close());
const { app } = ledger;
const store = ledger.ledger.store;
const node = await scriptedNode(ledger);
const request = { model: devModel, messages: [{ role: 'user', content: 'hello there' }], max_tokens: 8 };
const deposit = 10_000_000_000_000n;
/** How far the ledger's clock runs ahead of real time. */
let clockOffsetMs = 0;

function advanceClock(ms: number): void {
  clockOffsetMs += ms;
  ledger.advanceClock(ms);
}

interface RecoveryReport {
  dry_run: boolean;
  stale: Array<{ job_id: string; kind: string; customer_id: string; state: string; age_seconds: number; reserved_wei: string }>;
  released: string[];
  already_resolved: string[];
}

async function recover(dryRun: boolean, windows: Record<string, number>): Promise<RecoveryReport> {
  const response = await app.inject({
    method: 'POST',
    url: '/v1/admin/reservations/recover',
    headers: { 'x-b3iq-admin-token': adminToken },
    payload: { dry_run: dryRun, reason: 'node went silent', windows_seconds: windows },
  });
  if (response.statusCode !== 200) throw new Error(response.body);
  await ledger.settled();
  return response.json<RecoveryReport>();
}

async function accountsSum(): Promise<bigint> {
  await ledger.settled();
  const rows = await ledger.ledger.db.selectFrom('ledger_accounts').select('balance_wei').execute();
  return rows.reduce((sum, row) => sum + BigInt(row.balance_wei), 0n);
}

async function privateJob(customer: Customer, jobId: string) {
  const response = await app.inject({ method: 'GET', url: `/v1/private-inference/jobs/${jobId}`, headers: customer.headers });
  return response.json<{ status: string; failure_reason: string | null; billing: { status: string; debited_price_wei: string } }>();
}

async function eventTypes(streamName: string, jobId?: string): Promise<string[]> {
  const events = await store.readStream(streamName);
  return events.filter((event) => jobId === undefined || event.data['job_id'] === jobId).map((event) => event.type);
}

t.test('given a job its node claimed and never answered, a dry run lists exactly it and a real run releases exactly it, once', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const { sealed, claim } = await queueAndClaim(ledger, node, customer, request);
  const reservedWei = BigInt(claim.reserved_price_wei);
  advanceClock(600_000);
  // Another job of the same node, claimed just now: open too, but inside its window.
  const bystander = await fundedCustomer(app, String(deposit));
  const fresh = await queueAndClaim(ledger, node, bystander, request);
  await ledger.settled();
  t.equal((await privateJob(customer, claim.job_id)).status, 'claimed');
  t.match(await account(app, customer), { reserved_wei: String(reservedWei), available_wei: String(deposit - reservedWei) });
  t.equal(await accountsSum(), 0n, 'the accounts sum to zero before recovery');
  const windows = { queued: 60, claimed: 60, 'awaiting-receipt': 60 };

  const head = await store.headPosition();
  const dry = await recover(true, windows);
  t.same(
    dry.stale.map(({ age_seconds: _age, ...entry }) => entry),
    [{ job_id: claim.job_id, kind: 'private', customer_id: customer.customerId, state: 'claimed', reserved_wei: String(reservedWei) }],
    'the dry run lists the silent job alone',
  );
  t.ok(dry.stale[0]!.age_seconds >= 600, 'aged from its claim');
  t.same([dry.released, dry.already_resolved], [[], []]);
  t.equal(await store.headPosition(), head, 'a dry run appends nothing');

  const real = await recover(false, windows);
  t.same([real.released, real.already_resolved], [[claim.job_id], []], 'the real run releases exactly it');
  t.match(await account(app, customer), { reserved_wei: '0', available_wei: String(deposit), balance_wei: String(deposit) }, 'every wei is back');
  t.match(await account(app, bystander), { reserved_wei: fresh.claim.reserved_price_wei }, 'the fresh job keeps its reservation');
  const ended = await privateJob(customer, claim.job_id);
  t.same([ended.status, ended.failure_reason, ended.billing.status], ['failed', 'reservation_released', 'released'], 'the job ended, its money released');
  t.same(await eventTypes(privateJobStreamName(claim.job_id)), ['PrivateJobQueued', 'PrivateJobClaimed', 'PrivateJobFailed']);
  t.same(await eventTypes(customerStreamName(customer.customerId), claim.job_id), ['FundsReserved', 'ReservationReleased'], 'released once');
  const recorded = await store.readStream(reservationRecoveryStreamName);
  t.same(recorded.at(-1)?.data['released'], [{ job_id: claim.job_id, customer_id: customer.customerId, state: 'claimed', amount_wei: String(reservedWei) }]);
  t.equal(await accountsSum(), 0n, 'the accounts sum to zero after the release');

  // The node wakes up and posts its answer: refused, nothing appended, nobody charged.
  const afterRelease = await store.headPosition();
  const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 };
  const answer = Buffer.from('{"choices":[]}');
  const late = await node.send(
    `/v1/nodes/${node.nodeId}/commands/${claim.command_id}/result`,
    node.request('result', {
      command_id: claim.command_id,
      job_id: claim.job_id,
      encrypted_response: sealResponse(answer, node.transportSecretKey, sealed.clientPublicKey),
      signed_receipt: signReceipt(receiptFor(claim, usage, answer), node.identity),
      latency_ms: 12,
    }),
  );
  t.equal(late.statusCode, 409, late.body);
  t.equal(late.json().error.code, 'private_job_state_conflict');
  await ledger.settled();
  t.equal(await store.headPosition(), afterRelease, 'the late answer appends nothing');

  const again = await recover(false, windows);
  t.same([again.stale, again.released, again.already_resolved], [[], [], []], 'a second run finds nothing');
  t.equal(await store.headPosition(), afterRelease, 'and appends nothing');
  t.match(await account(app, customer), { reserved_wei: '0', available_wei: String(deposit) });
  t.equal(await accountsSum(), 0n);
});

t.test('given a job whose verified result is in the log but never settled, recovery settles it instead of giving it away', async (t) => {
  const customer = await fundedCustomer(app, String(deposit));
  const { claim } = await queueAndClaim(ledger, node, customer, request);
  const usage = { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 };
  const signed = signReceipt(receiptFor(claim, usage, Buffer.from('{}')), node.identity);
  const terms = JSON.parse(signed.receipt_canonical) as Receipt;
  // The control plane accepted the node's result into the log and died before the capture after it.
  await executePrivateJobCommand(ledger.services.jobs, {
    type: 'SubmitPrivateResult',
    result: {
      job_id: claim.job_id, node_id: node.nodeId, command_id: claim.command_id, response_envelope_sha256: 'c'.repeat(64), usage,
      receipt_hash: signed.receipt_hash, receipt_canonical: signed.receipt_canonical, signature_ed25519: signed.signature_ed25519,
      node_key_id: signed.node_key_id, node_public_key: signed.node_public_key, debited_price_wei: terms.debited_price_wei,
      payout_price_wei: terms.payout_price_wei, latency_ms: 1, submitted_at: new Date(Date.now() + clockOffsetMs).toISOString(),
    },
  });
  advanceClock(600_000);
  await ledger.settled();
  t.equal((await privateJob(customer, claim.job_id)).status, 'awaiting-receipt');
  t.equal(await accountsSum(), 0n);
  // Only this state's window is short: the previous test's fresh job is claimed, and stays out.
  const windows = { queued: 3_600, claimed: 3_600, 'awaiting-receipt': 60 };

  const dry = await recover(true, windows);
  t.same(dry.stale.map((entry) => [entry.job_id, entry.kind, entry.state]), [[claim.job_id, 'private', 'awaiting-receipt']]);
  const recoveries = (await store.readStream(reservationRecoveryStreamName)).length;
  const real = await recover(false, windows);
  t.same([real.released, real.already_resolved], [[], [claim.job_id]], 'resolved by its own settlement, not released');
  const settled = await privateJob(customer, claim.job_id);
  t.same([settled.status, settled.billing.status, settled.billing.debited_price_wei], ['completed', 'captured', terms.debited_price_wei]);
  const debitedWei = BigInt(terms.debited_price_wei);
  t.match(await account(app, customer), { reserved_wei: '0', available_wei: String(deposit - debitedWei) }, 'charged what the receipt says');
  const payable = await ledger.ledger.db.selectFrom('ledger_accounts').select('balance_wei').where('account', '=', `node:${node.nodeId}:payable`).executeTakeFirst();
  t.equal(payable?.balance_wei, terms.payout_price_wei, 'the node is owed its share');
  t.equal((await store.readStream(reservationRecoveryStreamName)).length, recoveries, 'no release to record');
  t.equal(await accountsSum(), 0n);

  const head = await store.headPosition();
  const again = await recover(false, windows);
  t.same([again.stale, again.released, again.already_resolved], [[], [], []], 'a second run finds nothing');
  t.equal(await store.headPosition(), head);
});
