import { DomainError } from '../errors.ts';
import { purgeCandidates } from '../queries/privateJobs.ts';
import { executePrivateJobCommand } from './commands.ts';
import type { PrivateJobEnvironment } from './environment.ts';

export interface PurgeResult {
  jobIds: string[];
  envelopesRemoved: number;
}

/**
 * Removes the ciphertext of private jobs that ended before the cutoff. The log is append-only, so
 * the purge is itself an event per job (PrivateJobEnvelopesPurged, with the operator's reason),
 * appended before the rows go; a crash in between leaves rows the next run removes. Events only
 * ever held the envelopes' hashes, so billing, receipts, payouts and the transparency log stay
 * exactly as verifiable as before.
 */
export async function purgeTerminalEnvelopes(
  env: Pick<PrivateJobEnvironment, 'services' | 'db' | 'now' | 'waitForProjections'>,
  endedBefore: Date,
  reason: string,
  options: { dryRun: boolean; limit: number },
): Promise<PurgeResult> {
  if (endedBefore.getTime() > env.now().getTime()) {
    throw new DomainError('invalid_request', 'terminal_before must not be in the future', 'terminal_before');
  }
  const jobIds = await purgeCandidates(env.db, endedBefore, options.limit);
  if (options.dryRun) return { jobIds, envelopesRemoved: 0 };
  let lastPosition = 0n;
  for (const jobId of jobIds) {
    const outcome = await executePrivateJobCommand(env.services.jobs, { type: 'PurgePrivateEnvelopes', jobId, reason, purgedAt: env.now().toISOString() });
    if (outcome.lastPosition > lastPosition) lastPosition = outcome.lastPosition;
  }
  // Rows of jobs purged earlier whose removal did not happen (a crash after the event) go too.
  const leftovers = await env.services.envelopes.ofPurgedJobs(options.limit);
  const envelopesRemoved = await env.services.envelopes.remove([...jobIds, ...leftovers]);
  if (lastPosition > 0n) await env.waitForProjections(lastPosition);
  return { jobIds, envelopesRemoved };
}
