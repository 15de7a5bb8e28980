import { trafficControlDecider, type TrafficControlCommand, type TrafficControlState } from '../deciders/trafficControl/decider.ts';
import { DomainError } from '../errors.ts';
import { parseTrafficControlEvent, trafficControlStreamName, type TrafficControlEvent } from '../events/trafficControl.ts';
import { handleCommand, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type TrafficControlContext = CommandContext<TrafficControlState>;

const trafficControlSpec: CommandSpec<TrafficControlCommand, TrafficControlEvent, TrafficControlState> = {
  decider: trafficControlDecider,
  streamName: (command) => trafficControlStreamName(command.targetKind, command.targetId),
  // Each operator action is its own operation; repeating one is harmless because the decider
  // answers a pause of a paused target (and a resume of a running one) with no event.
  operationKey: (command) => `${command.type}:${command.actionId}`,
  intent: (command) => ({ type: command.type, target_kind: command.targetKind, target_id: command.targetId, reason: command.reason }),
  reusedKeyError: () => new DomainError('idempotency_key_reused', 'This action id was used for another action'),
  parseEvent: (type, data) => parseTrafficControlEvent(type, data),
};

export function executeTrafficControlCommand(
  context: TrafficControlContext,
  command: TrafficControlCommand,
): Promise<CommandOutcome<TrafficControlState>> {
  return handleCommand(context, trafficControlSpec, command);
}
