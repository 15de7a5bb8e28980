import swagger from '@fastify/swagger';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyRequest,
  type FastifyServerOptions,
  type RawReplyDefaultExpression,
  type RawRequestDefaultExpression,
  type RawServerDefault,
} from 'fastify';
import {
  createJsonSchemaTransform,
  createJsonSchemaTransformObject,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import { generateId } from '../credentials/secrets.ts';
import type { NodeIdentity } from '../receipts/ed25519.ts';
import type { Receipt, SignedReceipt } from '../receipts/receipt.ts';
import type { Caller, LocalAuthenticator, Requirement } from './auth.ts';
import { forwardCompletion } from './completions.ts';
import { readDispatchedRequest, readLocalRequest } from './dispatch.ts';
import { HostAgentError, installErrorHandling } from './errors.ts';
import type { HttpClient } from './httpClient.ts';
import type { HostAgentSettings } from './options.ts';
import { localBenchmarks, type ModelProfiles, type QueueGauge, type QueueHealth } from './profiles.ts';
import { localJobPrefix, receiptOrigin, type ReceiptLog } from './receipts.ts';
import {
  chatCompletionDocument,
  chatRequestDocument,
  healthResponse,
  hostAgentSchemaRegistry,
  modelListResponse,
  modelProfilesResponse,
  nativeErrorResponse,
  openAiErrorResponse,
  receiptListResponse,
  receiptsQuery,
  submitBody,
  submitResponse,
} from './schemas.ts';
import type { ReceiptSubmitter } from './submissions.ts';

/**
 * The agent's HTTP surface (docs/node-protocol.md, Local API): the app factory and every route
 * with its schemas. Routes read their services only when a request arrives, so the OpenAPI
 * document can be generated without any of them.
 */

export interface AgentServices {
  settings: HostAgentSettings;
  identity: NodeIdentity;
  nodeId: string;
  client: HttpClient;
  profiles: ModelProfiles;
  queue: QueueGauge;
  receipts: ReceiptLog;
  submitter: ReceiptSubmitter;
  authenticator: LocalAuthenticator;
}

/** Secrets can arrive in these headers; the logger never writes them, whatever its level. */
export const hostAgentRedactedPaths = [
  'req.headers.authorization',
  'req.headers["x-b3iq-router-signature"]',
  'req.headers["x-b3iq-setup-token"]',
];

const openAiErrors = { 400: openAiErrorResponse, 401: openAiErrorResponse, 403: openAiErrorResponse };
const nativeErrors = { 400: nativeErrorResponse, 401: nativeErrorResponse, 403: nativeErrorResponse };
type Security = Array<Record<string, string[]>>;
const localKey: Security = [{ localKey: [] }, { routerSignature: [] }];
const owner: Security = [{ setupToken: [] }];

export async function createAgentApp(options: Pick<FastifyServerOptions, 'logger' | 'bodyLimit'>): Promise<FastifyInstance> {
  const app = Fastify({
    ...options,
    routerOptions: { ignoreTrailingSlash: false },
    // close() must not wait on a client that opened a connection and never sent a request: the
    // jobs in flight are aborted anyway.
    forceCloseConnections: true,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  installErrorHandling(app);
  // Bodies stay raw bytes: the router signature covers exactly these bytes, and JSON is parsed
  // only after the caller is authenticated.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'B3IQ host agent', version: '0.1.0', description: 'The local API of a GPU node (127.0.0.1:8831 by default)' },
      components: {
        securitySchemes: {
          localKey: { type: 'http', scheme: 'bearer', description: 'b3iq_local_ key with the chat or models scope' },
          routerSignature: { type: 'apiKey', in: 'header', name: 'X-B3IQ-Router-Signature', description: 'HMAC dispatch (docs/node-protocol.md)' },
          setupToken: { type: 'apiKey', in: 'header', name: 'X-B3IQ-Setup-Token', description: 'The owner’s setup token' },
        },
      },
    },
    transform: createJsonSchemaTransform({ schemaRegistry: hostAgentSchemaRegistry }),
    transformObject: createJsonSchemaTransformObject({ schemaRegistry: hostAgentSchemaRegistry }),
  });
  return app;
}

