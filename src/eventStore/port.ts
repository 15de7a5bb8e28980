/**
 * The event store port. Adapters (PostgreSQL now, KurrentDB later) implement it and pass the one
 * contract suite in test/eventStore/contract.ts.
 */

/** JSON that survives a round trip through any store unchanged. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

export interface NewEvent {
  /** Deterministic for retried operations, so a retry of the same append is a no-op. */
  eventId: string;
  type: string;
  data: JsonObject;
  metadata?: JsonObject;
}

export interface StoredEvent {
  eventId: string;
  /** 1-based, contiguous and in commit order across the whole log. */
  position: bigint;
  streamName: string;
  /** 1-based per stream. */
  streamVersion: bigint;
  type: string;
  data: JsonObject;
  metadata: JsonObject;
  recordedAt: Date;
  /** Lowercase hex SHA-256 over the previous hash and this event's canonical bytes. */
  hash: string;
}

/**
 * `0n` means the stream must not exist yet; a positive version means the stream's last event must
 * have exactly that version; `'any'` skips the check.
 */
export type ExpectedVersion = bigint | 'any';

/** One stream's part of an append to several streams. */
export interface StreamAppend extends AppendOptions {
  streamName: string;
  events: NewEvent[];
}

export interface AppendOptions {
  expectedVersion: ExpectedVersion;
  /**
   * With a positive expectedVersion: the stream's event at that version must be this very event,
   * with the same id, type, data and metadata. A version alone says how many events a stream
   * holds; the event says which. Metadata unique to one append (the command handler puts a random
   * append id in it) makes a match prove that this append wrote the event — not another writer
   * that reused the id, nor an identical copy another operation wrote, which a replay would accept.
   */
  expectedLastEvent?: Pick<NewEvent, 'eventId' | 'type' | 'data' | 'metadata'>;
}

export interface AppendResult {
  /** The stream's version after the append. */
  nextStreamVersion: bigint;
  /** Position of the last event of this append. */
  lastPosition: bigint;
  /** True when every event id was already stored: the append was a replay and wrote nothing. */
  replayed: boolean;
  events: StoredEvent[];
}

export interface ReadAllOptions {
  /** Exclusive: events after this position. */
  fromPosition: bigint;
  /**
   * At most this many events (1 to 10,000; default 1,000). A page holds fewer only when the log
   * has no more matching events: readers take a short page to mean they reached the end.
   */
  limit?: number;
  /** Only events of these types (still in global order); all types when absent. */
  types?: readonly string[];
}

export interface Subscription extends AsyncIterable<StoredEvent> {
  /** The same events, in contiguous batches as they were read: what projection runners consume. */
  batches(): AsyncIterable<StoredEvent[]>;
  close(): Promise<void>;
}

export interface EventStore {
  append(streamName: string, events: NewEvent[], options: AppendOptions): Promise<AppendResult>;
  /**
   * Appends to several distinct streams atomically: every part is written or none is. The parts'
   * events take consecutive positions in the order given, and the result holds one AppendResult per
   * part. A VersionConflict or EventIdReused of any part fails the whole append. Retried with the
   * same ids and data it is a replay (every part `replayed`); some parts stored and others not is
   * an EventIdReused.
   */
  appendMulti(parts: StreamAppend[]): Promise<AppendResult[]>;
  /** Events of one stream after `fromVersion` (exclusive), in version order. */
  readStream(streamName: string, options?: { fromVersion?: bigint }): Promise<StoredEvent[]>;
  readAll(options: ReadAllOptions): Promise<StoredEvent[]>;
  /** Follows the global order from `fromPosition` (exclusive), never skipping an event. */
  subscribe(fromPosition: bigint, options?: { batchSize?: number }): Subscription;
  /** The stored events with these ids, for idempotent replays of whole commands. */
  readEventsById(eventIds: string[]): Promise<StoredEvent[]>;
  headPosition(): Promise<bigint>;
  close(): Promise<void>;
  /**
   * Set by adapters that keep the log in a table of the read models' PostgreSQL database, with the
   * PostgreSQL adapter's columns: its name. A rebuild then lets the database compute read models
   * set-wise instead of streaming every event through the process.
   */
  readonly logTable?: string;
}

/** Optimistic concurrency failed: another writer appended to the stream first. */
export class VersionConflict extends Error {
  constructor(
    readonly streamName: string,
    readonly expectedVersion: ExpectedVersion,
    readonly actualVersion: bigint | null,
  ) {
    super(`Stream ${streamName} expected version ${String(expectedVersion)}, found ${actualVersion === null ? 'unknown' : String(actualVersion)}`);
    this.name = 'VersionConflict';
  }
}

/** An event id is already stored with a different stream, type or data: a retry that is not a retry. */
export class EventIdReused extends Error {
  constructor(readonly eventId: string) {
    super(`Event id ${eventId} is already stored with different content`);
    this.name = 'EventIdReused';
  }
}
