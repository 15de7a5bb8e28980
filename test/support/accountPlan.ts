import type { CustomerAccountCommand } from '../../src/deciders/customerAccount/decider.ts';
import type { ErrorCode } from '../../src/errors.ts';
import { pick, randomBigint, randomInt, type Random } from './random.ts';

/**
 * Random command sequences for the money property test. The plan is drawn against a sequential
 * guess of the accounts, so most commands are meaningful (a capture names a job that was
 * reserved, for an amount it could cover), and some are deliberately wrong. Run concurrently the
 * commands are reordered, so each kind lists every outcome that reordering can produce; the one
 * outcome a kind must never have is the point of the kind.
 */
export type PlannedKind =
  | 'deposit'
  | 'depositRetry'
  | 'depositReused'
  | 'reserve'
  | 'overReserve'
  | 'reserveRetry'
  | 'capture'
  | 'captureExceeds'
  | 'release'
  | 'doubleResolve'
  | 'unknownJob'
  | 'ghost'
  | 'createAgain';

export type Outcome = 'appended' | 'replayed' | ErrorCode;

export interface PlannedCommand {
  kind: PlannedKind;
  command: CustomerAccountCommand;
}

const resolutions: readonly Outcome[] = ['appended', 'replayed', 'reservation_not_open', 'reservation_already_resolved'];

/** Every kind may also lose too many optimistic-concurrency races: version_conflict, nothing appended. */
export const allowedOutcomes: Record<PlannedKind, readonly Outcome[]> = {
  deposit: ['appended', 'replayed', 'idempotency_key_reused'],
  depositRetry: ['appended', 'replayed', 'idempotency_key_reused'],
  depositReused: ['appended', 'replayed', 'idempotency_key_reused'],
  reserve: ['appended', 'replayed', 'insufficient_balance'],
  overReserve: ['appended', 'insufficient_balance'],
  reserveRetry: ['appended', 'replayed', 'insufficient_balance'],
  capture: resolutions,
  captureExceeds: ['capture_exceeds_reservation', 'reservation_not_open', 'reservation_already_resolved'],
  release: resolutions,
  doubleResolve: resolutions,
  unknownJob: ['reservation_not_open'],
  ghost: ['customer_not_found'],
  createAgain: ['replayed'],
};

const weights: ReadonlyArray<[PlannedKind, number]> = [
  ['deposit', 20],
  ['depositRetry', 4],
  ['depositReused', 3],
  ['reserve', 22],
  ['overReserve', 5],
  ['reserveRetry', 3],
  ['capture', 14],
  ['captureExceeds', 4],
  ['release', 10],
  ['doubleResolve', 6],
  ['unknownJob', 3],
  ['ghost', 2],
  ['createAgain', 1],
];
const totalWeight = weights.reduce((sum, [, weight]) => sum + weight, 0);

interface PlannedAccount {
  customerId: string;
  availableWei: bigint;
  deposits: Map<string, bigint>;
  openJobs: Map<string, bigint>;
  resolved: Array<{ jobId: string; command: CustomerAccountCommand }>;
  reservedJobs: Map<string, bigint>;
}

export const ghostCustomerId = 'ghost';
export const nodeIds = ['node-a', 'node-b', 'node-c'] as const;

export function customerIds(count: number): string[] {
  return Array.from({ length: count }, (_, index) => `cust-${index}`);
}

export function planCommands(random: Random, customers: readonly string[], length: number): PlannedCommand[] {
  const accounts = customers.map(
    (customerId): PlannedAccount => ({
      customerId,
      availableWei: 0n,
      deposits: new Map(),
      openJobs: new Map(),
      resolved: [],
      reservedJobs: new Map(),
    }),
  );
  const plan: PlannedCommand[] = [];
  let serial = 0;
  while (plan.length < length) {
    serial += 1;
    const planned = planOne(random, pick(random, accounts), drawKind(random), serial);
    if (planned !== null) plan.push(planned);
  }
  return plan;
}

function drawKind(random: Random): PlannedKind {
  let ticket = randomInt(random, totalWeight);
  for (const [kind, weight] of weights) {
    if (ticket < weight) return kind;
    ticket -= weight;
  }
  return 'deposit';
}

