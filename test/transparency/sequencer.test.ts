/**
 * The transparency log's sequencer and checkpoint publisher on embedded PostgreSQL, fed with
 * ReceiptAccepted events as the gateway appends them: leaves in acceptance order with RFC 9162 leaf
 * hashes, appended in batches; checkpoints by count, by time and on demand, signed by the ledger
 * key; restarts and a second writer that log nothing twice; and a projection that rebuilds equal.
 */
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { transparencyStreamName } from '../../src/events/transparency.ts';
import type { EventStore, StoredEvent } from '../../src/eventStore/port.ts';
import { generateIdentity } from '../../src/receipts/ed25519.ts';
import { checkpointSignerFromIdentity, signCheckpoint, verifyCheckpoint } from '../../src/transparency/checkpoint.ts';
import { TransparencyLog } from '../../src/transparency/sequencer.ts';
import type { TransparencySettings } from '../../src/transparency/settings.ts';
import { startEmbeddedPostgres } from '../support/postgres.ts';
import { ledgerIdentity, startTestLedger, type TestLedger } from '../support/testApp.ts';
import { eventually } from '../support/waiting.ts';
import { SpyingStore } from '../support/ledger.ts';
import { accept, acceptMany } from './support.ts';
import { EventIdReused, VersionConflict, type AppendResult, type ExpectedVersion, type NewEvent } from '../../src/eventStore/port.ts';

const server = await startEmbeddedPostgres();
t.teardown(() => server.stop());
/** Checkpoints only when a test asks, unless it sets its own schedule. */
const onDemand: Partial<TransparencySettings> = { checkpointEveryLeaves: 1_000_000, checkpointEveryMs: 3_600_000 };

/** A ledger whose transparency log runs with these settings; with null it is built but not started. */
async function ledgerWith(t: Test, transparency: Partial<TransparencySettings> | null = onDemand): Promise<TestLedger> {
  const ledger = await startTestLedger(server, transparency === null ? {} : { transparency });
  t.teardown(() => ledger.close());
  return ledger;
}

async function logEvents(ledger: TestLedger) {
  return ledger.ledger.store.readStream(transparencyStreamName);
}

async function leavesOf(ledger: TestLedger) {
  return (await logEvents(ledger)).filter((event) => event.type === 'ReceiptLogged').map((event) => event.data);
}

function rfc9162Leaf(canonical: string): string {
  return createHash('sha256').update(Buffer.concat([Buffer.of(0), Buffer.from(canonical, 'utf8')])).digest('hex');
}

t.test('every accepted receipt becomes a leaf, in acceptance order, consecutive from 0', async (t) => {
  const ledger = await ledgerWith(t);
  const accepted: StoredEvent[] = [];
  for (let index = 0; index < 4; index++) {
    accepted.push(await accept(ledger));
    // Other traffic between acceptances is not logged.
    await ledger.app.inject({ method: 'POST', url: '/v1/admin/customers', headers: { 'x-b3iq-admin-token': ledger.adminToken } });
  }
  await ledger.transparency.sync();
  const leaves = await leavesOf(ledger);
  t.same(
    leaves,
    accepted.map((event, index) => ({
      leaf_index: index,
      receipt_hash: event.data['receipt_hash'],
      job_id: event.data['job_id'],
      accepted_position: String(event.position),
      leaf_hash: rfc9162Leaf(event.data['receipt_canonical'] as string),
    })),
  );
  t.equal(ledger.transparency.tree.size, 4, 'the in-memory tree holds them');
  t.equal(Buffer.from(ledger.transparency.tree.leafHashAt(3)).toString('hex'), leaves[3]?.['leaf_hash']);
});

t.test('a backlog is logged many leaves per append, at most 1,000, with the default checkpoint every 1,000', async (t) => {
  const ledger = await ledgerWith(t, null);
  await acceptMany(ledger, 2_100);
  await ledger.transparency.start();
  await ledger.transparency.sync(30_000);
  const events = await logEvents(ledger);
  const leaves = events.filter((event) => event.type === 'ReceiptLogged');
  t.same(leaves.map((event) => event.data['leaf_index']), [...Array(2_100).keys()]);
  const appends = new Map<string, number>();
  for (const event of leaves) appends.set(event.recordedAt.toISOString(), (appends.get(event.recordedAt.toISOString()) ?? 0) + 1);
  t.ok(appends.size <= 3, `2,100 leaves in ${appends.size} appends`);
  t.ok([...appends.values()].every((count) => count <= 1_000), 'no append holds more than 1,000 leaves');
  t.same(await checkpointSizes(ledger), [1_000, 2_000], 'a checkpoint as soon as 1,000 leaves wait');
});

