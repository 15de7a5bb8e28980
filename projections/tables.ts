import type { ColumnType } from 'kysely';
import type { Migration } from '../src/db/migrate.ts';

/**
 * Read-model tables. Wei columns are numeric(78,0) (uint256 and its negation fit) and read back
 * as decimal strings; positions are bigint.
 */
type Wei = ColumnType<string, string, string>;

export interface ProjectionTables extends GatewayKeyTables, NodeTables, JobTables, PayoutTables, TransparencyTables, OperatorTables, PrivateJobTables {
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

export interface GatewayKeyTables {
  gateway_keys: {
    key_id: string;
    customer_id: string;
    scopes: string[];
    allowed_models: string[] | null;
    spend_cap_wei: Wei | null;
    spend_cap_window_seconds: number | null;
    status: 'active' | 'revoked';
    created_at: Date;
    revoked_at: Date | null;
    last_position: bigint;
  };
}

export interface NodeTables {
  nodes: { node_id: string; public_key_ed25519: string; key_id: string; queue_health: string; enrolled_at: Date; last_position: bigint };
  node_model_profiles: {
    node_id: string;
    model_id: string;
    status: string;
    runtime_kind: string;
    route_tier: string;
    network_eligible: boolean;
    paid_route_eligible: boolean;
    benchmark_verified: boolean;
  };
  observed_benchmarks: { node_id: string; model_id: string; observed_at: Date; tokens_per_second: number; ttft_ms: number; last_position: bigint };
  model_prices: {
    model_id: string;
    prompt_price_per_million_wei: Wei;
    completion_price_per_million_wei: Wei;
    policy_version: string;
    last_position: bigint;
  };
}

export interface JobTables {
  jobs: {
    job_id: string;
    customer_id: string;
    key_id: string;
    model_id: string;
    node_id: string | null;
    stream: boolean;
    status: string;
    billing_status: string;
    quoted_price_wei: Wei;
    reserved_price_wei: Wei;
    debited_price_wei: Wei | null;
    payout_price_wei: Wei | null;
    policy_version: string;
    receipt_hash: string | null;
    failure_reason: string | null;
    created_at: Date;
    completed_at: Date | null;
    last_position: bigint;
  };
  receipts: {
    receipt_hash: string;
    job_id: string;
    node_id: string;
    model_id: string;
    node_key_id: string;
    node_public_key: string;
    signature_ed25519: string;
    receipt_canonical: string;
    status: string;
    received_at: Date;
    batch_id: string | null;
    position: bigint;
    ledger_key_id: string | null;
    ledger_countersignature: string | null;
    debited_price_wei: Wei | null;
    payout_price_wei: Wei | null;
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

projectionMigrations.push({
  id: '0101_gateway_keys',
  sql: `
    CREATE TABLE gateway_keys (
      key_id                   text PRIMARY KEY,
      customer_id              text NOT NULL,
      scopes                   text[] NOT NULL,
      allowed_models           text[],
      spend_cap_wei            numeric(78,0),
      spend_cap_window_seconds integer,
      status                   text NOT NULL,
      created_at               timestamptz NOT NULL,
      revoked_at               timestamptz,
      last_position            bigint NOT NULL
    );
    CREATE INDEX gateway_keys_customer ON gateway_keys (customer_id);
  `,
});

projectionMigrations.push({
  id: '0102_nodes',
  sql: `
    CREATE TABLE nodes (
      node_id text PRIMARY KEY, public_key_ed25519 text NOT NULL, key_id text NOT NULL,
      queue_health text NOT NULL, enrolled_at timestamptz NOT NULL, last_position bigint NOT NULL
    );
    CREATE TABLE node_model_profiles (
      node_id text NOT NULL, model_id text NOT NULL, status text NOT NULL, runtime_kind text NOT NULL,
      route_tier text NOT NULL, network_eligible boolean NOT NULL, paid_route_eligible boolean NOT NULL,
      benchmark_verified boolean NOT NULL, PRIMARY KEY (node_id, model_id)
    );
    CREATE TABLE observed_benchmarks (
      node_id text NOT NULL, model_id text NOT NULL, observed_at timestamptz NOT NULL,
      tokens_per_second integer NOT NULL, ttft_ms integer NOT NULL, last_position bigint NOT NULL,
      PRIMARY KEY (node_id, model_id)
    );
    CREATE TABLE model_prices (
      model_id text PRIMARY KEY, prompt_price_per_million_wei numeric(78,0) NOT NULL,
      completion_price_per_million_wei numeric(78,0) NOT NULL, policy_version text NOT NULL, last_position bigint NOT NULL
    );
  `,
});

projectionMigrations.push({
  id: '0103_jobs_and_receipts',
  sql: `
    CREATE TABLE jobs (
      job_id text PRIMARY KEY, customer_id text NOT NULL, key_id text NOT NULL, model_id text NOT NULL, node_id text,
      stream boolean NOT NULL, status text NOT NULL, billing_status text NOT NULL,
      quoted_price_wei numeric(78,0) NOT NULL, reserved_price_wei numeric(78,0) NOT NULL,
      debited_price_wei numeric(78,0), payout_price_wei numeric(78,0), policy_version text NOT NULL,
      receipt_hash text, failure_reason text, created_at timestamptz NOT NULL, completed_at timestamptz,
      last_position bigint NOT NULL
    );
    CREATE INDEX jobs_customer ON jobs (customer_id, created_at DESC);
    CREATE TABLE receipts (
      receipt_hash text PRIMARY KEY, job_id text NOT NULL, node_id text NOT NULL, model_id text NOT NULL,
      node_key_id text NOT NULL, node_public_key text NOT NULL, signature_ed25519 text NOT NULL,
      receipt_canonical text NOT NULL, status text NOT NULL, received_at timestamptz NOT NULL,
      batch_id text, position bigint NOT NULL
    );
    CREATE INDEX receipts_position ON receipts (position);
  `,
});

projectionMigrations.push({
  id: '0104_receipt_countersignatures',
  sql: `
    ALTER TABLE receipts ADD COLUMN ledger_key_id text, ADD COLUMN ledger_countersignature text,
      ADD COLUMN debited_price_wei numeric(78,0), ADD COLUMN payout_price_wei numeric(78,0);
  `,
});

export interface PayoutTables {
  payout_rows: {
    payout_id: string;
    receipt_hash: string;
    job_id: string;
    node_id: string;
    amount_wei: Wei;
    status: 'pending' | 'batched' | 'finalized';
    batch_id: string | null;
    leaf_index: number | null;
    accrued_position: bigint;
    accrued_at: Date;
    event_id: string;
    last_position: bigint;
  };
  payout_batches: {
    batch_id: string;
    status: 'created' | 'submitted' | 'finalized' | 'reset';
    payout_count: number;
    total_amount_wei: Wei;
    merkle_root: string;
    leaf_version: string;
    cutoff_position: bigint;
    cutoff_time: Date | null;
    node_filter: string | null;
    transaction_hash: string | null;
    block_number: bigint | null;
    created_at: Date;
    submitted_at: Date | null;
    finalized_at: Date | null;
    reset_at: Date | null;
    create_reason: string | null;
    submit_reason: string | null;
    finalize_reason: string | null;
    reset_reason: string | null;
    position: bigint;
    last_position: bigint;
  };
  payout_batch_leaves: {
    batch_id: string;
    leaf_index: number;
    payout_id: string;
    receipt_hash: string;
    job_id: string;
    node_id: string;
    amount_wei: Wei;
  };
  treasury_captures: {
    job_id: string;
    node_id: string;
    customer_debit_wei: Wei;
    node_payout_wei: Wei;
    protocol_fee_wei: Wei;
    captured_at: Date;
    position: bigint;
  };
}

projectionMigrations.push({
  id: '0106_payouts',
  sql: `
    CREATE TABLE payout_rows (
      payout_id text PRIMARY KEY, receipt_hash text NOT NULL UNIQUE, job_id text NOT NULL, node_id text NOT NULL,
      amount_wei numeric(78,0) NOT NULL, status text NOT NULL, batch_id text, leaf_index integer,
      accrued_position bigint NOT NULL, accrued_at timestamptz NOT NULL, event_id text NOT NULL, last_position bigint NOT NULL
    );
    CREATE INDEX payout_rows_status_position ON payout_rows (status, accrued_position);
    CREATE INDEX payout_rows_batch ON payout_rows (batch_id);
    CREATE INDEX payout_rows_job ON payout_rows (job_id);
    CREATE INDEX payout_rows_accrued_at ON payout_rows (accrued_at);
    CREATE TABLE payout_batches (
      batch_id text PRIMARY KEY, status text NOT NULL, payout_count integer NOT NULL, total_amount_wei numeric(78,0) NOT NULL,
      merkle_root text NOT NULL, leaf_version text NOT NULL, cutoff_position bigint NOT NULL, cutoff_time timestamptz,
      node_filter text, transaction_hash text, block_number bigint, created_at timestamptz NOT NULL,
      submitted_at timestamptz, finalized_at timestamptz, reset_at timestamptz, create_reason text, submit_reason text,
      finalize_reason text, reset_reason text, position bigint NOT NULL, last_position bigint NOT NULL
    );
    CREATE INDEX payout_batches_position ON payout_batches (position DESC);
    CREATE TABLE payout_batch_leaves (
      batch_id text NOT NULL, leaf_index integer NOT NULL, payout_id text NOT NULL, receipt_hash text NOT NULL,
      job_id text NOT NULL, node_id text NOT NULL, amount_wei numeric(78,0) NOT NULL, PRIMARY KEY (batch_id, leaf_index)
    );
    CREATE TABLE treasury_captures (
      job_id text PRIMARY KEY, node_id text NOT NULL, customer_debit_wei numeric(78,0) NOT NULL,
      node_payout_wei numeric(78,0) NOT NULL, protocol_fee_wei numeric(78,0) NOT NULL, captured_at timestamptz NOT NULL,
      position bigint NOT NULL
    );
    CREATE INDEX treasury_captures_captured_at ON treasury_captures (captured_at);
    CREATE INDEX treasury_captures_position ON treasury_captures (position DESC);
  `,
});

/** The transparency log of accepted receipts: its leaves in log order and its signed checkpoints. */
export interface TransparencyTables {
  transparency_leaves: { leaf_index: bigint; receipt_hash: string; leaf_hash: string; accepted_position: bigint; position: bigint };
  transparency_checkpoints: { tree_size: bigint; root_hash: string; note: string; position: bigint };
}

projectionMigrations.push({
  id: '0105_transparency',
  sql: `
    CREATE TABLE transparency_leaves (
      leaf_index bigint PRIMARY KEY, receipt_hash text NOT NULL UNIQUE, leaf_hash text NOT NULL,
      accepted_position bigint NOT NULL, position bigint NOT NULL
    );
    CREATE TABLE transparency_checkpoints (
      tree_size bigint PRIMARY KEY, root_hash text NOT NULL, note text NOT NULL, position bigint NOT NULL
    );
  `,
});

/** Tables a rebuild empties; credentials and other non-projected tables are never listed here. */
export interface OperatorTables {
  traffic_pauses: { target_kind: string; target_id: string; paused: boolean; reason: string; changed_at: Date; last_position: bigint };
  node_receipts: {
    receipt_hash: string;
    node_id: string;
    job_id: string;
    origin: string;
    receipt_canonical: string;
    signature_ed25519: string;
    node_key_id: string;
    recorded_at: Date;
    position: bigint;
  };
}

projectionMigrations.push({
  id: '0108_operator_controls',
  sql: `
    CREATE TABLE traffic_pauses (
      target_kind text NOT NULL, target_id text NOT NULL, paused boolean NOT NULL, reason text NOT NULL,
      changed_at timestamptz NOT NULL, last_position bigint NOT NULL, PRIMARY KEY (target_kind, target_id)
    );
  `,
});

projectionMigrations.push({
  id: '0109_node_receipts',
  sql: `
    CREATE TABLE node_receipts (
      receipt_hash text PRIMARY KEY, node_id text NOT NULL, job_id text NOT NULL, origin text NOT NULL,
      receipt_canonical text NOT NULL, signature_ed25519 text NOT NULL, node_key_id text NOT NULL,
      recorded_at timestamptz NOT NULL, position bigint NOT NULL
    );
    CREATE INDEX node_receipts_node ON node_receipts (node_id, position);
  `,
});

/** Private inference jobs (no envelope, no plaintext: see src/privateJobs/envelopeStore.ts) and node transport keys. */
export interface PrivateJobTables {
  private_jobs: {
    job_id: string;
    customer_id: string;
    node_id: string;
    model_id: string;
    command_id: string;
    status: string;
    billing_status: string;
    quoted_price_wei: Wei;
    reserved_price_wei: Wei;
    debited_price_wei: Wei | null;
    payout_price_wei: Wei | null;
    policy_version: string;
    transport_key_id: string;
    request_envelope_sha256: string;
    response_envelope_sha256: string | null;
    receipt_hash: string | null;
    failure_reason: string | null;
    claim_deadline: Date;
    result_deadline: Date | null;
    created_at: Date;
    claimed_at: Date | null;
    ended_at: Date | null;
    envelopes_purged_at: Date | null;
    updated_at: Date;
    last_position: bigint;
  };
  node_transport_keys: {
    node_id: string;
    key_id: string;
    public_key_x25519: string;
    registration_payload: string;
    registration_signature: string;
    registered_at: Date;
    last_position: bigint;
  };
}

projectionMigrations.push({
  id: '0107_private_jobs',
  sql: `
    CREATE TABLE private_jobs (
      job_id text PRIMARY KEY, customer_id text NOT NULL, node_id text NOT NULL, model_id text NOT NULL, command_id text NOT NULL,
      status text NOT NULL, billing_status text NOT NULL, quoted_price_wei numeric(78,0) NOT NULL,
      reserved_price_wei numeric(78,0) NOT NULL, debited_price_wei numeric(78,0), payout_price_wei numeric(78,0),
      policy_version text NOT NULL, transport_key_id text NOT NULL, request_envelope_sha256 text NOT NULL,
      response_envelope_sha256 text, receipt_hash text, failure_reason text, claim_deadline timestamptz NOT NULL,
      result_deadline timestamptz, created_at timestamptz NOT NULL, claimed_at timestamptz, ended_at timestamptz,
      envelopes_purged_at timestamptz, updated_at timestamptz NOT NULL, last_position bigint NOT NULL
    );
    CREATE INDEX private_jobs_node_queue ON private_jobs (node_id, created_at) WHERE status = 'queued';
    CREATE INDEX private_jobs_open ON private_jobs (status, updated_at) WHERE status IN ('queued', 'claimed', 'awaiting-receipt');
    CREATE INDEX private_jobs_purgeable ON private_jobs (ended_at) WHERE envelopes_purged_at IS NULL;
    CREATE TABLE node_transport_keys (
      node_id text PRIMARY KEY, key_id text NOT NULL, public_key_x25519 text NOT NULL, registration_payload text NOT NULL,
      registration_signature text NOT NULL, registered_at timestamptz NOT NULL, last_position bigint NOT NULL
    );
  `,
});

export const projectedTables = ['customer_balances', 'ledger_accounts', 'ledger_entries', 'gateway_keys', 'nodes',
  'node_model_profiles', 'observed_benchmarks', 'model_prices', 'jobs', 'receipts',
  'payout_rows', 'payout_batches', 'payout_batch_leaves', 'treasury_captures',
  'transparency_leaves', 'transparency_checkpoints', 'traffic_pauses', 'node_receipts',
  'private_jobs', 'node_transport_keys'] as const;
