import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';

export interface AccountView {
  customer_id: string;
  balance_wei: string;
  reserved_wei: string;
  available_wei: string;
}

/** Reads the customer_balances projection; null when the customer is not (yet) projected. */
export async function findAccount(db: Kysely<ProjectionTables>, customerId: string): Promise<AccountView | null> {
  const row = await db
    .selectFrom('customer_balances')
    .select(['customer_id', 'balance_wei', 'reserved_wei', 'available_wei'])
    .where('customer_id', '=', customerId)
    .executeTakeFirst();
  return row ?? null;
}
