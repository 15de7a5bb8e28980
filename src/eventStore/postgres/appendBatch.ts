import type pg from 'pg';
import { canonicalJson } from '../../canonicalJson.ts';
import { chainHash, genesisHash } from '../hashChain.ts';
import {
  EventIdReused,
  VersionConflict,
  type AppendResult,
  type ExpectedVersion,
  type JsonObject,
  type NewEvent,
  type StoredEvent,
} from '../port.ts';
import type { Statement } from './appendConnection.ts';
import { eventColumns, toStoredEvent, type EventRow } from './eventRow.ts';
import { appendChannel, appendLockKey } from './schema.ts';

/**
 * The part of a group-commit flush that needs no connection: the statements that read what a
 * batch is checked against, the decision on each request, and the statements that write the
 * accepted events. postgresEventStore.ts sends them and owns the transaction around them.
 */

/** One stream's part of a queued append. */
export interface BatchRequest {
  streamName: string;
  events: PreparedEvent[];
  expectedVersion: ExpectedVersion;
  /** The event the stream must end with, data and metadata in canonical form (AppendOptions.expectedLastEvent). */
  expectedLastEvent?: { eventId: string; type: string; canonicalData: string; canonicalMetadata: string } | undefined;
}

/** A queued append: one part, or several that are written together or not at all. */
export type BatchGroup = BatchRequest[];

/**
 * A NewEvent checked and normalised when it is queued rather than inside a flush: a flush holds
 * the append lock that every writing process waits for, so the less it computes the better.
 */
export interface PreparedEvent {
  eventId: string;
  type: string;
  /** Exactly as it will read back from jsonb, so the hash computed now is the one an auditor recomputes. */
  data: JsonObject;
  metadata: JsonObject;
  /** The text sent to jsonb. */
  dataJson: string;
  metadataJson: string;
}

export function prepareEvent(event: NewEvent): PreparedEvent {
  if (typeof event.eventId !== 'string' || event.eventId.length === 0 || event.eventId.length > 200) {
    throw new TypeError('eventId must be a non-empty string of at most 200 characters');
  }
  const dataJson = JSON.stringify(event.data);
  const metadataJson = JSON.stringify(event.metadata ?? {});
  // jsonb cannot hold U+0000; refusing it here keeps one bad event from failing a whole batch.
  if (dataJson.includes('\\u0000') || metadataJson.includes('\\u0000')) {
    throw new TypeError('event data must not contain U+0000');
  }
  const data = JSON.parse(dataJson) as JsonObject;
  const metadata = JSON.parse(metadataJson) as JsonObject;
  return { eventId: event.eventId, type: event.type, data, metadata, dataJson, metadataJson };
}

interface HeadRow {
  position: bigint;
  hash: string;
}

interface VersionRow {
  stream_name: string;
  version: bigint | null;
  last_event_id: string | null;
}

/** Where a stream ends: its version and the id of its last event (null for a new stream). */
export interface StreamHead {
  version: bigint;
  lastEventId: string | null;
}

const newStream: StreamHead = { version: 0n, lastEventId: null };

/**
 * The append lock, then what the batch is checked against: the head of the log, those of the
 * batch's event ids that are stored already, and each stream's version. Every statement after the
 * lock takes its own snapshot, so it sees each commit made before the lock was granted. The names
 * make them prepared statements, planned once per connection.
 */
export function checkStatements(batch: BatchGroup[]): Statement[] {
  return [
    { name: 'b3iq_append_lock', text: 'SELECT pg_advisory_xact_lock($1)', values: [appendLockKey] },
    { name: 'b3iq_append_head', text: 'SELECT position, hash FROM b3iq_events ORDER BY position DESC LIMIT 1' },
    existingEventsStatement(batch),
    streamVersionsStatement(batch),
  ];
}

