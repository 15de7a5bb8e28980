import { sql, type Selectable } from 'kysely';
import { jobEventSchemas, parseJobEvent, type JobEvent } from '../src/events/job.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import { accountEventOf } from './accountEvents.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';
import type { JobTables } from './tables.ts';

/**
 * Paid jobs with their billing state, and accepted receipts with their exact signed bytes: what
 * `/v1/billing/jobs/{id}` and the public `/v1/receipts/{hash}` serve. A job's money facts come from
 * the customer's account events (reserve, capture, release), its route and receipt from its own.
 * A batch is folded in memory and each touched job is written once, with one statement per table.
 */

/** A row of the jobs table as read back: wei as decimal strings, times as dates. */
type JobRow = Selectable<JobTables['jobs']>;

/** A receipts row as written: every column but the ones the table fills in itself. */
type ReceiptRow = Omit<Selectable<JobTables['receipts']>, 'status' | 'batch_id' | 'ledger_key_id' | 'ledger_countersignature' | 'debited_price_wei' | 'payout_price_wei'> & {
  ledger_key_id: string;
  ledger_countersignature: string;
  debited_price_wei: string;
  payout_price_wei: string;
};

type Change = { position: bigint; at: Date; jobId: string; apply: (row: JobRow) => void } | { position: bigint; at: Date; created: JobRow };

