import { sql } from 'kysely';
import type { EventStore, StoredEvent, Subscription } from '../src/eventStore/port.ts';
import type { Projection, ProjectionDb, ProjectionTransaction } from './projection.ts';

export interface RunnerOptions {
  batchSize?: number;
  onError?: (error: Error) => void;
}

export type ProgressListener = (appliedPosition: bigint, headPosition: bigint) => void;

const maxBackoffMs = 5_000;

/**
 * Feeds the global order to the projections. Each batch and the projections' new checkpoints are
 * written in one transaction, so a crash mid-batch neither loses nor doubles anything. Checkpoint
 * rows are locked for the transaction, which also keeps two runners on one database (two servers,
 * or a rebuild beside a live server) from applying the same batch twice.
 */
export class ProjectionRunner {
  private appliedPosition = 0n;
  private waiters: Array<{ position: bigint; resolve: (reached: boolean) => void }> = [];
  private subscription: Subscription | null = null;
  private running: Promise<void> | null = null;
  private stopped = false;
  private readonly batchSize: number;

  constructor(
    private readonly store: EventStore,
    private readonly db: ProjectionDb,
    private readonly projections: readonly Projection[],
    private readonly options: RunnerOptions = {},
  ) {
    // Large batches pay off when catching up: each batch loads and saves every row it touches once,
    // so a rebuild with 10,000-event batches does a fraction of the row work of 2,000-event ones.
    // A live follower's batches stay as small as the appends that arrive.
    this.batchSize = Math.min(Math.max(options.batchSize ?? 10_000, 1), 10_000);
  }

  get position(): bigint {
    return this.appliedPosition;
  }

  /** Applies one contiguous batch; events at or below a projection's checkpoint are skipped. */
  async applyBatch(events: readonly StoredEvent[]): Promise<void> {
    const first = events[0];
    const last = events[events.length - 1];
    if (first === undefined || last === undefined) return;
    await this.applyRange(this.projections, first.position - 1n, last.position, events);
    this.advance(last.position);
  }

  /**
   * Applies `events`, which must be every event the projections read in the range (from, through]
   * of the global order, and carries their checkpoints to `through`. A projection whose checkpoint
   * is below `from` would skip events: this happens to a live runner while another runner
   * rebuilds. Refusing rolls the batch back; the follower resubscribes from the checkpoint.
   */
  private async applyRange(projections: readonly Projection[], from: bigint, through: bigint, events: readonly StoredEvent[]): Promise<void> {
    await this.db.transaction().execute(async (transaction) => {
      // Read models are rebuilt from the log, so their commits need not wait for the disk: a crash
      // loses at most the last few batches, checkpoint included, and the runner applies them again.
      await sql`SET LOCAL synchronous_commit = off`.execute(transaction);
      const checkpoints = await lockCheckpoints(transaction, projections);
      for (const projection of projections) {
        const checkpoint = checkpoints.get(projection.name) ?? 0n;
        if (checkpoint >= through) continue;
        if (checkpoint < from) throw new Error(`${projection.name} is at position ${checkpoint}; a batch from ${from + 1n} would skip events`);
        const types = projection.eventTypes === undefined ? null : new Set(projection.eventTypes);
        const fresh = events.filter((event) => event.position > checkpoint && (types === null || types.has(event.type)));
        if (fresh.length > 0) await projection.apply(transaction, fresh);
      }
      await sql`UPDATE projection_checkpoints SET position = GREATEST(position, ${String(through)}::bigint)
                 WHERE name = ANY(${projections.map((projection) => projection.name)}::text[])`.execute(transaction);
    });
  }

  /** Applies everything up to the head as it is now, reading the next batch while applying one. */
  async catchUp(onProgress?: ProgressListener): Promise<bigint> {
    let position = await this.readCheckpoint();
    this.advance(position);
    const head = await this.store.headPosition();
    let next = this.store.readAll({ fromPosition: position, limit: this.batchSize });
    for (;;) {
      const batch = await next;
      const last = batch[batch.length - 1];
      if (last === undefined) return position;
      next = this.store.readAll({ fromPosition: last.position, limit: this.batchSize });
      await this.applyBatch(batch);
      position = last.position;
      onProgress?.(position, head > position ? head : position);
    }
  }

