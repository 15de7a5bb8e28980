import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import { defaultGatePolicy, firstFailedGate, rankCandidates, type GatePolicy, type NodeModelView } from './gates.ts';
import type { NodeRouteStore } from './nodeRoutes.ts';

export interface RouteCandidate extends NodeModelView {
  endpointUrl: string;
  dispatchSecret: Buffer;
  publicKey: string;
}

/**
 * Everything the router knows about nodes, reloaded at most once per `refreshMs` so a request does
 * not pay for the node tables. In-flight counts are added locally, so one busy gateway spreads its
 * own load even between heartbeats.
 */
export class NodeDirectory {
  private views: Array<NodeModelView & { dispatchSecret: Buffer; publicKey: string }> = [];
  private loadedAt = 0;
  private loading: Promise<void> | null = null;
  private readonly inFlight = new Map<string, number>();

  constructor(
    private readonly db: Kysely<ProjectionTables>,
    private readonly routes: NodeRouteStore,
    private readonly refreshMs = 1_000,
    private readonly policy: GatePolicy = defaultGatePolicy,
  ) {}

  async candidates(modelId: string, now: Date): Promise<RouteCandidate[]> {
    await this.refresh(now);
    const eligible = this.views.filter(
      (view): view is typeof view & { endpointUrl: string } => view.modelId === modelId && firstFailedGate(view, now, this.policy) === null,
    );
    return rankCandidates(eligible.map((view) => ({ ...view, queueDepth: view.queueDepth + (this.inFlight.get(view.nodeId) ?? 0) })));
  }

  /** Models with at least one eligible node, with the freshest observed benchmark time. */
  async listedModels(now: Date, excludedNodes: ReadonlySet<string> = new Set()): Promise<Array<{ id: string; created: number }>> {
    await this.refresh(now);
    const freshest = new Map<string, number>();
    for (const view of this.views) {
      if (excludedNodes.has(view.nodeId) || firstFailedGate(view, now, this.policy) !== null) continue;
      const created = Math.floor((view.benchmark?.observedAt.getTime() ?? 0) / 1000);
      freshest.set(view.modelId, Math.max(freshest.get(view.modelId) ?? 0, created));
    }
    return [...freshest.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, created]) => ({ id, created }));
  }

  track(nodeId: string, delta: 1 | -1): void {
    const next = (this.inFlight.get(nodeId) ?? 0) + delta;
    if (next <= 0) this.inFlight.delete(nodeId);
    else this.inFlight.set(nodeId, next);
  }

  /** Forces the next call to reload, e.g. after a heartbeat this process recorded. */
  invalidate(): void {
    this.loadedAt = 0;
  }

  private async refresh(now: Date): Promise<void> {
    if (now.getTime() - this.loadedAt < this.refreshMs) return;
    this.loading ??= this.load().finally(() => {
      this.loading = null;
    });
    await this.loading;
    this.loadedAt = now.getTime();
  }

  private async load(): Promise<void> {
    const [rows, routes] = await Promise.all([
      this.db
        .selectFrom('node_model_profiles as p')
        .innerJoin('nodes as n', 'n.node_id', 'p.node_id')
        .leftJoin('observed_benchmarks as b', (join) => join.onRef('b.node_id', '=', 'p.node_id').onRef('b.model_id', '=', 'p.model_id'))
        .select([
          'p.node_id',
          'p.model_id',
          'p.status',
          'p.runtime_kind',
          'p.route_tier',
          'p.network_eligible',
          'p.paid_route_eligible',
          'p.benchmark_verified',
          'n.queue_health',
          'n.public_key_ed25519',
          'b.observed_at',
          'b.tokens_per_second',
          'b.ttft_ms',
        ])
        .execute(),
      this.routes.all(),
    ]);
    const routeByNode = new Map(routes.map((route) => [route.nodeId, route]));
    this.views = rows.flatMap((row) => {
      const route = routeByNode.get(row.node_id);
      if (route === undefined) return [];
      return [
        {
          nodeId: row.node_id,
          modelId: row.model_id,
          endpointUrl: route.endpointUrl,
          heartbeatAt: route.heartbeatAt,
          queueHealth: row.queue_health,
          queueDepth: route.queueDepth,
          dispatchSecret: route.dispatchSecret,
          publicKey: row.public_key_ed25519,
          profile: {
            status: row.status,
            runtimeKind: row.runtime_kind,
            routeTier: row.route_tier,
            networkEligible: row.network_eligible,
            paidRouteEligible: row.paid_route_eligible,
            benchmarkVerified: row.benchmark_verified,
          },
          benchmark:
            row.observed_at === null || row.tokens_per_second === null || row.ttft_ms === null
              ? null
              : { observedAt: row.observed_at, tokensPerSecond: row.tokens_per_second, ttftMs: row.ttft_ms },
        },
      ];
    });
  }
}
