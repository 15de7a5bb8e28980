import { sql } from 'kysely';
import type { JsonObject } from '../src/eventStore/port.ts';
import type { Projection } from './projection.ts';

interface AccountRow {
  balanceWei: bigint;
  lastPosition: bigint;
}

/**
 * Every ledger account's balance, projected from the transfers each money event carries. It knows
 * nothing of the business rules, so it also checks them: the accounts must always sum to zero.
 */
export const ledgerAccountsProjection: Projection = {
  name: 'ledger_accounts',
  tables: ['ledger_accounts'],
  async apply(transaction, events) {
    const moves = events.flatMap((event) =>
      readTransfers(event.data).map((transfer) => ({ position: event.position, ...transfer })),
    );
    if (moves.length === 0) return;
    const names = [...new Set(moves.flatMap((move) => [move.from, move.to]))];
    const found = await transaction
      .selectFrom('ledger_accounts')
      .select(['account', 'balance_wei', 'last_position'])
      .where('account', 'in', names)
      .execute();
    const rows = new Map<string, AccountRow>(
      found.map((row) => [row.account, { balanceWei: BigInt(row.balance_wei), lastPosition: row.last_position }]),
    );
    const touched = new Map<string, AccountRow>();
    for (const move of moves) {
      shift(rows, touched, move.from, -move.amountWei, move.position);
      shift(rows, touched, move.to, move.amountWei, move.position);
    }
    const entries = [...touched.entries()];
    await sql`
      INSERT INTO ledger_accounts (account, balance_wei, last_position)
      SELECT * FROM unnest(${entries.map(([name]) => name)}::text[],
                           ${entries.map(([, row]) => String(row.balanceWei))}::numeric[],
                           ${entries.map(([, row]) => String(row.lastPosition))}::bigint[])
      ON CONFLICT (account) DO UPDATE SET balance_wei = excluded.balance_wei, last_position = excluded.last_position`.execute(
      transaction,
    );
  },
  async replay(transaction, log, through) {
    // Both legs of every transfer of every event, summed per account. The set-returning functions
    // sit in select lists rather than in FROM, which spares a materialised set per event; the WHERE
    // below them runs first, so only arrays reach jsonb_array_elements.
    await sql`
      INSERT INTO ledger_accounts (account, balance_wei, last_position)
      SELECT account, sum(delta_wei), max(position) FROM (
        SELECT position, unnest(ARRAY[transfer->>'from', transfer->>'to']) AS account,
               unnest(ARRAY[-(transfer->>'amount_wei')::numeric, (transfer->>'amount_wei')::numeric]) AS delta_wei
          FROM (SELECT e.position, jsonb_array_elements(e.data->'transfers') AS transfer
                  FROM ${sql.table(log)} e
                 WHERE jsonb_typeof(e.data->'transfers') = 'array' AND e.position <= ${String(through)}::bigint) AS transfers) AS legs
       GROUP BY account`.execute(transaction);
  },
};

function shift(rows: Map<string, AccountRow>, touched: Map<string, AccountRow>, account: string, deltaWei: bigint, position: bigint): void {
  let row = rows.get(account);
  if (row === undefined) {
    row = { balanceWei: 0n, lastPosition: 0n };
    rows.set(account, row);
  }
  // An event already folded into this row (a replayed batch) must not move it again. Both legs of
  // a transfer come from the same event, so they are skipped or applied together.
  if (position < row.lastPosition || (position === row.lastPosition && !touched.has(account))) return;
  row.balanceWei += deltaWei;
  row.lastPosition = position;
  touched.set(account, row);
}

function readTransfers(data: JsonObject): Array<{ from: string; to: string; amountWei: bigint }> {
  const transfers = data['transfers'];
  if (!Array.isArray(transfers)) return [];
  return transfers.map((transfer) => {
    const { from, to, amount_wei: amount } = transfer as { from: string; to: string; amount_wei: string };
    return { from, to, amountWei: BigInt(amount) };
  });
}
