import type pg from 'pg';

export interface Migration {
  /** Globally unique and ordered, e.g. "0001_events". */
  id: string;
  sql: string;
}

// One arbitrary constant shared by every process that migrates the same database.
const migrationLockKey = 7_303_411_001;

/**
 * Applies the migrations that have not run yet, each in its own transaction, under an advisory
 * lock so two processes starting at once do not race.
 */
export async function migrate(pool: pg.Pool, migrations: Migration[]): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [migrationLockKey]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS b3iq_migrations (id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = await client.query<{ id: string }>('SELECT id FROM b3iq_migrations');
    const doneIds = new Set(done.rows.map((row) => row.id));
    for (const migration of [...migrations].sort((a, b) => a.id.localeCompare(b.id))) {
      if (doneIds.has(migration.id)) continue;
      await client.query('BEGIN');
      try {
        await client.query(migration.sql);
        await client.query('INSERT INTO b3iq_migrations (id) VALUES ($1)', [migration.id]);
        await client.query('COMMIT');
      } catch (error) {
        await client.query('ROLLBACK');
        throw error;
      }
      applied.push(migration.id);
    }
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [migrationLockKey]).catch(() => undefined);
    client.release();
  }
  return applied;
}
