import type { FastifyInstance } from 'fastify';
import { allProjections } from '../projections/index.ts';
import { ProjectionRunner } from '../projections/runner.ts';
import { loadAdminToken } from './config/adminToken.ts';
import type { ServiceConfig } from './config/config.ts';
import { join } from 'node:path';
import { createAppDependencies } from './composition.ts';
import { defaultRecoveryWindows, startRecoveryTimer } from './operator/recovery.ts';
import { privateJobEnvironment } from './http/routes/privateJobs.ts';
import { loadOrCreateIdentity } from './receipts/ed25519.ts';
import { openEmbeddedPostgres, type DatabaseServer } from './db/embeddedPostgres.ts';
import { openLedgerDatabase, type LedgerDatabase } from './db/ledgerDatabase.ts';
import { buildApp, defaultSettings, redactedPaths } from './http/app.ts';
import { TransparencyLog } from './transparency/sequencer.ts';
import { defaultOrigin } from './transparency/settings.ts';

export interface RunningService {
  app: FastifyInstance;
  url: string;
  adminTokenPath: string;
  stop(): Promise<void>;
}

/** Opens the database (DATABASE_URL, or the embedded default), then the projections, then HTTP. */
export async function openDatabase(config: ServiceConfig): Promise<{ server: DatabaseServer | null; ledger: LedgerDatabase }> {
  const server = config.databaseUrl === null ? await openEmbeddedPostgres(config.dataDir) : null;
  const connectionString = config.databaseUrl ?? server!.connectionString;
  try {
    const ledger = await openLedgerDatabase(connectionString, { poolSize: 20 });
    return { server, ledger };
  } catch (error) {
    if (server?.owned) await server.stop();
    throw error;
  }
}

export async function startService(config: ServiceConfig): Promise<RunningService> {
  const adminToken = await loadAdminToken(config.dataDir, config.adminTokenFile);
  const { server, ledger } = await openDatabase(config);
  const logger = { level: config.logLevel, redact: { paths: redactedPaths, censor: '[redacted]' } };
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections, {
    onError: (error) => app.log.error({ err: error }, 'projection runner failed; retrying'),
  });
  const settings = {
    ...defaultSettings,
    nodeShareBps: config.nodeShareBps,
    bodyLimitBytes: config.bodyLimitBytes,
    defaultMaxTokens: config.defaultMaxTokens,
    requestsPerMinute: config.requestsPerMinute,
    maxConcurrentStreams: config.maxConcurrentStreams,
  };
  // The ledger's signing key lives beside the admin token, created on first start (mode 0600).
  const ledgerIdentity = await loadOrCreateIdentity(join(config.dataDir, 'ledger-key.pem'));
  const transparency = new TransparencyLog(
    ledger.store,
    ledger.db,
    ledgerIdentity,
    {
      origin: config.transparencyOrigin ?? defaultOrigin(ledgerIdentity),
      checkpointEveryLeaves: config.checkpointEveryLeaves,
      checkpointEveryMs: config.checkpointEverySeconds * 1_000,
    },
    { onError: (error) => app.log.error({ err: error }, 'transparency log sequencer failed; retrying') },
  );
  const dependencies = createAppDependencies(ledger, runner, adminToken.hash, settings, ledgerIdentity, transparency);
  const app = await buildApp({ ...dependencies, logger });
  await runner.catchUp();
  runner.start();
  // After the catch-up, so the sequencer loads a current tree from the projection.
  await transparency.start();
  const recovery =
    config.recoveryIntervalSeconds === 0
      ? null
      : startRecoveryTimer({ ...dependencies, privateJobFlows: privateJobEnvironment(dependencies) }, {
          intervalMs: config.recoveryIntervalSeconds * 1_000,
          windows: defaultRecoveryWindows,
          now: () => new Date(),
          onError: (error) => app.log.error({ err: error }, 'stale-reservation recovery failed; it runs again at the next interval'),
        });
  const url = await app.listen({ host: config.host, port: config.port });
  return {
    app,
    url,
    adminTokenPath: adminToken.path,
    async stop() {
      await app.close();
      await recovery?.stop();
      await transparency.stop();
      await runner.stop();
      await ledger.close();
      if (server?.owned) await server.stop();
    },
  };
}
