import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { sql } from 'kysely';
import t from 'tap';
import { runReportCli } from '../../src/cli/reconcile.ts';
import type { ReconciliationReport } from '../../src/queries/reconcile.ts';
import { startPaidNetwork } from '../support/paidNetwork.ts';
import { childEnv } from '../support/childEnv.ts';

/**
 * `b3iq report reconcile` over a ledger with real paid chats and a finalized batch: the JSON and CSV
 * reports agree with the tables, a clean ledger exits 0, and a tampered read model is listed, not
 * hidden, with exit code 1.
 */

const network = await startPaidNetwork();
const { ledger, fast, slow, admin, customer } = network;
const db = ledger.ledger.db;
const env = { DATABASE_URL: network.databaseUrl };
const txHash = `0x${'12'.repeat(32)}`;

const fastHashes = [await network.paidChat(fast), await network.paidChat(fast)];
const slowHash = await network.paidChat(slow);
const batch = (await ledger.app.inject({ method: 'POST', url: '/v1/admin/payouts/batches', headers: admin, payload: { node_id: fast.nodeId } })).json<{ batch_id: string }>();
for (const [step, payload] of [['submit', { transaction_hash: txHash }], ['finalize', { transaction_hash: txHash, block_number: 9 }]] as const) {
  const response = await ledger.app.inject({ method: 'POST', url: `/v1/admin/payouts/batches/${batch.batch_id}/${step}`, headers: admin, payload });
  if (response.statusCode !== 200) throw new Error(response.body);
}
await network.settled();

async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runReportCli(argv, env, { stdout: (text) => void (stdout += text), stderr: (text) => void (stderr += text) });
  return { code, stdout, stderr };
}

async function amounts(receiptHash: string) {
  return db.selectFrom('payout_rows').select(['amount_wei', 'job_id']).where('receipt_hash', '=', receiptHash).executeTakeFirstOrThrow();
}

t.test('a clean ledger reconciles: per node receipts, debits and payouts by status; debits = payouts + fees', async (t) => {
  const { code, stdout, stderr } = await run('reconcile', '--window', '7d', '--format', 'json');
  t.equal(code, 0, stderr);
  const report = JSON.parse(stdout) as ReconciliationReport;
  t.equal(report.status, 'ok');
  t.same(report.discrepancies, []);
  t.notMatch(stdout, customer.customerId, 'no customer identity in the report');
  const byNode = new Map(report.nodes.map((node) => [node.node_id, node]));
  const fastRows = await Promise.all(fastHashes.map(amounts));
  const fastTotal = String(fastRows.reduce((sum, row) => sum + BigInt(row.amount_wei), 0n));
  t.match(byNode.get(fast.nodeId), { receipts_count: 2, payouts_accrued_count: 2, payouts_accrued_wei: fastTotal, payouts_finalized_wei: fastTotal, payouts_pending_wei: '0' });
  const slowRow = await amounts(slowHash);
  t.match(byNode.get(slow.nodeId), { receipts_count: 1, payouts_accrued_wei: slowRow.amount_wei, payouts_pending_wei: slowRow.amount_wei, payouts_finalized_wei: '0' });
  const sums = await sql<{ debits: string; fees: string }>`
    SELECT (SELECT sum(amount_wei) FROM ledger_entries WHERE kind = 'debit')::text AS debits,
           (SELECT balance_wei FROM ledger_accounts WHERE account = 'protocol:fees')::text AS fees`.execute(db);
  t.equal(report.totals.customer_debits_wei, sums.rows[0]!.debits);
  t.equal(report.totals.protocol_fees_wei, sums.rows[0]!.fees);
  t.equal(BigInt(report.totals.customer_debits_wei), BigInt(report.totals.payouts_accrued_wei) + BigInt(report.totals.protocol_fees_wei), 'to the wei');
  t.equal(report.totals.receipts_count, 3);
});

t.test('the CSV report is one table: a row per node, a total, no discrepancy rows', async (t) => {
  const { code, stdout } = await run('reconcile', '--window', '24h', '--format', 'csv');
  t.equal(code, 0);
  const lines = stdout.trimEnd().split('\n');
  t.equal(lines[0], 'record,subject,receipts_count,receipts_debited_wei,customer_debits_wei,payouts_accrued_count,payouts_accrued_wei,payouts_pending_wei,payouts_batched_wei,payouts_finalized_wei,protocol_fees_wei,check,expected,actual');
  t.same(lines.slice(1).map((line) => line.split(',')[0]), ['node', 'node', 'total']);
  t.ok(lines.every((line) => line.split(',').length === 14), 'every record has every column');
});

