import type pg from 'pg';
import { canonicalJson } from '../../canonicalJson.ts';
import {
  EventIdReused,
  VersionConflict,
  type AppendOptions,
  type AppendResult,
  type EventStore,
  type ExpectedVersion,
  type NewEvent,
  type ReadAllOptions,
  type StoredEvent,
  type StreamAppend,
  type Subscription,
} from '../port.ts';
import { AppendConnection, runInOrder, type Statement } from './appendConnection.ts';
import { checkStatements, logStateOf, planBatch, prepareEvent, writeStatements, type BatchGroup, type BatchRequest } from './appendBatch.ts';
import { eventColumns, toStoredEvent, type EventRow } from './eventRow.ts';
import { PostgresSubscription } from './subscription.ts';

export { toStoredEvent } from './eventRow.ts';

interface AppendRequest {
  parts: BatchGroup;
  resolve: (results: AppendResult[]) => void;
  reject: (error: Error) => void;
}

/** How a batch reaches the server, and whether the batch's statements begin and commit its transaction. */
interface WriteSession {
  client: pg.ClientBase;
  pipelined: boolean;
  ownsTransaction: boolean;
}

export interface PostgresEventStoreOptions {
  /** Upper bound on append requests that share one transaction. */
  maxRequestsPerCommit?: number;
  /** How long a subscriber waits for a notification before it polls anyway. */
  pollIntervalMs?: number;
}

const uniqueViolation = '23505';

/**
 * The PostgreSQL adapter. Appends from every caller in this process are queued and committed in
 * shared transactions (group commit): one flush takes the global append lock, checks each
 * request's expected version and event ids, chains the hashes in order and inserts all rows with
 * one statement (appendBatch.ts), on a pipelined connection of its own (appendConnection.ts).
 * Because positions are assigned while the lock is held and the lock is released only at commit,
 * commit order equals position order, and a reader can never see position N+1 before position N.
 */
export class PostgresEventStore implements EventStore {
  readonly logTable = 'b3iq_events';
  private readonly pending: AppendRequest[] = [];
  private flushing = false;
  private readonly maxRequestsPerCommit: number;
  private readonly pollIntervalMs: number;
  private readonly subscriptions = new Set<PostgresSubscription>();
  private readonly appendConnection: AppendConnection;

  constructor(
    private readonly pool: pg.Pool,
    options: PostgresEventStoreOptions = {},
  ) {
    this.maxRequestsPerCommit = options.maxRequestsPerCommit ?? 256;
    this.pollIntervalMs = options.pollIntervalMs ?? 250;
    this.appendConnection = new AppendConnection(pool.options);
  }

  /** Async so that invalid input rejects the returned promise, as every other failure does, instead of throwing. */
  async append(streamName: string, events: NewEvent[], options: AppendOptions): Promise<AppendResult> {
    const [result] = await this.appendMulti([{ streamName, events, ...options }]);
    return result!;
  }

  /** Queued like any append: the parts travel through the group commit as one request. */
  async appendMulti(parts: StreamAppend[]): Promise<AppendResult[]> {
    const prepared = prepareParts(parts);
    return new Promise((resolve, reject) => {
      this.pending.push({ parts: prepared, resolve, reject });
      this.scheduleFlush();
    });
  }

  async readStream(streamName: string, options: { fromVersion?: bigint } = {}): Promise<StoredEvent[]> {
    const result = await this.pool.query<EventRow>(
      `SELECT ${eventColumns} FROM b3iq_events WHERE stream_name = $1 AND stream_version > $2 ORDER BY stream_version`,
      [streamName, String(options.fromVersion ?? 0n)],
    );
    return result.rows.map(toStoredEvent);
  }

  async readAll(options: ReadAllOptions): Promise<StoredEvent[]> {
    const limit = Math.min(Math.max(options.limit ?? 1000, 1), 10_000);
    const result =
      options.types === undefined
        ? await this.pool.query<EventRow>(`SELECT ${eventColumns} FROM b3iq_events WHERE position > $1 ORDER BY position LIMIT $2`, [
            String(options.fromPosition),
            limit,
          ])
        : await this.pool.query<EventRow>(
            `SELECT ${eventColumns} FROM b3iq_events WHERE position > $1 AND type = ANY($3::text[]) ORDER BY position LIMIT $2`,
            [String(options.fromPosition), limit, options.types],
          );
    return result.rows.map(toStoredEvent);
  }

  async readEventsById(eventIds: string[]): Promise<StoredEvent[]> {
    if (eventIds.length === 0) return [];
    const result = await this.pool.query<EventRow>(
      `SELECT ${eventColumns} FROM b3iq_events WHERE event_id = ANY($1::text[]) ORDER BY position`,
      [eventIds],
    );
    return result.rows.map(toStoredEvent);
  }

  async headPosition(): Promise<bigint> {
    const result = await this.pool.query<{ position: bigint | null }>('SELECT max(position) AS position FROM b3iq_events');
    return result.rows[0]?.position ?? 0n;
  }

  subscribe(fromPosition: bigint, options: { batchSize?: number } = {}): Subscription {
    const batchSize = Math.min(Math.max(options.batchSize ?? 1000, 1), 10_000);
    const subscription = new PostgresSubscription(this, this.pool, fromPosition, this.pollIntervalMs, batchSize, () =>
      this.subscriptions.delete(subscription),
    );
    this.subscriptions.add(subscription);
    return subscription;
  }

  async close(): Promise<void> {
    await Promise.all([...this.subscriptions].map((subscription) => subscription.close()));
    while (this.flushing) await new Promise((resolve) => setTimeout(resolve, 5));
    await this.appendConnection.close();
  }

