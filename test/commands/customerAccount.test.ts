import t, { type Test } from 'tap';
import { executeAccountCommand, type CustomerAccountContext } from '../../src/commands/customerAccount.ts';
import type { CommandOutcome } from '../../src/commands/handleCommand.ts';
import type { CustomerAccountCommand, CustomerAccountState } from '../../src/deciders/customerAccount/decider.ts';
import { customerStreamName } from '../../src/events/customerAccount.ts';
import { domainErrorCode, freshContext, openLedger, SpyingStore, startServer } from '../support/ledger.ts';

const server = await startServer(t);
const url = await server.createDatabase();
const ledger = await openLedger(t, url);
const store = ledger.store;

const create = (customerId: string): CustomerAccountCommand => ({ type: 'CreateCustomer', customerId });
const deposit = (customerId: string, reference: string, amountWei: bigint): CustomerAccountCommand => ({
  type: 'Deposit',
  customerId,
  reference,
  amountWei,
});
const reserve = (customerId: string, jobId: string, amountWei: bigint): CustomerAccountCommand => ({
  type: 'Reserve',
  customerId,
  jobId,
  amountWei,
});
const capture = (customerId: string, jobId: string, costWei: bigint): CustomerAccountCommand => ({
  type: 'Capture',
  customerId,
  jobId,
  costWei,
  nodeId: 'node-1',
  nodeShareBps: 8000,
});
const release = (customerId: string, jobId: string): CustomerAccountCommand => ({ type: 'Release', customerId, jobId, reason: 'timeout' });

function balances(state: CustomerAccountState): { availableWei: bigint; reservedWei: bigint } {
  if (state.status !== 'open') throw new Error('expected an open account');
  return { availableWei: state.availableWei, reservedWei: state.reservedWei };
}

async function streamTypes(customerId: string): Promise<string[]> {
  return (await store.readStream(customerStreamName(customerId))).map((event) => event.type);
}

/** Runs commands one after another, so a test can set up an account in one line. */
async function run(context: CustomerAccountContext, ...commands: CustomerAccountCommand[]): Promise<CommandOutcome<CustomerAccountState>> {
  let last: CommandOutcome<CustomerAccountState> | undefined;
  for (const command of commands) last = await executeAccountCommand(context, command);
  if (last === undefined) throw new Error('run needs at least one command');
  return last;
}

/** Asserts the command fails with the code and that the log did not grow. */
async function refusedWithoutAppending(t: Test, context: CustomerAccountContext, command: CustomerAccountCommand, code: string) {
  const head = await store.headPosition();
  t.equal(await domainErrorCode(executeAccountCommand(context, command)), code, `${command.type} → ${code}`);
  t.equal(await store.headPosition(), head, 'nothing appended');
}

