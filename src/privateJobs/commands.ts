import { handleCommand, loadAggregateState, type CommandContext, type CommandOutcome, type CommandSpec } from '../commands/handleCommand.ts';
import { privateJobDecider, type PrivateJobCommand, type PrivateJobState } from '../deciders/privateJob/decider.ts';
import { transportKeyDecider, type TransportKeyCommand, type TransportKeyState } from '../deciders/privateJob/transportKey.ts';
import { DomainError } from '../errors.ts';
import {
  parsePrivateJobEvent,
  parseTransportKeyEvent,
  privateJobStreamName,
  transportKeyStreamName,
  type PrivateJobEvent,
  type TransportKeyEvent,
} from '../events/privateJob.ts';
import type { JsonObject } from '../eventStore/port.ts';

export type PrivateJobContext = CommandContext<PrivateJobState>;
export type TransportKeyContext = CommandContext<TransportKeyState>;

const jobIdOf = (command: PrivateJobCommand): string => {
  switch (command.type) {
    case 'QueuePrivateJob':
      return command.terms.job_id;
    case 'SubmitPrivateResult':
      return command.result.job_id;
    default:
      return command.jobId;
  }
};

/**
 * Operation keys: a job is queued, claimed, given a result and completed once each; failing and
 * expiring share one key, so a job ends unsuccessfully at most once whichever comes first.
 */
const privateJobSpec: CommandSpec<PrivateJobCommand, PrivateJobEvent, PrivateJobState> = {
  decider: privateJobDecider,
  streamName: (command) => privateJobStreamName(jobIdOf(command)),
  operationKey(command) {
    switch (command.type) {
      case 'QueuePrivateJob':
        return 'queue';
      case 'ClaimPrivateJob':
        return 'claim';
      case 'SubmitPrivateResult':
        return 'result';
      case 'CompletePrivateJob':
        return 'complete';
      case 'FailPrivateJob':
      case 'ExpirePrivateJob':
        return 'end';
      case 'PurgePrivateEnvelopes':
        return 'purge';
    }
  },
  intent(command): JsonObject {
    switch (command.type) {
      case 'QueuePrivateJob':
        return { type: command.type, customer_id: command.terms.customer_id, request_sha256: command.terms.request_sha256 };
      case 'ClaimPrivateJob':
        return { type: command.type, node_id: command.nodeId, command_id: command.commandId };
      case 'SubmitPrivateResult':
        return { type: command.type, receipt_hash: command.result.receipt_hash, envelope: command.result.response_envelope_sha256 };
      case 'FailPrivateJob':
        return { type: command.type, reason: command.reason };
      case 'CompletePrivateJob':
      case 'ExpirePrivateJob':
      case 'PurgePrivateEnvelopes':
        return { type: command.type };
    }
  },
  reusedKeyError(command) {
    if (command.type === 'QueuePrivateJob') {
      return new DomainError('idempotency_key_reused', `Job ${command.terms.job_id} already exists with another request`, 'job_id');
    }
    return new DomainError('private_job_state_conflict', `Private job ${jobIdOf(command)} already ended another way`);
  },
  parseEvent: (type, data) => parsePrivateJobEvent(type, data),
};

const transportKeySpec: CommandSpec<TransportKeyCommand, TransportKeyEvent, TransportKeyState> = {
  decider: transportKeyDecider,
  streamName: (command) => transportKeyStreamName(command.registration.node_id),
  // Keyed by the signed registration time, so a node can rotate to a new key and even back.
  operationKey: (command) => `register:${command.registration.key_id}:${command.registration.registered_at}`,
  intent: (command) => ({ type: command.type, key_id: command.registration.key_id, public_key: command.registration.public_key_x25519 }),
  reusedKeyError: (command) => new DomainError('version_conflict', `Node ${command.registration.node_id} registered another key at that time`),
  parseEvent: (type, data) => parseTransportKeyEvent(type, data),
};

export function executePrivateJobCommand(context: PrivateJobContext, command: PrivateJobCommand): Promise<CommandOutcome<PrivateJobState>> {
  return handleCommand(context, privateJobSpec, command);
}

export function readPrivateJobState(context: PrivateJobContext, jobId: string): Promise<PrivateJobState> {
  return loadAggregateState(context, privateJobSpec, privateJobStreamName(jobId));
}

export function executeTransportKeyCommand(context: TransportKeyContext, command: TransportKeyCommand): Promise<CommandOutcome<TransportKeyState>> {
  return handleCommand(context, transportKeySpec, command);
}

export function readTransportKeyState(context: TransportKeyContext, nodeId: string): Promise<TransportKeyState> {
  return loadAggregateState(context, transportKeySpec, transportKeyStreamName(nodeId));
}
