import { gatewayKeyDecider, type GatewayKeyCommand, type GatewayKeyState } from '../deciders/gatewayKey/decider.ts';
import { DomainError } from '../errors.ts';
import { gatewayKeyStreamName, parseGatewayKeyEvent, type GatewayKeyEvent } from '../events/gatewayKey.ts';
import { handleCommand, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type GatewayKeyContext = CommandContext<GatewayKeyState>;

const gatewayKeySpec: CommandSpec<GatewayKeyCommand, GatewayKeyEvent, GatewayKeyState> = {
  decider: gatewayKeyDecider,
  streamName: (command) => gatewayKeyStreamName(command.keyId),
  operationKey: (command) => (command.type === 'CreateGatewayKey' ? 'create' : 'revoke'),
  intent: (command) => ({ type: command.type, customer_id: command.customerId }),
  reusedKeyError: (command) =>
    command.type === 'CreateGatewayKey'
      ? new DomainError('gateway_key_already_exists', `Gateway key ${command.keyId} already exists`)
      : new DomainError('not_found', `Customer ${command.customerId} has no gateway key ${command.keyId}`),
  parseEvent: (type, data) => parseGatewayKeyEvent(type, data),
};

export function executeGatewayKeyCommand(context: GatewayKeyContext, command: GatewayKeyCommand): Promise<CommandOutcome<GatewayKeyState>> {
  return handleCommand(context, gatewayKeySpec, command);
}
