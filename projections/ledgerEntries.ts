import { sql } from 'kysely';
import type { CustomerAccountEvent } from '../src/events/customerAccount.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import { accountEventOf, customerAccountEventTypes } from './accountEvents.ts';
import { loadWithoutIndexes } from './bulkLoad.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';

/** The customer-facing ledger kinds, in the vocabulary of the usage export. */
export type LedgerEntryKind = 'deposit' | 'reservation' | 'debit' | 'release';

interface Running {
  balanceWei: bigint;
  reservedWei: bigint;
  lastPosition: bigint;
}

interface EntryRow {
  entryId: string;
  customerId: string;
  position: bigint;
  kind: LedgerEntryKind;
  jobId: string | null;
  amountWei: bigint;
  balanceAfterWei: bigint;
  reservedAfterWei: bigint;
  createdAt: Date;
}

/**
 * One row per movement of a customer's money, with the balance and reservation after it: the rows
 * GET /v1/billing/usage serves. A capture is two rows, the debit and the release of the rest.
 */
export const ledgerEntriesProjection: Projection = {
  name: 'ledger_entries',
  tables: ['ledger_entries'],
  eventTypes: customerAccountEventTypes,
  async apply(transaction, events) {
    const accountEvents = events.flatMap((stored) => {
      const event = accountEventOf(stored);
      return event === null || event.type === 'CustomerCreated' ? [] : [{ stored, event }];
    });
    if (accountEvents.length === 0) return;
    const running = await loadRunning(transaction, [...new Set(accountEvents.map(({ event }) => event.data.customer_id))]);
    const rows: EntryRow[] = [];
    for (const { stored, event } of accountEvents) rows.push(...entriesFor(running, stored, event));
    if (rows.length > 0) await insertEntries(transaction, rows);
  },
  async replay(transaction, log, through) {
    // The rows entriesFor() makes, with the running sums of their deltas per customer in log order
    // (a capture's debit before the release of its remainder) as the balances after. Every money
    // event gives one row; a capture that returns a remainder gives a second, its release.
    const upTo = String(through);
    await loadWithoutIndexes(transaction, 'ledger_entries', async () => {
      await sql`
        INSERT INTO ledger_entries (entry_id, customer_id, position, kind, job_id, receipt_hash, amount_wei,
                                    balance_after_wei, reserved_after_wei, created_at)
        SELECT 'le_' || m.position || '_' || m.ordinal, m.customer_id, m.position, m.kind, m.job_id, NULL, m.amount_wei,
               sum(m.amount_wei * m.balance_sign) OVER running, sum(m.amount_wei * m.reserved_sign) OVER running, m.recorded_at
          FROM (
            SELECT e.position, e.recorded_at, e.data->>'customer_id' AS customer_id, e.data->>'job_id' AS job_id, 0 AS ordinal,
                   (CASE e.type WHEN 'ReservationCaptured' THEN e.data->>'cost_wei' ELSE e.data->>'amount_wei' END)::numeric AS amount_wei,
                   k.kind, k.balance_sign, k.reserved_sign
              FROM ${sql.table(log)} e
              JOIN (VALUES ('FundsDeposited', 'deposit', 1, 0), ('FundsReserved', 'reservation', 0, 1),
                           ('ReservationCaptured', 'debit', -1, -1), ('ReservationReleased', 'release', 0, -1))
                AS k(type, kind, balance_sign, reserved_sign) ON k.type = e.type
             WHERE e.position <= ${upTo}::bigint
            UNION ALL
            SELECT e.position, e.recorded_at, e.data->>'customer_id', e.data->>'job_id', 1, (e.data->>'released_wei')::numeric,
                   'release', 0, -1
              FROM ${sql.table(log)} e
             WHERE e.type = 'ReservationCaptured' AND e.data->>'released_wei' <> '0' AND e.position <= ${upTo}::bigint) AS m
        WINDOW running AS (PARTITION BY m.customer_id ORDER BY m.position, m.ordinal ROWS UNBOUNDED PRECEDING)`.execute(transaction);
    });
  },
};

