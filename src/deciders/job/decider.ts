import { DomainError } from '../../errors.ts';
import type { JobEvent } from '../../events/job.ts';
import { assertNever, type Decider } from '../decider.ts';

type Data<Type extends JobEvent['type']> = Extract<JobEvent, { type: Type }>['data'];

export interface DispatchAttempt {
  nodeId: string;
  /** Why the attempt did not serve the job; null for the attempt that did. */
  failure: string | null;
}

/**
 * How a job ended, as the gateway observed it. The gateway records the lifecycle in two appends
 * (start, finish) rather than one per step: a request pays for two log writes, not eight, and a
 * crash between them leaves a started job whose reservation the stale-reservation recovery releases.
 */
export interface JobOutcome {
  attempts: DispatchAttempt[];
  firstByteMs: number | null;
  completion: { nodeId: string; usage: Data<'JobCompleted'>['usage']; latencyMs: number } | null;
  receipt:
    | { accepted: true; nodeId: string; receipt: Omit<Data<'ReceiptAccepted'>, 'job_id' | 'node_id'>; payoutWei: string }
    | { accepted: false; nodeId: string; code: string; detail: string }
    | null;
  failure: string | null;
}

export type JobCommand =
  | { type: 'StartJob'; request: Data<'JobRequested'>; /** Unique per HTTP request, so two requests never share a start. */ attemptId: string }
  | { type: 'FinishJob'; jobId: string; outcome: JobOutcome };

export type JobState =
  | { status: 'absent' }
  | { status: 'started' | 'finished'; jobId: string; customerId: string; requestSha256: string | null };

export function initialState(): JobState {
  return { status: 'absent' };
}

export function decide(command: JobCommand, state: JobState): JobEvent[] {
  switch (command.type) {
    case 'StartJob':
      if (state.status !== 'absent') throw new DomainError('idempotency_key_in_use', `Job ${command.request.job_id} already exists`);
      return [{ type: 'JobRequested', data: command.request }];
    case 'FinishJob':
      if (state.status !== 'started') throw new DomainError('version_conflict', `Job ${command.jobId} is not running`);
      return finish(command.jobId, command.outcome);
    default:
      return assertNever(command);
  }
}

function finish(jobId: string, outcome: JobOutcome): JobEvent[] {
  const events: JobEvent[] = [];
  outcome.attempts.forEach((attempt, index) => {
    events.push({ type: 'JobRouted', data: { job_id: jobId, node_id: attempt.nodeId, attempt: index + 1 } });
    if (attempt.failure !== null) {
      events.push({ type: 'JobDispatchFailed', data: { job_id: jobId, node_id: attempt.nodeId, attempt: index + 1, reason: attempt.failure } });
    }
  });
  const served = outcome.attempts.find((attempt) => attempt.failure === null);
  if (served !== undefined && outcome.firstByteMs !== null) {
    events.push({ type: 'JobFirstByte', data: { job_id: jobId, node_id: served.nodeId, ttft_ms: outcome.firstByteMs } });
  }
  if (outcome.completion !== null) {
    const { nodeId, usage, latencyMs } = outcome.completion;
    events.push({ type: 'JobCompleted', data: { job_id: jobId, node_id: nodeId, usage, latency_ms: latencyMs } });
  }
  const receipt = outcome.receipt;
  if (receipt?.accepted === true) {
    events.push({ type: 'ReceiptAccepted', data: { job_id: jobId, node_id: receipt.nodeId, ...receipt.receipt } });
    events.push({
      type: 'PayoutAccrued',
      data: { job_id: jobId, node_id: receipt.nodeId, receipt_hash: receipt.receipt.receipt_hash, amount_wei: receipt.payoutWei },
    });
  } else if (receipt?.accepted === false) {
    events.push({ type: 'ReceiptRejected', data: { job_id: jobId, node_id: receipt.nodeId, code: receipt.code, detail: receipt.detail } });
  }
  if (outcome.failure !== null) events.push({ type: 'JobFailed', data: { job_id: jobId, reason: outcome.failure } });
  return events;
}

export function evolve(state: JobState, event: JobEvent): JobState {
  if (event.type === 'JobRequested') {
    return { status: 'started', jobId: event.data.job_id, customerId: event.data.customer_id, requestSha256: event.data.request_sha256 ?? null };
  }
  if (state.status === 'absent') return state;
  switch (event.type) {
    case 'JobCompleted':
    case 'JobFailed':
    case 'ReceiptAccepted':
    case 'ReceiptRejected':
    case 'PayoutAccrued':
      return { ...state, status: 'finished' };
    case 'JobRouted':
    case 'JobDispatchFailed':
    case 'JobFirstByte':
      return state;
    default:
      return assertNever(event);
  }
}

export const jobDecider: Decider<JobCommand, JobEvent, JobState> = { decide, evolve, initialState };
