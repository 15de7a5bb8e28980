import { sql } from 'kysely';
import { nodeEventSchemas, parseNodeDomainEvent, type NodeDomainEvent } from '../src/events/node.ts';
import type { StoredEvent } from '../src/eventStore/port.ts';
import type { Projection, ProjectionTransaction } from './projection.ts';

/**
 * Enrolled nodes, their model profiles and observed benchmarks, and model prices: what the router,
 * `/v1/models` and route-readiness read. Node events are rare (a change of profile, a benchmark), so
 * this applies them one statement at a time.
 */
export const nodesProjection: Projection = {
  name: 'nodes',
  tables: ['nodes', 'node_model_profiles', 'observed_benchmarks', 'model_prices'],
  eventTypes: Object.keys(nodeEventSchemas),
  async apply(transaction, events) {
    for (const stored of events) {
      const event = parseNodeDomainEvent(stored.type, stored.data);
      if (event !== null) await applyEvent(transaction, stored, event);
    }
  },
};

async function applyEvent(transaction: ProjectionTransaction, stored: StoredEvent, event: NodeDomainEvent): Promise<void> {
  const position = String(stored.position);
  switch (event.type) {
    case 'NodeEnrolled':
      await sql`INSERT INTO nodes (node_id, public_key_ed25519, key_id, queue_health, enrolled_at, last_position)
                VALUES (${event.data.node_id}, ${event.data.public_key_ed25519}, ${event.data.key_id}, 'unhealthy',
                        ${stored.recordedAt.toISOString()}::timestamptz, ${position}::bigint)
                ON CONFLICT (node_id) DO NOTHING`.execute(transaction);
      return;
    case 'NodeProfilesReported': {
      const updated = await sql`UPDATE nodes SET queue_health = ${event.data.queue_health}, last_position = ${position}::bigint
                                 WHERE node_id = ${event.data.node_id} AND last_position < ${position}::bigint`.execute(transaction);
      if (updated.numAffectedRows === 0n) return;
      await sql`DELETE FROM node_model_profiles WHERE node_id = ${event.data.node_id}`.execute(transaction);
      for (const profile of event.data.profiles) {
        await sql`INSERT INTO node_model_profiles (node_id, model_id, status, runtime_kind, route_tier, network_eligible,
                                                   paid_route_eligible, benchmark_verified)
                  VALUES (${event.data.node_id}, ${profile.model_id}, ${profile.status}, ${profile.runtime_kind}, ${profile.route_tier},
                          ${profile.network_eligible}, ${profile.paid_route_eligible}, ${profile.benchmark_verified})`.execute(transaction);
      }
      return;
    }
    case 'ObservedBenchmarkRecorded':
      await sql`INSERT INTO observed_benchmarks (node_id, model_id, observed_at, tokens_per_second, ttft_ms, last_position)
                VALUES (${event.data.node_id}, ${event.data.model_id}, ${event.data.observed_at}::timestamptz,
                        ${event.data.tokens_per_second}, ${event.data.ttft_ms}, ${position}::bigint)
                ON CONFLICT (node_id, model_id) DO UPDATE SET observed_at = excluded.observed_at,
                  tokens_per_second = excluded.tokens_per_second, ttft_ms = excluded.ttft_ms, last_position = excluded.last_position
                WHERE observed_benchmarks.last_position < excluded.last_position`.execute(transaction);
      return;
    case 'ModelPriceSet':
      await sql`INSERT INTO model_prices (model_id, prompt_price_per_million_wei, completion_price_per_million_wei, policy_version, last_position)
                VALUES (${event.data.model_id}, ${event.data.prompt_price_per_million_wei}::numeric,
                        ${event.data.completion_price_per_million_wei}::numeric, ${event.data.policy_version}, ${position}::bigint)
                ON CONFLICT (model_id) DO UPDATE SET prompt_price_per_million_wei = excluded.prompt_price_per_million_wei,
                  completion_price_per_million_wei = excluded.completion_price_per_million_wei,
                  policy_version = excluded.policy_version, last_position = excluded.last_position
                WHERE model_prices.last_position < excluded.last_position`.execute(transaction);
      return;
  }
}
