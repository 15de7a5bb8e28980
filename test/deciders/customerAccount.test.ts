import t, { type Test } from 'tap';
import {
  customerAccountDecider,
  evolve,
  initialState,
  type CustomerAccountCommand,
  type CustomerAccountState,
} from '../../src/deciders/customerAccount/decider.ts';
import { accounts, parseCustomerAccountEvent, type CustomerAccountEvent } from '../../src/events/customerAccount.ts';
import { spec } from '../support/deciderSpec.ts';

const account = spec(customerAccountDecider);
const customerId = 'cust-1';
const nodeId = 'node-7';
const available = accounts.customerAvailable(customerId);
const reserved = accounts.customerReserved(customerId);
const nodePayable = accounts.nodePayable(nodeId);

const created: CustomerAccountEvent = { type: 'CustomerCreated', data: { customer_id: customerId } };

function deposited(reference: string, amountWei: string): CustomerAccountEvent {
  const transfers = [{ from: accounts.externalDeposits, to: available, amount_wei: amountWei }];
  return { type: 'FundsDeposited', data: { customer_id: customerId, reference, amount_wei: amountWei, transfers } };
}

function reservedFor(jobId: string, amountWei: string): CustomerAccountEvent {
  const transfers = [{ from: available, to: reserved, amount_wei: amountWei }];
  return { type: 'FundsReserved', data: { customer_id: customerId, job_id: jobId, amount_wei: amountWei, transfers } };
}

function released(jobId: string, amountWei: string, reason: string): CustomerAccountEvent {
  const transfers = [{ from: reserved, to: available, amount_wei: amountWei }];
  return { type: 'ReservationReleased', data: { customer_id: customerId, job_id: jobId, amount_wei: amountWei, reason, transfers } };
}

function captured(
  jobId: string,
  amounts: { reserved: string; cost: string; node: string; fee: string; released: string },
  transfers: Array<{ from: string; to: string; amount_wei: string }>,
): CustomerAccountEvent {
  return {
    type: 'ReservationCaptured',
    data: {
      customer_id: customerId,
      job_id: jobId,
      node_id: nodeId,
      reserved_wei: amounts.reserved,
      cost_wei: amounts.cost,
      node_payable_wei: amounts.node,
      protocol_fee_wei: amounts.fee,
      released_wei: amounts.released,
      transfers,
    },
  };
}

const largest = '9'.repeat(78);
const create: CustomerAccountCommand = { type: 'CreateCustomer', customerId };
const deposit = (amountWei: bigint, reference = 'ref-1'): CustomerAccountCommand => ({ type: 'Deposit', customerId, reference, amountWei });
const reserve = (jobId: string, amountWei: bigint): CustomerAccountCommand => ({ type: 'Reserve', customerId, jobId, amountWei });
const capture = (jobId: string, costWei: bigint, nodeShareBps = 8000): CustomerAccountCommand => ({
  type: 'Capture',
  customerId,
  jobId,
  costWei,
  nodeId,
  nodeShareBps,
});
const release = (jobId: string): CustomerAccountCommand => ({ type: 'Release', customerId, jobId, reason: 'timeout' });

/**
 * The books a money event must keep: it parses under its published schema, every transfer moves a
 * positive amount between two different accounts, the transfers sum to zero over all accounts, and
 * their effect on the customer's two accounts is exactly the change evolve makes to the state.
 */
function keepsTheBooks(t: Test, history: readonly CustomerAccountEvent[], events: readonly CustomerAccountEvent[]): void {
  const before = openState(history.reduce(evolve, initialState()));
  const after = openState(events.reduce(evolve, before));
  const net = new Map<string, bigint>();
  for (const event of events) {
    t.same(parseCustomerAccountEvent(event.type, event.data), event, `${event.type} parses under its schema`);
    if (event.type === 'CustomerCreated') continue;
    for (const transfer of event.data.transfers) {
      t.ok(BigInt(transfer.amount_wei) > 0n && transfer.from !== transfer.to, `${transfer.from} → ${transfer.to} moves money`);
      net.set(transfer.from, (net.get(transfer.from) ?? 0n) - BigInt(transfer.amount_wei));
      net.set(transfer.to, (net.get(transfer.to) ?? 0n) + BigInt(transfer.amount_wei));
    }
  }
  t.equal([...net.values()].reduce((sum, amount) => sum + amount, 0n), 0n, 'transfers sum to zero');
  t.equal(net.get(available) ?? 0n, after.availableWei - before.availableWei, 'available moves as the state does');
  t.equal(net.get(reserved) ?? 0n, after.reservedWei - before.reservedWei, 'reserved moves as the state does');
}

