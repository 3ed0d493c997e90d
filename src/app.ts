/**
 * buildApp: the Fastify application with its platform plugins first, then each
 * module's routes. It listens nowhere; server.ts does that.
 *
 * The request pipeline judges a request in API.md's order: 413 size, 415 content
 * type, 400 malformed JSON (all while parsing), then in one preValidation guard 401
 * authentication, 403 blocked, 429 rate limit, 403 role, 404 resource,
 * 400 Idempotency-Key; then schema validation (400) and the operation.
 */
import { randomUUID } from 'node:crypto';
import fastifyJwt from '@fastify/jwt';
import fastifyWebsocket from '@fastify/websocket';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Config } from './config.js';
import type { DatabaseHandle } from './platform/db/database.js';
import type { NotificationHub } from './platform/db/notifications.js';
import { RedisPubSub } from './platform/pubsub.js';
import { ReadRouter } from './platform/db/read-router.js';
import { DomainError, NotFoundError, ValidationError } from './platform/errors.js';
import { errorHandler, sendError } from './platform/http/envelope.js';
import { fingerprint, numbersToText, parseJsonBody } from './platform/http/json-body.js';
import type { ResourceParam } from './platform/http/types.js';
import './platform/http/types.js';
import { validatorCompiler } from './platform/http/validation.js';
import { IDEMPOTENCY_KEY_PATTERN, IdempotencyService } from './platform/idempotency.service.js';
import type { AppLogger } from './platform/logger.js';
import { TransactionService } from './platform/transaction.service.js';
import { adminRoutes } from './modules/admin/admin.routes.js';
import { AdminService } from './modules/admin/admin.service.js';
import { authRoutes } from './modules/auth/auth.routes.js';
import { AuthService, type TokenClaims } from './modules/auth/auth.service.js';
import { bearerToken, verifyToken } from './modules/auth/authenticate.js';
import { UserStateCache } from './modules/auth/user-state.cache.js';
import { healthRoutes } from './modules/ops/health.routes.js';
import { jobStatuses } from './modules/ops/jobs.js';
import { Metrics } from './modules/ops/metrics.js';
import { maintenanceJobs, registerJobs } from './modules/ops/ops.plugin.js';
import { registerOpenApi } from './platform/http/openapi.js';
import { registerSecurity } from './platform/http/security.js';
import { FinancialService } from './modules/wallets/financial.service.js';
import { walletRoutes } from './modules/wallets/wallet.routes.js';
import { WalletService } from './modules/wallets/wallet.service.js';
import { createTrading, registerTrading, type Trading } from './modules/trading/index.js';
import { referralRoutes } from './modules/referrals/referral.routes.js';
import { ReferralService } from './modules/referrals/referral.service.js';

export interface AppDeps {
  config: Readonly<Config>;
  database: DatabaseHandle;
  log: AppLogger;
  jwtSecret: string;
  /** Cross-process notifications; without it caches only see this process's changes. */
  hub?: NotificationHub;
}

export interface Services {
  tx: TransactionService;
  idempotency: IdempotencyService;
  financial: FinancialService;
  wallets: WalletService;
  auth: AuthService;
  admin: AdminService;
  userCache: UserStateCache;
  trading: Trading;
  referrals: ReferralService;
  metrics: Metrics;
  /** Read routing to DATABASE_READ_URLS; the primary alone (at no cost) without them. */
  reads: ReadRouter;
}

const RESOURCE_FORMATS: Record<ResourceParam, RegExp> = {
  id: /^[1-9][0-9]{0,17}$/,
  walletType: /^(live|demo)$/,
};

export const BODY_LIMIT = 64 * 1024;

