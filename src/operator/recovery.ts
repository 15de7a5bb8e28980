import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { executeAccountCommand, type CustomerAccountContext } from '../commands/customerAccount.ts';
import { executeJobCommand, type JobContext } from '../commands/job.ts';
import { DomainError } from '../errors.ts';
import type { EventStore } from '../eventStore/port.ts';
import {
  reservationRecoveryStreamName,
  type RecoveryState,
  type StaleReservationsRecovered,
} from '../events/reservationRecovery.ts';

export type RecoveryWindows = Record<RecoveryState, number>;

/** Minutes, not seconds: a hosted chat resolves its reservation within its own request. */
export const defaultRecoveryWindows: RecoveryWindows = { queued: 900, claimed: 1_800, 'awaiting-receipt': 1_800 };

export interface RecoveryDependencies {
  db: Kysely<ProjectionTables>;
  store: EventStore;
  accounts: CustomerAccountContext;
  jobs: JobContext;
}

export interface StaleReservation {
  job_id: string;
  customer_id: string;
  state: RecoveryState;
  age_seconds: number;
  reserved_wei: string;
}

export interface RecoveryReport {
  dry_run: boolean;
  as_of: string;
  windows_seconds: RecoveryWindows;
  /** What the policy selects: what a dry run would release. */
  stale: StaleReservation[];
  /** Released by this run (empty on a dry run). */
  released: string[];
  /** Selected, but resolved by someone else before this run got to them. */
  already_resolved: string[];
}

/**
 * Jobs whose reservation is still open, with the state the reservation is waiting in: a job not
 * yet on a node is queued; on a node, claimed; finished without a settlement, awaiting a receipt.
 * Ages are counted from the job's creation.
 */
export async function findStaleReservations(db: Kysely<ProjectionTables>, windows: RecoveryWindows, now: Date): Promise<StaleReservation[]> {
  const rows = await db
    .selectFrom('jobs')
    .select(['job_id', 'customer_id', 'status', 'node_id', 'reserved_price_wei', 'created_at'])
    .where('billing_status', '=', 'reserved')
    .where('created_at', '<', new Date(now.getTime() - Math.min(...Object.values(windows)) * 1_000))
    .orderBy('created_at')
    .limit(10_000)
    .execute();
  return rows.flatMap((row) => {
    const state = reservationState(row.status, row.node_id);
    const ageSeconds = Math.floor((now.getTime() - row.created_at.getTime()) / 1_000);
    if (ageSeconds < windows[state]) return [];
    return [{ job_id: row.job_id, customer_id: row.customer_id, state, age_seconds: ageSeconds, reserved_wei: row.reserved_price_wei }];
  });
}

function reservationState(status: string, nodeId: string | null): RecoveryState {
  if (status === 'queued' || (status === 'running' && nodeId === null)) return 'queued';
  if (status === 'claimed' || status === 'running') return 'claimed';
  return 'awaiting-receipt';
}

/**
 * Lists what the windows select and, unless this is a dry run, releases exactly those: each
 * release is the account's own Release command, so a reservation resolved meanwhile (or by an
 * earlier run) is skipped rather than released twice, and a repeated run releases nothing more.
 */
export async function recoverStaleReservations(
  dependencies: RecoveryDependencies,
  options: { dryRun: boolean; windows: RecoveryWindows; reason: string; trigger: 'admin' | 'timer'; now: Date },
): Promise<RecoveryReport> {
  const stale = await findStaleReservations(dependencies.db, options.windows, options.now);
  const report: RecoveryReport = {
    dry_run: options.dryRun,
    as_of: options.now.toISOString(),
    windows_seconds: options.windows,
    stale,
    released: [],
    already_resolved: [],
  };
  if (options.dryRun) return report;
  const released: StaleReservationsRecovered['released'] = [];
  for (const reservation of stale) {
    const { job_id: jobId, customer_id: customerId } = reservation;
    try {
      const outcome = await executeAccountCommand(dependencies.accounts, { type: 'Release', customerId, jobId, reason: 'stale_reservation_recovered' });
      if (outcome.replayed) {
        report.already_resolved.push(jobId);
        continue;
      }
    } catch (error) {
      if (error instanceof DomainError && (error.code === 'reservation_already_resolved' || error.code === 'reservation_not_open')) {
        report.already_resolved.push(jobId);
        continue;
      }
      throw error;
    }
    report.released.push(jobId);
    released.push({ job_id: jobId, customer_id: customerId, state: reservation.state, amount_wei: reservation.reserved_wei });
    await failJob(dependencies.jobs, jobId);
  }
  if (released.length > 0) {
    const recoveryId = `rec_${randomUUID()}`;
    const data: StaleReservationsRecovered = {
      recovery_id: recoveryId,
      trigger: options.trigger,
      reason: options.reason,
      windows_seconds: options.windows,
      released,
    };
    await dependencies.store.append(reservationRecoveryStreamName, [{ eventId: recoveryId, type: 'StaleReservationsRecovered', data: { ...data } }], {
      expectedVersion: 'any',
    });
  }
  return report;
}

/** A hosted job still marked running is finished as failed; one that finished meanwhile is left alone. */
async function failJob(jobs: JobContext, jobId: string): Promise<void> {
  try {
    await executeJobCommand(jobs, {
      type: 'FinishJob',
      jobId,
      outcome: { attempts: [], firstByteMs: null, completion: null, receipt: null, failure: 'stale_reservation_recovered' },
    });
  } catch (error) {
    if (!(error instanceof DomainError && error.code === 'version_conflict')) throw error;
  }
}

/** Runs the recovery with the default windows every `intervalMs` until stopped. */
export function startRecoveryTimer(
  dependencies: RecoveryDependencies,
  options: { intervalMs: number; windows: RecoveryWindows; now: () => Date; onError: (error: Error) => void },
): { stop(): Promise<void> } {
  let running: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    running = recoverStaleReservations(dependencies, {
      dryRun: false,
      windows: options.windows,
      reason: 'automatic stale-reservation recovery',
      trigger: 'timer',
      now: options.now(),
    }).catch((error: Error) => options.onError(error));
  }, options.intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
