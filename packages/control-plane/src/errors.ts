// One error shape for every failure: {"error":{"code","message"}}.
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { tryParseId, type IdKind } from '@wrenn/contracts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, code = 'invalid_request') => new ApiError(400, code, message);
export const unauthorized = (message = 'authentication required', code = 'unauthorized') =>
  new ApiError(401, code, message);
export const forbidden = (message: string, code = 'forbidden') => new ApiError(403, code, message);
export const notFound = (message: string, code = 'not_found') => new ApiError(404, code, message);
export const conflict = (message: string, code = 'conflict') => new ApiError(409, code, message);

export const ErrorSchema = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String() }) },
  { $id: 'Error', title: 'Error', description: 'Every failure has this shape.' },
);

/** Parses a wire id from a request; a malformed one is a 400 naming the parameter. */
export function parseIdParam(kind: IdKind, value: unknown, param: string): string {
  const uuid = tryParseId(kind, value);
  if (uuid === null) {
    throw badRequest(`${param} is not a valid ${kind} id`);
  }
  return uuid;
}

const CODE_BY_STATUS: Record<number, string> = {
  400: 'invalid_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  408: 'request_timeout',
  409: 'conflict',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  429: 'rate_limited',
  431: 'headers_too_large',
  503: 'unavailable',
};

/** Messages for Fastify's own errors that could otherwise echo parts of the request body. */
const SAFE_MESSAGES: Record<string, string> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'request body is not valid JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'request body is empty but content-type is application/json',
  FST_ERR_CTP_BODY_TOO_LARGE: 'request body is too large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported content-type; send application/json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'request body does not match content-length',
};

interface AjvLikeError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** Turns the first schema violation into a message naming the field, e.g. `body.name: must be string`. */
export function formatSchemaErrors(errors: AjvLikeError[], dataVar: string): Error {
  const e = errors[0];
  if (!e) return new Error(`${dataVar} is invalid`);
  const where = dataVar + e.instancePath.replaceAll('/', '.');
  let message: string;
  if (e.keyword === 'additionalProperties') {
    message = `${where} has unknown property "${String(e.params.additionalProperty)}"`;
  } else if (e.keyword === 'required') {
    message = `${where}.${String(e.params.missingProperty)} is required`;
  } else {
    message = `${where} ${e.message ?? 'is invalid'}`;
  }
  return new Error(message);
}

/** Errors Fastify's router raises before any route runs (malformed URL, over-long parameter). */
export function frameworkErrorHandler(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const tooLong = err.code === 'FST_ERR_MAX_PARAM_LENGTH';
  void reply.code(tooLong ? 414 : 400).send({
    error: tooLong
      ? { code: 'uri_too_long', message: 'a URL parameter is too long' }
      : { code: 'invalid_request', message: 'malformed URL' },
  });
}

const CLIENT_ERRORS: Record<string, [number, string, string]> = {
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'request_timeout', 'request took too long to arrive'],
  HPE_HEADER_OVERFLOW: [431, 'headers_too_large', 'request headers are too large'],
};

/** Malformed HTTP (before Fastify sees a request): answered in the same error shape, then closed. */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message] = CLIENT_ERRORS[err.code ?? ''] ?? [400, 'invalid_request', 'malformed HTTP request'];
  const body = JSON.stringify({ error: { code, message } });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    return reply.code(404).send({ error: { code: 'not_found', message: `no route for ${request.method} ${path}` } });
  });

  app.setErrorHandler((err: FastifyError | ApiError, request, reply) => {
    if (err instanceof ApiError) {
      request.log.info({ code: err.code, status: err.status }, 'request rejected');
      return reply.code(err.status).send({ error: { code: err.code, message: err.message } });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      request.log.info({ code: 'invalid_request' }, 'request failed validation');
      return reply.code(400).send({ error: { code: 'invalid_request', message: fe.message } });
    }
    const status = typeof fe.statusCode === 'number' ? fe.statusCode : 500;
    if (status >= 400 && status < 500) {
      const code = CODE_BY_STATUS[status] ?? 'invalid_request';
      const message = (fe.code && SAFE_MESSAGES[fe.code]) || (fe.code?.startsWith('FST_') ? fe.message : code);
      request.log.info({ code, status, fastifyCode: fe.code }, 'request rejected');
      return reply.code(status).send({ error: { code, message } });
    }
    // Internal errors are logged in full but never shown to the caller.
    request.log.error({ err }, 'internal error');
    const code = status === 503 ? 'unavailable' : 'internal_error';
    return reply
      .code(status >= 500 && status < 600 ? status : 500)
      .send({ error: { code, message: status === 503 ? 'service unavailable' : 'internal server error' } });
  });
}
