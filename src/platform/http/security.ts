/**
 * Rate limits (@fastify/rate-limit) and response hardening (@fastify/helmet).
 * Limits are per authenticated user (RATE_LIMIT_PER_MINUTE) or, on routes without a
 * token, per client IP (RATE_LIMIT_ANON_PER_MINUTE); 0 turns either off. With
 * REDIS_URL the counters live in Redis, so every process shares one limit. The
 * limiter runs inside the request guard, after authentication and the block check,
 * as API.md orders the checks.
 */
import fastifyHelmet from '@fastify/helmet';
import fastifyRateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Redis } from 'ioredis';
import type { Config } from '../../config.js';
import { DomainError } from '../errors.js';

export type Limiter = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;

export interface Security {
  /** Applies the limit that fits the request (user or IP); throws 429 RATE_LIMITED. */
  limit: Limiter;
  /** Rejections so far, for /metrics. */
  rejections: { user: number; anonymous: number };
  redis?: Redis;
}

export async function registerSecurity(app: FastifyInstance, config: Readonly<Config>): Promise<Security> {
  await app.register(fastifyHelmet, { global: true, contentSecurityPolicy: false });
  const redis = config.redisUrl ? new Redis(config.redisUrl, { maxRetriesPerRequest: 1, enableOfflineQueue: true, connectTimeout: 2000 }) : undefined;
  if (redis) {
    redis.on('error', (err) => app.log.warn({ err: { message: err.message } }, 'redis error'));
    app.addHook('onClose', async () => { redis.disconnect(); });
  }
  await app.register(fastifyRateLimit, {
    global: false,
    ...(redis ? { redis, nameSpace: 'trading-rl:' } : {}),
    // A Redis outage must not take the API down: requests pass unlimited meanwhile.
    skipOnError: true,
  });
  const rejections = { user: 0, anonymous: 0 };
  const make = (max: number, kind: 'user' | 'anonymous', key: (req: FastifyRequest) => string): Limiter | undefined =>
    max <= 0 ? undefined : app.rateLimit({
      max,
      timeWindow: 60_000,
      keyGenerator: key,
      errorResponseBuilder: (_req, ctx) => {
        rejections[kind]++;
        return new DomainError('RATE_LIMITED', `Rate limit of ${ctx.max} requests per minute exceeded`, undefined, Math.max(1, Math.ceil(ctx.ttl / 1000)));
      },
    }) as Limiter;
  const perUser = make(config.rateLimitPerMinute, 'user', (req) => `u:${req.authUser?.id}`);
  const perIp = make(config.rateLimitAnonPerMinute, 'anonymous', (req) => `ip:${req.ip}`);
  return {
    rejections,
    redis,
    limit: async (req, reply) => {
      if (req.routeOptions.config.unlimited) return;
      const limiter = req.authUser ? perUser : perIp;
      if (limiter) await limiter(req, reply);
    },
  };
}
