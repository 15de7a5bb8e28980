import type { Kysely } from 'kysely';
import type { ProjectionTables } from '../../projections/tables.ts';
import type { NodeModelView } from '../router/gates.ts';
import type { NodeRouteStore } from '../router/nodeRoutes.ts';

export async function findNodeKey(db: Kysely<ProjectionTables>, nodeId: string): Promise<string | null> {
  const row = await db.selectFrom('nodes').select('public_key_ed25519').where('node_id', '=', nodeId).executeTakeFirst();
  return row?.public_key_ed25519 ?? null;
}

/**
 * The gate inputs for one node and model, including what is missing: a node without a profile
 * for the model reads as not installed, one without a route or heartbeat as having none. Null
 * when no such node is enrolled.
 */
export async function readinessView(
  db: Kysely<ProjectionTables>,
  routes: Pick<NodeRouteStore, 'all'>,
  nodeId: string,
  modelId: string,
): Promise<NodeModelView | null> {
  const node = await db.selectFrom('nodes').select(['node_id', 'queue_health']).where('node_id', '=', nodeId).executeTakeFirst();
  if (node === undefined) return null;
  const [profile, benchmark, route] = await Promise.all([
    db.selectFrom('node_model_profiles').selectAll().where('node_id', '=', nodeId).where('model_id', '=', modelId).executeTakeFirst(),
    db.selectFrom('observed_benchmarks').selectAll().where('node_id', '=', nodeId).where('model_id', '=', modelId).executeTakeFirst(),
    routes.all().then((all) => all.find((entry) => entry.nodeId === nodeId)),
  ]);
  return {
    nodeId,
    modelId,
    endpointUrl: route?.endpointUrl ?? null,
    heartbeatAt: route?.heartbeatAt ?? null,
    queueHealth: node.queue_health,
    queueDepth: route?.queueDepth ?? 0,
    profile: {
      status: profile?.status ?? 'not_installed',
      runtimeKind: profile?.runtime_kind ?? 'unknown',
      routeTier: profile?.route_tier ?? 'unknown',
      networkEligible: profile?.network_eligible ?? false,
      paidRouteEligible: profile?.paid_route_eligible ?? false,
      benchmarkVerified: profile?.benchmark_verified ?? false,
    },
    benchmark: benchmark === undefined ? null : { observedAt: benchmark.observed_at, tokensPerSecond: benchmark.tokens_per_second, ttftMs: benchmark.ttft_ms },
  };
}
