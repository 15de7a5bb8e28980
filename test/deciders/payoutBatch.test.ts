import t from 'tap';
import {
  evolve,
  initialState,
  payoutLedgerDecider,
  planBatch,
  type PayoutBatchCommand,
  type PayoutCandidate,
} from '../../src/deciders/payoutBatch/decider.ts';
import { parsePayoutBatchEvent, payoutIdOf, type PayoutBatchEvent, type PayoutRowData } from '../../src/events/payoutBatch.ts';
import { maxPayoutsPerBatch, payoutMerkleRoot } from '../../src/payouts/leaf.ts';
import { spec } from '../support/deciderSpec.ts';

const ledger = spec(payoutLedgerDecider);
const createdAt = new Date('2025-03-01T10:00:00.000Z');
const later = new Date('2025-03-01T11:00:00.000Z');
const txA = `0x${'a'.repeat(64)}`;
const txB = `0x${'b'.repeat(64)}`;

function candidate(index: number, nodeId = 'node-1', amountWei = 100n * BigInt(index)): PayoutCandidate {
  return {
    receiptHash: index.toString(16).padStart(64, '0'),
    jobId: `job-${index}`,
    nodeId,
    amountWei,
    accruedPosition: BigInt(index * 10),
    accruedAt: new Date(Date.UTC(2025, 2, 1, 9, index)),
  };
}

function row(source: PayoutCandidate): PayoutRowData {
  return {
    payout_id: payoutIdOf(source.receiptHash),
    receipt_hash: source.receiptHash,
    job_id: source.jobId,
    node_id: source.nodeId,
    amount_wei: String(source.amountWei),
    accrued_position: String(source.accruedPosition),
  };
}

const one = candidate(1);
const two = candidate(2, 'node-2');
const three = candidate(3);

function create(batchId: string, candidates: PayoutCandidate[], overrides: Partial<Extract<PayoutBatchCommand, { type: 'CreatePayoutBatch' }>> = {}): PayoutBatchCommand {
  return {
    type: 'CreatePayoutBatch',
    batchId,
    cutoffPosition: 1_000n,
    cutoffTime: null,
    nodeId: null,
    maxPayouts: maxPayoutsPerBatch,
    candidates,
    expectedMerkleRoot: null,
    createdAt,
    reason: null,
    ...overrides,
  };
}

function created(batchId: string, rows: PayoutRowData[], overrides: Partial<Extract<PayoutBatchEvent, { type: 'PayoutBatchCreated' }>['data']> = {}): PayoutBatchEvent {
  return {
    type: 'PayoutBatchCreated',
    data: {
      batch_id: batchId,
      cutoff_position: '1000',
      cutoff_time: null,
      node_id: null,
      payout_count: rows.length,
      total_amount_wei: String(rows.reduce((sum, item) => sum + BigInt(item.amount_wei), 0n)),
      merkle_root: payoutMerkleRoot(rows),
      leaf_version: 'b3iq-payout-leaf-v1',
      payouts: rows,
      created_at: createdAt.toISOString(),
      reason: null,
      ...overrides,
    },
  };
}

const submit = (batchId: string, transactionHash = txA): PayoutBatchCommand => ({ type: 'SubmitPayoutBatch', batchId, transactionHash, submittedAt: later, reason: null });
const submitted = (batchId: string, transactionHash = txA): PayoutBatchEvent => ({
  type: 'PayoutBatchSubmitted',
  data: { batch_id: batchId, transaction_hash: transactionHash, submitted_at: later.toISOString(), reason: null },
});
const finalize = (batchId: string, transactionHash = txA, blockNumber = 42): PayoutBatchCommand => ({
  type: 'FinalizePayoutBatch',
  batchId,
  transactionHash,
  blockNumber,
  finalizedAt: later,
  reason: 'block confirmed',
});
const reset = (batchId: string): PayoutBatchCommand => ({ type: 'ResetPayoutBatch', batchId, resetAt: later, reason: 'wrong cutoff' });
const wasReset = (batchId: string, count: number): PayoutBatchEvent => ({
  type: 'PayoutBatchReset',
  data: { batch_id: batchId, payout_count: count, reset_at: later.toISOString(), reason: 'wrong cutoff' },
});
const finalizedEvent = (batchId: string, transfers: Array<{ from: string; to: string; amount_wei: string }>): PayoutBatchEvent => ({
  type: 'PayoutBatchFinalized',
  data: { batch_id: batchId, transaction_hash: txA, block_number: 42, finalized_at: later.toISOString(), reason: 'block confirmed', transfers },
});