/** Mostly small amounts, sometimes 30-digit ones, so bigint arithmetic is exercised too. */
function drawAmount(random: Random): bigint {
  return 1n + randomBigint(random, random() < 0.1 ? 10n ** 30n : 1_000_000n);
}

function drawShareBps(random: Random): number {
  const roll = random();
  return roll < 0.1 ? 0 : roll < 0.2 ? 10_000 : randomInt(random, 10_001);
}

function planOne(random: Random, account: PlannedAccount, kind: PlannedKind, serial: number): PlannedCommand | null {
  const customerId = account.customerId;
  const pickEntry = <V>(map: Map<string, V>): [string, V] | null => (map.size === 0 ? null : pick(random, [...map.entries()]));
  const resolve = (jobId: string, reservedWei: bigint, cost: 'fits' | 'exceeds'): CustomerAccountCommand => ({
    type: 'Capture',
    customerId,
    jobId,
    costWei: cost === 'fits' ? randomBigint(random, reservedWei + 1n) : reservedWei + 1n + randomBigint(random, 1000n),
    nodeId: pick(random, nodeIds),
    nodeShareBps: drawShareBps(random),
  });
  switch (kind) {
    case 'deposit': {
      const reference = `ref-${serial}`;
      const amountWei = drawAmount(random);
      account.deposits.set(reference, amountWei);
      account.availableWei += amountWei;
      return { kind, command: { type: 'Deposit', customerId, reference, amountWei } };
    }
    case 'depositRetry':
    case 'depositReused': {
      const entry = pickEntry(account.deposits);
      if (entry === null) return null;
      const amountWei = kind === 'depositRetry' ? entry[1] : entry[1] + 1n;
      return { kind, command: { type: 'Deposit', customerId, reference: entry[0], amountWei } };
    }
    case 'reserve':
    case 'overReserve': {
      const jobId = `job-${serial}`;
      if (kind === 'reserve' && account.availableWei === 0n) return null;
      const amountWei =
        kind === 'reserve' ? 1n + randomBigint(random, account.availableWei) : account.availableWei + 1n + randomBigint(random, 1000n);
      if (kind === 'reserve') {
        account.availableWei -= amountWei;
        account.openJobs.set(jobId, amountWei);
        account.reservedJobs.set(jobId, amountWei);
      }
      return { kind, command: { type: 'Reserve', customerId, jobId, amountWei } };
    }
    case 'reserveRetry': {
      const entry = pickEntry(account.reservedJobs);
      return entry === null ? null : { kind, command: { type: 'Reserve', customerId, jobId: entry[0], amountWei: entry[1] } };
    }
    case 'capture':
    case 'release':
    case 'captureExceeds': {
      const entry = pickEntry(account.openJobs);
      if (entry === null) return null;
      const [jobId, reservedWei] = entry;
      if (kind === 'captureExceeds') return { kind, command: resolve(jobId, reservedWei, 'exceeds') };
      const command: CustomerAccountCommand =
        kind === 'capture' ? resolve(jobId, reservedWei, 'fits') : { type: 'Release', customerId, jobId, reason: 'timeout' };
      account.openJobs.delete(jobId);
      account.availableWei += command.type === 'Capture' ? reservedWei - command.costWei : reservedWei;
      account.resolved.push({ jobId, command });
      return { kind, command };
    }
    case 'doubleResolve': {
      if (account.resolved.length === 0) return null;
      const earlier = pick(random, account.resolved);
      // Half the time the very same resolution again (a retry), otherwise the other kind of resolution.
      const reservedWei = account.reservedJobs.get(earlier.jobId) ?? 0n;
      const other: CustomerAccountCommand =
        earlier.command.type === 'Capture'
          ? { type: 'Release', customerId, jobId: earlier.jobId, reason: 'late' }
          : resolve(earlier.jobId, reservedWei, 'fits');
      return { kind, command: random() < 0.5 ? earlier.command : other };
    }
    case 'unknownJob': {
      const jobId = `never-${serial}`;
      return { kind, command: random() < 0.5 ? resolve(jobId, 10n, 'fits') : { type: 'Release', customerId, jobId, reason: 'lost' } };
    }
    case 'ghost':
      return { kind, command: { type: 'Deposit', customerId: ghostCustomerId, reference: `ref-${serial}`, amountWei: 1n } };
    case 'createAgain':
      return { kind, command: { type: 'CreateCustomer', customerId } };
  }
}
