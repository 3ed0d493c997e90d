/**
 * Prometheus metrics (prom-client) at /metrics: request duration by route and status,
 * transaction outcomes, idempotency replays and conflicts, pool usage, WebSocket
 * sessions and quote pushes (duration of each fan-out, messages written), stop-outs, rate-limit rejections, reconciliation mismatches and the
 * default process metrics. Each app has its own registry.
 */
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { IdempotencyService } from '../../platform/idempotency.service.js';
import type { TransactionService } from '../../platform/transaction.service.js';

export interface MetricsSources {
  tx: TransactionService;
  idempotency: IdempotencyService;
  pool: pg.Pool;
  rateLimitRejections: { user: number; anonymous: number };
}

export class Metrics {
  readonly registry = new Registry();
  readonly reconciliationMismatches: Gauge;
  readonly stopOuts: Counter;
  readonly wsSessions: Gauge;
  private readonly wsPushDuration: Histogram;
  private readonly wsPushMessages: Counter;
  /** Set by app.ts from the trading module: open WebSocket sessions of this process. */
  wsSessionCount: () => number = () => 0;
  /** Set by app.ts from the trading module: committed stop-outs of this process. */
  stopOutCount: () => number = () => 0;

  constructor(src: MetricsSources) {
    const registry = this.registry;
    collectDefaultMetrics({ register: registry });
    this.requestDuration = new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    new Counter({
      name: 'db_transactions_total', help: 'Database transactions by outcome (committed, rolled_back, retried, deadlocks, exhausted, shed by admission control)', labelNames: ['outcome'], registers: [registry],
      collect() {
        this.reset();
        const s = src.tx.stats;
        this.inc({ outcome: 'committed' }, s.committed);
        this.inc({ outcome: 'rolled_back' }, s.rolledBack);
        this.inc({ outcome: 'retried' }, s.retried);
        this.inc({ outcome: 'deadlocks' }, s.deadlocks);
        this.inc({ outcome: 'exhausted' }, s.exhausted);
        this.inc({ outcome: 'shed' }, s.shed);
      },
    });
    new Counter({
      name: 'idempotency_events_total', help: 'Idempotency replays, in-progress conflicts and reused keys', labelNames: ['event'], registers: [registry],
      collect() {
        this.reset();
        const s = src.idempotency.stats;
        this.inc({ event: 'replay' }, s.replays);
        this.inc({ event: 'conflict' }, s.conflicts);
        this.inc({ event: 'reused' }, s.reused);
      },
    });
    new Gauge({
      name: 'db_pool_connections', help: 'Connection pool: total, idle and waiting clients', labelNames: ['state'], registers: [registry],
      collect() {
        this.set({ state: 'total' }, src.pool.totalCount);
        this.set({ state: 'idle' }, src.pool.idleCount);
        this.set({ state: 'waiting' }, src.pool.waitingCount);
      },
    });
    new Counter({
      name: 'rate_limit_rejections_total', help: 'Requests refused by the rate limit', labelNames: ['kind'], registers: [registry],
      collect() {
        this.reset();
        this.inc({ kind: 'user' }, src.rateLimitRejections.user);
        this.inc({ kind: 'anonymous' }, src.rateLimitRejections.anonymous);
      },
    });
    const self = this;
    this.wsSessions = new Gauge({
      name: 'websocket_sessions', help: 'Open WebSocket stream sessions on this process', registers: [registry],
      collect() { this.set(self.wsSessionCount()); },
    });
    this.wsPushDuration = new Histogram({
      name: 'websocket_push_duration_seconds',
      help: 'Time to write one quote push to every session that was due (the last session gets the quote this much later than the first)',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    });
    this.wsPushMessages = new Counter({ name: 'websocket_push_messages_total', help: 'Quote messages written to WebSocket sessions by pushes', registers: [registry] });
    this.stopOuts = new Counter({
      name: 'stop_outs_total', help: 'Positions closed by stop-out (this process)', registers: [registry],
      collect() { this.reset(); this.inc(self.stopOutCount()); },
    });
    this.reconciliationMismatches = new Gauge({ name: 'reconciliation_mismatches', help: 'Mismatches found by the last scheduled reconciliation (0 = books balance)', registers: [registry] });
  }

  readonly requestDuration: Histogram;

  /** One quote push of the stream hub: sessions written and how long it took. */
  observePush(sessions: number, seconds: number): void {
    this.wsPushDuration.observe(seconds);
    this.wsPushMessages.inc(sessions);
  }

  register(app: FastifyInstance) {
    app.addHook('onResponse', async (req, reply) => {
      const route = req.routeOptions.url ?? 'unmatched';
      this.requestDuration.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    });
    app.get('/metrics', { schema: { tags: ['operations'], summary: 'Prometheus metrics' }, config: { unlimited: true } }, async (_req, reply) => {
      reply.type(this.registry.contentType);
      return this.registry.metrics();
    });
  }
}
