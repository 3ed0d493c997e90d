/**
 * Quotes and account events through Redis pub/sub (REDIS_URL set; issue 7): two app
 * instances on one database and one real redis-server, each with its own pool, NOTIFY
 * listener, Redis connections and WebSocket port, stand for two API processes.
 *
 * - a quote set by the admin on the leader reaches a WebSocket client of the follower,
 *   and it went through Redis (a Redis subscriber of ours sees it; a LISTEN on the
 *   NOTIFY channel sees nothing);
 * - an order_closed of a stop-loss closed by the leader reaches the follower's client;
 * - when the Redis connections drop (CLIENT KILL of the subscribers, then a Redis
 *   restart with an event missed while it was down), every session is re-sent a
 *   snapshot, which carries the quote missed meanwhile; afterwards quotes flow again.
 */
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHANNELS } from '../../src/modules/trading/market.js';
import { Decimal } from '../../src/platform/money.js';
import { call, fundedUser, newKey, startTestApp, type TestApp } from '../helpers/app.js';
import { redisUnavailableReason, startRedis, type TestRedis } from '../helpers/redis.js';
import { sleep, waitUntil } from '../helpers/server-process.js';
import { makeAdmin, setQuote, type User } from '../trading/helpers.js';
import { hasQuote, openClient, wsBase, type WsClient } from '../helpers/ws-client.js';

const noRedis = redisUnavailableReason();
if (noRedis) console.warn(`skipping the Redis fan-out test: ${noRedis}`);

