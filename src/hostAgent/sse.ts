import { usageOf, type Usage } from './receipts.ts';

/**
 * Server-sent events as OpenAI-compatible runtimes write them: frames of `data: …` lines ended
 * by a blank line. The splitter works on bytes, so a frame (or a UTF-8 character) split across
 * network chunks is reassembled before anyone reads it, and the bytes passed on are exactly the
 * bytes received.
 */

const lf = 0x0a;
const cr = 0x0d;

export class SseFrameSplitter {
  readonly #maxFrameBytes: number;
  #pending: Buffer = Buffer.alloc(0);

  constructor(maxFrameBytes: number) {
    this.#maxFrameBytes = maxFrameBytes;
  }

  /** Bytes of an unfinished frame, held until its end arrives. */
  get pendingBytes(): number {
    return this.#pending.length;
  }

  /** The complete frames in `chunk` plus what was pending, each with its terminating blank line. */
  push(chunk: Buffer): Buffer[] {
    const buffer = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
    const frames: Buffer[] = [];
    let start = 0;
    // Resume the search a few bytes early: a terminator may straddle the previous chunk's end.
    let searchFrom = Math.max(0, this.#pending.length - 3);
    for (;;) {
      const end = frameEnd(buffer, Math.max(start, searchFrom));
      if (end === -1) break;
      frames.push(buffer.subarray(start, end));
      start = end;
      searchFrom = end;
    }
    this.#pending = buffer.subarray(start);
    if (this.#pending.length > this.#maxFrameBytes) throw new RangeError(`An event-stream frame exceeds ${this.#maxFrameBytes} bytes`);
    return frames;
  }

  /** At the end of the stream: a last frame the runtime did not terminate, if any. */
  flush(): Buffer[] {
    const rest = this.#pending;
    this.#pending = Buffer.alloc(0);
    return rest.length === 0 ? [] : [rest];
  }
}

/** The index just past the first `\n\n` or `\r\n\r\n` at or after `from`, or -1. */
function frameEnd(buffer: Buffer, from: number): number {
  for (let index = buffer.indexOf(lf, from); index !== -1; index = buffer.indexOf(lf, index + 1)) {
    if (buffer[index + 1] === lf) return index + 2;
    if (buffer[index + 1] === cr && buffer[index + 2] === lf) return index + 3;
  }
  return -1;
}

export type FrameContent = { kind: 'done' } | { kind: 'data'; usage: Usage | null } | { kind: 'other' };

const usageObjectPattern = /"usage"\s*:\s*\{/;

/**
 * What a frame carries: the [DONE] sentinel, a data frame (with the usage totals when it has
 * them), or something else (comments, events without data). JSON is parsed only for frames that
 * mention a usage object, which keeps the per-token cost to a substring search.
 */
export function readFrame(frame: Buffer): FrameContent {
  const data = dataOf(frame.toString('utf8'));
  if (data === null) return { kind: 'other' };
  if (data.trim() === '[DONE]') return { kind: 'done' };
  if (!usageObjectPattern.test(data)) return { kind: 'data', usage: null };
  try {
    const chunk = JSON.parse(data) as unknown;
    const usage = typeof chunk === 'object' && chunk !== null ? usageOf((chunk as { usage?: unknown }).usage) : null;
    return { kind: 'data', usage };
  } catch {
    return { kind: 'data', usage: null };
  }
}

/** The frame's data lines joined by newlines (the SSE rule), or null when it has none. */
function dataOf(text: string): string | null {
  let data: string | null = null;
  for (const line of text.split(/\r?\n/)) {
    if (!line.startsWith('data:')) continue;
    const value = line.charAt(5) === ' ' ? line.slice(6) : line.slice(5);
    data = data === null ? value : `${data}\n${value}`;
  }
  return data;
}
