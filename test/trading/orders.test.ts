/**
 * Orders through the API: market data, placing (limits, validation, margin), closing,
 * modifying, listing, idempotency, other users' orders, and the concurrency cases:
 * 20 parallel closes of one order, and parallel placements beyond free margin.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import {
  call, close, closeLeftovers, expectReconciled, fundedUser, getOrder, makeAdmin, newKey, open, place, registerUser, setQuote, transactions, wallet, type User,
} from './helpers.js';

let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
});
afterAll(async () => { await t?.close(); });

const START = {
  EURUSD: ['1.08000', '1.08010'],
  GBPUSD: ['1.26000', '1.26015'],
  XAUUSD: ['2000.00', '2000.40'],
  BTCUSD: ['60000.00', '60020.00'],
} as const;

beforeEach(async () => {
  for (const [symbol, [bid, ask]] of Object.entries(START)) await setQuote(t, admin, symbol, bid, ask);
});
afterEach(async () => {
  await closeLeftovers(t);
});

describe('market data', () => {
  it('lists the default symbols without a token', async () => {
    const r = await call(t.app, 'GET', '/api/v1/symbols');
    expect(r.status).toBe(200);
    expect(r.body.data.items).toEqual([
      { symbol: 'EURUSD', contractSize: '100000', digits: 5, minVolume: '0.01', maxVolume: '100.00', volumeStep: '0.01', maxLeverage: 500 },
      { symbol: 'GBPUSD', contractSize: '100000', digits: 5, minVolume: '0.01', maxVolume: '100.00', volumeStep: '0.01', maxLeverage: 500 },
      { symbol: 'XAUUSD', contractSize: '100', digits: 2, minVolume: '0.01', maxVolume: '100.00', volumeStep: '0.01', maxLeverage: 200 },
      { symbol: 'BTCUSD', contractSize: '1', digits: 2, minVolume: '0.01', maxVolume: '100.00', volumeStep: '0.01', maxLeverage: 20 },
    ]);
  });

  it('lists the latest quotes without a token', async () => {
    await setQuote(t, admin, 'XAUUSD', '2001.5', '2001.9');
    const r = await call(t.app, 'GET', '/api/v1/quotes');
    expect(r.status).toBe(200);
    const items = r.body.data.items as { symbol: string; bid: string; ask: string; time: string }[];
    expect(items.map((q) => [q.symbol, q.bid, q.ask])).toEqual([
      ['EURUSD', '1.08000', '1.08010'], ['GBPUSD', '1.26000', '1.26015'], ['XAUUSD', '2001.50', '2001.90'], ['BTCUSD', '60000.00', '60020.00'],
    ]);
    for (const q of items) expect(q.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });
});

describe('placing orders', () => {
  it('opens a buy at the ask and shows the wallet valued at the bid', async () => {
    const u = await fundedUser(t.app, '10000.00');
    const r = await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100, stopLoss: '1.07000', takeProfit: '1.09000' });
    expect(r.status).toBe(201);
    expect(r.body.data.order).toMatchObject({
      symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100, walletType: 'live', openPrice: '1.08010', margin: '1080.10',
      stopLoss: '1.07000', takeProfit: '1.09000', status: 'open', closePrice: null, profit: null, closeReason: null, closedAt: null,
    });
    // valued at the bid: (1.08000 − 1.08010) × 100000 = −10.00
    expect(r.body.data.wallet).toMatchObject({ balance: '10000.00', margin: '1080.10', equity: '9990.00', freeMargin: '8909.90', marginLevel: '924.91', realizedProfit: '0.00' });
    expect(await wallet(t, u)).toMatchObject({ balance: '10000.00', margin: '1080.10', equity: '9990.00', freeMargin: '8909.90', marginLevel: '924.91' });
    // a reservation moves no money: no transaction
    expect((await transactions(t, u)).map((x) => x.type)).toEqual(['deposit']);
  });

  it('accepts JSON numbers judged by their text, and trades the demo wallet', async () => {
    const u = await registerUser(t.app);
    const r = await call(t.app, 'POST', '/api/v1/orders', undefined, {
      token: u.token, key: newKey(), raw: '{"symbol":"XAUUSD","side":"sell","volume":0.5,"walletType":"demo","leverage":50,"stopLoss":2100.5}',
    });
    expect(r.status).toBe(201);
    expect(r.body.data.order).toMatchObject({ volume: '0.50', leverage: 50, walletType: 'demo', openPrice: '2000.00', margin: '2000.00', stopLoss: '2100.50' });
    expect(r.body.data.wallet).toMatchObject({ type: 'demo', balance: '10000.00', margin: '2000.00' });
  });

  it('defaults leverage to the smaller of 100 and the maximum', async () => {
    const u = await fundedUser(t.app, '10000.00');
    expect((await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10' })).leverage).toBe(100);
    expect((await open(t, u, { symbol: 'BTCUSD', side: 'buy', volume: '0.10' })).leverage).toBe(20);
  });

  it.each([
    [{ symbol: 'EURUSD', side: 'buy', volume: '0.001' }, 'volume'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '0' }, 'volume'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '100.01' }, 'volume'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '-1' }, 'volume'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1e2' }, 'volume'],
    [{ symbol: 'EURUSD', side: 'hold', volume: '1.00' }, 'side'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 501 }, 'leverage'],
    [{ symbol: 'BTCUSD', side: 'buy', volume: '0.01', leverage: 21 }, 'leverage'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 0 }, 'leverage'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 1.5 }, 'leverage'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', stopLoss: '1.08020' }, 'stopLoss'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', stopLoss: '1.08010' }, 'stopLoss'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', takeProfit: '1.08000' }, 'takeProfit'],
    [{ symbol: 'EURUSD', side: 'sell', volume: '1.00', stopLoss: '1.07990' }, 'stopLoss'],
    [{ symbol: 'EURUSD', side: 'sell', volume: '1.00', takeProfit: '1.08010' }, 'takeProfit'],
    [{ symbol: 'XAUUSD', side: 'buy', volume: '1.00', stopLoss: '1990.001' }, 'stopLoss'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', stopLoss: '1.070000' }, 'stopLoss'],
    [{ symbol: 'EURUSD', side: 'buy', volume: '1.00', owner: 'me' }, 'owner'],
  ])('refuses %j with 400 on %s', async (body, field) => {
    const u = await fundedUser(t.app, '100000.00');
    const r = await call(t.app, 'POST', '/api/v1/orders', { walletType: 'live', ...body }, { token: u.token, key: newKey() });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
    expect(JSON.stringify(r.body.error.details)).toContain(field);
    expect(await wallet(t, u)).toMatchObject({ margin: '0.00' });
  });

  it('refuses an unknown symbol with 422 UNKNOWN_SYMBOL', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const r = await place(t, u, { symbol: 'DOGEUSD', side: 'buy', volume: '1.00' });
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('UNKNOWN_SYMBOL');
  });

  it('needs a token and an Idempotency-Key', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const body = { symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'live' };
    expect((await call(t.app, 'POST', '/api/v1/orders', body, { key: newKey() })).status).toBe(401);
    const r = await call(t.app, 'POST', '/api/v1/orders', body, { token: u.token });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('IDEMPOTENCY_KEY_REQUIRED');
  });

  it('refuses more margin than free margin with 422, stored and replayed', async () => {
    const u = await fundedUser(t.app, '1080.09');
    const key = newKey();
    const r = await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100 }, key);
    expect(r.status).toBe(422);
    expect(r.body.error.code).toBe('INSUFFICIENT_MARGIN');
    // Money arrives, but the same key replays the stored rejection.
    await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '100.00' }, { token: u.token, key: newKey() });
    const again = await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100 }, key);
    expect(again.status).toBe(422);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.error).toEqual(r.body.error);
    // A new key goes through now.
    expect((await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100 })).status).toBe(201);
  });

  it('counts unrealized P&L of open orders in the free margin', async () => {
    const u = await fundedUser(t.app, '2000.00');
    await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00', leverage: 100 }); // margin 1080.10, P&L −10.00
    // free margin = 2000.00 − 10.00 − 1080.10 = 909.90; an order needing 910.00 is refused …
    const refused = await place(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.91', leverage: 200 }); // 0.91 × 100 × 2000 / 200 = 910.00
    expect(refused.status).toBe(422);
    // … one needing 909.90 is not (0.90 × 100 × 2000.00 / 200 = 900.00)
    const ok = await place(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.90', leverage: 200 });
    expect(ok.status).toBe(201);
    expect(ok.body.data.wallet).toMatchObject({ balance: '2000.00', margin: '1980.10', equity: '1954.00', freeMargin: '-26.10' });
  });

  it('replays a placement: same response, one order', async () => {
    const u = await fundedUser(t.app, '5000.00');
    const key = newKey();
    const first = await place(t, u, { symbol: 'GBPUSD', side: 'sell', volume: '0.10' }, key);
    const second = await place(t, u, { symbol: 'GBPUSD', side: 'sell', volume: '0.10' }, key);
    expect(first.status).toBe(201);
    expect(second.status).toBe(201);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(second.body.data).toEqual(first.body.data);
    expect(second.body.operationId).not.toBe(first.body.operationId);
    const list = await call(t.app, 'GET', '/api/v1/orders', undefined, { token: u.token });
    expect(list.body.data.items).toHaveLength(1);
    const reused = await place(t, u, { symbol: 'GBPUSD', side: 'sell', volume: '0.20' }, key);
    expect(reused.status).toBe(422);
    expect(reused.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
  });
});

describe('closing', () => {
  it('closes once: a second close is 409 ORDER_NOT_OPEN, a replay is the first 200', async () => {
    const u = await fundedUser(t.app, '5000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.50' });
    await setQuote(t, admin, 'EURUSD', '1.08050', '1.08060');
    const key = newKey();
    const first = await close(t, u, o.id, key);
    expect(first.status).toBe(200);
    expect(first.body.data.order).toMatchObject({ status: 'closed', closePrice: '1.08050', profit: '20.00', closeReason: 'user' });
    const replay = await close(t, u, o.id, key);
    expect(replay.status).toBe(200);
    expect(replay.body.data).toEqual(first.body.data);
    const second = await close(t, u, o.id);
    expect(second.status).toBe(409);
    expect(second.body.error.code).toBe('ORDER_NOT_OPEN');
    expect(await wallet(t, u)).toMatchObject({ balance: '5020.00', margin: '0.00', realizedProfit: '20.00' });
  });

  it('accepts {} as the body, and closes a sell at the ask', async () => {
    const u = await fundedUser(t.app, '5000.00');
    const o = await open(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.10' });
    await setQuote(t, admin, 'XAUUSD', '1990.00', '1990.30');
    const r = await call(t.app, 'POST', `/api/v1/orders/${o.id}/close`, {}, { token: u.token, key: newKey() });
    expect(r.status).toBe(200);
    expect(r.body.data.order).toMatchObject({ closePrice: '1990.30', profit: '97.00' });
  });

  it("hides other users' orders (404) and malformed ids (404)", async () => {
    const owner = await fundedUser(t.app, '5000.00');
    const other = await fundedUser(t.app, '5000.00');
    const o = await open(t, owner, { symbol: 'EURUSD', side: 'buy', volume: '0.10' });
    for (const r of [
      await close(t, other, o.id),
      await call(t.app, 'GET', `/api/v1/orders/${o.id}`, undefined, { token: other.token }),
      await call(t.app, 'PATCH', `/api/v1/orders/${o.id}`, { stopLoss: '1.07000' }, { token: other.token, key: newKey() }),
      await call(t.app, 'GET', '/api/v1/orders/abc', undefined, { token: owner.token }),
      await call(t.app, 'POST', '/api/v1/orders/abc/close', undefined, { token: owner.token, key: newKey() }),
      await call(t.app, 'GET', '/api/v1/orders/99999999', undefined, { token: owner.token }),
    ]) {
      expect(r.status).toBe(404);
      expect(r.body.error.code).toBe('NOT_FOUND');
    }
    expect((await getOrder(t, owner, o.id)).status).toBe('open');
  });

  it('20 parallel closes with distinct keys: exactly one 200, 19 × 409, the balance changed once', async () => {
    const u = await fundedUser(t.app, '3000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' });
    await setQuote(t, admin, 'EURUSD', '1.08135', '1.08145');
    const results = await Promise.all(Array.from({ length: 20 }, () => close(t, u, o.id)));
    const statuses = results.map((r) => r.status).sort();
    expect(statuses.filter((s) => s === 200)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(19);
    for (const r of results.filter((x) => x.status === 409)) expect(r.body.error.code).toBe('ORDER_NOT_OPEN');
    // profit (1.08135 − 1.08010) × 100000 = 125.00, once
    expect(await wallet(t, u)).toMatchObject({ balance: '3125.00', margin: '0.00', realizedProfit: '125.00' });
    expect((await transactions(t, u)).filter((x) => x.type === 'trade_profit').map((x) => x.amount)).toEqual(['125.00']);
    await expectReconciled(t, admin);
  });

  it('parallel placements beyond free margin: exactly as many succeed as the margin allows', async () => {
    // Each XAUUSD sell of 0.10 at 2000.00, leverage 100: margin 200.00 and an immediate
    // loss of 0.40 × 0.10 × 100 = 4.00 (valued at the ask). With 1000.00, free margin after
    // n orders is 1000 − 4n − 200n, so a (n+1)th fits while 1000 − 204n ≥ 200 → n ≤ 3: 4 orders.
    const u = await fundedUser(t.app, '1000.00');
    const results = await Promise.all(Array.from({ length: 12 }, () => place(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.10' })));
    expect(results.filter((r) => r.status === 201)).toHaveLength(4);
    expect(results.filter((r) => r.status === 422).every((r) => r.body.error.code === 'INSUFFICIENT_MARGIN')).toBe(true);
    expect(results.filter((r) => r.status === 422)).toHaveLength(8);
    expect(await wallet(t, u)).toMatchObject({ balance: '1000.00', margin: '800.00', equity: '984.00', freeMargin: '184.00', marginLevel: '123.00' });
    await expectReconciled(t, admin);
  });
});

describe('modifying', () => {
  it('sets, keeps and removes stop-loss and take-profit with the side rules', async () => {
    const u = await fundedUser(t.app, '5000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'sell', volume: '0.10' }); // opens at 1.08000
    const patch = (body: unknown, key = newKey()) => call(t.app, 'PATCH', `/api/v1/orders/${o.id}`, body, { token: u.token, key });
    let r = await patch({ stopLoss: '1.08500' });
    expect(r.status).toBe(200);
    expect(r.body.data.order).toMatchObject({ stopLoss: '1.08500', takeProfit: null });
    r = await patch({ takeProfit: '1.07500' });
    expect(r.body.data.order).toMatchObject({ stopLoss: '1.08500', takeProfit: '1.07500' });
    r = await patch({ stopLoss: null });
    expect(r.body.data.order).toMatchObject({ stopLoss: null, takeProfit: '1.07500' });
    for (const bad of [{ stopLoss: '1.07900' }, { takeProfit: '1.08100' }, { takeProfit: '1.075001' }, { stopLoss: 'x' }, { foo: 1 }]) {
      const b = await patch(bad);
      expect(b.status).toBe(400);
      expect(b.body.error.code).toBe('VALIDATION_FAILED');
    }
    expect(await getOrder(t, u, o.id)).toMatchObject({ stopLoss: null, takeProfit: '1.07500' });
    expect((await call(t.app, 'PATCH', `/api/v1/orders/${o.id}`, { stopLoss: '1.09000' }, { token: u.token })).status).toBe(400);
    await close(t, u, o.id);
    const closed = await patch({ stopLoss: '1.09000' });
    expect(closed.status).toBe(409);
    expect(closed.body.error.code).toBe('ORDER_NOT_OPEN');
  });
});

describe('listing', () => {
  it('filters by status and wallet type and pages newest first', async () => {
    const u = await fundedUser(t.app, '10000.00');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.01' })).id);
    ids.push((await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'demo' })).id);
    await close(t, u, ids[1]!);
    const list = async (q: string) => (await call(t.app, 'GET', `/api/v1/orders${q}`, undefined, { token: u.token })).body.data;
    expect((await list('')).items.map((o: { id: string }) => o.id)).toEqual([...ids].reverse());
    expect((await list('?status=closed')).items.map((o: { id: string }) => o.id)).toEqual([ids[1]]);
    expect((await list('?status=open&walletType=live')).items.map((o: { id: string }) => o.id)).toEqual([ids[4], ids[3], ids[2], ids[0]]);
    expect((await list('?walletType=demo')).items.map((o: { id: string }) => o.id)).toEqual([ids[5]]);
    const page1 = await list('?limit=4');
    expect(page1.items).toHaveLength(4);
    const page2 = await list(`?limit=4&cursor=${page1.nextCursor}`);
    expect([...page1.items, ...page2.items].map((o: { id: string }) => o.id)).toEqual([...ids].reverse());
    expect(page2.nextCursor).toBeNull();
    expect((await call(t.app, 'GET', '/api/v1/orders?status=pending', undefined, { token: u.token })).status).toBe(400);
    expect((await call(t.app, 'GET', '/api/v1/orders?limit=0', undefined, { token: u.token })).status).toBe(400);
  });
});

describe('withdrawals with open positions', () => {
  it('refuses what would leave free margin below 0 with INSUFFICIENT_FUNDS', async () => {
    const u = await fundedUser(t.app, '2000.00');
    await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' }); // margin 1080.10
    await setQuote(t, admin, 'EURUSD', '1.07500', '1.07510'); // P&L −510.00 → equity 1490.00, free 409.90
    const tooMuch = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '409.91' }, { token: u.token, key: newKey() });
    expect(tooMuch.status).toBe(422);
    expect(tooMuch.body.error.code).toBe('INSUFFICIENT_FUNDS');
    const ok = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '409.90' }, { token: u.token, key: newKey() });
    expect(ok.status).toBe(201);
    expect(ok.body.data.wallet).toMatchObject({ balance: '1590.10', margin: '1080.10', equity: '1080.10', freeMargin: '0.00', marginLevel: '100.00' });
    await expectReconciled(t, admin);
  });
});
