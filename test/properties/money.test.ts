import { sql } from 'kysely';
import t, { type Test } from 'tap';
import { allProjections } from '../../projections/index.ts';
import { ProjectionRunner } from '../../projections/runner.ts';
import { executeAccountCommand, type CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import { StreamLocks } from '../../src/commands/streamLocks.ts';
import {
  evolve,
  initialState,
  type CustomerAccountCommand,
  type CustomerAccountState,
} from '../../src/deciders/customerAccount/decider.ts';
import type { LedgerDatabase } from '../../src/db/ledgerDatabase.ts';
import { DomainError } from '../../src/errors.ts';
import { accounts, customerStreamName, parseCustomerAccountEvent } from '../../src/events/customerAccount.ts';
import type { StoredEvent } from '../../src/eventStore/port.ts';
import { freshContext, openLedger, readWholeLog, SpyingStore, startServer } from '../support/ledger.ts';
import { mulberry32, seedFromEnvironment } from '../support/random.ts';
import { balancesOf, Books, sumOfOutcomes, transfersOf } from '../support/accountModel.ts';
import { allowedOutcomes, customerIds, planCommands, type Outcome, type PlannedCommand, type PlannedKind } from '../support/accountPlan.ts';

/**
 * DESIGN §3 as a property: random command sequences, run by concurrent workers against the real
 * store, never break the money rules, and every view of the result agrees — the stored log folded
 * by the decider, two reference models, each worker's cache, and the projections.
 */
const customerCount = 4;
const commandCount = 300;
const workerCount = 8;

interface Result {
  kind: PlannedKind | 'setup';
  command: CustomerAccountCommand;
  outcome: Outcome;
  eventIds: string[];
}

const server = await startServer(t);
const baseSeed = seedFromEnvironment();

/**
 * Two layouts: eight workers each on its own (a process apiece, each with its own cache), and two
 * processes of four workers (each process with its own connection pool and group commit, its
 * workers sharing one cache and one set of stream locks, so one account's commands pipeline).
 */
const layouts = ['separate workers', 'two processes'] as const;

for (const offset of [0, 1, 2]) {
  const seed = (baseSeed + offset) >>> 0;
  for (const layout of layouts) {
    t.test(`seed ${seed}, ${layout}`, async (t) => {
      t.comment(`seed ${seed}: reproduce with B3IQ_SEED=${seed}`);
      const url = await server.createDatabase();
      const ledger = await openLedger(t, url);
      const store = new SpyingStore(ledger.store);
      const customers = customerIds(customerCount);
      const setup = freshContext(store);
      const results: Result[] = [];
      for (const customerId of customers) {
        results.push(await execute(setup, { kind: 'setup', command: { type: 'CreateCustomer', customerId } }));
      }
      let stores = [store];
      let contexts: CustomerAccountContext[];
      let workers: CustomerAccountContext[];
      if (layout === 'separate workers') {
        contexts = Array.from({ length: workerCount }, () => freshContext(store));
        workers = contexts;
      } else {
        stores = [store, new SpyingStore((await openLedger(t, url)).store)];
        contexts = stores.map((processStore) => ({ ...freshContext(processStore), locks: new StreamLocks() }));
        workers = Array.from({ length: workerCount }, (_, index) => contexts[index % contexts.length]!);
      }
      results.push(...(await runConcurrently(workers, planCommands(mulberry32(seed), customers, commandCount))));
      const conflicts = stores.reduce((sum, each) => sum + each.versionConflicts, 0);
      t.comment(`${describe(results)}; ${conflicts} appends lost a version race`);

      const log = await readWholeLog(ledger.store);
      const commandsByEventId = checkOutcomes(t, results, log);
      const folded = checkLog(t, log, commandsByEventId, results);
      await checkCaches(t, contexts, customers, log);
      await checkProjections(t, ledger, folded);
    });
  }
}

type Planned = PlannedCommand | { kind: 'setup'; command: CustomerAccountCommand };

async function execute(context: CustomerAccountContext, planned: Planned): Promise<Result> {
  try {
    const outcome = await executeAccountCommand(context, planned.command);
    return { ...planned, outcome: outcome.replayed ? 'replayed' : 'appended', eventIds: outcome.events.map((event) => event.eventId) };
  } catch (error) {
    // Anything but a DomainError is a bug (a 500) and fails the test as it is.
    if (error instanceof DomainError) return { ...planned, outcome: error.code, eventIds: [] };
    throw error;
  }
}

/** Workers pull the next command from one shared cursor, each with its own aggregate cache. */
async function runConcurrently(contexts: CustomerAccountContext[], plan: PlannedCommand[]): Promise<Result[]> {
  const results: Result[] = [];
  let cursor = 0;
  await Promise.all(
    contexts.map(async (context) => {
      for (let index = cursor++; index < plan.length; index = cursor++) results[index] = await execute(context, plan[index]!);
    }),
  );
  return results;
}

function describe(results: Result[]): string {
  const counts = new Map<string, number>();
  for (const result of results) counts.set(result.outcome, (counts.get(result.outcome) ?? 0) + 1);
  return [...counts].map(([outcome, count]) => `${count} ${outcome}`).join(', ');
}

/**
 * Each command's outcome is one its kind allows; the log holds exactly the events of the commands
 * that appended (a refused command appended nothing), and a replay answers with stored events.
 */
function checkOutcomes(t: Test, results: Result[], log: StoredEvent[]): Map<string, CustomerAccountCommand> {
  const allowed = (result: Result) =>
    result.kind === 'setup' || result.outcome === 'version_conflict' || allowedOutcomes[result.kind].includes(result.outcome);
  const unexpected = results
    .filter((result) => !allowed(result))
    .map((result) => `${result.kind} ${plain(result.command)} → ${result.outcome}`);
  t.same(unexpected, [], 'every outcome is one its kind of command allows');

  const commandsByEventId = new Map<string, CustomerAccountCommand>();
  for (const result of results) {
    if (result.outcome === 'appended') for (const eventId of result.eventIds) commandsByEventId.set(eventId, result.command);
  }
  const logged = log.map((event) => event.eventId);
  t.equal(new Set(logged).size, logged.length, 'no event id is stored twice');
  t.same([...logged].sort(), [...commandsByEventId.keys()].sort(), 'the log holds exactly the events of the commands that appended');
  const loggedIds = new Set(logged);
  const strayReplays = results.filter(
    (result) => result.outcome === 'replayed' && !result.eventIds.every((eventId) => loggedIds.has(eventId)),
  );
  t.equal(strayReplays.length, 0, 'every replay answers with stored events');
  return commandsByEventId;
}

/**
 * Folds the log in order and checks the books after every event; replays the commands behind the
 * events through the sequential model; and compares the final state of every view.
 */
function checkLog(t: Test, log: StoredEvent[], commandsByEventId: Map<string, CustomerAccountCommand>, results: Result[]) {
  const states = new Map<string, CustomerAccountState>();
  const ledgerAccounts = new Map<string, bigint>();
  const books = new Books();
  const resolutionsPerJob = new Map<string, number>();
  const violations: string[] = [];
  for (const stored of log) {
    const event = parseCustomerAccountEvent(stored.type, stored.data);
    if (event === null) throw new Error(`unknown event type ${stored.type} at ${stored.position}`);
    const customerId = event.data.customer_id;
    const state = evolve(states.get(customerId) ?? initialState(), event);
    states.set(customerId, state);
    for (const { from, to, amountWei } of transfersOf(stored.data)) {
      if (amountWei <= 0n || from === to) violations.push(`${stored.position}: transfer of ${amountWei} from ${from} to ${to}`);
      ledgerAccounts.set(from, (ledgerAccounts.get(from) ?? 0n) - amountWei);
      ledgerAccounts.set(to, (ledgerAccounts.get(to) ?? 0n) + amountWei);
    }
    if (event.type === 'ReservationCaptured' || event.type === 'ReservationReleased') {
      const job = `${customerId}/${event.data.job_id}`;
      resolutionsPerJob.set(job, (resolutionsPerJob.get(job) ?? 0) + 1);
    }
    const command = commandsByEventId.get(stored.eventId);
    const broken = command === undefined ? `no command appended event ${stored.eventId}` : books.apply(command);
    if (broken !== null) violations.push(`${stored.position}: ${broken}`);
    violations.push(...booksAfter(stored.position, customerId, state, ledgerAccounts));
  }
  t.same(violations, [], `the books hold at each of ${log.length} positions`);
  t.same([...resolutionsPerJob].filter(([, count]) => count > 1), [], 'each reservation resolves at most once');

  const folded = new Map([...states].map(([customerId, state]) => [customerId, balancesOf(state)]));
  t.same(sorted(folded), sorted(books.balances()), 'the fold of the log equals the sequential model');
  t.same(sorted(ledgerAccounts), sorted(books.ledger), 'the transfers in the log equal the sequential model');
  const appended = results.filter((result) => result.outcome === 'appended').map((result) => result.command);
  const summed = new Map(
    [...folded].map(([customerId, balances]) => [customerId, { availableWei: balances?.availableWei, reservedWei: balances?.reservedWei }]),
  );
  t.same(sorted(summed), sorted(sumOfOutcomes(appended)), 'the fold of the log equals the sum of the outcomes');
  return { balances: folded, ledgerAccounts };
}

/** What must hold after every event: nothing negative, and the state and the accounts agree. */
function booksAfter(position: bigint, customerId: string, state: CustomerAccountState, ledgerAccounts: Map<string, bigint>): string[] {
  if (state.status !== 'open') return [`${position}: an event for absent customer ${customerId}`];
  const broken: string[] = [];
  const check = (holds: boolean, rule: string) => {
    if (!holds) broken.push(`${position}: ${rule}`);
  };
  const { availableWei, reservedWei } = state;
  check(availableWei >= 0n && reservedWei >= 0n, `${customerId} at ${availableWei} available, ${reservedWei} reserved`);
  const heldWei = [...state.openReservations.values()].reduce((sum, amountWei) => sum + amountWei, 0n);
  check(heldWei === reservedWei, `${customerId} reserves ${reservedWei} but its open jobs hold ${heldWei}`);
  const balanceOf = (account: string) => ledgerAccounts.get(account) ?? 0n;
  check(balanceOf(accounts.customerAvailable(customerId)) === availableWei, `${customerId}'s available account ≠ its state`);
  check(balanceOf(accounts.customerReserved(customerId)) === reservedWei, `${customerId}'s reserved account ≠ its state`);
  const total = [...ledgerAccounts.values()].reduce((sum, amountWei) => sum + amountWei, 0n);
  check(total === 0n, `the accounts sum to ${total}`);
  for (const [account, balanceWei] of ledgerAccounts) {
    const owed = account === accounts.protocolFees || account.startsWith('node:');
    check(!(owed && balanceWei < 0n) && !(account === accounts.externalDeposits && balanceWei > 0n), `${account} at ${balanceWei}`);
  }
  return broken;
}

/** Each worker's cached state equals the decider's fold of the stream up to the cached version. */
async function checkCaches(t: Test, contexts: CustomerAccountContext[], customers: string[], log: StoredEvent[]): Promise<void> {
  const mismatches: string[] = [];
  for (const customerId of customers) {
    const stream = log.filter((stored) => stored.streamName === customerStreamName(customerId));
    const foldTo = (version: bigint) =>
      balancesOf(
        stream
          .filter((stored) => stored.streamVersion <= version)
          .reduce((state, stored) => evolve(state, parseCustomerAccountEvent(stored.type, stored.data)!), initialState()),
      );
    const full = foldTo(BigInt(stream.length));
    for (const [worker, context] of contexts.entries()) {
      const cached = context.cache.get(customerStreamName(customerId));
      if (cached !== undefined && plain(balancesOf(cached.state)) !== plain(foldTo(cached.version))) {
        mismatches.push(`worker ${worker} ${customerId} at version ${cached.version}`);
      }
      // A replayed command brings the cache up to the head: it must then equal the whole fold.
      const current = await executeAccountCommand(context, { type: 'CreateCustomer', customerId });
      if (plain(balancesOf(current.state)) !== plain(full)) mismatches.push(`worker ${worker} ${customerId} at the head`);
    }
  }
  t.same(mismatches, [], 'every cached state equals the fold of its stream');
}

/** customer_balances and ledger_accounts after catch-up, and again after a rebuild, equal the fold. */
async function checkProjections(t: Test, ledger: LedgerDatabase, folded: ReturnType<typeof checkLog>): Promise<void> {
  const runner = new ProjectionRunner(ledger.store, ledger.db, allProjections);
  const expectedBalances = Object.fromEntries(
    [...folded.balances].map(([customerId, balances]) => {
      const availableWei = balances?.availableWei ?? 0n;
      const reservedWei = balances?.reservedWei ?? 0n;
      return [customerId, { available: String(availableWei), reserved: String(reservedWei), balance: String(availableWei + reservedWei) }];
    }),
  );
  const expectedAccounts = Object.fromEntries([...folded.ledgerAccounts].map(([account, balanceWei]) => [account, String(balanceWei)]));
  const projectedRows = async () => ({
    entries: (await sql`SELECT * FROM ledger_entries ORDER BY entry_id`.execute(ledger.db)).rows,
    balances: (await sql`SELECT * FROM customer_balances ORDER BY customer_id`.execute(ledger.db)).rows,
    accounts: (await sql`SELECT * FROM ledger_accounts ORDER BY account`.execute(ledger.db)).rows,
  });
  let caughtUp: Awaited<ReturnType<typeof projectedRows>> | null = null;
  for (const pass of ['catch-up', 'rebuild'] as const) {
    await (pass === 'catch-up' ? runner.catchUp() : runner.rebuild());
    // The rebuild replays set-wise in SQL; catch-up applies event by event: every column must agree.
    if (pass === 'catch-up') caughtUp = await projectedRows();
    else t.same(await projectedRows(), caughtUp, 'the set-based rebuild leaves exactly the rows of event-by-event catch-up');
    const balanceRows = await ledger.db
      .selectFrom('customer_balances')
      .select(['customer_id', 'available_wei', 'reserved_wei', 'balance_wei'])
      .execute();
    const balances = Object.fromEntries(
      balanceRows.map((row) => [row.customer_id, { available: row.available_wei, reserved: row.reserved_wei, balance: row.balance_wei }]),
    );
    t.same(balances, expectedBalances, `customer_balances after ${pass} equals the fold`);
    const accountRows = await ledger.db.selectFrom('ledger_accounts').select(['account', 'balance_wei']).execute();
    const accountBalances = Object.fromEntries(accountRows.map((row) => [row.account, row.balance_wei]));
    t.same(accountBalances, expectedAccounts, `ledger_accounts after ${pass} equals the fold`);
    const total = await sql<{ total: string }>`SELECT coalesce(sum(balance_wei), 0)::text AS total FROM ledger_accounts`.execute(ledger.db);
    t.equal(total.rows[0]?.total, '0', `ledger_accounts sums to zero after ${pass}`);
  }
}

/** JSON with bigints as decimal strings: for messages, and to compare values that hold bigints. */
function plain(value: unknown): string {
  return JSON.stringify(value, (_key, entry: unknown) => (typeof entry === 'bigint' ? String(entry) : entry));
}

function sorted<V>(map: Map<string, V>): Record<string, V> {
  return Object.fromEntries([...map].sort(([left], [right]) => left.localeCompare(right)));
}
