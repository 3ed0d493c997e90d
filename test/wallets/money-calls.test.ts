/**
 * Deposit, withdrawal and transfer are one PL/pgSQL call each (migration 0007), which
 * writes the response in SQL. It must be the same JSON text the TypeScript views render
 * (API.md's `transaction` and `wallet`, open positions valued half-to-even per order),
 * byte for byte: a replay returns the stored text, and clients read both.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { OrderService } from '../../src/modules/trading/order.service.js';
import { DomainError } from '../../src/platform/errors.js';
import { Decimal } from '../../src/platform/money.js';
import { call, fundedUser, newKey, registerUser, startTestApp, type Reply, type TestApp } from '../helpers/app.js';
import { closeLeftovers, makeAdmin, open, setQuote, type User } from '../trading/helpers.js';

let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
});
afterAll(async () => {
  await closeLeftovers(t);
  await t.close();
});

async function storedResponse(userId: string, key: string) {
  const { rows } = await sql<{ status: string; responseStatus: number; responseBody: string }>`
    SELECT status, response_status, response_body FROM idempotency_keys WHERE user_id = ${userId} AND key = ${key}`.execute(t.database.db);
  return rows[0];
}

/** An operation's `data` as the TypeScript views render it now: the wallet, and its newest transaction. */
async function renderedByViews(u: { token: string }, type: 'live' | 'demo') {
  const w = await call(t.app, 'GET', `/api/v1/wallets/${type}`, undefined, { token: u.token });
  const tx = await call(t.app, 'GET', `/api/v1/wallets/${type}/transactions?limit=1`, undefined, { token: u.token });
  expect(w.status).toBe(200);
  expect(tx.status).toBe(200);
  return JSON.stringify({ transaction: tx.body.data.items[0], wallet: w.body.data.wallet });
}

