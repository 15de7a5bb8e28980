import { customerAccountDecider, type CustomerAccountCommand, type CustomerAccountState } from '../deciders/customerAccount/decider.ts';
import { DomainError } from '../errors.ts';
import { customerStreamName, parseCustomerAccountEvent, type CustomerAccountEvent } from '../events/customerAccount.ts';
import type { JsonObject } from '../eventStore/port.ts';
import { formatWei } from '../money.ts';
import { bindCommand, handleCommand, loadAggregateState, type BoundCommand, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type CustomerAccountContext = CommandContext<CustomerAccountState>;

/**
 * Every account command has a natural operation key: a customer is created once, a deposit is
 * keyed by its external reference, and a job reserves once and resolves once (capture and release
 * share the key, which is what makes "each reservation resolves exactly once" hold in the log).
 */
export const customerAccountSpec: CommandSpec<CustomerAccountCommand, CustomerAccountEvent, CustomerAccountState> = {
  decider: customerAccountDecider,
  streamName: (command) => customerStreamName(command.customerId),
  operationKey(command) {
    switch (command.type) {
      case 'CreateCustomer':
        return 'create';
      case 'Deposit':
        return `deposit:${command.reference}`;
      case 'Reserve':
        return `reserve:${command.jobId}`;
      case 'Capture':
      case 'Release':
        return `resolve:${command.jobId}`;
    }
  },
  intent(command): JsonObject {
    switch (command.type) {
      case 'CreateCustomer':
        return { type: command.type };
      case 'Deposit':
        return { type: command.type, amount_wei: formatWei(command.amountWei) };
      case 'Reserve':
        return { type: command.type, amount_wei: formatWei(command.amountWei) };
      case 'Capture':
        return { type: command.type, cost_wei: formatWei(command.costWei), node_id: command.nodeId, node_share_bps: command.nodeShareBps };
      case 'Release':
        return { type: command.type };
    }
  },
  reusedKeyError(command) {
    switch (command.type) {
      case 'CreateCustomer':
        return new DomainError('customer_already_exists', `Customer ${command.customerId} already exists`);
      case 'Deposit':
        return new DomainError('idempotency_key_reused', `Deposit reference ${command.reference} was already used with another amount`, 'reference');
      case 'Reserve':
        return new DomainError('reservation_already_exists', `Job ${command.jobId} already reserved another amount`);
      case 'Capture':
      case 'Release':
        return new DomainError('reservation_already_resolved', `The reservation of job ${command.jobId} is already resolved`);
    }
  },
  parseEvent: (type, data) => parseCustomerAccountEvent(type, data),
};

export function executeAccountCommand(
  context: CustomerAccountContext,
  command: CustomerAccountCommand,
): Promise<CommandOutcome<CustomerAccountState>> {
  return handleCommand(context, customerAccountSpec, command);
}

/** An account command to decide together with another aggregate's (handleCommandsTogether). */
export function accountCommand(context: CustomerAccountContext, command: CustomerAccountCommand): BoundCommand<CustomerAccountState> {
  return bindCommand(context, customerAccountSpec, command);
}

export function readAccountState(context: CustomerAccountContext, customerId: string): Promise<CustomerAccountState> {
  return loadAggregateState(context, customerAccountSpec, customerStreamName(customerId));
}
