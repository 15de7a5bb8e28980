import pg from 'pg';

/** One statement of a pipelined group. `name` makes it a prepared statement on its connection. */
export interface Statement {
  name?: string;
  text: string;
  values?: unknown[];
}

/**
 * Runs statements in order on one connection and returns their results in order. On a pipelined
 * connection they are all written at once and the caller waits for the server once, not once per
 * statement; the server still executes them one after another, each with its own snapshot. If
 * one fails inside a transaction, the ones behind it fail too (or a trailing COMMIT reports
 * ROLLBACK), so the first failure is the one that is thrown. Without pipelining the same
 * statements run one at a time and stop at the first failure, with the same outcome.
 */
export async function runInOrder(client: pg.ClientBase, pipelined: boolean, statements: Statement[]): Promise<pg.QueryResult[]> {
  if (!pipelined) {
    const results: pg.QueryResult[] = [];
    for (const statement of statements) results.push(await client.query(statement));
    return results;
  }
  // pg writes each query to the socket as it is queued; corked, the group leaves in one write
  // instead of one per statement (a system call that wakes the server each time).
  const socket = socketOf(client);
  socket?.cork();
  let queued: Array<Promise<pg.QueryResult>>;
  try {
    queued = statements.map((statement) => client.query(statement));
  } finally {
    socket?.uncork();
  }
  const settled = await Promise.allSettled(queued);
  const results: pg.QueryResult[] = [];
  for (const outcome of settled) {
    if (outcome.status === 'rejected') throw outcome.reason;
    results.push(outcome.value);
  }
  return results;
}

/** The client's socket, as pg's own query code corks it; null when a client has none to show. */
function socketOf(client: pg.ClientBase): { cork(): void; uncork(): void } | null {
  const stream = (client as { connection?: { stream?: Partial<{ cork(): void; uncork(): void }> } }).connection?.stream;
  return typeof stream?.cork === 'function' && typeof stream.uncork === 'function' ? (stream as { cork(): void; uncork(): void }) : null;
}

/**
 * The connection the group commit writes through, outside the pool. It runs in pg's pipeline
 * mode, which pooled connections do not, and because flushes never overlap one connection is all
 * the writer needs. Keeping it out of the pool also means a busy pool never delays a commit. It
 * is opened on first use and replaced after it fails.
 */
export class AppendConnection {
  private opening: Promise<pg.Client> | null = null;
  private current: pg.Client | null = null;

  constructor(private readonly config: pg.ClientConfig) {}

  acquire(): Promise<pg.Client> {
    this.opening ??= this.open();
    return this.opening;
  }

  /** Drops a connection that may be in an unknown state; the next acquire() opens a new one. */
  discard(client: pg.Client): void {
    if (this.current === client) {
      this.current = null;
      this.opening = null;
    }
    client.end().catch(() => undefined);
  }

  async close(): Promise<void> {
    const opening = this.opening;
    this.opening = null;
    this.current = null;
    const client = await opening?.catch(() => null);
    await client?.end().catch(() => undefined);
  }

  private async open(): Promise<pg.Client> {
    const client = new pg.Client({ ...this.config, pipeline: true });
    // A server shutdown or a broken socket arrives as an 'error' event; pg itself rejects the
    // queries in flight, so all that is left to do is to stop handing out this client.
    client.on('error', () => this.discard(client));
    try {
      await client.connect();
    } catch (error) {
      this.opening = null;
      await client.end().catch(() => undefined);
      throw error;
    }
    this.current = client;
    return client;
  }
}
