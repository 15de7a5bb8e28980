/**
 * The read models on embedded PostgreSQL, fed by real money commands: expected rows after catch-up,
 * the ledger summing to zero, replays that change nothing (through the runner's checkpoint and
 * through each projection's own row-level guard), rebuild equal to the live tables, and a live
 * runner that follows new appends.
 */
import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { executeAccountCommand, type CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import { AggregateCache } from '../../src/commands/aggregateCache.ts';
import { openLedgerDatabase, type LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import type { CustomerAccountCommand } from '../../src/deciders/customerAccount/decider.ts';
import type { StoredEvent } from '../../src/eventStore/port.ts';
import { allProjections } from '../../projections/index.ts';
import type { Projection } from '../../projections/projection.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { startPostgres } from '../support/postgres.ts';
import { eventually } from '../support/waiting.ts';

const server = await startPostgres('embedded-18');
t.teardown(() => server.stop());

/** Three customers, one node taking 80 % (70 % on bob's job), every kind of money movement. */
const history: CustomerAccountCommand[] = [
  { type: 'CreateCustomer', customerId: 'alice' },
  { type: 'CreateCustomer', customerId: 'bob' },
  { type: 'Deposit', customerId: 'alice', reference: 'a-1', amountWei: 1_000_000n },
  { type: 'CreateCustomer', customerId: 'carol' },
  { type: 'Deposit', customerId: 'bob', reference: 'b-1', amountWei: 300_000n },
  { type: 'Deposit', customerId: 'alice', reference: 'a-2', amountWei: 500_000n },
  { type: 'Reserve', customerId: 'alice', jobId: 'job-a1', amountWei: 200_000n },
  { type: 'Deposit', customerId: 'carol', reference: 'c-1', amountWei: 50_000n },
  { type: 'Reserve', customerId: 'bob', jobId: 'job-b1', amountWei: 300_000n },
  { type: 'Capture', customerId: 'alice', jobId: 'job-a1', costWei: 150_000n, nodeId: 'node-1', nodeShareBps: 8000 },
  { type: 'Reserve', customerId: 'alice', jobId: 'job-a2', amountWei: 100_000n },
  { type: 'Capture', customerId: 'bob', jobId: 'job-b1', costWei: 300_000n, nodeId: 'node-1', nodeShareBps: 7000 },
  { type: 'Release', customerId: 'alice', jobId: 'job-a2', reason: 'node_failed' },
  { type: 'Reserve', customerId: 'carol', jobId: 'job-c1', amountWei: 20_000n },
  { type: 'Reserve', customerId: 'alice', jobId: 'job-a3', amountWei: 1n },
  { type: 'Capture', customerId: 'alice', jobId: 'job-a3', costWei: 1n, nodeId: 'node-1', nodeShareBps: 8000 },
];

interface Given {
  ledger: LedgerDatabase;
  runner: ProjectionRunner;
  execute(commands: CustomerAccountCommand[]): Promise<bigint>;
  log(): Promise<StoredEvent[]>;
}

/** A fresh database holding `history`, projected by a runner whose small batches split customers. */
async function givenProjectedHistory(t: Test): Promise<Given> {
  const ledger = await openLedgerDatabase(await server.createDatabase());
  t.teardown(() => ledger.close());
  const context: CustomerAccountContext = { store: ledger.store, cache: new AggregateCache() };
  const execute = async (commands: CustomerAccountCommand[]) => {
    let last = 0n;
    for (const command of commands) last = (await executeAccountCommand(context, command)).lastPosition;
    return last;
  };
  await execute(history);
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections, { batchSize: 3 });
  t.equal(await runner.catchUp(), 16n, 'catch-up reaches the head');
  return { ledger, runner, execute, log: () => ledger.store.readAll({ fromPosition: 0n, limit: 10_000 }) };
}

async function balances(ledger: LedgerDatabase) {
  const rows = await ledger.db
    .selectFrom('customer_balances')
    .select(['customer_id', 'balance_wei', 'available_wei', 'reserved_wei'])
    .orderBy('customer_id')
    .execute();
  return rows.map((row) => [row.customer_id, row.balance_wei, row.available_wei, row.reserved_wei]);
}

async function accountBalances(ledger: LedgerDatabase): Promise<Record<string, string>> {
  const rows = await ledger.db.selectFrom('ledger_accounts').select(['account', 'balance_wei']).execute();
  return Object.fromEntries(rows.map((row) => [row.account, row.balance_wei]));
}

/** Every projected row of all three tables, as strings, in a fixed order: what "identical" means. */
async function snapshot(ledger: LedgerDatabase): Promise<Record<string, string[][]>> {
  const tables = { customer_balances: 'customer_id', ledger_accounts: 'account', ledger_entries: 'entry_id' } as const;
  const result: Record<string, string[][]> = {};
  for (const [table, key] of Object.entries(tables)) {
    const rows = await sql<Record<string, unknown>>`SELECT * FROM ${sql.table(table)} ORDER BY ${sql.ref(key)}`.execute(ledger.db);
    result[table] = rows.rows.map((row) => Object.entries(row).map(([column, value]) => `${column}=${asText(value)}`));
  }
  return result;
}

function asText(value: unknown): string {
  return value instanceof Date ? value.toISOString() : String(value);
}

async function checkpoints(ledger: LedgerDatabase) {
  const rows = await ledger.db.selectFrom('projection_checkpoints').select(['name', 'position']).orderBy('name').execute();
  return rows.map((row) => [row.name, row.position]);
}

/** Each projection's own apply, in its own transaction, with no checkpoint in front of it. */
async function applyDirectly(ledger: LedgerDatabase, events: readonly StoredEvent[]): Promise<void> {
  for (const projection of allProjections) {
    await ledger.db.transaction().execute((transaction) => projection.apply(transaction, events));
  }
}

t.test('given the history, when caught up, then each customer has the expected balance, availability and reservation', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  t.same(await balances(ledger), [
    ['alice', '1349999', '1349999', '0'],
    ['bob', '0', '0', '0'],
    ['carol', '50000', '30000', '20000'],
  ]);
});

