import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';

/**
 * The host agent's own closed list of error codes. Its routes are OpenAI-compatible, so every
 * error uses the OpenAI envelope `{error: {message, type, param, code}}`. The list is separate
 * from src/errors.ts because the agent is a different service with a different surface: only
 * `runtime_unavailable` is new, the other codes mean what they mean on the gateway.
 */
export const hostAgentErrorCodes = {
  invalid_request: 400,
  invalid_json: 400,
  unauthorized: 401,
  not_found: 404,
  payload_too_large: 413,
  unsupported_media_type: 415,
  internal_error: 500,
  runtime_unavailable: 502,
  service_unavailable: 503,
} as const;

export type HostAgentErrorCode = keyof typeof hostAgentErrorCodes;

const openAiTypes: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  404: 'not_found_error',
  413: 'invalid_request_error',
  415: 'invalid_request_error',
};

export interface OpenAiError {
  error: { message: string; type: string; param: string | null; code: HostAgentErrorCode };
}

export function errorBody(code: HostAgentErrorCode, message: string, param: string | null = null): OpenAiError {
  const status = hostAgentErrorCodes[code];
  return { error: { message, type: openAiTypes[status] ?? (status >= 500 ? 'api_error' : 'invalid_request_error'), param, code } };
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

export function sendError(reply: FastifyReply, code: HostAgentErrorCode, message: string, param: string | null = null): FastifyReply {
  return reply.code(hostAgentErrorCodes[code]).type('application/json; charset=utf-8').send(errorBody(code, message, param));
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
