/**
 * Without REDIS_URL quotes and account events go through LISTEN/NOTIFY (issue 7). When
 * a process's listener connection is lost, the events notified meanwhile never reach
 * it: once it is back, every WebSocket session of that process is re-sent a snapshot
 * (as on connect), and events flow again. Two app instances on one database.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, startTestApp, type TestApp } from '../helpers/app.js';
import { sleep, waitUntil } from '../helpers/server-process.js';
import { makeAdmin, setQuote, type User } from '../trading/helpers.js';
import { hasQuote, openClient, wsBase, type WsClient } from '../helpers/ws-client.js';

describe('fan-out over LISTEN/NOTIFY: resynchronised after a lost listener', () => {
  let a: TestApp; // leader
  let b: TestApp; // follower
  let admin: User;
  let sqlClient: pg.Client;
  const clients: WsClient[] = [];
  const ENV = { QUOTE_PUSH_INTERVAL_MS: '50' };

  beforeAll(async () => {
    a = await startTestApp(ENV);
    b = await startTestApp(ENV, a.url);
    for (const t of [a, b]) await t.app.listen({ port: 0, host: '127.0.0.1' });
    admin = await makeAdmin(a);
    await setQuote(a, admin, 'XAUUSD', '2000.00', '2000.40');
    sqlClient = new pg.Client({ connectionString: a.url });
    await sqlClient.connect();
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await sqlClient?.end().catch(() => undefined);
    await b?.close();
    await a?.close();
  }, 60_000);

  const client = async (t: TestApp, token: string) => {
    const c = await openClient(wsBase(t.app), token);
    clients.push(c);
    return c;
  };

  it('shows the transport in /health', async () => {
    for (const t of [a, b]) {
      const h = await call(t.app, 'GET', '/health');
      expect(h.body.market.transport).toEqual({ kind: 'notify', connected: true });
    }
  });

  it('re-sends every session a snapshot once the listener is back; events flow again', async () => {
    const ua = await fundedUser(a.app, '10.00');
    const ub = await fundedUser(b.app, '5000.00');
    const [ca, cb] = [await client(a, ua.token), await client(b, ub.token)];
    await sleep(200); // prices are manual: nothing is due to either session
    const [fromA, fromB] = [ca.messages.length, cb.messages.length];
    const resyncs = [a.services.trading.streams.stats.resyncs, b.services.trading.streams.stats.resyncs];

    // Both processes' listener connections, of this test's database only, are cut.
    const { rows } = await sqlClient.query<{ n: number }>(
      "SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE application_name = 'trading-backend-listener' AND datname = current_database()");
    expect(rows[0]!.n).toBe(2);

    for (const [c, from] of [[ca, fromA], [cb, fromB]] as const) {
      const snap = await c.next((m) => m.type === 'quotes', 10_000, from);
      expect(snap.data.map((q: { symbol: string }) => q.symbol)).toEqual(['EURUSD', 'GBPUSD', 'XAUUSD', 'BTCUSD']);
      expect(snap.data.find((q: { symbol: string }) => q.symbol === 'XAUUSD')).toMatchObject({ bid: '2000.00', ask: '2000.40' });
    }
    expect(a.services.trading.streams.stats.resyncs).toBeGreaterThan(resyncs[0]!);
    expect(b.services.trading.streams.stats.resyncs).toBeGreaterThan(resyncs[1]!);
    expect(await waitUntil(async () => (await call(b.app, 'GET', '/health')).body.market.transport.connected === true, 5_000, 50)).toBe(true);

    // Quotes and account events reach the follower's session again.
    const o = await call(b.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', walletType: 'live', stopLoss: '1990.00' }, { token: ub.token, key: newKey() });
    expect(o.status, o.raw).toBe(201);
    const from = cb.messages.length;
    expect((await setQuote(a, admin, 'XAUUSD', '1989.00', '1989.40')).triggered).toBe(1);
    await cb.next(hasQuote('XAUUSD', '1989.00'), 5_000, from);
    const ev = await cb.next((m) => m.type === 'order_closed', 5_000, from);
    expect(ev.data.order).toMatchObject({ id: o.body.data.order.id, closeReason: 'stop_loss' });
  });
});
