import type { Test } from 'tap';
import { AggregateCache } from '../../src/commands/aggregateCache.ts';
import type { CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import type { CustomerAccountState } from '../../src/deciders/customerAccount/decider.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import { DomainError, type ErrorCode } from '../../src/errors.ts';
import {
  VersionConflict,
  type AppendOptions,
  type AppendResult,
  type EventStore,
  type NewEvent,
  type ReadAllOptions,
  type StoredEvent,
  type StreamAppend,
  type Subscription,
} from '../../src/eventStore/port.ts';
import { startEmbeddedPostgres, type TestPostgres } from './postgres.ts';

/** One embedded server per test file, stopped when the file's tests end. */
export async function startServer(t: Test): Promise<TestPostgres> {
  const server = await startEmbeddedPostgres();
  t.teardown(() => server.stop());
  return server;
}

/** A migrated ledger database on its own fresh database, closed when the test ends. */
export async function openLedger(t: Test, url: string): Promise<LedgerDatabase> {
  const ledger = await openLedgerDatabase(url, { poolSize: 12 });
  t.teardown(() => ledger.close());
  return ledger;
}

export function freshContext(store: EventStore): CustomerAccountContext {
  return { store, cache: new AggregateCache<CustomerAccountState>() };
}

/** Every event in the log, in position order. */
export async function readWholeLog(store: EventStore): Promise<StoredEvent[]> {
  const events: StoredEvent[] = [];
  for (;;) {
    const batch = await store.readAll({ fromPosition: events.at(-1)?.position ?? 0n, limit: 1000 });
    if (batch.length === 0) return events;
    events.push(...batch);
  }
}

/** The code of the DomainError a promise rejects with; anything else is rethrown as a bug. */
export async function domainErrorCode(promise: Promise<unknown>): Promise<ErrorCode | 'succeeded'> {
  try {
    await promise;
    return 'succeeded';
  } catch (error) {
    if (error instanceof DomainError) return error.code;
    throw error;
  }
}

/**
 * Wraps a store to see what the command handler asks of it: every readStream call with how many
 * events it returned, and how many appends lost an optimistic-concurrency race.
 */
export class SpyingStore implements EventStore {
  readonly reads: Array<{ streamName: string; fromVersion: bigint; eventsRead: number }> = [];
  versionConflicts = 0;

  constructor(private readonly inner: EventStore) {}

  async readStream(streamName: string, options: { fromVersion?: bigint } = {}): Promise<StoredEvent[]> {
    const events = await this.inner.readStream(streamName, options);
    this.reads.push({ streamName, fromVersion: options.fromVersion ?? 0n, eventsRead: events.length });
    return events;
  }

  async append(streamName: string, events: NewEvent[], options: AppendOptions): Promise<AppendResult> {
    try {
      return await this.inner.append(streamName, events, options);
    } catch (error) {
      if (error instanceof VersionConflict) this.versionConflicts += 1;
      throw error;
    }
  }

  async appendMulti(parts: StreamAppend[]): Promise<AppendResult[]> {
    try {
      return await this.inner.appendMulti(parts);
    } catch (error) {
      if (error instanceof VersionConflict) this.versionConflicts += 1;
      throw error;
    }
  }

  readAll(options: ReadAllOptions): Promise<StoredEvent[]> {
    return this.inner.readAll(options);
  }

  subscribe(fromPosition: bigint, options?: { batchSize?: number }): Subscription {
    return this.inner.subscribe(fromPosition, options);
  }

  readEventsById(eventIds: string[]): Promise<StoredEvent[]> {
    return this.inner.readEventsById(eventIds);
  }

  headPosition(): Promise<bigint> {
    return this.inner.headPosition();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
