import { sql } from 'kysely';
import type { FastifyInstance } from 'fastify';
import type pg from 'pg';
import type { Db } from '../../platform/db/database.js';
import { poolStats } from '../../platform/db/database.js';
import type { TransactionService } from '../../platform/transaction.service.js';

/** GET /health: 200 with a reachable database, 503 `unavailable` while it is not. Not wrapped in the envelope. */
export function healthRoutes(app: FastifyInstance, deps: { db: Db; pool: pg.Pool; tx: TransactionService; startedAt: number; jobs?: (db: Db) => Promise<unknown>; market?: () => unknown }) {
  app.get('/health', { config: { unlimited: true }, schema: { tags: ['operations'], summary: 'Liveness and database health' } }, async (_req, reply) => {
    const started = process.hrtime.bigint();
    let ok = true;
    try {
      // A hung or unreachable database answers 503 within 3 s, not after the pool's acquire timeout.
      await Promise.race([
        sql`SELECT 1`.execute(deps.db),
        new Promise((_, reject) => setTimeout(() => reject(new Error('health check timed out')), 3000).unref()),
      ]);
    } catch {
      ok = false;
    }
    const latencyMs = Math.round(Number(process.hrtime.bigint() - started) / 10_000) / 100;
    const s = deps.tx.stats;
    const jobs = ok && deps.jobs ? await deps.jobs(deps.db).catch(() => undefined) : undefined;
    return reply.code(ok ? 200 : 503).send({
      status: ok ? 'ok' : 'unavailable',
      uptimeSeconds: Math.floor((Date.now() - deps.startedAt) / 1000),
      db: { ok, latencyMs, pool: poolStats(deps.pool) },
      transactions: { committed: s.committed, rolledBack: s.rolledBack, retried: s.retried, deadlocks: s.deadlocks, successRate: s.successRate },
      ...(jobs ? { jobs } : {}),
      // Whether this process is the market leader (runs the price feed and the risk engine).
      ...(deps.market ? { market: deps.market() } : {}),
    });
  });
}