function openState(state: CustomerAccountState): Extract<CustomerAccountState, { status: 'open' }> {
  if (state.status !== 'open') throw new Error('expected an open account');
  return state;
}

/** Runs one then-case and checks the books of the events it expects. */
function expectEvents(
  t: Test,
  history: readonly CustomerAccountEvent[],
  command: CustomerAccountCommand,
  expected: readonly CustomerAccountEvent[],
): void {
  account.given(history).when(command).then(expected);
  keepsTheBooks(t, history, expected);
}

t.test('an absent account', async (t) => {
  t.test('is created', async () => account.given([]).when(create).then([created]));
  for (const command of [deposit(100n), reserve('job-1', 1n), capture('job-1', 0n), release('job-1')]) {
    t.test(`refuses ${command.type}`, async () => account.given([]).when(command).thenThrows('customer_not_found'));
  }
});

t.test('an open account without reservations', async (t) => {
  const funded = [created, deposited('ref-0', '1000')];
  t.test('cannot be created again', async () => account.given([created]).when(create).thenThrows('customer_already_exists'));
  t.test('takes a deposit from external deposits into available', async (t) =>
    expectEvents(t, [created], deposit(250n), [deposited('ref-1', '250')]),
  );
  t.test('takes a 78-digit deposit', async (t) => expectEvents(t, [created], deposit(10n ** 78n - 1n), [deposited('ref-1', largest)]));
  t.test('refuses a deposit that would take the balance past 78 digits', async () => {
    account.given([created]).when(deposit(10n ** 78n)).thenThrows('invalid_amount');
    account.given([created, deposited('ref-0', largest)]).when(deposit(1n)).thenThrows('invalid_amount');
    // Reserved funds are still the customer's: they count towards the bound as well.
    account.given([created, deposited('ref-0', largest), reservedFor('job-1', largest)]).when(deposit(1n)).thenThrows('invalid_amount');
  });
  t.test('refuses a zero deposit', async () => account.given([created]).when(deposit(0n)).thenThrows('invalid_amount'));
  t.test('refuses a negative deposit', async () => account.given([created]).when(deposit(-1n)).thenThrows('invalid_amount'));
  t.test('reserves exactly the available balance', async (t) =>
    expectEvents(t, funded, reserve('job-1', 1000n), [reservedFor('job-1', '1000')]),
  );
  t.test('refuses to reserve one wei more than available', async () =>
    account.given(funded).when(reserve('job-1', 1001n)).thenThrows('insufficient_balance'),
  );
  t.test('refuses to reserve with no funds', async () =>
    account.given([created]).when(reserve('job-1', 1n)).thenThrows('insufficient_balance'),
  );
  t.test('refuses a zero reservation', async () => account.given(funded).when(reserve('job-1', 0n)).thenThrows('invalid_amount'));
  t.test('refuses to capture an unknown job', async () =>
    account.given(funded).when(capture('job-1', 0n)).thenThrows('reservation_not_open'),
  );
  t.test('refuses to release an unknown job', async () => account.given(funded).when(release('job-1')).thenThrows('reservation_not_open'));
});

