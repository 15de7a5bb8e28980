import type { PauseDirectory } from '../operator/pauses.ts';
import type { Kysely } from 'kysely';
import type pg from 'pg';
import type { ProjectionTables } from '../../projections/tables.ts';
import { AggregateCache } from '../commands/aggregateCache.ts';
import type { CustomerAccountContext } from '../commands/customerAccount.ts';
import type { JobContext } from '../commands/job.ts';
import type { ModelPriceContext } from '../commands/node.ts';
import { StreamLocks } from '../commands/streamLocks.ts';
import type { EventStore } from '../eventStore/port.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import type { PrivateJobContext, TransportKeyContext } from './commands.ts';
import { envelopeStore, type EnvelopeStore } from './envelopeStore.ts';
import { NonceCache, Notifier } from './notifier.ts';

/** Time limits of private jobs (docs/decisions.md, Private jobs). */
export interface PrivateJobSettings {
  /** A queued job not claimed within this expires and its reservation is released. */
  claimTimeoutMs: number;
  /** A claimed job without a result within this expires and its reservation is released. */
  runTimeoutMs: number;
  /** The longest a node's command poll or a customer's job read may wait for a change. */
  maxPollWaitMs: number;
  maxCommandsPerPoll: number;
  /** How often overdue and unsettled jobs are looked for. */
  sweepIntervalMs: number;
  /** An unsettled job left alone this long is settled by the sweeper (its own request has died). */
  settleGraceMs: number;
  /** How far a signed node request's sent_at may be from the control plane's clock. */
  requestSkewMs: number;
}

export const defaultPrivateJobSettings: PrivateJobSettings = {
  claimTimeoutMs: 600_000,
  runTimeoutMs: 600_000,
  maxPollWaitMs: 25_000,
  maxCommandsPerPoll: 16,
  sweepIntervalMs: 5_000,
  settleGraceMs: 30_000,
  requestSkewMs: 120_000,
};

/** What the private job surface adds to the app: its aggregates, envelope store and wake-ups. */
export interface PrivateJobServices {
  jobs: PrivateJobContext;
  transportKeys: TransportKeyContext;
  envelopes: EnvelopeStore;
  nodeWakeups: Notifier;
  jobWakeups: Notifier;
  nonces: NonceCache;
  settings: PrivateJobSettings;
}

export function createPrivateJobServices(store: EventStore, pool: pg.Pool, settings: Partial<PrivateJobSettings> = {}): PrivateJobServices {
  const resolved = { ...defaultPrivateJobSettings, ...settings };
  return {
    jobs: { store, cache: new AggregateCache(10_000), locks: new StreamLocks() },
    transportKeys: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    envelopes: envelopeStore(pool),
    nodeWakeups: new Notifier(),
    jobWakeups: new Notifier(),
    nonces: new NonceCache(2 * resolved.requestSkewMs),
    settings: resolved,
  };
}

/** Everything the private job flows use, taken from the app's dependencies by the routes. */
export interface PrivateJobEnvironment {
  services: PrivateJobServices;
  db: Kysely<ProjectionTables>;
  accounts: CustomerAccountContext;
  jobs: JobContext;
  modelPrices: ModelPriceContext;
  /** Operator pauses: a paused customer, node or model takes no new private job. */
  pauses: PauseDirectory;
  /** The ledger's key: it countersigns every receipt it accepts. */
  ledgerIdentity: NodeIdentity;
  nodeShareBps: number;
  /** The completion-token cap a private job is quoted and run with. */
  maxTokens: number;
  waitForProjections(position: bigint): Promise<boolean>;
  now(): Date;
}