describe.skipIf(noRedis !== undefined)('quotes and account events through Redis pub/sub', () => {
  let redis: TestRedis;
  let a: TestApp; // the market leader (started first)
  let b: TestApp; // a follower
  let admin: User;
  let spy: Redis;
  let listener: pg.Client;
  const seenOnRedis: { channel: string; payload: string }[] = [];
  const seenOnNotify: string[] = [];
  const clients: WsClient[] = [];

  const ENV = () => ({ REDIS_URL: redis.url, QUOTE_PUSH_INTERVAL_MS: '50' });

  beforeAll(async () => {
    redis = await startRedis();
    a = await startTestApp(ENV());
    b = await startTestApp(ENV(), a.url);
    for (const t of [a, b]) await t.app.listen({ port: 0, host: '127.0.0.1' });
    admin = await makeAdmin(a);
    await setQuote(a, admin, 'XAUUSD', '2000.00', '2000.40');
    spy = new Redis(redis.url);
    spy.on('error', () => undefined);
    spy.on('message', (channel: string, payload: string) => seenOnRedis.push({ channel, payload }));
    await spy.subscribe(`trading:${CHANNELS.quotes}`, `trading:${CHANNELS.events}`);
    listener = new pg.Client({ connectionString: a.url });
    await listener.connect();
    listener.on('notification', (n) => seenOnNotify.push(n.channel));
    await listener.query(`LISTEN ${CHANNELS.quotes}`);
    await listener.query(`LISTEN ${CHANNELS.events}`);
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    spy?.disconnect();
    await listener?.end().catch(() => undefined);
    await b?.close();
    await a?.close();
    await redis?.stop();
  }, 60_000);

  const health = async (t: TestApp) => (await call(t.app, 'GET', '/health')).body as { market: { leader: boolean; transport?: { kind: string; connected: boolean } } };

  const client = async (t: TestApp, token: string) => {
    const c = await openClient(wsBase(t.app), token);
    clients.push(c);
    return c;
  };

  /** A user on the follower with an open XAUUSD buy and the given stop-loss. */
  const positionOnFollower = async (stopLoss: string) => {
    const u = await fundedUser(b.app, '5000.00');
    const o = await call(b.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', walletType: 'live', stopLoss }, { token: u.token, key: newKey() });
    expect(o.status, o.raw).toBe(201);
    return { u, orderId: o.body.data.order.id as string };
  };

  it('uses Redis for the fan-out on both processes, with one market leader', async () => {
    const [ha, hb] = [await health(a), await health(b)];
    expect(ha.market).toMatchObject({ leader: true, transport: { kind: 'redis', connected: true } });
    expect(hb.market).toMatchObject({ leader: false, transport: { kind: 'redis', connected: true } });
  });

  it("a quote the admin sets on the leader reaches a follower's WebSocket client, through Redis", async () => {
    const u = await fundedUser(b.app, '10.00');
    const c = await client(b, u.token);
    const redisBefore = seenOnRedis.length;
    const notifyBefore = seenOnNotify.length;
    const from = c.messages.length;
    await setQuote(a, admin, 'XAUUSD', '2100.00', '2100.40');
    const m = await c.next(hasQuote('XAUUSD', '2100.00'), 5_000, from);
    expect(m.data.find((q: { symbol: string }) => q.symbol === 'XAUUSD')).toMatchObject({ ask: '2100.40' });
    const published = seenOnRedis.slice(redisBefore).filter((x) => x.channel === `trading:${CHANNELS.quotes}`)
      .flatMap((x) => (JSON.parse(x.payload) as { q: [string, string, string][] }).q);
    expect(published.some(([symbol, bid]) => symbol === 'XAUUSD' && new Decimal(bid).eq('2100.00'))).toBe(true);
    // the follower's REST view has it as well
    const q = (await call(b.app, 'GET', '/api/v1/quotes')).body.data.items.find((x: { symbol: string }) => x.symbol === 'XAUUSD');
    expect(q).toMatchObject({ bid: '2100.00', ask: '2100.40' });
    // and nothing of it went through NOTIFY
    await sleep(200);
    expect(seenOnNotify.slice(notifyBefore)).toEqual([]);
  });

  it('a quote set on the follower (forwarded to the leader) is in its book when it answers, and reaches the leader\'s clients', async () => {
    const u = await fundedUser(a.app, '10.00');
    const c = await client(a, u.token);
    const from = c.messages.length;
    await setQuote(b, admin, 'XAUUSD', '2101.00', '2101.40');
    const q = (await call(b.app, 'GET', '/api/v1/quotes')).body.data.items.find((x: { symbol: string }) => x.symbol === 'XAUUSD');
    expect(q).toMatchObject({ bid: '2101.00', ask: '2101.40' });
    await c.next(hasQuote('XAUUSD', '2101.00'), 5_000, from);
  });

  it("an order_closed of a stop-loss closed by the leader reaches the follower's client, through Redis", async () => {
    const { u, orderId } = await positionOnFollower('2090.00');
    const c = await client(b, u.token);
    const redisBefore = seenOnRedis.length;
    const from = c.messages.length;
    const r = await setQuote(a, admin, 'XAUUSD', '2089.00', '2089.40');
    expect(r.triggered).toBe(1);
    const ev = await c.next((m) => m.type === 'order_closed', 5_000, from);
    expect(ev.data.order).toMatchObject({ id: orderId, status: 'closed', closeReason: 'stop_loss', closePrice: '2089.00' });
    expect(seenOnRedis.slice(redisBefore).some((x) => x.channel === `trading:${CHANNELS.events}` && x.payload.includes(orderId))).toBe(true);
    // exactly once on this session
    await sleep(200);
    expect(c.messages.slice(from).filter((m) => m.type === 'order_closed')).toHaveLength(1);
  });

  it('re-sends every session a snapshot after the subscriber connections are killed', async () => {
    const ua = await fundedUser(a.app, '10.00');
    const ub = await fundedUser(b.app, '10.00');
    const [ca, cb] = [await client(a, ua.token), await client(b, ub.token)];
    await sleep(200); // nothing moves (manual prices): no push is due
    const [fromA, fromB] = [ca.messages.length, cb.messages.length];
    const resyncs = [a.services.trading.streams.stats.resyncs, b.services.trading.streams.stats.resyncs];
    const admin2 = new Redis(redis.url);
    try {
      const killed = await admin2.client('KILL', 'TYPE', 'pubsub');
      expect(Number(killed)).toBeGreaterThanOrEqual(2); // both apps' subscribers (and our spy)
    } finally {
      admin2.disconnect();
    }
    // A snapshot: every symbol, although no quote changed.
    for (const [c, from] of [[ca, fromA], [cb, fromB]] as const) {
      const snap = await c.next((m) => m.type === 'quotes', 10_000, from);
      expect(snap.data.map((q: { symbol: string }) => q.symbol)).toEqual(['EURUSD', 'GBPUSD', 'XAUUSD', 'BTCUSD']);
      expect(snap.data.find((q: { symbol: string }) => q.symbol === 'XAUUSD')).toMatchObject({ bid: '2089.00' });
    }
    expect(a.services.trading.streams.stats.resyncs).toBeGreaterThan(resyncs[0]!);
    expect(b.services.trading.streams.stats.resyncs).toBeGreaterThan(resyncs[1]!);
    expect((await health(b)).market.transport).toEqual({ kind: 'redis', connected: true });
    // and quotes flow again
    const from = cb.messages.length;
    await setQuote(a, admin, 'XAUUSD', '2088.00', '2088.40');
    await cb.next(hasQuote('XAUUSD', '2088.00'), 5_000, from);
  });

  it('after a Redis restart, a session that missed an order_closed gets a snapshot with the quote that closed it', async () => {
    const { u, orderId } = await positionOnFollower('2080.00');
    const c = await client(b, u.token);
    const from = c.messages.length;
    const resyncs = b.services.trading.streams.stats.resyncs;
    await redis.restart(async () => {
      await waitUntil(async () => !(await health(a)).market.transport!.connected && !(await health(b)).market.transport!.connected, 5_000, 20);
      // Redis is down: the leader closes the stop-loss, but its event cannot be published.
      const r = await setQuote(a, admin, 'XAUUSD', '2079.00', '2079.40');
      expect(r.triggered).toBe(1);
      await sleep(300);
      expect(c.messages.slice(from).filter((m) => m.type === 'order_closed'), 'the event was lost').toEqual([]);
    });
    // Back: the follower reloads the stored quotes and re-sends its sessions a snapshot.
    const snap = await c.next(hasQuote('XAUUSD', '2079.00'), 15_000, from);
    expect(snap.data.map((q: { symbol: string }) => q.symbol)).toEqual(['EURUSD', 'GBPUSD', 'XAUUSD', 'BTCUSD']);
    // (its own reconnect's; the leader, whose publishes failed, asks for one more)
    expect(b.services.trading.streams.stats.resyncs).toBeGreaterThan(resyncs);
    // The client re-reads its account and finds the order closed.
    const o = await call(b.app, 'GET', `/api/v1/orders/${orderId}`, undefined, { token: u.token });
    expect(o.body.data.order).toMatchObject({ status: 'closed', closeReason: 'stop_loss' });
    expect(await waitUntil(async () => (await health(a)).market.transport!.connected && (await health(b)).market.transport!.connected, 10_000, 50)).toBe(true);
    // Events flow again after the restart.
    const next = await positionOnFollower('2070.00');
    const c2 = await client(b, next.u.token);
    const from2 = c2.messages.length;
    expect((await setQuote(a, admin, 'XAUUSD', '2069.00', '2069.40')).triggered).toBe(1);
    const ev = await c2.next((m) => m.type === 'order_closed', 5_000, from2);
    expect(ev.data.order).toMatchObject({ id: next.orderId, closeReason: 'stop_loss' });
  });
});
