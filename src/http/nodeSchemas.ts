import { z } from 'zod';
import { modelProfileSchema, queueHealths } from '../events/node.ts';
import { weiString } from './schemas.ts';

const base64urlKey = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be a 32-byte Ed25519 public key in base64url');

export const challengeBody = z.strictObject({ public_key_ed25519: base64urlKey });
export const challengeResponse = z.object({ challenge_id: z.string(), challenge: z.string(), expires_at: z.iso.datetime() });

export const enrollmentBody = z.strictObject({
  challenge_id: z.string().max(64),
  public_key_ed25519: base64urlKey,
  signature_ed25519: z.string().max(128),
});
export const enrollmentResponse = z.object({
  node_id: z.string(),
  key_id: z.string(),
  dispatch_secret: z.string().meta({ description: 'Router HMAC secret, base64url; returned to the enrolling node only' }),
});

export const nodeIdParam = z.strictObject({ node_id: z.string().regex(/^node_[0-9a-f]{24}$/, 'must be a node id') });
export const modelIdParam = z.strictObject({ model_id: z.string().min(1).max(200) });

/** What a heartbeat payload says; the node signs its canonical JSON. */
export const heartbeatPayloadSchema = z.strictObject({
  version: z.literal('b3iq-heartbeat-v1'),
  node_id: z.string(),
  sent_at: z.iso.datetime(),
  endpoint_url: z.url({ protocol: /^https?$/ }).max(2048),
  queue_health: z.enum(queueHealths),
  queue_depth: z.number().int().nonnegative().max(1_000_000),
  profiles: z.array(modelProfileSchema).max(256),
});
export type HeartbeatPayload = z.infer<typeof heartbeatPayloadSchema>;

export const heartbeatResponse = z.object({ accepted: z.boolean(), profiles_recorded: z.boolean() });

export const benchmarkBody = z.strictObject({
  model_id: z.string().min(1).max(200),
  observed_at: z.iso.datetime(),
  tokens_per_second: z.number().int().nonnegative().max(10_000_000),
  ttft_ms: z.number().int().nonnegative().max(3_600_000),
});
export const benchmarkResponse = z.object({ node_id: z.string(), model_id: z.string(), observed_at: z.string(), replayed: z.boolean() });

export const priceBody = z.strictObject({
  prompt_price_per_million_wei: weiString,
  completion_price_per_million_wei: weiString,
  policy_version: z.string().min(1).max(100).regex(/^[\x21-\x7e]+$/),
});
export const priceResponse = z.object({
  model_id: z.string(),
  prompt_price_per_million_wei: weiString,
  completion_price_per_million_wei: weiString,
  policy_version: z.string(),
});
