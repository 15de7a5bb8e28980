import { sql } from 'kysely';
import { parseJobEvent } from '../src/events/job.ts';
import { parsePayoutBatchEvent, payoutBatchEventSchemas, payoutIdOf, type PayoutBatchEvent } from '../src/events/payoutBatch.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import { accountEventOf } from './accountEvents.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';
import { replayPayouts } from './payoutsReplay.ts';

/**
 * Payout evidence: one row per PayoutAccrued (pending → batched → finalized, back to pending on a
 * reset), the batches with their settlement evidence and their leaves in leaf order (so proofs can
 * be served for any batch, reset ones included), and each capture's split of the customer debit
 * into node payout and protocol fee, for the treasury report. It also keeps `receipts.batch_id`
 * equal to the row's live batch. Every change to a row is guarded by the row's last position, so a
 * replayed event changes nothing.
 */

interface Accrual {
  payoutId: string;
  receiptHash: string;
  jobId: string;
  nodeId: string;
  amountWei: string;
  position: bigint;
  at: Date;
  eventId: string;
}

interface Capture {
  jobId: string;
  nodeId: string;
  debitWei: string;
  payoutWei: string;
  feeWei: string;
  at: Date;
  position: bigint;
}

export const payoutsProjection: Projection = {
  name: 'payouts',
  tables: ['payout_rows', 'payout_batches', 'payout_batch_leaves', 'treasury_captures'],
  eventTypes: ['PayoutAccrued', 'ReservationCaptured', ...Object.keys(payoutBatchEventSchemas)],
  async apply(transaction, events) {
    let accruals: Accrual[] = [];
    let captures: Capture[] = [];
    const flush = async () => {
      await insertAccruals(transaction, accruals);
      await insertCaptures(transaction, captures);
      accruals = [];
      captures = [];
    };
    for (const stored of events) {
      const batchEvent = parsePayoutBatchEvent(stored.type, stored.data);
      if (batchEvent !== null) {
        // A batch takes rows accrued before it, possibly earlier in this same batch of events.
        await flush();
        await applyBatchEvent(transaction, stored, batchEvent);
        continue;
      }
      const accrual = accrualOf(stored);
      if (accrual !== null) accruals.push(accrual);
      const capture = captureOf(stored);
      if (capture !== null) captures.push(capture);
    }
    await flush();
  },
  replay: replayPayouts,
  // It marks the receipts the jobs replay inserts with their batch.
  replayAfter: ['jobs'],
};

function accrualOf(stored: StoredEvent): Accrual | null {
  if (stored.type !== 'PayoutAccrued') return null;
  const event = parseJobEvent(stored.type, stored.data);
  if (event?.type !== 'PayoutAccrued') return null;
  const { receipt_hash: receiptHash, job_id: jobId, node_id: nodeId, amount_wei: amountWei } = event.data;
  return { payoutId: payoutIdOf(receiptHash), receiptHash, jobId, nodeId, amountWei, position: stored.position, at: stored.recordedAt, eventId: stored.eventId };
}

function captureOf(stored: StoredEvent): Capture | null {
  const event = accountEventOf(stored);
  if (event?.type !== 'ReservationCaptured') return null;
  const data = event.data;
  return {
    jobId: data.job_id,
    nodeId: data.node_id,
    debitWei: data.cost_wei,
    payoutWei: data.node_payable_wei,
    feeWei: data.protocol_fee_wei,
    at: stored.recordedAt,
    position: stored.position,
  };
}

