import { DomainError } from '../../errors.ts';
import type { PrivateJobEvent, PrivateJobEventData, PrivateJobFailureReason } from '../../events/privateJob.ts';
import { assertNever, type Decider } from '../decider.ts';

/**
 * A private inference job's lifecycle: queued → claimed → awaiting-receipt → completed, or failed
 * (the node gave up) or expired (no claim or no result in time). Money moves outside this
 * aggregate, in the customer's account (reserve before queueing; capture after awaiting-receipt;
 * release after failed or expired), driven by these events. Times arrive in the commands.
 */

export type PrivateJobStatus = 'queued' | 'claimed' | 'awaiting-receipt' | 'completed' | 'failed' | 'expired';
export const terminalStatuses: readonly PrivateJobStatus[] = ['completed', 'failed', 'expired'];

export type QueuedTerms = PrivateJobEventData<'PrivateJobQueued'>;
export type SubmittedResult = PrivateJobEventData<'PrivateJobResultSubmitted'>;

export type PrivateJobCommand =
  | { type: 'QueuePrivateJob'; terms: QueuedTerms }
  | { type: 'ClaimPrivateJob'; jobId: string; nodeId: string; commandId: string; claimedAt: string; resultDeadline: string }
  | { type: 'SubmitPrivateResult'; result: SubmittedResult }
  | { type: 'CompletePrivateJob'; jobId: string; completedAt: string }
  /** nodeId null: the control plane gives the job up (its reservation was released elsewhere). */
  | { type: 'FailPrivateJob'; jobId: string; nodeId: string | null; commandId: string | null; reason: PrivateJobFailureReason; failedAt: string }
  | { type: 'ExpirePrivateJob'; jobId: string; now: string }
  | { type: 'PurgePrivateEnvelopes'; jobId: string; reason: string; purgedAt: string };

export type PrivateJobState =
  | { status: 'absent' }
  | {
      status: PrivateJobStatus;
      terms: QueuedTerms;
      resultDeadline: string | null;
      result: SubmittedResult | null;
      failure: string | null;
      purged: boolean;
    };

type Present = Exclude<PrivateJobState, { status: 'absent' }>;

export function initialState(): PrivateJobState {
  return { status: 'absent' };
}

export function decide(command: PrivateJobCommand, state: PrivateJobState): PrivateJobEvent[] {
  switch (command.type) {
    case 'QueuePrivateJob':
      return queue(command.terms, state);
    case 'ClaimPrivateJob':
      return claim(command, assigned(state, command.jobId, command.nodeId, command.commandId));
    case 'SubmitPrivateResult':
      return submit(command.result, assigned(state, command.result.job_id, command.result.node_id, command.result.command_id));
    case 'CompletePrivateJob':
      return complete(command, present(state, command.jobId));
    case 'FailPrivateJob':
      return fail(command, command.nodeId === null ? present(state, command.jobId) : assigned(state, command.jobId, command.nodeId, command.commandId));
    case 'ExpirePrivateJob':
      return expire(command, present(state, command.jobId));
    case 'PurgePrivateEnvelopes':
      return purge(command, present(state, command.jobId));
    default:
      return assertNever(command);
  }
}

/** The same job id with the same request and customer is the same job; anything else is refused. */
function queue(terms: QueuedTerms, state: PrivateJobState): PrivateJobEvent[] {
  if (state.status === 'absent') return [{ type: 'PrivateJobQueued', data: terms }];
  if (state.terms.customer_id === terms.customer_id && state.terms.request_sha256 === terms.request_sha256) return [];
  throw new DomainError('idempotency_key_reused', `Job ${terms.job_id} already exists with another request`, 'job_id');
}

function present(state: PrivateJobState, jobId: string): Present {
  if (state.status === 'absent') throw new DomainError('not_found', `No private job ${jobId}`);
  return state;
}

/** A node sees only the jobs queued for it, under the command it was given; others do not exist for it. */
function assigned(state: PrivateJobState, jobId: string, nodeId: string, commandId: string | null): Present {
  const job = present(state, jobId);
  if (job.terms.node_id !== nodeId || (commandId !== null && job.terms.command_id !== commandId)) {
    throw new DomainError('not_found', `No private job ${jobId} for this node and command`);
  }
  return job;
}

function conflict(job: Present, action: string): DomainError {
  return new DomainError('private_job_state_conflict', `Private job ${job.terms.job_id} is ${job.status}; it cannot be ${action}`);
}