t.test('checkpoints', async (t) => {
  t.test('published on demand over everything accepted, signed by the ledger key', async (t) => {
    const ledger = await ledgerWith(t);
    t.equal(await ledger.transparency.publishNow(), null, 'nothing to publish for an empty log');
    await acceptMany(ledger, 5);
    t.equal(await ledger.transparency.publishNow(), 5);
    t.equal(await ledger.transparency.publishNow(), 5, 'no new leaves, no new checkpoint');
    const checkpoints = (await logEvents(ledger)).filter((event) => event.type === 'CheckpointPublished');
    t.equal(checkpoints.length, 1);
    const data = checkpoints[0]!.data as { tree_size: number; root_hash: string; key_name: string; key_id: string; note: string };
    t.equal(data.tree_size, 5);
    t.equal(data.root_hash, Buffer.from(ledger.transparency.tree.root(5)).toString('hex'));
    t.equal(data.key_name, ledger.transparency.origin);
    t.equal(data.key_id, ledgerIdentity.keyId);
    t.match(ledger.transparency.origin, /^b3iq\.ledger\/[0-9a-f]{16}$/);
    const verified = verifyCheckpoint(data.note, ledger.transparency.verifierKey);
    t.ok(verified.ok, 'the note verifies with the published verifier key');
    if (verified.ok) {
      t.equal(verified.checkpoint.treeSize, 5n);
      t.equal(Buffer.from(verified.checkpoint.rootHash).toString('hex'), data.root_hash);
      t.equal(verified.checkpoint.origin, ledger.transparency.origin);
    }
  });

  t.test('published once enough leaves wait', async (t) => {
    const ledger = await ledgerWith(t, { checkpointEveryLeaves: 3, checkpointEveryMs: 3_600_000 });
    await acceptMany(ledger, 2);
    await ledger.transparency.sync();
    t.same(await checkpointSizes(ledger), [], 'two leaves are not enough');
    await acceptMany(ledger, 2);
    await eventually('a checkpoint by count', async () => (await checkpointSizes(ledger)).length > 0);
    t.same(await checkpointSizes(ledger), [4]);
  });

  t.test('published once the oldest leaf has waited long enough', async (t) => {
    const ledger = await ledgerWith(t, { checkpointEveryLeaves: 1_000, checkpointEveryMs: 300 });
    const started = Date.now();
    await accept(ledger);
    await eventually('a checkpoint by time', async () => (await checkpointSizes(ledger)).length > 0, 5_000);
    t.ok(Date.now() - started >= 300, 'not before the interval');
    t.same(await checkpointSizes(ledger), [1]);
    await ledger.transparency.sync();
    t.same(await checkpointSizes(ledger), [1], 'nothing new, nothing more');
  });
});

async function checkpointSizes(ledger: TestLedger): Promise<number[]> {
  return (await logEvents(ledger)).filter((event) => event.type === 'CheckpointPublished').map((event) => event.data['tree_size'] as number);
}

t.test('a restarted sequencer logs each receipt once', async (t) => {
  const ledger = await ledgerWith(t);
  await acceptMany(ledger, 3);
  t.equal(await ledger.transparency.publishNow(), 3);
  await ledger.transparency.stop();
  await acceptMany(ledger, 2);
  // The projection has caught up: the restart loads its tree from the tables.
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  const restarted = newLog(t, ledger);
  await restarted.start();
  t.equal(restarted.tree.size, 3, 'the tree loaded from the projection');
  t.equal(await restarted.publishNow(), 5);
  // The projection lags (its rows are gone): the restart reads the whole log and skips what is logged.
  await restarted.stop();
  await acceptMany(ledger, 1);
  await ledger.runner.stop();
  await sql`TRUNCATE transparency_leaves, transparency_checkpoints`.execute(ledger.ledger.db);
  await sql`UPDATE projection_checkpoints SET position = 0 WHERE name = 'transparency'`.execute(ledger.ledger.db);
  const fromScratch = newLog(t, ledger);
  await fromScratch.start();
  t.equal(await fromScratch.publishNow(), 6);
  const leaves = await leavesOf(ledger);
  t.same(leaves.map((leaf) => leaf['leaf_index']), [0, 1, 2, 3, 4, 5]);
  t.equal(new Set(leaves.map((leaf) => leaf['receipt_hash'])).size, 6, 'no receipt twice');
  t.same(await checkpointSizes(ledger), [3, 5, 6]);
  await fromScratch.stop();
  await ledger.runner.start();
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  const renamed = new TransparencyLog(ledger.ledger.store, ledger.ledger.db, ledgerIdentity, { ...onDemandSettings(ledger), origin: 'another.origin/x' });
  await t.rejects(renamed.start(), /checkpoint of size 6 is not signed for origin another\.origin\/x/, 'a log keeps its origin');
  const rekeyed = new TransparencyLog(ledger.ledger.store, ledger.ledger.db, generateIdentity(), onDemandSettings(ledger));
  await t.rejects(rekeyed.start(), /is not signed for origin .* with this ledger key/, 'and its key');
});

