/**
 * Two real server processes on one database (issue 7): one is the market leader, the
 * other follows. A storm of ≥1,000 transfers split across both keeps every invariant
 * (total to the cent, reconciliation, each key applied once — also when the same key
 * is sent to both at once); an admin quote sent to the follower is forwarded to the
 * leader and answers with its triggered closes committed; quotes reach both.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { fromCents, http, registerVia, startServer, toCents, waitUntil, type HttpReply, type ServerProcess } from '../helpers/server-process.js';
import { adminToken, isLeader } from './helpers.js';

const ADMIN = { email: 'scale-admin@example.com', password: 'scale-admin-password-1' };
const USERS = 20;
const TRANSFERS = 1_100;
const DUPLICATES = 60;
const CONCURRENCY = 24;

let database: { url: string; drop: () => Promise<void> };
let client: pg.Client;
let a: ServerProcess;
let b: ServerProcess;
let admin: string;

const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: database.url, PRICE_FEED: 'manual', DB_POOL_MAX: '20', ...extra });

beforeAll(async () => {
  database = await createTestDatabase();
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
  // One after the other: the first migrates and creates the admin.
  a = await startServer({ env: env({ ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password }) });
  b = await startServer({ env: env() });
  admin = await adminToken(b.baseUrl, ADMIN.email, ADMIN.password);
});

afterAll(async () => {
  for (const s of [b, a]) if (s?.isRunning()) await s.terminate().catch(() => s.kill());
  await client?.end().catch(() => undefined);
  await database?.drop();
});

interface User { token: string; accountNumber: string; userId: string }

describe('two processes on one database', () => {
  it('elects exactly one market leader: the first process', async () => {
    expect(await isLeader(a)).toBe(true);
    expect(await isLeader(b)).toBe(false);
  });

  it('forwards an admin quote from the follower to the leader; its stop-loss close is committed before the answer; quotes reach both', async () => {
    const setQuote = (s: ServerProcess, bid: string, ask: string) =>
      http(s.baseUrl, 'POST', '/api/v1/admin/quotes', { symbol: 'XAUUSD', bid, ask }, { token: admin });
    const q1 = await setQuote(b, '2000.00', '2000.40');
    expect(q1.status, q1.raw).toBe(200);
    expect(q1.body.data).toMatchObject({ quote: { symbol: 'XAUUSD', bid: '2000.00', ask: '2000.40' }, triggered: 0 });
    // the follower's own quote book has it as soon as it answered (notified on the leader's commit)
    const onB = (await http(b.baseUrl, 'GET', '/api/v1/quotes')).body.data.items.find((q: { symbol: string }) => q.symbol === 'XAUUSD');
    expect(onB).toMatchObject({ bid: '2000.00', ask: '2000.40' });
    expect(await waitUntil(async () => (await http(a.baseUrl, 'GET', '/api/v1/quotes')).body.data.items.some((q: { symbol: string; bid: string }) => q.symbol === 'XAUUSD' && q.bid === '2000.00'), 3_000)).toBe(true);

    // an order opened on the follower reaches the leader's book before the next quote
    const u = await registerVia(b.baseUrl, `sl-${Date.now()}@example.com`);
    expect((await http(b.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '5000.00' }, { token: u.token, key: `dep-${u.user.id}` })).status).toBe(201);
    const o = await http(b.baseUrl, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', walletType: 'live', stopLoss: '1990.00' }, { token: u.token, key: `open-${u.user.id}` });
    expect(o.status, o.raw).toBe(201);
    // sent to the leader right after the follower answered: the leader's barrier makes sure it knows the order
    const q2 = await setQuote(a, '1989.00', '1989.40');
    expect(q2.status, q2.raw).toBe(200);
    expect(q2.body.data.triggered).toBe(1);
    const after = await http(b.baseUrl, 'GET', `/api/v1/orders/${o.body.data.order.id}`, undefined, { token: u.token });
    expect(after.body.data.order).toMatchObject({ status: 'closed', closeReason: 'stop_loss', closePrice: '1989.00', profit: '-114.00' });

    // and forwarded from the follower: another order opened on the leader, closed by a quote sent to the follower
    const o2 = await http(a.baseUrl, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'sell', volume: '0.10', walletType: 'live', stopLoss: '1995.00' }, { token: u.token, key: `open2-${u.user.id}` });
    expect(o2.status, o2.raw).toBe(201);
    const q3 = await setQuote(b, '1995.00', '1995.40');
    expect(q3.status, q3.raw).toBe(200);
    expect(q3.body.data.triggered).toBe(1);
    const after2 = await http(a.baseUrl, 'GET', `/api/v1/orders/${o2.body.data.order.id}`, undefined, { token: u.token });
    expect(after2.body.data.order).toMatchObject({ status: 'closed', closeReason: 'stop_loss' });
    const { rows } = await client.query(`SELECT count(*)::int AS n FROM ledger_postings WHERE order_id = ANY($1) AND wallet_id IS NOT NULL AND type IN ('trade_loss', 'trade_profit')`,
      [[o.body.data.order.id, o2.body.data.order.id]]);
    expect(rows[0].n).toBe(2);
  });

  it(`keeps every invariant through a storm of ${TRANSFERS} transfers split across both`, async () => {
    const users: User[] = [];
    for (let i = 0; i < USERS; i++) {
      const s = i % 2 ? b : a;
      const u = await registerVia(s.baseUrl, `storm-${i}-${Date.now()}@example.com`);
      const d = await http(s.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '1000.00' }, { token: u.token, key: `dep-${i}` });
      expect(d.status, d.raw).toBe(201);
      users.push({ token: u.token, accountNumber: u.user.accountNumber, userId: u.user.id });
    }
    const total = async (s: ServerProcess) => {
      const bal = await Promise.all(users.map(async (u) => {
        const r = await http(s.baseUrl, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
        expect(r.status).toBe(200);
        return toCents(r.body.data.wallet.balance);
      }));
      for (const x of bal) expect(x >= 0n).toBe(true);
      return bal.reduce((x, y) => x + y, 0n);
    };
    const before = await total(a);
    expect(fromCents(before)).toBe(fromCents(BigInt(USERS) * 100_000n));

    const rnd = (n: number) => Math.floor(Math.random() * n);
    type Req = { key: string; from: number; body: { toAccountNumber: string; amount: string; note: string }; replies: HttpReply[] };
    const plan: Req[] = Array.from({ length: TRANSFERS }, (_, i) => {
      const from = rnd(USERS);
      const to = (from + 1 + rnd(USERS - 1)) % USERS;
      const key = `storm-${i}`;
      return { key, from, body: { toAccountNumber: users[to]!.accountNumber, amount: fromCents(BigInt(1 + rnd(10_000))), note: key }, replies: [] };
    });
    let next = 0;
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < plan.length) {
        const i = next++;
        const r = plan[i]!;
        const send = (s: ServerProcess) => http(s.baseUrl, 'POST', '/api/v1/wallets/live/transfer', r.body, { token: users[r.from]!.token, key: r.key, timeoutMs: 30_000 });
        // The first DUPLICATES keys go to both processes at once; the rest alternate.
        if (i < DUPLICATES) r.replies.push(...(await Promise.all([send(a), send(b)])));
        else r.replies.push(await send(i % 2 ? b : a));
      }
    }));

    const { rows } = await client.query<{ note: string; n: number }>(
      `SELECT note, count(*)::int AS n FROM ledger_postings WHERE type = 'transfer_out' AND note LIKE 'storm-%' GROUP BY note`);
    const applied = new Map(rows.map((r) => [r.note, r.n]));
    let ok = 0;
    for (const r of plan) {
      const statuses = r.replies.map((x) => x.status);
      for (const s of statuses) expect([201, 409, 422, 503], JSON.stringify(r.replies.map((x) => x.raw))).toContain(s);
      const n = applied.get(r.key) ?? 0;
      expect(n, r.key).toBeLessThanOrEqual(1);
      if (statuses.includes(201)) {
        expect(n, r.key).toBe(1);
        ok++;
      }
      if (statuses.every((s) => s === 422)) expect(n).toBe(0);
    }
    expect(ok).toBeGreaterThan(TRANSFERS / 2);

    expect(fromCents(await total(a))).toBe(fromCents(before));
    expect(fromCents(await total(b))).toBe(fromCents(before));
    for (const s of [a, b]) {
      const rec = await http(s.baseUrl, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin });
      expect(rec.status, rec.raw).toBe(200);
      expect(rec.body.data.mismatches).toEqual([]);
      expect(rec.body.data.books).toEqual({ live: { sum: '0.00' }, demo: { sum: '0.00' } });
      expect(rec.body.data.ok).toBe(true);
    }
  }, 120_000); // ~20 s alone; the whole suite runs files in parallel on 2 cores
});
