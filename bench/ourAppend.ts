/**
 * Our side of the append benchmark: the workload of bench/appendWorkload.ts against the ledger's
 * PostgreSQL event store (group commit, hash chain always on). Loading this module installs our
 * int8 type parser, so it must not share a process with the Emmett peer.
 */
import { openLedgerDatabase, type LedgerDatabase } from '../src/db/ledgerDatabase.ts';
import { VersionConflict } from '../src/eventStore/port.ts';
import {
  assertWorkload,
  benchEventData,
  DEFAULT_PAYLOAD_BYTES,
  MAX_RETRIES_PER_EVENT,
  runPrefix,
  WARMUP_EVENTS_PER_WRITER,
  type AppendResult,
  type AppendWorkload,
} from './appendWorkload.ts';

let runCounter = 0;

/** Opens every pool connection up front, so connecting is not part of the timed phase. */
async function warmPool(ledger: LedgerDatabase, size: number): Promise<void> {
  const clients = await Promise.all(Array.from({ length: size }, () => ledger.pool.connect()));
  for (const client of clients) client.release();
}

/** The stream's version after a conflict: reads only the events after the one the writer knew. */
async function currentVersion(ledger: LedgerDatabase, streamName: string, known: bigint): Promise<bigint> {
  const newer = await ledger.store.readStream(streamName, { fromVersion: known });
  return newer.at(-1)?.streamVersion ?? known;
}

interface Counters {
  events: number;
  conflicts: number;
  failedEvents: number;
}

const newCounters = (): Counters => ({ events: 0, conflicts: 0, failedEvents: 0 });

/** One writer: `count` single-event appends with optimistic concurrency and bounded retries. */
async function runWriter(
  ledger: LedgerDatabase,
  streamName: string,
  writer: number,
  count: number,
  payloadBytes: number,
  counters: Counters,
): Promise<void> {
  let known = 0n;
  for (let seq = 0; seq < count; seq++) {
    const event = { eventId: `${streamName}-w${writer}-s${seq}`, type: 'BenchAppended', data: benchEventData(writer, seq, payloadBytes) };
    for (let retries = 0; ; retries++) {
      try {
        const result = await ledger.store.append(streamName, [event], { expectedVersion: known });
        known = result.nextStreamVersion;
        counters.events++;
        break;
      } catch (error) {
        if (!(error instanceof VersionConflict)) throw error;
        counters.conflicts++;
        if (retries >= MAX_RETRIES_PER_EVENT) {
          counters.failedEvents++;
          break;
        }
        known = await currentVersion(ledger, streamName, known);
      }
    }
  }
}

export async function runOurAppend(connectionString: string, workload: AppendWorkload): Promise<AppendResult> {
  assertWorkload(workload);
  const ledger = await openLedgerDatabase(connectionString, { poolSize: Math.max(16, workload.writers) });
  try {
    const prefix = runPrefix('ourbench', runCounter++);
    const payloadBytes = workload.payloadBytes ?? DEFAULT_PAYLOAD_BYTES;
    const writers = Array.from({ length: workload.writers }, (_, writer) => writer);
    await warmPool(ledger, Math.max(16, workload.writers));
    // Untimed warm-up on separate streams, the same as the Emmett peer's.
    const warmUp = newCounters();
    await Promise.all(writers.map((writer) => runWriter(ledger, `${prefix}-warm${writer}`, writer, WARMUP_EVENTS_PER_WRITER, payloadBytes, warmUp)));

    const counters = newCounters();
    const streamOf = (writer: number): string => (workload.hotStream ? `${prefix}-hot` : `${prefix}-own${writer}`);
    const startedAt = process.hrtime.bigint();
    await Promise.all(writers.map((writer) => runWriter(ledger, streamOf(writer), writer, workload.eventsPerWriter, payloadBytes, counters)));
    const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
    if (counters.failedEvents > 0) {
      process.emitWarning(`ourAppend: ${counters.failedEvents} event(s) gave up after ${MAX_RETRIES_PER_EVENT} retries`);
    }
    return {
      events: counters.events,
      seconds,
      eventsPerSecond: seconds > 0 ? counters.events / seconds : 0,
      conflicts: counters.conflicts,
    };
  } finally {
    await ledger.close();
    // close() ends the pool through Kysely, which only knows the pool once a query went through
    // it; nothing here does, so without this each run would leave its connections open.
    if (!ledger.pool.ended) await ledger.pool.end();
  }
}
