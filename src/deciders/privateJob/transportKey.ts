import type { TransportKeyEvent } from '../../events/privateJob.ts';
import { assertNever, type Decider } from '../decider.ts';

/**
 * A node's current X25519 transport key. Registering the current key again changes nothing; a new
 * key signed later replaces it (rotation), and jobs are accepted only for the current key.
 */

type Registration = Extract<TransportKeyEvent, { type: 'NodeTransportKeyRegistered' }>['data'];

export type TransportKeyCommand = { type: 'RegisterTransportKey'; registration: Registration };

export type TransportKeyState = { status: 'absent' } | { status: 'registered'; registration: Registration };

export function initialState(): TransportKeyState {
  return { status: 'absent' };
}

export function decide(command: TransportKeyCommand, state: TransportKeyState): TransportKeyEvent[] {
  switch (command.type) {
    case 'RegisterTransportKey': {
      const current = state.status === 'registered' ? state.registration : null;
      if (current !== null && current.key_id === command.registration.key_id && current.node_id === command.registration.node_id) return [];
      // Registrations only move forward in the node's own time: a replayed older one cannot roll a rotation back.
      if (current !== null && Date.parse(command.registration.registered_at) <= Date.parse(current.registered_at)) return [];
      return [{ type: 'NodeTransportKeyRegistered', data: command.registration }];
    }
    default:
      return assertNever(command.type);
  }
}

export function evolve(_state: TransportKeyState, event: TransportKeyEvent): TransportKeyState {
  switch (event.type) {
    case 'NodeTransportKeyRegistered':
      return { status: 'registered', registration: event.data };
    default:
      return assertNever(event.type);
  }
}

export const transportKeyDecider: Decider<TransportKeyCommand, TransportKeyEvent, TransportKeyState> = { decide, evolve, initialState };
