import { z } from 'zod';
import { weiStringPattern } from '../money.ts';

/**
 * Node and model events. Endpoint URLs and dispatch secrets are private routes and never appear
 * here; they live in the node_routes table. Liveness (every heartbeat) is not an event either: a
 * heartbeat becomes an event only when what it reports changes.
 */

export const routeTiers = ['local_convenience', 'portable_local', 'network_beta', 'datacenter_optimized', 'fleet_orchestrated', 'unknown'] as const;
export const profileStatuses = ['installed', 'ready_to_install', 'runtime_missing', 'hardware_unsupported'] as const;
export const queueHealths = ['ok', 'degraded', 'blocked', 'unhealthy'] as const;

export const modelProfileSchema = z
  .object({
    model_id: z.string().min(1).max(200),
    status: z.enum(profileStatuses),
    runtime_kind: z.string().min(1).max(40),
    route_tier: z.enum(routeTiers),
    network_eligible: z.boolean(),
    paid_route_eligible: z.boolean(),
    benchmark_verified: z.boolean(),
  })
  .strict();
export type ModelProfile = z.infer<typeof modelProfileSchema>;

const wei = z.string().regex(new RegExp(weiStringPattern));

export const nodeEventSchemas = {
  NodeEnrolled: z.object({ node_id: z.string(), public_key_ed25519: z.string(), key_id: z.string() }).strict(),
  NodeProfilesReported: z
    .object({ node_id: z.string(), queue_health: z.enum(queueHealths), profiles: z.array(modelProfileSchema) })
    .strict(),
  ObservedBenchmarkRecorded: z
    .object({
      node_id: z.string(),
      model_id: z.string(),
      observed_at: z.string(),
      tokens_per_second: z.number().int().nonnegative(),
      ttft_ms: z.number().int().nonnegative(),
    })
    .strict(),
  ModelPriceSet: z
    .object({
      model_id: z.string(),
      prompt_price_per_million_wei: wei,
      completion_price_per_million_wei: wei,
      policy_version: z.string(),
    })
    .strict(),
} as const;

type Schemas = typeof nodeEventSchemas;
export type NodeEventType = keyof Schemas;
export type NodeDomainEvent = { [Type in NodeEventType]: { type: Type; data: z.infer<Schemas[Type]> } }[NodeEventType];
export type NodeEvent = Exclude<NodeDomainEvent, { type: 'ModelPriceSet' }>;
export type ModelPriceEvent = Extract<NodeDomainEvent, { type: 'ModelPriceSet' }>;

export function parseNodeDomainEvent(type: string, data: unknown): NodeDomainEvent | null {
  if (!Object.hasOwn(nodeEventSchemas, type)) return null;
  const eventType = type as NodeEventType;
  return { type: eventType, data: nodeEventSchemas[eventType].parse(data) } as NodeDomainEvent;
}

export const nodeStreamName = (nodeId: string) => `node-${nodeId}`;
export const modelStreamName = (modelId: string) => `model-${modelId}`;
