import { DomainError } from '../../errors.ts';
import type { GatewayKeyEvent, GatewayScope } from '../../events/gatewayKey.ts';
import { formatWei } from '../../money.ts';
import { assertNever, type Decider } from '../decider.ts';

export interface GatewayKeyPolicy {
  scopes: GatewayScope[];
  allowedModels: string[] | null;
  spendCap: { limitWei: bigint; windowSeconds: number } | null;
}

export type GatewayKeyCommand =
  | { type: 'CreateGatewayKey'; keyId: string; customerId: string; policy: GatewayKeyPolicy }
  | { type: 'RevokeGatewayKey'; keyId: string; customerId: string; reason: string };

export type GatewayKeyState =
  | { status: 'absent' }
  | { status: 'active' | 'revoked'; keyId: string; customerId: string };

export function initialState(): GatewayKeyState {
  return { status: 'absent' };
}

export function decide(command: GatewayKeyCommand, state: GatewayKeyState): GatewayKeyEvent[] {
  switch (command.type) {
    case 'CreateGatewayKey': {
      if (state.status !== 'absent') throw new DomainError('gateway_key_already_exists', `Gateway key ${command.keyId} already exists`);
      const { scopes, allowedModels, spendCap } = command.policy;
      return [
        {
          type: 'GatewayKeyCreated',
          data: {
            key_id: command.keyId,
            customer_id: command.customerId,
            scopes: [...new Set(scopes)].sort(),
            allowed_models: allowedModels === null ? null : [...new Set(allowedModels)].sort(),
            spend_cap_wei: spendCap === null ? null : formatWei(spendCap.limitWei),
            spend_cap_window_seconds: spendCap?.windowSeconds ?? null,
          },
        },
      ];
    }
    case 'RevokeGatewayKey': {
      // A key belongs to one customer; naming another customer is indistinguishable from a missing key.
      if (state.status === 'absent' || state.customerId !== command.customerId) {
        throw new DomainError('not_found', `Customer ${command.customerId} has no gateway key ${command.keyId}`);
      }
      if (state.status === 'revoked') return [];
      return [{ type: 'GatewayKeyRevoked', data: { key_id: command.keyId, customer_id: command.customerId, reason: command.reason } }];
    }
    default:
      return assertNever(command);
  }
}

export function evolve(state: GatewayKeyState, event: GatewayKeyEvent): GatewayKeyState {
  switch (event.type) {
    case 'GatewayKeyCreated':
      return { status: 'active', keyId: event.data.key_id, customerId: event.data.customer_id };
    case 'GatewayKeyRevoked':
      return state.status === 'absent' ? state : { ...state, status: 'revoked' };
    default:
      return assertNever(event);
  }
}

export const gatewayKeyDecider: Decider<GatewayKeyCommand, GatewayKeyEvent, GatewayKeyState> = { decide, evolve, initialState };
