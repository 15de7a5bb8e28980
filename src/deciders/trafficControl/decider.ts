import type { PauseTargetKind, TrafficControlEvent } from '../../events/trafficControl.ts';
import { assertNever, type Decider } from '../decider.ts';

export type TrafficControlCommand =
  | { type: 'PauseTraffic'; targetKind: PauseTargetKind; targetId: string; reason: string; actionId: string }
  | { type: 'ResumeTraffic'; targetKind: PauseTargetKind; targetId: string; reason: string; actionId: string };

export interface TrafficControlState {
  paused: boolean;
}

export function initialState(): TrafficControlState {
  return { paused: false };
}

/**
 * Pausing a paused target or resuming a running one changes nothing: an operator repeating an
 * action during an incident gets the state they asked for, not an error.
 */
export function decide(command: TrafficControlCommand, state: TrafficControlState): TrafficControlEvent[] {
  const data = { target_kind: command.targetKind, target_id: command.targetId, reason: command.reason };
  switch (command.type) {
    case 'PauseTraffic':
      return state.paused ? [] : [{ type: 'TrafficPaused', data }];
    case 'ResumeTraffic':
      return state.paused ? [{ type: 'TrafficResumed', data }] : [];
    default:
      return assertNever(command);
  }
}

export function evolve(_state: TrafficControlState, event: TrafficControlEvent): TrafficControlState {
  switch (event.type) {
    case 'TrafficPaused':
      return { paused: true };
    case 'TrafficResumed':
      return { paused: false };
    default:
      return assertNever(event);
  }
}

export const trafficControlDecider: Decider<TrafficControlCommand, TrafficControlEvent, TrafficControlState> = { decide, evolve, initialState };
