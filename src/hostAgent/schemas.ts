import { z } from 'zod';
import { modelProfileSchema, queueHealths } from '../events/node.ts';
import { signedReceiptSchema } from '../receipts/receipt.ts';
import { dispatchSchema } from './dispatch.ts';
import { hostAgentErrorCodes, type HostAgentErrorCode } from './errors.ts';

/**
 * Wire schemas of the agent's local API. They validate requests, serialize responses, and are the
 * source of openapi/host-agent.json (`npm run openapi`).
 */

/**
 * The agent's own registry for ids and descriptions. The document is built from it alone, so it
 * does not change with whatever other modules (the gateway's, private jobs') put in zod's global
 * registry in the same process.
 */
export const hostAgentSchemaRegistry = z.registry<{ id?: string; description?: string }>();

export const hostAgentErrorCodeSchema = z.enum(Object.keys(hostAgentErrorCodes) as [HostAgentErrorCode, ...HostAgentErrorCode[]]);

const problem = z.object({ status: z.number().int(), title: z.string(), detail: z.string(), code: hostAgentErrorCodeSchema });

export const openAiErrorResponse = z
  .object({
    error: z.object({ message: z.string(), type: z.string(), param: z.string().nullable(), code: hostAgentErrorCodeSchema, b3iq: problem }),
  })
  .register(hostAgentSchemaRegistry, { id: 'HostAgentOpenAiError', description: 'OpenAI-compatible error with B3IQ metadata' });

export const nativeErrorResponse = z
  .object({ error: problem.extend({ param: z.string().optional() }) })
  .register(hostAgentSchemaRegistry, { id: 'HostAgentProblem', description: 'B3IQ-native problem response' });

export const healthResponse = z.object({ status: z.literal('ok'), node_id: z.string(), runtime_reachable: z.boolean() });

export const modelListResponse = z.object({
  object: z.literal('list'),
  data: z.array(z.object({ id: z.string(), object: z.literal('model'), created: z.number().int(), owned_by: z.literal('b3iq-node') })),
});

/**
 * Documentation only: the body is checked by the route itself after the caller is authenticated,
 * because the router's signature covers the exact bytes. Any OpenAI chat member is forwarded.
 */
export const chatRequestDocument = z
  .looseObject({
    model: z.string(),
    messages: z.array(z.looseObject({ role: z.string() })),
    stream: z.boolean().optional(),
    stream_options: z.looseObject({ include_usage: z.boolean().optional() }).optional(),
    b3iq_dispatch: dispatchSchema.optional().register(hostAgentSchemaRegistry, { description: 'The router’s terms; router-signed requests only' }),
  })
  .register(hostAgentSchemaRegistry, { description: 'An OpenAI chat completion request' });

const receiptMetadata = z.object({
  signed_receipt: signedReceiptSchema,
  runtime_kind: z.string(),
  latency_ms: z.number().int(),
  ttft_ms: z.number().int().nullable(),
  receipt_hash: z.string().optional().register(hostAgentSchemaRegistry, { description: 'Local callers only' }),
  origin: z.literal('local').optional().register(hostAgentSchemaRegistry, { description: 'Local callers only: the receipt is local and never billed' }),
});

export const chatCompletionDocument = z
  .looseObject({
    id: z.string(),
    object: z.string(),
    created: z.number().int(),
    model: z.string(),
    choices: z.array(z.unknown()),
    usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int(), total_tokens: z.number().int() }).optional(),
    b3iq: receiptMetadata.optional(),
  })
  .register(hostAgentSchemaRegistry, {
    description:
      'The runtime’s chat completion with the node’s signed receipt under b3iq, or, when stream is true, an SSE stream of chunks ' +
      'whose last before [DONE] carries the receipt (a b3iq.receipt object for the router, a chunk without choices for local callers)',
  });

const localBenchmark = z
  .object({
    samples: z.number().int(),
    completion_tokens_per_second_median: z.number().int(),
    last_completed_at: z.string(),
  })
  .register(hostAgentSchemaRegistry, { description: 'Throughput measured from this node’s own signed receipts (not the control plane’s observed benchmark)' });

export const modelProfilesResponse = z.object({
  object: z.literal('list'),
  node_id: z.string(),
  runtime: z.object({ kind: z.string(), reachable: z.boolean(), probed_at: z.string().nullable(), models_listed: z.number().int() }),
  queue: z.object({ health: z.enum(queueHealths), depth: z.number().int(), max_concurrent: z.number().int() }),
  data: z.array(modelProfileSchema.extend({ queue_health: z.enum(queueHealths), local_benchmark: localBenchmark.nullable() })),
});

export const receiptsQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(1000).default(50),
  origin: z.enum(['local', 'router']).optional().register(hostAgentSchemaRegistry, { description: 'Only local chats, or only routed jobs' }),
});

const submission = z
  .object({ status: z.enum(['accepted', 'rejected']), code: z.string().nullable(), submitted_at: z.string() })
  .register(hostAgentSchemaRegistry, { description: 'What the control plane answered when the receipt was submitted' });

const receiptHash = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');

export const receiptListResponse = z.object({
  object: z.literal('list'),
  data: z.array(
    z.object({
      receipt_hash: z.string(),
      origin: z.enum(['local', 'router']),
      job_id: z.string(),
      model_id: z.string(),
      stream: z.boolean(),
      usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int(), total_tokens: z.number().int() }),
      debited_price_wei: z.string(),
      payout_price_wei: z.string(),
      started_at: z.string(),
      completed_at: z.string(),
      submission: submission.nullable(),
      signed_receipt: signedReceiptSchema,
    }),
  ),
});

export const submitBody = z.strictObject({ receipt_hash: receiptHash });

export const submitResponse = z.object({
  receipt_hash: z.string(),
  origin: z.enum(['local', 'router']),
  submission,
  replayed: z.boolean().register(hostAgentSchemaRegistry, { description: 'True when this outcome was already recorded and nothing was sent again' }),
});
