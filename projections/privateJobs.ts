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
  async replay(transaction, log, through) {
    // Each queued job with the last of each kind of change apply() makes after the queueing: its
    // status from the last status event, each column from the last event that sets it, billing from
    // the last capture or release; then each node's last transport key.
    const upTo = String(through);
    await sql`
      WITH queued AS (
        SELECT DISTINCT ON (data->>'job_id') data->>'job_id' AS job_id, data, position, recorded_at
          FROM ${sql.table(log)} WHERE type = 'PrivateJobQueued' AND position <= ${upTo}::bigint
         ORDER BY data->>'job_id', position),
      changes AS (
        SELECT q.job_id, e.type, e.data, e.position, e.recorded_at
          FROM ${sql.table(log)} e JOIN queued q ON q.job_id = e.data->>'job_id' AND e.position > q.position
         WHERE e.type IN ('PrivateJobClaimed', 'PrivateJobResultSubmitted', 'PrivateJobCompleted', 'PrivateJobFailed', 'PrivateJobExpired',
                          'PrivateJobEnvelopesPurged', 'ReservationCaptured', 'ReservationReleased')
           AND e.position <= ${upTo}::bigint),
      last_of AS (
        SELECT DISTINCT ON (job_id, kind) job_id, kind, type, data, recorded_at FROM (
          SELECT job_id, type, data, position, recorded_at,
                 CASE WHEN type IN ('ReservationCaptured', 'ReservationReleased') THEN 'billing'
                      WHEN type = 'PrivateJobEnvelopesPurged' THEN 'purge' ELSE 'status' END AS kind
            FROM changes
          UNION ALL
          SELECT job_id, type, data, position, recorded_at, type FROM changes
           WHERE type IN ('PrivateJobClaimed', 'PrivateJobResultSubmitted', 'PrivateJobFailed', 'PrivateJobExpired')
          UNION ALL
          SELECT job_id, type, data, position, recorded_at, 'ended' FROM changes
           WHERE type IN ('PrivateJobCompleted', 'PrivateJobFailed', 'PrivateJobExpired')
          UNION ALL
          SELECT job_id, type, data, position, recorded_at, 'touched' FROM changes WHERE type LIKE 'PrivateJob%') AS kinds
         ORDER BY job_id, kind, position DESC),
      latest AS (SELECT job_id, max(position) AS position FROM changes GROUP BY job_id)
      INSERT INTO private_jobs (job_id, customer_id, node_id, model_id, command_id, status, billing_status, quoted_price_wei,
                                reserved_price_wei, debited_price_wei, payout_price_wei, policy_version, transport_key_id,
                                request_envelope_sha256, response_envelope_sha256, receipt_hash, failure_reason, claim_deadline,
                                result_deadline, created_at, claimed_at, ended_at, envelopes_purged_at, updated_at, last_position)
      SELECT q.job_id, q.data->>'customer_id', q.data->>'node_id', q.data->>'model_id', q.data->>'command_id',
             CASE st.type WHEN 'PrivateJobClaimed' THEN 'claimed' WHEN 'PrivateJobResultSubmitted' THEN 'awaiting-receipt'
                          WHEN 'PrivateJobCompleted' THEN 'completed' WHEN 'PrivateJobFailed' THEN 'failed'
                          WHEN 'PrivateJobExpired' THEN 'expired' ELSE 'queued' END,
             CASE bi.type WHEN 'ReservationCaptured' THEN 'captured' WHEN 'ReservationReleased' THEN 'released' ELSE 'reserved' END,
             (q.data->>'quoted_price_wei')::numeric, (q.data->>'reserved_price_wei')::numeric,
             CASE bi.type WHEN 'ReservationCaptured' THEN (bi.data->>'cost_wei')::numeric WHEN 'ReservationReleased' THEN 0 END,
             CASE bi.type WHEN 'ReservationCaptured' THEN (bi.data->>'node_payable_wei')::numeric WHEN 'ReservationReleased' THEN 0 END,
             q.data->>'policy_version', q.data->>'transport_key_id', q.data->>'request_envelope_sha256',
             rs.data->>'response_envelope_sha256', rs.data->>'receipt_hash',
             CASE fe.type WHEN 'PrivateJobFailed' THEN fe.data->>'reason' WHEN 'PrivateJobExpired' THEN 'timed_out' END,
             (q.data->>'claim_deadline')::timestamptz, (cl.data->>'result_deadline')::timestamptz, q.recorded_at,
             (cl.data->>'claimed_at')::timestamptz,
             coalesce(en.data->>'completed_at', en.data->>'failed_at', en.data->>'expired_at')::timestamptz,
             (pu.data->>'purged_at')::timestamptz, coalesce(tu.recorded_at, q.recorded_at), coalesce(latest.position, q.position)
        FROM queued q
        LEFT JOIN last_of st ON st.job_id = q.job_id AND st.kind = 'status'
        LEFT JOIN last_of bi ON bi.job_id = q.job_id AND bi.kind = 'billing'
        LEFT JOIN last_of pu ON pu.job_id = q.job_id AND pu.kind = 'purge'
        LEFT JOIN last_of cl ON cl.job_id = q.job_id AND cl.kind = 'PrivateJobClaimed'
        LEFT JOIN last_of rs ON rs.job_id = q.job_id AND rs.kind = 'PrivateJobResultSubmitted'
        LEFT JOIN last_of en ON en.job_id = q.job_id AND en.kind = 'ended'
        LEFT JOIN last_of tu ON tu.job_id = q.job_id AND tu.kind = 'touched'
        LEFT JOIN (SELECT DISTINCT ON (job_id) job_id, type, data FROM changes WHERE type IN ('PrivateJobFailed', 'PrivateJobExpired')
                    ORDER BY job_id, position DESC) AS fe ON fe.job_id = q.job_id
        LEFT JOIN latest ON latest.job_id = q.job_id`.execute(transaction);
    await sql`
      INSERT INTO node_transport_keys (node_id, key_id, public_key_x25519, registration_payload, registration_signature, registered_at, last_position)
      SELECT DISTINCT ON (data->>'node_id') data->>'node_id', data->>'key_id', data->>'public_key_x25519', data->>'registration_payload',
             data->>'registration_signature', (data->>'registered_at')::timestamptz, position
        FROM ${sql.table(log)} WHERE type = 'NodeTransportKeyRegistered' AND position <= ${upTo}::bigint
       ORDER BY data->>'node_id', position DESC`.execute(transaction);
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