const batchOfOneTwo = created('pb-1', [row(one), row(two)]);
const rootOfOneTwo = payoutMerkleRoot([row(one), row(two)]);

t.test('given no batches', async (t) => {
  t.test('when creating, then the pending rows are batched in accrual order under their root', async () => {
    ledger.given([]).when(create('pb-1', [two, one])).then([batchOfOneTwo]);
  });
  t.test('when creating with a cutoff position, then later rows stay out', async () => {
    ledger.given([]).when(create('pb-1', [one, two, three], { cutoffPosition: 20n })).then([created('pb-1', [row(one), row(two)], { cutoff_position: '20' })]);
  });
  t.test('when creating with a cutoff time, then rows accrued after it stay out', async () => {
    const cutoffTime = new Date(Date.UTC(2025, 2, 1, 9, 1));
    ledger.given([]).when(create('pb-1', [one, two], { cutoffTime })).then([created('pb-1', [row(one)], { cutoff_time: cutoffTime.toISOString() })]);
  });
  t.test('when creating for one node, then only that node’s rows are batched', async () => {
    ledger.given([]).when(create('pb-1', [one, two, three], { nodeId: 'node-1' })).then([created('pb-1', [row(one), row(three)], { node_id: 'node-1' })]);
  });
  t.test('when creating with a size limit, then the oldest rows are batched', async () => {
    ledger.given([]).when(create('pb-1', [three, two, one], { maxPayouts: 2 })).then([batchOfOneTwo]);
  });
  t.test('when the same candidate appears twice, then it is batched once', async () => {
    ledger.given([]).when(create('pb-1', [one, one, two])).then([batchOfOneTwo]);
  });
  t.test('when nothing is pending, then the create is refused as empty', async () => {
    ledger.given([]).when(create('pb-1', [])).thenThrows('payout_batch_empty');
  });
  t.test('when every candidate is past the cutoff, then the create is refused as empty', async () => {
    ledger.given([]).when(create('pb-1', [three], { cutoffPosition: 10n })).thenThrows('payout_batch_empty');
  });
  t.test('when the preview’s root is given and still holds, then the batch is created', async () => {
    ledger.given([]).when(create('pb-1', [one, two], { expectedMerkleRoot: rootOfOneTwo })).then([batchOfOneTwo]);
  });
  t.test('when the preview’s root no longer holds, then the create is refused as stale', async () => {
    ledger.given([]).when(create('pb-1', [one, two, three], { expectedMerkleRoot: rootOfOneTwo })).thenThrows('payout_batch_preview_stale');
  });
  t.test('when submitting, finalizing or resetting an unknown batch, then it is not found', async () => {
    ledger.given([]).when(submit('pb-9')).thenThrows('not_found');
    ledger.given([]).when(finalize('pb-9')).thenThrows('not_found');
    ledger.given([]).when(reset('pb-9')).thenThrows('not_found');
  });
});

t.test('given a created batch', async (t) => {
  const given = ledger.given([batchOfOneTwo]);
  t.test('when creating again under its id, then the transition is refused', async () => {
    given.when(create('pb-1', [three])).thenThrows('payout_batch_invalid_transition');
  });
  t.test('when another batch is created, then it never takes the live batch’s rows', async () => {
    given.when(create('pb-2', [one, two, three])).then([created('pb-2', [row(three)])]);
    given.when(create('pb-2', [one, two])).thenThrows('payout_batch_empty');
  });
  t.test('when submitted, then the transaction is recorded', async () => {
    given.when(submit('pb-1')).then([submitted('pb-1')]);
  });
  t.test('when finalized before it was submitted, then the transition is refused', async () => {
    given.when(finalize('pb-1')).thenThrows('payout_batch_invalid_transition');
  });
  t.test('when reset, then it records the reset and its rows become pending again', async () => {
    given.when(reset('pb-1')).then([wasReset('pb-1', 2)]);
  });
});

