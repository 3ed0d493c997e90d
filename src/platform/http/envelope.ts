/**
 * The response envelopes of API.md and the one error handler that builds every
 * error response. Fastify's own error bodies never reach a client.
 */
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { DomainError, type ErrorCode, type ErrorDetail } from '../errors.js';
import { pgErrorToDomain } from '../db/pg-errors.js';
import { TransactionService } from '../transaction.service.js';

export interface ErrorPayload {
  code: ErrorCode;
  message: string;
  details?: ErrorDetail[];
}

export function sendData(reply: FastifyReply, status: number, data: unknown): FastifyReply {
  return reply.code(status).send({ success: true, operationId: reply.request.id, data });
}

export function sendError(reply: FastifyReply, status: number, error: ErrorPayload, retryAfter?: number): FastifyReply {
  if (retryAfter !== undefined) reply.header('Retry-After', String(Math.max(1, Math.ceil(retryAfter))));
  return reply.code(status).send({ success: false, operationId: reply.request.id, error });
}

export function domainErrorPayload(err: DomainError): ErrorPayload {
  return err.details ? { code: err.code, message: err.message, details: err.details } : { code: err.code, message: err.message };
}

/** Fastify's own errors (parsing, limits, validation) by their codes. */
function fastifyErrorToDomain(err: FastifyError): DomainError | undefined {
  if (err.validation) {
    const details = err.validation.map((v) => {
      const missing = (v.params as { missingProperty?: string } | undefined)?.missingProperty;
      const extra = (v.params as { additionalProperty?: string } | undefined)?.additionalProperty;
      const base = v.instancePath ? v.instancePath.replace(/^\//, '').replace(/\//g, '.') : '';
      const field = [base, missing ?? extra].filter(Boolean).join('.') || err.validationContext || undefined;
      const message = extra ? 'unknown property' : v.message ?? 'invalid';
      return field ? { field, message } : { message };
    });
    return new DomainError('VALIDATION_FAILED', `Invalid ${err.validationContext ?? 'request'}`, details);
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new DomainError('PAYLOAD_TOO_LARGE', 'Request body is larger than 64 KiB');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new DomainError('UNSUPPORTED_MEDIA_TYPE', 'Request bodies must be application/json');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new DomainError('VALIDATION_FAILED', 'Malformed request body');
    case 'FST_ERR_NOT_FOUND':
      return new DomainError('NOT_FOUND', 'Route not found');
    default:
      break;
  }
  if (err.statusCode === 413) return new DomainError('PAYLOAD_TOO_LARGE', 'Request body is larger than 64 KiB');
  if (err.statusCode === 415) return new DomainError('UNSUPPORTED_MEDIA_TYPE', 'Request bodies must be application/json');
  if (err.statusCode === 404) return new DomainError('NOT_FOUND', 'Not found');
  if (err.statusCode === 400) return new DomainError('VALIDATION_FAILED', 'Malformed request');
  return undefined;
}

/** Turns any error into the domain error it means; undefined when it is unexpected (500). */
export function toDomainError(err: unknown): DomainError | undefined {
  if (err instanceof DomainError) return err;
  const fromPg = pgErrorToDomain(err);
  if (fromPg) return fromPg;
  if (TransactionService.isRetryableError(err)) return new DomainError('SERVICE_UNAVAILABLE', 'Service temporarily unavailable, please retry', undefined, 1);
  if (err && typeof err === 'object' && ('statusCode' in err || 'validation' in err || 'code' in err)) {
    return fastifyErrorToDomain(err as FastifyError);
  }
  return undefined;
}

export function errorHandler(err: unknown, request: FastifyRequest, reply: FastifyReply) {
  const domain = toDomainError(err);
  if (!domain) {
    request.log.error({ err }, 'unhandled error');
    return sendError(reply, 500, { code: 'INTERNAL', message: 'Internal server error' });
  }
  if (domain.status >= 500) {
    request.log.warn({ err, code: domain.code }, 'service unavailable');
    // The message of a 5xx is always generic: no SQL, hosts or stack.
    return sendError(reply, domain.status, { code: domain.code, message: 'Service temporarily unavailable, please retry' }, domain.retryAfter ?? 1);
  }
  if (domain.status === 429 && domain.retryAfter === undefined) return sendError(reply, 429, domainErrorPayload(domain), 60);
  return sendError(reply, domain.status, domainErrorPayload(domain), domain.retryAfter);
}

/** Sends a stored or fresh idempotent outcome; a replay keeps the stored data byte for byte. */
export function sendOutcome(reply: FastifyReply, outcome: { status: number; body: string; replayed: boolean }): FastifyReply {
  if (outcome.replayed) reply.header('Idempotent-Replayed', 'true');
  const ok = outcome.status < 400;
  return reply
    .code(outcome.status)
    .type('application/json; charset=utf-8')
    .send(`{"success":${ok},"operationId":${JSON.stringify(reply.request.id)},"${ok ? 'data' : 'error'}":${outcome.body}}`);
}
