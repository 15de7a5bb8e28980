import type pg from 'pg';
import type { LedgerAudit } from './ledgerAudit.ts';
import type { StateSnapshot } from './summary.ts';
import { compareTransparency } from './transparencyCompare.ts';

/**
 * The read models an auditor relies on, against the state the audit recomputed from the log at
 * each projection's checkpoint: customer balances, every ledger account, the receipts table per
 * node (count, debited, payout), the jobs table per billing status, the payout rows per node and
 * the treasury's capture totals (customer debits, node payouts, protocol fees), and the transparency
 * log's leaves and checkpoints row by row (src/audit/transparencyCompare.ts). Every difference becomes a
 * `projection.<table>` finding, listed rather than summed up.
 */

export const comparedProjections = ['customer_balances', 'ledger_accounts', 'jobs', 'payouts', 'transparency'] as const;
type ComparedProjection = (typeof comparedProjections)[number];

export interface ProjectionCheckpoint {
  name: ComparedProjection;
  position: number;
}

/** The checkpoints of the compared projections; none when the database holds only a log. */
export async function projectionsToCompare(client: pg.PoolClient, headPosition: number): Promise<ProjectionCheckpoint[]> {
  const present = await client.query<{ present: boolean }>("SELECT to_regclass('projection_checkpoints') IS NOT NULL AS present");
  if (present.rows[0]?.present !== true) return [];
  const rows = await client.query<{ name: string; position: bigint }>(
    'SELECT name, position FROM projection_checkpoints WHERE name = ANY($1::text[])',
    [comparedProjections],
  );
  const positions = new Map(rows.rows.map((row) => [row.name, Number(row.position)]));
  // A projection that never ran has no checkpoint row: its tables must be empty, as at position 0.
  return comparedProjections.map((name) => ({ name, position: Math.min(positions.get(name) ?? 0, headPosition + 1) }));
}

export async function compareProjections(client: pg.PoolClient, checkpoints: readonly ProjectionCheckpoint[], audit: LedgerAudit): Promise<void> {
  for (const checkpoint of checkpoints) {
    const differ = (check: string, expected: string, found: string) =>
      audit.findings.add({ where: 'projection', position: null, check: `projection.${check}`, expected, found });
    const snapshot = audit.snapshotAt(checkpoint.position);
    if (snapshot === undefined) {
      differ(checkpoint.name, 'a checkpoint at or below the head of the log', `checkpoint at position ${checkpoint.position}`);
      continue;
    }
    if (checkpoint.name === 'customer_balances') await compareBalances(client, snapshot, differ);
    if (checkpoint.name === 'ledger_accounts') await compareAccounts(client, snapshot, differ);
    if (checkpoint.name === 'jobs') await compareJobs(client, snapshot, differ);
    if (checkpoint.name === 'payouts') await comparePayouts(client, snapshot, differ);
    if (checkpoint.name === 'transparency') {
      await compareTransparency(client, { position: checkpoint.position, ...snapshot.transparency }, audit.transparencyLog, differ);
    }
  }
}

export type Differ = (check: string, expected: string, found: string) => void;

async function compareBalances(client: pg.PoolClient, snapshot: StateSnapshot, differ: Differ): Promise<void> {
  const rows = await client.query<{ customer_id: string; available: string; reserved: string; balance: string }>(
    'SELECT customer_id, available_wei::text AS available, reserved_wei::text AS reserved, balance_wei::text AS balance FROM customer_balances',
  );
  const found = new Map(rows.rows.map((row) => [row.customer_id, row]));
  for (const customerId of snapshot.customers) {
    const availableWei = snapshot.accounts.get(`customer:${customerId}:available`) ?? 0n;
    const reservedWei = snapshot.accounts.get(`customer:${customerId}:reserved`) ?? 0n;
    const expected = `available ${availableWei}, reserved ${reservedWei}, balance ${availableWei + reservedWei}`;
    const row = found.get(customerId);
    found.delete(customerId);
    if (row === undefined) differ('customer_balances', `customer ${customerId}: ${expected}`, 'no row');
    else if (BigInt(row.available) !== availableWei || BigInt(row.reserved) !== reservedWei || BigInt(row.balance) !== availableWei + reservedWei) {
      differ('customer_balances', `customer ${customerId}: ${expected}`, `available ${row.available}, reserved ${row.reserved}, balance ${row.balance}`);
    }
  }
  for (const customerId of found.keys()) differ('customer_balances', `no customer ${customerId}`, 'a row');
}