t.test('two sequencers on one log write each leaf and checkpoint once', async (t) => {
  const ledger = await ledgerWith(t);
  const second = newLog(t, ledger);
  await second.start();
  const accepting = acceptMany(ledger, 40);
  // Both publish while receipts arrive: the one behind loses its append and catches up.
  const publishing = [];
  for (let round = 0; round < 4; round++) {
    publishing.push(ledger.transparency.publishNow(), second.publishNow());
    await new Promise((resolve) => setTimeout(resolve, 15));
  }
  await accepting;
  await Promise.all(publishing);
  const [first, other] = [await ledger.transparency.publishNow(), await second.publishNow()];
  t.equal(first, 40);
  t.equal(other, 40);
  const leaves = await leavesOf(ledger);
  t.same(leaves.map((leaf) => leaf['leaf_index']), [...Array(40).keys()]);
  t.equal(new Set(leaves.map((leaf) => leaf['accepted_position'])).size, 40, 'each acceptance once');
  const sizes = await checkpointSizes(ledger);
  t.same(sizes, [...sizes].sort((a, b) => a - b), 'checkpoints only grow');
  t.equal(new Set(sizes).size, sizes.length, 'one checkpoint per size');
  t.same(Buffer.from(second.tree.root()), Buffer.from(ledger.transparency.tree.root()), 'both trees agree');
});

t.test('a sequencer that loses a race to another writer reads its events and goes on', async (t) => {
  t.test('the other writer logged part of its batch: the ids are refused, the rest is logged after', async (t) => {
    const ledger = await ledgerWith(t, null);
    const store = new GatedStore(ledger.ledger.store);
    const log = newLog(t, ledger, store);
    await acceptMany(ledger, 2);
    const hold = store.holdNextLogAppend();
    await log.start();
    const held = await hold.entered;
    t.equal(held.length, 2, 'both receipts in one append');
    await ledger.ledger.store.append(transparencyStreamName, [held[0]!], { expectedVersion: 0n });
    hold.release();
    await log.sync();
    t.same((await leavesOf(ledger)).map((leaf) => [leaf['leaf_index'], leaf['accepted_position']]), held.map((event) => [event.data['leaf_index'], event.data['accepted_position']]));
    t.same(store.outcomes, { written: 1, replayed: 0, versionConflict: 0, eventIdReused: 1 });
  });

  t.test('the other writer published a checkpoint: a version conflict, then the leaf after it', async (t) => {
    const ledger = await ledgerWith(t, null);
    const store = new GatedStore(ledger.ledger.store);
    const log = newLog(t, ledger, store);
    await acceptMany(ledger, 1);
    await log.start();
    await log.sync();
    const hold = store.holdNextLogAppend();
    await accept(ledger);
    await hold.entered;
    const note = signCheckpoint({ origin: log.origin, treeSize: 1, rootHash: log.tree.root(1) }, checkpointSignerFromIdentity(log.origin, ledgerIdentity));
    await ledger.ledger.store.append(
      transparencyStreamName,
      [{ eventId: 'another-writer-checkpoint-1', type: 'CheckpointPublished', data: { tree_size: 1, root_hash: Buffer.from(log.tree.root(1)).toString('hex'), key_name: log.origin, key_id: ledgerIdentity.keyId, note } }],
      { expectedVersion: 1n },
    );
    hold.release();
    await log.sync();
    t.same((await logEvents(ledger)).map((event) => [event.type, event.data['leaf_index'] ?? event.data['tree_size']]), [
      ['ReceiptLogged', 0],
      ['CheckpointPublished', 1],
      ['ReceiptLogged', 1],
    ]);
    t.same(store.outcomes, { written: 2, replayed: 0, versionConflict: 1, eventIdReused: 0 });
    t.equal(await log.publishNow(), 2, 'and it publishes on top of the other writer');
  });

  t.test('the other writer logged the same leaves: the append is a replay and writes nothing', async (t) => {
    const ledger = await ledgerWith(t, null);
    const store = new GatedStore(ledger.ledger.store);
    const log = newLog(t, ledger, store);
    await acceptMany(ledger, 3);
    const hold = store.holdNextLogAppend();
    await log.start();
    const held = await hold.entered;
    await ledger.ledger.store.append(transparencyStreamName, held, { expectedVersion: 0n });
    hold.release();
    await log.sync();
    t.equal((await leavesOf(ledger)).length, 3);
    t.same(store.outcomes, { written: 0, replayed: 1, versionConflict: 0, eventIdReused: 0 });
  });
});