t.test('an open account with an open reservation', async (t) => {
  const holding = [created, deposited('ref-0', '1000'), reservedFor('job-1', '600')];
  const given = account.given(holding);

  t.test('refuses a second reservation for the same job, even one that fits', async () => {
    given.when(reserve('job-1', 100n)).thenThrows('reservation_already_exists');
    given.when(reserve('job-1', 600n)).thenThrows('reservation_already_exists');
  });
  t.test('reserves another job up to what is still available', async (t) =>
    expectEvents(t, holding, reserve('job-2', 400n), [reservedFor('job-2', '400')]),
  );
  t.test('does not count reserved funds as available', async () => given.when(reserve('job-2', 401n)).thenThrows('insufficient_balance'));
  t.test('takes a deposit while funds are reserved', async (t) => expectEvents(t, holding, deposit(5n), [deposited('ref-1', '5')]));

  t.test('captures the exact reservation: nothing is returned', async (t) =>
    expectEvents(t, holding, capture('job-1', 600n), [
      captured('job-1', { reserved: '600', cost: '600', node: '480', fee: '120', released: '0' }, [
        { from: reserved, to: nodePayable, amount_wei: '480' },
        { from: reserved, to: accounts.protocolFees, amount_wei: '120' },
      ]),
    ]),
  );
  t.test('captures part of the reservation and returns the rest to available', async (t) =>
    expectEvents(t, holding, capture('job-1', 250n), [
      captured('job-1', { reserved: '600', cost: '250', node: '200', fee: '50', released: '350' }, [
        { from: reserved, to: nodePayable, amount_wei: '200' },
        { from: reserved, to: accounts.protocolFees, amount_wei: '50' },
        { from: reserved, to: available, amount_wei: '350' },
      ]),
    ]),
  );
  t.test('captures a zero cost: only the return is transferred', async (t) =>
    expectEvents(t, holding, capture('job-1', 0n), [
      captured('job-1', { reserved: '600', cost: '0', node: '0', fee: '0', released: '600' }, [
        { from: reserved, to: available, amount_wei: '600' },
      ]),
    ]),
  );
  t.test('splits by the node share, rounding down for the node: the fee takes the remainder', async (t) =>
    expectEvents(t, holding, capture('job-1', 333n, 3333), [
      captured('job-1', { reserved: '600', cost: '333', node: '110', fee: '223', released: '267' }, [
        { from: reserved, to: nodePayable, amount_wei: '110' },
        { from: reserved, to: accounts.protocolFees, amount_wei: '223' },
        { from: reserved, to: available, amount_wei: '267' },
      ]),
    ]),
  );
  t.test('gives a one-wei cost to the fee when the node share rounds to zero', async (t) =>
    expectEvents(t, holding, capture('job-1', 1n, 9999), [
      captured('job-1', { reserved: '600', cost: '1', node: '0', fee: '1', released: '599' }, [
        { from: reserved, to: accounts.protocolFees, amount_wei: '1' },
        { from: reserved, to: available, amount_wei: '599' },
      ]),
    ]),
  );
  t.test('pays a node share of 100% without a fee transfer', async (t) =>
    expectEvents(t, holding, capture('job-1', 600n, 10_000), [
      captured('job-1', { reserved: '600', cost: '600', node: '600', fee: '0', released: '0' }, [
        { from: reserved, to: nodePayable, amount_wei: '600' },
      ]),
    ]),
  );
  t.test('refuses a cost one wei above the reservation', async () =>
    given.when(capture('job-1', 601n)).thenThrows('capture_exceeds_reservation'),
  );
  t.test('refuses a negative cost', async () => given.when(capture('job-1', -1n)).thenThrows('capture_exceeds_reservation'));
  t.test('treats a node share outside 0..10000 bps as a bug, not a client error', async (t) => {
    const state = holding.reduce(evolve, initialState());
    t.throws(() => customerAccountDecider.decide(capture('job-1', 1n, 10_001), state), /Invariant violated/);
  });
  t.test('releases all of the reservation', async (t) => expectEvents(t, holding, release('job-1'), [released('job-1', '600', 'timeout')]));
  t.test('refuses to resolve another job', async () => {
    given.when(capture('job-2', 0n)).thenThrows('reservation_not_open');
    given.when(release('job-2')).thenThrows('reservation_not_open');
  });
});

t.test('after the reservation is resolved', async (t) => {
  const base = [created, deposited('ref-0', '1000'), reservedFor('job-1', '600')];
  const afterCapture = [
    ...base,
    captured('job-1', { reserved: '600', cost: '100', node: '80', fee: '20', released: '500' }, [
      { from: reserved, to: nodePayable, amount_wei: '80' },
      { from: reserved, to: accounts.protocolFees, amount_wei: '20' },
      { from: reserved, to: available, amount_wei: '500' },
    ]),
  ];
  const afterRelease = [...base, released('job-1', '600', 'timeout')];
  for (const [name, history] of [['capture', afterCapture], ['release', afterRelease]] as const) {
    t.test(`after a ${name}, neither a capture nor a release of the job is open`, async () => {
      account.given(history).when(capture('job-1', 0n)).thenThrows('reservation_not_open');
      account.given(history).when(release('job-1')).thenThrows('reservation_not_open');
    });
  }
  t.test('the returned funds are available again', async (t) => {
    expectEvents(t, afterCapture, reserve('job-2', 900n), [reservedFor('job-2', '900')]);
    account.given(afterCapture).when(reserve('job-2', 901n)).thenThrows('insufficient_balance');
    expectEvents(t, afterRelease, reserve('job-2', 1000n), [reservedFor('job-2', '1000')]);
  });
  t.test('the state holds only open reservations', async (t) => {
    t.same(afterCapture.reduce(evolve, initialState()), {
      status: 'open',
      customerId,
      availableWei: 900n,
      reservedWei: 0n,
      openReservations: new Map(),
      spend: [],
    });
  });
});

