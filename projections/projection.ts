import type { Kysely, Transaction } from 'kysely';
import type { StoredEvent } from '../src/eventStore/port.ts';
import type { ProjectionTables } from './tables.ts';

export type ProjectionDb = Kysely<ProjectionTables>;
export type ProjectionTransaction = Transaction<ProjectionTables>;

/**
 * A read model. `apply` receives a contiguous batch of the global order inside the runner's
 * transaction and must be idempotent: events at or below a row's last applied position change
 * nothing, so replaying a batch twice leaves the same rows.
 */
export interface Projection {
  name: string;
  tables: readonly string[];
  apply(transaction: ProjectionTransaction, events: readonly StoredEvent[]): Promise<void>;
}
