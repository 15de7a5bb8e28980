import { nodeReceiptDecider, type NodeReceiptState, type RecordNodeReceipt } from '../deciders/nodeReceipt/decider.ts';
import { DomainError } from '../errors.ts';
import { nodeReceiptStreamName, parseNodeReceiptEvent, type NodeReceiptEvent } from '../events/nodeReceipt.ts';
import { handleCommand, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type NodeReceiptContext = CommandContext<NodeReceiptState>;

const nodeReceiptSpec: CommandSpec<RecordNodeReceipt, NodeReceiptEvent, NodeReceiptState> = {
  decider: nodeReceiptDecider,
  streamName: (command) => nodeReceiptStreamName(command.receipt.node_id),
  operationKey: (command) => `receipt:${command.receipt.receipt_hash}`,
  // The hash fixes every signed byte; the origin is derived from them.
  intent: (command) => ({ receipt_hash: command.receipt.receipt_hash }),
  reusedKeyError: (command) => new DomainError('receipt_hash_mismatch', `Receipt ${command.receipt.receipt_hash} was recorded with other bytes`),
  parseEvent: (type, data) => parseNodeReceiptEvent(type, data),
};

export function recordNodeReceipt(context: NodeReceiptContext, command: RecordNodeReceipt): Promise<CommandOutcome<NodeReceiptState>> {
  return handleCommand(context, nodeReceiptSpec, command);
}
