/**
 * kill -9 of the market leader (issue 7): with the simulated feed running, the process
 * holding the leader lock is killed; the other takes over within a few seconds, quotes
 * keep flowing to a WebSocket client connected to the survivor, and stop-losses set up
 * with admin quotes close exactly once (one close, one trade_loss/profit posting),
 * whether they triggered before the kill or after the takeover.
 */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import { http, registerVia, sleep, startServer, waitUntil, type ServerProcess } from '../helpers/server-process.js';
import { adminToken, isLeader, openStream, waitForOneLeader, type StreamClient } from './helpers.js';

const ADMIN = { email: 'failover-admin@example.com', password: 'failover-admin-password-1' };

let database: { url: string; drop: () => Promise<void> };
let client: pg.Client;
const servers: ServerProcess[] = [];
let stream: StreamClient | undefined;

const env = (extra: Record<string, string> = {}) => ({
  DATABASE_URL: database.url, PRICE_FEED: 'simulated', PRICE_FEED_INTERVAL_MS: '100', QUOTE_PUSH_INTERVAL_MS: '100', DB_POOL_MAX: '10', ...extra,
});

beforeAll(async () => {
  database = await createTestDatabase();
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
  servers.push(await startServer({ env: env({ ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password }) }));
  servers.push(await startServer({ env: env() }));
});

afterAll(async () => {
  stream?.close();
  for (const s of servers) if (s.isRunning()) await s.terminate().catch(() => s.kill());
  await client?.end().catch(() => undefined);
  await database?.drop();
});

it('a follower takes over when the leader is killed; quotes keep flowing; a stop-loss closes once', async () => {
  const leader = await waitForOneLeader(servers, 5_000);
  expect(leader, 'one leader').toBeDefined();
  const survivor = servers.find((s) => s !== leader)!;
  expect(await isLeader(survivor)).toBe(false);
  const admin = await adminToken(survivor.baseUrl, ADMIN.email, ADMIN.password);
  const setQuote = (s: ServerProcess, bid: string, ask: string) =>
    http(s.baseUrl, 'POST', '/api/v1/admin/quotes', { symbol: 'XAUUSD', bid, ask }, { token: admin });

  // Two positions with stop-losses far below the feed's reach; one triggers before the kill, one after.
  expect((await setQuote(survivor, '2000.00', '2000.40')).status).toBe(200);
  const u = await registerVia(survivor.baseUrl, `failover-${Date.now()}@example.com`);
  expect((await http(survivor.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '10000.00' }, { token: u.token, key: 'dep-1' })).status).toBe(201);
  const openBuy = async (sl: string, key: string) => {
    const r = await http(survivor.baseUrl, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', walletType: 'live', stopLoss: sl }, { token: u.token, key });
    expect(r.status, r.raw).toBe(201);
    return r.body.data.order.id as string;
  };
  const first = await openBuy('1900.00', 'open-1');
  const second = await openBuy('1800.00', 'open-2');

  // The first stop-loss triggers through the follower (forwarded to the leader)...
  const q1 = await setQuote(survivor, '1890.00', '1890.40');
  expect(q1.status, q1.raw).toBe(200);
  expect(q1.body.data.triggered).toBe(1);
  // ...and the leader is killed right after.
  stream = await openStream(survivor, u.token);
  await leader!.kill();

  const killedAt = Date.now();
  expect(await waitUntil(async () => (await isLeader(survivor)) === true, 10_000, 100), 'the survivor takes over').toBe(true);
  expect(Date.now() - killedAt).toBeLessThan(8_000);

  // Quotes keep flowing from the new leader's feed to the survivor's session.
  const from = stream.messages.length;
  const distinct = () => new Set(stream!.messages.slice(from).filter((m) => m.type === 'quotes')
    .flatMap((m) => (m.data as { symbol: string; bid: string }[]).filter((q) => q.symbol === 'EURUSD').map((q) => q.bid))).size;
  expect(await waitUntil(() => distinct() >= 3, 10_000, 100), 'quotes after the takeover').toBe(true);

  // The second stop-loss triggers on the new leader, once.
  const q2 = await setQuote(survivor, '1790.00', '1790.40');
  expect(q2.status, q2.raw).toBe(200);
  expect(q2.body.data.triggered).toBe(1);
  expect(await waitUntil(() => stream!.messages.some((m) => m.type === 'order_closed' && m.data.order.id === second), 5_000)).toBe(true);

  // A few more quotes through the feed and another admin quote: nothing closes again.
  await sleep(500);
  const q3 = await setQuote(survivor, '1700.00', '1700.40');
  expect(q3.body.data.triggered).toBe(0);
  for (const id of [first, second]) {
    const r = await http(survivor.baseUrl, 'GET', `/api/v1/orders/${id}`, undefined, { token: u.token });
    expect(r.body.data.order).toMatchObject({ status: 'closed', closeReason: 'stop_loss' });
  }
  const { rows } = await client.query<{ order_id: string; n: number }>(
    `SELECT order_id::text, count(*)::int AS n FROM ledger_postings WHERE order_id = ANY($1) AND wallet_id IS NOT NULL AND type IN ('trade_loss', 'trade_profit') GROUP BY order_id`, [[first, second]]);
  expect(rows.map((r) => [r.order_id, r.n]).sort()).toEqual([[first, 1], [second, 1]].sort());
  const rec = await http(survivor.baseUrl, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin });
  expect(rec.body.data.ok, rec.raw).toBe(true);
});
