/**
 * The PostgreSQL adapter on every server kind the machine can start (embedded 18, system 15): the
 * shared contract, then what only this adapter promises — a gapless global order while a
 * transaction holds the append lock, vendor errors translated into the port's, the hash chain,
 * and group commit.
 */
import t, { type Test } from 'tap';
import { openLedgerDatabase, type LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import { createPool } from '../../src/db/pool.ts';
import { EventIdReused, VersionConflict } from '../../src/eventStore/port.ts';
import { PostgresEventStore } from '../../src/eventStore/postgres/postgresEventStore.ts';
import { verifyStoredChain } from '../../src/eventStore/postgres/verifyChain.ts';
import { availablePostgresKinds, startPostgres, type TestPostgres } from '../support/postgres.ts';
import { eventually, sleep, track, within } from '../support/waiting.ts';
import { eventsFor, eventStoreContract, follow, positionsOf, range } from './contract.ts';

const kinds = await availablePostgresKinds();
t.ok(kinds.length > 0, `PostgreSQL kinds available here: ${kinds.join(', ')}`);
// Each kind has its own server, so the kinds run side by side; cases within a kind run in order.
t.jobs = kinds.length;

for (const kind of kinds) {
  t.test(kind, { buffered: true }, async (t) => {
    const server = await startPostgres(kind);
    t.teardown(() => server.stop());
    t.comment(`PostgreSQL ${server.serverVersion}`);

    eventStoreContract(t, kind, async () => {
      const ledger = await openLedgerDatabase(await server.createDatabase());
      return { store: ledger.store, cleanup: () => ledger.close() };
    });
    gaplessCases(t, server);
    uniqueViolationCases(t, server);
    hashChainCases(t, server);
    groupCommitCases(t, server);
  });
}

async function freshLedger(t: Test, server: TestPostgres): Promise<LedgerDatabase> {
  const ledger = await openLedgerDatabase(await server.createDatabase());
  t.teardown(() => ledger.close());
  return ledger;
}

/** Sessions of this database that wait for a lock: an advisory lock, a row or a unique index entry. */
async function lockWaiters(ledger: LedgerDatabase): Promise<number> {
  const result = await ledger.pool.query<{ waiting: number }>(
    `SELECT count(*)::int AS waiting FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
  );
  return result.rows[0]?.waiting ?? 0;
}

/** Inserts an event row with plain SQL, bypassing the store and its append lock. */
async function insertRaw(
  client: { query: (sql: string, values: unknown[]) => Promise<unknown> },
  row: { position: bigint; eventId: string; streamName: string; streamVersion: bigint },
): Promise<void> {
  await client.query(
    `INSERT INTO b3iq_events (position, event_id, stream_name, stream_version, type, data, metadata, recorded_at, hash)
     VALUES ($1, $2, $3, $4, 'Raw', '{}', '{}', now(), $5)`,
    [String(row.position), row.eventId, row.streamName, String(row.streamVersion), 'f'.repeat(64)],
  );
}

function gaplessCases(t: Test, server: TestPostgres): void {
  t.test('given a transaction holding an appended event open, then later appends wait and a subscriber skips nothing', async (t) => {
    const ledger = await freshLedger(t, server);
    const otherProcess = createPool({ connectionString: (ledger.pool.options as { connectionString: string }).connectionString });
    const otherStore = new PostgresEventStore(otherProcess);
    t.teardown(async () => {
      await otherStore.close();
      await otherProcess.end();
    });
    await ledger.store.append('seed', eventsFor('seed', 3), { expectedVersion: 0n });
    const subscription = ledger.store.subscribe(0n, { batchSize: 2 });
    const { received, ended } = follow(subscription);
    await eventually('the seeded events', () => received.length === 3);

    const holder = await ledger.pool.connect();
    let holderReleased = false;
    t.teardown(() => {
      if (!holderReleased) holder.release();
    });
    await holder.query('BEGIN');
    const held = await ledger.store.appendInTransaction(holder, 'held', eventsFor('held', 1), 0n);
    t.equal(held.lastPosition, 4n, 'the held event takes the next position');
    const later = [
      ...[1, 2, 3].map((writer) => ledger.store.append(`later-${writer}`, eventsFor(`later-${writer}`, 2), { expectedVersion: 0n })),
      ...[1, 2].map((writer) => otherStore.append(`other-${writer}`, eventsFor(`other-${writer}`, 1), { expectedVersion: 0n })),
    ].map(track);
    await eventually('both stores to wait for the append lock', async () => (await lockWaiters(ledger)) >= 2);
    await sleep(300);
    t.equal(later.filter((append) => append.settled()).length, 0, 'no later append commits while the lock is held');
    t.same(positionsOf(received), [1n, 2n, 3n], 'the subscriber has nothing past the seeded events');

    await holder.query('COMMIT');
    holder.release();
    holderReleased = true;
    await Promise.all(later.map((append) => append.promise));
    await eventually('every event at the subscriber', () => received.length === 3 + 1 + 6 + 2);
    await subscription.close();
    await within('the subscription to end', ended);
    t.same(positionsOf(received), range(0n, 12), 'contiguous positions, none skipped');
    t.equal(received[3]?.eventId, 'held-1', 'the held event at its own position');
    t.same(received, await ledger.store.readAll({ fromPosition: 0n }), 'exactly the log');
  });

  t.test('given a row committed past a hole by a writer bypassing the lock, then the subscriber waits for the hole instead of skipping it', async (t) => {
    const ledger = await freshLedger(t, server);
    await ledger.store.append('seed', eventsFor('seed', 3), { expectedVersion: 0n });
    const subscription = ledger.store.subscribe(0n);
    const { received, ended } = follow(subscription);
    await eventually('the seeded events', () => received.length === 3);
    await insertRaw(ledger.pool, { position: 5n, eventId: 'raw-5', streamName: 'raw', streamVersion: 2n });
    await sleep(400);
    t.same(positionsOf(received), [1n, 2n, 3n], 'position 5 is not delivered while 4 is missing');
    await insertRaw(ledger.pool, { position: 4n, eventId: 'raw-4', streamName: 'raw', streamVersion: 1n });
    await eventually('the filled hole and the row after it', () => received.length === 5);
    await subscription.close();
    await within('the subscription to end', ended);
    t.same(positionsOf(received), range(0n, 5));
  });
}

function uniqueViolationCases(t: Test, server: TestPostgres): void {
  const collisions = [
    { what: 'stream version 1', error: VersionConflict, raw: { eventId: 'raw-event', streamName: 'contested' } },
    { what: 'event id', error: EventIdReused, raw: { eventId: 'contested-1', streamName: 'elsewhere' } },
  ];
  for (const collision of collisions) {
    const title = `given an open transaction that bypassed the lock to take the ${collision.what}, when an append collides with it`;
    t.test(`${title}, then ${collision.error.name}`, async (t) => {
      const ledger = await freshLedger(t, server);
      const raw = await ledger.pool.connect();
      t.teardown(() => raw.release());
      await raw.query('BEGIN');
      // A far position keeps the primary key out of the collision; only the tested constraint is hit.
      await insertRaw(raw, { position: 1_000_000n, streamVersion: 1n, ...collision.raw });
      const append = track(ledger.store.append('contested', eventsFor('contested', 1), { expectedVersion: 0n }));
      await eventually('the append to wait on the unique index', async () => (await lockWaiters(ledger)) >= 1);
      t.notOk(append.settled(), 'the append is blocked by the open transaction');
      await raw.query('COMMIT');
      const error = await within('the append to fail', append.promise.catch((caught: unknown) => caught));
      t.type(error, collision.error, `translated into ${collision.error.name}, not a driver error`);
      t.same(positionsOf(await ledger.store.readAll({ fromPosition: 0n })), [1_000_000n], 'only the raw row is stored');
    });
  }
}

function hashChainCases(t: Test, server: TestPostgres): void {
  /** 8 writers × 10 appends racing on shared streams, so batches interleave writers. */
  async function givenConcurrentHistory(t: Test): Promise<LedgerDatabase> {
    const ledger = await freshLedger(t, server);
    await Promise.all(
      Array.from({ length: 8 }, async (_, writer) => {
        for (let append = 1; append <= 10; append += 1) {
          const events = eventsFor(`chain-${writer}-${append}`, 1, { writer, note: 'a', amount_wei: String(10n ** 30n + BigInt(append)) });
          await ledger.store.append(`chain-${writer % 3}`, events, { expectedVersion: 'any' });
        }
      }),
    );
    return ledger;
  }

  t.test('given concurrent appends, then the stored hash chain verifies every event, from the start or from the middle', async (t) => {
    const ledger = await givenConcurrentHistory(t);
    const head = (await ledger.store.readAll({ fromPosition: 79n }))[0];
    t.match(await verifyStoredChain(ledger.pool), { ok: true, checked: 80, lastPosition: 80n, lastHash: head?.hash });
    t.match(await verifyStoredChain(ledger.pool, 41n), { ok: true, checked: 40, lastPosition: 80n });
  });

  t.test('given one byte of one event changed in place, then verification fails at that position', async (t) => {
    const ledger = await givenConcurrentHistory(t);
    await ledger.pool.query(`UPDATE b3iq_events SET data = jsonb_set(data, '{note}', '"b"') WHERE position = 17`);
    t.match(await verifyStoredChain(ledger.pool), { ok: false, position: 17n, checked: 16 }, 'from the start');
    t.match(await verifyStoredChain(ledger.pool, 10n), { ok: false, position: 17n, checked: 7 }, 'from before the change');
    t.match(await verifyStoredChain(ledger.pool, 18n), { ok: true, checked: 63 }, 'after it, the stored hash of 17 is trusted');
  });
}

function groupCommitCases(t: Test, server: TestPostgres): void {
  t.test('given a batch in which one append cannot be stored, then only that append fails and its batch-mates commit', async (t) => {
    const ledger = await freshLedger(t, server);
    // A lone surrogate has no canonical JSON form, so the shared transaction fails as a whole.
    const unstorable = [{ eventId: 'lone-1', type: 'Raw', data: { text: '\ud800' } }];
    const outcomes = await Promise.allSettled([
      ledger.store.append('good-1', eventsFor('good-1', 1), { expectedVersion: 0n }),
      ledger.store.append('lone', unstorable, { expectedVersion: 0n }),
      ledger.store.append('good-2', eventsFor('good-2', 1), { expectedVersion: 0n }),
    ]);
    t.same(outcomes.map((outcome) => outcome.status), ['fulfilled', 'rejected', 'fulfilled']);
    t.same((await ledger.store.readAll({ fromPosition: 0n })).map((event) => event.eventId), ['good-1-1', 'good-2-1']);
  });


  t.test('given 16 concurrent single-event appends, then they share fewer commits than appends', async (t) => {
    const ledger = await freshLedger(t, server);
    const results = await Promise.all(
      Array.from({ length: 16 }, (_, writer) => ledger.store.append(`group-${writer}`, eventsFor(`group-${writer}`, 1), { expectedVersion: 0n })),
    );
    t.same(results.map((result) => result.lastPosition).sort((a, b) => Number(a - b)), range(0n, 16));
    // xmin names the transaction that inserted a row: one distinct value per commit.
    const commits = await ledger.pool.query<{ commits: number }>('SELECT count(DISTINCT xmin::text)::int AS commits FROM b3iq_events');
    const count = commits.rows[0]?.commits ?? 0;
    t.ok(count >= 1 && count < 16, `16 appends in ${count} commit(s)`);
  });
}
