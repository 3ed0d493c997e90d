import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maintenanceJobs, runJob } from '../../src/modules/ops/ops.plugin.js';
import { createLogger } from '../../src/platform/logger.js';
import { call, fundedUser, newKey, startTestApp, type TestApp } from '../helpers/app.js';

let a: TestApp;
let b: TestApp;
const log = createLogger({ level: 'silent' });
beforeAll(async () => {
  a = await startTestApp();
  b = await startTestApp({}, a.url);
});
afterAll(async () => {
  await b.close();
  await a.close();
});

const count = async (where: string) =>
  Number((await sql<{ n: string }>`SELECT count(*) AS n FROM idempotency_keys WHERE ${sql.raw(where)}`.execute(a.database.db)).rows[0]!.n);

describe('scheduled jobs', () => {
  it('the idempotency cleanup deletes only expired keys, and runs once when two instances race for it', async () => {
    const u = await fundedUser(a.app, '10.00');
    const keys = [newKey(), newKey(), newKey()];
    for (const key of keys) await call(a.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '1.00' }, { token: u.token, key });
    await sql`UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE key IN (${sql.join(keys)})`.execute(a.database.db);
    const liveBefore = await count('expires_at > now()');
    expect(liveBefore).toBeGreaterThan(0);
    const jobA = maintenanceJobs(a.config, a.database, a.services).find((j) => j.name === 'idempotency_cleanup')!;
    const jobB = maintenanceJobs(b.config, b.database, b.services).find((j) => j.name === 'idempotency_cleanup')!;
    const outcomes = await Promise.all([runJob(a.database, log, jobA), runJob(b.database, log, jobB)]);
    const ran = outcomes.filter((o) => o !== false);
    expect(ran).toEqual([{ ok: true, deleted: 3 }]);
    expect(await count('expires_at <= now()')).toBe(0);
    expect(await count('expires_at > now()')).toBe(liveBefore);
    // within the interval, a later attempt on any instance is skipped
    expect(await runJob(b.database, log, jobB)).toBe(false);
    const health = await call(a.app, 'GET', '/health');
    expect(health.body.jobs.idempotency_cleanup).toMatchObject({ ok: true, outcome: { ok: true, deleted: 3 }, lastFinishedAt: expect.any(String) });
  });

  it('the scheduled reconciliation reports ok, and a mismatch when a wallet is off', async () => {
    const u = await fundedUser(a.app, '5.00');
    const job = () => maintenanceJobs(a.config, a.database, a.services).find((j) => j.name === 'reconciliation')!;
    const first = await runJob(a.database, log, job());
    expect(first).toMatchObject({ ok: true, mismatches: [] });
    await sql`UPDATE wallets SET balance = balance + 0.01 WHERE user_id = ${u.user.id} AND type = 'live'`.execute(a.database.db);
    await sql`UPDATE scheduled_jobs SET last_started_at = now() - interval '1 day' WHERE name = 'reconciliation'`.execute(a.database.db);
    let reported = -1;
    const j = maintenanceJobs(a.config, a.database, a.services, (n) => (reported = n)).find((x) => x.name === 'reconciliation')!;
    const second = await runJob(a.database, log, j);
    expect(second).toMatchObject({ ok: false, mismatches: [expect.objectContaining({ userId: u.user.id, expected: '5.00', actual: '5.01' })] });
    expect(reported).toBe(1);
    await sql`UPDATE wallets SET balance = balance - 0.01 WHERE user_id = ${u.user.id} AND type = 'live'`.execute(a.database.db);
  });
});
