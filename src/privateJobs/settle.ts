import { executeAccountCommand } from '../commands/customerAccount.ts';
import { executeJobCommand } from '../commands/job.ts';
import type { JobOutcome } from '../deciders/job/decider.ts';
import type { PrivateJobState, QueuedTerms, SubmittedResult } from '../deciders/privateJob/decider.ts';
import { DomainError } from '../errors.ts';
import { acceptance, countersign } from '../receipts/acceptance.ts';
import { executePrivateJobCommand, readPrivateJobState } from './commands.ts';
import type { PrivateJobEnvironment } from './environment.ts';

/**
 * The money side of a private job's end, after its own event: an accepted result captures the
 * receipt's debit and releases the rest of the reservation (as hosted chat does); a failed or
 * expired job releases all of it. Each step is an idempotent command, so running a follow-up again
 * (the sweeper does, after a crash) finishes it without doing anything twice.
 */

type Present = Exclude<PrivateJobState, { status: 'absent' }>;

function isCode(error: unknown, code: string): boolean {
  return error instanceof DomainError && error.code === code;
}

/** Capture, then the job's receipt events, then the private job's completion. */
export async function settleResult(env: PrivateJobEnvironment, terms: QueuedTerms, result: SubmittedResult): Promise<PrivateJobState> {
  try {
    await executeAccountCommand(env.accounts, {
      type: 'Capture',
      customerId: terms.customer_id,
      jobId: terms.job_id,
      costWei: BigInt(result.debited_price_wei),
      nodeId: terms.node_id,
      nodeShareBps: terms.node_share_bps,
    });
  } catch (error) {
    // Someone (stale-reservation recovery) released the reservation first: the job cannot be charged.
    if (!isCode(error, 'reservation_already_resolved')) throw error;
    const failed = await executePrivateJobCommand(env.services.jobs, {
      type: 'FailPrivateJob', jobId: terms.job_id, nodeId: null, commandId: null, reason: 'reservation_released', failedAt: env.now().toISOString(),
    });
    await finishJob(env, terms, failureOutcome(terms, 'reservation_released'));
    await announce(env, terms.job_id);
    return failed.state;
  }
  await finishJob(env, terms, acceptedOutcome(env, terms, result));
  const completed = await executePrivateJobCommand(env.services.jobs, { type: 'CompletePrivateJob', jobId: terms.job_id, completedAt: env.now().toISOString() });
  await announce(env, terms.job_id);
  return completed.state;
}

/** Wakes readers waiting on the job once the read models include how it ended, money included. */
async function announce(env: PrivateJobEnvironment, jobId: string): Promise<void> {
  await env.waitForProjections(await env.services.jobs.store.headPosition());
  env.services.jobWakeups.notify(jobId);
}

/** Releases the whole reservation of a failed or expired job and ends its job stream as failed. */
export async function releaseJob(env: PrivateJobEnvironment, terms: QueuedTerms, reason: string): Promise<void> {
  await executeAccountCommand(env.accounts, { type: 'Release', customerId: terms.customer_id, jobId: terms.job_id, reason }).catch((error: unknown) => {
    if (!isCode(error, 'reservation_already_resolved')) throw error;
  });
  await finishJob(env, terms, failureOutcome(terms, reason));
  await announce(env, terms.job_id);
}

/** Expires the job if it is overdue (the decider checks, with the time given here), then releases. */
export async function expireJob(env: PrivateJobEnvironment, jobId: string): Promise<PrivateJobState> {
  const outcome = await executePrivateJobCommand(env.services.jobs, { type: 'ExpirePrivateJob', jobId, now: env.now().toISOString() });
  if (outcome.state.status === 'expired') await releaseJob(env, outcome.state.terms, 'timed_out');
  if (outcome.lastPosition > 0n) await env.waitForProjections(outcome.lastPosition);
  return outcome.state;
}

/** Finishes whatever follow-up a job's last event still calls for. */
export async function resumeJob(env: PrivateJobEnvironment, jobId: string): Promise<void> {
  const state = await readPrivateJobState(env.services.jobs, jobId);
  if (state.status === 'awaiting-receipt' && state.result !== null) await settleResult(env, state.terms, state.result);
  else if (state.status === 'failed' || state.status === 'expired') await releaseJob(env, state.terms, (state as Present).failure ?? 'failed');
}

async function finishJob(env: PrivateJobEnvironment, terms: QueuedTerms, outcome: JobOutcome): Promise<void> {
  await executeJobCommand(env.jobs, { type: 'FinishJob', jobId: terms.job_id, outcome });
}

function failureOutcome(terms: QueuedTerms, reason: string): JobOutcome {
  return { attempts: [{ nodeId: terms.node_id, failure: reason }], firstByteMs: null, completion: null, receipt: null, failure: reason };
}

/** The same job events as an accepted hosted chat: routed, completed, receipt accepted (countersigned), payout. */
function acceptedOutcome(env: PrivateJobEnvironment, terms: QueuedTerms, result: SubmittedResult): JobOutcome {
  const document = acceptance({
    receipt_hash: result.receipt_hash,
    job_id: terms.job_id,
    node_id: terms.node_id,
    debited_price_wei: result.debited_price_wei,
    payout_price_wei: result.payout_price_wei,
  });
  return {
    attempts: [{ nodeId: terms.node_id, failure: null }],
    firstByteMs: null,
    completion: { nodeId: terms.node_id, usage: result.usage, latencyMs: result.latency_ms },
    receipt: {
      accepted: true,
      nodeId: terms.node_id,
      payoutWei: result.payout_price_wei,
      receipt: {
        receipt_hash: result.receipt_hash,
        receipt_canonical: result.receipt_canonical,
        signature_ed25519: result.signature_ed25519,
        node_key_id: result.node_key_id,
        node_public_key: result.node_public_key,
        ledger_key_id: env.ledgerIdentity.keyId,
        ledger_countersignature: countersign(env.ledgerIdentity, document),
      },
    },
    failure: null,
  };
}

/**
 * Stale-reservation recovery of a private job. The control plane gives the job up first
 * (`reservation_released`), so a result the node posts later is refused; then the reservation is
 * released and the job stream ends as failed. Returns true when it released the reservation, false
 * when the job had already ended or was settled instead.
 *
 * A job awaiting its receipt already holds its node's verified result and receipt in the log; only
 * the capture after it is missing (a crash). It is settled as the sweeper would settle it: giving it
 * up would hand the customer a readable answer for nothing and leave the node unpaid for work its
 * signed receipt proves.
 */
export async function giveUpPrivateJob(env: PrivateJobEnvironment, jobId: string, release: () => Promise<boolean>): Promise<boolean> {
  const state = await readPrivateJobState(env.services.jobs, jobId);
  if (state.status === 'absent') return false;
  if (state.status === 'awaiting-receipt' && state.result !== null) {
    await settleResult(env, state.terms, state.result);
    return false;
  }
  try {
    await executePrivateJobCommand(env.services.jobs, {
      type: 'FailPrivateJob', jobId, nodeId: null, commandId: null, reason: 'reservation_released', failedAt: env.now().toISOString(),
    });
  } catch (error) {
    if (isCode(error, 'private_job_state_conflict')) return false;
    throw error;
  }
  const released = await release();
  await finishJob(env, state.terms, failureOutcome(state.terms, 'reservation_released'));
  await announce(env, jobId);
  return released;
}
