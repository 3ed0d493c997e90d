/**
 * Operations: the scheduled jobs (and, with the security issue, metrics). Jobs are
 * registered on @fastify/schedule, which stops them when the app closes.
 */
import fastifySchedule from '@fastify/schedule';
import type { FastifyInstance } from 'fastify';
import { AsyncTask, SimpleIntervalJob } from 'toad-scheduler';
import type { Config } from '../../config.js';
import type { DatabaseHandle } from '../../platform/db/database.js';
import type { AppLogger } from '../../platform/logger.js';
import type { Services } from '../../app.js';
import { deleteStaleLoginFailures } from '../auth/auth.repository.js';
import { inBatches, logOutcome, runExclusively, type JobDefinition } from './jobs.js';

const BATCH = 5000;

export function maintenanceJobs(config: Readonly<Config>, database: DatabaseHandle, services: Services, onReconciled?: (mismatches: number) => void): JobDefinition[] {
  const { tx, idempotency, admin } = services;
  return [
    {
      name: 'idempotency_cleanup',
      intervalMs: 10 * 60_000,
      run: async () => ({ ok: true, deleted: await inBatches(() => tx.executeWithRetry((trx) => idempotency.cleanupExpired(trx, BATCH), { operation: 'idempotency_cleanup' }), BATCH) }),
    },
    {
      name: 'login_failures_cleanup',
      intervalMs: 10 * 60_000,
      run: async () => ({ ok: true, deleted: await inBatches(() => deleteStaleLoginFailures(database.db, BATCH), BATCH) }),
    },
    {
      name: 'reconciliation',
      intervalMs: config.reconciliationIntervalMinutes * 60_000,
      run: async () => {
        const r = await admin.reconcile();
        onReconciled?.(r.mismatches.length + (r.books.live.sum === '0.00' ? 0 : 1) + (r.books.demo.sum === '0.00' ? 0 : 1));
        return { ok: r.ok, checkedWallets: r.checkedWallets, mismatches: r.mismatches.slice(0, 20), books: r.books };
      },
    },
  ];
}

/** Runs one job now on this process if no other process is running it or ran it within the interval. */
export function runJob(database: DatabaseHandle, log: AppLogger, job: JobDefinition) {
  return runExclusively(database.pool, database.db, job.name, job.intervalMs * 0.9, job.run).then((outcome) => {
    logOutcome(log, job.name, outcome);
    return outcome;
  });
}

export async function registerJobs(app: FastifyInstance, database: DatabaseHandle, log: AppLogger, jobs: JobDefinition[]) {
  await app.register(fastifySchedule);
  app.addHook('onReady', async () => {
    for (const job of jobs) {
      if (job.intervalMs <= 0) continue;
      const task = new AsyncTask(job.name, async () => { await runJob(database, log, job); }, (err) => log.error({ err, job: job.name }, 'job failed'));
      app.scheduler.addSimpleIntervalJob(new SimpleIntervalJob({ milliseconds: job.intervalMs }, task, { id: job.name, preventOverrun: true }));
    }
  });
}
