import { z } from 'zod';
import { weiStringPattern } from '../money.ts';
import { transferSchema } from './customerAccount.ts';

/**
 * Payout batches: pending payout rows (one per PayoutAccrued) committed under a Merkle root, then
 * submitted to the settlement contract and finalized from its evidence, or reset. Every batch event
 * lives on one stream, `payout-ledger`, so the rule "a row is in at most one live batch" is checked
 * against one aggregate state under one optimistic-concurrency version: two creates racing for the
 * same rows cannot both append. A created batch lists its rows in leaf order, so the batch and its
 * root can be recomputed from the log alone. No customer identity appears here.
 */
const wei = z.string().regex(new RegExp(weiStringPattern));
const hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const position = z.string().regex(/^[1-9][0-9]{0,18}$/);
const transactionHash = z.string().regex(/^0x[0-9a-f]{64}$/);

export const payoutRowSchema = z.strictObject({
  payout_id: z.string(),
  receipt_hash: hex64,
  job_id: z.string(),
  node_id: z.string(),
  amount_wei: wei,
  /** Global log position of the PayoutAccrued event: the leaf order. */
  accrued_position: position,
});
export type PayoutRowData = z.infer<typeof payoutRowSchema>;

export const payoutBatchEventSchemas = {
  PayoutBatchCreated: z.strictObject({
    batch_id: z.string(),
    /** Rows accrued at or before this log position (and `cutoff_time`, when given) were eligible. */
    cutoff_position: position,
    cutoff_time: z.iso.datetime().nullable(),
    /** Only this node's rows were eligible, when set. */
    node_id: z.string().nullable(),
    payout_count: z.number().int().positive(),
    total_amount_wei: wei,
    merkle_root: hex64,
    leaf_version: z.literal('b3iq-payout-leaf-v1'),
    /** In leaf order: ascending accrual position. */
    payouts: z.array(payoutRowSchema).min(1),
    created_at: z.iso.datetime(),
    reason: z.string().nullable(),
  }),
  PayoutBatchSubmitted: z.strictObject({
    batch_id: z.string(),
    transaction_hash: transactionHash,
    submitted_at: z.iso.datetime(),
    reason: z.string().nullable(),
  }),
  /**
   * Settlement evidence. The transfers move each node's share of the batch from its payable account
   * to `external:settlements`, so the ledger shows what is still owed.
   */
  PayoutBatchFinalized: z.strictObject({
    batch_id: z.string(),
    transaction_hash: transactionHash,
    block_number: z.number().int().nonnegative(),
    finalized_at: z.iso.datetime(),
    reason: z.string().nullable(),
    /** Zero-amount transfers are omitted, as everywhere in the ledger. */
    transfers: z.array(transferSchema),
  }),
  /** The batch's rows are pending again; the batch stays in the log with status reset. */
  PayoutBatchReset: z.strictObject({
    batch_id: z.string(),
    payout_count: z.number().int().positive(),
    reset_at: z.iso.datetime(),
    reason: z.string(),
  }),
} as const;

type Schemas = typeof payoutBatchEventSchemas;
export type PayoutBatchEventType = keyof Schemas;
export type PayoutBatchEvent = { [Type in PayoutBatchEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[PayoutBatchEventType];

export function parsePayoutBatchEvent(type: string, data: unknown): PayoutBatchEvent | null {
  if (!Object.hasOwn(payoutBatchEventSchemas, type)) return null;
  const eventType = type as PayoutBatchEventType;
  return { type: eventType, data: payoutBatchEventSchemas[eventType].parse(data) } as PayoutBatchEvent;
}

export const payoutLedgerStreamName = 'payout-ledger';

/** A payout row's id is derived from its receipt's hash: one accepted receipt, one row. */
export function payoutIdOf(receiptHash: string): string {
  return `pay_${receiptHash}`;
}
