import { DomainError } from '../../errors.ts';
import { accounts, type Transfer } from '../../events/customerAccount.ts';
import { payoutIdOf, type PayoutBatchEvent, type PayoutRowData } from '../../events/payoutBatch.ts';
import { formatWei } from '../../money.ts';
import { maxPayoutsPerBatch, payoutLeafVersion, payoutMerkleRoot } from '../../payouts/leaf.ts';
import { assertNever, type Decider } from '../decider.ts';

/**
 * The payout ledger: every payout batch and the rows it holds. One aggregate for all batches, so
 * "a row is in at most one live batch" (created, submitted or finalized) is decided on one state
 * under one stream version. Batches move created → submitted → finalized, or created/submitted →
 * reset, which returns their rows to pending.
 */

/** A PayoutAccrued event as read from the log: what a batch may take. */
export interface PayoutCandidate {
  receiptHash: string;
  jobId: string;
  nodeId: string;
  amountWei: bigint;
  accruedPosition: bigint;
  accruedAt: Date;
}

export interface BatchSelection {
  cutoffPosition: bigint;
  cutoffTime: Date | null;
  nodeId: string | null;
  maxPayouts: number;
  candidates: readonly PayoutCandidate[];
}

export type PayoutBatchCommand =
  | ({ type: 'CreatePayoutBatch'; batchId: string; expectedMerkleRoot: string | null; createdAt: Date; reason: string | null } & BatchSelection)
  | { type: 'SubmitPayoutBatch'; batchId: string; transactionHash: string; submittedAt: Date; reason: string | null }
  | { type: 'FinalizePayoutBatch'; batchId: string; transactionHash: string; blockNumber: number; finalizedAt: Date; reason: string | null }
  | { type: 'ResetPayoutBatch'; batchId: string; resetAt: Date; reason: string };

export type BatchStatus = 'created' | 'submitted' | 'finalized' | 'reset';

export interface BatchState {
  status: BatchStatus;
  payoutIds: readonly string[];
  /** Each node's share of the batch: the transfers its finalization makes. */
  nodeTotals: ReadonlyMap<string, bigint>;
  transactionHash: string | null;
  blockNumber: number | null;
}

export interface PayoutLedgerState {
  batches: ReadonlyMap<string, BatchState>;
}

export interface BatchPlan {
  payouts: PayoutRowData[];
  totalAmountWei: bigint;
  merkleRoot: string;
  /** Eligible rows beyond the batch size limit, left pending for the next batch. */
  morePending: boolean;
}

export function initialState(): PayoutLedgerState {
  return { batches: new Map() };
}

/**
 * The rows a batch would take now: candidates not in any live batch, accrued at or before the
 * cutoff, of the node when one is named, in accrual order, at most `maxPayouts`. Preview and create
 * both call this, so a preview shows exactly what a create would commit to.
 */
export function planBatch(selection: BatchSelection, state: PayoutLedgerState): BatchPlan {
  const claimed = claimedPayoutIds(state);
  const seen = new Set<string>();
  const eligible = selection.candidates
    .filter((candidate) => {
      const payoutId = payoutIdOf(candidate.receiptHash);
      if (claimed.has(payoutId) || seen.has(payoutId)) return false;
      seen.add(payoutId);
      return (
        candidate.accruedPosition <= selection.cutoffPosition &&
        (selection.cutoffTime === null || candidate.accruedAt.getTime() <= selection.cutoffTime.getTime()) &&
        (selection.nodeId === null || candidate.nodeId === selection.nodeId)
      );
    })
    .sort((left, right) => (left.accruedPosition < right.accruedPosition ? -1 : left.accruedPosition > right.accruedPosition ? 1 : 0));
  const limit = Math.min(selection.maxPayouts, maxPayoutsPerBatch);
  const payouts = eligible.slice(0, limit).map(
    (candidate): PayoutRowData => ({
      payout_id: payoutIdOf(candidate.receiptHash),
      receipt_hash: candidate.receiptHash,
      job_id: candidate.jobId,
      node_id: candidate.nodeId,
      amount_wei: formatWei(candidate.amountWei),
      accrued_position: String(candidate.accruedPosition),
    }),
  );
  const totalAmountWei = payouts.reduce((sum, row) => sum + BigInt(row.amount_wei), 0n);
  return { payouts, totalAmountWei, merkleRoot: payoutMerkleRoot(payouts), morePending: eligible.length > limit };
}

export function decide(command: PayoutBatchCommand, state: PayoutLedgerState): PayoutBatchEvent[] {
  switch (command.type) {
    case 'CreatePayoutBatch':
      return create(command, state);
    case 'SubmitPayoutBatch':
      return submit(command, requireBatch(state, command.batchId));
    case 'FinalizePayoutBatch':
      return finalize(command, requireBatch(state, command.batchId));
    case 'ResetPayoutBatch':
      return reset(command, requireBatch(state, command.batchId));
    default:
      return assertNever(command);
  }
}

function create(command: Extract<PayoutBatchCommand, { type: 'CreatePayoutBatch' }>, state: PayoutLedgerState): PayoutBatchEvent[] {
  if (state.batches.has(command.batchId)) throw invalidTransition(command.batchId, 'exists', 'created');
  const plan = planBatch(command, state);
  if (plan.payouts.length === 0) throw new DomainError('payout_batch_empty', 'No pending payouts up to the cutoff; nothing to batch');
  if (command.expectedMerkleRoot !== null && command.expectedMerkleRoot !== plan.merkleRoot) {
    throw new DomainError('payout_batch_preview_stale', 'The pending payouts changed since the preview; preview again', 'expected_merkle_root');
  }
  return [
    {
      type: 'PayoutBatchCreated',
      data: {
        batch_id: command.batchId,
        cutoff_position: String(command.cutoffPosition),
        cutoff_time: command.cutoffTime?.toISOString() ?? null,
        node_id: command.nodeId,
        payout_count: plan.payouts.length,
        total_amount_wei: formatWei(plan.totalAmountWei),
        merkle_root: plan.merkleRoot,
        leaf_version: payoutLeafVersion,
        payouts: plan.payouts,
        created_at: command.createdAt.toISOString(),
        reason: command.reason,
      },
    },
  ];
}

