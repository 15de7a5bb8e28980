import { sql, type Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';

type Db = Kysely<ProjectionTables>;

export interface PendingSelection {
  cutoffPosition: bigint;
  cutoffTime: Date | null;
  nodeId: string | null;
  limit: number;
}

/** Event ids of the oldest pending payout rows up to the cutoff: where a batch looks for its rows. */
export async function pendingPayoutEventIds(db: Db, selection: PendingSelection): Promise<string[]> {
  let query = db
    .selectFrom('payout_rows')
    .select('event_id')
    .where('status', '=', 'pending')
    .where('accrued_position', '<=', selection.cutoffPosition)
    .orderBy('accrued_position')
    .limit(selection.limit);
  if (selection.cutoffTime !== null) query = query.where('accrued_at', '<=', selection.cutoffTime);
  if (selection.nodeId !== null) query = query.where('node_id', '=', selection.nodeId);
  return (await query.execute()).map((row) => row.event_id);
}

export async function findPayoutBatch(db: Db, batchId: string) {
  return (await db.selectFrom('payout_batches').selectAll().where('batch_id', '=', batchId).executeTakeFirst()) ?? null;
}

export async function listPayoutBatches(db: Db, status: string | null, limit: number) {
  let query = db.selectFrom('payout_batches').selectAll().orderBy('position', 'desc').limit(limit);
  if (status !== null) query = query.where('status', '=', status as ProjectionTables['payout_batches']['status']);
  return query.execute();
}

/** Every leaf of a batch in leaf order: a proof needs the whole tree. */
export async function payoutBatchLeaves(db: Db, batchId: string) {
  return db.selectFrom('payout_batch_leaves').selectAll().where('batch_id', '=', batchId).orderBy('leaf_index').execute();
}

export interface TreasuryTotals {
  customer_debits_wei: string;
  node_payouts_wei: string;
  protocol_fees_wei: string;
}

/** Debits, node shares and fees of the captures in the window: the money side of the ledger. */
export async function treasuryTotals(db: Db, since: Date): Promise<TreasuryTotals> {
  const result = await sql<TreasuryTotals>`
    SELECT coalesce(sum(customer_debit_wei), 0)::text AS customer_debits_wei,
           coalesce(sum(node_payout_wei), 0)::text AS node_payouts_wei,
           coalesce(sum(protocol_fee_wei), 0)::text AS protocol_fees_wei
      FROM treasury_captures WHERE captured_at >= ${since.toISOString()}::timestamptz`.execute(db);
  return result.rows[0]!;
}

/**
 * Payout rows accrued in the window by settlement status: their count, the payouts they owe and
 * the customer debits of the same jobs. Every status is listed, with zeros when it has no rows.
 */
export async function settlementStatuses(db: Db, since: Date) {
  const result = await sql<{ settlement_status: string; payout_count: string; total_payout_wei: string; total_amount_wei: string }>`
    SELECT s.status AS settlement_status, count(p.payout_id)::text AS payout_count,
           coalesce(sum(p.amount_wei), 0)::text AS total_payout_wei, coalesce(sum(c.customer_debit_wei), 0)::text AS total_amount_wei
      FROM (VALUES ('pending', 1), ('batched', 2), ('finalized', 3)) AS s(status, ordinal)
      LEFT JOIN payout_rows p ON p.status = s.status AND p.accrued_at >= ${since.toISOString()}::timestamptz
      LEFT JOIN treasury_captures c ON c.job_id = p.job_id
     GROUP BY s.status, s.ordinal ORDER BY s.ordinal`.execute(db);
  return result.rows.map((row) => ({ ...row, payout_count: Number(row.payout_count) }));
}

/** The newest captures in the window with their fee, newest first. */
export async function recentProtocolFees(db: Db, since: Date, limit: number) {
  return db
    .selectFrom('treasury_captures as c')
    .leftJoin('payout_rows as p', 'p.job_id', 'c.job_id')
    .select(['c.job_id', 'c.node_id', 'p.receipt_hash', 'c.customer_debit_wei', 'c.node_payout_wei', 'c.protocol_fee_wei', 'c.captured_at', 'c.position'])
    .where('c.captured_at', '>=', since)
    .orderBy('c.position', 'desc')
    .limit(limit)
    .execute();
}
