import type { Kysely, Transaction } from 'kysely';
import type { StoredEvent } from '../src/eventStore/port.ts';
import type { ProjectionTables } from './tables.ts';

export type ProjectionDb = Kysely<ProjectionTables>;
export type ProjectionTransaction = Transaction<ProjectionTables>;

/**
 * A read model. `apply` receives a batch of the global order inside the runner's transaction and
 * must be idempotent: events at or below a row's last applied position change nothing, so
 * replaying a batch twice leaves the same rows.
 */
export interface Projection {
  name: string;
  tables: readonly string[];
  /** The event types apply() reads. A rebuild reads only these from the log; all types when absent. */
  eventTypes?: readonly string[];
  apply(transaction: ProjectionTransaction, events: readonly StoredEvent[]): Promise<void>;
  /**
   * The same read model computed set-wise: fills the projection's emptied tables from every event
   * of the log table `log` (same columns as the PostgreSQL adapter's) up to `through`, in a few
   * statements run by the database. A rebuild uses it when the log lives in the read models'
   * database; it must leave exactly the rows apply() leaves, which the rebuild tests compare.
   */
  replay?(transaction: ProjectionTransaction, log: string, through: bigint): Promise<void>;
  /** Projections whose replay must have finished before this one's starts (it reads or updates their tables). */
  replayAfter?: readonly string[];
}
