import { AggregateCache } from './commands/aggregateCache.ts';
import { customerCredentialStore } from './credentials/customerCredentialStore.ts';
import { gatewayKeyCredentialStore } from './credentials/gatewayKeys.ts';
import type { LedgerDatabase } from './db/ledgerDatabase.ts';
import type { AppDependencies, AppSettings, ProjectionProgress } from './http/app.ts';
import { EnrollmentChallenges } from './http/enrollmentChallenges.ts';
import { nodeRouteStore } from './router/nodeRoutes.ts';

/** Wires the concrete adapters the app needs; only process entry points (and tests) call this. */
export function createAppDependencies(
  ledger: LedgerDatabase,
  projections: ProjectionProgress,
  adminTokenHash: Buffer,
  settings: AppSettings,
): AppDependencies {
  const { store } = ledger;
  return {
    store,
    db: ledger.db,
    projections,
    adminTokenHash,
    settings,
    accounts: { store, cache: new AggregateCache() },
    gatewayKeys: { store, cache: new AggregateCache() },
    nodes: { store, cache: new AggregateCache() },
    modelPrices: { store, cache: new AggregateCache() },
    credentials: customerCredentialStore(ledger.pool),
    gatewayKeyCredentials: gatewayKeyCredentialStore(ledger.pool),
    nodeRoutes: nodeRouteStore(ledger.pool),
    challenges: new EnrollmentChallenges(),
  };
}
