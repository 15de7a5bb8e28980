/**
 * The gateway benchmark's ledger audit, run once the projections have caught up: every 200 the
 * clients received is exactly one captured job with an accepted receipt, nothing was billed that
 * no client received, no reservation is left open, the accounts sum to zero, and each customer's
 * balance is the deposit less what their captured jobs debited, and the transparency log holds
 * exactly one leaf for every accepted receipt. The log is checked as well as the read models, so a
 * projection bug cannot hide a double capture or a receipt the sequencer skipped.
 */
import type pg from 'pg';
import { verifyStoredChain } from '../src/eventStore/postgres/verifyChain.ts';

export interface LedgerCheck {
  name: string;
  ok: boolean;
  detail: string;
}

export interface ClientTally {
  /** 200 responses the clients received, warm-ups included. */
  ok: number;
  /** Every request the clients sent to the gateway. */
  sent: number;
  receiptHashes: string[];
  okWithoutReceipt: number;
}

async function one<Row extends Record<string, unknown>>(pool: pg.Pool, text: string, values: unknown[] = []): Promise<Row> {
  const result = await pool.query<Row>(text, values);
  const row = result.rows[0];
  if (row === undefined) throw new Error(`no row from: ${text}`);
  return row;
}

function check(name: string, ok: boolean, detail: string): LedgerCheck {
  return { name, ok, detail };
}

