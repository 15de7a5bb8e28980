import type pg from 'pg';
import type { Migration } from '../db/migrate.ts';
import { hashSecret } from './secrets.ts';

/**
 * Gateway key hashes, outside the exported log like customer token hashes. A key is found by the
 * SHA-256 of its secret (an index lookup on a hash of a 256-bit secret leaks nothing useful about
 * timing); revocation is recorded here at once, so it takes effect before any projection runs.
 */
export const gatewayKeyCredentialMigrations: Migration[] = [
  {
    id: '0201_gateway_key_credentials',
    sql: `
      CREATE TABLE gateway_key_credentials (
        key_id      text PRIMARY KEY,
        customer_id text NOT NULL,
        token_hash  bytea NOT NULL UNIQUE,
        created_at  timestamptz NOT NULL DEFAULT now(),
        revoked_at  timestamptz
      );
    `,
  },
];

export interface GatewayKeyCredential {
  keyId: string;
  customerId: string;
}

export function gatewayKeyCredentialStore(pool: pg.Pool) {
  return {
    async save(keyId: string, customerId: string, secret: string): Promise<void> {
      await pool.query('INSERT INTO gateway_key_credentials (key_id, customer_id, token_hash) VALUES ($1, $2, $3)', [
        keyId,
        customerId,
        hashSecret(secret),
      ]);
    },
    async revoke(keyId: string): Promise<void> {
      await pool.query('UPDATE gateway_key_credentials SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL', [keyId]);
    },
    async find(secret: string): Promise<GatewayKeyCredential | null> {
      const result = await pool.query<{ key_id: string; customer_id: string }>(
        'SELECT key_id, customer_id FROM gateway_key_credentials WHERE token_hash = $1 AND revoked_at IS NULL',
        [hashSecret(secret)],
      );
      const row = result.rows[0];
      return row === undefined ? null : { keyId: row.key_id, customerId: row.customer_id };
    },
  };
}

export type GatewayKeyCredentialStore = ReturnType<typeof gatewayKeyCredentialStore>;
