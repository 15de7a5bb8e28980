import type { ServerResponse } from 'node:http';

export interface StoredResponse {
  requestSha256: string;
  contentType: string;
  body: Buffer;
  expiresAtMs: number;
}

/**
 * The first response of each Idempotency-Key request, for replays. Completions are outputs, and
 * outputs never reach the log, the database or an export, so they are held only here, in memory,
 * bounded by count, bytes and age. A replay after they are gone is refused, never re-run or re-billed.
 */
export class ReplayCache {
  private readonly entries = new Map<string, StoredResponse>();
  private bytes = 0;

  constructor(
    private readonly ttlMs = 24 * 3_600_000,
    private readonly maxEntries = 10_000,
    private readonly maxBytes = 64 * 1_048_576,
  ) {}

  get(jobId: string, nowMs: number): StoredResponse | null {
    const entry = this.entries.get(jobId);
    if (entry === undefined) return null;
    if (entry.expiresAtMs <= nowMs) {
      this.remove(jobId);
      return null;
    }
    return entry;
  }

  put(jobId: string, requestSha256: string, contentType: string, body: Buffer, nowMs: number): void {
    if (body.length > this.maxBytes / 16) return;
    this.remove(jobId);
    this.entries.set(jobId, { requestSha256, contentType, body, expiresAtMs: nowMs + this.ttlMs });
    this.bytes += body.length;
    while (this.entries.size > this.maxEntries || this.bytes > this.maxBytes) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.remove(oldest);
    }
  }

  private remove(jobId: string): void {
    const entry = this.entries.get(jobId);
    if (entry === undefined) return;
    this.bytes -= entry.body.length;
    this.entries.delete(jobId);
  }
}

/** Copies what is written to a response, up to a bound; null when the bound was passed. */
export function recordResponse(response: ServerResponse, maxBytes: number): () => Buffer | null {
  const chunks: Buffer[] = [];
  let size = 0;
  let overflow = false;
  const keep = (chunk: unknown) => {
    if (overflow || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk), 'utf8');
    size += buffer.length;
    if (size > maxBytes) overflow = true;
    else chunks.push(buffer);
  };
  const write = response.write.bind(response);
  const end = response.end.bind(response);
  response.write = ((chunk: unknown, ...rest: unknown[]) => {
    keep(chunk);
    return (write as (...args: unknown[]) => boolean)(chunk, ...rest);
  }) as typeof response.write;
  response.end = ((chunk?: unknown, ...rest: unknown[]) => {
    keep(chunk);
    return (end as (...args: unknown[]) => ServerResponse)(chunk, ...rest);
  }) as typeof response.end;
  return () => (overflow ? null : Buffer.concat(chunks));
}
