import type { FastifyInstance } from 'fastify';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { createAppDependencies } from '../../src/composition.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { hashSecret } from '../../src/credentials/secrets.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import { buildApp, defaultSettings, type AppDependencies, type AppSettings } from '../../src/http/app.ts';
import type { TestPostgres } from './postgres.ts';
import { TransparencyLog } from '../../src/transparency/sequencer.ts';
import { defaultTransparencySettings, type TransparencySettings } from '../../src/transparency/settings.ts';

export interface TestLedger {
  app: FastifyInstance;
  ledger: LedgerDatabase;
  runner: ProjectionRunner;
  /** What the app was built from, for tests that drive a component beside the HTTP surface. */
  dependencies: AppDependencies;
  /** Built always; following the log and publishing checkpoints only with the `transparency` option. */
  transparency: TransparencyLog;
  adminToken: string;
  close(): Promise<void>;
}

export const testAdminToken = 'b3iq_admin_test-token-for-specs-only';
/** The ledger's countersigning key in tests; the service keeps its own in DIR/ledger-key.pem. */
export const ledgerIdentity = generateIdentity();

/** A real ledger on a fresh database of `server`: store, live projections and the app. */
export async function startTestLedger(
  server: TestPostgres,
  options: {
    settings?: Partial<AppSettings>;
    logger?: Parameters<typeof buildApp>[0]['logger'];
    transparency?: Partial<TransparencySettings>;
    /** The app's clock; real time when absent. */
    now?: () => Date;
  } = {},
): Promise<TestLedger> {
  const ledger = await openLedgerDatabase(await server.createDatabase());
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
  const transparency = new TransparencyLog(
    ledger.store,
    ledger.db,
    ledgerIdentity,
    { ...defaultTransparencySettings(ledgerIdentity), ...options.transparency },
    { onError: (error) => process.stderr.write(`transparency log: ${error.stack ?? error.message}\n`) },
  );
  const dependencies = createAppDependencies(
    ledger,
    runner,
    hashSecret(testAdminToken),
    { ...defaultSettings, ...options.settings },
    ledgerIdentity,
    transparency,
  );
  const app = await buildApp({ ...dependencies, logger: options.logger, ...(options.now === undefined ? {} : { now: options.now }) });
  runner.start();
  if (options.transparency !== undefined) await transparency.start();
  return {
    app,
    ledger,
    runner,
    dependencies,
    transparency,
    adminToken: testAdminToken,
    async close() {
      await app.close();
      await transparency.stop();
      await runner.stop();
      await ledger.close();
    },
  };
}

export async function createCustomer(ledger: TestLedger): Promise<{ customerId: string; customerToken: string }> {
  const response = await ledger.app.inject({
    method: 'POST',
    url: '/v1/admin/customers',
    headers: { 'x-b3iq-admin-token': ledger.adminToken },
  });
  if (response.statusCode !== 201) throw new Error(`create customer failed: ${response.statusCode} ${response.body}`);
  const body = response.json<{ customer_id: string; customer_token: string }>();
  return { customerId: body.customer_id, customerToken: body.customer_token };
}
