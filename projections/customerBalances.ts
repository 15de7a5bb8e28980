import { sql } from 'kysely';
import type { CustomerAccountEvent } from '../src/events/customerAccount.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import { accountEventOf, customerAccountEventTypes } from './accountEvents.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';

interface BalanceRow {
  customerId: string;
  availableWei: bigint;
  reservedWei: bigint;
  lastPosition: bigint;
  createdAt: Date;
  updatedAt: Date;
}

/** Balance, reserved and available funds per customer: what GET /v1/billing/account serves. */
export const customerBalancesProjection: Projection = {
  name: 'customer_balances',
  tables: ['customer_balances'],
  eventTypes: customerAccountEventTypes,
  async apply(transaction, events) {
    const accountEvents = events.flatMap((stored) => {
      const event = accountEventOf(stored);
      return event === null ? [] : [{ stored, event }];
    });
    if (accountEvents.length === 0) return;
    const rows = await loadRows(transaction, [...new Set(accountEvents.map(({ event }) => event.data.customer_id))]);
    for (const { stored, event } of accountEvents) applyEvent(rows, stored, event);
    await saveRows(transaction, [...rows.values()]);
  },
  async replay(transaction, log, through) {
    // Each created customer's sums of the deltas balanceChange() gives, over the events after its
    // creation; updated_at is the time of the last of them.
    await sql`
      WITH created AS (
        SELECT DISTINCT ON (data->>'customer_id') data->>'customer_id' AS customer_id, position, recorded_at
          FROM ${sql.table(log)} WHERE type = 'CustomerCreated' AND position <= ${String(through)}::bigint
         ORDER BY data->>'customer_id', position),
      moved AS (
        SELECT e.data->>'customer_id' AS customer_id,
               sum(CASE e.type WHEN 'FundsDeposited' THEN (e.data->>'amount_wei')::numeric
                               WHEN 'FundsReserved' THEN -(e.data->>'amount_wei')::numeric
                               WHEN 'ReservationCaptured' THEN (e.data->>'released_wei')::numeric
                               ELSE (e.data->>'amount_wei')::numeric END) AS available_wei,
               sum(CASE e.type WHEN 'FundsDeposited' THEN 0
                               WHEN 'FundsReserved' THEN (e.data->>'amount_wei')::numeric
                               WHEN 'ReservationCaptured' THEN -(e.data->>'reserved_wei')::numeric
                               ELSE -(e.data->>'amount_wei')::numeric END) AS reserved_wei,
               max(e.position) AS last_position
          FROM ${sql.table(log)} e JOIN created c ON c.customer_id = e.data->>'customer_id' AND e.position > c.position
         WHERE e.type IN ('FundsDeposited', 'FundsReserved', 'ReservationCaptured', 'ReservationReleased')
           AND e.position <= ${String(through)}::bigint
         GROUP BY 1)
      INSERT INTO customer_balances (customer_id, balance_wei, reserved_wei, available_wei, last_position, created_at, updated_at)
      SELECT c.customer_id, coalesce(m.available_wei + m.reserved_wei, 0), coalesce(m.reserved_wei, 0), coalesce(m.available_wei, 0),
             coalesce(m.last_position, c.position), c.recorded_at, coalesce(last.recorded_at, c.recorded_at)
        FROM created c LEFT JOIN moved m USING (customer_id)
        LEFT JOIN ${sql.table(log)} last ON last.position = m.last_position`.execute(transaction);
  },
};

function applyEvent(rows: Map<string, BalanceRow>, stored: StoredEvent, event: CustomerAccountEvent): void {
  const customerId = event.data.customer_id;
  const row = rows.get(customerId);
  if (event.type === 'CustomerCreated') {
    if (row === undefined) {
      const at = stored.recordedAt;
      rows.set(customerId, { customerId, availableWei: 0n, reservedWei: 0n, lastPosition: stored.position, createdAt: at, updatedAt: at });
    }
    return;
  }
  if (row === undefined || stored.position <= row.lastPosition) return;
  const { availableDelta, reservedDelta } = balanceChange(event);
  row.availableWei += availableDelta;
  row.reservedWei += reservedDelta;
  row.lastPosition = stored.position;
  row.updatedAt = stored.recordedAt;
}

function balanceChange(event: CustomerAccountEvent): { availableDelta: bigint; reservedDelta: bigint } {
  switch (event.type) {
    case 'CustomerCreated':
      return { availableDelta: 0n, reservedDelta: 0n };
    case 'FundsDeposited':
      return { availableDelta: BigInt(event.data.amount_wei), reservedDelta: 0n };
    case 'FundsReserved':
      return { availableDelta: -BigInt(event.data.amount_wei), reservedDelta: BigInt(event.data.amount_wei) };
    case 'ReservationCaptured':
      return { availableDelta: BigInt(event.data.released_wei), reservedDelta: -BigInt(event.data.reserved_wei) };
    case 'ReservationReleased':
      return { availableDelta: BigInt(event.data.amount_wei), reservedDelta: -BigInt(event.data.amount_wei) };
  }
}

async function loadRows(transaction: ProjectionTransaction, customerIds: string[]): Promise<Map<string, BalanceRow>> {
  const found = await transaction
    .selectFrom('customer_balances')
    .select(['customer_id', 'available_wei', 'reserved_wei', 'last_position', 'created_at', 'updated_at'])
    .where('customer_id', 'in', customerIds)
    .execute();
  return new Map(
    found.map((row) => [
      row.customer_id,
      {
        customerId: row.customer_id,
        availableWei: BigInt(row.available_wei),
        reservedWei: BigInt(row.reserved_wei),
        lastPosition: row.last_position,
        createdAt: row.created_at,
        updatedAt: row.updated_at,
      },
    ]),
  );
}

async function saveRows(transaction: ProjectionTransaction, rows: BalanceRow[]): Promise<void> {
  await sql`
    INSERT INTO customer_balances (customer_id, balance_wei, reserved_wei, available_wei, last_position, created_at, updated_at)
    SELECT * FROM unnest(
      ${rows.map((row) => row.customerId)}::text[],
      ${rows.map((row) => String(row.availableWei + row.reservedWei))}::numeric[],
      ${rows.map((row) => String(row.reservedWei))}::numeric[],
      ${rows.map((row) => String(row.availableWei))}::numeric[],
      ${rows.map((row) => String(row.lastPosition))}::bigint[],
      ${rows.map((row) => row.createdAt.toISOString())}::timestamptz[],
      ${rows.map((row) => row.updatedAt.toISOString())}::timestamptz[])
    ON CONFLICT (customer_id) DO UPDATE SET
      balance_wei = excluded.balance_wei, reserved_wei = excluded.reserved_wei, available_wei = excluded.available_wei,
      last_position = excluded.last_position, updated_at = excluded.updated_at`.execute(transaction);
}
