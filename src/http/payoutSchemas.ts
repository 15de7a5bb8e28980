import { z } from 'zod';
import { maxPayoutsPerBatch } from '../payouts/leaf.ts';
import { weiString } from './schemas.ts';

/** Wire schemas of payout batches and the treasury report. Unknown fields are refused. */

const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');
const nodeId = z.string().regex(/^node_[0-9a-f]{24}$/, 'must be a node id');
const logPosition = z
  .string()
  .regex(/^[1-9][0-9]{0,18}$/, 'must be a positive decimal integer')
  .meta({ description: 'A position of the global log, as a decimal string' });
const transactionHash = z
  .string()
  .regex(/^0x[0-9a-fA-F]{64}$/, 'must be 0x followed by 64 hex characters')
  .meta({ description: 'Settlement transaction hash; stored in lowercase' });
const reason = z.string().trim().min(1).max(500);
const batchStatus = z.enum(['created', 'submitted', 'finalized', 'reset']);

export const batchIdParam = z.strictObject({ batch_id: z.string().regex(/^pb_[0-9a-f]{24}$/, 'must be a payout batch id') });

const selection = {
  cutoff_position: logPosition.optional().meta({ description: 'Rows accrued at or before this log position; the head when absent' }),
  cutoff_time: z.iso.datetime().optional().meta({ description: 'And, when given, accrued at or before this time' }),
  node_id: nodeId.optional().meta({ description: 'Only this node’s rows' }),
  max_payouts: z.number().int().min(1).max(maxPayoutsPerBatch).default(maxPayoutsPerBatch),
};

export const previewBody = z.strictObject(selection);

export const createBatchBody = z.strictObject({
  ...selection,
  expected_merkle_root: hex64.optional().meta({ description: 'The preview’s root; the create is refused when the rows changed since' }),
  reason: reason.optional(),
});

export const submitBody = z.strictObject({ transaction_hash: transactionHash, reason: reason.optional() });

export const finalizeBody = z.strictObject({
  transaction_hash: transactionHash,
  block_number: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  finalized_at: z.iso.datetime().optional().meta({ description: 'Time of the settlement block; now when absent' }),
  reason: reason.optional(),
});

export const resetBody = z.strictObject({ reason: reason.meta({ description: 'Required: a reset undoes settlement work' }) });

export const listBatchesQuery = z.strictObject({
  status: batchStatus.optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
});

const nodeTotal = z.object({ node_id: z.string(), payout_count: z.number().int(), total_amount_wei: weiString });

export const previewResponse = z.object({
  cutoff_position: z.string(),
  cutoff_time: z.iso.datetime().nullable(),
  node_id: z.string().nullable(),
  payout_count: z.number().int(),
  total_amount_wei: weiString,
  merkle_root: z.string(),
  leaf_version: z.string(),
  more_pending: z.boolean().meta({ description: 'More eligible rows than one batch holds; they stay pending' }),
  nodes: z.array(nodeTotal),
});

export const publicBatchView = z.object({
  batch_id: z.string(),
  status: batchStatus,
  payout_count: z.number().int(),
  total_amount_wei: weiString,
  merkle_root: z.string(),
  transaction_hash: z.string().nullable(),
  block_number: z.number().int().nullable(),
  created_at: z.iso.datetime(),
  submitted_at: z.iso.datetime().nullable(),
  finalized_at: z.iso.datetime().nullable(),
});

export const adminBatchView = publicBatchView.extend({
  leaf_version: z.string(),
  cutoff_position: z.string(),
  cutoff_time: z.iso.datetime().nullable(),
  node_id: z.string().nullable().meta({ description: 'The node filter the batch was created with' }),
  reset_at: z.iso.datetime().nullable(),
  reasons: z.object({ create: z.string().nullable(), submit: z.string().nullable(), finalize: z.string().nullable(), reset: z.string().nullable() }),
});

export const batchCommandResponse = adminBatchView.extend({ replayed: z.boolean() });

export const batchListResponse = z.object({ batches: z.array(adminBatchView) });

export const proofQuery = z.strictObject({ node_id: nodeId });

export const proofResponse = z.object({
  batch_id: z.string(),
  status: batchStatus,
  merkle_root: z.string(),
  tree_size: z.number().int(),
  leaf_version: z.string(),
  hash_algorithm: z.literal('rfc9162-sha256'),
  node_id: z.string(),
  node_total_wei: weiString,
  payouts: z.array(
    z.object({
      leaf_index: z.number().int(),
      payout_id: z.string(),
      receipt_hash: z.string(),
      job_id: z.string(),
      node_id: z.string(),
      amount_wei: weiString,
      leaf_canonical: z.string().meta({ description: 'The leaf’s exact RFC 8785 bytes' }),
      leaf_hash: z.string().meta({ description: 'SHA-256(0x00 ‖ leaf_canonical), hex' }),
      audit_path: z.array(z.string()).meta({ description: 'RFC 9162 inclusion proof, hex, from the leaf up' }),
    }),
  ),
});

export const treasuryQuery = z.strictObject({
  window_days: z.coerce.number().int().min(1).max(366).default(30),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

export const treasuryResponse = z.object({
  status: z.literal('ok'),
  generated_at: z.iso.datetime(),
  window_days: z.number().int(),
  totals: z.object({ customer_debits_wei: weiString, node_payouts_wei: weiString, protocol_fees_wei: weiString }),
  settlement_statuses: z.array(
    z.object({
      settlement_status: z.string(),
      payout_count: z.number().int(),
      total_payout_wei: weiString.meta({ description: 'What the rows owe the nodes' }),
      total_amount_wei: weiString.meta({ description: 'What the customers were debited for the same jobs' }),
    }),
  ),
  recent_protocol_fees: z.array(
    z.object({
      job_id: z.string(),
      receipt_hash: z.string().nullable(),
      node_id: z.string(),
      customer_debit_wei: weiString,
      node_payout_wei: weiString,
      protocol_fee_wei: weiString,
      captured_at: z.iso.datetime(),
      position: z.string(),
    }),
  ),
});