t.test('given the history, when caught up, then the ledger accounts hold the expected balances and sum to zero', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  const accounts = await accountBalances(ledger);
  t.same(accounts, {
    'external:deposits': '-1850000',
    'customer:alice:available': '1349999',
    'customer:alice:reserved': '0',
    'customer:bob:available': '0',
    'customer:bob:reserved': '0',
    'customer:carol:available': '30000',
    'customer:carol:reserved': '20000',
    'node:node-1:payable': '330000',
    'protocol:fees': '120001',
  });
  t.equal(Object.values(accounts).reduce((sum, balance) => sum + BigInt(balance), 0n), 0n, 'the accounts sum to zero');
  const [total] = (await sql<{ total: string }>`SELECT sum(balance_wei)::text AS total FROM ledger_accounts`.execute(ledger.db)).rows;
  t.equal(total?.total, '0', 'and so does SQL');
});

t.test('given the history, when caught up, then each money movement is one ledger entry with the balance after it', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  const rows = await ledger.db
    .selectFrom('ledger_entries')
    .select(['customer_id', 'kind', 'job_id', 'amount_wei', 'balance_after_wei', 'reserved_after_wei'])
    .orderBy('customer_id')
    .orderBy('position')
    .orderBy('entry_id')
    .execute();
  t.same(rows.map((row) => [row.customer_id, row.kind, row.job_id, row.amount_wei, row.balance_after_wei, row.reserved_after_wei]), [
    ['alice', 'deposit', null, '1000000', '1000000', '0'],
    ['alice', 'deposit', null, '500000', '1500000', '0'],
    ['alice', 'reservation', 'job-a1', '200000', '1500000', '200000'],
    ['alice', 'debit', 'job-a1', '150000', '1350000', '50000'],
    ['alice', 'release', 'job-a1', '50000', '1350000', '0'],
    ['alice', 'reservation', 'job-a2', '100000', '1350000', '100000'],
    ['alice', 'release', 'job-a2', '100000', '1350000', '0'],
    ['alice', 'reservation', 'job-a3', '1', '1350000', '1'],
    ['alice', 'debit', 'job-a3', '1', '1349999', '0'],
    ['bob', 'deposit', null, '300000', '300000', '0'],
    ['bob', 'reservation', 'job-b1', '300000', '300000', '300000'],
    ['bob', 'debit', 'job-b1', '300000', '0', '0'],
    ['carol', 'deposit', null, '50000', '50000', '0'],
    ['carol', 'reservation', 'job-c1', '20000', '50000', '20000'],
  ]);
});

t.test('given caught-up projections, when the runner applies the whole log again, then every row and checkpoint is unchanged', async (t) => {
  const { ledger, runner, log } = await givenProjectedHistory(t);
  const before = { rows: await snapshot(ledger), checkpoints: await checkpoints(ledger) };
  await runner.applyBatch(await log());
  t.same({ rows: await snapshot(ledger), checkpoints: await checkpoints(ledger) }, before);
  t.same(before.checkpoints, allProjections.map((projection) => [projection.name, 16n]).sort(), 'every checkpoint at the head');
});

