/** What routes declare about themselves, and what the request pipeline adds to a request. */
import '@fastify/swagger';
import type { Role } from '../db/schema.js';
import type { IdempotencyKey } from '../idempotency.service.js';
import type { AppLogger } from '../logger.js';

export interface AuthUser {
  id: string;
  role: Role;
  tokenVersion: number;
}

/** How a path parameter names a resource: malformed values are 404, never 400 or 500. */
export type ResourceParam = 'id' | 'walletType';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Requires a valid, unrevoked token of an unblocked user. */
    auth?: boolean;
    /** Requires role admin (403 FORBIDDEN otherwise). */
    admin?: boolean;
    /** Requires an Idempotency-Key header (API.md, Idempotency). */
    idempotent?: boolean;
    /** Path parameters that name resources, with their formats. */
    resourceParams?: Record<string, ResourceParam>;
    /** Never rate limited (operational endpoints). */
    unlimited?: boolean;
  }
  interface FastifyRequest {
    authUser?: AuthUser;
    idempotencyKey?: IdempotencyKey;
    /** The canonical fingerprint of the parsed body, computed at parse time. */
    bodyForHash?: unknown;
  }
}

export type RequestLog = AppLogger;