export async function buildApp(deps: AppDeps): Promise<{ app: FastifyInstance; services: Services }> {
  const { config, database, log } = deps;
  const app = Fastify({
    loggerInstance: log as unknown as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    logController: new LogController({ requestIdLogLabel: 'operationId' }),
    trustProxy: config.trustProxy,
    return503OnClosing: true,
    routerOptions: { ignoreDuplicateSlashes: true },
    // Slow clients: a request (headers and body) must arrive within 30 s.
    requestTimeout: 30_000,
    keepAliveTimeout: 72_000,
  });
  app.server.headersTimeout = 10_000;
  limitConnectionsPerIp(app, config.maxConnectionsPerIp);

  // --- services ---------------------------------------------------------------
  const tx = new TransactionService(database, { lockTimeoutMs: config.lockTimeoutMs, statementTimeoutMs: config.statementTimeoutMs, maxWaiting: config.pool.maxWaiting }, log);
  const idempotency = new IdempotencyService(tx, config.idempotencyTtlHours);
  const financial = new FinancialService(tx, log);
  const reads = new ReadRouter({ primary: database.db, readUrls: config.databaseReadUrls, pool: config.pool, hub: deps.hub, log });
  reads.start();
  app.addHook('onClose', async () => reads.close());
  const wallets = new WalletService(database.db, idempotency, financial, reads);
  const userCache = new UserStateCache(database.db);
  if (deps.hub) userCache.attach(deps.hub);
  // Every user's state in memory before traffic: no per-user query on first requests.
  app.addHook('onReady', async () => {
    userCache.preload().then((n) => log.debug({ users: n }, 'user states preloaded'), (err: unknown) => log.warn({ err }, 'could not preload user states'));
  });
  await app.register(fastifyJwt, {
    secret: deps.jwtSecret,
    sign: { algorithm: 'HS256', expiresIn: config.jwtTtl },
    verify: { algorithms: ['HS256'] },
  });
  const sign = (claims: TokenClaims) => app.jwt.sign(claims);
  const auth = new AuthService(database.db, tx, financial, userCache, sign, { demoInitialBalance: config.demoInitialBalance });
  const admin = new AdminService(database.db, tx, idempotency, financial, wallets, userCache);
  const connectionString = (database.pool.options as { connectionString?: string }).connectionString;
  // Quotes and account events between processes: Redis pub/sub with REDIS_URL, else the hub's
  // NOTIFY. Stopped after trading (onClose hooks run last-added first).
  const broadcast = deps.hub && config.redisUrl ? new RedisPubSub(config.redisUrl, log) : undefined;
  if (broadcast) {
    await broadcast.start();
    app.addHook('onClose', async () => broadcast.stop());
  }
  const trading = createTrading({ config, db: database.db, log, hub: deps.hub, broadcast, connectionString, tx, idempotency, financial, wallets, admin, userCache, reads });
  // Writes outside the wallet and order services tell the read router too.
  auth.afterWrite = (userId) => reads.noteWrite(userId);
  admin.afterWrite = (userId) => reads.noteWrite(userId);
  const security = await registerSecurity(app, config);
  const metrics = new Metrics({ tx, idempotency, pool: database.pool, rateLimitRejections: security.rejections });
  // The referral program lives inside the deposit's and the close's own transactions.
  const referrals = new ReferralService(database.db, financial, config.referral, reads, wallets);
  wallets.onDeposit(referrals.onDeposit, referrals.mayActOnDeposit);
  // Referrer chains loaded in the background at start: a user's first close reads none.
  app.addHook('onReady', async () => {
    referrals.preload().then((n) => log.debug({ users: n }, 'referrer chains preloaded'), (err: unknown) => log.warn({ err }, 'could not preload referrer chains'));
  });
  trading.onOrderClosed({ inCall: referrals.closeCall });
  metrics.wsSessionCount = () => trading.streams.size;
  metrics.stopOutCount = () => trading.orders.stopOuts;
  trading.streams.onPush = (sessions, seconds) => metrics.observePush(sessions, seconds);
  const services: Services = { tx, idempotency, financial, wallets, auth, admin, userCache, metrics, trading, referrals, reads };

  await registerOpenApi(app);
  metrics.register(app);
  await registerJobs(app, database, log, maintenanceJobs(config, database, services, (n) => metrics.reconciliationMismatches.set(n)));

  // --- request handling ------------------------------------------------------
  app.setValidatorCompiler(validatorCompiler);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendError(reply, 404, { code: 'NOT_FOUND', message: `No route ${req.method} ${req.url.split('?')[0]}` }));

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => {
    try {
      done(null, parseJsonBody(body as string));
    } catch (err) {
      done(err as Error, undefined);
    }
  });
  // Any other content type: fine without a body, 415 with one.
  app.addContentTypeParser('*', { parseAs: 'string', bodyLimit: BODY_LIMIT }, (_req, body, done) => {
    if ((body as string).length === 0) done(null, undefined);
    else done(new DomainError('UNSUPPORTED_MEDIA_TYPE', 'Request bodies must be application/json'), undefined);
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('X-Operation-Id', req.id);
  });

  app.addHook('preValidation', async (req, reply) => guard(req, reply));
  // Handlers see JSON numbers as their exact text, never as floats.
  app.addHook('preHandler', async (req) => {
    if (req.body !== null && typeof req.body === 'object') req.body = numbersToText(req.body);
  });

  async function guard(req: FastifyRequest, reply: FastifyReply) {
    const cfg = req.routeOptions.config;
    if (cfg.auth) req.authUser = await verifyToken(app, userCache, bearerToken(req));
    await security.limit(req, reply);
    if (cfg.admin && req.authUser?.role !== 'admin') throw new DomainError('FORBIDDEN', 'Administrators only');
    if (cfg.resourceParams) {
      const params = req.params as Record<string, string>;
      for (const [name, kind] of Object.entries(cfg.resourceParams)) {
        if (!RESOURCE_FORMATS[kind].test(params[name] ?? '')) throw new NotFoundError();
      }
    }
    if (cfg.idempotent) {
      const header = req.headers['idempotency-key'];
      if (header === undefined) throw new DomainError('IDEMPOTENCY_KEY_REQUIRED', 'This request needs an Idempotency-Key header');
      if (typeof header !== 'string' || !IDEMPOTENCY_KEY_PATTERN.test(header)) {
        throw new ValidationError('Malformed Idempotency-Key', [{ field: 'Idempotency-Key', message: '1..255 characters of [A-Za-z0-9_.:-]' }]);
      }
      const path = req.url.split('?')[0]!;
      req.idempotencyKey = IdempotencyService.generateKey(req.authUser!.id, header, req.method, path, fingerprint(req.method, path, req.body));
    }
  }

  // --- routes ----------------------------------------------------------------
  healthRoutes(app, { db: database.db, pool: database.pool, tx, startedAt: Date.now(), jobs: jobStatuses, market: () => trading.market.status() });
  authRoutes(app, auth);
  walletRoutes(app, wallets);
  adminRoutes(app, admin);
  await app.register(fastifyWebsocket, { options: { maxPayload: 64 * 1024 } });
  await registerTrading(app, services, deps);
  referralRoutes(app, referrals);

  return { app, services };
}

/** Caps open connections per client IP (0 = no cap): one address cannot take every socket. */
function limitConnectionsPerIp(app: FastifyInstance, max: number) {
  if (max <= 0) return;
  const open = new Map<string, number>();
  app.server.on('connection', (socket) => {
    const ip = socket.remoteAddress ?? '';
    const n = (open.get(ip) ?? 0) + 1;
    if (n > max) {
      socket.destroy();
      return;
    }
    open.set(ip, n);
    socket.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1;
      if (left <= 0) open.delete(ip);
      else open.set(ip, left);
    });
  });
}
