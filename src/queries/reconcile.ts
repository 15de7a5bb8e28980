import { sql, type Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { payoutMerkleRoot } from '../payouts/leaf.ts';

type Db = Kysely<ProjectionTables>;

/**
 * The operator's reconciliation: independent read models of the same money must agree to the wei.
 * The window's population is every job with a customer debit, a capture, an accepted receipt or a
 * payout row in the window; each job is then compared across all four wherever they fall in time,
 * so a job straddling the window's start is never half counted. Checks over all time follow: the
 * ledger sums to zero, each node's payable balance is what it accrued less what was finalized, the
 * fee account is the sum of the fees, and each live batch agrees with its leaves and its root.
 * Customer identity never appears in the report.
 */

export interface NodeReconciliation {
  node_id: string;
  receipts_count: number;
  receipts_debited_wei: string;
  customer_debits_wei: string;
  payouts_accrued_count: number;
  payouts_accrued_wei: string;
  payouts_pending_wei: string;
  payouts_batched_wei: string;
  payouts_finalized_wei: string;
  protocol_fees_wei: string;
}

export interface Discrepancy {
  check: string;
  subject: string;
  expected: string;
  actual: string;
}

export interface ReconciliationReport {
  status: 'ok' | 'discrepancies';
  generated_at: string;
  since: string;
  totals: Omit<NodeReconciliation, 'node_id'>;
  nodes: NodeReconciliation[];
  discrepancies: Discrepancy[];
  /** More job-level discrepancies than listed. */
  discrepancies_truncated: boolean;
}

/** Job-level discrepancies listed at most; the rest are counted. */
const maxListedJobs = 1_000;

export async function reconcile(db: Db, since: Date, generatedAt: Date): Promise<ReconciliationReport> {
  const discrepancies: Discrepancy[] = [];
  const nodes = await nodeTotals(db, since);
  const totals = sumNodes(nodes);
  const debits = BigInt(totals.customer_debits_wei);
  const payoutsPlusFees = BigInt(totals.payouts_accrued_wei) + BigInt(totals.protocol_fees_wei);
  if (debits !== payoutsPlusFees) {
    discrepancies.push({ check: 'debits_equal_payouts_plus_fees', subject: 'window', expected: String(payoutsPlusFees), actual: String(debits) });
  }
  const jobs = await jobDiscrepancies(db, since);
  discrepancies.push(...jobs.listed);
  discrepancies.push(...(await ledgerDiscrepancies(db)));
  discrepancies.push(...(await batchDiscrepancies(db, since)));
  return {
    status: discrepancies.length === 0 ? 'ok' : 'discrepancies',
    generated_at: generatedAt.toISOString(),
    since: since.toISOString(),
    totals,
    nodes,
    discrepancies,
    discrepancies_truncated: jobs.truncated,
  };
}

/** The window's jobs, each with its debit, capture, receipt and payout row (any may be missing). */
function windowJobs(since: Date) {
  const start = since.toISOString();
  return sql`
    population AS (
      SELECT job_id FROM ledger_entries WHERE kind = 'debit' AND created_at >= ${start}::timestamptz AND job_id IS NOT NULL
      UNION SELECT job_id FROM treasury_captures WHERE captured_at >= ${start}::timestamptz
      UNION SELECT job_id FROM receipts WHERE received_at >= ${start}::timestamptz
      UNION SELECT job_id FROM payout_rows WHERE accrued_at >= ${start}::timestamptz),
    debits AS (
      SELECT e.job_id, sum(e.amount_wei) AS debit_wei FROM ledger_entries e JOIN population USING (job_id)
       WHERE e.kind = 'debit' GROUP BY e.job_id),
    window_jobs AS (
      SELECT j.job_id, coalesce(r.node_id, p.node_id, c.node_id) AS node_id, d.debit_wei,
             c.job_id AS capture_job, c.node_id AS capture_node, c.customer_debit_wei, c.node_payout_wei, c.protocol_fee_wei,
             r.receipt_hash, r.node_id AS receipt_node, r.debited_price_wei, r.payout_price_wei,
             p.payout_id, p.node_id AS payout_node, p.amount_wei, p.status
        FROM population j LEFT JOIN debits d USING (job_id) LEFT JOIN treasury_captures c USING (job_id)
        LEFT JOIN receipts r USING (job_id) LEFT JOIN payout_rows p USING (job_id))`;
}

async function nodeTotals(db: Db, since: Date): Promise<NodeReconciliation[]> {
  const result = await sql<Record<keyof NodeReconciliation, string>>`
    WITH ${windowJobs(since)}
    SELECT node_id, count(receipt_hash)::text AS receipts_count,
           coalesce(sum(debited_price_wei), 0)::text AS receipts_debited_wei,
           coalesce(sum(debit_wei), 0)::text AS customer_debits_wei,
           count(payout_id)::text AS payouts_accrued_count,
           coalesce(sum(amount_wei), 0)::text AS payouts_accrued_wei,
           coalesce(sum(amount_wei) FILTER (WHERE status = 'pending'), 0)::text AS payouts_pending_wei,
           coalesce(sum(amount_wei) FILTER (WHERE status = 'batched'), 0)::text AS payouts_batched_wei,
           coalesce(sum(amount_wei) FILTER (WHERE status = 'finalized'), 0)::text AS payouts_finalized_wei,
           coalesce(sum(protocol_fee_wei), 0)::text AS protocol_fees_wei
      FROM window_jobs GROUP BY node_id ORDER BY node_id NULLS FIRST`.execute(db);
  return result.rows.map((row) => ({
    ...row,
    // A debit with no capture, receipt or payout row names no node.
    node_id: row.node_id ?? '(none)',
    receipts_count: Number(row.receipts_count),
    payouts_accrued_count: Number(row.payouts_accrued_count),
  }));
}

function sumNodes(nodes: readonly NodeReconciliation[]): Omit<NodeReconciliation, 'node_id'> {
  const wei = (key: keyof NodeReconciliation) => String(nodes.reduce((sum, node) => sum + BigInt(node[key]), 0n));
  return {
    receipts_count: nodes.reduce((sum, node) => sum + node.receipts_count, 0),
    receipts_debited_wei: wei('receipts_debited_wei'),
    customer_debits_wei: wei('customer_debits_wei'),
    payouts_accrued_count: nodes.reduce((sum, node) => sum + node.payouts_accrued_count, 0),
    payouts_accrued_wei: wei('payouts_accrued_wei'),
    payouts_pending_wei: wei('payouts_pending_wei'),
    payouts_batched_wei: wei('payouts_batched_wei'),
    payouts_finalized_wei: wei('payouts_finalized_wei'),
    protocol_fees_wei: wei('protocol_fees_wei'),
  };
}

interface JobRow {
  job_id: string;
  debit_wei: string | null;
  capture_job: string | null;
  capture_node: string | null;
  customer_debit_wei: string | null;
  node_payout_wei: string | null;
  protocol_fee_wei: string | null;
  receipt_hash: string | null;
  receipt_node: string | null;
  debited_price_wei: string | null;
  payout_price_wei: string | null;
  payout_id: string | null;
  payout_node: string | null;
  amount_wei: string | null;
}

/** Jobs whose debit, capture, receipt and payout row do not tell the same story. */
async function jobDiscrepancies(db: Db, since: Date): Promise<{ listed: Discrepancy[]; truncated: boolean }> {
  const result = await sql<JobRow>`
    WITH ${windowJobs(since)}
    SELECT * FROM window_jobs
     WHERE debit_wei IS NULL OR capture_job IS NULL OR receipt_hash IS NULL OR payout_id IS NULL
        OR debit_wei <> customer_debit_wei OR debit_wei <> debited_price_wei
        OR amount_wei <> node_payout_wei OR amount_wei <> payout_price_wei
        OR customer_debit_wei <> node_payout_wei + protocol_fee_wei
        OR receipt_node <> payout_node OR receipt_node <> capture_node
     ORDER BY job_id LIMIT ${maxListedJobs + 1}`.execute(db);
  const listed = result.rows.slice(0, maxListedJobs).flatMap(jobChecks);
  return { listed, truncated: result.rows.length > maxListedJobs };
}

function jobChecks(row: JobRow): Discrepancy[] {
  const found: Discrepancy[] = [];
  const subject = `job:${row.job_id}`;
  const missing = (check: string, value: string | null) => {
    if (value === null) found.push({ check, subject, expected: 'present', actual: 'missing' });
  };
  const differ = (check: string, expected: string | null, actual: string | null) => {
    if (expected !== null && actual !== null && expected !== actual) found.push({ check, subject, expected, actual });
  };
  missing('customer_debit_present', row.debit_wei);
  missing('capture_present', row.capture_job);
  missing('receipt_present', row.receipt_hash);
  missing('payout_row_present', row.payout_id);
  differ('debit_equals_capture', row.customer_debit_wei, row.debit_wei);
  differ('debit_equals_receipt', row.debited_price_wei, row.debit_wei);
  differ('payout_equals_capture', row.node_payout_wei, row.amount_wei);
  differ('payout_equals_receipt', row.payout_price_wei, row.amount_wei);
  if (row.customer_debit_wei !== null && row.node_payout_wei !== null && row.protocol_fee_wei !== null) {
    differ('capture_split_balances', row.customer_debit_wei, String(BigInt(row.node_payout_wei) + BigInt(row.protocol_fee_wei)));
  }
  differ('payout_node_equals_receipt_node', row.receipt_node, row.payout_node);
  differ('capture_node_equals_receipt_node', row.receipt_node, row.capture_node);
  return found;
}

/** All time: the accounts sum to zero, node payables and the fee account match the evidence. */
async function ledgerDiscrepancies(db: Db): Promise<Discrepancy[]> {
  const found: Discrepancy[] = [];
  const sum = await sql<{ total: string }>`SELECT coalesce(sum(balance_wei), 0)::text AS total FROM ledger_accounts`.execute(db);
  const total = sum.rows[0]?.total ?? '0';
  if (total !== '0') found.push({ check: 'ledger_sums_to_zero', subject: 'ledger', expected: '0', actual: total });
  const payables = await sql<{ node_id: string; payable_wei: string | null; owed_wei: string | null }>`
    WITH owed AS (
      SELECT node_id, sum(amount_wei) FILTER (WHERE status <> 'finalized') AS owed_wei FROM payout_rows GROUP BY node_id),
    payable AS (
      SELECT substring(account FROM '^node:(.*):payable$') AS node_id, balance_wei AS payable_wei FROM ledger_accounts
       WHERE account LIKE 'node:%:payable')
    SELECT node_id, payable.payable_wei::text AS payable_wei, coalesce(owed.owed_wei, 0)::text AS owed_wei
      FROM payable FULL JOIN owed USING (node_id)
     WHERE payable.payable_wei IS DISTINCT FROM coalesce(owed.owed_wei, 0) ORDER BY node_id`.execute(db);
  for (const row of payables.rows) {
    found.push({ check: 'node_payable_equals_unfinalized_payouts', subject: `node:${row.node_id}`, expected: row.owed_wei ?? '0', actual: row.payable_wei ?? '0' });
  }
  const fees = await sql<{ account_wei: string; captured_wei: string }>`
    SELECT coalesce((SELECT balance_wei FROM ledger_accounts WHERE account = 'protocol:fees'), 0)::text AS account_wei,
           coalesce((SELECT sum(protocol_fee_wei) FROM treasury_captures), 0)::text AS captured_wei`.execute(db);
  const fee = fees.rows[0];
  if (fee !== undefined && fee.account_wei !== fee.captured_wei) {
    found.push({ check: 'fee_account_equals_captured_fees', subject: 'protocol:fees', expected: fee.captured_wei, actual: fee.account_wei });
  }
  return found;
}

/** Live batches, and any batch created in the window, against their leaves, root and rows. */
async function batchDiscrepancies(db: Db, since: Date): Promise<Discrepancy[]> {
  const batches = await db
    .selectFrom('payout_batches')
    .select(['batch_id', 'status', 'payout_count', 'total_amount_wei', 'merkle_root'])
    .where((where) => where.or([where('status', 'in', ['created', 'submitted']), where('created_at', '>=', since)]))
    .orderBy('position')
    .execute();
  const found: Discrepancy[] = [];
  for (const batch of batches) {
    const subject = `batch:${batch.batch_id}`;
    const leaves = await db.selectFrom('payout_batch_leaves').selectAll().where('batch_id', '=', batch.batch_id).orderBy('leaf_index').execute();
    const total = String(leaves.reduce((sum, leaf) => sum + BigInt(leaf.amount_wei), 0n));
    if (leaves.length !== batch.payout_count) found.push({ check: 'batch_count_equals_leaves', subject, expected: String(batch.payout_count), actual: String(leaves.length) });
    if (total !== batch.total_amount_wei) found.push({ check: 'batch_total_equals_leaves', subject, expected: batch.total_amount_wei, actual: total });
    const root = payoutMerkleRoot(leaves);
    if (root !== batch.merkle_root) found.push({ check: 'batch_root_equals_leaves', subject, expected: batch.merkle_root, actual: root });
    if (batch.status === 'reset') continue;
    const rowStatus = batch.status === 'finalized' ? 'finalized' : 'batched';
    const rows = await sql<{ count: string }>`
      SELECT count(*)::text AS count FROM payout_rows WHERE batch_id = ${batch.batch_id} AND status = ${rowStatus}`.execute(db);
    const count = rows.rows[0]?.count ?? '0';
    if (count !== String(batch.payout_count)) found.push({ check: 'batch_rows_in_status', subject, expected: String(batch.payout_count), actual: count });
  }
  return found;
}
