/**
 * The OpenAI chat-completions wire format: error bodies, the non-stream completion and the
 * server-sent-event frames of a stream. Generated text is "tok1 tok2 ... tokN" so its length
 * in tokens can be checked by counting words.
 */

export type FinishReason = 'stop' | 'length';

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Identifies one completion; every chunk of a stream repeats it. */
export interface CompletionIdentity {
  id: string;
  created: number;
  model: string;
}

export type ErrorType = 'invalid_request_error' | 'server_error';

export function errorBody(message: string, type: ErrorType, param: string | null, code: string | null): string {
  return JSON.stringify({ error: { message, type, param, code } });
}

export function modelsBody(models: readonly string[]): string {
  const data = models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'dev-runtime' }));
  return JSON.stringify({ object: 'list', data });
}

/** The text of token `index` (zero-based) as it is appended to the content generated before it. */
export function tokenText(index: number): string {
  return index === 0 ? 'tok1' : ` tok${index + 1}`;
}

export function completionContent(tokens: number): string {
  let content = '';
  for (let index = 0; index < tokens; index += 1) content += tokenText(index);
  return content;
}

export function usageOf(promptTokens: number, completionTokens: number): Usage {
  return { prompt_tokens: promptTokens, completion_tokens: completionTokens, total_tokens: promptTokens + completionTokens };
}

export function completionBody(identity: CompletionIdentity, tokens: number, finishReason: FinishReason, usage: Usage | undefined): string {
  const message = { role: 'assistant', content: completionContent(tokens), refusal: null };
  return JSON.stringify({
    id: identity.id,
    object: 'chat.completion',
    created: identity.created,
    model: identity.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: finishReason }],
    ...(usage === undefined ? {} : { usage }),
  });
}

/**
 * Builds the frames of one stream. With include_usage every chunk carries `usage: null` and one
 * extra chunk with empty choices carries the totals, as the OpenAI API does.
 */
export class StreamFrames {
  readonly #identity: CompletionIdentity;
  readonly #includeUsage: boolean;

  constructor(identity: CompletionIdentity, includeUsage: boolean) {
    this.#identity = identity;
    this.#includeUsage = includeUsage;
  }

  role(): string {
    return this.#choiceFrame({ role: 'assistant', content: '' }, null);
  }

  token(index: number): string {
    return this.#choiceFrame({ content: tokenText(index) }, null);
  }

  finish(reason: FinishReason): string {
    return this.#choiceFrame({}, reason);
  }

  usage(usage: Usage): string {
    return this.#frame([], usage);
  }

  #choiceFrame(delta: object, finishReason: FinishReason | null): string {
    return this.#frame([{ index: 0, delta, logprobs: null, finish_reason: finishReason }], null);
  }

  #frame(choices: object[], usage: Usage | null): string {
    const { id, created, model } = this.#identity;
    const chunk = { id, object: 'chat.completion.chunk', created, model, choices, ...(this.#includeUsage ? { usage } : {}) };
    return `data: ${JSON.stringify(chunk)}\n\n`;
  }
}

export const doneFrame = 'data: [DONE]\n\n';