function submit(command: Extract<PayoutBatchCommand, { type: 'SubmitPayoutBatch' }>, batch: BatchState): PayoutBatchEvent[] {
  // Recording the same transaction again is a retry; another transaction for a submitted batch is not.
  if (batch.status === 'submitted' && batch.transactionHash === command.transactionHash) return [];
  if (batch.status !== 'created') throw invalidTransition(command.batchId, batch.status, 'submitted');
  const data = { batch_id: command.batchId, transaction_hash: command.transactionHash, submitted_at: command.submittedAt.toISOString(), reason: command.reason };
  return [{ type: 'PayoutBatchSubmitted', data }];
}

function finalize(command: Extract<PayoutBatchCommand, { type: 'FinalizePayoutBatch' }>, batch: BatchState): PayoutBatchEvent[] {
  const { batchId, transactionHash, blockNumber } = command;
  if (batch.status === 'finalized' && batch.transactionHash === transactionHash && batch.blockNumber === blockNumber) return [];
  if (batch.status !== 'submitted') throw invalidTransition(batchId, batch.status, 'finalized');
  if (batch.transactionHash !== transactionHash) {
    throw new DomainError('payout_batch_transaction_mismatch', `Batch ${batchId} was submitted in another transaction`, 'transaction_hash');
  }
  const transfers: Transfer[] = [...batch.nodeTotals]
    .filter(([, amountWei]) => amountWei > 0n)
    .sort(([left], [right]) => (left < right ? -1 : left > right ? 1 : 0))
    .map(([nodeId, amountWei]) => ({ from: accounts.nodePayable(nodeId), to: accounts.externalSettlements, amount_wei: formatWei(amountWei) }));
  const data = {
    batch_id: batchId,
    transaction_hash: transactionHash,
    block_number: blockNumber,
    finalized_at: command.finalizedAt.toISOString(),
    reason: command.reason,
    transfers,
  };
  return [{ type: 'PayoutBatchFinalized', data }];
}

function reset(command: Extract<PayoutBatchCommand, { type: 'ResetPayoutBatch' }>, batch: BatchState): PayoutBatchEvent[] {
  if (batch.status !== 'created' && batch.status !== 'submitted') throw invalidTransition(command.batchId, batch.status, 'reset');
  const data = { batch_id: command.batchId, payout_count: batch.payoutIds.length, reset_at: command.resetAt.toISOString(), reason: command.reason };
  return [{ type: 'PayoutBatchReset', data }];
}

export function evolve(state: PayoutLedgerState, event: PayoutBatchEvent): PayoutLedgerState {
  switch (event.type) {
    case 'PayoutBatchCreated': {
      const nodeTotals = new Map<string, bigint>();
      for (const row of event.data.payouts) nodeTotals.set(row.node_id, (nodeTotals.get(row.node_id) ?? 0n) + BigInt(row.amount_wei));
      const payoutIds = event.data.payouts.map((row) => row.payout_id);
      return withBatch(state, event.data.batch_id, { status: 'created', payoutIds, nodeTotals, transactionHash: null, blockNumber: null });
    }
    case 'PayoutBatchSubmitted':
      return updateBatch(state, event.data.batch_id, { status: 'submitted', transactionHash: event.data.transaction_hash });
    case 'PayoutBatchFinalized':
      return updateBatch(state, event.data.batch_id, { status: 'finalized', blockNumber: event.data.block_number });
    case 'PayoutBatchReset':
      // A reset batch claims nothing: its rows are pending again.
      return updateBatch(state, event.data.batch_id, { status: 'reset', payoutIds: [], nodeTotals: new Map() });
    default:
      return assertNever(event);
  }
}

function withBatch(state: PayoutLedgerState, batchId: string, batch: BatchState): PayoutLedgerState {
  const batches = new Map(state.batches);
  batches.set(batchId, batch);
  return { batches };
}

function updateBatch(state: PayoutLedgerState, batchId: string, change: Partial<BatchState>): PayoutLedgerState {
  const batch = state.batches.get(batchId);
  return batch === undefined ? state : withBatch(state, batchId, { ...batch, ...change });
}

/** Rows of every live batch: created, submitted or finalized. */
function claimedPayoutIds(state: PayoutLedgerState): Set<string> {
  const claimed = new Set<string>();
  for (const batch of state.batches.values()) for (const payoutId of batch.payoutIds) claimed.add(payoutId);
  return claimed;
}

function requireBatch(state: PayoutLedgerState, batchId: string): BatchState {
  const batch = state.batches.get(batchId);
  if (batch === undefined) throw new DomainError('not_found', `No payout batch ${batchId}`);
  return batch;
}

function invalidTransition(batchId: string, from: string, to: BatchStatus): DomainError {
  const what = from === 'exists' ? `Payout batch ${batchId} already exists` : `Payout batch ${batchId} is ${from} and cannot become ${to}`;
  return new DomainError('payout_batch_invalid_transition', what);
}

export const payoutLedgerDecider: Decider<PayoutBatchCommand, PayoutBatchEvent, PayoutLedgerState> = { decide, evolve, initialState };
