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

/** The first gate the node fails for this model, or null when it may serve paid traffic. */
export function firstFailedGate(view: NodeModelView, now: Date, policy: GatePolicy = defaultGatePolicy): GateName | null {
  if (view.heartbeatAt === null || now.getTime() - view.heartbeatAt.getTime() > policy.heartbeatMaxAgeMs) return 'heartbeat';
  if (view.endpointUrl === null) return 'route';
  if (view.profile.status !== 'installed') return 'runtime';
  const tierAllowed =
    dispatchableTiers.has(view.profile.routeTier) ||
    (view.profile.routeTier === 'portable_local' && view.profile.paidRouteEligible && view.profile.benchmarkVerified);
  if (!tierAllowed) return 'route_tier';
  if (!view.profile.networkEligible || !view.profile.paidRouteEligible || !view.profile.benchmarkVerified) return 'policy';
  if (view.benchmark === null || now.getTime() - view.benchmark.observedAt.getTime() > policy.benchmarkMaxAgeMs) return 'benchmark';
  if (view.queueHealth === 'blocked' || view.queueHealth === 'unhealthy') return 'queue_health';
  return null;
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
