import type pg from 'pg';
import type { Migration } from '../db/migrate.ts';
import { hashSecret, secretMatches } from './secrets.ts';

/**
 * Customer token hashes live outside the event log on purpose: events are exported and audited,
 * and token hashes must never reach an export (DESIGN §7). The log records that a customer exists;
 * this table only answers "is this the customer's token".
 */
export const credentialMigrations: Migration[] = [
  {
    id: '0200_customer_credentials',
    sql: `
      CREATE TABLE customer_credentials (
        customer_id text PRIMARY KEY,
        token_hash  bytea NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz
      );
    `,
  },
];

export async function saveCustomerToken(pool: pg.Pool | pg.PoolClient, customerId: string, token: string): Promise<void> {
  await pool.query('INSERT INTO customer_credentials (customer_id, token_hash) VALUES ($1, $2)', [customerId, hashSecret(token)]);
}

export async function customerTokenMatches(pool: pg.Pool, customerId: string, token: string): Promise<boolean> {
  const result = await pool.query<{ token_hash: Buffer }>(
    'SELECT token_hash FROM customer_credentials WHERE customer_id = $1 AND revoked_at IS NULL',
    [customerId],
  );
  const row = result.rows[0];
  return row !== undefined && secretMatches(token, row.token_hash);
}
