import { z } from 'zod';
import { weiString } from '../http/schemas.ts';

/**
 * The hosted chat request. Fields the gateway prices, routes or refuses are validated; other
 * OpenAI fields (seed, tools, response_format…) pass through to the node untouched, because a
 * strict schema here would break ordinary OpenAI clients.
 */
const message = z
  .looseObject({
    role: z.enum(['system', 'user', 'assistant', 'tool']),
    content: z.unknown(),
  })
  .refine((value) => value.content !== undefined, { message: 'content is required', path: ['content'] });

const b3iqOptions = z.strictObject({
  model_profile_id: z.string().max(200).optional(),
  job_id: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, dot, underscore or dash')
    .optional(),
  max_price_wei: weiString.optional(),
  dispatch_mode: z.literal('pooled_sync', { error: 'hosted chat only runs pooled_sync; private jobs use /v1/private-inference/jobs' }).optional(),
});

export const chatRequestSchema = z.looseObject({
  model: z.string().min(1).max(200),
  messages: z.array(message).min(1).max(1000),
  max_tokens: z.number().int().positive().max(1_000_000).optional(),
  max_completion_tokens: z.number().int().positive().max(1_000_000).optional(),
  temperature: z.number().min(0).max(2).optional(),
  top_p: z.number().min(0).max(1).optional(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullable().optional(),
  stream: z.boolean().optional(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullable().optional(),
  n: z.number().int().min(1).max(1, 'n > 1 is not supported: each completion is billed and receipted on its own').optional(),
  b3iq: b3iqOptions.optional(),
});

export type ChatRequest = z.infer<typeof chatRequestSchema>;

/**
 * An upper bound on the prompt's tokens, for the worst-case quote. Byte-level tokenizers never
 * emit more tokens than bytes, and chat templates add a few tokens per message; the bound is the
 * UTF-8 size of the messages' content plus 8 per message plus 16.
 */
export function promptTokenBound(messages: ChatRequest['messages']): number {
  let bytes = 0;
  for (const entry of messages) {
    const content = typeof entry.content === 'string' ? entry.content : JSON.stringify(entry.content ?? '');
    bytes += Buffer.byteLength(content, 'utf8') + 8;
  }
  return bytes + 16;
}

/** The body the node receives: without our `b3iq` options, with usage requested and the cap set. */
export function nodeRequestBody(request: ChatRequest, maxTokens: number, dispatch: Record<string, unknown>): Buffer {
  const { b3iq: _options, max_completion_tokens: _cap, stream_options: streamOptions, ...openAi } = request;
  const body: Record<string, unknown> = { ...openAi, max_tokens: maxTokens, b3iq_dispatch: dispatch };
  if (request.stream === true) body['stream_options'] = { ...(streamOptions ?? {}), include_usage: true };
  return Buffer.from(JSON.stringify(body), 'utf8');
}
