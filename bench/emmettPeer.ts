/**
 * Peer side of the append benchmark: runs the same workload as our store
 * against Emmett's PostgreSQL event store (@event-driven-io/emmett-postgresql).
 *
 * Workload semantics (shared with bench/ourAppend.ts through bench/appendWorkload.ts):
 *  - `writers` concurrent writers, each doing `eventsPerWriter` appends of ONE event,
 *    with optimistic concurrency (expected stream version = last version the writer knew).
 *  - own-stream: every writer has its own stream -> never conflicts.
 *  - hot-stream: all writers race on one stream; on a version conflict the writer re-reads
 *    the stream's current version and retries (max 100 retries per event). Conflicts are counted.
 *  - Only successful appends are counted; only the append phase is timed.
 */
import pg from 'pg';
import {
  getPostgreSQLEventStore,
  type PostgresEventStore,
} from '@event-driven-io/emmett-postgresql';
import {
  isExpectedVersionConflictError,
  type Event,
} from '@event-driven-io/emmett';
import {
  assertWorkload,
  benchEventData,
  DEFAULT_PAYLOAD_BYTES,
  MAX_RETRIES_PER_EVENT,
  WARMUP_EVENTS_PER_WRITER,
  type AppendResult,
  type AppendWorkload,
  type BenchEventData,
} from './appendWorkload.ts';

export type { AppendWorkload, AppendResult } from './appendWorkload.ts';
export { MAX_RETRIES_PER_EVENT } from './appendWorkload.ts';

type BenchAppended = Event<'BenchAppended', BenchEventData>;

interface Handle {
  pool: pg.Pool;
  store: PostgresEventStore;
}

/** Pools/stores opened by runs that have not been closed yet (normally empty after a run). */
const open = new Set<Handle>();
let runCounter = 0;

/** Event data whose JSON is ~payloadBytes long; fully determined by (writer, seq). */
function makeEvent(writer: number, seq: number, payloadBytes: number): BenchAppended {
  return { type: 'BenchAppended', data: benchEventData(writer, seq, payloadBytes) };
}

/** Open a pg.Pool of exactly `size` connections up front, so connect cost is not timed. */
async function warmPool(pool: pg.Pool, size: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: size }, () => pool.connect()));
  for (const c of clients) c.release();
}

/**
 * Re-read the stream's current version after a conflict, via Emmett's public readStream.
 * Reads only events after `known` (cheap under contention: at most a few events).
 * Note: Emmett's readStream returns currentStreamVersion = 0n when no rows match, so fall
 * back to `known` in that case.
 */
async function currentVersion(
  store: PostgresEventStore,
  streamName: string,
  known: bigint,
): Promise<bigint> {
  const r = await store.readStream<BenchAppended>(streamName, { from: known + 1n });
  return r.events.length > 0 ? r.currentStreamVersion : known;
}

interface Counters {
  events: number;
  conflicts: number;
  failedEvents: number;
}

const newCounters = (): Counters => ({ events: 0, conflicts: 0, failedEvents: 0 });

/** One writer: `count` single-event appends with optimistic concurrency and bounded retries. */
async function runWriter(
  store: PostgresEventStore,
  streamName: string,
  w: number,
  count: number,
  payloadBytes: number,
  counters: Counters,
): Promise<void> {
  let known = 0n; // Emmett: stream version 0n == stream does not exist yet
  for (let seq = 0; seq < count; seq++) {
    const event = makeEvent(w, seq, payloadBytes);
    let retries = 0;
    for (;;) {
      try {
        const r = await store.appendToStream(streamName, [event], {
          expectedStreamVersion: known,
        });
        known = r.nextExpectedStreamVersion;
        counters.events++;
        break;
      } catch (err) {
        if (!isExpectedVersionConflictError(err)) throw err;
        counters.conflicts++;
        if (retries >= MAX_RETRIES_PER_EVENT) {
          counters.failedEvents++;
          break;
        }
        retries++;
        known = await currentVersion(store, streamName, known);
      }
    }
  }
}

export async function runEmmettAppend(
  connectionString: string,
  workload: AppendWorkload,
): Promise<AppendResult> {
  const { writers, eventsPerWriter, hotStream } = workload;
  const payloadBytes = workload.payloadBytes ?? DEFAULT_PAYLOAD_BYTES;
  assertWorkload(workload);

  // Emmett's default pool is a pg.Pool with pg's default max=10, which would cap 16 writers at
  // 10 connections. Give it an ambient pool sized to the writer count (public option
  // connectionOptions.pool), and pre-open the connections.
  const pool = new pg.Pool({ connectionString, max: writers, idleTimeoutMillis: 0 });
  // pg-pool's end() resolves before idle clients' sockets are closed, and errors on idle clients
  // (e.g. 57P01 when the server shuts down right after) are re-emitted on the pool: without a
  // listener that crashes the process.
  pool.on('error', () => {});
  const store = getPostgreSQLEventStore(connectionString, {
    connectionOptions: { pool },
    schema: { autoMigration: 'CreateOrUpdate' },
  });
  const handle: Handle = { pool, store };
  open.add(handle);

  try {
    // Fresh stream-name prefix per run. Emmett derives streamType from the part before the first '-'.
    const prefix = `emtbench${process.pid.toString(36)}x${(runCounter++).toString(36)}x${Date.now().toString(36)}`;

    // Warm-up (untimed): triggers Emmett's schema migration (runs once per store instance), then
    // runs the workload's code path on separate streams so the timed phase runs JIT-compiled code,
    // exactly as bench/ourAppend.ts does for our store.
    await store.schema.migrate();
    await warmPool(pool, writers);
    const warmUp = newCounters();
    await Promise.all(
      Array.from({ length: writers }, (_, w) =>
        runWriter(store, `${prefix}-warm${w}`, w, WARMUP_EVENTS_PER_WRITER, payloadBytes, warmUp),
      ),
    );

    const streamOf = (w: number): string =>
      hotStream ? `${prefix}-hot` : `${prefix}-own${w}`;
    const counters = newCounters();

    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: writers }, (_, w) => runWriter(store, streamOf(w), w, eventsPerWriter, payloadBytes, counters)),
    );
    const t1 = process.hrtime.bigint();

    const seconds = Number(t1 - t0) / 1e9;
    const { events, conflicts, failedEvents } = counters;
    if (failedEvents > 0) {
      // Not thrown: the caller compares `events` against writers*eventsPerWriter.
      process.emitWarning(
        `emmettPeer: ${failedEvents} event(s) gave up after ${MAX_RETRIES_PER_EVENT} retries`,
      );
    }
    return {
      events,
      seconds,
      eventsPerSecond: seconds > 0 ? events / seconds : 0,
      conflicts,
    };
  } finally {
    await closeHandle(handle);
  }
}

async function closeHandle(h: Handle): Promise<void> {
  if (!open.delete(h)) return;
  // store.close() on an ambient pool is a no-op for the pg.Pool; end it ourselves.
  await h.store.close();
  await h.pool.end();
}

/** Close any pools still open (each run already closes its own; safe to call repeatedly). */
export async function closeEmmett(): Promise<void> {
  await Promise.all([...open].map(closeHandle));
}