export function registerAgentRoutes(untyped: FastifyInstance, services: AgentServices): void {
  const app = untyped.withTypeProvider<ZodTypeProvider>();
  const callers = new WeakMap<FastifyRequest, Caller>();
  const authenticate = (requirement: Requirement) => async (request: FastifyRequest) => {
    callers.set(request, await services.authenticator.authenticate(request, requirement));
  };

  app.get('/health', { schema: { summary: 'Liveness of the agent and its runtime; no credential', response: { 200: healthResponse } } }, async () => {
    await services.profiles.refreshIfStale();
    return { status: 'ok' as const, node_id: services.nodeId, runtime_reachable: services.profiles.runtimeReachable };
  });

  app.get(
    '/v1/models',
    {
      schema: { summary: 'Models the runtime has installed', security: [...localKey, ...owner], response: { 200: modelListResponse, ...openAiErrors } },
      preValidation: authenticate('models'),
    },
    async () => {
      await services.profiles.refreshIfStale();
      const data = services.profiles.installedModelIds().map((id) => ({ id, object: 'model' as const, created: 0, owned_by: 'b3iq-node' as const }));
      return { object: 'list' as const, data };
    },
  );

  app.post(
    '/v1/chat/completions',
    {
      schema: {
        summary: 'A chat completion on the local runtime with a signed receipt, streaming or not',
        security: localKey,
        body: chatRequestDocument,
        response: { 200: chatCompletionDocument, ...openAiErrors, 413: openAiErrorResponse, 415: openAiErrorResponse, 502: openAiErrorResponse, 503: openAiErrorResponse },
      },
      // The body is checked after authentication, on its exact bytes (see chatRequestDocument).
      validatorCompiler: () => (data: unknown) => ({ value: data }),
      preValidation: authenticate('chat'),
    },
    async (request, reply) => {
      const body: unknown = request.body;
      if (!Buffer.isBuffer(body)) throw new HostAgentError('invalid_request', 'The request body must be JSON');
      const forwarded =
        callers.get(request)?.kind === 'router'
          ? readDispatchedRequest(body, services.nodeId)
          : readLocalRequest(body, services.nodeId, generateId(localJobPrefix));
      if (!services.queue.tryAcquire()) throw new HostAgentError('service_unavailable', 'The node is at capacity; try another node');
      try {
        await forwardCompletion(services, forwarded, reply, request.log);
      } finally {
        services.queue.release();
      }
      return reply;
    },
  );

  registerOwnerRoutes(app, services, authenticate('owner'));
  app.get('/openapi.json', { schema: { hide: true } }, async () => untyped.swagger());
}

type TypedApp = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, ZodTypeProvider>;

function registerOwnerRoutes(app: TypedApp, services: AgentServices, authenticate: (request: FastifyRequest) => Promise<void>): void {
  app.get(
    '/v1/model-profiles',
    {
      schema: { summary: 'Model profiles from the runtime probe, with queue health and benchmark evidence', security: owner, response: { 200: modelProfilesResponse, ...nativeErrors } },
      preValidation: authenticate,
    },
    async () => {
      const { profiles, queue, settings } = services;
      await profiles.refreshIfStale();
      // A runtime that does not answer cannot serve anything, whatever the queue says.
      const queueHealth: QueueHealth | 'unhealthy' = profiles.runtimeReachable ? queue.health : 'unhealthy';
      const benchmarks = localBenchmarks(services.receipts.recent());
      return {
        object: 'list' as const,
        node_id: services.nodeId,
        runtime: { kind: settings.runtimeKind, reachable: profiles.runtimeReachable, probed_at: profiles.probedAt?.toISOString() ?? null, models_listed: profiles.runtimeModelCount },
        queue: { health: queueHealth, depth: queue.depth, max_concurrent: queue.maxConcurrent },
        data: profiles.current().map((profile) => ({ ...profile, queue_health: queueHealth, local_benchmark: benchmarks.get(profile.model_id) ?? null })),
      };
    },
  );

  app.get(
    '/v1/receipts',
    {
      schema: { summary: 'Recent receipts this node signed, newest first', security: owner, querystring: receiptsQuery, response: { 200: receiptListResponse, ...nativeErrors } },
      preValidation: authenticate,
    },
    async (request) => {
      const { limit, origin } = request.query;
      const views = services.receipts
        .recent()
        .reverse()
        .map((signed) => receiptView(signed, services.submitter))
        .filter((view) => origin === undefined || view.origin === origin);
      return { object: 'list' as const, data: views.slice(0, limit) };
    },
  );

  app.post(
    '/v1/receipts/submit',
    {
      schema: {
        summary: 'Send a stored receipt to the configured control plane; a repeat answers the recorded outcome',
        security: owner,
        body: submitBody,
        response: { 200: submitResponse, ...nativeErrors, 404: nativeErrorResponse, 409: nativeErrorResponse, 413: nativeErrorResponse, 415: nativeErrorResponse, 502: nativeErrorResponse },
      },
      preValidation: [authenticate, parseJsonBody],
    },
    async (request) => {
      const signed = await services.receipts.find(request.body.receipt_hash);
      if (signed === null) throw new HostAgentError('not_found', 'No receipt with this hash is stored on this node');
      const { outcome, replayed } = await services.submitter.submit(signed);
      return { receipt_hash: signed.receipt_hash, origin: receiptOrigin(parsedReceipt(signed)), submission: outcome, replayed };
    },
  );
}

/** Owner routes take ordinary JSON: the raw bytes become the value the schema validates. */
async function parseJsonBody(request: FastifyRequest): Promise<void> {
  if (!Buffer.isBuffer(request.body)) throw new HostAgentError('invalid_request', 'The request body must be a JSON object', 'body');
  try {
    request.body = JSON.parse(request.body.toString('utf8')) as unknown;
  } catch {
    throw new HostAgentError('invalid_json', 'The request body is not valid JSON');
  }
}

function parsedReceipt(signed: SignedReceipt): Receipt {
  return JSON.parse(signed.receipt_canonical) as Receipt;
}

function receiptView(signed: SignedReceipt, submitter: ReceiptSubmitter) {
  const receipt = parsedReceipt(signed);
  return {
    receipt_hash: signed.receipt_hash,
    origin: receiptOrigin(receipt),
    job_id: receipt.job_id,
    model_id: receipt.model_id,
    stream: receipt.stream,
    usage: receipt.usage,
    debited_price_wei: receipt.debited_price_wei,
    payout_price_wei: receipt.payout_price_wei,
    started_at: receipt.started_at,
    completed_at: receipt.completed_at,
    submission: submitter.outcomeOf(signed.receipt_hash),
    signed_receipt: signed,
  };
}