t.test('given caught-up projections, when rebuilt from scratch, then the tables equal the live ones', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  const live = await snapshot(ledger);
  const progress: bigint[] = [];
  const { projections, applied } = countingApplies(allProjections);
  const runner = new ProjectionRunner(ledger.store, ledger.db, projections, { batchSize: 3 });
  t.equal(await runner.rebuild((position) => progress.push(position)), 16n);
  t.same(await snapshot(ledger), live);
  t.equal(progress[progress.length - 1], 16n, 'progress reaches the head');
  const setWise = allProjections.filter((projection) => projection.replay !== undefined).map((projection) => projection.name);
  t.same(setWise.filter((name) => applied.has(name)), [], `${setWise.join(', ')} were replayed set-wise, never event by event`);
  t.ok(setWise.includes('ledger_entries') && setWise.includes('jobs'), 'the account and job projections are among them');
  t.same(await checkpoints(ledger), allProjections.map((projection) => [projection.name, 16n]).sort(), 'every checkpoint at the head');
});

t.test('given caught-up projections, when rebuilt event by event (no set-based replay), then the tables equal the live ones', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  const live = await snapshot(ledger);
  const { projections, applied } = countingApplies(allProjections.map(({ replay: _replay, ...eventByEvent }) => eventByEvent));
  t.equal(await new ProjectionRunner(ledger.store, ledger.db, projections, { batchSize: 3 }).rebuild(), 16n);
  t.same(await snapshot(ledger), live);
  t.match(Object.fromEntries(applied), { customer_balances: 16, ledger_accounts: 16, ledger_entries: 16, jobs: 4 },
    'each projection saw only its event types: jobs the 3 captures and the release');
  t.notOk(applied.has('gateway_keys') || applied.has('nodes'), 'gateway keys and nodes saw none');
});

t.test('given a set-wise replay that fails, the rebuild reports it and that projection keeps its rows and checkpoint', async (t) => {
  const { ledger } = await givenProjectedHistory(t);
  const before = { balances: await balances(ledger), checkpoints: await checkpoints(ledger) };
  const failing = allProjections.map((projection): Projection =>
    projection.name === 'customer_balances'
      ? {
          ...projection,
          async replay(transaction, log, through) {
            await projection.replay!(transaction, log, through);
            throw new Error('disk full');
          },
        }
      : projection,
  );
  await t.rejects(new ProjectionRunner(ledger.store, ledger.db, failing).rebuild(), /disk full/);
  t.same(await balances(ledger), before.balances, 'the failed replay rolled back, truncation included');
  const kept = await ledger.db.selectFrom('projection_checkpoints').select('position').where('name', '=', 'customer_balances').executeTakeFirstOrThrow();
  t.equal(kept.position, 16n, 'its checkpoint is where it was');
  await new ProjectionRunner(ledger.store, ledger.db, allProjections).rebuild();
  t.same(await balances(ledger), before.balances, 'a later rebuild succeeds');
});

/** The projections, each counting the events its apply() received. */
function countingApplies(projections: readonly Projection[]): { projections: Projection[]; applied: Map<string, number> } {
  const applied = new Map<string, number>();
  const counting = projections.map((projection): Projection => ({
    ...projection,
    async apply(transaction, events) {
      applied.set(projection.name, (applied.get(projection.name) ?? 0) + events.length);
      await projection.apply(transaction, events);
    },
  }));
  return { projections: counting, applied };
}

t.test('given a started runner, when new commands are appended, then waitFor resolves true and the rows follow', async (t) => {
  const { ledger, runner, execute } = await givenProjectedHistory(t);
  runner.start();
  t.teardown(() => runner.stop());
  const last = await execute([
    { type: 'Deposit', customerId: 'bob', reference: 'b-2', amountWei: 7n },
    { type: 'Release', customerId: 'carol', jobId: 'job-c1', reason: 'cancelled' },
  ]);
  t.equal(last, 18n);
  t.equal(await runner.waitFor(last, 10_000), true);
  t.same((await balances(ledger)).slice(1), [
    ['bob', '7', '7', '0'],
    ['carol', '50000', '50000', '0'],
  ]);
  await runner.stop();
  const followed = await snapshot(ledger);
  await new ProjectionRunner(ledger.store, ledger.db, allProjections).rebuild();
  t.same(await snapshot(ledger), followed, 'the followed tables equal a rebuild');
});

t.test('given a runner at the head, when waiting for a position never appended, then waitFor resolves false after the timeout', async (t) => {
  const { runner } = await givenProjectedHistory(t);
  t.equal(await runner.waitFor(17n, 100), false);
  t.equal(await runner.waitFor(16n, 100), true, 'a reached position resolves at once');
});