/** The log state from the results of checkStatements, in the same order. */
export function logStateOf(results: pg.QueryResult[]): LogState {
  const [, head, existing, versions] = results as [
    pg.QueryResult,
    pg.QueryResult<HeadRow>,
    pg.QueryResult<EventRow>,
    pg.QueryResult<VersionRow>,
  ];
  return {
    position: head.rows[0]?.position ?? 0n,
    hash: head.rows[0]?.hash ?? genesisHash,
    existing: new Map(existing.rows.map((row) => [row.event_id, toStoredEvent(row)])),
    streams: new Map(versions.rows.map((row) => [row.stream_name, { version: row.version ?? 0n, lastEventId: row.last_event_id }])),
  };
}

/** The insert and its notification, or nothing when the batch accepted no event. */
export function writeStatements(plan: BatchPlan): Statement[] {
  return plan.rows.length === 0 ? [] : [insertStatement(plan.rows), notifyStatement(plan.headPosition)];
}

/** What a batch is checked against: the head of the log and what it holds for this batch. */
export interface LogState {
  position: bigint;
  hash: string;
  existing: Map<string, StoredEvent>;
  streams: Map<string, StreamHead>;
}

export interface BatchPlan {
  /** Per group: one result per part, or the error that refused the whole group. */
  outcomes: Array<AppendResult[] | Error>;
  rows: WrittenRow[];
  /** The head of the log once the batch is written. */
  headPosition: bigint;
}

interface WrittenRow {
  stored: StoredEvent;
  dataJson: string;
  metadataJson: string;
}

/**
 * Decides each group of a batch in order, as if they were appended one after another: replays,
 * version checks, then positions, stream versions and the hash chain for the accepted events. A
 * group that fails in any part leaves no trace on the plan, so the groups after it are decided as
 * if it had never been queued.
 */
export function planBatch(batch: BatchGroup[], log: LogState): BatchPlan {
  const recordedAt = new Date();
  const plan: Plan = { position: log.position, hash: log.hash, streams: log.streams, written: new Map<string, StoredEvent>(), rows: [] };

  const outcomes = batch.map((group): AppendResult[] | Error => {
    const replays = group.map((request) => findReplay(request, log.existing, plan.written));
    const failed = replays.find((replay) => replay instanceof Error);
    if (failed !== undefined) return failed;
    if (replays.every((replay) => replay !== null)) return replays as AppendResult[];
    if (replays.some((replay) => replay !== null)) return new EventIdReused(group[0]!.events[0]!.eventId);
    const conflict = group.find((request) => !headMatches(request, plan.streams.get(request.streamName) ?? newStream, log.existing, plan.written));
    if (conflict !== undefined) {
      return new VersionConflict(conflict.streamName, conflict.expectedVersion, (plan.streams.get(conflict.streamName) ?? newStream).version);
    }
    return group.map((request) => planRequest(request, plan, recordedAt));
  });
  return { outcomes, rows: plan.rows, headPosition: plan.position };
}

interface Plan {
  position: bigint;
  hash: string;
  streams: Map<string, StreamHead>;
  written: Map<string, StoredEvent>;
  rows: WrittenRow[];
}

/** Assigns positions, the stream's next versions and the chained hashes to one accepted request. */
function planRequest(request: BatchRequest, plan: Plan, recordedAt: Date): AppendResult {
  const currentVersion = (plan.streams.get(request.streamName) ?? newStream).version;
  const stored = request.events.map((event, index): StoredEvent => {
    plan.position += 1n;
    const fields = {
      position: plan.position,
      eventId: event.eventId,
      streamName: request.streamName,
      streamVersion: currentVersion + BigInt(index + 1),
      type: event.type,
      data: event.data,
      metadata: event.metadata,
      recordedAt,
    };
    plan.hash = chainHash(plan.hash, fields);
    const storedEvent = { ...fields, hash: plan.hash };
    plan.rows.push({ stored: storedEvent, dataJson: event.dataJson, metadataJson: event.metadataJson });
    return storedEvent;
  });
  for (const event of stored) plan.written.set(event.eventId, event);
  const last = stored[stored.length - 1]!;
  plan.streams.set(request.streamName, { version: last.streamVersion, lastEventId: last.eventId });
  return { nextStreamVersion: last.streamVersion, lastPosition: last.position, replayed: false, events: stored };
}

