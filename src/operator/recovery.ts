import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { executeAccountCommand, type CustomerAccountContext } from '../commands/customerAccount.ts';
import { executeJobCommand, type JobContext } from '../commands/job.ts';
import { DomainError } from '../errors.ts';
import type { EventStore } from '../eventStore/port.ts';
import type { PrivateJobEnvironment } from '../privateJobs/environment.ts';
import { giveUpPrivateJob } from '../privateJobs/settle.ts';
import {
  recoveryStates,
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
  /** The private job flows, which end a private job whose reservation recovery releases. */
  privateJobFlows: PrivateJobEnvironment;
}

export interface StaleReservation {
  job_id: string;
  kind: 'hosted' | 'private';
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
  /**
   * Selected, but resolved another way: by someone else before this run got to them, or (a private
   * job whose node's verified result is in the log) settled through the job's own flow.
   */
  already_resolved: string[];
}

/**
 * Jobs whose reservation is still open, with the state the reservation waits in. A private job
 * says its state itself (queued, claimed, awaiting-receipt) and is aged from entering it. A hosted
 * chat job is queued until it reaches a node, claimed on a node, awaiting a receipt once finished
 * without a settlement, and is aged from its creation: it lives within one request.
 */
export async function findStaleReservations(db: Kysely<ProjectionTables>, windows: RecoveryWindows, now: Date): Promise<StaleReservation[]> {
  const oldest = new Date(now.getTime() - Math.min(...Object.values(windows)) * 1_000);
  const [hosted, privateJobs] = await Promise.all([
    db
      .selectFrom('jobs')
      .select(['job_id', 'customer_id', 'status', 'node_id', 'reserved_price_wei', 'created_at'])
      .where('billing_status', '=', 'reserved')
      .where('created_at', '<', oldest)
      .where(({ not, exists, selectFrom }) => not(exists(selectFrom('private_jobs as p').select('p.job_id').whereRef('p.job_id', '=', 'jobs.job_id'))))
      .orderBy('created_at')
      .limit(10_000)
      .execute(),
    db
      .selectFrom('private_jobs')
      .select(['job_id', 'customer_id', 'status', 'reserved_price_wei', 'created_at', 'claimed_at', 'updated_at'])
      .where('billing_status', '=', 'reserved')
      .where('status', 'in', recoveryStates)
      .where('updated_at', '<', oldest)
      .orderBy('updated_at')
      .limit(10_000)
      .execute(),
  ]);
  const age = (since: Date) => Math.floor((now.getTime() - since.getTime()) / 1_000);
  const stale: StaleReservation[] = [];
  for (const row of hosted) {
    const state = reservationState(row.status, row.node_id);
    const ageSeconds = age(row.created_at);
    if (ageSeconds >= windows[state]) {
      stale.push({ job_id: row.job_id, kind: 'hosted', customer_id: row.customer_id, state, age_seconds: ageSeconds, reserved_wei: row.reserved_price_wei });
    }
  }
  for (const row of privateJobs) {
    const state = row.status as RecoveryState;
    const ageSeconds = age(state === 'queued' ? row.created_at : state === 'claimed' ? (row.claimed_at ?? row.updated_at) : row.updated_at);
    if (ageSeconds >= windows[state]) {
      stale.push({ job_id: row.job_id, kind: 'private', customer_id: row.customer_id, state, age_seconds: ageSeconds, reserved_wei: row.reserved_price_wei });
    }
  }
  return stale;
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
    const release = () => releaseReservation(dependencies.accounts, customerId, jobId);
    // A private job is given up (or, holding its node's result, settled) through its own flow, which
    // also ends it; a hosted one is failed here.
    const done =
      reservation.kind === 'private'
        ? await giveUpPrivateJob(dependencies.privateJobFlows, jobId, release)
        : (await release()) && (await failJob(dependencies.jobs, jobId), true);
    if (!done) {
      report.already_resolved.push(jobId);
      continue;
    }
    report.released.push(jobId);
    released.push({ job_id: jobId, customer_id: customerId, state: reservation.state, amount_wei: reservation.reserved_wei });
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

/** Releases the reservation; false when it was already resolved (by the gateway, or an earlier run). */
async function releaseReservation(accounts: CustomerAccountContext, customerId: string, jobId: string): Promise<boolean> {
  try {
    const outcome = await executeAccountCommand(accounts, { type: 'Release', customerId, jobId, reason: 'stale_reservation_recovered' });
    return !outcome.replayed;
  } catch (error) {
    if (error instanceof DomainError && (error.code === 'reservation_already_resolved' || error.code === 'reservation_not_open')) return false;
    throw error;
  }
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
