/**
 * The one contract every EventStore adapter passes (DESIGN §2). Each case gets its own store from
 * `makeStore`, names its streams with a per-run prefix and measures positions from the head it
 * found, so the suite also runs against a store that already holds events.
 */
import { randomUUID } from 'node:crypto';
import type { Test } from 'tap';
import {
  EventIdReused,
  VersionConflict,
  type EventStore,
  type JsonObject,
  type NewEvent,
  type StoredEvent,
  type Subscription,
} from '../../src/eventStore/port.ts';
import { eventually, within } from '../support/waiting.ts';

export interface ContractStore {
  store: EventStore;
  cleanup(): Promise<void>;
}

/** Follows a subscription in the background, collecting what it yields until it ends. */
export function follow(subscription: Subscription): { received: StoredEvent[]; ended: Promise<void> } {
  const received: StoredEvent[] = [];
  const ended = (async () => {
    for await (const event of subscription) received.push(event);
  })();
  return { received, ended };
}

export function positionsOf(events: readonly StoredEvent[]): bigint[] {
  return events.map((event) => event.position);
}

/** `count` consecutive positions after `after`: what a gapless log must hold. */
export function range(after: bigint, count: number): bigint[] {
  return Array.from({ length: count }, (_, index) => after + BigInt(index + 1));
}

export function eventsFor(prefix: string, count: number, data: JsonObject = {}): NewEvent[] {
  return Array.from({ length: count }, (_, index) => ({
    eventId: `${prefix}-${index + 1}`,
    type: 'ContractTested',
    data: { ...data, index: index + 1 },
  }));
}

