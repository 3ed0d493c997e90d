import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Decimal } from '../../src/platform/money.js';
import { call, fundedUser, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
let adminToken: string;
beforeAll(async () => {
  // A generous lock timeout: these tests are about deadlocks and conservation, not about a busy machine's queueing.
  t = await startTestApp({ DB_POOL_MAX: '40', DB_LOCK_TIMEOUT_MS: '30000' });
  const admin = await registerUser(t.app);
  await sql`UPDATE users SET role = 'admin' WHERE id = ${admin.user.id}`.execute(t.database.db);
  t.services.userCache.invalidate(admin.user.id);
  adminToken = admin.token;
});
afterAll(async () => { await t.close(); });

const balance = async (token: string, type = 'live') =>
  (await call(t.app, 'GET', `/api/v1/wallets/${type}`, undefined, { token })).body.data.wallet.balance as string;

async function reconciliation() {
  const r = await call(t.app, 'GET', '/api/v1/admin/reconciliation', undefined, { token: adminToken });
  expect(r.status).toBe(200);
  return r.body.data;
}

describe('concurrent money movements', () => {
  it('50 parallel withdrawals of 10.00 from 100.00: exactly 10 succeed, 40 get 422, balance 0.00', async () => {
    const u = await fundedUser(t.app, '100.00');
    const results = await Promise.all(Array.from({ length: 50 }, () =>
      call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '10.00' }, { token: u.token, key: newKey() })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(10);
    const rejected = results.filter((r) => r.status === 422);
    expect(rejected).toHaveLength(40);
    expect(rejected.every((r) => r.body.error.code === 'INSUFFICIENT_FUNDS')).toBe(true);
    expect(await balance(u.token)).toBe('0.00');
    const history = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?type=withdrawal&limit=200', undefined, { token: u.token });
    expect(history.body.data.items).toHaveLength(10);
  });

  it('40 parallel identical deposits with one key: applied once; every answer is the replay or 409', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    const results = await Promise.all(Array.from({ length: 40 }, () =>
      call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '25.00' }, { token: u.token, key })));
    const created = results.filter((r) => r.status === 201);
    const conflicts = results.filter((r) => r.status === 409);
    expect(created.length + conflicts.length).toBe(40);
    expect(created.length).toBeGreaterThanOrEqual(1);
    expect(conflicts.every((r) => r.body.error.code === 'IDEMPOTENCY_IN_PROGRESS')).toBe(true);
    const ids = new Set(created.map((r) => r.body.data.transaction.id));
    expect(ids.size).toBe(1);
    expect(created.filter((r) => r.headers['idempotent-replayed'] !== 'true')).toHaveLength(1);
    expect(await balance(u.token)).toBe('25.00');
  });

  it('200 simultaneous A→B and B→A transfers all complete and conserve money', async () => {
    const a = await fundedUser(t.app, '1000.00');
    const b = await fundedUser(t.app, '1000.00');
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => {
      const [from, to] = i % 2 === 0 ? [a, b] : [b, a];
      return call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: to.user.accountNumber, amount: '1.25' }, { token: from.token, key: newKey() });
    }));
    expect(results.map((r) => r.status).filter((s) => s !== 201)).toEqual([]);
    expect(await balance(a.token)).toBe('1000.00');
    expect(await balance(b.token)).toBe('1000.00');
  });

  it('a storm of 1,000 random transfers among 16 users at concurrency 32 conserves the total to the cent', async () => {
    const users = await Promise.all(Array.from({ length: 16 }, () => fundedUser(t.app, '500.00')));
    const totalBefore = (await Promise.all(users.map((u) => balance(u.token)))).reduce((s, b) => s.plus(b), new Decimal(0));
    let next = 0;
    const statuses: Record<number, number> = {};
    let seed = 42;
    const rand = (n: number) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    const worker = async () => {
      while (next < 1000) {
        next++;
        const from = users[rand(16)]!;
        let to = users[rand(16)]!;
        if (to === from) to = users[(users.indexOf(from) + 1) % 16]!;
        const amount = `${1 + rand(150)}.${String(rand(100)).padStart(2, '0')}`;
        const r = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: to.user.accountNumber, amount }, { token: from.token, key: newKey() });
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
      }
    };
    await Promise.all(Array.from({ length: 32 }, worker));
    expect(Object.keys(statuses).sort()).toEqual(expect.arrayContaining(['201']));
    expect(Object.keys(statuses).every((s) => s === '201' || s === '422')).toBe(true);
    const balances = await Promise.all(users.map((u) => balance(u.token)));
    expect(balances.every((b) => new Decimal(b).gte(0))).toBe(true);
    expect(balances.reduce((s, b) => s.plus(b), new Decimal(0)).toFixed(2)).toBe(totalBefore.toFixed(2));
    const rec = await reconciliation();
    expect(rec.ok).toBe(true);
    expect(rec.mismatches).toEqual([]);
    expect(rec.books).toEqual({ live: { sum: '0.00' }, demo: { sum: '0.00' } });
  });
});
