import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceUnavailableError } from '../../src/platform/errors.js';
import { TransactionService } from '../../src/platform/transaction.service.js';
import { createDatabase, type DatabaseHandle } from '../../src/platform/db/database.js';
import { createLogger } from '../../src/platform/logger.js';
import { createTestDatabase, listenTo } from '../helpers/db.js';
import { roundTrips } from '../helpers/round-trips.js';

let database: DatabaseHandle;
let url: string;
let drop: () => Promise<void>;
const log = createLogger({ level: 'silent' });
const settings = { lockTimeoutMs: 5000, statementTimeoutMs: 15000 };

beforeAll(async () => {
  const created = await createTestDatabase();
  drop = created.drop;
  url = created.url;
  database = createDatabase(created.url, { max: 10, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 1000 });
  await sql`CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)`.execute(database.db);
  await sql`INSERT INTO counters VALUES (1, 0), (2, 0)`.execute(database.db);
});
afterAll(async () => {
  await database.close();
  await drop();
});

const counter = async (id: number) =>
  (await sql<{ n: number }>`SELECT n FROM counters WHERE id = ${id}`.execute(database.db)).rows[0]!.n;

describe('TransactionService', () => {
  it('retries the loser of a real deadlock and both transactions commit', async () => {
    const tx = new TransactionService(database, settings, log);
    // Both transactions hold their first lock before either asks for its second.
    let arrived = 0;
    let release!: () => void;
    const bothLocked = new Promise<void>((r) => (release = r));
    let attempts = 0;
    const lockBoth = (first: number, second: number) =>
      tx.executeWithRetry(async (trx) => {
        attempts++;
        await sql`UPDATE counters SET n = n + 1 WHERE id = ${first}`.execute(trx);
        if (++arrived === 2) release();
        await bothLocked;
        await sql`UPDATE counters SET n = n + 1 WHERE id = ${second}`.execute(trx);
      });
    const before1 = await counter(1);
    const before2 = await counter(2);
    await Promise.all([lockBoth(1, 2), lockBoth(2, 1)]);
    expect(tx.stats.deadlocks).toBe(1);
    expect(tx.stats.retried).toBe(1);
    expect(tx.stats.committed).toBe(2);
    expect(attempts).toBe(3);
    expect(await counter(1)).toBe(before1 + 2);
    expect(await counter(2)).toBe(before2 + 2);
    expect(TransactionService.isDeadlockError({ code: '40P01' })).toBe(true);
  });

  it('leaves nothing written when the function throws after two writes', async () => {
    const tx = new TransactionService(database, settings, log);
    const before = [await counter(1), await counter(2)];
    await expect(tx.executeWithRetry(async (trx) => {
      await sql`UPDATE counters SET n = n + 100 WHERE id = 1`.execute(trx);
      await sql`UPDATE counters SET n = n + 100 WHERE id = 2`.execute(trx);
      throw new Error('business rule broken');
    })).rejects.toThrow('business rule broken');
    expect([await counter(1), await counter(2)]).toEqual(before);
    expect(tx.stats.rolledBack).toBe(1);
    expect(tx.stats.committed).toBe(0);
  });

  it('does not retry a non-retryable error', async () => {
    const tx = new TransactionService(database, settings, log);
    let attempts = 0;
    await expect(tx.executeWithRetry(async (trx) => {
      attempts++;
      await sql`INSERT INTO counters VALUES (1, 0)`.execute(trx); // unique violation
    })).rejects.toMatchObject({ code: '23505' });
    expect(attempts).toBe(1);
    expect(tx.stats.retried).toBe(0);
  });

  it('gives up after 3 retries of a serialization failure with a 503 error', async () => {
    const tx = new TransactionService(database, settings, log);
    let attempts = 0;
    const started = Date.now();
    const err = await tx.executeWithRetry(async (trx) => {
      attempts++;
      await sql`DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$`.execute(trx);
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect((err as ServiceUnavailableError).status).toBe(503);
    expect((err as ServiceUnavailableError).retryAfter).toBeGreaterThan(0);
    expect(attempts).toBe(4);
    expect(tx.stats.retried).toBe(3);
    // backoff 10 + 20 + 40 ms with jitter of at least half each step
    expect(Date.now() - started).toBeGreaterThanOrEqual(35);
  });

  it('retries a lock timeout (55P03) and bounds every transaction with SET LOCAL timeouts', async () => {
    const tx = new TransactionService(database, { lockTimeoutMs: 100, statementTimeoutMs: 15000 }, log);
    const holder = await database.pool.connect();
    await holder.query('BEGIN');
    await holder.query('UPDATE counters SET n = n WHERE id = 1');
    const settingsSeen = await tx.executeWithRetry(async (trx) =>
      (await sql<{ l: string; s: string }>`SELECT current_setting('lock_timeout') AS l, current_setting('statement_timeout') AS s`.execute(trx)).rows[0]);
    expect(settingsSeen).toEqual({ l: '100ms', s: '15s' });
    const err = await tx.executeWithRetry(async (trx) => {
      await sql`UPDATE counters SET n = n + 1 WHERE id = 1`.execute(trx);
    }).catch((e: unknown) => e);
    await holder.query('ROLLBACK');
    holder.release();
    expect(err).toBeInstanceOf(ServiceUnavailableError);
    expect(tx.stats.retried).toBe(3);
    expect(TransactionService.isRetryableError({ code: '55P03' })).toBe(true);
    expect(TransactionService.isRetryableError({ code: '23505' })).toBe(false);
  });

  it('executeWithUserLock locks the user row and passes it in', async () => {
    const tx = new TransactionService(database, settings, log);
    await sql`INSERT INTO users (email, password_hash, account_number, referral_code) VALUES ('lock@example.com', 'x', '1000000001', 'LOCKCODE')`.execute(database.db);
    const id = (await sql<{ id: string }>`SELECT id FROM users WHERE email = 'lock@example.com'`.execute(database.db)).rows[0]!.id;
    const seen = await tx.executeWithUserLock(id, async (trx, user) => {
      const locks = await sql<{ n: string }>`SELECT count(*) AS n FROM pg_locks WHERE locktype = 'transactionid' AND pid = pg_backend_pid()`.execute(trx);
      return { email: user.email, locked: Number(locks.rows[0]!.n) > 0 };
    });
    expect(seen).toEqual({ email: 'lock@example.com', locked: true });
    await expect(tx.executeWithUserLock('999999', async () => 1)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

describe('admission control', () => {
  it('refuses a transaction at once (503) when maxWaiting are already queued for a connection, and serves the queued ones', async () => {
    const created = await createTestDatabase();
    const small = createDatabase(created.url, { max: 1, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 1000 });
    try {
      const tx = new TransactionService(small, { ...settings, maxWaiting: 1 }, log);
      let release!: () => void;
      const held = new Promise<void>((r) => { release = r; });
      const first = tx.executeWithRetry(async (trx) => { await sql`SELECT 1`.execute(trx); await held; return 'first'; });
      await new Promise((r) => setTimeout(r, 50)); // the first holds the only connection
      const second = tx.executeWithRetry(async (trx) => (await sql<{ v: number }>`SELECT 2 AS v`.execute(trx)).rows[0]!.v);
      await new Promise((r) => setTimeout(r, 20)); // the second waits for it
      // Answered while the only connection is still held: it did not wait for one.
      const third = await tx.executeWithRetry(async () => 'third').catch((e: unknown) => e);
      expect(third).toBeInstanceOf(ServiceUnavailableError);
      expect((third as ServiceUnavailableError).status).toBe(503);
      expect(tx.stats.shed).toBe(1);
      release();
      expect(await first).toBe('first');
      expect(await second).toBe(2);
      expect(await tx.executeWithRetry(async () => 'after')).toBe('after'); // the queue drained: admitted again
    } finally {
      await small.close();
      await created.drop();
    }
  });
});

describe('a connection lost while checked out', () => {
  it('is no uncaught exception: its next query fails, the pool discards it, the next transaction gets a new one', async () => {
    const tx = new TransactionService(database, settings, log);
    const client = await database.pool.connect();
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    // The server ends the session while nobody waits on a query of it (a restart, a failover).
    await sql`SELECT pg_terminate_backend(${pid}::int)`.execute(database.db);
    await new Promise((r) => setTimeout(r, 200));
    const err = await client.query('SELECT 1').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    client.release(err as Error);
    const next = await tx.executeWithRetry(async (trx) => (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid);
    expect(next).not.toBe(pid); // the pool discarded it
  });
});

describe('statements after COMMIT (afterCommit)', () => {
  const notice = (tag: string) => `SELECT pg_notify('tx_after', '${tag}:' || n || ':' || current_setting('synchronous_commit')) FROM counters WHERE id = 1`;

  it('run in the same round trip once the batch committed, in a transaction of their own, and never after a failed one', async () => {
    const tx = new TransactionService(database, settings, log);
    const listener = await listenTo(url, 'tx_after');
    try {
      const before = await counter(1);
      // A call: one round trip; only the transaction's results come back; the notice sees what it committed.
      let results: Awaited<ReturnType<TransactionService['executeBatchWithRetry']>> = [];
      const trips = await roundTrips(async () => {
        results = await tx.executeBatchWithRetry('UPDATE counters SET n = n + 1 WHERE id = 1 RETURNING n', { afterCommit: [notice('batch')] });
      });
      expect(trips.count).toBe(1);
      expect(trips.texts[0]).toMatch(/; COMMIT; BEGIN; SET LOCAL synchronous_commit = off; SELECT pg_notify\('tx_after', 'batch:'.*; COMMIT$/);
      expect(results).toHaveLength(1);
      expect(results[0]!.rows).toEqual([{ n: before + 1 }]);
      // A failure: the statements after COMMIT never run.
      await expect(tx.executeBatchWithRetry('UPDATE counters SET n = n + 1 WHERE id = 1; SELECT 1 / 0', { afterCommit: [notice('failed')] })).rejects.toThrow(/division by zero/);
      // Two in a row: both, in order, after the commit; still only the transaction's results come back.
      const two = await tx.executeBatchWithRetry('UPDATE counters SET n = n + 1 WHERE id = 1 RETURNING n', { afterCommit: [notice('second'), notice('third')] });
      expect(two.map((r) => r.rows)).toEqual([[{ n: before + 2 }]]);
      // Notices arrive in commit order: once this one is in, any of the failures' would be too.
      await sql`SELECT pg_notify('tx_after', 'end')`.execute(database.db);
      await expect.poll(() => listener.notices.at(-1)).toBe('end');
      expect(listener.notices).toEqual([`batch:${before + 1}:off`, `second:${before + 2}:off`, `third:${before + 2}:off`, 'end']);
      expect(await counter(1)).toBe(before + 2);
    } finally {
      await listener.end();
    }
  });
});
