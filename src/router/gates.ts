/**
 * The paid-route gates (fact sheet §9.3), as one pure function so the router, `/v1/models` and the
 * route-readiness diagnosis can never disagree about why a node is or is not eligible.
 */

export interface NodeModelView {
  nodeId: string;
  modelId: string;
  endpointUrl: string | null;
  heartbeatAt: Date | null;
  queueHealth: string;
  queueDepth: number;
  profile: {
    status: string;
    runtimeKind: string;
    routeTier: string;
    networkEligible: boolean;
    paidRouteEligible: boolean;
    benchmarkVerified: boolean;
  };
  benchmark: { observedAt: Date; tokensPerSecond: number; ttftMs: number } | null;
}

export type GateName = 'heartbeat' | 'route' | 'runtime' | 'route_tier' | 'policy' | 'benchmark' | 'queue_health';

export interface GatePolicy {
  heartbeatMaxAgeMs: number;
  benchmarkMaxAgeMs: number;
}

export const defaultGatePolicy: GatePolicy = { heartbeatMaxAgeMs: 30_000, benchmarkMaxAgeMs: 7 * 86_400_000 };

const dispatchableTiers = new Set(['network_beta', 'datacenter_optimized', 'fleet_orchestrated']);

interface GateCheck {
  gate: GateName;
  passes(view: NodeModelView, now: Date, policy: GatePolicy): boolean;
  /** What blocks the node, in words an operator can act on, and the action that clears it. */
  blocker: string;
  nextAction: string;
}

/** The gates in the order the fact sheet checks them; each names its blocker and the fix. */
const gateChecks: readonly GateCheck[] = [
  {
    gate: 'heartbeat',
    passes: (view, now, policy) => view.heartbeatAt !== null && now.getTime() - view.heartbeatAt.getTime() <= policy.heartbeatMaxAgeMs,
    blocker: 'no fresh signed heartbeat',
    nextAction: 'start the host agent and let it publish a heartbeat',
  },
  {
    gate: 'route',
    passes: (view) => view.endpointUrl !== null,
    blocker: 'no inference route registered',
    nextAction: 'publish a heartbeat that carries the node endpoint',
  },
  {
    gate: 'runtime',
    passes: (view) => view.profile.status === 'installed',
    blocker: 'the model is not installed on a reachable runtime',
    nextAction: 'start the runtime, install the model and re-probe',
  },
  {
    gate: 'route_tier',
    passes: (view) =>
      dispatchableTiers.has(view.profile.routeTier) ||
      (view.profile.routeTier === 'portable_local' && view.profile.paidRouteEligible && view.profile.benchmarkVerified),
    blocker: 'the route tier is not allowed for paid traffic',
    nextAction: 'serve the model from an approved route tier',
  },
  {
    gate: 'policy',
    passes: (view) => view.profile.networkEligible && view.profile.paidRouteEligible && view.profile.benchmarkVerified,
    blocker: 'the profile is not network-eligible, paid-route-eligible and benchmark-verified',
    nextAction: 'enable paid routing for the profile and verify its benchmark',
  },
  {
    gate: 'benchmark',
    passes: (view, now, policy) => view.benchmark !== null && now.getTime() - view.benchmark.observedAt.getTime() <= policy.benchmarkMaxAgeMs,
    blocker: 'observed benchmark evidence is missing or stale',
    nextAction: 'run a benchmark smoke and publish fresh evidence',
  },
  {
    gate: 'queue_health',
    passes: (view) => view.queueHealth !== 'blocked' && view.queueHealth !== 'unhealthy',
    blocker: 'the queue is blocked or unhealthy',
    nextAction: 'clear the queue and publish a heartbeat',
  },
];

/** The first gate the node fails for this model, or null when it may serve paid traffic. */
export function firstFailedGate(view: NodeModelView, now: Date, policy: GatePolicy = defaultGatePolicy): GateName | null {
  return gateChecks.find((check) => !check.passes(view, now, policy))?.gate ?? null;
}

export interface GateResult {
  gate: GateName;
  passed: boolean;
  blocker: string | null;
  next_action: string | null;
}

/** Every gate's verdict for a route-readiness diagnosis, in gate order. */
export function evaluateGates(view: NodeModelView, now: Date, policy: GatePolicy = defaultGatePolicy): GateResult[] {
  return gateChecks.map((check) => {
    const passed = check.passes(view, now, policy);
    return { gate: check.gate, passed, blocker: passed ? null : check.blocker, next_action: passed ? null : check.nextAction };
  });
}

/** Least loaded first, then the fastest observed; ties keep their order. */
export function rankCandidates<View extends NodeModelView>(views: View[]): View[] {
  return [...views].sort(
    (a, b) =>
      a.queueDepth - b.queueDepth ||
      Number(a.queueHealth === 'degraded') - Number(b.queueHealth === 'degraded') ||
      (b.benchmark?.tokensPerSecond ?? 0) - (a.benchmark?.tokensPerSecond ?? 0),
  );
}
