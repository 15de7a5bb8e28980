import { errorCodes, type ErrorCode } from '../errors.ts';

/**
 * The two error envelopes of the fact sheet (§4.1): OpenAI-style on OpenAI-compatible routes, the
 * native problem shape elsewhere. Both carry the same stable code and text.
 */
export type Surface = 'openai' | 'native';

const openAiTypes: Array<[number, string]> = [
  [400, 'invalid_request_error'],
  [401, 'authentication_error'],
  [402, 'insufficient_quota'],
  [403, 'authentication_error'],
  [404, 'not_found_error'],
  [409, 'conflict_error'],
  [413, 'invalid_request_error'],
  [415, 'invalid_request_error'],
  [429, 'rate_limit_error'],
];

export function openAiErrorType(status: number): string {
  return openAiTypes.find(([code]) => code === status)?.[1] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
}

export function errorTitle(code: ErrorCode): string {
  const words = code.replaceAll('_', ' ');
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function errorResponse(surface: Surface, code: ErrorCode, detail: string, param: string | null): { status: number; body: object } {
  const status = errorCodes[code];
  const problem = { status, title: errorTitle(code), detail, code };
  if (surface === 'native') return { status, body: { error: param === null ? problem : { ...problem, param } } };
  return { status, body: { error: { message: detail, type: openAiErrorType(status), param, code, b3iq: problem } } };
}

const openAiPaths = new Set(['/v1/models', '/v1/chat/completions']);

export function surfaceOf(url: string): Surface {
  const path = url.split('?')[0] ?? url;
  return openAiPaths.has(path) ? 'openai' : 'native';
}