t.test('evolve is total and pure', async (t) => {
  const history = [created, deposited('ref-0', '1000'), reservedFor('job-1', '600')];
  const moneyEvents = [
    deposited('ref-1', '5'),
    reservedFor('job-2', '5'),
    released('job-1', '600', 'timeout'),
    captured('job-1', { reserved: '600', cost: '0', node: '0', fee: '0', released: '600' }, [
      { from: reserved, to: available, amount_wei: '600' },
    ]),
  ];
  t.test('a money event for an absent account leaves the state unchanged', async (t) => {
    for (const event of moneyEvents) {
      const absent = initialState();
      t.equal(evolve(absent, event), absent, event.type);
    }
  });
  t.test('initialState is a new value on every call', async (t) => {
    t.not(initialState(), initialState());
  });
  t.test('evolve never changes the state it is given', async (t) => {
    const state = history.reduce(evolve, initialState());
    const before = snapshot(state);
    for (const event of moneyEvents) evolve(state, event);
    t.equal(snapshot(state), before);
  });
  t.test('decide never changes the state it is given', async (t) => {
    const state = history.reduce(evolve, initialState());
    const before = snapshot(state);
    for (const command of [deposit(1n), reserve('job-2', 1n), capture('job-1', 10n), release('job-1')]) {
      customerAccountDecider.decide(command, state);
    }
    t.equal(snapshot(state), before);
  });
});

/** The state as text, Maps and bigints included, to show that nothing changed it. */
function snapshot(state: CustomerAccountState): string {
  return JSON.stringify(state, (_key, value: unknown) => (typeof value === 'bigint' ? String(value) : value instanceof Map ? [...value] : value));
}

t.test('a gateway key with a rolling spend cap', async (t) => {
  const keyId = 'gk-1';
  const at = new Date('2026-11-25T12:00:00.000Z');
  const cap = (limitWei: bigint, when: Date = at) => ({ keyId, limitWei, windowSeconds: 3600, at: when });
  const cappedReserve = (jobId: string, amountWei: bigint, limitWei: bigint, when: Date = at): CustomerAccountCommand => ({
    type: 'Reserve',
    customerId,
    jobId,
    amountWei,
    spendCap: cap(limitWei, when),
  });
  const cappedReserved = (jobId: string, amountWei: string, when: Date = at): CustomerAccountEvent => {
    const event = reservedFor(jobId, amountWei);
    return { type: 'FundsReserved', data: { ...(event.data as Extract<CustomerAccountEvent, { type: 'FundsReserved' }>['data']), key_id: keyId, reserved_at: when.toISOString() } };
  };
  const funded = [created, deposited('ref-0', '1000')];

  t.test('reserves within the cap and records the key and time', async () =>
    account.given(funded).when(cappedReserve('job-1', 300n, 500n)).then([cappedReserved('job-1', '300')]));
  t.test('exactly at the cap is allowed', async () =>
    account.given([...funded, cappedReserved('job-1', '300')]).when(cappedReserve('job-2', 200n, 500n)).then([cappedReserved('job-2', '200')]));
  t.test('open reservations count against the cap', async () =>
    account.given([...funded, cappedReserved('job-1', '300')]).when(cappedReserve('job-2', 201n, 500n)).thenThrows('gateway_spend_cap_exceeded'));
  t.test('a capture counts its cost, not the reservation', async () =>
    account
      .given([
        ...funded,
        cappedReserved('job-1', '300'),
        captured('job-1', { reserved: '300', cost: '100', node: '90', fee: '10', released: '200' }, [
          { from: reserved, to: nodePayable, amount_wei: '90' },
          { from: reserved, to: accounts.protocolFees, amount_wei: '10' },
          { from: reserved, to: available, amount_wei: '200' },
        ]),
      ])
      .when(cappedReserve('job-2', 400n, 500n))
      .then([cappedReserved('job-2', '400')]));
  t.test('a release frees the cap', async () =>
    account
      .given([...funded, cappedReserved('job-1', '300'), released('job-1', '300', 'timeout')])
      .when(cappedReserve('job-2', 500n, 500n))
      .then([cappedReserved('job-2', '500')]));
  t.test('spend outside the window no longer counts', async () => {
    const later = new Date(at.getTime() + 3601_000);
    return account.given([...funded, cappedReserved('job-1', '500')]).when(cappedReserve('job-2', 500n, 500n, later)).then([cappedReserved('job-2', '500', later)]);
  });
  t.test("another key's spend does not count", async () =>
    account
      .given([...funded, cappedReserved('job-1', '500')])
      .when({ type: 'Reserve', customerId, jobId: 'job-2', amountWei: 500n, spendCap: { ...cap(500n), keyId: 'gk-2' } })
      .then([{ type: 'FundsReserved', data: { ...(reservedFor('job-2', '500').data as object), key_id: 'gk-2', reserved_at: at.toISOString() } } as CustomerAccountEvent]));
});