  /** Follows live appends in the background until stop(); failures back off and resume. */
  start(): void {
    if (this.running !== null) return;
    this.stopped = false;
    this.running = this.follow();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.subscription?.close();
    await this.running;
    this.running = null;
    for (const waiter of this.waiters.splice(0)) waiter.resolve(false);
  }

  /** Resolves true once the projections include `position`, false on timeout or stop. */
  waitFor(position: bigint, timeoutMs: number): Promise<boolean> {
    if (this.appliedPosition >= position) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        position,
        resolve: (reached: boolean) => {
          clearTimeout(timer);
          resolve(reached);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((entry) => entry !== waiter);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /**
   * Empties the projected tables, resets the checkpoints and replays the whole log. When the log is
   * a table of the same database, projections with a set-based replay are recomputed by the
   * database in the same transaction as the truncation; the others read only the event types they
   * project. Whatever is appended meanwhile is then applied event by event.
   */
  async rebuild(onProgress?: ProgressListener): Promise<bigint> {
    const head = await this.store.headPosition();
    const log = await this.logTableInDatabase();
    const setWise = log === null ? [] : this.projections.filter((projection) => projection.replay !== undefined);
    const byType = this.projections.filter((projection) => !setWise.includes(projection));
    await this.db.transaction().execute((transaction) => resetProjections(transaction, byType));
    this.appliedPosition = 0n;
    onProgress?.(0n, head);
    if (log !== null) await this.replaySetWise(setWise, log, head);
    await this.replayByType(byType, head, onProgress);
    return this.catchUp(onProgress);
  }

  /**
   * Each set-wise projection empties its tables, replays and sets its checkpoint in a transaction
   * of its own, so a projection's rows and checkpoint always agree. Two run at once, on two
   * connections: the database works on both while each projection's tables are locked only for
   * its own replay. A projection starts once those it replays after have finished.
   */
  private async replaySetWise(projections: readonly Projection[], log: string, head: bigint): Promise<void> {
    const pending = [...projections];
    const replayed = new Set(projections.map((projection) => projection.name));
    const finished = new Set<string>();
    // A dependency outside this rebuild's set-wise projections is already in place.
    const ready = (projection: Projection) => (projection.replayAfter ?? []).every((name) => finished.has(name) || !replayed.has(name));
    let failure: { error: unknown } | null = null;
    const lane = async (): Promise<void> => {
      while (pending.length > 0 && failure === null) {
        const index = pending.findIndex(ready);
        if (index === -1) {
          // Everything left waits for a replay the other lane is running.
          await new Promise((resolve) => setTimeout(resolve, 10));
          continue;
        }
        const [projection] = pending.splice(index, 1);
        try {
          await this.db.transaction().execute(async (transaction) => {
            await resetProjections(transaction, [projection!]);
            // Sorting and hashing a million rows needs more than the default 4 MB to stay off disk.
            await sql`SET LOCAL work_mem = '256MB'`.execute(transaction);
            await projection!.replay!(transaction, log, head);
            await sql`UPDATE projection_checkpoints SET position = ${String(head)}::bigint WHERE name = ${projection!.name}`.execute(transaction);
          });
        } catch (error) {
          // The other lane stops after its current replay; the failed projection stays as it was.
          failure ??= { error };
          return;
        }
        finished.add(projection!.name);
      }
    };
    await Promise.all([lane(), lane()]);
    if (failure !== null) throw (failure as { error: unknown }).error;
  }

  /** Brings `projections` from position 0 to `head`, reading only the event types they project. */
  private async replayByType(projections: readonly Projection[], head: bigint, onProgress?: ProgressListener): Promise<void> {
    if (projections.length === 0) return;
    const types = projections.some((projection) => projection.eventTypes === undefined)
      ? undefined
      : [...new Set(projections.flatMap((projection) => projection.eventTypes ?? []))];
    let from = 0n;
    let next = this.store.readAll({ fromPosition: from, limit: this.batchSize, types });
    while (from < head) {
      const batch = (await next).filter((event) => event.position <= head);
      // A full page covers the log up to its last event; a short one covers it up to the head.
      const through = batch.length === this.batchSize ? batch[batch.length - 1]!.position : head;
      if (through < head) next = this.store.readAll({ fromPosition: through, limit: this.batchSize, types });
      await this.applyRange(projections, from, through, batch);
      from = through;
      onProgress?.(from, head);
    }
  }

  /** The log's table when it is visible from the read models' database, else null. */
  private async logTableInDatabase(): Promise<string | null> {
    const table = this.store.logTable;
    if (table === undefined) return null;
    const found = await sql<{ found: string | null }>`SELECT to_regclass(${table})::text AS found`.execute(this.db);
    return found.rows[0]?.found === null || found.rows[0] === undefined ? null : table;
  }

  private async follow(): Promise<void> {
    let backoffMs = 100;
    while (!this.stopped) {
      try {
        const from = await this.readCheckpoint();
        this.advance(from);
        this.subscription = this.store.subscribe(from, { batchSize: this.batchSize });
        for await (const batch of this.subscription.batches()) {
          await this.applyBatch(batch);
          backoffMs = 100;
        }
      } catch (error) {
        if (this.stopped) return;
        this.options.onError?.(error as Error);
        await this.subscription?.close();
        await new Promise((resolve) => setTimeout(resolve, backoffMs));
        backoffMs = Math.min(backoffMs * 2, maxBackoffMs);
      }
    }
  }

  /** The position every projection has reached: the smallest checkpoint. */
  private async readCheckpoint(): Promise<bigint> {
    const rows = await this.db
      .selectFrom('projection_checkpoints')
      .select(['name', 'position'])
      .where('name', 'in', this.projections.map((projection) => projection.name))
      .execute();
    if (rows.length < this.projections.length) return 0n;
    return rows.reduce((lowest, row) => (row.position < lowest ? row.position : lowest), rows[0]?.position ?? 0n);
  }

  private advance(position: bigint): void {
    if (position > this.appliedPosition) this.appliedPosition = position;
    const reached = this.waiters.filter((waiter) => waiter.position <= this.appliedPosition);
    this.waiters = this.waiters.filter((waiter) => waiter.position > this.appliedPosition);
    for (const waiter of reached) waiter.resolve(true);
  }
}

/** Locks the projections' checkpoints, empties their tables and puts their checkpoints back to 0. */
async function resetProjections(transaction: ProjectionTransaction, projections: readonly Projection[]): Promise<void> {
  if (projections.length === 0) return;
  await lockCheckpoints(transaction, projections);
  const tables = projections.flatMap((projection) => projection.tables);
  await sql`TRUNCATE ${sql.join(tables.map((table) => sql.table(table)))}`.execute(transaction);
  await sql`UPDATE projection_checkpoints SET position = 0
             WHERE name = ANY(${projections.map((projection) => projection.name)}::text[])`.execute(transaction);
}

async function lockCheckpoints(transaction: ProjectionTransaction, projections: readonly Projection[]): Promise<Map<string, bigint>> {
  const names = projections.map((projection) => projection.name);
  await sql`INSERT INTO projection_checkpoints (name, position) SELECT unnest(${names}::text[]), 0
            ON CONFLICT (name) DO NOTHING`.execute(transaction);
  const rows = await sql<{ name: string; position: bigint }>`
    SELECT name, position FROM projection_checkpoints WHERE name = ANY(${names}::text[]) ORDER BY name FOR UPDATE`.execute(transaction);
  return new Map(rows.rows.map((row) => [row.name, row.position]));
}
