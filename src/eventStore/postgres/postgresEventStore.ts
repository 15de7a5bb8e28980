import type pg from 'pg';
import { canonicalJson } from '../../canonicalJson.ts';
import { chainHash, genesisHash } from '../hashChain.ts';
import {
  EventIdReused,
  VersionConflict,
  type AppendResult,
  type EventStore,
  type ExpectedVersion,
  type JsonObject,
  type NewEvent,
  type ReadAllOptions,
  type StoredEvent,
  type Subscription,
} from '../port.ts';
import { appendChannel, appendLockKey } from './schema.ts';
import { PostgresSubscription } from './subscription.ts';

interface AppendRequest {
  streamName: string;
  events: NewEvent[];
  expectedVersion: ExpectedVersion;
  resolve: (result: AppendResult) => void;
  reject: (error: Error) => void;
}

interface EventRow {
  position: bigint;
  event_id: string;
  stream_name: string;
  stream_version: bigint;
  type: string;
  data: JsonObject;
  metadata: JsonObject;
  recorded_at: Date;
  hash: string;
}

export interface PostgresEventStoreOptions {
  /** Upper bound on append requests that share one transaction. */
  maxRequestsPerCommit?: number;
  /** How long a subscriber waits for a notification before it polls anyway. */
  pollIntervalMs?: number;
}

const eventColumns = 'position, event_id, stream_name, stream_version, type, data, metadata, recorded_at, hash';
const uniqueViolation = '23505';

export function toStoredEvent(row: EventRow): StoredEvent {
  return {
    position: row.position,
    eventId: row.event_id,
    streamName: row.stream_name,
    streamVersion: row.stream_version,
    type: row.type,
    data: row.data,
    metadata: row.metadata,
    recordedAt: row.recorded_at,
    hash: row.hash,
  };
}

/**
 * The PostgreSQL adapter. Appends from every caller in this process are queued and committed in
 * shared transactions (group commit): one flush takes the global append lock, checks each
 * request's expected version and event ids, chains the hashes in order and inserts all rows with
 * one statement. Because positions are assigned while the lock is held and the lock is released
 * only at commit, commit order equals position order, and a reader can never see position N+1
 * before position N.
 */
export class PostgresEventStore implements EventStore {
  private readonly pending: AppendRequest[] = [];
  private flushing = false;
  private readonly maxRequestsPerCommit: number;
  private readonly pollIntervalMs: number;
  private readonly subscriptions = new Set<PostgresSubscription>();

  constructor(
    private readonly pool: pg.Pool,
    options: PostgresEventStoreOptions = {},
  ) {
    this.maxRequestsPerCommit = options.maxRequestsPerCommit ?? 256;
    this.pollIntervalMs = options.pollIntervalMs ?? 250;
  }