function claim(command: Extract<PrivateJobCommand, { type: 'ClaimPrivateJob' }>, job: Present): PrivateJobEvent[] {
  // A node that retries its claim gets the same claim back.
  if (job.status === 'claimed') return [];
  if (job.status !== 'queued') throw conflict(job, 'claimed');
  if (Date.parse(command.claimedAt) > Date.parse(job.terms.claim_deadline)) throw conflict({ ...job, status: 'expired' }, 'claimed');
  const { jobId, nodeId, commandId, claimedAt, resultDeadline } = command;
  return [{ type: 'PrivateJobClaimed', data: { job_id: jobId, node_id: nodeId, command_id: commandId, claimed_at: claimedAt, result_deadline: resultDeadline } }];
}

function submit(result: SubmittedResult, job: Present): PrivateJobEvent[] {
  if (job.status === 'claimed') return [{ type: 'PrivateJobResultSubmitted', data: result }];
  const same = job.result?.receipt_hash === result.receipt_hash && job.result?.response_envelope_sha256 === result.response_envelope_sha256;
  if ((job.status === 'awaiting-receipt' || job.status === 'completed') && same) return [];
  throw conflict(job, 'given a result');
}

function complete(command: Extract<PrivateJobCommand, { type: 'CompletePrivateJob' }>, job: Present): PrivateJobEvent[] {
  if (job.status === 'completed') return [];
  if (job.status !== 'awaiting-receipt' || job.result === null) throw conflict(job, 'completed');
  return [{ type: 'PrivateJobCompleted', data: { job_id: command.jobId, receipt_hash: job.result.receipt_hash, completed_at: command.completedAt } }];
}

function fail(command: Extract<PrivateJobCommand, { type: 'FailPrivateJob' }>, job: Present): PrivateJobEvent[] {
  if (job.status === 'failed' && job.failure === command.reason) return [];
  // A node may give up a job it was sent or claimed; the control plane may give up any open job.
  const open = command.nodeId === null ? !terminalStatuses.includes(job.status) : job.status === 'queued' || job.status === 'claimed';
  if (!open) throw conflict(job, 'failed');
  const data = { job_id: command.jobId, node_id: job.terms.node_id, reason: command.reason, failed_at: command.failedAt };
  return [{ type: 'PrivateJobFailed', data }];
}

/** Overdue queued or claimed jobs expire; anything else is left alone (the sweeper asks often). */
function expire(command: Extract<PrivateJobCommand, { type: 'ExpirePrivateJob' }>, job: Present): PrivateJobEvent[] {
  const now = Date.parse(command.now);
  const overdue =
    (job.status === 'queued' && now > Date.parse(job.terms.claim_deadline)) ||
    (job.status === 'claimed' && job.resultDeadline !== null && now > Date.parse(job.resultDeadline));
  if (!overdue) return [];
  return [{ type: 'PrivateJobExpired', data: { job_id: command.jobId, from_status: job.status as 'queued' | 'claimed', expired_at: command.now } }];
}

function purge(command: Extract<PrivateJobCommand, { type: 'PurgePrivateEnvelopes' }>, job: Present): PrivateJobEvent[] {
  if (job.purged) return [];
  if (!terminalStatuses.includes(job.status)) throw conflict(job, 'purged before it ends');
  return [{ type: 'PrivateJobEnvelopesPurged', data: { job_id: command.jobId, reason: command.reason, purged_at: command.purgedAt } }];
}

export function evolve(state: PrivateJobState, event: PrivateJobEvent): PrivateJobState {
  if (event.type === 'PrivateJobQueued') {
    return { status: 'queued', terms: event.data, resultDeadline: null, result: null, failure: null, purged: false };
  }
  if (state.status === 'absent') return state;
  switch (event.type) {
    case 'PrivateJobClaimed':
      return { ...state, status: 'claimed', resultDeadline: event.data.result_deadline };
    case 'PrivateJobResultSubmitted':
      return { ...state, status: 'awaiting-receipt', result: event.data };
    case 'PrivateJobCompleted':
      return { ...state, status: 'completed' };
    case 'PrivateJobFailed':
      return { ...state, status: 'failed', failure: event.data.reason };
    case 'PrivateJobExpired':
      return { ...state, status: 'expired', failure: 'timed_out' };
    case 'PrivateJobEnvelopesPurged':
      return { ...state, purged: true };
    default:
      return assertNever(event);
  }
}

export const privateJobDecider: Decider<PrivateJobCommand, PrivateJobEvent, PrivateJobState> = { decide, evolve, initialState };
