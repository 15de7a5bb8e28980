/**
 * The sequencer's back-off when appending to the transparency log fails (the database is away):
 * every failed append is followed by one wait, each twice the one before up to 5 s, never by
 * another append straight away; once appends work again the waiting receipts are logged, each
 * exactly once, with no new event needed to set it going, and the back-off starts over. Reading
 * the log backs off the same way. The waits are counted, not slept: the test's sleep returns at
 * once, so nothing here depends on the clock.
 */
import t, { type Test } from 'tap';
import { transparencyStreamName } from '../../src/events/transparency.ts';
import type { AppendResult, ExpectedVersion, NewEvent, StoredEvent, Subscription } from '../../src/eventStore/port.ts';
import { TransparencyLog } from '../../src/transparency/sequencer.ts';
import { SpyingStore } from '../support/ledger.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { ledgerIdentity, startTestLedger, type TestLedger } from '../support/testApp.ts';
import { accept, acceptMany } from './support.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());

/** Fails the next appends to the transparency log, or the next reads of the global log, as many as the test asks. */
class FailingStore extends SpyingStore {
  /**
   * What the sequencer did, in order: `append` for each attempt on the log, `read failed` for each
   * subscription made to fail, `sleep <ms>` for each wait.
   */
  readonly trace: string[] = [];
  private failuresLeft = 0;
  private readFailuresLeft = 0;

  failNextLogAppends(count: number): void {
    this.failuresLeft = count;
  }

  failNextReads(count: number): void {
    this.readFailuresLeft = count;
  }

  override subscribe(fromPosition: bigint, options?: { batchSize?: number }): Subscription {
    if (this.readFailuresLeft === 0) return super.subscribe(fromPosition, options);
    this.readFailuresLeft -= 1;
    this.trace.push('read failed');
    const error = new Error('connection refused');
    return {
      async *[Symbol.asyncIterator]() {
        throw error;
      },
      async *batches() {
        throw error;
      },
      close: async () => undefined,
    };
  }

  override async append(streamName: string, events: NewEvent[], options: { expectedVersion: ExpectedVersion }): Promise<AppendResult> {
    if (streamName === transparencyStreamName) {
      this.trace.push('append');
      if (this.failuresLeft > 0) {
        this.failuresLeft -= 1;
        throw new Error('connection terminated unexpectedly');
      }
    }
    return super.append(streamName, events, options);
  }
}

interface Harness {
  ledger: TestLedger;
  store: FailingStore;
  log: TransparencyLog;
  errors: string[];
}

async function harness(t: Test): Promise<Harness> {
  // Built with its own sequencer stopped: the one under test is the only writer of the log.
  const ledger = await startTestLedger(server, {});
  t.teardown(() => ledger.close());
  const store = new FailingStore(ledger.ledger.store);
  const errors: string[] = [];
  const log = new TransparencyLog(
    store,
    ledger.ledger.db,
    ledgerIdentity,
    { origin: ledger.transparency.origin, checkpointEveryLeaves: 1_000_000, checkpointEveryMs: 3_600_000 },
    {
      onError: (error) => errors.push(error.message),
      // Counted, and given back at once after other work has had its turn.
      sleep: async (ms) => {
        store.trace.push(`sleep ${ms}`);
        await new Promise((resolve) => setImmediate(resolve));
      },
    },
  );
  t.teardown(() => log.stop());
  return { ledger, store, log, errors };
}

/** Every failed append followed by one wait, then the append that worked. */
function expectedTrace(waits: number[]): string[] {
  return [...waits.flatMap((ms) => ['append', `sleep ${ms}`]), 'append'];
}

async function leaves(ledger: TestLedger): Promise<Array<[unknown, unknown]>> {
  const events = await ledger.ledger.store.readStream(transparencyStreamName);
  return events.filter((event) => event.type === 'ReceiptLogged').map((event) => [event.data['leaf_index'], event.data['accepted_position']]);
}

function positions(accepted: StoredEvent[], from = 0): Array<[number, string]> {
  return accepted.map((event, index) => [from + index, String(event.position)]);
}

t.test('given appends that fail seven times, it waits longer after each, up to 5 s, then logs every receipt once', async (t) => {
  const { ledger, store, log, errors } = await harness(t);
  const accepted = await acceptMany(ledger, 3);
  store.failNextLogAppends(7);
  await log.start();
  await log.sync();
  t.same(store.trace, expectedTrace([100, 200, 400, 800, 1_600, 3_200, 5_000]), 'one wait after every failure, doubling to the cap');
  t.equal(errors.length, 7, 'every failure reported');
  t.ok(errors.every((message) => message === 'connection terminated unexpectedly'));
  t.same(await leaves(ledger), positions(accepted), 'each receipt logged once, in acceptance order');
  t.equal(await log.publishNow(), 3, 'and the checkpoint covers them');
});

t.test('given appends that work again, the next failures start the back-off over', async (t) => {
  const { ledger, store, log } = await harness(t);
  const first = await acceptMany(ledger, 2);
  store.failNextLogAppends(3);
  await log.start();
  await log.sync();
  t.same(store.trace, expectedTrace([100, 200, 400]));
  store.trace.length = 0;
  store.failNextLogAppends(2);
  const second = await accept(ledger);
  await log.sync();
  t.same(store.trace, expectedTrace([100, 200]), 'from 100 ms again');
  t.same(await leaves(ledger), [...positions(first), ...positions([second], 2)], 'no receipt twice, none skipped');
});

t.test('given a log that cannot be read, it waits longer after each failure too, and logs once it can', async (t) => {
  const { ledger, store, log, errors } = await harness(t);
  const accepted = await acceptMany(ledger, 2);
  store.failNextReads(4);
  await log.start();
  await log.sync();
  t.same(store.trace, ['read failed', 'sleep 100', 'read failed', 'sleep 200', 'read failed', 'sleep 400', 'read failed', 'sleep 800', 'append']);
  t.same(errors, Array(4).fill('connection refused'));
  t.same(await leaves(ledger), positions(accepted));
});
