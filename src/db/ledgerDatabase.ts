import { Kysely, PostgresDialect } from 'kysely';
import type pg from 'pg';
import { projectionMigrations, type ProjectionTables } from '../../projections/tables.ts';
import { PostgresEventStore, type PostgresEventStoreOptions } from '../eventStore/postgres/postgresEventStore.ts';
import { eventStoreMigrations } from '../eventStore/postgres/schema.ts';
import { credentialMigrations } from '../credentials/customerTokens.ts';
import { gatewayKeyCredentialMigrations } from '../credentials/gatewayKeys.ts';
import { nodeRouteMigrations } from '../router/nodeRoutes.ts';
import { privateEnvelopeMigrations } from '../privateJobs/envelopeStore.ts';
import { migrate } from './migrate.ts';
import { createPool } from './pool.ts';

export const allMigrations = [
  ...eventStoreMigrations,
  ...projectionMigrations,
  ...credentialMigrations,
  ...gatewayKeyCredentialMigrations,
  ...nodeRouteMigrations,
  ...privateEnvelopeMigrations,
];

export interface LedgerDatabase {
  pool: pg.Pool;
  db: Kysely<ProjectionTables>;
  store: PostgresEventStore;
  close(): Promise<void>;
}

/**
 * Opens one PostgreSQL database for the whole ledger: the event log, the projections and the
 * credential hashes share a pool, and migrations run before anything else touches it.
 */
export async function openLedgerDatabase(
  connectionString: string,
  options: { poolSize?: number; store?: PostgresEventStoreOptions; onError?: (error: Error) => void } = {},
): Promise<LedgerDatabase> {
  const pool = createPool({ connectionString, max: options.poolSize ?? 10, onError: options.onError });
  try {
    await migrate(pool, allMigrations);
  } catch (error) {
    await pool.end();
    throw error;
  }
  const db = new Kysely<ProjectionTables>({ dialect: new PostgresDialect({ pool }) });
  const store = new PostgresEventStore(pool, options.store);
  return {
    pool,
    db,
    store,
    async close() {
      await store.close();
      // Kysely ends the pool only if a query went through it, so the pool is ended here as well.
      await db.destroy();
      if (!(pool as pg.Pool & { ended?: boolean }).ended) await pool.end();
    },
  };
}