export const jobsProjection: Projection = {
  name: 'jobs',
  tables: ['jobs', 'receipts'],
  eventTypes: [...Object.keys(jobEventSchemas), 'ReservationCaptured', 'ReservationReleased'],
  async apply(transaction, events) {
    const receipts: Array<{ stored: StoredEvent; event: Extract<JobEvent, { type: 'ReceiptAccepted' }> }> = [];
    const changes = events.flatMap((stored): Change[] => {
      const jobEvent = parseJobEvent(stored.type, stored.data);
      if (jobEvent?.type === 'ReceiptAccepted') receipts.push({ stored, event: jobEvent });
      return jobEvent !== null ? jobChanges(stored, jobEvent) : moneyChanges(stored);
    });
    if (changes.length === 0) return;
    const rows = await loadJobs(transaction, [...new Set(changes.map((change) => ('created' in change ? change.created.job_id : change.jobId)))]);
    const touched = new Set<JobRow>();
    for (const change of changes) {
      if ('created' in change) {
        if (!rows.has(change.created.job_id)) rows.set(change.created.job_id, change.created);
        touched.add(rows.get(change.created.job_id)!);
        continue;
      }
      const row = rows.get(change.jobId);
      // Reservations made outside the gateway have no job; an event already applied changes nothing.
      if (row === undefined || change.position <= row.last_position) continue;
      change.apply(row);
      row.last_position = change.position;
      touched.add(row);
    }
    await saveJobs(transaction, [...touched]);
    await saveReceipts(
      transaction,
      receipts.map(({ stored, event }) => receiptRow(stored, event, rows.get(event.data.job_id)?.model_id ?? '')),
    );
  },
  async replay(transaction, log, through) {
    // Each requested job with the last of each kind of change jobChanges() and moneyChanges() make,
    // counting only changes after the request; then every accepted receipt.
    const upTo = String(through);
    await sql`
      WITH requested AS (
        SELECT DISTINCT ON (data->>'job_id') data->>'job_id' AS job_id, data, position, recorded_at
          FROM ${sql.table(log)} WHERE type = 'JobRequested' AND position <= ${upTo}::bigint
         ORDER BY data->>'job_id', position),
      changes AS (
        SELECT r.job_id, e.type, e.data, e.position, e.recorded_at
          FROM ${sql.table(log)} e JOIN requested r ON r.job_id = e.data->>'job_id' AND e.position > r.position
         WHERE e.type IN ('JobRouted', 'JobCompleted', 'JobFailed', 'ReceiptAccepted', 'ReservationCaptured', 'ReservationReleased')
           AND e.position <= ${upTo}::bigint),
      routed AS (SELECT DISTINCT ON (job_id) job_id, data->>'node_id' AS node_id FROM changes WHERE type = 'JobRouted' ORDER BY job_id, position DESC),
      ended AS (SELECT DISTINCT ON (job_id) job_id, type, recorded_at FROM changes
                 WHERE type IN ('JobCompleted', 'JobFailed') ORDER BY job_id, position DESC),
      failed AS (SELECT DISTINCT ON (job_id) job_id, data->>'reason' AS reason FROM changes WHERE type = 'JobFailed' ORDER BY job_id, position DESC),
      receipt AS (SELECT DISTINCT ON (job_id) job_id, data->>'receipt_hash' AS receipt_hash FROM changes
                   WHERE type = 'ReceiptAccepted' ORDER BY job_id, position DESC),
      billed AS (SELECT DISTINCT ON (job_id) job_id, type, data FROM changes
                  WHERE type IN ('ReservationCaptured', 'ReservationReleased') ORDER BY job_id, position DESC),
      latest AS (SELECT job_id, max(position) AS position FROM changes GROUP BY job_id)
      INSERT INTO jobs (job_id, customer_id, key_id, model_id, node_id, stream, status, billing_status, quoted_price_wei,
                        reserved_price_wei, debited_price_wei, payout_price_wei, policy_version, receipt_hash, failure_reason,
                        created_at, completed_at, last_position)
      SELECT r.job_id, r.data->>'customer_id', r.data->>'key_id', r.data->>'model_id', routed.node_id, (r.data->>'stream')::boolean,
             CASE ended.type WHEN 'JobCompleted' THEN 'completed' WHEN 'JobFailed' THEN 'failed' ELSE 'running' END,
             CASE billed.type WHEN 'ReservationCaptured' THEN 'captured' WHEN 'ReservationReleased' THEN 'released' ELSE 'reserved' END,
             (r.data->>'quoted_price_wei')::numeric, (r.data->>'quoted_price_wei')::numeric,
             CASE billed.type WHEN 'ReservationCaptured' THEN (billed.data->>'cost_wei')::numeric WHEN 'ReservationReleased' THEN 0 END,
             CASE billed.type WHEN 'ReservationCaptured' THEN (billed.data->>'node_payable_wei')::numeric WHEN 'ReservationReleased' THEN 0 END,
             r.data->>'policy_version', receipt.receipt_hash,
             failed.reason,
             r.recorded_at, ended.recorded_at, coalesce(latest.position, r.position)
        FROM requested r LEFT JOIN routed USING (job_id) LEFT JOIN ended USING (job_id) LEFT JOIN failed USING (job_id)
        LEFT JOIN receipt USING (job_id)
        LEFT JOIN billed USING (job_id) LEFT JOIN latest USING (job_id)`.execute(transaction);
    await sql`
      INSERT INTO receipts (receipt_hash, job_id, node_id, model_id, node_key_id, node_public_key, signature_ed25519, receipt_canonical,
                            status, received_at, position, ledger_key_id, ledger_countersignature, debited_price_wei, payout_price_wei)
      SELECT e.data->>'receipt_hash', e.data->>'job_id', e.data->>'node_id', coalesce(j.model_id, ''), e.data->>'node_key_id',
             e.data->>'node_public_key', e.data->>'signature_ed25519', e.data->>'receipt_canonical', 'accepted', e.recorded_at,
             e.position, e.data->>'ledger_key_id', e.data->>'ledger_countersignature',
             ((e.data->>'receipt_canonical')::jsonb->>'debited_price_wei')::numeric,
             ((e.data->>'receipt_canonical')::jsonb->>'payout_price_wei')::numeric
        FROM ${sql.table(log)} e LEFT JOIN jobs j ON j.job_id = e.data->>'job_id'
       WHERE e.type = 'ReceiptAccepted' AND e.position <= ${upTo}::bigint
       ORDER BY e.position
      ON CONFLICT (receipt_hash) DO NOTHING`.execute(transaction);
  },
};

