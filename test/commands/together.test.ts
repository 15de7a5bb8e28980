import t from 'tap';
import { AggregateCache } from '../../src/commands/aggregateCache.ts';
import { accountCommand, executeAccountCommand, readAccountState, type CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import { handleCommandsTogether } from '../../src/commands/handleCommand.ts';
import { jobCommand, readJobState, type JobContext } from '../../src/commands/job.ts';
import { StreamLocks } from '../../src/commands/streamLocks.ts';
import { evolve as evolveAccount, initialState as initialAccountState } from '../../src/deciders/customerAccount/decider.ts';
import type { JobCommand, JobState } from '../../src/deciders/job/decider.ts';
import { parseCustomerAccountEvent } from '../../src/events/customerAccount.ts';
import type { AppendOptions, AppendResult, EventStore, ExpectedVersion, NewEvent } from '../../src/eventStore/port.ts';
import { domainErrorCode, freshContext, openLedger, SpyingStore, startServer } from '../support/ledger.ts';
import { eventually } from '../support/waiting.ts';

/**
 * Commands of two aggregates decided together and appended atomically, as the gateway reserves
 * and starts a job, then settles and finishes it: both take effect, or neither does.
 */

const server = await startServer(t);
const url = await server.createDatabase();
const ledger = await openLedger(t, url);
const store = ledger.store;

function contexts(eventStore: EventStore = store): { accounts: CustomerAccountContext; jobs: JobContext } {
  return { accounts: { ...freshContext(eventStore), locks: new StreamLocks() }, jobs: { store: eventStore, cache: new AggregateCache<JobState>(), locks: new StreamLocks() } };
}

const start = (jobId: string, customerId: string, attemptId = `attempt-${jobId}`): JobCommand => ({
  type: 'StartJob',
  request: {
    job_id: jobId,
    customer_id: customerId,
    key_id: 'key-1',
    model_id: 'model-1',
    stream: false,
    max_tokens: 16,
    quoted_price_wei: '100',
    policy_version: 'v1',
    prompt_price_per_million_wei: '1',
    completion_price_per_million_wei: '1',
  },
  attemptId,
});

async function funded(customerId: string, amountWei: bigint, context: CustomerAccountContext): Promise<void> {
  await executeAccountCommand(context, { type: 'CreateCustomer', customerId });
  await executeAccountCommand(context, { type: 'Deposit', customerId, reference: `ref-${customerId}`, amountWei });
}

async function available(customerId: string): Promise<bigint> {
  const state = await readAccountState(freshContext(store), customerId);
  if (state.status !== 'open') throw new Error('expected an open account');
  return state.availableWei;
}

t.test('a reservation and the job it pays for are appended together, at consecutive positions', async (t) => {
  const { accounts, jobs } = contexts();
  await funded('both-1', 1_000n, accounts);
  const head = await store.headPosition();
  const [reserved, started] = await handleCommandsTogether(
    accountCommand(accounts, { type: 'Reserve', customerId: 'both-1', jobId: 'job-both-1', amountWei: 100n }),
    jobCommand(jobs, start('job-both-1', 'both-1')),
  );
  t.same(
    [...reserved.events, ...started.events].map((event) => [event.position, event.type]),
    [
      [head + 1n, 'FundsReserved'],
      [head + 2n, 'JobRequested'],
    ],
  );
  t.equal(reserved.state.status === 'open' && reserved.state.reservedWei, 100n, 'each outcome carries its own aggregate state');
  t.equal(started.state.status, 'started');
  t.equal(await available('both-1'), 900n);
});

t.test('a refusal of either command appends nothing for both', async (t) => {
  const { accounts, jobs } = contexts();
  await funded('refuse-1', 1_000n, accounts);
  await handleCommandsTogether(
    accountCommand(accounts, { type: 'Reserve', customerId: 'refuse-1', jobId: 'job-refuse-1', amountWei: 100n }),
    jobCommand(jobs, start('job-refuse-1', 'refuse-1')),
  );
  const head = await store.headPosition();
  const jobTaken = handleCommandsTogether(
    accountCommand(accounts, { type: 'Reserve', customerId: 'refuse-1', jobId: 'job-refuse-2', amountWei: 100n }),
    jobCommand(jobs, start('job-refuse-1', 'refuse-1', 'another-attempt')),
  );
  t.equal(await domainErrorCode(jobTaken), 'idempotency_key_in_use', 'the job id is taken');
  const tooMuch = handleCommandsTogether(
    accountCommand(accounts, { type: 'Reserve', customerId: 'refuse-1', jobId: 'job-refuse-3', amountWei: 10_000n }),
    jobCommand(jobs, start('job-refuse-3', 'refuse-1')),
  );
  t.equal(await domainErrorCode(tooMuch), 'insufficient_balance');
  t.equal(await store.headPosition(), head, 'nothing appended');
  t.equal(await available('refuse-1'), 900n, 'the refused reservation holds nothing');
  t.equal((await readJobState(contexts().jobs, 'job-refuse-3')).status, 'absent', 'and the refused job does not exist');
});

t.test('the same group again is a replay that appends nothing', async (t) => {
  const { accounts, jobs } = contexts();
  await funded('replay-1', 1_000n, accounts);
  const group = () =>
    handleCommandsTogether(
      accountCommand(accounts, { type: 'Reserve', customerId: 'replay-1', jobId: 'job-replay-1', amountWei: 100n }),
      jobCommand(jobs, start('job-replay-1', 'replay-1')),
    );
  const first = await group();
  const head = await store.headPosition();
  const again = await group();
  t.same(again.map((outcome) => outcome.replayed), [true, true]);
  t.same(again.map((outcome) => outcome.events.map((event) => event.eventId)), first.map((outcome) => outcome.events.map((event) => event.eventId)));
  t.equal(await store.headPosition(), head);
  t.equal(await available('replay-1'), 900n, 'reserved once');
});

t.test('a group decided on a stale cache loses at the version check and is decided again on the log', async (t) => {
  const spy = new SpyingStore(store);
  const first = contexts(spy);
  const second = contexts((await openLedger(t, url)).store);
  await funded('stale-1', 100n, first.accounts);
  // The first process's cache says 100 wei are available; another process spends them.
  await executeAccountCommand(second.accounts, { type: 'Reserve', customerId: 'stale-1', jobId: 'job-elsewhere', amountWei: 100n });
  const head = await store.headPosition();
  const refused = handleCommandsTogether(
    accountCommand(first.accounts, { type: 'Reserve', customerId: 'stale-1', jobId: 'job-stale-1', amountWei: 100n }),
    jobCommand(first.jobs, start('job-stale-1', 'stale-1')),
  );
  t.equal(await domainErrorCode(refused), 'insufficient_balance');
  t.equal(spy.versionConflicts, 1, 'the stale decision was refused by the store');
  t.equal(await store.headPosition(), head, 'and nothing of it was written');
});

t.test('groups that name the same streams in opposite orders never wait on each other', async (t) => {
  const { accounts } = contexts();
  await funded('order-a', 1_000n, accounts);
  await funded('order-b', 1_000n, accounts);
  const deposits = Array.from({ length: 20 }, (_, index) => {
    const [one, two] = index % 2 === 0 ? ['order-a', 'order-b'] : ['order-b', 'order-a'];
    return handleCommandsTogether(
      accountCommand(accounts, { type: 'Deposit', customerId: one, reference: `d-${index}`, amountWei: 1n }),
      accountCommand(accounts, { type: 'Deposit', customerId: two, reference: `d-${index}`, amountWei: 1n }),
    );
  });
  const outcomes = await Promise.race([
    Promise.all(deposits),
    new Promise<'stuck'>((resolve) => setTimeout(() => resolve('stuck'), 20_000).unref()),
  ]);
  t.not(outcomes, 'stuck', 'all twenty groups finished');
  t.same([await available('order-a'), await available('order-b')], [1_020n, 1_020n]);
});

t.test('a command appears once per group', async (t) => {
  const { accounts } = contexts();
  await t.rejects(
    handleCommandsTogether(
      accountCommand(accounts, { type: 'Deposit', customerId: 'twice', reference: 'a', amountWei: 1n }),
      accountCommand(accounts, { type: 'Deposit', customerId: 'twice', reference: 'b', amountWei: 1n }),
    ),
    /one command per stream/,
  );
});

/** Holds every append until the test lets them go, and records what each expected. */
class HeldStore extends SpyingStore {
  readonly expected: Array<{ streamName: string; expectedVersion: ExpectedVersion }> = [];
  private gate: Promise<void> = Promise.resolve();
  private open: () => void = () => {};

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open();
  }

  override async append(streamName: string, events: NewEvent[], options: AppendOptions): Promise<AppendResult> {
    this.expected.push({ streamName, expectedVersion: options.expectedVersion });
    await this.gate;
    return super.append(streamName, events, options);
  }
}

