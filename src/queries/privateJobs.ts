import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';

type Db = Kysely<ProjectionTables>;

/** The customer's own private job; another customer's is answered exactly like a missing one. */
export async function findPrivateJob(db: Db, customerId: string, jobId: string) {
  return (await db.selectFrom('private_jobs').selectAll().where('job_id', '=', jobId).where('customer_id', '=', customerId).executeTakeFirst()) ?? null;
}

/** What a node polls: its queued jobs, oldest first, that may still be claimed. */
export async function queuedCommands(db: Db, nodeId: string, now: Date, limit: number) {
  return db
    .selectFrom('private_jobs')
    .select(['command_id', 'job_id', 'model_id', 'created_at', 'claim_deadline'])
    .where('node_id', '=', nodeId)
    .where('status', '=', 'queued')
    .where('claim_deadline', '>=', now)
    .orderBy('created_at')
    .orderBy('job_id')
    .limit(limit)
    .execute();
}

/** Queued jobs past their claim deadline and claimed jobs past their result deadline. */
export async function overdueJobIds(db: Db, now: Date, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('private_jobs')
    .select('job_id')
    .where((where) =>
      where.or([
        where.and([where('status', '=', 'queued'), where('claim_deadline', '<', now)]),
        where.and([where('status', '=', 'claimed'), where('result_deadline', '<', now)]),
      ]),
    )
    .orderBy('updated_at')
    .limit(limit)
    .execute();
  return rows.map((row) => row.job_id);
}

/**
 * Jobs whose follow-up did not finish (a crash between the job's event and the money command):
 * a submitted result not yet settled, or a failed or expired job whose reservation is still held.
 */
export async function unsettledJobIds(db: Db, quietSince: Date, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('private_jobs')
    .select('job_id')
    .where('updated_at', '<', quietSince)
    .where((where) =>
      where.or([
        where('status', '=', 'awaiting-receipt'),
        where.and([where('status', 'in', ['failed', 'expired']), where('billing_status', '=', 'reserved')]),
      ]),
    )
    .orderBy('updated_at')
    .limit(limit)
    .execute();
  return rows.map((row) => row.job_id);
}

/** Terminal jobs that ended before the cutoff and whose envelopes are not purged yet. */
export async function purgeCandidates(db: Db, endedBefore: Date, limit: number): Promise<string[]> {
  const rows = await db
    .selectFrom('private_jobs')
    .select('job_id')
    .where('status', 'in', ['completed', 'failed', 'expired'])
    .where('ended_at', '<', endedBefore)
    .where('envelopes_purged_at', 'is', null)
    .orderBy('ended_at')
    .orderBy('job_id')
    .limit(limit)
    .execute();
  return rows.map((row) => row.job_id);
}

export async function findTransportKey(db: Db, nodeId: string) {
  return (await db.selectFrom('node_transport_keys').selectAll().where('node_id', '=', nodeId).executeTakeFirst()) ?? null;
}

/** Whether the node's last reported profiles have the model installed. */
export async function nodeServesModel(db: Db, nodeId: string, modelId: string): Promise<boolean> {
  const row = await db
    .selectFrom('node_model_profiles')
    .select('status')
    .where('node_id', '=', nodeId)
    .where('model_id', '=', modelId)
    .executeTakeFirst();
  return row?.status === 'installed';
}