export async function auditLedger(pool: pg.Pool, tally: ClientTally, depositWei: bigint): Promise<LedgerCheck[]> {
  const checks: LedgerCheck[] = [];
  const distinct = new Set(tally.receiptHashes);
  checks.push(check('every 200 carried a receipt hash', tally.okWithoutReceipt === 0, `${tally.ok} responses, ${tally.okWithoutReceipt} without`));
  checks.push(check('receipt hashes are distinct', distinct.size === tally.receiptHashes.length, `${distinct.size} distinct of ${tally.receiptHashes.length}`));

  const jobs = await pool.query<{ billing_status: string; count: string }>('SELECT billing_status, count(*) AS count FROM jobs GROUP BY billing_status');
  const byStatus = new Map(jobs.rows.map((row) => [row.billing_status, Number(row.count)]));
  const captured = byStatus.get('captured') ?? 0;
  const summary = [...byStatus].map(([status, count]) => `${status}=${count}`).join(' ') || 'none';
  checks.push(check('captured jobs = 200 responses', captured === tally.ok, `jobs: ${summary}; 200s: ${tally.ok}`));
  checks.push(check('no reservation left open (no job still reserved)', (byStatus.get('reserved') ?? 0) === 0, summary));
  const totalJobs = [...byStatus.values()].reduce((sum, count) => sum + count, 0);
  checks.push(check('one job per request sent, none lost', totalJobs === tally.sent, `${totalJobs} jobs for ${tally.sent} requests`));

  const matched = await one<{ count: string }>(
    pool,
    `SELECT count(*) AS count FROM receipts r JOIN jobs j ON j.job_id = r.job_id
      WHERE r.receipt_hash = ANY($1::text[]) AND j.billing_status = 'captured' AND j.receipt_hash = r.receipt_hash`,
    [[...distinct]],
  );
  checks.push(check('each client receipt is a captured job', Number(matched.count) === distinct.size, `${matched.count} of ${distinct.size}`));
  const orphan = await one<{ count: string }>(pool, `SELECT count(*) AS count FROM jobs WHERE billing_status = 'captured' AND receipt_hash IS NULL`);
  checks.push(check('no capture without a receipt', Number(orphan.count) === 0, `${orphan.count} captured jobs without a receipt`));

  const captures = await one<{ events: string; jobs: string; doubled: string; cost: string | null }>(
    pool,
    `SELECT count(*) AS events, count(DISTINCT data->>'job_id') AS jobs,
            count(*) - count(DISTINCT data->>'job_id') AS doubled, sum((data->>'cost_wei')::numeric)::text AS cost
       FROM b3iq_events WHERE type = 'ReservationCaptured'`,
  );
  checks.push(check('log: no job captured twice', Number(captures.doubled) === 0, `${captures.events} ReservationCaptured events for ${captures.jobs} jobs`));
  const resolved = await one<{ reserved: string; resolved: string }>(
    pool,
    `SELECT count(*) FILTER (WHERE type = 'FundsReserved') AS reserved,
            count(*) FILTER (WHERE type IN ('ReservationCaptured', 'ReservationReleased')) AS resolved
       FROM b3iq_events WHERE type IN ('FundsReserved', 'ReservationCaptured', 'ReservationReleased')`,
  );
  checks.push(check('log: every reservation resolved once', resolved.reserved === resolved.resolved, `${resolved.reserved} reserved, ${resolved.resolved} resolved`));

  const balances = await one<{ reserved: string | null; customers: string }>(
    pool,
    'SELECT sum(reserved_wei)::text AS reserved, count(*) AS customers FROM customer_balances',
  );
  checks.push(check('customer_balances.reserved_wei = 0', BigInt(balances.reserved ?? '0') === 0n, `sum over ${balances.customers} customers: ${balances.reserved}`));
  const accounts = await one<{ total: string | null; count: string }>(pool, 'SELECT sum(balance_wei)::text AS total, count(*) AS count FROM ledger_accounts');
  checks.push(check('sum of ledger_accounts.balance_wei = 0', BigInt(accounts.total ?? '0') === 0n, `sum over ${accounts.count} accounts: ${accounts.total}`));

  const mismatched = await pool.query<{ customer_id: string; balance_wei: string; debited: string }>(
    `SELECT c.customer_id, c.balance_wei::text, coalesce(sum(j.debited_price_wei), 0)::text AS debited
       FROM customer_balances c LEFT JOIN jobs j ON j.customer_id = c.customer_id AND j.billing_status = 'captured'
      GROUP BY c.customer_id, c.balance_wei
     HAVING c.balance_wei <> $1::numeric - coalesce(sum(j.debited_price_wei), 0)`,
    [String(depositWei)],
  );
  checks.push(check('balance = deposit − Σ debited, per customer', mismatched.rows.length === 0, `${mismatched.rows.length} customers differ`));
  const debited = await one<{ total: string | null }>(pool, `SELECT sum(debited_price_wei)::text AS total FROM jobs WHERE billing_status = 'captured'`);
  checks.push(check('Σ debited (jobs) = Σ cost_wei (log)', (debited.total ?? '0') === (captures.cost ?? '0'), `${debited.total} wei`));

  const leaves = await one<{ leaves: string; next_index: string; receipts: string; clients: string }>(
    pool,
    `SELECT (SELECT count(*) FROM transparency_leaves) AS leaves,
            (SELECT coalesce(max(leaf_index) + 1, 0) FROM transparency_leaves) AS next_index,
            (SELECT count(*) FROM receipts) AS receipts,
            (SELECT count(*) FROM transparency_leaves WHERE receipt_hash = ANY($1::text[])) AS clients`,
    [[...distinct]],
  );
  checks.push(
    check(
      'transparency log: one leaf per accepted receipt, none missing',
      leaves.leaves === leaves.receipts && leaves.next_index === leaves.leaves && Number(leaves.clients) === distinct.size,
      `${leaves.leaves} leaves (indexes 0..${BigInt(leaves.next_index) - 1n}) for ${leaves.receipts} accepted receipts; ${leaves.clients} of ${distinct.size} client receipts logged`,
    ),
  );
  const logged = await one<{ accepted: string; logged: string; distinct_logged: string }>(
    pool,
    `SELECT count(*) FILTER (WHERE type = 'ReceiptAccepted') AS accepted, count(*) FILTER (WHERE type = 'ReceiptLogged') AS logged,
            count(DISTINCT data->>'receipt_hash') FILTER (WHERE type = 'ReceiptLogged') AS distinct_logged
       FROM b3iq_events WHERE type IN ('ReceiptAccepted', 'ReceiptLogged')`,
  );
  checks.push(
    check(
      'log: every ReceiptAccepted has one ReceiptLogged',
      logged.accepted === logged.logged && logged.logged === logged.distinct_logged,
      `${logged.accepted} accepted, ${logged.logged} logged (${logged.distinct_logged} distinct receipts)`,
    ),
  );

  const started = performance.now();
  const chain = await verifyStoredChain(pool);
  const chainMs = Math.round(performance.now() - started);
  checks.push(check('hash chain verifies', chain.ok, `${chain.checked} events in ${chainMs} ms`));
  return checks;
}
