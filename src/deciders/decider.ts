/** A decider is three pure functions (Emmett's shape): no I/O, no clock, no randomness. */
export interface Decider<Command, Event, State> {
  decide(command: Command, state: State): Event[];
  evolve(state: State, event: Event): State;
  initialState(): State;
}

/** Ends a switch over a closed union; the compiler proves it unreachable. */
export function assertNever(value: never): never {
  throw new Error(`Unhandled case: ${JSON.stringify(value)}`);
}
