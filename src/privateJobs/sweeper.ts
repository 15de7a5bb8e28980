import { overdueJobIds, unsettledJobIds } from '../queries/privateJobs.ts';
import type { PrivateJobEnvironment } from './environment.ts';
import { expireJob, resumeJob } from './settle.ts';

const batchSize = 100;

/**
 * One pass: expires queued and claimed jobs past their deadlines (releasing their reservations),
 * and finishes follow-ups a crashed request left undone. The read model only nominates jobs; each
 * decision is the aggregate's, so a stale row can never expire or charge a job wrongly.
 */
export async function sweepPrivateJobs(env: PrivateJobEnvironment): Promise<{ expired: number; resumed: number }> {
  const now = env.now();
  let expired = 0;
  for (const jobId of await overdueJobIds(env.db, now, batchSize)) {
    if ((await expireJob(env, jobId)).status === 'expired') expired += 1;
  }
  const quietSince = new Date(now.getTime() - env.services.settings.settleGraceMs);
  const unsettled = await unsettledJobIds(env.db, quietSince, batchSize);
  for (const jobId of unsettled) await resumeJob(env, jobId);
  return { expired, resumed: unsettled.length };
}

/** Runs a sweep every interval after the previous one finished; failures are reported and retried. */
export class PrivateJobSweeper {
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;
  #stopped = false;

  constructor(
    private readonly env: PrivateJobEnvironment,
    private readonly onError: (error: unknown) => void,
  ) {}

  start(): void {
    this.#stopped = false;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      this.#running = sweepPrivateJobs(this.env)
        .then(() => undefined, this.onError)
        .finally(() => {
          this.#running = null;
          this.#schedule();
        });
    }, this.env.services.settings.sweepIntervalMs);
    // The sweeper alone never keeps a process alive.
    this.#timer.unref();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}