async function insertAccruals(transaction: ProjectionTransaction, rows: Accrual[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    INSERT INTO payout_rows (payout_id, receipt_hash, job_id, node_id, amount_wei, status, batch_id, leaf_index,
                             accrued_position, accrued_at, event_id, last_position)
    SELECT r.payout_id, r.receipt_hash, r.job_id, r.node_id, r.amount_wei, 'pending', NULL, NULL, r.position, r.at, r.event_id, r.position
      FROM unnest(${rows.map((row) => row.payoutId)}::text[], ${rows.map((row) => row.receiptHash)}::text[],
                  ${rows.map((row) => row.jobId)}::text[], ${rows.map((row) => row.nodeId)}::text[],
                  ${rows.map((row) => row.amountWei)}::numeric[], ${rows.map((row) => String(row.position))}::bigint[],
                  ${rows.map((row) => row.at.toISOString())}::timestamptz[], ${rows.map((row) => row.eventId)}::text[])
        AS r(payout_id, receipt_hash, job_id, node_id, amount_wei, position, at, event_id)
    ON CONFLICT (payout_id) DO NOTHING`.execute(transaction);
}

async function insertCaptures(transaction: ProjectionTransaction, rows: Capture[]): Promise<void> {
  if (rows.length === 0) return;
  await sql`
    INSERT INTO treasury_captures (job_id, node_id, customer_debit_wei, node_payout_wei, protocol_fee_wei, captured_at, position)
    SELECT * FROM unnest(${rows.map((row) => row.jobId)}::text[], ${rows.map((row) => row.nodeId)}::text[],
                         ${rows.map((row) => row.debitWei)}::numeric[], ${rows.map((row) => row.payoutWei)}::numeric[],
                         ${rows.map((row) => row.feeWei)}::numeric[], ${rows.map((row) => row.at.toISOString())}::timestamptz[],
                         ${rows.map((row) => String(row.position))}::bigint[])
    ON CONFLICT (job_id) DO NOTHING`.execute(transaction);
}

async function applyBatchEvent(transaction: ProjectionTransaction, stored: StoredEvent, event: PayoutBatchEvent): Promise<void> {
  const position = String(stored.position);
  const batchId = event.data.batch_id;
  switch (event.type) {
    case 'PayoutBatchCreated':
      return createBatch(transaction, stored, event);
    case 'PayoutBatchSubmitted':
      await sql`UPDATE payout_batches SET status = 'submitted', transaction_hash = ${event.data.transaction_hash},
                  submitted_at = ${event.data.submitted_at}::timestamptz, submit_reason = ${event.data.reason}, last_position = ${position}::bigint
                WHERE batch_id = ${batchId} AND last_position < ${position}::bigint`.execute(transaction);
      return;
    case 'PayoutBatchFinalized':
      await sql`UPDATE payout_batches SET status = 'finalized', transaction_hash = ${event.data.transaction_hash},
                  block_number = ${event.data.block_number}, finalized_at = ${event.data.finalized_at}::timestamptz,
                  finalize_reason = ${event.data.reason}, last_position = ${position}::bigint
                WHERE batch_id = ${batchId} AND last_position < ${position}::bigint`.execute(transaction);
      await sql`UPDATE payout_rows SET status = 'finalized', last_position = ${position}::bigint
                WHERE batch_id = ${batchId} AND last_position < ${position}::bigint`.execute(transaction);
      return;
    case 'PayoutBatchReset':
      await sql`UPDATE payout_batches SET status = 'reset', reset_at = ${event.data.reset_at}::timestamptz,
                  reset_reason = ${event.data.reason}, last_position = ${position}::bigint
                WHERE batch_id = ${batchId} AND last_position < ${position}::bigint`.execute(transaction);
      await sql`
        WITH returned AS (
          UPDATE payout_rows SET status = 'pending', batch_id = NULL, leaf_index = NULL, last_position = ${position}::bigint
           WHERE batch_id = ${batchId} AND last_position < ${position}::bigint RETURNING receipt_hash)
        UPDATE receipts SET batch_id = NULL FROM returned WHERE receipts.receipt_hash = returned.receipt_hash`.execute(transaction);
      return;
  }
}

async function createBatch(transaction: ProjectionTransaction, stored: StoredEvent, event: Extract<PayoutBatchEvent, { type: 'PayoutBatchCreated' }>) {
  const data = event.data;
  const position = String(stored.position);
  await sql`
    INSERT INTO payout_batches (batch_id, status, payout_count, total_amount_wei, merkle_root, leaf_version, cutoff_position, cutoff_time,
                                node_filter, created_at, create_reason, position, last_position)
    VALUES (${data.batch_id}, 'created', ${data.payout_count}, ${data.total_amount_wei}::numeric, ${data.merkle_root}, ${data.leaf_version},
            ${data.cutoff_position}::bigint, ${data.cutoff_time}::timestamptz, ${data.node_id}, ${data.created_at}::timestamptz,
            ${data.reason}, ${position}::bigint, ${position}::bigint)
    ON CONFLICT (batch_id) DO NOTHING`.execute(transaction);
  const rows = data.payouts;
  const indexes = rows.map((_, index) => index);
  await sql`
    INSERT INTO payout_batch_leaves (batch_id, leaf_index, payout_id, receipt_hash, job_id, node_id, amount_wei)
    SELECT ${data.batch_id}, l.leaf_index, l.payout_id, l.receipt_hash, l.job_id, l.node_id, l.amount_wei
      FROM unnest(${indexes}::integer[], ${rows.map((row) => row.payout_id)}::text[], ${rows.map((row) => row.receipt_hash)}::text[],
                  ${rows.map((row) => row.job_id)}::text[], ${rows.map((row) => row.node_id)}::text[],
                  ${rows.map((row) => row.amount_wei)}::numeric[])
        AS l(leaf_index, payout_id, receipt_hash, job_id, node_id, amount_wei)
    ON CONFLICT (batch_id, leaf_index) DO NOTHING`.execute(transaction);
  await sql`
    WITH taken AS (
      UPDATE payout_rows p SET status = 'batched', batch_id = ${data.batch_id}, leaf_index = l.leaf_index, last_position = ${position}::bigint
        FROM unnest(${rows.map((row) => row.payout_id)}::text[], ${indexes}::integer[]) AS l(payout_id, leaf_index)
       WHERE p.payout_id = l.payout_id AND p.last_position < ${position}::bigint
      RETURNING p.receipt_hash)
    UPDATE receipts SET batch_id = ${data.batch_id} FROM taken WHERE receipts.receipt_hash = taken.receipt_hash`.execute(transaction);
}