t.test('commands on one account queue behind an append in flight, deciding on the state it will write', async (t) => {
  const held = new HeldStore(store);
  const { accounts } = contexts(held);
  await funded('pipe-1', 100n, accounts);
  const version = BigInt((await store.readStream('customer-pipe-1')).length);
  held.expected.length = 0;
  held.hold();
  const deposits = [1, 2, 3].map((index) => executeAccountCommand(accounts, { type: 'Deposit', customerId: 'pipe-1', reference: `pipe-${index}`, amountWei: 10n }));
  await eventually('all three appends queued while the first has not committed', () => held.expected.length === 3);
  t.same(
    held.expected.map((append) => append.expectedVersion),
    [version, version + 1n, version + 2n],
    'each expects the version the one before it will write',
  );
  held.release();
  const outcomes = await Promise.all(deposits);
  t.same(outcomes.map((outcome) => outcome.events[0]!.streamVersion), [version + 1n, version + 2n, version + 3n]);
  t.equal(held.versionConflicts, 0);
  t.equal(await available('pipe-1'), 130n);
});

t.test('when an append in flight loses to another writer, the ones queued on it are decided again on the log', async (t) => {
  const held = new HeldStore(store);
  const { accounts } = contexts(held);
  const other = contexts((await openLedger(t, url)).store);
  await funded('pipe-2', 100n, accounts);
  held.expected.length = 0;
  held.hold();
  const reserve = (job: string, amountWei: bigint) =>
    domainErrorCode(executeAccountCommand(accounts, { type: 'Reserve', customerId: 'pipe-2', jobId: `job-pipe-2-${job}`, amountWei }));
  const reserves = [reserve('a', 60n), reserve('b', 40n), reserve('c', 10n)];
  // 60 and 40 fit in the 100 this process knows of; the 10 is refused by that state, so it waits
  // for the log to settle instead of believing the refusal.
  await eventually('two reservations queued on a balance of 100 in this process', () => held.expected.length === 2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.equal(held.expected.length, 2, 'the third has not appended on a refusal it has not checked');
  // Meanwhile another process reserves 70 of the 100: its event takes the version the first
  // queued append expected, which is the version the second one expects to follow.
  await executeAccountCommand(other.accounts, { type: 'Reserve', customerId: 'pipe-2', jobId: 'job-pipe-2-elsewhere', amountWei: 70n });
  held.release();
  t.same(await Promise.all(reserves), ['insufficient_balance', 'insufficient_balance', 'succeeded'], 'decided on the 30 that were left');
  t.ok(held.versionConflicts >= 2, 'both queued appends failed their check');
  t.equal(await available('pipe-2'), 20n, 'never below zero, nothing decided on a state the log does not hold');
});

t.test('an append queued on one that reused another operation\'s event ids is decided again, never on a state the log lacks', async (t) => {
  // Found in review: the first append's ids were already stored by another operation with other
  // content (the same deposit reference, another amount). The log's last event then has the id
  // the queued append expects, at the version it expects; only its content tells it apart.
  const first = contexts();
  const second = contexts((await openLedger(t, url)).store);
  await funded('reuse-1', 100n, first.accounts);
  await readAccountState(second.accounts, 'reuse-1');
  await executeAccountCommand(first.accounts, { type: 'Deposit', customerId: 'reuse-1', reference: 'wire-9', amountWei: 10n });
  // The second process has not seen that deposit; it takes the same reference for 1000 and, on
  // the state that would leave, a reservation of 500.
  const [deposit, reservation] = await Promise.all([
    domainErrorCode(executeAccountCommand(second.accounts, { type: 'Deposit', customerId: 'reuse-1', reference: 'wire-9', amountWei: 1_000n })),
    domainErrorCode(executeAccountCommand(second.accounts, { type: 'Reserve', customerId: 'reuse-1', jobId: 'job-reuse-1', amountWei: 500n })),
  ]);
  t.same([deposit, reservation], ['idempotency_key_reused', 'insufficient_balance']);
  t.equal(await available('reuse-1'), 110n);
  t.equal(
    await domainErrorCode(executeAccountCommand(second.accounts, { type: 'Reserve', customerId: 'reuse-1', jobId: 'job-reuse-2', amountWei: 500n })),
    'insufficient_balance',
    'and the second process does not keep a state the log never held',
  );
});

t.test('a group is a replay only when every command of it is in the log', async (t) => {
  // Recovery released the reservation alone; the request then settles with Release + FinishJob.
  const { accounts, jobs } = contexts();
  await funded('half-1', 1_000n, accounts);
  await handleCommandsTogether(
    accountCommand(accounts, { type: 'Reserve', customerId: 'half-1', jobId: 'job-half-1', amountWei: 100n }),
    jobCommand(jobs, start('job-half-1', 'half-1')),
  );
  await executeAccountCommand(accounts, { type: 'Release', customerId: 'half-1', jobId: 'job-half-1', reason: 'stale_reservation_recovered' });
  const settled = handleCommandsTogether(
    accountCommand(accounts, { type: 'Release', customerId: 'half-1', jobId: 'job-half-1', reason: 'response_incomplete' }),
    jobCommand(jobs, { type: 'FinishJob', jobId: 'job-half-1', outcome: { attempts: [], firstByteMs: null, completion: null, receipt: null, failure: 'response_incomplete' } }),
  );
  t.equal(await domainErrorCode(settled), 'reservation_not_open', 'refused, not answered as if the job had been finished');
  t.same((await store.readStream('job-job-half-1')).map((event) => event.type), ['JobRequested'], 'the caller still has to finish the job');
});

t.test('a chain of queued appends holds only if every link was written by this process, not replayed', async (t) => {
  // Found in the second review: Z loses a version race, A (queued on Z) is a deposit the other
  // process wrote identically meanwhile, so A replays; B (queued on A) must not pass on the stream
  // that now ends with an event identical to A's, since the state it was decided on includes Z.
  const held = new HeldStore(store);
  const { accounts } = contexts(held);
  const other = contexts((await openLedger(t, url)).store);
  await funded('chain-1', 100n, accounts);
  held.expected.length = 0;
  held.hold();
  const z = domainErrorCode(executeAccountCommand(accounts, { type: 'Deposit', customerId: 'chain-1', reference: 'wire-X', amountWei: 1_000n }));
  const a = domainErrorCode(executeAccountCommand(accounts, { type: 'Deposit', customerId: 'chain-1', reference: 'wire-Y', amountWei: 1n }));
  const b = domainErrorCode(executeAccountCommand(accounts, { type: 'Reserve', customerId: 'chain-1', jobId: 'job-chain-1', amountWei: 1_000n }));
  await eventually('three appends queued on each other', () => held.expected.length === 3);
  await executeAccountCommand(other.accounts, { type: 'Reserve', customerId: 'chain-1', jobId: 'job-chain-elsewhere', amountWei: 100n });
  await executeAccountCommand(other.accounts, { type: 'Deposit', customerId: 'chain-1', reference: 'wire-Y', amountWei: 1n });
  held.release();
  const outcomes = [await z, await a, await b];
  t.same(outcomes.slice(0, 2), ['succeeded', 'succeeded'], 'wire-X lands on its retry; wire-Y is a replay of the other process\'s deposit');
  const folded = (await store.readStream('customer-chain-1')).reduce<{ state: ReturnType<typeof initialAccountState>; lowest: bigint }>(
    (fold, event) => {
      const state = evolveAccount(fold.state, parseCustomerAccountEvent(event.type, event.data)!);
      return { state, lowest: state.status === 'open' && state.availableWei < fold.lowest ? state.availableWei : fold.lowest };
    },
    { state: initialAccountState(), lowest: 0n },
  );
  t.equal(folded.lowest, 0n, 'available never below zero at any version of the stream');
  // 100 + 1000 + 1 deposited, 100 reserved elsewhere; the 1,000 reservation holds only if it was
  // decided again after wire-X landed.
  t.equal(await available('chain-1'), outcomes[2] === 'succeeded' ? 1n : 1_001n, `the books match the outcomes: ${JSON.stringify(outcomes)}`);
});
