/**
 * The HTTP API's one translation point: every error leaves as schemas/error.json with a stable
 * code. Coded domain errors keep their code and status; Fastify's own errors get ours; anything
 * else is a 500 INTERNAL_ERROR whose details stay in the log.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { STATUS_CODES } from 'node:http';
import { isProvisiondError } from '../errors.js';
import type { ErrorBody } from '../../schemas/types.js';

/** Codes the API layer itself produces (domain codes come from the domains' error families). */
export const API_ERROR_CODES = {
  INVALID_BODY: 400,
  INVALID_QUERY: 400,
  INVALID_PARAMS: 400,
  MALFORMED_JSON: 400,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_FOUND: 404,
  /** Any other malformed request Fastify refuses (e.g. a body that does not match its Content-Length). */
  BAD_REQUEST: 400,
  RATE_LIMITED: 429,
  INTERNAL_ERROR: 500,
  /** GET /readyz: a dependency (the store, a listener) is not up, or the service is stopping. */
  NOT_READY: 503,
} as const;

/** Retry-After sent with 503 answers. */
export const UNAVAILABLE_RETRY_SECONDS = 5;

export function errorBody(status: number, code: string, message: string, extra: Partial<ErrorBody> = {}): ErrorBody {
  return { statusCode: status, code, error: STATUS_CODES[status] ?? 'Error', message, ...extra };
}

/** The code of the error answer each reply carried (provisiond_http_errors_total, counted in app.ts onResponse). */
const sentCodes = new WeakMap<FastifyReply, string>();

/** The error code `reply` answered with, when it was an error answer (sendError). */
export function errorCodeSent(reply: FastifyReply): string | undefined {
  return sentCodes.get(reply);
}

export function sendError(reply: FastifyReply, status: number, code: string, message: string, extra: Partial<ErrorBody> = {}) {
  sentCodes.set(reply, code);
  if (extra.retryAfterSeconds !== undefined) reply.header('retry-after', String(extra.retryAfterSeconds));
  return reply.code(status).type('application/json').send(errorBody(status, code, message, extra));
}

export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  if (isProvisiondError(error)) {
    // 503: the store (or another dependency) is unavailable; clients retry after a short while
    const retry = error.details?.retryAfterSeconds ?? (error.status === 503 ? UNAVAILABLE_RETRY_SECONDS : undefined);
    if (error.status >= 500) request.log.error({ err: error }, 'request failed');
    return sendError(reply, error.status, error.code, error.message, typeof retry === 'number' ? { retryAfterSeconds: retry } : {});
  }
  if (error.validation) {
    const part = error.validationContext ?? 'body';
    const code = part === 'querystring' ? 'INVALID_QUERY' : part === 'params' ? 'INVALID_PARAMS' : 'INVALID_BODY';
    return sendError(reply, 400, code, `${part}: ${error.message}`);
  }
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return sendError(reply, 400, 'MALFORMED_JSON', 'the request body is not valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return sendError(reply, 413, 'PAYLOAD_TOO_LARGE', 'the request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return sendError(reply, 415, 'UNSUPPORTED_MEDIA_TYPE', 'send JSON with content-type application/json');
  }
  if (error instanceof SyntaxError) return sendError(reply, 400, 'MALFORMED_JSON', 'the request body is not valid JSON');
  const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
  if (status === 500) {
    request.log.error({ err: error }, 'request failed');
    return sendError(reply, 500, 'INTERNAL_ERROR', 'internal error');
  }
  return sendError(reply, status, 'BAD_REQUEST', error.message);
}
