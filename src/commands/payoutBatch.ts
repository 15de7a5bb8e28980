import { payoutLedgerDecider, type PayoutBatchCommand, type PayoutCandidate, type PayoutLedgerState } from '../deciders/payoutBatch/decider.ts';
import { DomainError } from '../errors.ts';
import { parseJobEvent } from '../events/job.ts';
import { parsePayoutBatchEvent, payoutLedgerStreamName, type PayoutBatchEvent } from '../events/payoutBatch.ts';
import type { EventStore, JsonObject } from '../eventStore/port.ts';
import { handleCommand, loadAggregateState, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type PayoutLedgerContext = CommandContext<PayoutLedgerState>;

const operationKey = (command: PayoutBatchCommand): string => {
  switch (command.type) {
    case 'CreatePayoutBatch':
      return `create:${command.batchId}`;
    case 'SubmitPayoutBatch':
      return `submit:${command.batchId}`;
    case 'FinalizePayoutBatch':
      return `finalize:${command.batchId}`;
    case 'ResetPayoutBatch':
      return `reset:${command.batchId}`;
  }
};

/** What makes a retry the same operation: the settlement evidence, never the time it was sent. */
const intent = (command: PayoutBatchCommand): JsonObject => {
  switch (command.type) {
    case 'CreatePayoutBatch':
      return { type: command.type, batch_id: command.batchId };
    case 'SubmitPayoutBatch':
      return { type: command.type, batch_id: command.batchId, transaction_hash: command.transactionHash };
    case 'FinalizePayoutBatch':
      return { type: command.type, batch_id: command.batchId, transaction_hash: command.transactionHash, block_number: command.blockNumber };
    case 'ResetPayoutBatch':
      return { type: command.type, batch_id: command.batchId };
  }
};

const payoutLedgerSpec: CommandSpec<PayoutBatchCommand, PayoutBatchEvent, PayoutLedgerState> = {
  decider: payoutLedgerDecider,
  streamName: () => payoutLedgerStreamName,
  operationKey,
  intent,
  reusedKeyError: (command) =>
    new DomainError('payout_batch_invalid_transition', `Payout batch ${command.batchId} already went through ${command.type} with other details`),
  parseEvent: (type, data) => parsePayoutBatchEvent(type, data),
};

export function executePayoutCommand(context: PayoutLedgerContext, command: PayoutBatchCommand): Promise<CommandOutcome<PayoutLedgerState>> {
  return handleCommand(context, payoutLedgerSpec, command);
}

export function readPayoutLedger(context: PayoutLedgerContext): Promise<PayoutLedgerState> {
  return loadAggregateState(context, payoutLedgerSpec, payoutLedgerStreamName);
}

/** Ids per read; the batch limit keeps a create well under a few of these. */
const idsPerRead = 1_000;

/**
 * The PayoutAccrued events with these ids, read from the log itself. The read model only says which
 * events to look at; amounts, nodes and positions come from the events, so a stale or altered
 * projection row can neither invent a payout nor change one. Ids that are not a PayoutAccrued event
 * are ignored.
 */
export async function payoutCandidatesFromLog(store: EventStore, eventIds: readonly string[]): Promise<PayoutCandidate[]> {
  const candidates: PayoutCandidate[] = [];
  for (let start = 0; start < eventIds.length; start += idsPerRead) {
    for (const stored of await store.readEventsById(eventIds.slice(start, start + idsPerRead))) {
      const event = parseJobEvent(stored.type, stored.data);
      if (event?.type !== 'PayoutAccrued') continue;
      candidates.push({
        receiptHash: event.data.receipt_hash,
        jobId: event.data.job_id,
        nodeId: event.data.node_id,
        amountWei: BigInt(event.data.amount_wei),
        accruedPosition: stored.position,
        accruedAt: stored.recordedAt,
      });
    }
  }
  return candidates;
}