function jobChanges(stored: StoredEvent, event: JobEvent): Change[] {
  const base = { position: stored.position, at: stored.recordedAt, jobId: event.data.job_id };
  switch (event.type) {
    case 'JobRequested': {
      const data = event.data;
      const created: JobRow = {
        job_id: data.job_id,
        customer_id: data.customer_id,
        key_id: data.key_id,
        model_id: data.model_id,
        node_id: null,
        stream: data.stream,
        status: 'running',
        billing_status: 'reserved',
        quoted_price_wei: data.quoted_price_wei,
        reserved_price_wei: data.quoted_price_wei,
        debited_price_wei: null,
        payout_price_wei: null,
        policy_version: data.policy_version,
        receipt_hash: null,
        failure_reason: null,
        created_at: stored.recordedAt,
        completed_at: null,
        last_position: stored.position,
      };
      return [{ position: stored.position, at: stored.recordedAt, created }];
    }
    case 'JobRouted':
      return [{ ...base, apply: (row) => void (row.node_id = event.data.node_id) }];
    case 'JobCompleted':
      return [{ ...base, apply: (row) => Object.assign(row, { status: 'completed', completed_at: stored.recordedAt }) }];
    case 'JobFailed':
      return [{ ...base, apply: (row) => Object.assign(row, { status: 'failed', failure_reason: event.data.reason, completed_at: stored.recordedAt }) }];
    case 'ReceiptAccepted':
      return [{ ...base, apply: (row) => void (row.receipt_hash = event.data.receipt_hash) }];
    case 'ReceiptRejected':
    case 'JobDispatchFailed':
    case 'JobFirstByte':
    case 'PayoutAccrued':
      return [];
  }
}

function moneyChanges(stored: StoredEvent): Change[] {
  const money = accountEventOf(stored);
  const base = { position: stored.position, at: stored.recordedAt };
  if (money?.type === 'ReservationCaptured') {
    const { job_id: jobId, cost_wei: costWei, node_payable_wei: payoutWei } = money.data;
    return [{ ...base, jobId, apply: (row) => Object.assign(row, { billing_status: 'captured', debited_price_wei: costWei, payout_price_wei: payoutWei }) }];
  }
  if (money?.type === 'ReservationReleased') {
    const jobId = money.data.job_id;
    return [{ ...base, jobId, apply: (row) => Object.assign(row, { billing_status: 'released', debited_price_wei: '0', payout_price_wei: '0' }) }];
  }
  return [];
}

function receiptRow(stored: StoredEvent, event: Extract<JobEvent, { type: 'ReceiptAccepted' }>, modelId: string): ReceiptRow {
  const data = event.data;
  const signed = JSON.parse(data.receipt_canonical) as { debited_price_wei: string; payout_price_wei: string };
  return {
    receipt_hash: data.receipt_hash,
    job_id: data.job_id,
    node_id: data.node_id,
    model_id: modelId,
    node_key_id: data.node_key_id,
    node_public_key: data.node_public_key,
    signature_ed25519: data.signature_ed25519,
    receipt_canonical: data.receipt_canonical,
    received_at: stored.recordedAt,
    position: stored.position,
    ledger_key_id: data.ledger_key_id,
    ledger_countersignature: data.ledger_countersignature,
    debited_price_wei: signed.debited_price_wei,
    payout_price_wei: signed.payout_price_wei,
  };
}

async function loadJobs(transaction: ProjectionTransaction, jobIds: string[]): Promise<Map<string, JobRow>> {
  const found = await transaction.selectFrom('jobs').selectAll().where('job_id', 'in', jobIds).execute();
  return new Map(found.map((row) => [row.job_id, row]));
}

