import { sql } from 'kysely';
import { parseCustomerAccountEvent } from '../src/events/customerAccount.ts';
import { parseJobEvent, type JobEvent } from '../src/events/job.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';

/**
 * Paid jobs with their billing state, and accepted receipts with their exact signed bytes: what
 * `/v1/billing/jobs/{id}` and the public `/v1/receipts/{hash}` serve. A job's money facts come from
 * the customer's account events (reserve, capture, release), its route and receipt from its own.
 */
export const jobsProjection: Projection = {
  name: 'jobs',
  tables: ['jobs', 'receipts'],
  async apply(transaction, events) {
    for (const stored of events) {
      const jobEvent = parseJobEvent(stored.type, stored.data);
      if (jobEvent !== null) {
        await applyJobEvent(transaction, stored, jobEvent);
        continue;
      }
      const money = parseCustomerAccountEvent(stored.type, stored.data);
      if (money?.type === 'ReservationCaptured') {
        await update(transaction, stored, money.data.job_id, {
          billing_status: 'captured',
          debited_price_wei: money.data.cost_wei,
          payout_price_wei: money.data.node_payable_wei,
        });
      } else if (money?.type === 'ReservationReleased') {
        await update(transaction, stored, money.data.job_id, { billing_status: 'released', debited_price_wei: '0', payout_price_wei: '0' });
      }
    }
  },
};

async function applyJobEvent(transaction: ProjectionTransaction, stored: StoredEvent, event: JobEvent): Promise<void> {
  const at = stored.recordedAt.toISOString();
  switch (event.type) {
    case 'JobRequested': {
      const data = event.data;
      await sql`INSERT INTO jobs (job_id, customer_id, key_id, model_id, node_id, stream, status, billing_status, quoted_price_wei,
                                  reserved_price_wei, policy_version, created_at, last_position)
                VALUES (${data.job_id}, ${data.customer_id}, ${data.key_id}, ${data.model_id}, NULL, ${data.stream}, 'running', 'reserved',
                        ${data.quoted_price_wei}::numeric, ${data.quoted_price_wei}::numeric, ${data.policy_version}, ${at}::timestamptz,
                        ${String(stored.position)}::bigint)
                ON CONFLICT (job_id) DO NOTHING`.execute(transaction);
      return;
    }
    case 'JobRouted':
      await update(transaction, stored, event.data.job_id, { node_id: event.data.node_id });
      return;
    case 'JobCompleted':
      await update(transaction, stored, event.data.job_id, { status: 'completed', completed_at: at });
      return;
    case 'JobFailed':
      await update(transaction, stored, event.data.job_id, { status: 'failed', failure_reason: event.data.reason, completed_at: at });
      return;
    case 'ReceiptAccepted': {
      const data = event.data;
      const model = await sql<{ model_id: string }>`SELECT model_id FROM jobs WHERE job_id = ${data.job_id}`.execute(transaction);
      const signed = JSON.parse(data.receipt_canonical) as { debited_price_wei: string; payout_price_wei: string };
      await sql`INSERT INTO receipts (receipt_hash, job_id, node_id, model_id, node_key_id, node_public_key, signature_ed25519,
                                      receipt_canonical, status, received_at, position, ledger_key_id, ledger_countersignature,
                                      debited_price_wei, payout_price_wei)
                VALUES (${data.receipt_hash}, ${data.job_id}, ${data.node_id}, ${model.rows[0]?.model_id ?? ''}, ${data.node_key_id},
                        ${data.node_public_key}, ${data.signature_ed25519}, ${data.receipt_canonical}, 'accepted', ${at}::timestamptz,
                        ${String(stored.position)}::bigint, ${data.ledger_key_id}, ${data.ledger_countersignature},
                        ${signed.debited_price_wei}::numeric, ${signed.payout_price_wei}::numeric)
                ON CONFLICT (receipt_hash) DO NOTHING`.execute(transaction);
      await update(transaction, stored, data.job_id, { receipt_hash: data.receipt_hash });
      return;
    }
    case 'ReceiptRejected':
    case 'JobDispatchFailed':
    case 'JobFirstByte':
    case 'PayoutAccrued':
      return;
  }
}

type JobColumns = 'node_id' | 'status' | 'billing_status' | 'debited_price_wei' | 'payout_price_wei' | 'receipt_hash' | 'failure_reason' | 'completed_at';

/** Sets columns of one job unless this event was already applied to it. */
async function update(transaction: ProjectionTransaction, stored: StoredEvent, jobId: string, values: Partial<Record<JobColumns, string>>): Promise<void> {
  const assignments = Object.entries(values).map(([column, value]) => {
    const cast = column.endsWith('_wei') ? sql`::numeric` : column === 'completed_at' ? sql`::timestamptz` : sql``;
    return sql`${sql.ref(column)} = ${value}${cast}`;
  });
  await sql`UPDATE jobs SET ${sql.join(assignments)}, last_position = ${String(stored.position)}::bigint
             WHERE job_id = ${jobId} AND last_position < ${String(stored.position)}::bigint`.execute(transaction);
}
