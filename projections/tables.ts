import type { ColumnType } from 'kysely';
import type { Migration } from '../src/db/migrate.ts';

/**
 * Read-model tables. Wei columns are numeric(78,0) (uint256 and its negation fit) and read back
 * as decimal strings; positions are bigint.
 */
type Wei = ColumnType<string, string, string>;

export interface ProjectionTables {
  projection_checkpoints: { name: string; position: bigint };
  customer_balances: {
    customer_id: string;
    balance_wei: Wei;
    reserved_wei: Wei;
    available_wei: Wei;
    last_position: bigint;
    created_at: Date;
    updated_at: Date;
  };
  ledger_accounts: { account: string; balance_wei: Wei; last_position: bigint };
  ledger_entries: {
    entry_id: string;
    customer_id: string;
    position: bigint;
    kind: string;
    job_id: string | null;
    receipt_hash: string | null;
    amount_wei: Wei;
    balance_after_wei: Wei;
    reserved_after_wei: Wei;
    created_at: Date;
  };
}

export const projectionMigrations: Migration[] = [
  {
    id: '0100_projections',
    sql: `
      CREATE TABLE projection_checkpoints (name text PRIMARY KEY, position bigint NOT NULL);
      CREATE TABLE customer_balances (
        customer_id   text PRIMARY KEY,
        balance_wei   numeric(78,0) NOT NULL,
        reserved_wei  numeric(78,0) NOT NULL,
        available_wei numeric(78,0) NOT NULL,
        last_position bigint NOT NULL,
        created_at    timestamptz NOT NULL,
        updated_at    timestamptz NOT NULL,
        CHECK (available_wei >= 0 AND reserved_wei >= 0)
      );
      CREATE TABLE ledger_accounts (
        account       text PRIMARY KEY,
        balance_wei   numeric(79,0) NOT NULL,
        last_position bigint NOT NULL
      );
      CREATE TABLE ledger_entries (
        entry_id           text PRIMARY KEY,
        customer_id        text NOT NULL,
        position           bigint NOT NULL,
        kind               text NOT NULL,
        job_id             text,
        receipt_hash       text,
        amount_wei         numeric(78,0) NOT NULL,
        balance_after_wei  numeric(78,0) NOT NULL,
        reserved_after_wei numeric(78,0) NOT NULL,
        created_at         timestamptz NOT NULL
      );
      CREATE INDEX ledger_entries_customer_position ON ledger_entries (customer_id, position DESC, entry_id DESC);
    `,
  },
];

/** Tables a rebuild empties; credentials and other non-projected tables are never listed here. */
export const projectedTables = ['customer_balances', 'ledger_accounts', 'ledger_entries'] as const;