describe('money operations as one PL/pgSQL call', () => {
  it('answers and stores the same bytes as the views, with open positions valued half-to-even per order', async () => {
    await setQuote(t, admin, 'BTCUSD', '60000.00', '60010.00');
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    const u = await fundedUser(t.app, '5000.00');
    await open(t, u, { symbol: 'BTCUSD', side: 'buy', volume: '0.01' }); // at 60010.00
    await open(t, u, { symbol: 'BTCUSD', side: 'sell', volume: '0.01' }); // at 60000.00
    await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10' }); // at 1.08010
    // buy: (60010.50 − 60010.00) × 0.01 = 0.005 → 0.00; sell: (60000.00 − 60011.50) × 0.01 = −0.115 → −0.12
    await setQuote(t, admin, 'BTCUSD', '60010.50', '60011.50');
    // buy: (1.08123 − 1.08010) × 10,000 = 11.30
    await setQuote(t, admin, 'EURUSD', '1.08123', '1.08133');

    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '12.3', paymentMethod: 'card' }, { token: u.token, key });
    expect(r.status).toBe(201);
    const stored = await storedResponse(u.user.id, key);
    expect(stored).toMatchObject({ status: 'completed', responseStatus: 201 });
    expect(JSON.stringify(r.body.data)).toBe(stored!.responseBody);
    expect(stored!.responseBody).toBe(await renderedByViews(u, 'live'));

    const wallet = r.body.data.wallet;
    expect(wallet.balance).toBe('5012.30');
    expect(wallet.equity).toBe('5023.48'); // 5012.30 + 0.00 − 0.12 + 11.30
    expect(wallet.freeMargin).toBe(String((502348 - Math.round(Number(wallet.margin) * 100)) / 100));
    expect(wallet.marginLevel).not.toBeNull();
    expect(r.body.data.transaction).toMatchObject({ type: 'deposit', amount: '12.30', balanceAfter: '5012.30', metadata: { paymentMethod: 'card' } });

    // The replay is the stored text.
    const again = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '12.3', paymentMethod: 'card' }, { token: u.token, key });
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(JSON.stringify(again.body.data)).toBe(stored!.responseBody);
  });

  it('rounds a marginLevel that ends in an exact half to even', async () => {
    await setQuote(t, admin, 'BTCUSD', '60000.00', '60001.00');
    const u = await fundedUser(t.app, '1000.00');
    // a sell at the bid 60000.00, 0.01 × 60000.00 / 15 = 40.00 of margin
    await open(t, u, { symbol: 'BTCUSD', side: 'sell', volume: '0.01', leverage: 15 });
    await setQuote(t, admin, 'BTCUSD', '59999.00', '60000.00'); // unrealized P&L 0.00
    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '0.01' }, { token: u.token, key });
    expect(r.status).toBe(201);
    // 1000.01 / 40.00 × 100 = 2500.025: half-to-even gives 2500.02 (half-up would give 2500.03)
    expect(r.body.data.wallet).toMatchObject({ balance: '1000.01', margin: '40.00', equity: '1000.01', marginLevel: '2500.02' });
    expect((await storedResponse(u.user.id, key))!.responseBody).toBe(await renderedByViews(u, 'live'));
  });

  it('withdrawal and transfer answer the bytes of the views too, note escaped as JSON.stringify does', async () => {
    await setQuote(t, admin, 'BTCUSD', '60000.00', '60010.00');
    const u = await fundedUser(t.app, '3000.00');
    const other = await registerUser(t.app);
    await open(t, u, { symbol: 'BTCUSD', side: 'buy', volume: '0.03' }); // at 60010.00
    await setQuote(t, admin, 'BTCUSD', '60010.50', '60011.50'); // (0.50 × 0.03 = 0.015 → 0.02)

    const wkey = newKey();
    const w = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '100.05' }, { token: u.token, key: wkey });
    expect(w.status).toBe(201);
    expect(w.body.data.transaction).toMatchObject({ type: 'withdrawal', amount: '-100.05', balanceAfter: '2899.95' });
    expect(w.body.data.wallet.equity).toBe('2899.97');
    expect((await storedResponse(u.user.id, wkey))!.responseBody).toBe(await renderedByViews(u, 'live'));

    const note = 'rent "May" \\ split\n\tüñí€ 😀 \u2028 \u0001';
    const tkey = newKey();
    const tr = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: other.user.accountNumber, amount: '0.99', note }, { token: u.token, key: tkey });
    expect(tr.status).toBe(201);
    expect(tr.body.data.transaction).toMatchObject({ type: 'transfer_out', amount: '-0.99', balanceAfter: '2898.96', counterparty: other.user.accountNumber, note });
    expect((await storedResponse(u.user.id, tkey))!.responseBody).toBe(await renderedByViews(u, 'live'));
    const received = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?limit=1', undefined, { token: other.token });
    expect(received.body.data.items[0]).toMatchObject({ type: 'transfer_in', amount: '0.99', balanceAfter: '0.99', counterparty: u.user.accountNumber, note });

    // A transfer without a note has no note; an empty note is shown as sent.
    const bare = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: other.user.accountNumber, amount: '0.01' }, { token: u.token, key: newKey() });
    expect(bare.status).toBe(201);
    expect('note' in bare.body.data.transaction).toBe(false);
    const empty = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: other.user.accountNumber, amount: '0.01', note: '' }, { token: u.token, key: newKey() });
    expect(empty.status).toBe(201);
    expect(empty.body.data.transaction.note).toBe('');
  });

  it('stores each rejection of a withdrawal and a transfer, and a self-transfer is a 400 that is not stored', async () => {
    const u = await fundedUser(t.app, '50.00');
    const other = await registerUser(t.app);
    const cases: [string, unknown, number, string][] = [
      ['withdraw', { amount: '50.01' }, 422, 'INSUFFICIENT_FUNDS'],
      ['transfer', { toAccountNumber: other.user.accountNumber, amount: '50.01' }, 422, 'INSUFFICIENT_FUNDS'],
      ['transfer', { toAccountNumber: '9999999999', amount: '1.00' }, 404, 'RECIPIENT_NOT_FOUND'],
    ];
    for (const [op, body, status, code] of cases) {
      const key = newKey();
      const r = await call(t.app, 'POST', `/api/v1/wallets/live/${op}`, body, { token: u.token, key });
      expect([r.status, r.body.error.code]).toEqual([status, code]);
      const stored = await storedResponse(u.user.id, key);
      expect(stored).toMatchObject({ status: 'completed', responseStatus: status });
      expect(JSON.parse(stored!.responseBody)).toEqual(r.body.error);
      const again = await call(t.app, 'POST', `/api/v1/wallets/live/${op}`, body, { token: u.token, key });
      expect([again.status, again.headers['idempotent-replayed']]).toEqual([status, 'true']);
    }
    const key = newKey();
    const self = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: u.user.accountNumber, amount: '1.00' }, { token: u.token, key });
    expect([self.status, self.body.error.code]).toEqual([400, 'VALIDATION_FAILED']);
    expect(self.body.error.details).toEqual([{ field: 'toAccountNumber', message: 'is your own account' }]);
    expect(await storedResponse(u.user.id, key)).toBeUndefined();
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet.balance).toBe('50.00');
  });

  it('an order open answers the bytes of the order and wallet views; too little free margin is stored with the amounts', async () => {
    await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
    await setQuote(t, admin, 'BTCUSD', '60000.00', '60010.00');
    const u = await fundedUser(t.app, '2500.00');
    await open(t, u, { symbol: 'BTCUSD', side: 'buy', volume: '0.03' }); // at 60010.00, margin 90.02
    await setQuote(t, admin, 'BTCUSD', '60010.50', '60011.50'); // its P&L: 0.015 → 0.02
    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'sell', volume: '0.10', leverage: 10, stopLoss: '2100.50', walletType: 'live' }, { token: u.token, key });
    expect(r.status, r.raw).toBe(201);
    const stored = await storedResponse(u.user.id, key);
    const order = await call(t.app, 'GET', `/api/v1/orders/${r.body.data.order.id}`, undefined, { token: u.token });
    const wallet = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(stored!.responseBody).toBe(JSON.stringify({ order: order.body.data.order, wallet: wallet.body.data.wallet }));
    expect(JSON.stringify(r.body.data)).toBe(stored!.responseBody);
    expect(r.body.data.order).toMatchObject({ symbol: 'XAUUSD', side: 'sell', volume: '0.10', leverage: 10, openPrice: '2000.00', margin: '2000.00', stopLoss: '2100.50', takeProfit: null, status: 'open' });
    // the new sell is valued at the ask: (2000.00 − 2000.40) × 10 = −4.00
    expect(r.body.data.wallet).toMatchObject({ margin: '2090.02', equity: '2496.02', freeMargin: '406.00' });

    const too = newKey();
    const no = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', leverage: 10, walletType: 'live' }, { token: u.token, key: too });
    expect(no.status).toBe(422);
    expect(no.body.error).toEqual({ code: 'INSUFFICIENT_MARGIN', message: 'This order needs 2000.40 of margin; free margin is 406.00' });
    const rejected = await storedResponse(u.user.id, too);
    expect(rejected).toMatchObject({ status: 'completed', responseStatus: 422 });
    expect(JSON.parse(rejected!.responseBody)).toEqual(no.body.error);
    const again = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.10', leverage: 10, walletType: 'live' }, { token: u.token, key: too });
    expect([again.status, again.headers['idempotent-replayed']]).toEqual([422, 'true']);
  });

  it('an order open that waited for its wallet is priced again at the quote of its retry', async () => {
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const u = await fundedUser(t.app, '1000.00');
    const retriedBefore = t.services.tx.stats.retried;
    let answer: Promise<Reply> | undefined;
    await t.database.db.transaction().execute(async (trx) => {
      await sql`SELECT 1 FROM wallets WHERE user_id = ${u.user.id} AND type = 'live' FOR UPDATE`.execute(trx);
      answer = call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'live' }, { token: u.token, key: newKey() });
      await new Promise((r) => setTimeout(r, 400));
      await setQuote(t, admin, 'EURUSD', '1.20000', '1.20010'); // while the open waits for the wallet
    });
    const r = await answer!;
    expect(r.status, r.raw).toBe(201);
    expect(r.body.data.order.openPrice).toBe('1.20010');
    expect(r.body.data.order.margin).toBe('12.01'); // 0.01 × 100,000 × 1.20010 / 100
    expect(t.services.tx.stats.retried).toBeGreaterThan(retriedBefore);
    await call(t.app, 'POST', `/api/v1/orders/${r.body.data.order.id}/close`, undefined, { token: u.token, key: newKey() });
  });

  it('an order open whose terms failed first and then held opens on the statement path with the same answer', async () => {
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const u = await fundedUser(t.app, '1000.00');
    const spy = vi.spyOn(OrderService.prototype as unknown as { openTerms: () => unknown }, 'openTerms')
      .mockImplementationOnce(() => { throw new DomainError('NO_QUOTE', 'There is no price for EURUSD yet'); });
    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'live' }, { token: u.token, key });
    spy.mockRestore();
    expect(r.status, r.raw).toBe(201);
    const order = await call(t.app, 'GET', `/api/v1/orders/${r.body.data.order.id}`, undefined, { token: u.token });
    const wallet = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect((await storedResponse(u.user.id, key))!.responseBody).toBe(JSON.stringify({ order: order.body.data.order, wallet: wallet.body.data.wallet }));
    await call(t.app, 'POST', `/api/v1/orders/${r.body.data.order.id}/close`, undefined, { token: u.token, key: newKey() });
  });

  it('an order close answers the bytes of the order and wallet views, with and without positions left', async () => {
    await setQuote(t, admin, 'XAUUSD', '2000.00', '2000.40');
    const u = await fundedUser(t.app, '5000.00');
    const a = await open(t, u, { symbol: 'XAUUSD', side: 'buy', volume: '0.10', takeProfit: '2100.00' }); // at 2000.40
    const b = await open(t, u, { symbol: 'XAUUSD', side: 'sell', volume: '0.05' }); // at 2000.00
    await setQuote(t, admin, 'XAUUSD', '2003.15', '2003.55');
    for (const [order, profit] of [[a, '27.50'], [b, '-17.75']] as const) { // (2003.15 − 2000.40) × 10; (2000.00 − 2003.55) × 5
      const key = newKey();
      const r = await call(t.app, 'POST', `/api/v1/orders/${order.id}/close`, undefined, { token: u.token, key });
      expect(r.status, r.raw).toBe(200);
      expect(r.body.data.order).toMatchObject({ status: 'closed', closeReason: 'user', profit, takeProfit: order.takeProfit });
      const view = await call(t.app, 'GET', `/api/v1/orders/${order.id}`, undefined, { token: u.token });
      const wallet = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
      const stored = await storedResponse(u.user.id, key);
      expect(stored!.responseBody).toBe(JSON.stringify({ order: view.body.data.order, wallet: wallet.body.data.wallet }));
      expect(JSON.stringify(r.body.data)).toBe(stored!.responseBody);
    }
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet).toMatchObject({ balance: '5009.75', margin: '0.00', realizedProfit: '9.75', marginLevel: null });
  });

  it('order_close settles a loss beyond the balance: the full loss shown, the house compensates to 0.00, the answer is the views', async () => {
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    const u = await fundedUser(t.app, '100.00');
    const o = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.05' }); // at 1.08010, margin 54.01
    // Called directly with a quote the risk engine never saw (it would have stopped the order out first).
    const key = newKey();
    const rejections = JSON.stringify({ order: [404, '{}'], not_open: [409, '{}'], no_quote: [422, '{}'] });
    const quotes = JSON.stringify([{ symbol: 'EURUSD', bid: '1.05000', ask: '1.05010' }]);
    await sql`SELECT * FROM order_close(${u.user.id}::bigint, ${key}::text, 'POST', ${`/api/v1/orders/${o.id}/close`}::text, 'h', 24,
                                        ${o.id}::bigint, 'op-gap'::text, ${quotes}::jsonb, ${rejections}::jsonb, NULL::jsonb)`.execute(t.database.db);
    const view = await call(t.app, 'GET', `/api/v1/orders/${o.id}`, undefined, { token: u.token });
    expect(view.body.data.order).toMatchObject({ status: 'closed', closePrice: '1.05000', profit: '-150.50' }); // (1.05 − 1.0801) × 5000
    const wallet = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(wallet.body.data.wallet).toMatchObject({ balance: '0.00', margin: '0.00', realizedProfit: '-150.50' });
    expect((await storedResponse(u.user.id, key))!.responseBody).toBe(JSON.stringify({ order: view.body.data.order, wallet: wallet.body.data.wallet }));
    const txs = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?limit=2', undefined, { token: u.token });
    expect(txs.body.data.items).toMatchObject([
      { type: 'negative_balance_compensation', amount: '50.50', balanceAfter: '0.00', orderId: o.id },
      { type: 'trade_loss', amount: '-150.50', balanceAfter: '-50.50', orderId: o.id },
    ]);
    const rec = await call(t.app, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin.token });
    expect(rec.body.data.ok).toBe(true);
    await t.services.trading.engine.syncNow();
  });

  it("rounds half-to-even in SQL as the views do (Decimal's toFixed), for cents and for a symbol's digits", async () => {
    const cases: [string, number][] = [['1.234565', 5], ['1.234575', 5], ['-1.234565', 5], ['-1.234575', 5], ['2.5', 0], ['3.5', 0], ['0.125', 2], ['-0.135', 2], ['7.0000051', 5]];
    for (const [x, d] of cases) {
      const { rows } = await sql<{ r: string; c: string }>`SELECT round_half_even(${x}::numeric, ${d}::int)::text AS r, round_cents_half_even(${x}::numeric)::text AS c`.execute(t.database.db);
      expect([x, rows[0]!.r]).toEqual([x, new Decimal(x).toFixed(d)]);
      expect([x, rows[0]!.c]).toEqual([x, new Decimal(x).toDecimalPlaces(2).toFixed(2)]);
    }
    const nulls = await sql<{ r: string | null; d: string | null; c: string | null }>`
      SELECT round_half_even(NULL::numeric, 2) AS r, round_half_even(1.5, NULL::int) AS d, round_cents_half_even(NULL::numeric) AS c`.execute(t.database.db);
    expect(nulls.rows[0]).toEqual({ r: null, d: null, c: null });
  });

  it('the rounding functions are inlined where the calls use them (migration 0013): no SQL-function call per transaction', async () => {
    // PostgreSQL counts a call of a function it did not inline (track_functions), in the
    // transaction's own counters; an inlined one is no call. A deposit and a close on a
    // wallet that keeps a position round its valuation, its margin level, the P&L and the
    // order's prices.
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    const u = await fundedUser(t.app, '5000.00');
    const kept = await open(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10' });
    const o = await open(t, u, { symbol: 'EURUSD', side: 'sell', volume: '0.10', stopLoss: '1.20000' });
    const quotes = JSON.stringify([{ symbol: 'EURUSD', bid: '1.08000', ask: '1.08010' }]);
    const rejections = JSON.stringify({ order: [404, '{}'], not_open: [409, '{}'], no_quote: [422, '{}'] });
    const client = await t.database.pool.connect();
    let failed: Error | undefined;
    try {
      await client.query('BEGIN');
      await client.query(`SET LOCAL track_functions = 'all'`);
      await client.query(`SELECT * FROM wallet_deposit($1::bigint, 'inline-d', 'POST', '/inline', 'h', 24, 'live', 1.00, 'deposit_gateway', 'op-inline-d', NULL, $2::jsonb)`, [u.user.id, quotes]);
      const closed = await client.query<{ response_status: number }>(`SELECT response_status FROM order_close($1::bigint, 'inline-c', 'POST', '/inline', 'h', 24, $2::bigint, 'op-inline-c', $3::jsonb, $4::jsonb, NULL)`,
        [u.user.id, o.id, quotes, rejections]);
      expect(closed.rows[0]!.response_status).toBe(200);
      const { rows } = await client.query<{ f: string; calls: string }>(`
        SELECT f, coalesce(pg_stat_get_xact_function_calls(f::regprocedure), 0)::text AS calls
        FROM unnest(ARRAY['round_half_even(numeric, integer)', 'round_cents_half_even(numeric)', 'order_settle(bigint, numeric, text, text)']) AS f`);
      // order_settle (PL/pgSQL, never inlined) shows that the counters count.
      expect(Object.fromEntries(rows.map((r) => [r.f, r.calls]))).toEqual({
        'round_half_even(numeric, integer)': '0', 'round_cents_half_even(numeric)': '0', 'order_settle(bigint, numeric, text, text)': '1',
      });
    } catch (err) {
      failed = err as Error;
      throw err;
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release(failed);
    }
    expect(kept.status).toBe('open');
  });

  it('renders a wallet without positions (marginLevel null) and a demo deposit the same way', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/wallets/demo/deposit', { amount: '0.01' }, { token: u.token, key });
    expect(r.status).toBe(201);
    expect(r.body.data.wallet.marginLevel).toBeNull();
    expect(r.body.data.transaction.metadata).toBeUndefined();
    expect((await storedResponse(u.user.id, key))!.responseBody).toBe(await renderedByViews(u, 'demo'));
  });

  it('a missing wallet is 404 and rolls back everything, the key included', async () => {
    const u = await registerUser(t.app);
    await sql`DELETE FROM wallets WHERE user_id = ${u.user.id} AND type = 'live'`.execute(t.database.db);
    const key = newKey();
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '10.00' }, { token: u.token, key });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('NOT_FOUND');
    expect(await storedResponse(u.user.id, key)).toBeUndefined();
    const { rows } = await sql<{ n: string }>`SELECT count(*)::text AS n FROM ledger_postings WHERE operation_id = ${r.body.operationId}`.execute(t.database.db);
    expect(rows[0]!.n).toBe('0');
  });

  it('a key reused for a different deposit is 422 and a key in progress is 409, as on the statement path', async () => {
    const u = await fundedUser(t.app, '10.00');
    const key = newKey();
    expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '1.00' }, { token: u.token, key })).status).toBe(201);
    const reused = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '2.00' }, { token: u.token, key });
    expect(reused.status).toBe(422);
    expect(reused.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');

    // Another transaction holds the key's advisory lock (a request still running).
    const busy = newKey();
    await t.database.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(hashtextextended(${`${u.user.id}:${busy}`}, 0))`.execute(trx);
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '3.00' }, { token: u.token, key: busy });
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe('IDEMPOTENCY_IN_PROGRESS');
    });
    expect(await storedResponse(u.user.id, busy)).toBeUndefined();
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet.balance).toBe('11.00');
  });
});
