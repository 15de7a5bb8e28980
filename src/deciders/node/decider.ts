import { canonicalJson } from '../../canonicalJson.ts';
import { DomainError } from '../../errors.ts';
import type { ModelProfile, NodeEvent, queueHealths } from '../../events/node.ts';

type QueueHealth = (typeof queueHealths)[number];
import { assertNever, type Decider } from '../decider.ts';

export type NodeCommand =
  | { type: 'EnrollNode'; nodeId: string; publicKey: string; keyId: string }
  | { type: 'ReportProfiles'; nodeId: string; reportedAt: string; queueHealth: QueueHealth; profiles: ModelProfile[] }
  | { type: 'RecordObservedBenchmark'; nodeId: string; modelId: string; observedAt: string; tokensPerSecond: number; ttftMs: number };

export type NodeState =
  | { status: 'absent' }
  | { status: 'enrolled'; nodeId: string; publicKey: string; reportFingerprint: string | null };

export function initialState(): NodeState {
  return { status: 'absent' };
}

export function decide(command: NodeCommand, state: NodeState): NodeEvent[] {
  switch (command.type) {
    case 'EnrollNode':
      // Node ids derive from the public key, so enrolling the same key again is a no-op.
      if (state.status === 'enrolled') return [];
      return [{ type: 'NodeEnrolled', data: { node_id: command.nodeId, public_key_ed25519: command.publicKey, key_id: command.keyId } }];
    case 'ReportProfiles': {
      requireEnrolled(state, command.nodeId);
      const profiles = [...command.profiles].sort((a, b) => a.model_id.localeCompare(b.model_id));
      const data = { node_id: command.nodeId, queue_health: command.queueHealth, profiles };
      // Only a change is worth an event; liveness is tracked outside the log.
      if (state.status === 'enrolled' && state.reportFingerprint === canonicalJson(data)) return [];
      return [{ type: 'NodeProfilesReported', data }];
    }
    case 'RecordObservedBenchmark':
      requireEnrolled(state, command.nodeId);
      return [
        {
          type: 'ObservedBenchmarkRecorded',
          data: {
            node_id: command.nodeId,
            model_id: command.modelId,
            observed_at: command.observedAt,
            tokens_per_second: command.tokensPerSecond,
            ttft_ms: command.ttftMs,
          },
        },
      ];
    default:
      return assertNever(command);
  }
}

export function evolve(state: NodeState, event: NodeEvent): NodeState {
  switch (event.type) {
    case 'NodeEnrolled':
      return { status: 'enrolled', nodeId: event.data.node_id, publicKey: event.data.public_key_ed25519, reportFingerprint: null };
    case 'NodeProfilesReported':
      return state.status === 'enrolled' ? { ...state, reportFingerprint: canonicalJson(event.data) } : state;
    case 'ObservedBenchmarkRecorded':
      return state;
    default:
      return assertNever(event);
  }
}

function requireEnrolled(state: NodeState, nodeId: string): void {
  if (state.status !== 'enrolled') throw new DomainError('node_not_found', `Node ${nodeId} is not enrolled`);
}

export const nodeDecider: Decider<NodeCommand, NodeEvent, NodeState> = { decide, evolve, initialState };
