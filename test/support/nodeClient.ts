import type { FastifyInstance } from 'fastify';
import { generateIdentity, type NodeIdentity } from '../../src/receipts/ed25519.ts';
import { signDocument } from '../../src/receipts/signedDocument.ts';
import { enrollmentMessage } from '../../src/http/enrollmentChallenges.ts';
import type { ModelProfile } from '../../src/events/node.ts';

export interface EnrolledNode {
  identity: NodeIdentity;
  nodeId: string;
  dispatchSecret: Buffer;
}

/** Enrolls a fresh identity through the public enrollment endpoints, as a host agent would. */
export async function enrollNode(app: FastifyInstance, identity: NodeIdentity = generateIdentity()): Promise<EnrolledNode> {
  const challenge = await app.inject({
    method: 'POST',
    url: '/v1/nodes/enrollment-challenges',
    payload: { public_key_ed25519: identity.publicKeyBase64url },
  });
  const { challenge_id: challengeId, challenge: text } = challenge.json<{ challenge_id: string; challenge: string }>();
  const enrolled = await app.inject({
    method: 'POST',
    url: '/v1/nodes/enrollments',
    payload: {
      challenge_id: challengeId,
      public_key_ed25519: identity.publicKeyBase64url,
      signature_ed25519: identity.sign(enrollmentMessage(text, identity.publicKeyBase64url)),
    },
  });
  if (enrolled.statusCode !== 201) throw new Error(`enrollment failed: ${enrolled.body}`);
  const body = enrolled.json<{ node_id: string; dispatch_secret: string }>();
  return { identity, nodeId: body.node_id, dispatchSecret: Buffer.from(body.dispatch_secret, 'base64url') };
}

export function profile(modelId: string, overrides: Partial<ModelProfile> = {}): ModelProfile {
  return {
    model_id: modelId,
    status: 'installed',
    runtime_kind: 'openai',
    route_tier: 'network_beta',
    network_eligible: true,
    paid_route_eligible: true,
    benchmark_verified: true,
    ...overrides,
  };
}

export function heartbeatBody(
  node: EnrolledNode,
  options: { endpointUrl: string; sentAt: Date; profiles: ModelProfile[]; queueHealth?: 'ok' | 'degraded' | 'blocked' | 'unhealthy'; queueDepth?: number },
) {
  return signDocument(
    {
      version: 'b3iq-heartbeat-v1',
      node_id: node.nodeId,
      sent_at: options.sentAt.toISOString(),
      endpoint_url: options.endpointUrl,
      queue_health: options.queueHealth ?? 'ok',
      queue_depth: options.queueDepth ?? 0,
      profiles: options.profiles,
    },
    (bytes) => node.identity.sign(bytes),
  );
}