function entriesFor(running: Map<string, Running>, stored: StoredEvent, event: CustomerAccountEvent): EntryRow[] {
  const customerId = event.data.customer_id;
  const state = running.get(customerId) ?? { balanceWei: 0n, reservedWei: 0n, lastPosition: 0n };
  running.set(customerId, state);
  if (stored.position <= state.lastPosition) return [];
  state.lastPosition = stored.position;
  const rows: EntryRow[] = [];
  const add = (kind: LedgerEntryKind, amountWei: bigint, balanceDelta: bigint, reservedDelta: bigint, jobId: string | null) => {
    state.balanceWei += balanceDelta;
    state.reservedWei += reservedDelta;
    rows.push({
      entryId: `le_${stored.position}_${rows.length}`,
      customerId,
      position: stored.position,
      kind,
      jobId,
      amountWei,
      balanceAfterWei: state.balanceWei,
      reservedAfterWei: state.reservedWei,
      createdAt: stored.recordedAt,
    });
  };
  switch (event.type) {
    case 'FundsDeposited':
      add('deposit', BigInt(event.data.amount_wei), BigInt(event.data.amount_wei), 0n, null);
      break;
    case 'FundsReserved':
      add('reservation', BigInt(event.data.amount_wei), 0n, BigInt(event.data.amount_wei), event.data.job_id);
      break;
    case 'ReservationCaptured': {
      const costWei = BigInt(event.data.cost_wei);
      const releasedWei = BigInt(event.data.released_wei);
      add('debit', costWei, -costWei, -costWei, event.data.job_id);
      if (releasedWei > 0n) add('release', releasedWei, 0n, -releasedWei, event.data.job_id);
      break;
    }
    case 'ReservationReleased':
      add('release', BigInt(event.data.amount_wei), 0n, -BigInt(event.data.amount_wei), event.data.job_id);
      break;
    case 'CustomerCreated':
      break;
  }
  return rows;
}

async function loadRunning(transaction: ProjectionTransaction, customerIds: string[]): Promise<Map<string, Running>> {
  // One index probe per customer for its latest row. DISTINCT ON would read every row of every
  // customer in the batch, so each batch of a rebuild would cost more than the one before.
  const result = await sql<{ customer_id: string; balance_after_wei: string; reserved_after_wei: string; position: bigint }>`
    SELECT c.customer_id, latest.balance_after_wei, latest.reserved_after_wei, latest.position
      FROM unnest(${customerIds}::text[]) AS c(customer_id)
      CROSS JOIN LATERAL (
        SELECT balance_after_wei, reserved_after_wei, position FROM ledger_entries e
         WHERE e.customer_id = c.customer_id
         ORDER BY e.position DESC, e.entry_id DESC LIMIT 1) AS latest`.execute(transaction);
  return new Map(
    result.rows.map((row) => [
      row.customer_id,
      { balanceWei: BigInt(row.balance_after_wei), reservedWei: BigInt(row.reserved_after_wei), lastPosition: row.position },
    ]),
  );
}

async function insertEntries(transaction: ProjectionTransaction, rows: EntryRow[]): Promise<void> {
  await sql`
    INSERT INTO ledger_entries (entry_id, customer_id, position, kind, job_id, receipt_hash, amount_wei,
                                balance_after_wei, reserved_after_wei, created_at)
    SELECT e.entry_id, e.customer_id, e.position, e.kind, e.job_id, NULL, e.amount_wei, e.balance_after_wei,
           e.reserved_after_wei, e.created_at
      FROM unnest(${rows.map((row) => row.entryId)}::text[], ${rows.map((row) => row.customerId)}::text[],
                  ${rows.map((row) => String(row.position))}::bigint[], ${rows.map((row) => row.kind)}::text[],
                  ${rows.map((row) => row.jobId)}::text[], ${rows.map((row) => String(row.amountWei))}::numeric[],
                  ${rows.map((row) => String(row.balanceAfterWei))}::numeric[],
                  ${rows.map((row) => String(row.reservedAfterWei))}::numeric[],
                  ${rows.map((row) => row.createdAt.toISOString())}::timestamptz[])
        AS e(entry_id, customer_id, position, kind, job_id, amount_wei, balance_after_wei, reserved_after_wei, created_at)
    ON CONFLICT (entry_id) DO NOTHING`.execute(transaction);
}
