import pg from 'pg';
import type { StoredEvent, Subscription } from '../port.ts';
import { appendChannel } from './schema.ts';

interface LogReader {
  readAll(options: { fromPosition: bigint; limit?: number }): Promise<StoredEvent[]>;
}

/** How long a hole in the positions may last before the subscriber reports it instead of waiting. */
const gapTimeoutMs = 10_000;

/**
 * Follows the global order. Positions are contiguous by construction, so the subscriber also
 * insists on it: a missing position means the log is damaged or a writer bypassed the append
 * lock, and it waits (then fails loudly) rather than skip past it.
 */
export class PostgresSubscription implements Subscription {
  private closed = false;
  private wake: (() => void) | null = null;
  private listener: pg.Client | null = null;

  constructor(
    private readonly log: LogReader,
    private readonly pool: pg.Pool,
    private position: bigint,
    private readonly pollIntervalMs: number,
    private readonly batchSize: number,
    private readonly onClose: () => void,
  ) {}

  async *[Symbol.asyncIterator](): AsyncIterator<StoredEvent> {
    for await (const batch of this.batches()) {
      for (const event of batch) {
        yield event;
        if (this.closed) return;
      }
    }
  }

  async *batches(): AsyncIterable<StoredEvent[]> {
    await this.listen();
    let gapSince: number | null = null;
    while (!this.closed) {
      const events = await this.log.readAll({ fromPosition: this.position, limit: this.batchSize });
      const batch = contiguousPrefix(events, this.position);
      const sawGap = batch.length < events.length;
      gapSince = sawGap ? (gapSince ?? Date.now()) : null;
      if (gapSince !== null && Date.now() - gapSince > gapTimeoutMs) {
        throw new Error(`The log has no event at position ${this.position + 1n}; refusing to skip it`);
      }
      if (batch.length > 0) {
        this.position = batch[batch.length - 1]!.position;
        yield batch;
      }
      if (this.closed) return;
      if (batch.length === 0 || sawGap) await this.waitForAppend();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    const listener = this.listener;
    this.listener = null;
    await listener?.end().catch(() => undefined);
    this.onClose();
  }

  /** LISTEN only shortens the wait; polling alone is still correct, so a failed listener is tolerated. */
  private async listen(): Promise<void> {
    const options = this.pool.options as pg.ClientConfig;
    const listener = new pg.Client({ connectionString: options.connectionString });
    listener.on('error', () => {
      this.listener = null;
    });
    listener.on('notification', () => this.wake?.());
    try {
      await listener.connect();
      await listener.query(`LISTEN ${appendChannel}`);
      if (this.closed) await listener.end();
      else this.listener = listener;
    } catch {
      await listener.end().catch(() => undefined);
    }
  }

  private waitForAppend(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.pollIntervalMs);
      const self = this;
      function done(): void {
        clearTimeout(timer);
        self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }
}

function contiguousPrefix(events: StoredEvent[], after: bigint): StoredEvent[] {
  let expected = after + 1n;
  let length = 0;
  for (const event of events) {
    if (event.position !== expected) break;
    expected += 1n;
    length += 1;
  }
  return length === events.length ? events : events.slice(0, length);
}
