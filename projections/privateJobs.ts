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
    for (const stored of events) {
      const job = parsePrivateJobEvent(stored.type, stored.data);
      if (job !== null) {
        await applyJobEvent(transaction, stored, job);
        continue;
      }
      const key = parseTransportKeyEvent(stored.type, stored.data);
      if (key !== null) {
        const data = key.data;
        await sql`INSERT INTO node_transport_keys (node_id, key_id, public_key_x25519, registration_payload, registration_signature,
                                                   registered_at, last_position)
                  VALUES (${data.node_id}, ${data.key_id}, ${data.public_key_x25519}, ${data.registration_payload},
                          ${data.registration_signature}, ${data.registered_at}::timestamptz, ${String(stored.position)}::bigint)
                  ON CONFLICT (node_id) DO UPDATE SET key_id = excluded.key_id, public_key_x25519 = excluded.public_key_x25519,
                    registration_payload = excluded.registration_payload, registration_signature = excluded.registration_signature,
                    registered_at = excluded.registered_at, last_position = excluded.last_position
                  WHERE node_transport_keys.last_position < excluded.last_position`.execute(transaction);
        continue;
      }
      await applyMoneyEvent(transaction, stored);
    }
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

/** Captures and releases of reservations that belong to private jobs; other jobs' are skipped. */
async function applyMoneyEvent(transaction: ProjectionTransaction, stored: StoredEvent): Promise<void> {
  const money = accountEventOf(stored);
  const position = String(stored.position);
  if (money?.type === 'ReservationCaptured') {
    const { job_id: jobId, cost_wei: costWei, node_payable_wei: payoutWei } = money.data;
    await sql`UPDATE private_jobs SET billing_status = 'captured', debited_price_wei = ${costWei}::numeric,
                     payout_price_wei = ${payoutWei}::numeric, last_position = ${position}::bigint
               WHERE job_id = ${jobId} AND last_position < ${position}::bigint`.execute(transaction);
  } else if (money?.type === 'ReservationReleased') {
    await sql`UPDATE private_jobs SET billing_status = 'released', debited_price_wei = 0, payout_price_wei = 0,
                     last_position = ${position}::bigint
               WHERE job_id = ${money.data.job_id} AND last_position < ${position}::bigint`.execute(transaction);
  }
}
