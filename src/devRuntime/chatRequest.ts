/**
 * Reads a chat-completions request body and counts its prompt tokens deterministically, so that
 * tests can compute the expected usage by hand: one token per whitespace-separated word of every
 * message's text, plus three per message for the chat template.
 */

export interface ChatRequest {
  model: string;
  stream: boolean;
  includeUsage: boolean;
  promptTokens: number;
  /** The smaller of max_tokens and max_completion_tokens, when either is given. */
  maxTokens: number | undefined;
}

export interface ChatRequestError {
  message: string;
  param: string | null;
}

const tokensPerMessage = 3;

export function parseChatRequest(body: string): ChatRequest | ChatRequestError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return { message: 'We could not parse the JSON body of your request.', param: null };
  }
  if (!isRecord(parsed)) return { message: 'The request body must be a JSON object.', param: null };
  const { model, messages, stream, stream_options: streamOptions } = parsed;
  if (typeof model !== 'string' || model.length === 0) return { message: 'You must provide a model parameter.', param: 'model' };
  if (!Array.isArray(messages) || messages.length === 0) {
    return { message: "'messages' must be a non-empty array.", param: 'messages' };
  }
  const promptTokens = countPromptTokens(messages);
  if (typeof promptTokens === 'object') return promptTokens;
  if (stream !== undefined && stream !== null && typeof stream !== 'boolean') {
    return { message: "'stream' must be a boolean.", param: 'stream' };
  }
  if (streamOptions !== undefined && streamOptions !== null && !isRecord(streamOptions)) {
    return { message: "'stream_options' must be an object.", param: 'stream_options' };
  }
  const maxTokens = readLimit(parsed, 'max_tokens');
  const maxCompletionTokens = readLimit(parsed, 'max_completion_tokens');
  if (typeof maxTokens === 'object') return maxTokens;
  if (typeof maxCompletionTokens === 'object') return maxCompletionTokens;
  return {
    model,
    stream: stream === true,
    includeUsage: isRecord(streamOptions) && streamOptions['include_usage'] === true,
    promptTokens,
    maxTokens: smallerOf(maxTokens, maxCompletionTokens),
  };
}

export function isChatRequestError(value: ChatRequest | ChatRequestError): value is ChatRequestError {
  return 'message' in value;
}

function countPromptTokens(messages: unknown[]): number | ChatRequestError {
  let tokens = 0;
  for (const [index, message] of messages.entries()) {
    if (!isRecord(message) || typeof message['role'] !== 'string') {
      return { message: `messages[${index}] must be an object with a string 'role'.`, param: `messages[${index}]` };
    }
    const content = message['content'];
    if (typeof content === 'string') tokens += countWords(content);
    else if (Array.isArray(content)) tokens += countPartWords(content);
    else if (content !== undefined && content !== null) {
      return { message: `messages[${index}].content must be a string or an array of parts.`, param: `messages[${index}].content` };
    }
    tokens += tokensPerMessage;
  }
  return tokens;
}

/** Only text parts count; images and other parts are accepted and ignored. */
function countPartWords(parts: unknown[]): number {
  let words = 0;
  for (const part of parts) {
    if (isRecord(part) && part['type'] === 'text' && typeof part['text'] === 'string') words += countWords(part['text']);
  }
  return words;
}

/** Counts runs of non-whitespace characters without allocating the split words. */
export function countWords(text: string): number {
  let words = 0;
  let inWord = false;
  for (let index = 0; index < text.length; index += 1) {
    const space = isWhitespace(text.charCodeAt(index));
    if (!space && !inWord) words += 1;
    inWord = !space;
  }
  return words;
}

function isWhitespace(code: number): boolean {
  // Tab, line feed, vertical tab, form feed, carriage return and space cover what prompts contain;
  // the rarer Unicode spaces fall back to the regular expression.
  if (code === 32 || (code >= 9 && code <= 13)) return true;
  return code > 127 && /\s/.test(String.fromCharCode(code));
}

function readLimit(body: Record<string, unknown>, name: string): number | undefined | ChatRequestError {
  const value = body[name];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    return { message: `'${name}' must be a positive integer.`, param: name };
  }
  return value;
}

function smallerOf(first: number | undefined, second: number | undefined): number | undefined {
  if (first === undefined) return second;
  if (second === undefined) return first;
  return Math.min(first, second);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
