import type { NodeReceiptEvent } from '../../events/nodeReceipt.ts';
import type { Decider } from '../decider.ts';

export interface RecordNodeReceipt {
  type: 'RecordNodeReceipt';
  receipt: NodeReceiptEvent['data'];
}

/** How many receipts the node has recorded; recording is idempotent by the receipt's hash. */
export interface NodeReceiptState {
  recorded: number;
}

export const nodeReceiptDecider: Decider<RecordNodeReceipt, NodeReceiptEvent, NodeReceiptState> = {
  // A receipt already recorded derives the same event id and is answered as a replay by the store.
  decide: (command) => [{ type: 'NodeReceiptRecorded', data: command.receipt }],
  evolve: (state) => ({ recorded: state.recorded + 1 }),
  initialState: () => ({ recorded: 0 }),
};