function headMatches(request: BatchRequest, head: StreamHead, existing: Map<string, StoredEvent>, written: Map<string, StoredEvent>): boolean {
  if (request.expectedVersion === 'any') return true;
  if (request.expectedVersion !== head.version) return false;
  const expected = request.expectedLastEvent;
  if (expected === undefined) return true;
  if (expected.eventId !== head.lastEventId) return false;
  const last = written.get(expected.eventId) ?? existing.get(expected.eventId);
  return (
    last !== undefined &&
    last.streamName === request.streamName &&
    last.type === expected.type &&
    canonicalJson(last.data) === expected.canonicalData &&
    canonicalJson(last.metadata) === expected.canonicalMetadata
  );
}

/**
 * A request whose event ids are all stored already (or written earlier in this batch) with the
 * same stream, type and data is a retry: it succeeds without writing. Some ids stored, or the same
 * id with other content, is a different operation reusing an id, which is refused.
 */
function findReplay(
  request: BatchRequest,
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
        canonicalJson(stored.data) === canonicalJson(event.data)
      );
    });
  if (!sameOperation) return new EventIdReused(request.events[0]!.eventId);
  const storedEvents = found as StoredEvent[];
  const last = storedEvents[storedEvents.length - 1]!;
  return { nextStreamVersion: last.streamVersion, lastPosition: last.position, replayed: true, events: storedEvents };
}

function existingEventsStatement(batch: BatchGroup[]): Statement {
  const ids = batch.flatMap((group) =>
    group.flatMap((request) => [...request.events.map((event) => event.eventId), ...(request.expectedLastEvent === undefined ? [] : [request.expectedLastEvent.eventId])]),
  );
  return { name: 'b3iq_append_existing', text: `SELECT ${eventColumns} FROM b3iq_events WHERE event_id = ANY($1::text[])`, values: [ids] };
}

/** One index probe per stream, so the cost does not grow with the length of a stream. */
function streamVersionsStatement(batch: BatchGroup[]): Statement {
  const names = [...new Set(batch.flatMap((group) => group.map((request) => request.streamName)))];
  return {
    name: 'b3iq_append_stream_heads',
    text: `SELECT s.name AS stream_name, e.stream_version AS version, e.event_id AS last_event_id
             FROM unnest($1::text[]) AS s(name)
             LEFT JOIN LATERAL (SELECT stream_version, event_id FROM b3iq_events
                                 WHERE stream_name = s.name ORDER BY stream_version DESC LIMIT 1) e ON true`,
    values: [names],
  };
}

function insertStatement(rows: WrittenRow[]): Statement {
  return {
    name: 'b3iq_append_insert',
    text: `INSERT INTO b3iq_events (${eventColumns})
           SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                                $6::jsonb[], $7::jsonb[], $8::timestamptz[], $9::text[])`,
    values: [
      rows.map((row) => String(row.stored.position)),
      rows.map((row) => row.stored.eventId),
      rows.map((row) => row.stored.streamName),
      rows.map((row) => String(row.stored.streamVersion)),
      rows.map((row) => row.stored.type),
      rows.map((row) => row.dataJson),
      rows.map((row) => row.metadataJson),
      rows.map((row) => row.stored.recordedAt.toISOString()),
      rows.map((row) => row.stored.hash),
    ],
  };
}

function notifyStatement(headPosition: bigint): Statement {
  return { name: 'b3iq_append_notify', text: 'SELECT pg_notify($1, $2)', values: [appendChannel, String(headPosition)] };
}