async function compareAccounts(client: pg.PoolClient, snapshot: StateSnapshot, differ: Differ): Promise<void> {
  const rows = await client.query<{ account: string; balance: string }>('SELECT account, balance_wei::text AS balance FROM ledger_accounts');
  let sumWei = 0n;
  const seen = new Set<string>();
  for (const row of rows.rows) {
    const balanceWei = BigInt(row.balance);
    sumWei += balanceWei;
    seen.add(row.account);
    const expected = snapshot.accounts.get(row.account);
    if (expected === undefined) differ('ledger_accounts', `no account ${row.account}`, `balance ${balanceWei}`);
    else if (expected !== balanceWei) differ('ledger_accounts', `${row.account}: ${expected} wei`, `${balanceWei} wei`);
  }
  for (const [account, balanceWei] of snapshot.accounts) {
    if (!seen.has(account)) differ('ledger_accounts', `${account}: ${balanceWei} wei`, 'no row');
  }
  if (sumWei !== 0n) differ('ledger_accounts', 'all accounts sum to 0 wei', `${sumWei} wei`);
}

async function compareJobs(client: pg.PoolClient, snapshot: StateSnapshot, differ: Differ): Promise<void> {
  const jobs = await client.query<{ status: string; count: string; debited: string; payout: string }>(
    `SELECT billing_status AS status, count(*)::text AS count, coalesce(sum(debited_price_wei), 0)::text AS debited,
            coalesce(sum(payout_price_wei), 0)::text AS payout FROM jobs GROUP BY billing_status`,
  );
  const byStatus = new Map(jobs.rows.map((row) => [row.status, row]));
  for (const [status, totals] of Object.entries(snapshot.jobTotals)) {
    const row = byStatus.get(status);
    byStatus.delete(status);
    const expected = `${totals.count} jobs, debited ${totals.debitedWei} wei, payout ${totals.payoutWei} wei`;
    const found = row === undefined ? '0 jobs, debited 0 wei, payout 0 wei' : `${row.count} jobs, debited ${row.debited} wei, payout ${row.payout} wei`;
    if (expected !== found) differ('jobs', `billing_status ${status}: ${expected}`, found);
  }
  for (const [status, row] of byStatus) differ('jobs', `no jobs with billing_status ${status}`, `${row.count} jobs`);
  const receipts = await client.query<{ node_id: string; count: string; debited: string; payout: string }>(
    `SELECT node_id, count(*)::text AS count, coalesce(sum(debited_price_wei), 0)::text AS debited,
            coalesce(sum(payout_price_wei), 0)::text AS payout FROM receipts GROUP BY node_id`,
  );
  const byNode = new Map(receipts.rows.map((row) => [row.node_id, row]));
  for (const [nodeId, totals] of snapshot.nodes) {
    const row = byNode.get(nodeId);
    byNode.delete(nodeId);
    const expected = `${totals.receipts} receipts, debited ${totals.debitedWei} wei, payout ${totals.payoutWei} wei`;
    const found = row === undefined ? '0 receipts, debited 0 wei, payout 0 wei' : `${row.count} receipts, debited ${row.debited} wei, payout ${row.payout} wei`;
    if (expected !== found) differ('receipts', `node ${nodeId}: ${expected}`, found);
  }
  for (const [nodeId, row] of byNode) differ('receipts', `no receipts of node ${nodeId}`, `${row.count} receipts`);
}

/** Payout rows accrued per node, and the treasury's capture totals, against the log's. */
async function comparePayouts(client: pg.PoolClient, snapshot: StateSnapshot, differ: Differ): Promise<void> {
  const rows = await client.query<{ node_id: string; accrued: string }>(
    'SELECT node_id, coalesce(sum(amount_wei), 0)::text AS accrued FROM payout_rows GROUP BY node_id',
  );
  const byNode = new Map(rows.rows.map((row) => [row.node_id, BigInt(row.accrued)]));
  for (const [nodeId, totals] of snapshot.nodes) {
    const found = byNode.get(nodeId) ?? 0n;
    byNode.delete(nodeId);
    if (found !== totals.accruedWei) differ('payout_rows', `node ${nodeId}: ${totals.accruedWei} wei accrued`, `${found} wei`);
  }
  for (const [nodeId, accrued] of byNode) differ('payout_rows', `no payout rows of node ${nodeId}`, `${accrued} wei`);
  const treasury = await client.query<{ debits: string; payouts: string; fees: string }>(
    `SELECT coalesce(sum(customer_debit_wei), 0)::text AS debits, coalesce(sum(node_payout_wei), 0)::text AS payouts,
            coalesce(sum(protocol_fee_wei), 0)::text AS fees FROM treasury_captures`,
  );
  const found = treasury.rows[0] ?? { debits: '0', payouts: '0', fees: '0' };
  const captured = snapshot.jobTotals.captured;
  const expected = `debits ${captured.debitedWei}, node payouts ${captured.payoutWei}, protocol fees ${captured.debitedWei - captured.payoutWei}`;
  const actual = `debits ${found.debits}, node payouts ${found.payouts}, protocol fees ${found.fees}`;
  if (expected !== actual) differ('treasury_captures', expected, actual);
}
