import { jobDecider, type JobCommand, type JobState } from '../deciders/job/decider.ts';
import { DomainError } from '../errors.ts';
import { jobStreamName, parseJobEvent, type JobEvent } from '../events/job.ts';
import type { JsonObject } from '../eventStore/port.ts';
import { bindCommand, handleCommand, loadAggregateState, type BoundCommand, type CommandContext, type CommandOutcome, type CommandSpec } from './handleCommand.ts';

export type JobContext = CommandContext<JobState>;

const jobId = (command: JobCommand) => (command.type === 'StartJob' ? command.request.job_id : command.jobId);

const jobSpec: CommandSpec<JobCommand, JobEvent, JobState> = {
  decider: jobDecider,
  streamName: (command) => jobStreamName(jobId(command)),
  operationKey: (command) => (command.type === 'StartJob' ? 'start' : 'finish'),
  intent: (command): JsonObject => (command.type === 'StartJob' ? { type: command.type, attempt: command.attemptId } : { type: command.type }),
  reusedKeyError: (command) => new DomainError('idempotency_key_in_use', `Job ${jobId(command)} already exists`),
  parseEvent: (type, data) => parseJobEvent(type, data),
};

export function executeJobCommand(context: JobContext, command: JobCommand): Promise<CommandOutcome<JobState>> {
  return handleCommand(context, jobSpec, command);
}

/** A job command to decide together with another aggregate's (handleCommandsTogether). */
export function jobCommand(context: JobContext, command: JobCommand): BoundCommand<JobState> {
  return bindCommand(context, jobSpec, command);
}

export function readJobState(context: JobContext, jobId: string): Promise<JobState> {
  return loadAggregateState(context, jobSpec, jobStreamName(jobId));
}
