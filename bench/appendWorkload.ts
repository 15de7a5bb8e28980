/**
 * The append workload both stores run (bench/ourAppend.ts and bench/emmettPeer.ts), kept in one
 * place so the two sides cannot drift apart:
 *  - `writers` concurrent writers, each doing `eventsPerWriter` appends of ONE event, with
 *    optimistic concurrency (expected stream version = last version the writer knew).
 *  - own-stream: every writer has its own stream, so it never conflicts.
 *  - hot-stream: all writers race on one stream; on a version conflict the writer re-reads the
 *    stream's current version and retries, at most MAX_RETRIES_PER_EVENT times per event.
 *  - Only successful appends are counted; only the append phase is timed, after an untimed
 *    warm-up of WARMUP_EVENTS_PER_WRITER appends per writer on separate streams.
 */

export interface AppendWorkload {
  /** Concurrent writers (16 in the real run). */
  writers: number;
  /** Appends per writer; each append carries one event. */
  eventsPerWriter: number;
  /** false: each writer has its own stream; true: all writers append to one stream. */
  hotStream: boolean;
  /** Approximate size of the event data as JSON (default about 200 bytes). */
  payloadBytes?: number;
}

export interface AppendResult {
  events: number;
  seconds: number;
  eventsPerSecond: number;
  conflicts: number;
}

export const MAX_RETRIES_PER_EVENT = 100;
export const DEFAULT_PAYLOAD_BYTES = 200;
/**
 * Untimed appends per writer, on streams of their own, before the timed phase: each run is a fresh
 * process, and without this both stores would be timed partly on code the JIT has not compiled yet.
 */
export const WARMUP_EVENTS_PER_WRITER = 25;

export type BenchEventData = {
  writer: number;
  seq: number;
  amountMinor: number;
  currency: string;
  pad: string;
};

const padAlphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';

/** Deterministic filler, so no randomness enters the benchmark. */
function padOf(length: number, salt: number): string {
  let pad = '';
  const size = padAlphabet.length;
  for (let index = 0; index < length; index++) pad += padAlphabet.charAt((((index * 7 + salt) % size) + size) % size);
  return pad;
}

/** Event data whose JSON is about `payloadBytes` long, fully determined by (writer, seq). */
export function benchEventData(writer: number, seq: number, payloadBytes: number): BenchEventData {
  const data: BenchEventData = {
    writer,
    seq,
    amountMinor: ((writer + 1) * 1_000_003 + seq * 7919) % 100_000,
    currency: 'USD',
    pad: '',
  };
  const padLength = Math.max(0, payloadBytes - JSON.stringify(data).length);
  data.pad = padOf(padLength, writer + seq);
  return data;
}

export function assertWorkload(workload: AppendWorkload): void {
  if (!Number.isInteger(workload.writers) || workload.writers < 1) throw new Error('writers must be a positive integer');
  if (!Number.isInteger(workload.eventsPerWriter) || workload.eventsPerWriter < 0) {
    throw new Error('eventsPerWriter must be a non-negative integer');
  }
}

/** A fresh name prefix per run, so repeated runs on one database never share streams. */
export function runPrefix(label: string, counter: number): string {
  return `${label}${process.pid.toString(36)}x${counter.toString(36)}x${Date.now().toString(36)}`;
}
