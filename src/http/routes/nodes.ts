import { createHash, randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { executeModelPriceCommand, executeNodeCommand } from '../../commands/node.ts';
import { DomainError } from '../../errors.ts';
import { decodeBase64url, keyIdForPublicKey, verifySignature } from '../../receipts/ed25519.ts';
import { openSignedDocument, signedDocumentSchema } from '../../receipts/signedDocument.ts';
import { findNodeKey } from '../../queries/nodes.ts';
import type { AppDependencies } from '../app.ts';
import { enrollmentMessage } from '../enrollmentChallenges.ts';
import {
  benchmarkBody,
  benchmarkResponse,
  challengeBody,
  challengeResponse,
  enrollmentBody,
  enrollmentResponse,
  heartbeatPayloadSchema,
  heartbeatResponse,
  modelIdParam,
  nodeIdParam,
  priceBody,
  priceResponse,
} from '../nodeSchemas.ts';
import { nativeErrorResponse } from '../schemas.ts';

const errors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse, 404: nativeErrorResponse, 409: nativeErrorResponse };
/** How far a heartbeat's own clock may differ from ours before it is refused as stale or forged. */
const heartbeatSkewMs = 120_000;

export function nodeIdForPublicKey(publicKey: string): string {
  const raw = decodeBase64url(publicKey, 32, 'public_key_ed25519');
  return `node_${createHash('sha256').update(raw).digest('hex').slice(0, 24)}`;
}

/** Node ↔ control plane: enrollment by signed challenge, signed heartbeats; admin evidence and prices. */
export function nodeRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  const { nodes, nodeRoutes: routes, challenges } = dependencies;
  const waitForProjections = (position: bigint) =>
    dependencies.projections.waitFor(position, dependencies.settings.readYourWritesTimeoutMs);
  return async (app) => {
    app.post(
      '/v1/nodes/enrollment-challenges',
      { schema: { summary: 'Ask for a one-time enrollment challenge', body: challengeBody, response: { 201: challengeResponse, ...errors } } },
      async (request, reply) => {
        const issued = challenges.issue(request.body.public_key_ed25519, now());
        return reply
          .code(201)
          .send({ challenge_id: issued.challengeId, challenge: issued.challenge, expires_at: issued.expiresAt.toISOString() });
      },
    );

    app.post(
      '/v1/nodes/enrollments',
      { schema: { summary: 'Enroll a node by signing its challenge', body: enrollmentBody, response: { 201: enrollmentResponse, ...errors } } },
      async (request, reply) => {
        const { challenge_id: challengeId, public_key_ed25519: publicKey, signature_ed25519: signature } = request.body;
        const challenge = challenges.take(challengeId, publicKey, now());
        if (challenge === null) throw new DomainError('unauthorized', 'The challenge is unknown, used, expired or issued to another key');
        if (!safeVerify(publicKey, enrollmentMessage(challenge, publicKey), signature)) {
          throw new DomainError('invalid_signature', 'The challenge signature does not verify with the public key');
        }
        const nodeId = nodeIdForPublicKey(publicKey);
        const keyId = keyIdForPublicKey(decodeBase64url(publicKey, 32, 'public_key_ed25519'));
        const secret = await routes.ensure(nodeId, randomBytes(32));
        const outcome = await executeNodeCommand(nodes, { type: 'EnrollNode', nodeId, publicKey, keyId });
        await waitForProjections(outcome.lastPosition);
        return reply.code(201).send({ node_id: nodeId, key_id: keyId, dispatch_secret: secret.toString('base64url') });
      },
    );

    app.post(
      '/v1/nodes/:node_id/heartbeats',
      {
        schema: {
          summary: 'A signed heartbeat: liveness, queue health, model profiles and where the node listens',
          params: nodeIdParam,
          body: signedDocumentSchema,
          response: { 202: heartbeatResponse, ...errors },
        },
      },
      async (request, reply) => {
        const { node_id: nodeId } = request.params;
        const publicKey = await findNodeKey(dependencies.db, nodeId);
        if (publicKey === null) throw new DomainError('node_not_found', `Node ${nodeId} is not enrolled`);
        const heartbeat = openSignedDocument(request.body, publicKey, heartbeatPayloadSchema);
        if (heartbeat.node_id !== nodeId) throw new DomainError('invalid_request', 'node_id in the payload names another node', 'node_id');
        const received = now();
        const sentAt = new Date(heartbeat.sent_at);
        if (Math.abs(received.getTime() - sentAt.getTime()) > heartbeatSkewMs) {
          throw new DomainError('invalid_request', 'sent_at is too far from the control plane clock', 'sent_at');
        }
        const fresh = await routes.recordHeartbeat(nodeId, heartbeat.endpoint_url, heartbeat.queue_depth, sentAt, received);
        if (!fresh) return reply.code(202).send({ accepted: false, profiles_recorded: false });
        const outcome = await executeNodeCommand(nodes, {
          type: 'ReportProfiles',
          nodeId,
          reportedAt: heartbeat.sent_at,
          queueHealth: heartbeat.queue_health,
          profiles: heartbeat.profiles,
        });
        if (!outcome.replayed) await waitForProjections(outcome.lastPosition);
        return reply.code(202).send({ accepted: true, profiles_recorded: !outcome.replayed });
      },
    );

    app.post(
      '/v1/admin/nodes/:node_id/benchmarks',
      {
        schema: {
          summary: 'Record control-plane-observed benchmark evidence for a node and model',
          security: [{ adminToken: [] }],
          params: nodeIdParam,
          body: benchmarkBody,
          response: { 201: benchmarkResponse, 200: benchmarkResponse, ...errors },
        },
      },
      async (request, reply) => {
        const { node_id: nodeId } = request.params;
        const body = request.body;
        const outcome = await executeNodeCommand(nodes, {
          type: 'RecordObservedBenchmark',
          nodeId,
          modelId: body.model_id,
          observedAt: new Date(body.observed_at).toISOString(),
          tokensPerSecond: body.tokens_per_second,
          ttftMs: body.ttft_ms,
        });
        await waitForProjections(outcome.lastPosition);
        return reply
          .code(outcome.replayed ? 200 : 201)
          .send({ node_id: nodeId, model_id: body.model_id, observed_at: new Date(body.observed_at).toISOString(), replayed: outcome.replayed });
      },
    );

    app.put(
      '/v1/admin/models/:model_id/price',
      {
        schema: {
          summary: 'Set the price of a model per million prompt and completion tokens',
          security: [{ adminToken: [] }],
          params: modelIdParam,
          body: priceBody,
          response: { 200: priceResponse, ...errors },
        },
      },
      async (request) => {
        const { model_id: modelId } = request.params;
        const body = request.body;
        const outcome = await executeModelPriceCommand(dependencies.modelPrices, {
          type: 'SetModelPrice',
          modelId,
          promptPricePerMillionWei: BigInt(body.prompt_price_per_million_wei),
          completionPricePerMillionWei: BigInt(body.completion_price_per_million_wei),
          policyVersion: body.policy_version,
        });
        if (outcome.lastPosition > 0n) await waitForProjections(outcome.lastPosition);
        return { model_id: modelId, ...body };
      },
    );
  };
}

function safeVerify(publicKey: string, bytes: Uint8Array, signature: string): boolean {
  try {
    return verifySignature(publicKey, bytes, signature);
  } catch {
    return false;
  }
}
