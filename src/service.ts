import type { FastifyInstance } from 'fastify';
import { allProjections } from '../projections/index.ts';
import { ProjectionRunner } from '../projections/runner.ts';
import { loadAdminToken } from './config/adminToken.ts';
import type { ServiceConfig } from './config/config.ts';
import { join } from 'node:path';
import { createAppDependencies } from './composition.ts';
import { loadOrCreateIdentity } from './receipts/ed25519.ts';
import { openEmbeddedPostgres, type DatabaseServer } from './db/embeddedPostgres.ts';
import { openLedgerDatabase, type LedgerDatabase } from './db/ledgerDatabase.ts';
import { buildApp, defaultSettings, redactedPaths } from './http/app.ts';

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
  const app = await buildApp({ ...createAppDependencies(ledger, runner, adminToken.hash, settings, ledgerIdentity), logger });
  await runner.catchUp();
  runner.start();
  const url = await app.listen({ host: config.host, port: config.port });
  return {
    app,
    url,
    adminTokenPath: adminToken.path,
    async stop() {
      await app.close();
      await runner.stop();
      await ledger.close();
      if (server?.owned) await server.stop();
    },
  };
}