t.test('given projected rows, when each projection applies the whole log directly twice, then the rows are unchanged', async (t) => {
  const { ledger, log } = await givenProjectedHistory(t);
  const events = await log();
  const live = await snapshot(ledger);
  await applyDirectly(ledger, events);
  await applyDirectly(ledger, events);
  t.same(await snapshot(ledger), live);
});

t.test('given empty tables, when each projection applies overlapping batches directly, then the rows equal the runner\'s', async (t) => {
  const { ledger, log } = await givenProjectedHistory(t);
  const events = await log();
  const live = await snapshot(ledger);
  await sql`TRUNCATE customer_balances, ledger_accounts, ledger_entries`.execute(ledger.db);
  await applyDirectly(ledger, events.slice(0, 10));
  await applyDirectly(ledger, events.slice(6, 13));
  await applyDirectly(ledger, events);
  await applyDirectly(ledger, events);
  t.same(await snapshot(ledger), live);
});

t.test('given projections at position 16, when a batch starting at 18 is applied, then it is refused and nothing changes', async (t) => {
  const { ledger, runner, execute, log } = await givenProjectedHistory(t);
  await execute([
    { type: 'Deposit', customerId: 'bob', reference: 'b-2', amountWei: 7n },
    { type: 'Deposit', customerId: 'bob', reference: 'b-3', amountWei: 8n },
  ]);
  const before = { rows: await snapshot(ledger), checkpoints: await checkpoints(ledger) };
  await t.rejects(runner.applyBatch((await log()).slice(17)), /would skip events/);
  t.same({ rows: await snapshot(ledger), checkpoints: await checkpoints(ledger) }, before);
});

t.test('given a live runner, when another runner rebuilds while new events arrive, then no event is skipped', async (t) => {
  const { ledger, runner: live, execute } = await givenProjectedHistory(t);
  live.start();
  t.teardown(() => live.stop());
  // The rebuilding runner pauses inside its batch of positions 7..9, holding the checkpoint rows.
  let resume = () => {};
  const paused = new Promise<void>((resolve) => (resume = resolve));
  let reachedPause = false;
  // Event by event (no set-based replay), so the rebuild goes through batches a live runner can meet.
  const pausing = allProjections.map(({ replay: _replay, ...projection }) => ({
    ...projection,
    async apply(transaction: Parameters<typeof projection.apply>[0], events: readonly StoredEvent[]) {
      if (events.some((event) => event.position === 7n)) {
        reachedPause = true;
        await paused;
      }
      await projection.apply(transaction, events);
    },
  }));
  const rebuilding = new ProjectionRunner(ledger.store, ledger.db, pausing, { batchSize: 3 }).rebuild();
  await eventually('the rebuild to reach position 7', () => reachedPause);
  const last = await execute([{ type: 'Deposit', customerId: 'bob', reference: 'b-2', amountWei: 7n }]);
  await eventually('the live runner to wait for the checkpoint rows', async () => (await checkpointLockWaiters(ledger)) >= 1);
  resume();
  t.equal(await rebuilding, last, 'the rebuild reaches the head');
  t.equal(await live.waitFor(last, 10_000), true);
  await live.stop();
  const together = await snapshot(ledger);
  await new ProjectionRunner(ledger.store, ledger.db, allProjections).rebuild();
  t.same(together, await snapshot(ledger), 'the tables equal a rebuild run alone');
});

async function checkpointLockWaiters(ledger: LedgerDatabase): Promise<number> {
  const result = await sql<{ waiting: number }>`
    SELECT count(*)::int AS waiting FROM pg_stat_activity
     WHERE datname = current_database() AND wait_event_type = 'Lock'`.execute(ledger.db);
  return result.rows[0]?.waiting ?? 0;
}

t.test('given a batch, when it is applied, then its transaction commits without waiting for the disk and appends still do', async (t) => {
  const { ledger, execute } = await givenProjectedHistory(t);
  const seen: string[] = [];
  const observing = allProjections.map((projection): Projection =>
    projection.name === 'customer_balances'
      ? {
          ...projection,
          async apply(transaction, events) {
            const setting = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(transaction);
            seen.push(setting.rows[0]!.synchronous_commit);
            await projection.apply(transaction, events);
          },
        }
      : projection,
  );
  const runner = new ProjectionRunner(ledger.store, ledger.db, observing);
  await execute([{ type: 'Deposit', customerId: 'carol', reference: 'c-async', amountWei: 1n }]);
  await runner.catchUp();
  t.same([...new Set(seen)], ['off'], 'the read models may lose their last batches in a crash; the runner applies them again');
  const outside = await sql<{ synchronous_commit: string }>`SHOW synchronous_commit`.execute(ledger.db);
  t.equal(outside.rows[0]!.synchronous_commit, 'on', 'the setting stays inside the runner\'s transaction');
});
