import { createHash } from 'node:crypto';
import { canonicalJson } from '../canonicalJson.ts';
import { modelPriceDecider, type ModelPriceCommand, type ModelPriceState } from '../deciders/modelPrice/decider.ts';
import { nodeDecider, type NodeCommand, type NodeState } from '../deciders/node/decider.ts';
import { DomainError } from '../errors.ts';
import { modelStreamName, nodeStreamName, parseNodeDomainEvent, type ModelPriceEvent, type NodeEvent } from '../events/node.ts';
import type { JsonObject } from '../eventStore/port.ts';
import { formatWei } from '../money.ts';
import { handleCommand, loadAggregateState, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type NodeContext = CommandContext<NodeState>;
export type ModelPriceContext = CommandContext<ModelPriceState>;

const nodeSpec: CommandSpec<NodeCommand, NodeEvent, NodeState> = {
  decider: nodeDecider,
  streamName: (command) => nodeStreamName(command.nodeId),
  operationKey(command) {
    switch (command.type) {
      case 'EnrollNode':
        return 'enroll';
      case 'ReportProfiles':
        // A report is keyed by the signed heartbeat time, so a resent heartbeat is one event at most.
        return `report:${command.reportedAt}`;
      case 'RecordObservedBenchmark':
        return `benchmark:${command.modelId}:${command.observedAt}`;
    }
  },
  intent(command): JsonObject {
    switch (command.type) {
      case 'EnrollNode':
        return { type: command.type, public_key: command.publicKey };
      case 'ReportProfiles':
        return { type: command.type, report: createHash('sha256').update(canonicalJson(command.profiles)).digest('hex') };
      case 'RecordObservedBenchmark':
        return { type: command.type, tokens_per_second: command.tokensPerSecond, ttft_ms: command.ttftMs };
    }
  },
  reusedKeyError: (command) => new DomainError('version_conflict', `Node ${command.nodeId} already recorded a different ${command.type}`),
  parseEvent: (type, data) => {
    const event = parseNodeDomainEvent(type, data);
    return event === null || event.type === 'ModelPriceSet' ? null : event;
  },
};

const modelPriceSpec: CommandSpec<ModelPriceCommand, ModelPriceEvent, ModelPriceState> = {
  decider: modelPriceDecider,
  streamName: (command) => modelStreamName(command.modelId),
  operationKey: (command) => `price:${command.policyVersion}`,
  intent: (command) => ({
    prompt: formatWei(command.promptPricePerMillionWei),
    completion: formatWei(command.completionPricePerMillionWei),
  }),
  reusedKeyError: (command) =>
    new DomainError('idempotency_key_reused', `Policy version ${command.policyVersion} of ${command.modelId} already has other prices`, 'policy_version'),
  parseEvent: (type, data) => {
    const event = parseNodeDomainEvent(type, data);
    return event?.type === 'ModelPriceSet' ? event : null;
  },
};

export function executeNodeCommand(context: NodeContext, command: NodeCommand): Promise<CommandOutcome<NodeState>> {
  return handleCommand(context, nodeSpec, command);
}

export function executeModelPriceCommand(context: ModelPriceContext, command: ModelPriceCommand): Promise<CommandOutcome<ModelPriceState>> {
  return handleCommand(context, modelPriceSpec, command);
}

/**
 * How old a price this process has seen may be when it quotes a request. A price set through this
 * process applies at once; one set through another process, within this time (docs/decisions.md).
 */
export const priceMaxAgeMs = 1_000;

/** The model's current price list, from the aggregate: as of the log, or at most priceMaxAgeMs before. */
export function readModelPrice(context: ModelPriceContext, modelId: string): Promise<ModelPriceState> {
  return loadAggregateState(context, modelPriceSpec, modelStreamName(modelId), { maxAgeMs: priceMaxAgeMs });
}
