import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';

/**
 * The host agent's own closed list of error codes, separate from src/errors.ts because the agent
 * is a different service with a different surface. Codes shared with the gateway mean the same.
 * As on the gateway (fact sheet §4.1), the OpenAI-compatible routes (`/v1/models`,
 * `/v1/chat/completions`) answer in the OpenAI envelope with a `b3iq` problem member, every other
 * route in the native problem envelope.
 */
export const hostAgentErrorCodes = {
  invalid_request: 400,
  invalid_json: 400,
  unauthorized: 401,
  local_api_key_scope_denied: 403,
  credential_wrong_surface: 403,
  not_found: 404,
  control_plane_not_configured: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  internal_error: 500,
  runtime_unavailable: 502,
  control_plane_unavailable: 502,
  service_unavailable: 503,
} as const;

export type HostAgentErrorCode = keyof typeof hostAgentErrorCodes;
export type ErrorSurface = 'openai' | 'native';

const openAiTypes: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'authentication_error',
  404: 'not_found_error',
  409: 'conflict_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
};

export interface Problem {
  status: number;
  title: string;
  detail: string;
  code: HostAgentErrorCode;
}

export interface OpenAiError {
  error: { message: string; type: string; param: string | null; code: HostAgentErrorCode; b3iq: Problem };
}

export interface NativeError {
  error: Problem & { param?: string };
}

const openAiPaths = new Set(['/v1/models', '/v1/chat/completions']);

export function surfaceOf(url: string): ErrorSurface {
  return openAiPaths.has(url.split('?')[0] ?? url) ? 'openai' : 'native';
}

function problem(code: HostAgentErrorCode, detail: string): Problem {
  const words = code.replaceAll('_', ' ');
  return { status: hostAgentErrorCodes[code], title: words.charAt(0).toUpperCase() + words.slice(1), detail, code };
}

export function openAiErrorBody(code: HostAgentErrorCode, message: string, param: string | null = null): OpenAiError {
  const status = hostAgentErrorCodes[code];
  const type = openAiTypes[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error');
  return { error: { message, type, param, code, b3iq: problem(code, message) } };
}

export function nativeErrorBody(code: HostAgentErrorCode, detail: string, param: string | null = null): NativeError {
  const body = problem(code, detail);
  return { error: param === null ? body : { ...body, param } };
}

/** A failure the caller can act on; routes throw it and the one error handler answers. */
export class HostAgentError extends Error {
  readonly code: HostAgentErrorCode;
  readonly param: string | null;

  constructor(code: HostAgentErrorCode, message: string, param: string | null = null) {
    super(message);
    this.name = 'HostAgentError';
    this.code = code;
    this.param = param;
  }
}

/** Answers with the envelope of the route the request came to. */
export function sendError(reply: FastifyReply, code: HostAgentErrorCode, message: string, param: string | null = null): FastifyReply {
  const body = surfaceOf(reply.request.url) === 'openai' ? openAiErrorBody(code, message, param) : nativeErrorBody(code, message, param);
  return reply.code(hostAgentErrorCodes[code]).type('application/json; charset=utf-8').send(body);
}

/** Framework errors that are the client's fault, by Fastify's error code. */
const fastifyClientErrors: Record<string, HostAgentErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
};

/**
 * The one place errors become responses. Anything that is not a known client error is a bug,
 * answered with a 500 that reveals nothing; it is logged without the request body.
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof HostAgentError) return sendError(reply, error.code, error.message, error.param);
    if (hasZodFastifySchemaValidationErrors(error)) {
      const first = error.validation[0];
      const path = (first?.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.');
      const param = path === '' ? (error.validationContext ?? 'body') : path;
      return sendError(reply, 'invalid_request', `Invalid ${param}: ${first?.message ?? 'does not match the schema'}`, param);
    }
    const mapped = error.code === undefined ? undefined : fastifyClientErrors[error.code];
    if (mapped !== undefined) return sendError(reply, mapped, 'The request could not be accepted as sent');
    if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
      return sendError(reply, 'invalid_request', 'The request could not be read');
    }
    request.log.error({ errorName: error.name, errorCode: error.code }, 'unhandled error');
    return sendError(reply, 'internal_error', 'Internal error');
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    return sendError(reply, 'not_found', `No route for ${request.method} ${path}`);
  });
}
