import { sql } from 'kysely';
import { loadWithoutIndexes } from './bulkLoad.ts';
import type { ProjectionTransaction } from './projection.ts';

/**
 * The payouts read model computed set-wise from the log table, for a rebuild: the same rows
 * payouts.ts's apply() leaves. A row's state is decided by the last batch that took it: pending with
 * that batch's reset position when it was reset, finalized with the finalization's position, batched
 * with the creation's position otherwise (a submission does not touch rows); a row no batch took is
 * pending at its accrual position. Runs after the jobs replay, whose receipts it marks with their batch.
 */
export async function replayPayouts(transaction: ProjectionTransaction, log: string, through: bigint): Promise<void> {
  const upTo = String(through);
  // One row per capture: with a million events, hundreds of thousands of rows, so the indexes are
  // built once afterwards.
  await loadWithoutIndexes(transaction, 'treasury_captures', async () => {
    await sql`
      INSERT INTO treasury_captures (job_id, node_id, customer_debit_wei, node_payout_wei, protocol_fee_wei, captured_at, position)
      SELECT DISTINCT ON (data->>'job_id') data->>'job_id', data->>'node_id', (data->>'cost_wei')::numeric,
             (data->>'node_payable_wei')::numeric, (data->>'protocol_fee_wei')::numeric, recorded_at, position
        FROM ${sql.table(log)} WHERE type = 'ReservationCaptured' AND position <= ${upTo}::bigint
       ORDER BY data->>'job_id', position`.execute(transaction);
  });
  await sql`
    WITH created AS (
      SELECT data, position FROM ${sql.table(log)} WHERE type = 'PayoutBatchCreated' AND position <= ${upTo}::bigint),
    lifecycle AS (
      SELECT DISTINCT ON (data->>'batch_id', type) data->>'batch_id' AS batch_id, type, data, position
        FROM ${sql.table(log)}
       WHERE type IN ('PayoutBatchSubmitted', 'PayoutBatchFinalized', 'PayoutBatchReset') AND position <= ${upTo}::bigint
       ORDER BY data->>'batch_id', type, position)
    INSERT INTO payout_batches (batch_id, status, payout_count, total_amount_wei, merkle_root, leaf_version, cutoff_position, cutoff_time,
                                node_filter, transaction_hash, block_number, created_at, submitted_at, finalized_at, reset_at,
                                create_reason, submit_reason, finalize_reason, reset_reason, position, last_position)
    SELECT c.data->>'batch_id',
           CASE WHEN r.position IS NOT NULL THEN 'reset' WHEN f.position IS NOT NULL THEN 'finalized'
                WHEN s.position IS NOT NULL THEN 'submitted' ELSE 'created' END,
           (c.data->>'payout_count')::integer, (c.data->>'total_amount_wei')::numeric, c.data->>'merkle_root', c.data->>'leaf_version',
           (c.data->>'cutoff_position')::bigint, (c.data->>'cutoff_time')::timestamptz, c.data->>'node_id',
           coalesce(f.data->>'transaction_hash', s.data->>'transaction_hash'), (f.data->>'block_number')::bigint,
           (c.data->>'created_at')::timestamptz, (s.data->>'submitted_at')::timestamptz, (f.data->>'finalized_at')::timestamptz,
           (r.data->>'reset_at')::timestamptz, c.data->>'reason', s.data->>'reason', f.data->>'reason', r.data->>'reason',
           c.position, greatest(c.position, s.position, f.position, r.position)
      FROM created c
      LEFT JOIN lifecycle s ON s.batch_id = c.data->>'batch_id' AND s.type = 'PayoutBatchSubmitted'
      LEFT JOIN lifecycle f ON f.batch_id = c.data->>'batch_id' AND f.type = 'PayoutBatchFinalized'
      LEFT JOIN lifecycle r ON r.batch_id = c.data->>'batch_id' AND r.type = 'PayoutBatchReset'
    ON CONFLICT (batch_id) DO NOTHING`.execute(transaction);
  await sql`
    INSERT INTO payout_batch_leaves (batch_id, leaf_index, payout_id, receipt_hash, job_id, node_id, amount_wei)
    SELECT e.data->>'batch_id', (leaf.ordinality - 1)::integer, leaf.value->>'payout_id', leaf.value->>'receipt_hash',
           leaf.value->>'job_id', leaf.value->>'node_id', (leaf.value->>'amount_wei')::numeric
      FROM ${sql.table(log)} e CROSS JOIN LATERAL jsonb_array_elements(e.data->'payouts') WITH ORDINALITY AS leaf
     WHERE e.type = 'PayoutBatchCreated' AND e.position <= ${upTo}::bigint
    ON CONFLICT (batch_id, leaf_index) DO NOTHING`.execute(transaction);
  await sql`
    WITH latest AS (
      SELECT DISTINCT ON (l.payout_id) l.payout_id, l.batch_id, l.leaf_index, b.status, b.position AS created_position, b.last_position
        FROM payout_batch_leaves l JOIN payout_batches b USING (batch_id)
       ORDER BY l.payout_id, b.position DESC)
    INSERT INTO payout_rows (payout_id, receipt_hash, job_id, node_id, amount_wei, status, batch_id, leaf_index,
                             accrued_position, accrued_at, event_id, last_position)
    SELECT 'pay_' || (e.data->>'receipt_hash'), e.data->>'receipt_hash', e.data->>'job_id', e.data->>'node_id',
           (e.data->>'amount_wei')::numeric,
           CASE latest.status WHEN 'finalized' THEN 'finalized' WHEN 'created' THEN 'batched' WHEN 'submitted' THEN 'batched' ELSE 'pending' END,
           CASE WHEN latest.status IN ('created', 'submitted', 'finalized') THEN latest.batch_id END,
           CASE WHEN latest.status IN ('created', 'submitted', 'finalized') THEN latest.leaf_index END,
           e.position, e.recorded_at, e.event_id,
           CASE latest.status WHEN 'created' THEN latest.created_position WHEN 'submitted' THEN latest.created_position
                WHEN 'finalized' THEN latest.last_position WHEN 'reset' THEN latest.last_position ELSE e.position END
      FROM ${sql.table(log)} e LEFT JOIN latest ON latest.payout_id = 'pay_' || (e.data->>'receipt_hash')
     WHERE e.type = 'PayoutAccrued' AND e.position <= ${upTo}::bigint
    ON CONFLICT (payout_id) DO NOTHING`.execute(transaction);
  await sql`
    UPDATE receipts SET batch_id = p.batch_id FROM payout_rows p
     WHERE receipts.receipt_hash = p.receipt_hash AND p.batch_id IS NOT NULL`.execute(transaction);
}
