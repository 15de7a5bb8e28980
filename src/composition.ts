import { AggregateCache } from './commands/aggregateCache.ts';
import { StreamLocks } from './commands/streamLocks.ts';
import { customerCredentialStore } from './credentials/customerCredentialStore.ts';
import { gatewayKeyCredentialStore } from './credentials/gatewayKeys.ts';
import type { LedgerDatabase } from './db/ledgerDatabase.ts';
import type { AppDependencies, AppSettings, ProjectionProgress } from './http/app.ts';
import { EnrollmentChallenges } from './http/enrollmentChallenges.ts';
import { GatewayKeyResolver } from './http/gatewayAuth.ts';
import { NodeDirectory } from './router/directory.ts';
import type { NodeIdentity } from './receipts/ed25519.ts';
import { nodeRouteStore } from './router/nodeRoutes.ts';
import { createPrivateJobServices } from './privateJobs/environment.ts';
import { PauseDirectory } from './operator/pauses.ts';
import { TransparencyLog } from './transparency/sequencer.ts';
import { defaultTransparencySettings } from './transparency/settings.ts';

/** Wires the concrete adapters the app needs; only process entry points (and tests) call this. */
export function createAppDependencies(
  ledger: LedgerDatabase,
  projections: ProjectionProgress,
  adminTokenHash: Buffer,
  settings: AppSettings,
  ledgerIdentity: NodeIdentity,
  // Built here so the proof endpoints can read its tree; only a started log follows and appends.
  transparency = new TransparencyLog(ledger.store, ledger.db, ledgerIdentity, defaultTransparencySettings(ledgerIdentity)),
): AppDependencies & { transparency: TransparencyLog } {
  const { store } = ledger;
  const gatewayKeyCredentials = gatewayKeyCredentialStore(ledger.pool);
  const nodeRoutes = nodeRouteStore(ledger.pool);
  return {
    store,
    db: ledger.db,
    projections,
    adminTokenHash,
    settings,
    accounts: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    gatewayKeys: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    nodes: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    modelPrices: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    jobs: { store, cache: new AggregateCache(1_000), locks: new StreamLocks() },
    payouts: { store, cache: new AggregateCache(1), locks: new StreamLocks() },
    credentials: customerCredentialStore(ledger.pool),
    gatewayKeyCredentials,
    nodeRoutes,
    challenges: new EnrollmentChallenges(),
    gatewayKeyResolver: new GatewayKeyResolver(gatewayKeyCredentials, ledger.db),
    nodeDirectory: new NodeDirectory(ledger.db, nodeRoutes),
    trafficControls: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    nodeReceipts: { store, cache: new AggregateCache(), locks: new StreamLocks() },
    pauses: new PauseDirectory(ledger.db),
    ledgerIdentity,
    privateJobs: createPrivateJobServices(store, ledger.pool),
    transparency,
  };
}