t.test('idempotency by operation key', async (t) => {
  t.test('the same deposit reference and amount credits once; the retry is a replay', async (t) => {
    const context = freshContext(store);
    await run(context, create('dep-1'));
    const first = await executeAccountCommand(context, deposit('dep-1', 'ref-1', 500n));
    const second = await executeAccountCommand(context, deposit('dep-1', 'ref-1', 500n));
    const fromAnotherCache = await executeAccountCommand(freshContext(store), deposit('dep-1', 'ref-1', 500n));
    t.same([first.replayed, second.replayed, fromAnotherCache.replayed], [false, true, true]);
    t.same(second.events, first.events, 'the replay answers with the stored event');
    t.same(fromAnotherCache.events, first.events);
    t.same(balances(second.state), { availableWei: 500n, reservedWei: 0n });
    t.same(await streamTypes('dep-1'), ['CustomerCreated', 'FundsDeposited']);
  });

  t.test('the same deposit reference with another amount is refused and appends nothing', async (t) => {
    const context = freshContext(store);
    await run(context, create('dep-2'), deposit('dep-2', 'ref-1', 500n));
    await refusedWithoutAppending(t, context, deposit('dep-2', 'ref-1', 501n), 'idempotency_key_reused');
    await refusedWithoutAppending(t, freshContext(store), deposit('dep-2', 'ref-1', 501n), 'idempotency_key_reused');
    t.same(balances((await run(context, deposit('dep-2', 'ref-1', 500n))).state), { availableWei: 500n, reservedWei: 0n });
  });

  t.test('a retried capture is a replay; a capture with another cost is refused', async (t) => {
    const context = freshContext(store);
    await run(context, create('cap-1'), deposit('cap-1', 'ref-1', 1000n), reserve('cap-1', 'job-1', 600n));
    const first = await executeAccountCommand(context, capture('cap-1', 'job-1', 250n));
    const retry = await executeAccountCommand(context, capture('cap-1', 'job-1', 250n));
    const retryElsewhere = await executeAccountCommand(freshContext(store), capture('cap-1', 'job-1', 250n));
    t.same([first.replayed, retry.replayed, retryElsewhere.replayed], [false, true, true]);
    t.same(retry.events, first.events);
    t.same(balances(retry.state), { availableWei: 750n, reservedWei: 0n });
    await refusedWithoutAppending(t, context, capture('cap-1', 'job-1', 300n), 'reservation_already_resolved');
    t.same(await streamTypes('cap-1'), ['CustomerCreated', 'FundsDeposited', 'FundsReserved', 'ReservationCaptured']);
  });

  t.test('capture and release share one resolution: the second is refused', async (t) => {
    const context = freshContext(store);
    await run(context, create('res-1'), deposit('res-1', 'ref-1', 1000n), reserve('res-1', 'job-1', 100n), reserve('res-1', 'job-2', 100n));
    await run(context, capture('res-1', 'job-1', 40n), release('res-1', 'job-2'));
    await refusedWithoutAppending(t, context, release('res-1', 'job-1'), 'reservation_already_resolved');
    await refusedWithoutAppending(t, freshContext(store), release('res-1', 'job-1'), 'reservation_already_resolved');
    await refusedWithoutAppending(t, context, capture('res-1', 'job-2', 0n), 'reservation_already_resolved');
    t.equal((await executeAccountCommand(context, release('res-1', 'job-2'))).replayed, true, 'a retried release is a replay');
  });

  t.test('a job id is reserved once, even after its reservation is resolved', async (t) => {
    const context = freshContext(store);
    await run(context, create('job-1'), deposit('job-1', 'ref-1', 1000n), reserve('job-1', 'job-1', 100n), release('job-1', 'job-1'));
    const again = await executeAccountCommand(context, reserve('job-1', 'job-1', 100n));
    t.equal(again.replayed, true, 'the same reservation again is the earlier one, not a new hold');
    t.same(balances(again.state), { availableWei: 1000n, reservedWei: 0n });
    await refusedWithoutAppending(t, context, reserve('job-1', 'job-1', 200n), 'reservation_already_exists');
  });

  t.test('creating a customer twice is a replay', async (t) => {
    const context = freshContext(store);
    const first = await executeAccountCommand(context, create('twice'));
    const second = await executeAccountCommand(freshContext(store), create('twice'));
    t.same([first.replayed, second.replayed], [false, true]);
    t.same(await streamTypes('twice'), ['CustomerCreated']);
  });
});

