import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { chatRequestSchema } from '../../gateway/chatRequest.ts';
import { runChatCompletion, type ChatDependencies } from '../../gateway/chatCompletion.ts';
import type { AppDependencies } from '../app.ts';
import { requireGatewayKey } from '../gatewayAuth.ts';
import { KeyLimits } from '../keyLimits.ts';
import { ReplayCache } from '../../gateway/replayCache.ts';
import { DomainError } from '../../errors.ts';
import { modelListResponse, openAiErrorResponse } from '../gatewaySchemas.ts';

const bearer = [{ gatewayKey: [] }];
const errors = {
  400: openAiErrorResponse,
  401: openAiErrorResponse,
  402: openAiErrorResponse,
  403: openAiErrorResponse,
  404: openAiErrorResponse,
  409: openAiErrorResponse,
  413: openAiErrorResponse,
  415: openAiErrorResponse,
  429: openAiErrorResponse,
  502: openAiErrorResponse,
  503: openAiErrorResponse,
};

const chatCompletionResponse = z
  .looseObject({
    id: z.string(),
    object: z.string(),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(z.unknown()),
    usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int(), total_tokens: z.number().int() }).optional(),
    b3iq: z.object({
      receipt_hash: z.string().nullable(),
      latency_ms: z.number().int(),
      ttft_ms: z.number().int(),
      runtime_kind: z.string(),
    }),
  })
  .meta({ description: 'A chat completion, or an SSE stream of chunks when stream is true' });

/** The OpenAI-compatible hosted surface: `/v1/models` and billed `/v1/chat/completions`. */
export function gatewayRoutes(dependencies: AppDependencies): FastifyPluginAsyncZod {
  const now = dependencies.now ?? (() => new Date());
  const chat: ChatDependencies = {
    replays: new ReplayCache(),
    ledgerIdentity: dependencies.ledgerIdentity,
    accounts: dependencies.accounts,
    jobs: dependencies.jobs,
    modelPrices: dependencies.modelPrices,
    nodeDirectory: dependencies.nodeDirectory,
    pauses: dependencies.pauses,
    settings: dependencies.settings,
    now,
  };
  const limits = new KeyLimits(dependencies.settings);
  return async (app) => {
    app.get(
      '/v1/models',
      { schema: { summary: 'Models at least one eligible, benchmarked node can serve', security: bearer, response: { 200: modelListResponse, ...errors } } },
      async (request) => {
        const principal = await requireGatewayKey(request, dependencies.gatewayKeyResolver, 'models', now().getTime());
        limits.takeRequest(principal.keyId, now().getTime());
        // A paused model, or one only paused nodes serve, is not offered while the pause lasts.
        const pauses = await dependencies.pauses.list(now());
        const pausedNodes = new Set(pauses.filter((pause) => pause.targetKind === 'node').map((pause) => pause.targetId));
        const pausedModels = new Set(pauses.filter((pause) => pause.targetKind === 'model').map((pause) => pause.targetId));
        const listed = await dependencies.nodeDirectory.listedModels(now(), pausedNodes);
        const models = listed.filter((model) => !pausedModels.has(model.id));
        return { object: 'list' as const, data: models.map((model) => ({ ...model, object: 'model' as const, owned_by: 'b3iq' as const })) };
      },
    );

    app.post(
      '/v1/chat/completions',
      {
        schema: {
          summary: 'A billed chat completion, streaming or not, with a signed receipt',
          security: bearer,
          body: chatRequestSchema,
          response: { 200: chatCompletionResponse, ...errors },
        },
      },
      async (request, reply) => {
        const principal = await requireGatewayKey(request, dependencies.gatewayKeyResolver, 'chat', now().getTime());
        limits.takeRequest(principal.keyId, now().getTime());
        const idempotencyKey = readIdempotencyKey(request.headers['idempotency-key']);
        const releaseStream = request.body.stream === true ? limits.openStream(principal.keyId) : () => {};
        let tookOver = false;
        try {
          await runChatCompletion(chat, principal, request.body, {
            request: request.raw,
            response: reply.raw,
            takeOver: () => {
              if (!tookOver) reply.hijack();
              tookOver = true;
            },
            tookOver: () => tookOver,
          }, idempotencyKey);
        } finally {
          releaseStream();
        }
        return reply;
      },
    );
  };
}

function readIdempotencyKey(value: string | string[] | undefined): string | null {
  if (value === undefined) return null;
  if (typeof value !== 'string' || value.length === 0 || value.length > 255 || !/^[\x21-\x7e]+$/.test(value)) {
    throw new DomainError('invalid_request', 'Idempotency-Key must be 1-255 printable ASCII characters', 'Idempotency-Key');
  }
  return value;
}