t.test('given a submitted batch', async (t) => {
  const given = ledger.given([batchOfOneTwo, submitted('pb-1')]);
  t.test('when submitted again with the same transaction, then nothing changes', async () => {
    given.when(submit('pb-1')).thenNothing();
  });
  t.test('when submitted again with another transaction, then the transition is refused', async () => {
    given.when(submit('pb-1', txB)).thenThrows('payout_batch_invalid_transition');
  });
  t.test('when finalized, then each node’s share moves from its payable account to settlements', async () => {
    given.when(finalize('pb-1')).then([
      finalizedEvent('pb-1', [
        { from: 'node:node-1:payable', to: 'external:settlements', amount_wei: '100' },
        { from: 'node:node-2:payable', to: 'external:settlements', amount_wei: '200' },
      ]),
    ]);
  });
  t.test('when finalized with another transaction, then it is refused as a mismatch', async () => {
    given.when(finalize('pb-1', txB)).thenThrows('payout_batch_transaction_mismatch');
  });
  t.test('when reset, then it records the reset', async () => {
    given.when(reset('pb-1')).then([wasReset('pb-1', 2)]);
  });
});

t.test('given a finalized batch', async (t) => {
  const given = ledger.given([batchOfOneTwo, submitted('pb-1'), finalizedEvent('pb-1', [{ from: 'node:node-1:payable', to: 'external:settlements', amount_wei: '300' }])]);
  t.test('when finalized again with the same evidence, then nothing changes', async () => {
    given.when(finalize('pb-1')).thenNothing();
  });
  t.test('when finalized again with another block, then the transition is refused', async () => {
    given.when(finalize('pb-1', txA, 43)).thenThrows('payout_batch_invalid_transition');
  });
  t.test('when submitted or reset, then the transition is refused', async () => {
    given.when(submit('pb-1')).thenThrows('payout_batch_invalid_transition');
    given.when(reset('pb-1')).thenThrows('payout_batch_invalid_transition');
  });
  t.test('when another batch is created, then its rows are never batched again', async () => {
    given.when(create('pb-2', [one, two])).thenThrows('payout_batch_empty');
  });
});

t.test('given a reset batch', async (t) => {
  const given = ledger.given([batchOfOneTwo, submitted('pb-1'), wasReset('pb-1', 2)]);
  t.test('when another batch is created, then the rows are batched again', async () => {
    given.when(create('pb-2', [one, two])).then([created('pb-2', [row(one), row(two)])]);
  });
  t.test('when submitted, finalized or reset, then the transition is refused', async () => {
    given.when(submit('pb-1', txB)).thenThrows('payout_batch_invalid_transition');
    given.when(finalize('pb-1')).thenThrows('payout_batch_invalid_transition');
    given.when(reset('pb-1')).thenThrows('payout_batch_invalid_transition');
  });
});

t.test('a finalized batch of zero-wei rows moves no money', async () => {
  const free = candidate(4, 'node-1', 0n);
  ledger.given([created('pb-1', [row(free)]), submitted('pb-1')]).when(finalize('pb-1')).then([finalizedEvent('pb-1', [])]);
});

t.test('planBatch reports rows beyond the size limit as still pending', async (t) => {
  const plan = planBatch({ cutoffPosition: 1_000n, cutoffTime: null, nodeId: null, maxPayouts: 1, candidates: [one, two] }, initialState());
  t.equal(plan.payouts.length, 1);
  t.equal(plan.morePending, true);
  t.equal(plan.totalAmountWei, 100n);
  const all = planBatch({ cutoffPosition: 1_000n, cutoffTime: null, nodeId: null, maxPayouts: 5, candidates: [one, two] }, initialState());
  t.equal(all.morePending, false);
  t.equal(all.merkleRoot, rootOfOneTwo, 'a preview shows the root a create commits to');
});

t.test('every event the decider emits parses with its strict schema', async (t) => {
  for (const event of [batchOfOneTwo, submitted('pb-1'), wasReset('pb-1', 2), finalizedEvent('pb-1', [])]) {
    t.same(parsePayoutBatchEvent(event.type, event.data), event, event.type);
  }
  t.throws(() => parsePayoutBatchEvent('PayoutBatchSubmitted', { ...submitted('pb-1').data, customer_id: 'cus_1' }), 'unknown fields are refused');
  t.equal(parsePayoutBatchEvent('JobRequested', {}), null);
});

t.test('evolve ignores events of a batch it never saw', async (t) => {
  t.same(evolve(initialState(), submitted('pb-x')), initialState());
});