t.test('the projection rebuilds equal to the live tables, and replays change nothing', async (t) => {
  const ledger = await ledgerWith(t);
  await acceptMany(ledger, 7);
  await ledger.transparency.publishNow();
  await acceptMany(ledger, 2);
  await ledger.transparency.publishNow();
  await ledger.runner.waitFor(await ledger.ledger.store.headPosition(), 5_000);
  await ledger.runner.stop();
  const live = await transparencyRows(ledger);
  t.equal(live.leaves.length, 9);
  t.same(live.checkpoints.map((row) => row[0]), ['7', '9']);
  const log = await ledger.ledger.store.readAll({ fromPosition: 0n, limit: 10_000 });
  const projection = allProjections.find((candidate) => candidate.name === 'transparency')!;
  await ledger.ledger.db.transaction().execute((transaction) => projection.apply(transaction, log));
  t.same(await transparencyRows(ledger), live, 'applying the whole log again changes nothing');
  await new ProjectionRunner(ledger.ledger.store, ledger.ledger.db, allProjections).rebuild();
  t.same(await transparencyRows(ledger), live, 'a rebuild equals the live tables');
});

async function transparencyRows(ledger: TestLedger) {
  const leaves = await sql<Record<string, unknown>>`SELECT * FROM transparency_leaves ORDER BY leaf_index`.execute(ledger.ledger.db);
  const checkpoints = await sql<Record<string, unknown>>`SELECT * FROM transparency_checkpoints ORDER BY tree_size`.execute(ledger.ledger.db);
  const asText = (rows: Array<Record<string, unknown>>) => rows.map((row) => Object.values(row).map(String));
  return { leaves: asText(leaves.rows), checkpoints: asText(checkpoints.rows) };
}

function onDemandSettings(ledger: TestLedger): TransparencySettings {
  return { origin: ledger.transparency.origin, checkpointEveryLeaves: 1_000_000, checkpointEveryMs: 3_600_000 };
}

function newLog(t: Test, ledger: TestLedger, store: EventStore = ledger.ledger.store): TransparencyLog {
  const log = new TransparencyLog(store, ledger.ledger.db, ledgerIdentity, onDemandSettings(ledger));
  t.teardown(() => log.stop());
  return log;
}

/**
 * Another writer's race, made deterministic: the next append to the transparency log waits until
 * the test releases it, and every append's outcome is counted.
 */
class GatedStore extends SpyingStore {
  readonly outcomes = { written: 0, replayed: 0, versionConflict: 0, eventIdReused: 0 };
  private gate: { entered: (events: NewEvent[]) => void; released: Promise<void> } | null = null;

  holdNextLogAppend(): { entered: Promise<NewEvent[]>; release: () => void } {
    let entered: (events: NewEvent[]) => void = () => {};
    let release: () => void = () => {};
    const enteredPromise = new Promise<NewEvent[]>((resolve) => (entered = resolve));
    this.gate = { entered, released: new Promise<void>((resolve) => (release = resolve)) };
    return { entered: enteredPromise, release };
  }

  override async append(streamName: string, events: NewEvent[], options: { expectedVersion: ExpectedVersion }): Promise<AppendResult> {
    const gate = streamName === transparencyStreamName ? this.gate : null;
    if (gate !== null) {
      this.gate = null;
      gate.entered(events);
      await gate.released;
    }
    try {
      const result = await super.append(streamName, events, options);
      this.outcomes[result.replayed ? 'replayed' : 'written'] += 1;
      return result;
    } catch (error) {
      if (error instanceof VersionConflict) this.outcomes.versionConflict += 1;
      if (error instanceof EventIdReused) this.outcomes.eventIdReused += 1;
      throw error;
    }
  }
}
