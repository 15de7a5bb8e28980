import { sql } from 'kysely';
import { parsePrivateJobEvent, parseTransportKeyEvent, privateJobEventSchemas, transportKeyEventSchemas, type PrivateJobEvent } from '../src/events/privateJob.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import { accountEventOf } from './accountEvents.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';

/**
 * Private jobs as customers and nodes read them (status, billing, hashes, deadlines) and the nodes'
 * current transport keys. The billing columns follow the customer's capture or release of the job's
 * reservation. Every statement is guarded by the row's last position, so a replayed batch changes
 * nothing. No envelope and no plaintext is ever projected.
 */
export const privateJobsProjection: Projection = {
  name: 'private_jobs',
  tables: ['private_jobs', 'node_transport_keys'],
  eventTypes: [...Object.keys(privateJobEventSchemas), ...Object.keys(transportKeyEventSchemas), 'ReservationCaptured', 'ReservationReleased'],
  async apply(transaction, events) {
    // Money events are most of the log and rarely a private job's: they are applied together, one
    // statement per run of them, in order with the job events around them.
    let money: StoredEvent[] = [];
    const flushMoney = async () => {
      await applyMoneyEvents(transaction, money);
      money = [];
    };
    for (const stored of events) {
      const job = parsePrivateJobEvent(stored.type, stored.data);
      const key = job === null ? parseTransportKeyEvent(stored.type, stored.data) : null;
      if (job === null && key === null) {
        money.push(stored);
        continue;
      }
      await flushMoney();
      if (job !== null) {
        await applyJobEvent(transaction, stored, job);
        continue;
      }
      const data = key!.data;
      await sql`INSERT INTO node_transport_keys (node_id, key_id, public_key_x25519, registration_payload, registration_signature,
                                                 registered_at, last_position)
                VALUES (${data.node_id}, ${data.key_id}, ${data.public_key_x25519}, ${data.registration_payload},
                        ${data.registration_signature}, ${data.registered_at}::timestamptz, ${String(stored.position)}::bigint)
                ON CONFLICT (node_id) DO UPDATE SET key_id = excluded.key_id, public_key_x25519 = excluded.public_key_x25519,
                  registration_payload = excluded.registration_payload, registration_signature = excluded.registration_signature,
                  registered_at = excluded.registered_at, last_position = excluded.last_position
                WHERE node_transport_keys.last_position < excluded.last_position`.execute(transaction);
    }
    await flushMoney();
  },
};

async function applyJobEvent(transaction: ProjectionTransaction, stored: StoredEvent, event: PrivateJobEvent): Promise<void> {
  const position = String(stored.position);
  const at = stored.recordedAt.toISOString();
  if (event.type === 'PrivateJobQueued') {
    const data = event.data;
    await sql`INSERT INTO private_jobs (job_id, customer_id, node_id, model_id, command_id, status, billing_status, quoted_price_wei,
                                        reserved_price_wei, policy_version, transport_key_id, request_envelope_sha256, claim_deadline,
                                        created_at, updated_at, last_position)
              VALUES (${data.job_id}, ${data.customer_id}, ${data.node_id}, ${data.model_id}, ${data.command_id}, 'queued', 'reserved',
                      ${data.quoted_price_wei}::numeric, ${data.reserved_price_wei}::numeric, ${data.policy_version},
                      ${data.transport_key_id}, ${data.request_envelope_sha256}, ${data.claim_deadline}::timestamptz,
                      ${at}::timestamptz, ${at}::timestamptz, ${position}::bigint)
              ON CONFLICT (job_id) DO NOTHING`.execute(transaction);
    return;
  }
  const set = jobChange(event);
  await sql`UPDATE private_jobs SET ${set}, updated_at = ${at}::timestamptz, last_position = ${position}::bigint
             WHERE job_id = ${event.data.job_id} AND last_position < ${position}::bigint`.execute(transaction);
}

/** The columns an event changes, as one SET list. */
function jobChange(event: Exclude<PrivateJobEvent, { type: 'PrivateJobQueued' }>) {
  switch (event.type) {
    case 'PrivateJobClaimed':
      return sql`status = 'claimed', claimed_at = ${event.data.claimed_at}::timestamptz, result_deadline = ${event.data.result_deadline}::timestamptz`;
    case 'PrivateJobResultSubmitted':
      return sql`status = 'awaiting-receipt', response_envelope_sha256 = ${event.data.response_envelope_sha256}, receipt_hash = ${event.data.receipt_hash}`;
    case 'PrivateJobCompleted':
      return sql`status = 'completed', ended_at = ${event.data.completed_at}::timestamptz`;
    case 'PrivateJobFailed':
      return sql`status = 'failed', failure_reason = ${event.data.reason}, ended_at = ${event.data.failed_at}::timestamptz`;
    case 'PrivateJobExpired':
      return sql`status = 'expired', failure_reason = 'timed_out', ended_at = ${event.data.expired_at}::timestamptz`;
    case 'PrivateJobEnvelopesPurged':
      return sql`envelopes_purged_at = ${event.data.purged_at}::timestamptz`;
  }
}

/**
 * Captures and releases of reservations that belong to private jobs, in one statement: per job the
 * last of them wins, and other jobs' are skipped by the join.
 */
async function applyMoneyEvents(transaction: ProjectionTransaction, events: readonly StoredEvent[]): Promise<void> {
  const changes = events.flatMap((stored) => {
    const money = accountEventOf(stored);
    if (money?.type === 'ReservationCaptured') {
      return [{ jobId: money.data.job_id, status: 'captured', debited: money.data.cost_wei, payout: money.data.node_payable_wei, position: stored.position }];
    }
    if (money?.type === 'ReservationReleased') return [{ jobId: money.data.job_id, status: 'released', debited: '0', payout: '0', position: stored.position }];
    return [];
  });
  if (changes.length === 0) return;
  await sql`
    UPDATE private_jobs p SET billing_status = c.status, debited_price_wei = c.debited, payout_price_wei = c.payout, last_position = c.position
      FROM (SELECT DISTINCT ON (job_id) * FROM unnest(${changes.map((change) => change.jobId)}::text[], ${changes.map((change) => change.status)}::text[],
                   ${changes.map((change) => change.debited)}::numeric[], ${changes.map((change) => change.payout)}::numeric[],
                   ${changes.map((change) => String(change.position))}::bigint[]) AS u(job_id, status, debited, payout, position)
             ORDER BY job_id, position DESC) AS c
     WHERE p.job_id = c.job_id AND p.last_position < c.position`.execute(transaction);
}