t.test('the b3iq command runs the report and exits 0 on a clean ledger', async (t) => {
  const bin = join(import.meta.dirname, '../../bin/b3iq.js');
  const child = spawn(process.execPath, [bin, 'report', 'reconcile', '--window', '7d', '--format', 'csv'], { env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => void (stdout += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  t.equal(code, 0);
  t.match(stdout, /^record,subject,/);
  t.match(stdout, new RegExp(`^node,${slow.nodeId},1,`, 'm'));
});

t.test('usage errors exit 2 and print the usage', async (t) => {
  for (const argv of [['reconcile', '--window', '7x'], ['reconcile', '--window', '0d'], ['reconcile', '--format', 'xml'], ['other'], ['reconcile', '--since', '1']]) {
    const { code, stderr } = await run(...argv);
    t.equal(code, 2, argv.join(' '));
    t.match(stderr, /Usage: b3iq report reconcile/);
  }
});

t.test('a tampered payout row is listed, not hidden, and the exit code is 1', async (t) => {
  const row = await amounts(slowHash);
  await db.updateTable('payout_rows').set({ amount_wei: String(BigInt(row.amount_wei) + 1n) }).where('receipt_hash', '=', slowHash).execute();
  t.teardown(() => db.updateTable('payout_rows').set({ amount_wei: row.amount_wei }).where('receipt_hash', '=', slowHash).execute());
  const { code, stdout, stderr } = await run('reconcile', '--format', 'json');
  t.equal(code, 1);
  t.match(stderr, /discrepancies/);
  const report = JSON.parse(stdout) as ReconciliationReport;
  t.equal(report.status, 'discrepancies');
  const checks = report.discrepancies.map((item) => `${item.check} ${item.subject}`).sort();
  t.same(checks, [
    'debits_equal_payouts_plus_fees window',
    `node_payable_equals_unfinalized_payouts node:${slow.nodeId}`,
    `payout_equals_capture job:${row.job_id}`,
    `payout_equals_receipt job:${row.job_id}`,
  ].sort());
  const listed = report.discrepancies.find((item) => item.check === 'payout_equals_receipt');
  t.same([listed?.expected, listed?.actual], [row.amount_wei, String(BigInt(row.amount_wei) + 1n)], 'with the expected and actual amounts');
  const csv = await run('reconcile', '--format', 'csv');
  t.equal(csv.code, 1);
  t.equal(csv.stdout.split('\n').filter((line) => line.startsWith('discrepancy,')).length, 4);
});

t.test('a missing receipt, a batch that no longer matches its leaves, and an unbalanced ledger are each listed', async (t) => {
  const receipt = await db.selectFrom('receipts').selectAll().where('receipt_hash', '=', fastHashes[0]!).executeTakeFirstOrThrow();
  await db.deleteFrom('receipts').where('receipt_hash', '=', receipt.receipt_hash).execute();
  t.teardown(() => db.insertInto('receipts').values(receipt).execute());
  const stored = await db.selectFrom('payout_batches').select('total_amount_wei').where('batch_id', '=', batch.batch_id).executeTakeFirstOrThrow();
  await db.updateTable('payout_batches').set({ total_amount_wei: '1' }).where('batch_id', '=', batch.batch_id).execute();
  t.teardown(() => db.updateTable('payout_batches').set({ total_amount_wei: stored.total_amount_wei }).where('batch_id', '=', batch.batch_id).execute());
  await db.insertInto('ledger_accounts').values({ account: 'external:tampered', balance_wei: '5', last_position: 1n }).execute();
  t.teardown(() => db.deleteFrom('ledger_accounts').where('account', '=', 'external:tampered').execute());
  const { code, stdout } = await run('reconcile');
  t.equal(code, 1);
  const report = JSON.parse(stdout) as ReconciliationReport;
  const checks = report.discrepancies.map((item) => item.check);
  t.ok(checks.includes('receipt_present'), 'the job without its receipt');
  t.ok(checks.includes('batch_total_equals_leaves'), 'the batch whose total disagrees with its leaves');
  t.same(report.discrepancies.find((item) => item.check === 'ledger_sums_to_zero'), { check: 'ledger_sums_to_zero', subject: 'ledger', expected: '0', actual: '5' });
});