export function eventStoreContract(t: Test, name: string, makeStore: () => Promise<ContractStore>): void {
  // Namespaces streams and ids, so a store shared between runs never sees a collision.
  const run = randomUUID().slice(0, 8);
  const stream = (label: string) => `contract-${run}-${label}`;
  const id = (label: string) => `${run}-${label}`;

  async function given(t: Test): Promise<{ store: EventStore; head: bigint }> {
    const { store, cleanup } = await makeStore();
    t.teardown(cleanup);
    return { store, head: await store.headPosition() };
  }

  t.test(`${name}: event store contract`, async (t) => {
    t.test('given a new stream, when three events are appended, then readStream returns them at versions 1..3 intact', async (t) => {
      const { store, head } = await given(t);
      const events: NewEvent[] = [
        {
          eventId: id('rt-1'),
          type: 'Opened',
          data: { text: 'plain €, ünïcödé, 😀', nested: { list: [1, 2.5, -3], flag: true, none: null } },
          metadata: { operation: 'open', attempt: 1 },
        },
        { eventId: id('rt-2'), type: 'Noted', data: { amount_wei: (2n ** 256n - 1n).toString(), empty: {} } },
        { eventId: id('rt-3'), type: 'Closed', data: {}, metadata: { nested: { deep: ['a', { b: false }] } } },
      ];
      const result = await store.append(stream('round-trip'), events, { expectedVersion: 0n });
      t.same(
        { next: result.nextStreamVersion, last: result.lastPosition, replayed: result.replayed },
        { next: 3n, last: head + 3n, replayed: false },
      );

      const stored = await store.readStream(stream('round-trip'));
      t.same(stored.map((event) => event.streamVersion), [1n, 2n, 3n], 'versions 1..3');
      t.same(positionsOf(stored), range(head, 3), 'consecutive positions after the head');
      t.same(
        stored.map(({ eventId, type, data, metadata, streamName }) => ({ eventId, type, data, metadata, streamName })),
        events.map(({ eventId, type, data, metadata }) => ({ eventId, type, data, metadata: metadata ?? {}, streamName: stream('round-trip') })),
        'ids, types, data and metadata survive the round trip; absent metadata reads back as {}',
      );
      t.same(stored, result.events, 'the append result holds the stored events');
      t.ok(stored.every((event) => /^[0-9a-f]{64}$/.test(event.hash) && event.recordedAt instanceof Date), 'hash and time are set');
      const afterFirst = await store.readStream(stream('round-trip'), { fromVersion: 1n });
      t.same(afterFirst.map((event) => event.streamVersion), [2n, 3n], 'fromVersion is exclusive');
      t.same(await store.readStream(stream('never-written')), [], 'an unknown stream reads as empty');
    });

    t.test('given an existing stream, when appending with expectedVersion 0n, then VersionConflict and nothing is appended', async (t) => {
      const { store, head } = await given(t);
      await store.append(stream('exists'), eventsFor(id('exists'), 1), { expectedVersion: 0n });
      const error = await store
        .append(stream('exists'), eventsFor(id('exists-again'), 1), { expectedVersion: 0n })
        .catch((caught: unknown) => caught);
      t.type(error, VersionConflict);
      t.match(error, { streamName: stream('exists'), expectedVersion: 0n });
      t.equal(await store.headPosition(), head + 1n, 'head unchanged by the refused append');
    });

    t.test('given a stream at version 2, when appending with a stale or a future version, then VersionConflict', async (t) => {
      const { store, head } = await given(t);
      await store.append(stream('v2'), eventsFor(id('v2'), 2), { expectedVersion: 0n });
      for (const expectedVersion of [1n, 3n]) {
        const append = store.append(stream('v2'), eventsFor(id(`v2-${expectedVersion}`), 1), { expectedVersion });
        await t.rejects(append, VersionConflict, `expected ${expectedVersion}`);
      }
      t.equal((await store.readStream(stream('v2'))).length, 2, 'the stream still holds two events');
      t.equal(await store.headPosition(), head + 2n);
    });

    t.test("given new and existing streams, when appending with 'any', then the events are appended", async (t) => {
      const { store } = await given(t);
      const created = await store.append(stream('any'), eventsFor(id('any-1'), 2), { expectedVersion: 'any' });
      const extended = await store.append(stream('any'), eventsFor(id('any-2'), 1), { expectedVersion: 'any' });
      t.same([created.nextStreamVersion, extended.nextStreamVersion], [2n, 3n]);
      t.same((await store.readStream(stream('any'))).map((event) => event.streamVersion), [1n, 2n, 3n]);
    });

    t.test('given events on several streams, when reading all from a position, then positions after it are contiguous and ascending', async (t) => {
      const { store, head } = await given(t);
      for (let round = 1; round <= 4; round += 1) {
        for (const label of ['a', 'b', 'c']) {
          await store.append(stream(`all-${label}`), eventsFor(id(`all-${label}-${round}`), 1), { expectedVersion: 'any' });
        }
      }
      t.same(positionsOf(await store.readAll({ fromPosition: head })), range(head, 12), 'everything after the head');
      t.same(positionsOf(await store.readAll({ fromPosition: head + 5n })), range(head + 5n, 7), 'fromPosition is exclusive');
      t.same(positionsOf(await store.readAll({ fromPosition: head + 2n, limit: 4 })), range(head + 2n, 4), 'limit caps the page');
      t.same(await store.readAll({ fromPosition: head + 12n }), [], 'nothing after the head');
    });

    t.test('given events of three types, when reading all with a type filter, then only those types come back, in global order', async (t) => {
      const { store, head } = await given(t);
      for (let round = 1; round <= 3; round += 1) {
        for (const type of ['Kept', 'Skipped', 'AlsoKept']) {
          await store.append(stream(`typed-${type}`), [{ eventId: id(`typed-${type}-${round}`), type, data: { round } }], { expectedVersion: 'any' });
        }
      }
      const kept = await store.readAll({ fromPosition: head, types: ['Kept', 'AlsoKept'] });
      t.same(kept.map((event) => [event.type, event.position]), [
        ['Kept', head + 1n], ['AlsoKept', head + 3n], ['Kept', head + 4n], ['AlsoKept', head + 6n], ['Kept', head + 7n], ['AlsoKept', head + 9n],
      ]);
      const page = await store.readAll({ fromPosition: head + 3n, types: ['Kept'], limit: 1 });
      t.same(page.map((event) => event.position), [head + 4n], 'fromPosition and limit apply to the filtered order');
      t.same(await store.readAll({ fromPosition: head, types: [] }), [], 'no types, no events');
    });

    t.test('given two writers with the same expected version, when they race, then exactly one wins and the other gets VersionConflict (20 rounds)', async (t) => {
      const { store } = await given(t);
      await store.append(stream('race'), eventsFor(id('race-0'), 1), { expectedVersion: 0n });
      for (let round = 1; round <= 20; round += 1) {
        const expectedVersion = BigInt(round);
        const outcomes = await Promise.allSettled(
          ['left', 'right'].map((writer) => store.append(stream('race'), eventsFor(id(`race-${round}-${writer}`), 1), { expectedVersion })),
        );
        const winners = outcomes.filter((outcome) => outcome.status === 'fulfilled');
        const losers = outcomes.flatMap((outcome) => (outcome.status === 'rejected' ? [outcome.reason as unknown] : []));
        if (winners.length !== 1 || !(losers[0] instanceof VersionConflict)) {
          t.fail(`round ${round}: one winner and one VersionConflict`, { outcomes });
          return;
        }
      }
      const events = await store.readStream(stream('race'));
      t.same(events.map((event) => event.streamVersion), range(0n, 21), 'one event per round');
      const raced = range(0n, 20).flatMap((round) => ['left', 'right'].map((writer) => id(`race-${round}-${writer}-1`)));
      t.equal((await store.readEventsById(raced)).length, 20, 'no loser was stored');
    });

    t.test('given 16 writers on their own streams, when each appends 25 times concurrently, then positions are contiguous and each stream has versions 1..25', async (t) => {
      const { store, head } = await given(t);
      const writers = Array.from({ length: 16 }, (_, writer) => writer + 1);
      await Promise.all(
        writers.map(async (writer) => {
          let version = 0n;
          for (let append = 1; append <= 25; append += 1) {
            const result = await store.append(stream(`writer-${writer}`), eventsFor(id(`w${writer}-${append}`), 1), { expectedVersion: version });
            version = result.nextStreamVersion;
          }
        }),
      );
      const all = await store.readAll({ fromPosition: head, limit: 1000 });
      t.same(positionsOf(all), range(head, 400), 'positions head+1..head+400 without a gap');
      const versionsInLogOrder = (writer: number) =>
        all.filter((event) => event.streamName === stream(`writer-${writer}`)).map((event) => event.streamVersion);
      t.ok(writers.every((writer) => versionsInLogOrder(writer).join() === range(0n, 25).join()), 'each stream holds versions 1..25 in log order');
    });

    t.test('given an append that succeeded, when it is retried with the same ids and data, then it is a replay that writes nothing', async (t) => {
      const { store } = await given(t);
      const events = eventsFor(id('retry'), 2, { amount_wei: '10' });
      const first = await store.append(stream('retry'), events, { expectedVersion: 0n });
      const headAfterFirst = await store.headPosition();
      const retry = await store.append(stream('retry'), events, { expectedVersion: 0n });
      t.equal(retry.replayed, true);
      t.same(retry.events, first.events, 'the retry reports the events stored the first time');
      t.same([retry.nextStreamVersion, retry.lastPosition], [first.nextStreamVersion, first.lastPosition]);
      t.equal(await store.headPosition(), headAfterFirst, 'head unchanged');
      t.equal((await store.readStream(stream('retry'))).length, 2);
    });

    t.test('given an append in flight, when the same append is submitted again at once, then both succeed and it is stored once', async (t) => {
      const { store, head } = await given(t);
      const events = eventsFor(id('twice'), 2);
      const [first, second] = await Promise.all([0, 1].map(() => store.append(stream('twice'), events, { expectedVersion: 0n })));
      t.same([first?.replayed, second?.replayed].sort(), [false, true], 'one write and one replay');
      t.same(first?.events, second?.events, 'both report the same stored events');
      t.equal(await store.headPosition(), head + 2n);
    });

    t.test('given a stored event, when its id is appended again with other data, then EventIdReused and nothing is appended', async (t) => {
      const { store } = await given(t);
      await store.append(stream('reuse'), [{ eventId: id('reuse'), type: 'Deposited', data: { amount_wei: '10' } }], { expectedVersion: 0n });
      const head = await store.headPosition();
      await t.rejects(
        store.append(stream('reuse'), [{ eventId: id('reuse'), type: 'Deposited', data: { amount_wei: '11' } }], { expectedVersion: 1n }),
        EventIdReused,
      );
      t.equal(await store.headPosition(), head);
    });

    t.test('given a stored event, when a retry adds a new event beside it, then EventIdReused and nothing is appended', async (t) => {
      const { store } = await given(t);
      const [stored, added] = eventsFor(id('partial'), 2);
      await store.append(stream('partial'), [stored!], { expectedVersion: 0n });
      const head = await store.headPosition();
      await t.rejects(store.append(stream('partial'), [stored!, added!], { expectedVersion: 0n }), EventIdReused);
      t.equal(await store.headPosition(), head);
      t.same(await store.readEventsById([added!.eventId]), []);
    });

    t.test('given two new streams, when appended to in one append, then both are written at consecutive positions', async (t) => {
      const { store, head } = await given(t);
      const results = await store.appendMulti([
        { streamName: stream('multi-a'), events: eventsFor(id('multi-a'), 2), expectedVersion: 0n },
        { streamName: stream('multi-b'), events: eventsFor(id('multi-b'), 1), expectedVersion: 'any' },
      ]);
      t.same(
        results.map((result) => [result.nextStreamVersion, result.lastPosition, result.replayed]),
        [
          [2n, head + 2n, false],
          [1n, head + 3n, false],
        ],
      );
      const all = await store.readAll({ fromPosition: head });
      t.same(all.map((event) => [event.streamName, event.streamVersion]), [
        [stream('multi-a'), 1n],
        [stream('multi-a'), 2n],
        [stream('multi-b'), 1n],
      ], 'the parts in the order given');
      t.same([...results[0]!.events, ...results[1]!.events], all, 'each result holds its part as stored');
    });

    t.test('given a multi-stream append with one stale part, then VersionConflict and no part is written', async (t) => {
      const { store } = await given(t);
      await store.append(stream('multi-stale'), eventsFor(id('multi-stale'), 1), { expectedVersion: 0n });
      const head = await store.headPosition();
      const error = await store
        .appendMulti([
          { streamName: stream('multi-fresh'), events: eventsFor(id('multi-fresh'), 1), expectedVersion: 0n },
          { streamName: stream('multi-stale'), events: eventsFor(id('multi-stale-2'), 1), expectedVersion: 0n },
        ])
        .catch((caught: unknown) => caught);
      t.type(error, VersionConflict);
      t.match(error, { streamName: stream('multi-stale') });
      t.equal(await store.headPosition(), head, 'nothing appended');
      t.same(await store.readStream(stream('multi-fresh')), [], 'not even the part that was in order');
    });

    t.test('given a multi-stream append that succeeded, when retried, then a replay; when retried with a new part, then EventIdReused', async (t) => {
      const { store } = await given(t);
      const parts = [
        { streamName: stream('multi-retry-a'), events: eventsFor(id('multi-retry-a'), 1), expectedVersion: 0n },
        { streamName: stream('multi-retry-b'), events: eventsFor(id('multi-retry-b'), 2), expectedVersion: 0n },
      ];
      const first = await store.appendMulti(parts);
      const head = await store.headPosition();
      const retry = await store.appendMulti(parts);
      t.same(retry.map((result) => result.replayed), [true, true]);
      t.same(retry.map((result) => result.events), first.map((result) => result.events), 'the retry reports what the first append stored');
      const grown = [...parts, { streamName: stream('multi-retry-c'), events: eventsFor(id('multi-retry-c'), 1), expectedVersion: 0n }];
      await t.rejects(store.appendMulti(grown), EventIdReused, 'part of it stored and part not is not a retry');
      t.equal(await store.headPosition(), head);
    });

    t.test('given concurrent multi-stream appends racing on one stream, then exactly one wins and the losers write nothing (10 rounds)', async (t) => {
      const { store } = await given(t);
      for (let round = 0; round < 10; round += 1) {
        const head = await store.headPosition();
        const outcomes = await Promise.allSettled(
          [0, 1, 2].map((writer) =>
            store.appendMulti([
              { streamName: stream(`race-own-${round}-${writer}`), events: eventsFor(id(`race-own-${round}-${writer}`), 1), expectedVersion: 0n },
              { streamName: stream(`race-shared-${round}`), events: eventsFor(id(`race-shared-${round}-${writer}`), 1), expectedVersion: 0n },
            ]),
          ),
        );
        t.equal(outcomes.filter((outcome) => outcome.status === 'fulfilled').length, 1, `round ${round}: one winner`);
        t.ok(outcomes.every((outcome) => outcome.status === 'fulfilled' || outcome.reason instanceof VersionConflict), 'the others conflict');
        t.equal(await store.headPosition(), head + 2n, 'only the winner\'s two events');
      }
    });

    t.test('given a malformed multi-stream append, then it is rejected and nothing is written', async (t) => {
      const { store, head } = await given(t);
      await t.rejects(store.appendMulti([]), TypeError, 'no parts');
      await t.rejects(
        store.appendMulti([
          { streamName: stream('twice-named'), events: eventsFor(id('twice-named-1'), 1), expectedVersion: 'any' },
          { streamName: stream('twice-named'), events: eventsFor(id('twice-named-2'), 1), expectedVersion: 'any' },
        ]),
        TypeError,
        'one stream twice',
      );
      await t.rejects(
        store.appendMulti([
          { streamName: stream('empty-part-a'), events: eventsFor(id('empty-part-a'), 1), expectedVersion: 0n },
          { streamName: stream('empty-part-b'), events: [], expectedVersion: 0n },
        ]),
        TypeError,
        'a part without events',
      );
      t.equal(await store.headPosition(), head);
    });

    t.test('given a stream at version 2, when appending on the event expected last, then only that very event passes, metadata included', async (t) => {
      const { store } = await given(t);
      const [first, second] = eventsFor(id('last-event'), 2, { amount_wei: '10' });
      await store.append(stream('last-event'), [first!, second!], { expectedVersion: 0n });
      const head = await store.headPosition();
      const onTopOf = (expectedLastEvent: NewEvent, label: string) =>
        store.append(stream('last-event'), eventsFor(id(`last-event-${label}`), 1), { expectedVersion: 2n, expectedLastEvent });
      await t.rejects(onTopOf(first!, 'earlier'), VersionConflict, 'the version matches but the event at it is another');
      await t.rejects(
        onTopOf({ ...second!, data: { ...second!.data, amount_wei: '1000' } }, 'other-data'),
        VersionConflict,
        'the id matches but the event holds other data: another operation reused the id',
      );
      await t.rejects(onTopOf({ ...second!, type: 'Other' }, 'other-type'), VersionConflict, 'or another type');
      await t.rejects(
        onTopOf({ ...second!, metadata: { append_id: 'another append' } }, 'other-metadata'),
        VersionConflict,
        'or other metadata: an identical copy another append wrote is not the event expected',
      );
      t.equal(await store.headPosition(), head, 'nothing appended');
      const appended = await onTopOf(second!, 'right');
      t.equal(appended.nextStreamVersion, 3n, 'the very event passes');
      await t.rejects(
        store.append(stream('last-event'), eventsFor(id('last-event-any'), 1), { expectedVersion: 'any', expectedLastEvent: second! }),
        TypeError,
        'an expected event needs a version',
      );
      await t.rejects(
        store.append(stream('last-event-new'), eventsFor(id('last-event-new'), 1), { expectedVersion: 0n, expectedLastEvent: second! }),
        TypeError,
        'a new stream has no last event',
      );
    });

    t.test('given an append not yet committed, when another is queued on top of it by its version and last event, then both commit in order', async (t) => {
      const { store } = await given(t);
      const base = eventsFor(id('on-top-base'), 2);
      const [under, over] = await Promise.all([
        store.append(stream('on-top'), base, { expectedVersion: 0n }),
        store.append(stream('on-top'), eventsFor(id('on-top-next'), 1), { expectedVersion: 2n, expectedLastEvent: base[1]! }),
      ]);
      t.same([under!.nextStreamVersion, over!.nextStreamVersion], [2n, 3n]);
      t.ok(over!.lastPosition > under!.lastPosition);
    });

    t.test('given one event id twice in an append, then it is refused before anything is written', async (t) => {
      const { store, head } = await given(t);
      const [event] = eventsFor(id('twice-in-one'), 1);
      await t.rejects(store.append(stream('twice-in-one'), [event!, event!], { expectedVersion: 0n }), TypeError);
      await t.rejects(
        store.appendMulti([
          { streamName: stream('twice-a'), events: [event!], expectedVersion: 0n },
          { streamName: stream('twice-b'), events: [event!], expectedVersion: 0n },
        ]),
        TypeError,
      );
      t.equal(await store.headPosition(), head);
    });

    t.test('given stored events, when reading them by id, then known ids come back in position order and unknown ids are ignored', async (t) => {
      const { store } = await given(t);
      await store.append(stream('by-id-a'), eventsFor(id('by-id-a'), 2), { expectedVersion: 0n });
      await store.append(stream('by-id-b'), eventsFor(id('by-id-b'), 1), { expectedVersion: 0n });
      const found = await store.readEventsById([id('by-id-b-1'), id('unknown'), id('by-id-a-2')]);
      t.same(found.map((event) => [event.eventId, event.streamName, event.streamVersion]), [
        [id('by-id-a-2'), stream('by-id-a'), 2n],
        [id('by-id-b-1'), stream('by-id-b'), 1n],
      ]);
      t.same(await store.readEventsById([]), []);
    });

    t.test('given events before and after subscribing from the start, then the subscriber gets all in order and close() ends iteration', async (t) => {
      const { store, head } = await given(t);
      await store.append(stream('sub'), eventsFor(id('sub-before'), 3), { expectedVersion: 0n });
      const subscription = store.subscribe(head, { batchSize: 2 });
      const { received, ended } = follow(subscription);
      await eventually('the events appended before subscribing', () => received.length >= 3);
      await store.append(stream('sub'), eventsFor(id('sub-after-1'), 2), { expectedVersion: 3n });
      await store.append(stream('sub-other'), eventsFor(id('sub-after-2'), 1), { expectedVersion: 0n });
      await eventually('the events appended after subscribing', () => received.length >= 6);
      await subscription.close();
      await within('iteration to end after close()', ended);
      t.same(positionsOf(received), range(head, 6));
      t.same(received, await store.readAll({ fromPosition: head }), 'exactly the log, in order');
    });

    t.test('given a log of five events, when subscribing from position 3, then the subscriber starts at position 4', async (t) => {
      const { store, head } = await given(t);
      await store.append(stream('middle'), eventsFor(id('middle'), 5), { expectedVersion: 0n });
      const subscription = store.subscribe(head + 3n);
      const { received, ended } = follow(subscription);
      await eventually('the two events after position 3', () => received.length >= 2);
      await subscription.close();
      await within('iteration to end after close()', ended);
      t.same(positionsOf(received), range(head + 3n, 2));
    });

    t.test('given any store, when appending no events, then the append is rejected and nothing is written', async (t) => {
      const { store, head } = await given(t);
      await t.rejects(store.append(stream('empty'), [], { expectedVersion: 0n }));
      await t.rejects(store.append(stream('empty'), [], { expectedVersion: 'any' }));
      t.equal(await store.headPosition(), head);
      t.same(await store.readStream(stream('empty')), []);
    });

    t.test('given any store, when appending an event with an empty id, then the returned promise rejects and nothing is written', async (t) => {
      const { store, head } = await given(t);
      // Passing the promise itself, not a function: a synchronous throw from append fails this case.
      await t.rejects(store.append(stream('no-id'), [{ eventId: '', type: 'ContractTested', data: {} }], { expectedVersion: 0n }));
      t.equal(await store.headPosition(), head);
    });
  });
}
