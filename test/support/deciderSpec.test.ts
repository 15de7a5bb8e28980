import t from 'tap';
import type { Decider } from '../../src/deciders/decider.ts';
import { DomainError } from '../../src/errors.ts';
import { spec } from './deciderSpec.ts';

/** A toy counter: enough to show that each outcome of the helper passes and fails when it should. */
type CounterCommand = { type: 'Add'; amount: number } | { type: 'Touch' };
type CounterEvent = { type: 'Added'; amount: number };

const counter: Decider<CounterCommand, CounterEvent, { total: number }> = {
  initialState: () => ({ total: 0 }),
  evolve: (state, event) => ({ total: state.total + event.amount }),
  decide(command, state) {
    if (command.type === 'Touch') return [];
    if (state.total + command.amount > 10) throw new DomainError('insufficient_balance', 'over the limit');
    return [{ type: 'Added', amount: command.amount }];
  },
};

const given = spec(counter).given([{ type: 'Added', amount: 4 }]);

t.test('then passes on exactly the expected events and fails on others', async (t) => {
  t.doesNotThrow(() => given.when({ type: 'Add', amount: 6 }).then([{ type: 'Added', amount: 6 }]));
  t.throws(() => given.when({ type: 'Add', amount: 6 }).then([{ type: 'Added', amount: 5 }]), { code: 'ERR_ASSERTION' });
  t.throws(() => given.when({ type: 'Add', amount: 6 }).then([]), { code: 'ERR_ASSERTION' });
});

t.test('the given events are folded into the state the command sees', async (t) => {
  t.doesNotThrow(() => given.when({ type: 'Add', amount: 7 }).thenThrows('insufficient_balance'));
  t.doesNotThrow(() => spec(counter).given([]).when({ type: 'Add', amount: 7 }).then([{ type: 'Added', amount: 7 }]));
});

t.test('thenThrows needs a DomainError with that very code', async (t) => {
  t.throws(() => given.when({ type: 'Add', amount: 7 }).thenThrows('customer_not_found'), { code: 'ERR_ASSERTION' });
  t.throws(() => given.when({ type: 'Add', amount: 1 }).thenThrows('insufficient_balance'), { code: 'ERR_ASSERTION' });
});

t.test('thenNothing passes only when no event is decided', async (t) => {
  t.doesNotThrow(() => given.when({ type: 'Touch' }).thenNothing());
  t.throws(() => given.when({ type: 'Add', amount: 1 }).thenNothing(), { code: 'ERR_ASSERTION' });
});