t.test('concurrency', async (t) => {
  for (const caches of ['one shared cache', 'a cache each'] as const) {
    t.test(`ten identical deposits at once credit once (${caches})`, async (t) => {
      const shared = freshContext(store);
      await run(shared, create(`conc-${caches}`));
      const outcomes = await Promise.all(
        Array.from({ length: 10 }, () =>
          executeAccountCommand(caches === 'one shared cache' ? shared : freshContext(store), deposit(`conc-${caches}`, 'ref-1', 70n)),
        ),
      );
      t.equal(outcomes.filter((outcome) => !outcome.replayed).length, 1, 'exactly one appended');
      t.equal(new Set(outcomes.map((outcome) => outcome.events[0]?.eventId)).size, 1, 'all answer with the same event');
      t.same(await streamTypes(`conc-${caches}`), ['CustomerCreated', 'FundsDeposited']);
      const replay = await run(freshContext(store), deposit(`conc-${caches}`, 'ref-1', 70n));
      t.same(balances(replay.state), { availableWei: 70n, reservedWei: 0n });
    });
  }

  t.test('identical retries racing their original are replays, never refusals', async (t) => {
    const setup = freshContext(store);
    await run(setup, create('race-0'), deposit('race-0', 'ref-1', 1000n));
    // Ten copies of each command at once, each from its own process: a client retrying a request
    // that is still in flight. Whatever the interleaving, one appends and the others replay it.
    const copies = async (command: CustomerAccountCommand) => {
      const attempts = Array.from({ length: 10 }, () => domainErrorCode(executeAccountCommand(freshContext(store), command)));
      const outcomes = await Promise.all(attempts);
      t.same(outcomes, Array(10).fill('succeeded'), `${command.type} copies all succeed`);
    };
    for (let job = 0; job < 10; job += 1) {
      await copies(reserve('race-0', `job-${job}`, 10n));
      await copies(job % 2 === 0 ? capture('race-0', `job-${job}`, 3n) : release('race-0', `job-${job}`));
    }
    await copies(create('race-00'));
    t.equal((await streamTypes('race-0')).length, 22, 'one event per operation');
  });

  t.test('a capture and a release of one job at once: exactly one resolves it', async (t) => {
    const setup = freshContext(store);
    await run(setup, create('race-1'), deposit('race-1', 'ref-1', 1000n), reserve('race-1', 'job-1', 500n));
    const codes = await Promise.all([
      domainErrorCode(executeAccountCommand(freshContext(store), capture('race-1', 'job-1', 100n))),
      domainErrorCode(executeAccountCommand(freshContext(store), release('race-1', 'job-1'))),
    ]);
    t.same([...codes].sort(), ['reservation_already_resolved', 'succeeded']);
    t.equal((await streamTypes('race-1')).filter((type) => type.startsWith('Reservation')).length, 1);
  });

  t.test('ten reservations of the whole balance at once: exactly one holds it', async (t) => {
    const setup = freshContext(store);
    await run(setup, create('race-2'), deposit('race-2', 'ref-1', 1000n));
    const codes = await Promise.all(
      Array.from({ length: 10 }, (_, index) =>
        domainErrorCode(executeAccountCommand(freshContext(store), reserve('race-2', `job-${index}`, 1000n))),
      ),
    );
    t.equal(codes.filter((code) => code === 'succeeded').length, 1);
    t.equal(codes.filter((code) => code === 'insufficient_balance').length, 9);
    t.same(balances((await run(setup, create('race-2'))).state), { availableWei: 0n, reservedWei: 1000n });
  });
});

t.test('the aggregate cache', async (t) => {
  t.test('a command decides on the cached state without reading, and a cold cache reads the history once', async (t) => {
    const spy = new SpyingStore(store);
    const context = freshContext(spy);
    await run(context, create('hist-1'));
    for (let index = 0; index < 60; index += 1) await run(context, deposit('hist-1', `ref-${index}`, 1n));
    t.equal(Math.max(...spy.reads.map((read) => read.eventsRead)), 0, 'no command re-read the history');
    spy.reads.length = 0;
    await run(context, reserve('hist-1', 'job-1', 60n));
    t.same(spy.reads, [], 'the 62nd command reads nothing: the append checks that the stream is still at version 61');
    t.equal(spy.versionConflicts, 0);

    spy.reads.length = 0;
    const cold = await run(freshContext(spy), release('hist-1', 'job-1'));
    t.same(spy.reads, [{ streamName: 'customer-hist-1', fromVersion: 0n, eventsRead: 62 }], 'a cold cache replays the stream once');
    t.same(balances(cold.state), { availableWei: 60n, reservedWei: 0n });
  });

  t.test('a second process appending in between is seen: no decision from a stale cache', async (t) => {
    const other = await openLedger(t, url);
    const spy = new SpyingStore(store);
    const first = freshContext(spy);
    const second = freshContext(other.store);
    await run(first, create('two-1'), deposit('two-1', 'ref-1', 100n));
    // The first process's cache now says 100 wei are available; the second spends them.
    await run(second, reserve('two-1', 'job-1', 100n));
    spy.reads.length = 0;
    t.equal(await domainErrorCode(executeAccountCommand(first, reserve('two-1', 'job-2', 100n))), 'insufficient_balance');
    t.same(spy.reads, [{ streamName: 'customer-two-1', fromVersion: 2n, eventsRead: 1 }], 'read exactly the missed event');
    t.equal(spy.versionConflicts, 1, 'the decision on the stale cache lost at the version check');

    // And the other way round: funds the second process adds are usable from the first at once.
    await run(second, deposit('two-1', 'ref-2', 40n));
    const reserved = await run(first, reserve('two-1', 'job-3', 40n));
    t.same(balances(reserved.state), { availableWei: 0n, reservedWei: 140n });
    t.same(balances((await run(second, release('two-1', 'job-1'))).state), { availableWei: 100n, reservedWei: 40n });
  });
});
