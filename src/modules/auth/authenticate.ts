/**
 * Authentication of a request or stream: a JWT signed with the configured algorithm
 * only, whose token version is still current and whose user is not blocked. The
 * user's state comes from the UserStateCache, not a query per request.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DomainError, UnauthenticatedError } from '../../platform/errors.js';
import type { AuthUser } from '../../platform/http/types.js';
import type { TokenClaims } from './auth.service.js';
import type { UserStateCache } from './user-state.cache.js';

export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const m = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(header);
  return m?.[1];
}

function isClaims(v: unknown): v is TokenClaims & { exp?: number } {
  const c = v as Partial<TokenClaims> | null;
  return !!c && typeof c.sub === 'string' && /^[1-9][0-9]{0,18}$/.test(c.sub) && typeof c.tv === 'number';
}

/** Verifies a token; throws 401 UNAUTHENTICATED or 403 ACCOUNT_BLOCKED. */
export async function verifyToken(app: FastifyInstance, cache: UserStateCache, token: string | undefined): Promise<AuthUser & { exp?: number }> {
  if (!token) throw new UnauthenticatedError();
  let claims: unknown;
  try {
    claims = app.jwt.verify(token);
  } catch {
    throw new UnauthenticatedError('Invalid or expired token');
  }
  if (!isClaims(claims)) throw new UnauthenticatedError('Invalid token');
  const state = await cache.get(claims.sub);
  if (!state || state.tokenVersion !== claims.tv) throw new UnauthenticatedError('Token revoked');
  if (state.blocked) throw new DomainError('ACCOUNT_BLOCKED', 'This account is blocked');
  return { id: claims.sub, role: state.role, tokenVersion: state.tokenVersion, exp: claims.exp };
}
