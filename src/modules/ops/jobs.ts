/**
 * Scheduled maintenance (toad-scheduler through @fastify/schedule): expired
 * idempotency keys, stale login failures and the scheduled reconciliation. Each run
 * happens on one process at a time — a PostgreSQL advisory lock held for the run,
 * and a shared `scheduled_jobs` row that says when it last started, so N processes
 * run each job once per interval, not N times. Work goes in small batches, each its
 * own short transaction, so no job holds locks on user rows for long.
 */
import { sql } from 'kysely';
import type pg from 'pg';
import type { Db } from '../../platform/db/database.js';
import type { AppLogger } from '../../platform/logger.js';

export interface JobOutcome {
  ok: boolean;
  [detail: string]: unknown;
}

export interface JobDefinition {
  name: string;
  intervalMs: number;
  run: () => Promise<JobOutcome>;
}

export interface JobStatus {
  lastStartedAt: string | null;
  lastFinishedAt: string | null;
  ok: boolean | null;
  outcome: Record<string, unknown> | null;
}

/**
 * Runs `fn` only if this process wins the job's advisory lock and the job did not
 * start within the last `minGapMs` on any process. Returns false when skipped.
 */
export async function runExclusively(pool: pg.Pool, db: Db, name: string, minGapMs: number, fn: () => Promise<JobOutcome>): Promise<JobOutcome | false> {
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 1)) AS ok', [`job:${name}`]);
    if (!rows[0]?.ok) return false;
    try {
      const claimed = await sql<{ name: string }>`
        INSERT INTO scheduled_jobs (name, last_started_at) VALUES (${name}, now())
        ON CONFLICT (name) DO UPDATE SET last_started_at = now()
        WHERE scheduled_jobs.last_started_at IS NULL
           OR scheduled_jobs.last_started_at <= now() - ${minGapMs} * interval '1 millisecond'
        RETURNING name`.execute(db);
      if (claimed.rows.length === 0) return false;
      let outcome: JobOutcome;
      try {
        outcome = await fn();
      } catch (err) {
        outcome = { ok: false, error: err instanceof Error ? err.message : String(err) };
      }
      await sql`UPDATE scheduled_jobs SET last_finished_at = now(), last_ok = ${outcome.ok}, last_outcome = ${JSON.stringify(outcome)}::jsonb WHERE name = ${name}`.execute(db);
      return outcome;
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtextextended($1, 1))', [`job:${name}`]);
    }
  } finally {
    client.release();
  }
}

/** Repeats a batch until it returns fewer rows than a full batch; returns the total. */
export async function inBatches(batch: () => Promise<number>, batchSize: number, maxBatches = 1000): Promise<number> {
  let total = 0;
  for (let i = 0; i < maxBatches; i++) {
    const n = await batch();
    total += n;
    if (n < batchSize) break;
  }
  return total;
}

export async function jobStatuses(db: Db): Promise<Record<string, JobStatus>> {
  const { rows } = await sql<{ name: string; lastStartedAt: Date | null; lastFinishedAt: Date | null; lastOk: boolean | null; lastOutcome: Record<string, unknown> | null }>`
    SELECT name, last_started_at, last_finished_at, last_ok, last_outcome FROM scheduled_jobs ORDER BY name`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.name, {
    lastStartedAt: r.lastStartedAt?.toISOString() ?? null,
    lastFinishedAt: r.lastFinishedAt?.toISOString() ?? null,
    ok: r.lastOk,
    outcome: r.lastOutcome,
  }]));
}

export function logOutcome(log: AppLogger, name: string, outcome: JobOutcome | false) {
  if (outcome === false) log.debug({ job: name }, 'job skipped: another process ran it');
  else if (outcome.ok) log.info({ job: name, ...outcome }, `job ${name} done`);
  else log.error({ job: name, ...outcome }, `job ${name} found a problem`);
}
