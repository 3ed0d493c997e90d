/**
 * The risk engine driven by admin quotes: stop-loss and take-profit (also after a
 * PATCH), stop-out (lowest unrealized P&L first, ties the oldest, repeated), negative
 * balance protection; every triggered close committed before the admin's response,
 * and reconciliation ok after each.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { Decimal } from '../../src/platform/money.js';
import type { AppLogger } from '../../src/platform/logger.js';
import { REFRESH_BATCH_MS } from '../../src/modules/trading/risk.engine.js';
import { WALLET_CHANNEL } from '../../src/modules/trading/trading.repository.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { listenTo } from '../helpers/db.js';
import { call, closeLeftovers, expectReconciled, fundedUser, getOrder, makeAdmin, newKey, open, registerUser, setQuote, transactions, wallet, type User } from './helpers.js';

let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
});
afterAll(async () => { await t?.close(); });

beforeEach(async () => {
  await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
  await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
});
afterEach(async () => {
  await closeLeftovers(t);
});

describe('stop-loss and take-profit', () => {
  it('a buy stop-loss closes at the bid that reached it', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10', stopLoss: '1.07900', takeProfit: '1.08200' });
    expect((await setQuote(t, admin, 'EURUSD', '1.07950', '1.07960')).triggered).toBe(0);
    expect((await getOrder(t, u, o.id)).status).toBe('open');
    const q = await setQuote(t, admin, 'EURUSD', '1.07900', '1.07910');
    expect(q.triggered).toBe(1);
    // committed before the response
    expect(await getOrder(t, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'stop_loss', closePrice: '1.07900', profit: '-11.00' });
    expect(await wallet(t, u)).toMatchObject({ balance: '989.00', margin: '0.00', realizedProfit: '-11.00' });
    await expectReconciled(t, admin);
  });

  it('a buy take-profit closes at the quote price, not at the level', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10', takeProfit: '1.08200' });
    expect((await setQuote(t, admin, 'EURUSD', '1.08250', '1.08260')).triggered).toBe(1);
    expect(await getOrder(t, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'take_profit', closePrice: '1.08250', profit: '24.00' });
    expect(await wallet(t, u)).toMatchObject({ balance: '1024.00', realizedProfit: '24.00' });
    await expectReconciled(t, admin);
  });

  it('sell stop-loss and take-profit trigger on the ask', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const sl = await open(t, u, { symbol: 'EURUSD', side: 'sell', volume: '0.10', stopLoss: '1.08100' });
    const tp = await open(t, u, { symbol: 'EURUSD', side: 'sell', volume: '0.10', takeProfit: '1.07900' });
    // an ask just below the stop-loss does not trigger it
    expect((await setQuote(t, admin, 'EURUSD', '1.08085', '1.08099')).triggered).toBe(0);
    expect((await setQuote(t, admin, 'EURUSD', '1.08095', '1.08105')).triggered).toBe(1);
    expect(await getOrder(t, u, sl.id)).toMatchObject({ status: 'closed', closeReason: 'stop_loss', closePrice: '1.08105', profit: '-10.50' });
    expect((await setQuote(t, admin, 'EURUSD', '1.07880', '1.07890')).triggered).toBe(1);
    expect(await getOrder(t, u, tp.id)).toMatchObject({ status: 'closed', closeReason: 'take_profit', closePrice: '1.07890', profit: '11.00' });
    expect(await wallet(t, u)).toMatchObject({ balance: '1000.50', margin: '0.00', realizedProfit: '0.50' });
    await expectReconciled(t, admin);
  });

  it('a take-profit set by PATCH triggers; a stop-loss moved away by PATCH does not', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10', stopLoss: '1.07900' });
    let r = await call(t.app, 'PATCH', `/api/v1/orders/${o.id}`, { stopLoss: '1.07500' }, { token: u.token, key: newKey() });
    expect(r.status).toBe(200);
    expect((await setQuote(t, admin, 'EURUSD', '1.07800', '1.07810')).triggered).toBe(0);
    expect((await getOrder(t, u, o.id)).status).toBe('open');
    r = await call(t.app, 'PATCH', `/api/v1/orders/${o.id}`, { takeProfit: '1.08100' }, { token: u.token, key: newKey() });
    expect(r.body.data.order).toMatchObject({ stopLoss: '1.07500', takeProfit: '1.08100' });
    expect((await setQuote(t, admin, 'EURUSD', '1.08050', '1.08060')).triggered).toBe(0);
    expect((await setQuote(t, admin, 'EURUSD', '1.08100', '1.08110')).triggered).toBe(1);
    expect(await getOrder(t, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'take_profit', closePrice: '1.08100', profit: '9.00' });
    await expectReconciled(t, admin);
  });

  it('one quote closes the levels of many users and leaves the others', async () => {
    const users = await Promise.all(Array.from({ length: 6 }, () => fundedUser(t.app, '500.00')));
    const hit = await Promise.all(users.map((u) => open(t, u, { symbol: 'XAUUSD', side: 'buy', volume: '0.01', stopLoss: '1995.00' })));
    const missed = await Promise.all(users.map((u) => open(t, u, { symbol: 'XAUUSD', side: 'buy', volume: '0.01', stopLoss: '1990.00' })));
    const q = await setQuote(t, admin, 'XAUUSD', '1994.00', '1994.40');
    expect(q.triggered).toBe(6);
    for (const [i, u] of users.entries()) {
      expect(await getOrder(t, u, hit[i]!.id)).toMatchObject({ status: 'closed', closePrice: '1994.00', profit: '-6.40', closeReason: 'stop_loss' });
      expect((await getOrder(t, u, missed[i]!.id)).status).toBe('open');
    }
    await expectReconciled(t, admin);
  });
});

describe('stop-out', () => {
  it('closes the lowest P&L first and repeats until the level is above STOP_OUT_LEVEL', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const a = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.30' }); // 1.08010, margin 324.03
    await setQuote(t, admin, 'EURUSD', '1.08100', '1.08110');
    const b = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.30' }); // 1.08110, margin 324.33
    const c = await open(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.10' }); // 2000.00, margin 200.00
    expect(await wallet(t, u)).toMatchObject({ margin: '848.36', equity: '1020.00', marginLevel: '120.23' }); // +27.00 − 3.00 − 4.00
    // At 1.06600: A −423.00, B −453.00, C −4.00 → equity 120.00, level 14.14 %.
    // B goes first (lowest): equity 120.00 over margin 524.03 = 22.90 %, still ≤ 50 %;
    // then A: equity 120.00 over 200.00 = 60 %: C stays.
    const q = await setQuote(t, admin, 'EURUSD', '1.06600', '1.06610');
    expect(q.triggered).toBe(2);
    const [oa, ob, oc] = [await getOrder(t, u, a.id), await getOrder(t, u, b.id), await getOrder(t, u, c.id)];
    expect(ob).toMatchObject({ status: 'closed', closeReason: 'stop_out', closePrice: '1.06600', profit: '-453.00' });
    expect(oa).toMatchObject({ status: 'closed', closeReason: 'stop_out', closePrice: '1.06600', profit: '-423.00' });
    expect(oc.status).toBe('open');
    expect(new Date(ob.closedAt!).getTime()).toBeLessThanOrEqual(new Date(oa.closedAt!).getTime());
    const closes = (await transactions(t, u)).filter((x) => x.type === 'trade_loss');
    expect(closes.map((x) => [x.orderId, x.amount, x.balanceAfter])).toEqual([[a.id, '-423.00', '124.00'], [b.id, '-453.00', '547.00']]);
    expect(await wallet(t, u)).toMatchObject({ balance: '124.00', margin: '200.00', equity: '120.00', marginLevel: '60.00', realizedProfit: '-876.00' });
    await expectReconciled(t, admin);
  });

  it('closes the oldest of equal losses', async () => {
    const u = await fundedUser(t.app, '1000.00');
    const a = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.30' });
    const b = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.30' });
    await open(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.10' });
    // At 1.07010: A and B −300.00 each, C −4.00 → equity 396.00 over 848.06 = 46.69 %: one goes.
    const q = await setQuote(t, admin, 'EURUSD', '1.07010', '1.07020');
    expect(q.triggered).toBe(1);
    expect(await getOrder(t, u, a.id)).toMatchObject({ status: 'closed', closeReason: 'stop_out', profit: '-300.00' });
    expect((await getOrder(t, u, b.id)).status).toBe('open');
    expect(await wallet(t, u)).toMatchObject({ balance: '700.00', margin: '524.03', equity: '396.00', marginLevel: '75.57' });
    await expectReconciled(t, admin);
  });

  it('stops out a blocked user too, and only the wallet at risk', async () => {
    const u = await fundedUser(t.app, '100.00');
    const demo = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.50', walletType: 'demo' }); // demo balance 10000: safe
    const live = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.05' }); // margin 54.01
    expect((await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/block`, undefined, { token: admin.token })).status).toBe(200);
    // at 1.07000: (1.07000 − 1.08010) × 5000 = −50.50 → equity 49.50 / 54.01 = 91.65 %: nothing
    expect((await setQuote(t, admin, 'EURUSD', '1.07000', '1.07010')).triggered).toBe(0);
    // at 1.06000: −100.50 → equity −0.50: stop-out (the demo wallet, with 10000.00, stays)
    expect((await setQuote(t, admin, 'EURUSD', '1.06000', '1.06010')).triggered).toBe(1);
    const unblock = await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/unblock`, undefined, { token: admin.token });
    expect(unblock.status).toBe(200);
    expect((await getOrder(t, u, live.id)).closeReason).toBe('stop_out');
    expect((await getOrder(t, u, demo.id)).status).toBe('open');
    await expectReconciled(t, admin);
  });
  it('races user closes of the same orders: each closes exactly once, the books balance', async () => {
    const u = await fundedUser(t.app, '2000.00');
    const orders = [];
    for (let i = 0; i < 5; i++) orders.push(await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.20' })); // 216.02 each
    // At 1.06510 each is −300.00: equity 500.00 over 1080.10 = 46.29 % → one stop-out.
    const [quote, ...closes] = await Promise.all([
      setQuote(t, admin, 'EURUSD', '1.06510', '1.06520'),
      ...orders.map((o) => call(t.app, 'POST', `/api/v1/orders/${o.id}/close`, undefined, { token: u.token, key: newKey() })),
    ]);
    const byUser = closes.filter((r) => r.status === 200).length;
    expect(closes.every((r) => r.status === 200 || (r.status === 409 && r.body.error.code === 'ORDER_NOT_OPEN'))).toBe(true);
    expect(byUser + quote.triggered).toBe(5);
    const final = await Promise.all(orders.map((o) => getOrder(t, u, o.id)));
    expect(final.every((o) => o.status === 'closed')).toBe(true);
    // each at the old bid (−2.00) or the new one (−300.00); the stop-out, if any, at the new one
    for (const o of final) expect(['-2.00', '-300.00']).toContain(o.profit);
    const balance = final.reduce((sum, o) => sum.plus(o.profit!), new Decimal('2000.00')).toFixed(2);
    expect(await wallet(t, u)).toMatchObject({ balance, margin: '0.00' });
    const losses = (await transactions(t, u)).filter((x) => x.type === 'trade_loss');
    expect(losses.map((x) => x.orderId).sort()).toEqual(orders.map((o) => o.id).sort());
    await expectReconciled(t, admin);
  });
});

describe('balances changed outside trading', () => {
  const bookBalance = (userId: string) => [...t.services.trading.book.wallets.values()].find((w) => w.userId === userId && w.walletType === 'live')?.balanceCents;

  it('a withdrawal reaches the engine (NOTIFY) before the next quote needs it', async () => {
    const u = await fundedUser(t.app, '2000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' }); // margin 1080.10
    const w = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '900.00' }, { token: u.token, key: newKey() });
    expect(w.status).toBe(201);
    for (let i = 0; i < 100 && bookBalance(u.user.id) !== 110000n; i++) await new Promise((r) => setTimeout(r, 20));
    expect(bookBalance(u.user.id)).toBe(110000n);
    // at 1.07450: −560.00 → equity 540.00 / 1080.10 = 49.99 %: stop-out (with the old balance it would be 133 %)
    expect((await setQuote(t, admin, 'EURUSD', '1.07450', '1.07460')).triggered).toBe(1);
    expect(await getOrder(t, u, o.id)).toMatchObject({ closeReason: 'stop_out', profit: '-560.00' });
    await expectReconciled(t, admin);
  });

  it('a deposit, an admin adjustment or an incoming transfer to a wallet with positions notifies the engine on commit; without positions, none does', async () => {
    const listener = await listenTo(t.url, WALLET_CHANNEL);
    const { notices } = listener;
    try {
      const u = await fundedUser(t.app, '2000.00');
      const bare = await fundedUser(t.app, '2000.00');
      await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' }); // margin 1080.10
      const walletId = (await t.database.db.selectFrom('wallets').select('id').where('userId', '=', u.user.id).where('type', '=', 'live').executeTakeFirstOrThrow()).id;
      const before = notices.length;
      expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '500.00' }, { token: u.token, key: newKey() })).status).toBe(201);
      expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '500.00' }, { token: bare.token, key: newKey() })).status).toBe(201);
      await expect.poll(() => notices.slice(before)).toEqual([walletId]);
      for (let i = 0; i < 100 && bookBalance(u.user.id) !== 250000n; i++) await new Promise((r) => setTimeout(r, 20));
      expect(bookBalance(u.user.id)).toBe(250000n);
      const adj = await call(t.app, 'POST', '/api/v1/admin/adjustments', { userId: u.user.id, walletType: 'live', amount: '1.00', reason: 'test' }, { token: admin.token, key: newKey() });
      expect(adj.status).toBe(201);
      await call(t.app, 'POST', '/api/v1/admin/adjustments', { userId: bare.user.id, walletType: 'live', amount: '1.00', reason: 'test' }, { token: admin.token, key: newKey() });
      await expect.poll(() => notices.slice(before)).toEqual([walletId, walletId]);
      // A transfer to the wallet with positions: its recipient's notice (the sender has none).
      const tr = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: u.user.accountNumber, amount: '3.00' }, { token: bare.token, key: newKey() });
      expect(tr.status).toBe(201);
      await expect.poll(() => notices.slice(before)).toEqual([walletId, walletId, walletId]);
      for (let i = 0; i < 100 && bookBalance(u.user.id) !== 250400n; i++) await new Promise((r) => setTimeout(r, 20));
      expect(bookBalance(u.user.id)).toBe(250400n); // 2000 + 500 + 1 + 3
    } finally {
      await listener.end();
    }
  });

  it('an admin adjustment reaches the engine (NOTIFY) before the next quote needs it', async () => {
    const u = await fundedUser(t.app, '2000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' });
    const adj = await call(t.app, 'POST', '/api/v1/admin/adjustments', { userId: u.user.id, walletType: 'live', amount: '-900.00', reason: 'test' }, { token: admin.token, key: newKey() });
    expect(adj.status).toBe(201);
    for (let i = 0; i < 100 && bookBalance(u.user.id) !== 110000n; i++) await new Promise((r) => setTimeout(r, 20));
    expect(bookBalance(u.user.id)).toBe(110000n);
    expect((await setQuote(t, admin, 'EURUSD', '1.07450', '1.07460')).triggered).toBe(1);
    expect((await getOrder(t, u, o.id)).closeReason).toBe('stop_out');
    await expectReconciled(t, admin);
  });

  it('the resync reads the wallets with positions page by page and misses none', async () => {
    const users = [];
    const orders: string[] = [];
    for (let i = 0; i < 3; i++) {
      const u = await fundedUser(t.app, '2000.00');
      orders.push((await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' })).id);
      users.push(u);
    }
    for (const u of users) {
      await call(t.app, 'POST', '/api/v1/admin/adjustments', { userId: u.user.id, walletType: 'live', amount: '-900.00', reason: 'test' }, { token: admin.token, key: newKey() });
    }
    // Once their notices are in, the book forgets them: only the paged read of the database can bring them back.
    for (let i = 0; i < 100 && !users.every((u) => bookBalance(u.user.id) === 110000n); i++) await new Promise((r) => setTimeout(r, 20));
    expect(users.map((u) => bookBalance(u.user.id))).toEqual([110000n, 110000n, 110000n]);
    for (const id of orders) t.services.trading.book.removeOrder(id);
    expect(users.map((u) => bookBalance(u.user.id))).toEqual([undefined, undefined, undefined]);
    await t.services.trading.engine.syncNow(1); // one wallet per read
    expect(users.map((u) => bookBalance(u.user.id))).toEqual([110000n, 110000n, 110000n]);
    expect(orders.every((id) => t.services.trading.book.orders.has(id))).toBe(true);
  });

  it('re-reads the wallets notified within REFRESH_BATCH_MS in one query, and before a task submitted after them', async () => {
    const users = [await fundedUser(t.app, '2000.00'), await fundedUser(t.app, '2000.00'), await fundedUser(t.app, '2000.00')];
    for (const u of users) await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' });
    const ids = await Promise.all(users.map(async (u) => (await t.database.db.selectFrom('wallets').select('id')
      .where('userId', '=', u.user.id).where('type', '=', 'live').executeTakeFirstOrThrow()).id));
    await new Promise((r) => setTimeout(r, REFRESH_BATCH_MS * 5)); // the opens' own work is done
    const engine = t.services.trading.engine;
    // What the engine's queue runs, in order (its private steps, watched).
    const ran: string[] = [];
    const watch = engine as unknown as Record<'refresh' | 'runQuotes', (...a: unknown[]) => Promise<void>>;
    const original = { refresh: watch.refresh.bind(engine), runQuotes: watch.runQuotes.bind(engine) };
    vi.spyOn(watch, 'refresh').mockImplementation(async (...a: unknown[]) => {
      ran.push(`refresh ${[...(a[0] as string[])].sort().join(',')}`);
      return original.refresh(...a);
    });
    try {
      // Three notices in a row: one read of the three wallets (without the gathering, the first would be read alone).
      for (const id of ids) engine.walletChanged(id);
      await new Promise((r) => setTimeout(r, REFRESH_BATCH_MS * 5));
      expect(ran).toEqual([`refresh ${[...ids].sort().join(',')}`]);
    } finally {
      vi.restoreAllMocks();
    }
    // A quote submitted while a refresh gathers: the wallet is re-read first, not when the timer fires.
    ran.length = 0;
    vi.spyOn(watch, 'refresh').mockImplementation(async (...a: unknown[]) => {
      ran.push('refresh');
      return original.refresh(...a);
    });
    vi.spyOn(watch, 'runQuotes').mockImplementation(async (...a: unknown[]) => {
      ran.push('quote');
      return original.runQuotes(...a);
    });
    try {
      engine.walletChanged(ids[0]!);
      await engine.submitAdminQuote({ symbol: 'EURUSD', bid: new Decimal('1.08000'), ask: new Decimal('1.08010') },
        { actorId: admin.user.id, operationId: randomUUID(), log: t.app.log as unknown as AppLogger });
      expect(ran).toEqual(['refresh', 'quote']);
    } finally {
      vi.restoreAllMocks();
    }
  });

  it('a drop below stop-out through an adjustment alone is stopped out (its notice, at the latest the resync)', async () => {
    const u = await fundedUser(t.app, '2000.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '1.00' }); // equity 1990.00
    await call(t.app, 'POST', '/api/v1/admin/adjustments', { userId: u.user.id, walletType: 'live', amount: '-1460.00', reason: 'test' }, { token: admin.token, key: newKey() });
    // equity 530.00 / 1080.10 = 49.07 %
    await t.services.trading.engine.syncNow();
    expect(await getOrder(t, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'stop_out', profit: '-10.00' });
    await expectReconciled(t, admin);
  });
});

describe('negative balance protection', () => {
  it('a gap beyond the balance: the full loss is shown and the house compensates to 0.00', async () => {
    const u = await fundedUser(t.app, '100.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.05' }); // margin 54.01
    const q = await setQuote(t, admin, 'EURUSD', '1.05000', '1.05010'); // (1.05 − 1.0801) × 5000 = −150.50
    expect(q.triggered).toBe(1);
    expect(await getOrder(t, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'stop_out', closePrice: '1.05000', profit: '-150.50' });
    expect(await wallet(t, u)).toMatchObject({ balance: '0.00', margin: '0.00', equity: '0.00', realizedProfit: '-150.50' });
    const txs = await transactions(t, u);
    const loss = txs.find((x) => x.type === 'trade_loss')!;
    const comp = txs.find((x) => x.type === 'negative_balance_compensation')!;
    expect(loss).toMatchObject({ amount: '-150.50', balanceAfter: '-50.50', orderId: o.id });
    expect(comp).toMatchObject({ amount: '50.50', balanceAfter: '0.00', orderId: o.id });
    expect(txs.indexOf(comp)).toBeLessThan(txs.indexOf(loss)); // newest first: compensation after the loss
    const rows = await t.database.db.selectFrom('ledgerPostings').select(['houseAccount', 'amount']).where('orderId', '=', o.id).where('houseAccount', 'is not', null).orderBy('id').execute();
    expect(rows).toEqual([{ houseAccount: 'dealing', amount: '150.50' }, { houseAccount: 'negative_balance_compensation', amount: '-50.50' }]);
    await expectReconciled(t, admin);
  });

  it('also on a stop-loss hit through a gap', async () => {
    const u = await fundedUser(t.app, '60.00');
    const o = await open(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.02', leverage: 100, stopLoss: '2010.00' }); // margin 40.00
    // gap to ask 2050.40: loss (2050.40 − 2000.00) × 2 = −100.80, closes at the quote, not at 2010.00
    expect((await setQuote(t, admin, 'XAUUSD', '2050.00', '2050.40')).triggered).toBe(1);
    expect(await getOrder(t, u, o.id)).toMatchObject({ closeReason: 'stop_loss', closePrice: '2050.40', profit: '-100.80' });
    expect(await wallet(t, u)).toMatchObject({ balance: '0.00', realizedProfit: '-100.80' });
    await expectReconciled(t, admin);
  });
});

describe('POST /admin/quotes', () => {
  it('validates: bid ≤ ask, digits, known symbol, admins only', async () => {
    const post = (body: unknown, token = admin.token) => call(t.app, 'POST', '/api/v1/admin/quotes', body, { token });
    for (const body of [
      { symbol: 'EURUSD', bid: '1.08020', ask: '1.08010' },
      { symbol: 'EURUSD', bid: '0', ask: '1.08010' },
      { symbol: 'EURUSD', bid: '1.080001', ask: '1.08010' },
      { symbol: 'XAUUSD', bid: '2000.001', ask: '2000.40' },
      { symbol: 'EURUSD', bid: '-1', ask: '1.08010' },
      { symbol: 'EURUSD', bid: '1.08' },
      { symbol: 'EURUSD', bid: '1.08', ask: '1.09', extra: true },
    ]) {
      const r = await post(body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.body.error.code).toBe('VALIDATION_FAILED');
    }
    const unknown = await post({ symbol: 'NOPE', bid: '1', ask: '2' });
    expect(unknown.status).toBe(422);
    expect(unknown.body.error.code).toBe('UNKNOWN_SYMBOL');
    const user = await registerUser(t.app);
    expect((await post({ symbol: 'EURUSD', bid: '1.08', ask: '1.09' }, user.token)).status).toBe(403);
    expect((await call(t.app, 'POST', '/api/v1/admin/quotes', { symbol: 'EURUSD', bid: '1.08', ask: '1.09' })).status).toBe(401);
    const ok = await post({ symbol: 'EURUSD', bid: 1.081, ask: '1.0811' });
    expect(ok.status).toBe(200);
    expect(ok.body.data).toMatchObject({ quote: { symbol: 'EURUSD', bid: '1.08100', ask: '1.08110' }, triggered: 0 });
    expect(ok.headers['idempotent-replayed']).toBeUndefined();
  });

  it('writes every admin quote to the audit log', async () => {
    await setQuote(t, admin, 'XAUUSD', '2001.10', '2001.50');
    const r = await call(t.app, 'GET', '/api/v1/admin/audit?limit=5', undefined, { token: admin.token });
    const entry = r.body.data.items.find((x: { action: string }) => x.action === 'quote');
    expect(entry).toMatchObject({ actorId: admin.user.id, action: 'quote', targetUserId: null, details: { symbol: 'XAUUSD', bid: '2001.10', ask: '2001.50' } });
  });
});