  append(streamName: string, events: NewEvent[], options: { expectedVersion: ExpectedVersion }): Promise<AppendResult> {
    if (events.length === 0) return Promise.reject(new TypeError('append needs at least one event'));
    for (const event of events) assertStorable(event);
    return new Promise((resolve, reject) => {
      this.pending.push({ streamName, events, expectedVersion: options.expectedVersion, resolve, reject });
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
    const result = await this.pool.query<EventRow>(
      `SELECT ${eventColumns} FROM b3iq_events WHERE position > $1 ORDER BY position LIMIT $2`,
      [String(options.fromPosition), limit],
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
    const outcomes = await this.writeBatch(client, [{ streamName, events, expectedVersion, resolve: () => {}, reject: () => {} }]);
    const outcome = outcomes[0];
    if (outcome === undefined) throw new Error('Invariant violated: one outcome per request');
    if (outcome instanceof Error) throw outcome;
    return outcome;
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
    let outcomes: Array<AppendResult | Error>;
    try {
      outcomes = await this.commitBatch(batch);
    } catch (error) {
      // A shared transaction failed as a whole. Retrying each request alone isolates the one that
      // caused it, so one bad append cannot fail the unrelated appends it was batched with.
      if (batch.length > 1) {
        for (const request of batch) await this.flushBatch([request]);
        return;
      }
      outcomes = [this.translateError(error as Error & { code?: string; constraint?: string }, batch[0]!)];
    }
    batch.forEach((request, index) => {
      const outcome = outcomes[index];
      if (outcome === undefined) request.reject(new Error('Invariant violated: one outcome per request'));
      else if (outcome instanceof Error) request.reject(outcome);
      else request.resolve(outcome);
    });
  }

  private async commitBatch(batch: AppendRequest[]): Promise<Array<AppendResult | Error>> {
    const client = await this.pool.connect();
    let released = false;
    try {
      await client.query('BEGIN');
      const outcomes = await this.writeBatch(client, batch);
      await client.query('COMMIT');
      return outcomes;
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: Error) => {
        // A connection that cannot roll back is broken; destroy it rather than return it to the pool.
        client.release(rollbackError);
        released = true;
      });
      throw error;
    } finally {
      if (!released) client.release();
    }
  }

  /** Validates every request against the log under the append lock, then inserts the accepted ones. */
  private async writeBatch(client: pg.PoolClient, batch: AppendRequest[]): Promise<Array<AppendResult | Error>> {
    await client.query('SELECT pg_advisory_xact_lock($1)', [appendLockKey]);
    const head = await client.query<{ position: bigint; hash: string }>(
      'SELECT position, hash FROM b3iq_events ORDER BY position DESC LIMIT 1',
    );
    let position = head.rows[0]?.position ?? 0n;
    let previousHash = head.rows[0]?.hash ?? genesisHash;
    const existing = await this.loadExistingEvents(client, batch);
    const versions = await this.loadStreamVersions(client, batch);
    const written = new Map<string, StoredEvent>();
    const rows: StoredEvent[] = [];
    const recordedAt = new Date();

    const outcomes = batch.map((request): AppendResult | Error => {
      const replay = findReplay(request, existing, written);
      if (replay !== null) return replay;
      const currentVersion = versions.get(request.streamName) ?? 0n;
      if (!versionMatches(request.expectedVersion, currentVersion)) {
        return new VersionConflict(request.streamName, request.expectedVersion, currentVersion);
      }
      const stored = request.events.map((event, index): StoredEvent => {
        position += 1n;
        const fields = {
          position,
          eventId: event.eventId,
          streamName: request.streamName,
          streamVersion: currentVersion + BigInt(index + 1),
          type: event.type,
          data: normalizeJson(event.data),
          metadata: normalizeJson(event.metadata ?? {}),
          recordedAt,
        };
        previousHash = chainHash(previousHash, fields);
        return { ...fields, hash: previousHash };
      });
      for (const event of stored) written.set(event.eventId, event);
      rows.push(...stored);
      const last = stored[stored.length - 1]!;
      versions.set(request.streamName, last.streamVersion);
      return { nextStreamVersion: last.streamVersion, lastPosition: last.position, replayed: false, events: stored };
    });

    if (rows.length > 0) {
      await insertRows(client, rows);
      await client.query('SELECT pg_notify($1, $2)', [appendChannel, String(position)]);
    }
    return outcomes;
  }

  private async loadExistingEvents(client: pg.PoolClient, batch: AppendRequest[]): Promise<Map<string, StoredEvent>> {
    const ids = batch.flatMap((request) => request.events.map((event) => event.eventId));
    const result = await client.query<EventRow>(
      `SELECT ${eventColumns} FROM b3iq_events WHERE event_id = ANY($1::text[])`,
      [ids],
    );
    return new Map(result.rows.map((row) => [row.event_id, toStoredEvent(row)]));
  }

  /** One index probe per stream, so the cost does not grow with the length of a stream. */
  private async loadStreamVersions(client: pg.PoolClient, batch: AppendRequest[]): Promise<Map<string, bigint>> {
    const names = [...new Set(batch.map((request) => request.streamName))];
    const result = await client.query<{ stream_name: string; version: bigint | null }>(
      `SELECT s.name AS stream_name,
              (SELECT stream_version FROM b3iq_events e WHERE e.stream_name = s.name
                ORDER BY stream_version DESC LIMIT 1) AS version
         FROM unnest($1::text[]) AS s(name)`,
      [names],
    );
    return new Map(result.rows.map((row) => [row.stream_name, row.version ?? 0n]));
  }

  private translateError(error: Error & { code?: string; constraint?: string }, request: AppendRequest): Error {
    if (error.code !== uniqueViolation) return error;
    if (error.constraint === 'b3iq_events_stream_version_key') {
      return new VersionConflict(request.streamName, request.expectedVersion, null);
    }
    if (error.constraint === 'b3iq_events_event_id_key') {
      return new EventIdReused(request.events.map((event) => event.eventId).join(','));
    }
    return error;
  }
}

function versionMatches(expected: ExpectedVersion, current: bigint): boolean {
  return expected === 'any' || expected === current;
}

/**
 * A request whose event ids are all stored already (or written earlier in this batch) with the
 * same stream, type and data is a retry: it succeeds without writing. Some ids stored, or the same
 * id with other content, is a different operation reusing an id, which is refused.
 */
function findReplay(
  request: AppendRequest,
  existing: Map<string, StoredEvent>,
  written: Map<string, StoredEvent>,
): AppendResult | Error | null {
  const found = request.events.map((event) => existing.get(event.eventId) ?? written.get(event.eventId));
  const foundCount = found.filter((event) => event !== undefined).length;
  if (foundCount === 0) return null;
  const sameOperation =
    foundCount === request.events.length &&
    request.events.every((event, index) => {
      const stored = found[index]!;
      return (
        stored.streamName === request.streamName &&
        stored.type === event.type &&
        canonicalJson(stored.data) === canonicalJson(normalizeJson(event.data))
      );
    });
  if (!sameOperation) return new EventIdReused(request.events[0]!.eventId);
  const storedEvents = found as StoredEvent[];
  const last = storedEvents[storedEvents.length - 1]!;
  return { nextStreamVersion: last.streamVersion, lastPosition: last.position, replayed: true, events: storedEvents };
}

async function insertRows(client: pg.PoolClient, rows: StoredEvent[]): Promise<void> {
  await client.query(
    `INSERT INTO b3iq_events (${eventColumns})
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                          $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::text[])`,
    [
      rows.map((row) => String(row.position)),
      rows.map((row) => row.eventId),
      rows.map((row) => row.streamName),
      rows.map((row) => String(row.streamVersion)),
      rows.map((row) => row.type),
      rows.map((row) => JSON.stringify(row.data)),
      rows.map((row) => JSON.stringify(row.metadata)),
      rows.map((row) => row.recordedAt.toISOString()),
      rows.map((row) => row.hash),
    ],
  );
}

/**
 * The value exactly as it will read back from jsonb, so the hash computed before the insert is the
 * hash an auditor recomputes from the stored row.
 */
function normalizeJson(value: JsonObject): JsonObject {
  return JSON.parse(JSON.stringify(value)) as JsonObject;
}

function assertStorable(event: NewEvent): void {
  if (typeof event.eventId !== 'string' || event.eventId.length === 0 || event.eventId.length > 200) {
    throw new TypeError('eventId must be a non-empty string of at most 200 characters');
  }
  // jsonb cannot hold U+0000; refusing it here keeps one bad event from failing a whole batch.
  if (JSON.stringify(event.data).includes('\\u0000') || JSON.stringify(event.metadata ?? {}).includes('\\u0000')) {
    throw new TypeError('event data must not contain U+0000');
  }
}
