/**
 * The Kysely instance over a node-postgres pool with the seed's pool settings.
 * node-postgres returns NUMERIC and BIGINT as strings; we keep that on purpose so
 * money and ids never become JS numbers.
 */
import { CamelCasePlugin, Kysely, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import type { Database } from './schema.js';

export type Db = Kysely<Database>;
export type Trx = Transaction<Database>;

export interface PoolSettings {
  max: number;
  min: number;
  acquireTimeoutMs: number;
  idleTimeoutMs: number;
}

export interface DatabaseHandle {
  db: Db;
  pool: pg.Pool;
  close(): Promise<void>;
}

export function createDatabase(connectionString: string, pool: PoolSettings, applicationName = 'trading-backend'): DatabaseHandle {
  const pgPool = new pg.Pool({
    connectionString,
    max: pool.max,
    min: pool.min,
    connectionTimeoutMillis: pool.acquireTimeoutMs,
    idleTimeoutMillis: pool.idleTimeoutMs,
    application_name: applicationName,
  });
  // An idle client losing its connection (database restart) must not crash the process;
  // the pool drops it and the next query opens a new one.
  pgPool.on('error', () => undefined);
  // Nor a checked-out one between two queries (a transaction's client while the operation
  // computes, a job's): pg-pool listens only to idle clients, and a client's 'error' with
  // no listener is an uncaught exception. Its next query fails instead, and the pool
  // discards it when it is released (it is no longer queryable).
  pgPool.on('connect', (client) => {
    client.on('error', () => undefined);
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: pgPool }), plugins: [new CamelCasePlugin()] });
  return {
    db,
    pool: pgPool,
    close: () => db.destroy(),
  };
}

export function poolStats(pool: pg.Pool) {
  return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount };
}