  /**
   * Appends inside a transaction the caller owns. The caller must have begun the transaction; this
   * takes the append lock, so the caller's transaction blocks every other appender until it ends.
   * Tests use it to hold a transaction open while others try to commit.
   */
  async appendInTransaction(
    client: pg.PoolClient,
    streamName: string,
    events: NewEvent[],
    expectedVersion: ExpectedVersion,
  ): Promise<AppendResult> {
    const outcomes = await this.writeBatch({ client, pipelined: false, ownsTransaction: false }, [prepareParts([{ streamName, events, expectedVersion }])]);
    const outcome = outcomes[0];
    if (outcome === undefined) throw new Error('Invariant violated: one outcome per request');
    if (outcome instanceof Error) throw outcome;
    return outcome[0]!;
  }

  private scheduleFlush(): void {
    if (this.flushing) return;
    this.flushing = true;
    setImmediate(() => void this.flushLoop());
  }

  private async flushLoop(): Promise<void> {
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.maxRequestsPerCommit);
        await this.flushBatch(batch);
      }
    } finally {
      this.flushing = false;
      if (this.pending.length > 0) this.scheduleFlush();
    }
  }

  private async flushBatch(batch: AppendRequest[]): Promise<void> {
    let outcomes: Array<AppendResult[] | Error>;
    try {
      outcomes = await this.commitBatch(batch.map((request) => request.parts));
    } catch (error) {
      // A shared transaction failed as a whole. Retrying each request alone isolates the one that
      // caused it, so one bad append cannot fail the unrelated appends it was batched with.
      if (batch.length > 1) {
        for (const request of batch) await this.flushBatch([request]);
        return;
      }
      outcomes = [this.translateError(error as Error & { code?: string; constraint?: string }, batch[0]!.parts)];
    }
    batch.forEach((request, index) => {
      const outcome = outcomes[index];
      if (outcome === undefined) request.reject(new Error('Invariant violated: one outcome per request'));
      else if (outcome instanceof Error) request.reject(outcome);
      else request.resolve(outcome);
    });
  }

  private async commitBatch(batch: BatchGroup[]): Promise<Array<AppendResult[] | Error>> {
    const client = await this.appendConnection.acquire();
    try {
      return await this.writeBatch({ client, pipelined: true, ownsTransaction: true }, batch);
    } catch (error) {
      // A connection that cannot roll back is broken; drop it so the next flush opens a new one.
      await client.query('ROLLBACK').catch(() => this.appendConnection.discard(client));
      throw error;
    }
  }

  /**
   * Validates every request against the log under the append lock, then inserts the accepted ones.
   * The statements go out in two pipelined groups, so a flush waits for the server twice: once
   * for the lock and what the batch must be checked against, once for the insert and the commit.
   */
  private async writeBatch(session: WriteSession, batch: BatchGroup[]): Promise<Array<AppendResult[] | Error>> {
    const begin: Statement[] = session.ownsTransaction ? [{ text: 'BEGIN' }] : [];
    const reads = await runInOrder(session.client, session.pipelined, [...begin, ...checkStatements(batch)]);
    const plan = planBatch(batch, logStateOf(reads.slice(begin.length)));
    const commit: Statement[] = session.ownsTransaction ? [{ text: 'COMMIT' }] : [];
    const written = await runInOrder(session.client, session.pipelined, [...writeStatements(plan), ...commit]);
    // COMMIT of a transaction that failed part-way answers ROLLBACK instead of raising an error.
    if (session.ownsTransaction && written.at(-1)?.command !== 'COMMIT') throw new Error('The append transaction was rolled back');
    return plan.outcomes;
  }

  private translateError(error: Error & { code?: string; constraint?: string }, parts: BatchGroup): Error {
    if (error.code !== uniqueViolation) return error;
    const first = parts[0]!;
    if (error.constraint === 'b3iq_events_stream_version_key') {
      return new VersionConflict(first.streamName, first.expectedVersion, null);
    }
    if (error.constraint === 'b3iq_events_event_id_key') {
      return new EventIdReused(parts.flatMap((part) => part.events.map((event) => event.eventId)).join(','));
    }
    return error;
  }
}

/** The expected last event as a flush compares it: normalised exactly as a stored event is. */
function expectedEventOf(expected: Pick<NewEvent, 'eventId' | 'type' | 'data' | 'metadata'>): NonNullable<BatchRequest['expectedLastEvent']> {
  const prepared = prepareEvent(expected);
  return { eventId: prepared.eventId, type: prepared.type, canonicalData: canonicalJson(prepared.data), canonicalMetadata: canonicalJson(prepared.metadata) };
}

/** Checks and normalises an append's parts when it is queued, so a bad one never reaches a flush. */
function prepareParts(parts: StreamAppend[]): BatchRequest[] {
  if (parts.length === 0) throw new TypeError('append needs at least one stream');
  if (new Set(parts.map((part) => part.streamName)).size !== parts.length) throw new TypeError('each stream may appear once in an append');
  const ids = parts.flatMap((part) => part.events.map((event) => event.eventId));
  if (new Set(ids).size !== ids.length) throw new TypeError('an event id may appear once in an append');
  return parts.map((part) => {
    if (part.events.length === 0) throw new TypeError('append needs at least one event');
    const expected = part.expectedLastEvent;
    if (expected !== undefined && (typeof part.expectedVersion !== 'bigint' || part.expectedVersion <= 0n)) {
      throw new TypeError('expectedLastEvent needs a positive expectedVersion');
    }
    return {
      streamName: part.streamName,
      events: part.events.map(prepareEvent),
      expectedVersion: part.expectedVersion,
      ...(expected === undefined
        ? {}
        : { expectedLastEvent: expectedEventOf(expected) }),
    };
  });
}
