import { sql, type Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';

export async function findJob(db: Kysely<ProjectionTables>, customerId: string, jobId: string) {
  return (
    (await db.selectFrom('jobs').selectAll().where('job_id', '=', jobId).where('customer_id', '=', customerId).executeTakeFirst()) ?? null
  );
}

/** An accepted receipt, and whether its job was a private one (for the public node class). */
export async function findReceipt(db: Kysely<ProjectionTables>, receiptHash: string) {
  return (
    (await db
      .selectFrom('receipts as r')
      .leftJoin('private_jobs as p', 'p.job_id', 'r.job_id')
      .selectAll('r')
      .select('p.job_id as private_job_id')
      .where('r.receipt_hash', '=', receiptHash)
      .executeTakeFirst()) ?? null
  );
}

/** The customer's ledger entries in a look-back window, newest first, and totals per kind. */
export async function usageReport(db: Kysely<ProjectionTables>, customerId: string, since: Date, limit: number) {
  const entries = await db
    .selectFrom('ledger_entries as e')
    .leftJoin('jobs as j', 'j.job_id', 'e.job_id')
    .leftJoin('private_jobs as p', 'p.job_id', 'e.job_id')
    .select(['e.entry_id', 'e.kind', 'e.job_id', 'e.amount_wei', 'e.balance_after_wei', 'e.reserved_after_wei', 'e.created_at', 'j.receipt_hash'])
    .select('p.job_id as private_job_id')
    .where('e.customer_id', '=', customerId)
    .where('e.created_at', '>=', since)
    .orderBy('e.position', 'desc')
    .orderBy('e.entry_id', 'desc')
    .limit(limit)
    .execute();
  const totals = await sql<{ kind: string; count: bigint; amount_wei: string }>`
    SELECT kind, count(*) AS count, sum(amount_wei)::text AS amount_wei FROM ledger_entries
     WHERE customer_id = ${customerId} AND created_at >= ${since.toISOString()}::timestamptz
     GROUP BY kind ORDER BY kind`.execute(db);
  return { entries, totals: totals.rows };
}
