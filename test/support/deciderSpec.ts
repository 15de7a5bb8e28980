import assert from 'node:assert/strict';
import type { Decider } from '../../src/deciders/decider.ts';
import { DomainError, type ErrorCode } from '../../src/errors.ts';

/**
 * Given / when / then for deciders, after Emmett's DeciderSpecification: given past events, when a
 * command, then exactly these events, or this error code, or nothing.
 *
 * The outcomes assert with node:assert, so a failing case throws an AssertionError that tap
 * reports with a diff of actual and expected. That keeps the helper free of any test framework and
 * usable inside `t.test(name, () => ...)`.
 */
export interface DeciderSpecification<Command, Event> {
  given(events: readonly Event[]): {
    when(command: Command): DeciderOutcome<Event>;
  };
}

export interface DeciderOutcome<Event> {
  /** The command yields exactly these events, in this order. */
  then(expected: readonly Event[]): void;
  /** The command is refused with a DomainError carrying this code. */
  thenThrows(code: ErrorCode): void;
  /** The command is accepted and changes nothing. */
  thenNothing(): void;
}

export function spec<Command, Event, State>(decider: Decider<Command, Event, State>): DeciderSpecification<Command, Event> {
  return {
    given(events) {
      return {
        when(command) {
          // The state is folded anew for every outcome, so nothing is shared between cases.
          const decide = () => decider.decide(command, events.reduce(decider.evolve, decider.initialState()));
          return {
            then(expected) {
              assert.deepStrictEqual(decide(), expected);
            },
            thenThrows(code) {
              assert.throws(decide, (error: unknown) => {
                assert.ok(error instanceof DomainError, `expected a DomainError, got ${String(error)}`);
                assert.equal(error.code, code);
                return true;
              });
            },
            thenNothing() {
              assert.deepStrictEqual(decide(), []);
            },
          };
        },
      };
    },
  };
}