async function saveJobs(transaction: ProjectionTransaction, rows: JobRow[]): Promise<void> {
  if (rows.length === 0) return;
  const column = <Key extends keyof JobRow>(key: Key, format: (value: JobRow[Key]) => unknown = (value) => value) => rows.map((row) => format(row[key]));
  const text = (value: unknown) => (value === null ? null : String(value));
  const time = (value: unknown) => (value instanceof Date ? value.toISOString() : null);
  await sql`
    INSERT INTO jobs (job_id, customer_id, key_id, model_id, node_id, stream, status, billing_status, quoted_price_wei,
                      reserved_price_wei, debited_price_wei, payout_price_wei, policy_version, receipt_hash, failure_reason,
                      created_at, completed_at, last_position)
    SELECT * FROM unnest(${column('job_id')}::text[], ${column('customer_id')}::text[], ${column('key_id')}::text[],
      ${column('model_id')}::text[], ${column('node_id')}::text[], ${column('stream')}::boolean[], ${column('status')}::text[],
      ${column('billing_status')}::text[], ${column('quoted_price_wei', text)}::numeric[], ${column('reserved_price_wei', text)}::numeric[],
      ${column('debited_price_wei', text)}::numeric[], ${column('payout_price_wei', text)}::numeric[], ${column('policy_version')}::text[],
      ${column('receipt_hash')}::text[], ${column('failure_reason')}::text[], ${column('created_at', time)}::timestamptz[],
      ${column('completed_at', time)}::timestamptz[], ${column('last_position', text)}::bigint[])
    ON CONFLICT (job_id) DO UPDATE SET node_id = excluded.node_id, status = excluded.status, billing_status = excluded.billing_status,
      debited_price_wei = excluded.debited_price_wei, payout_price_wei = excluded.payout_price_wei, receipt_hash = excluded.receipt_hash,
      failure_reason = excluded.failure_reason, completed_at = excluded.completed_at, last_position = excluded.last_position
    WHERE jobs.last_position < excluded.last_position`.execute(transaction);
}

async function saveReceipts(transaction: ProjectionTransaction, rows: ReceiptRow[]): Promise<void> {
  if (rows.length === 0) return;
  const column = <Key extends keyof ReceiptRow>(key: Key) => rows.map((row) => {
    const value = row[key];
    return value instanceof Date ? value.toISOString() : typeof value === 'bigint' ? String(value) : value;
  });
  await sql`
    INSERT INTO receipts (receipt_hash, job_id, node_id, model_id, node_key_id, node_public_key, signature_ed25519, receipt_canonical,
                          status, received_at, position, ledger_key_id, ledger_countersignature, debited_price_wei, payout_price_wei)
    SELECT r.receipt_hash, r.job_id, r.node_id, r.model_id, r.node_key_id, r.node_public_key, r.signature_ed25519, r.receipt_canonical,
           'accepted', r.received_at, r.position, r.ledger_key_id, r.ledger_countersignature, r.debited_price_wei, r.payout_price_wei
      FROM unnest(${column('receipt_hash')}::text[], ${column('job_id')}::text[], ${column('node_id')}::text[], ${column('model_id')}::text[],
                  ${column('node_key_id')}::text[], ${column('node_public_key')}::text[], ${column('signature_ed25519')}::text[],
                  ${column('receipt_canonical')}::text[], ${column('received_at')}::timestamptz[], ${column('position')}::bigint[],
                  ${column('ledger_key_id')}::text[], ${column('ledger_countersignature')}::text[], ${column('debited_price_wei')}::numeric[],
                  ${column('payout_price_wei')}::numeric[])
        AS r(receipt_hash, job_id, node_id, model_id, node_key_id, node_public_key, signature_ed25519, receipt_canonical, received_at,
             position, ledger_key_id, ledger_countersignature, debited_price_wei, payout_price_wei)
    ON CONFLICT (receipt_hash) DO NOTHING`.execute(transaction);
}
