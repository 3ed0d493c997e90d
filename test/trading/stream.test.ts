/**
 * GET /api/v1/stream over a real socket: close codes, the snapshot, conflated quote
 * pushes, subscribe, account events for the session's own user only, and streams
 * closed by logout, password change, block and token expiry.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { connectStream, wsBase, type WsClient } from '../helpers/ws-client.js';
import { call, close, fundedUser, makeAdmin, open, registerUser, setQuote, type User } from './helpers.js';

const INTERVAL = 150;

let t: TestApp;
let admin: User;
let base: string;

const connect = (query = '', headers: Record<string, string> = {}): WsClient =>
  connectStream(`${base}/api/v1/stream${query}`, { headers, timeoutMs: 3000 });

const connectAs = (u: { token: string }) => connect(`?token=${u.token}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startTestApp({ QUOTE_PUSH_INTERVAL_MS: String(INTERVAL) });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  base = wsBase(t.app);
  admin = await makeAdmin(t);
  await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
  await setQuote(t, admin, 'GBPUSD', '1.26000', '1.26015');
  await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
  await setQuote(t, admin, 'BTCUSD', '60000.00', '60020.00');
});
afterAll(async () => { await t?.close(); });

describe('authentication', () => {
  it('closes with 4401 without a token, with a bad one, and with a revoked one', async () => {
    expect((await connect().closed).code).toBe(4401);
    expect((await connect('?token=not.a.jwt').closed).code).toBe(4401);
    const forged = `${(await registerUser(t.app)).token.slice(0, -4)}AAAA`;
    expect((await connect(`?token=${forged}`).closed).code).toBe(4401);
    const u = await registerUser(t.app);
    await call(t.app, 'POST', '/api/v1/auth/logout', undefined, { token: u.token });
    expect((await connectAs(u).closed).code).toBe(4401);
  });

  it('closes a blocked user with 4403', async () => {
    const u = await registerUser(t.app);
    await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/block`, undefined, { token: admin.token });
    expect((await connectAs(u).closed).code).toBe(4403);
  });

  it('answers a plain GET (no upgrade) with an enveloped 400', async () => {
    const r = await call(t.app, 'GET', '/api/v1/stream');
    expect(r.status).toBe(400);
    expect(r.body).toMatchObject({ success: false, error: { code: 'VALIDATION_FAILED' } });
  });

  it('accepts the token in the Authorization header', async () => {
    const u = await registerUser(t.app);
    const c = connect('', { authorization: `Bearer ${u.token}` });
    expect((await c.next((m) => m.type === 'quotes')).data).toHaveLength(4);
    c.ws.close();
  });
});

describe('quotes', () => {
  it('sends a full snapshot on connect, then only what changed, at most every interval', async () => {
    const u = await registerUser(t.app);
    const c = connectAs(u);
    const first = await c.next(() => true);
    expect(first).toMatchObject({
      type: 'quotes',
      data: [
        { symbol: 'EURUSD', bid: '1.08000', ask: '1.08010' }, { symbol: 'GBPUSD', bid: '1.26000', ask: '1.26015' },
        { symbol: 'XAUUSD', bid: '2000.00', ask: '2000.40' }, { symbol: 'BTCUSD', bid: '60000.00', ask: '60020.00' },
      ],
    });
    for (let i = 1; i <= 8; i++) await setQuote(t, admin, 'XAUUSD', `2000.0${i}`, `2000.4${i}`);
    const last = await c.next((m) => m.type === 'quotes' && m.data.some((q: { bid: string }) => q.bid === '2000.08'), 3000);
    expect(last.data).toEqual([{ symbol: 'XAUUSD', bid: '2000.08', ask: '2000.48', time: expect.any(String) }]);
    const pushes = c.messages.filter((m) => m.type === 'quotes');
    // Receive times: the server and this client share one event loop, so a busy machine can
    // delay one message's receipt and bring it closer to the next (50 ms of slack); without
    // the interval, eight quotes would arrive a few ms apart.
    for (let i = 1; i < pushes.length; i++) expect(pushes[i]!.at - pushes[i - 1]!.at).toBeGreaterThanOrEqual(INTERVAL - 50);
    // conflated: far fewer messages than quotes
    expect(pushes.length).toBeLessThan(1 + 8);
    // every push is counted in /metrics: messages written and one duration each
    const metrics = (await t.app.inject({ method: 'GET', url: '/metrics' })).body;
    const value = (name: string) => Number(new RegExp(`^${name} (\\d+)`, 'm').exec(metrics)?.[1]);
    expect(value('websocket_push_messages_total')).toBeGreaterThanOrEqual(pushes.length - 1);
    expect(value('websocket_push_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    c.ws.close();
  });

  it('subscribe replaces the set; unknown symbols get an error and the socket stays open', async () => {
    const u = await registerUser(t.app);
    const c = connectAs(u);
    await c.next((m) => m.type === 'quotes');
    c.send({ type: 'subscribe', symbols: ['BTCUSD', 'NOPE'] });
    const err = await c.next((m) => m.type === 'error');
    expect(err.data).toMatchObject({ code: 'UNKNOWN_SYMBOL' });
    c.send('not json at all');
    await c.next((m) => m.type === 'error' && m.data.code === 'VALIDATION_FAILED');
    c.send({ type: 'subscribe', symbols: ['BTCUSD'] });
    await sleep(50);
    const from = c.messages.length;
    await setQuote(t, admin, 'EURUSD', '1.08001', '1.08011');
    await setQuote(t, admin, 'BTCUSD', '60001.00', '60021.00');
    const m = await c.next((x) => x.type === 'quotes', 3000, from);
    expect(m.data.map((q: { symbol: string }) => q.symbol)).toEqual(['BTCUSD']);
    await sleep(INTERVAL * 3);
    expect(c.messages.slice(from).filter((x) => x.type === 'quotes').flatMap((x) => x.data.map((q: { symbol: string }) => q.symbol))).toEqual(['BTCUSD']);
    expect(c.ws.readyState).toBe(WebSocket.OPEN);
    c.ws.close();
  });
});

describe('account events', () => {
  it("sends order_closed to the order's user only", async () => {
    const a = await fundedUser(t.app, '1000.00');
    const b = await fundedUser(t.app, '1000.00');
    const ca = connectAs(a);
    const cb = connectAs(b);
    await Promise.all([ca.next((m) => m.type === 'quotes'), cb.next((m) => m.type === 'quotes')]);
    const o = await open(t, a, { symbol: 'EURUSD', side: 'buy', volume: '0.10' });
    const r = await close(t, a, o.id);
    expect(r.status).toBe(200);
    const ev = await ca.next((m) => m.type === 'order_closed');
    expect(ev.data.order).toEqual(r.body.data.order);
    // a close triggered by a quote (stop-loss) too
    const o2 = await open(t, a, { symbol: 'EURUSD', side: 'buy', volume: '0.10', stopLoss: '1.07000' });
    await setQuote(t, admin, 'EURUSD', '1.06900', '1.06910');
    const ev2 = await ca.next((m) => m.type === 'order_closed' && m.data.order.id === o2.id);
    expect(ev2.data.order).toMatchObject({ status: 'closed', closeReason: 'stop_loss', closePrice: '1.06900' });
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    await sleep(INTERVAL * 2);
    expect(cb.messages.filter((m) => m.type !== 'quotes')).toEqual([]);
    ca.ws.close();
    cb.ws.close();
  });

  it('sends margin_call once per crossing, to its user only', async () => {
    await setQuote(t, admin, 'GBPUSD', '1.26000', '1.26015');
    const a = await fundedUser(t.app, '300.00');
    const b = await fundedUser(t.app, '300.00');
    const ca = connectAs(a);
    const cb = connectAs(b);
    await Promise.all([ca.next((m) => m.type === 'quotes'), cb.next((m) => m.type === 'quotes')]);
    await open(t, a, { symbol: 'GBPUSD', side: 'buy', volume: '0.10' }); // 1.26015, margin 126.02
    // bid 1.24300: (1.24300 − 1.26015) × 10000 = −171.50 → equity 128.50 / 126.02 = 101.97 %: nothing yet
    await setQuote(t, admin, 'GBPUSD', '1.24300', '1.24315');
    // bid 1.24270: −174.50 → equity 125.50 → 99.59 %
    await setQuote(t, admin, 'GBPUSD', '1.24270', '1.24285');
    const ev = await ca.next((m) => m.type === 'margin_call');
    expect(ev.data).toEqual({ walletType: 'live', marginLevel: '99.59', equity: '125.50', margin: '126.02' });
    // further down, still above stop-out (−201.50 → equity 98.50 → 78.16 %): no second event
    expect((await setQuote(t, admin, 'GBPUSD', '1.24000', '1.24015')).triggered).toBe(0);
    await sleep(INTERVAL * 2);
    const calls = () => ca.messages.filter((m) => m.type === 'margin_call').length;
    expect(cb.messages.filter((m) => m.type === 'margin_call')).toEqual([]);
    expect(calls()).toBe(1);
    ca.ws.close();
    cb.ws.close();
  });

  it('raises margin_call again only after recovering above the level', async () => {
    await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
    const a = await fundedUser(t.app, '300.00');
    const ca = connectAs(a);
    await ca.next((m) => m.type === 'quotes');
    await open(t, a, { symbol: 'XAUUSD', side: 'buy', volume: '0.10' }); // 2000.40, margin 200.04
    const calls = () => ca.messages.filter((m) => m.type === 'margin_call');
    // bid 1989.00: −114.00 → equity 186.00 → 92.98 %: first call
    await setQuote(t, admin, 'XAUUSD', '1989.00', '1989.40');
    await ca.next((m) => m.type === 'margin_call');
    // 1985.00: −154.00 → 146.00 → 72.99 %: still in margin call, nothing new
    await setQuote(t, admin, 'XAUUSD', '1985.00', '1985.40');
    // 1999.00: −14.00 → 286.00 → 142.97 %: recovered
    await setQuote(t, admin, 'XAUUSD', '1999.00', '1999.40');
    await sleep(INTERVAL);
    expect(calls()).toHaveLength(1);
    // 1990.00: −104.00 → 196.00 → 97.98 %: a new crossing
    await setQuote(t, admin, 'XAUUSD', '1990.00', '1990.40');
    await ca.next((m) => m.type === 'margin_call' && m.data.marginLevel === '97.98');
    expect(calls()).toHaveLength(2);
    await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
    ca.ws.close();
  });
});

describe('revocation', () => {
  it('logout closes the streams of the user with 4401, not those of others', async () => {
    const u = await registerUser(t.app);
    const other = await registerUser(t.app);
    const c1 = connectAs(u);
    // a second token of the same user (one stream per token)
    const c2 = connect(`?token=${t.app.jwt.sign({ sub: u.user.id, tv: 0, role: 'user', n: 2 })}`);
    const co = connectAs(other);
    await Promise.all([c1, c2, co].map((c) => c.next((m) => m.type === 'quotes')));
    expect((await call(t.app, 'POST', '/api/v1/auth/logout', undefined, { token: u.token })).status).toBe(200);
    expect((await c1.closed).code).toBe(4401);
    expect((await c2.closed).code).toBe(4401);
    await sleep(50);
    expect(co.ws.readyState).toBe(WebSocket.OPEN);
    co.ws.close();
  });

  it('a password change closes with 4401; a block with 4403', async () => {
    const u = await registerUser(t.app);
    const c = connectAs(u);
    await c.next((m) => m.type === 'quotes');
    const r = await call(t.app, 'POST', '/api/v1/auth/password', { currentPassword: u.password, newPassword: 'another password 123' }, { token: u.token });
    expect(r.status).toBe(200);
    expect((await c.closed).code).toBe(4401);
    const c2 = connectAs({ token: r.body.data.token });
    await c2.next((m) => m.type === 'quotes');
    await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/block`, undefined, { token: admin.token });
    expect((await c2.closed).code).toBe(4403);
  });
});

describe('token expiry', () => {
  it('closes the stream with 4401 when the token expires', async () => {
    const t2 = await startTestApp({ JWT_TTL: '2s' });
    try {
      await t2.app.listen({ port: 0, host: '127.0.0.1' });
      const port = (t2.app.server.address() as { port: number }).port;
      const u = await registerUser(t2.app);
      const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/stream?token=${u.token}`);
      const opened = Date.now();
      const got: string[] = [];
      ws.on('message', (d) => got.push(JSON.parse(d.toString()).type));
      const code = await new Promise<number>((resolve) => ws.on('close', (c) => resolve(c)));
      expect(got[0]).toBe('quotes');
      expect(code).toBe(4401);
      expect(Date.now() - opened).toBeLessThan(4000);
    } finally {
      await t2.close();
    }
  });
});

describe('stream limits', () => {
  it('one open stream per token: a newer one replaces the older (4409)', async () => {
    const u = await registerUser(t.app);
    const first = connectAs(u);
    await first.next((m) => m.type === 'quotes');
    const second = connectAs(u);
    await second.next((m) => m.type === 'quotes');
    expect((await first.closed).code).toBe(4409);
    expect(second.ws.readyState).toBe(WebSocket.OPEN);
    second.ws.close();
  });

  it('at most MAX_STREAMS_PER_USER (5) streams per user: the sixth is refused with 4429', async () => {
    const u = await registerUser(t.app);
    const tokens = Array.from({ length: 6 }, (_, i) => t.app.jwt.sign({ sub: u.user.id, tv: 0, role: 'user', n: i }));
    const clients = [];
    for (const token of tokens.slice(0, 5)) {
      const c = connect(`?token=${token}`);
      await c.next((m) => m.type === 'quotes');
      clients.push(c);
    }
    const sixth = connect(`?token=${tokens[5]}`);
    expect((await sixth.closed).code).toBe(4429);
    expect(clients.every((c) => c.ws.readyState === WebSocket.OPEN)).toBe(true);
    for (const c of clients) c.ws.close();
  });
});
