import type { FastifyError, FastifyInstance } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { DomainError, type ErrorCode } from '../../errors.ts';
import { errorResponse, surfaceOf } from '../errorEnvelope.ts';

interface Translated {
  code: ErrorCode;
  detail: string;
  param: string | null;
}

/** Framework errors that are the client's fault, by Fastify's error code. */
const fastifyClientErrors: Record<string, ErrorCode> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_request',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
};

/**
 * The one place errors become responses. Domain errors carry their code; validation and parser
 * errors are translated; anything else is a bug, answered with a 500 that reveals nothing.
 */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const translated = translate(error);
    if (translated.code === 'internal_error') request.log.error({ err: error }, 'unhandled error');
    const { status, body } = errorResponse(surfaceOf(request.url), translated.code, translated.detail, translated.param);
    if (error instanceof DomainError) void reply.headers(error.headers);
    void reply.code(status).type('application/json; charset=utf-8').send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const { status, body } = errorResponse(surfaceOf(request.url), 'not_found', `No route for ${request.method} ${path}`, null);
    void reply.code(status).send(body);
  });
}

function translate(error: FastifyError): Translated {
  if (error instanceof DomainError) return { code: error.code, detail: error.message, param: error.param };
  if (hasZodFastifySchemaValidationErrors(error)) {
    const first = error.validation[0];
    const param = first === undefined ? null : paramName(first.instancePath, error.validationContext);
    return { code: 'invalid_request', detail: validationDetail(first?.message, param), param };
  }
  const mapped = error.code === undefined ? undefined : fastifyClientErrors[error.code];
  if (mapped !== undefined) return { code: mapped, detail: clientDetail(mapped), param: null };
  if (error instanceof SyntaxError || (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500)) {
    return { code: 'invalid_request', detail: 'The request could not be read', param: null };
  }
  return { code: 'internal_error', detail: 'Internal error', param: null };
}

function paramName(instancePath: string, context: string | undefined): string {
  const path = instancePath.replace(/^\//, '').replaceAll('/', '.');
  return path === '' ? (context ?? 'body') : path;
}

function validationDetail(message: string | undefined, param: string | null): string {
  return `Invalid ${param ?? 'request'}: ${message ?? 'does not match the schema'}`;
}

function clientDetail(code: ErrorCode): string {
  switch (code) {
    case 'payload_too_large':
      return 'The request body exceeds the size limit';
    case 'unsupported_media_type':
      return 'Send the body as application/json';
    case 'invalid_json':
      return 'The body is not valid JSON';
    default:
      return 'The request could not be read';
  }
}
