import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t.close(); });

describe('wallets', () => {
  it('a new user has a live wallet of 0.00 and a demo wallet of 10000.00', async () => {
    const u = await registerUser(t.app);
    const r = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    expect(r.status).toBe(200);
    expect(r.body.data.items.map((w: any) => [w.type, w.currency, w.balance, w.margin, w.equity, w.freeMargin, w.marginLevel, w.realizedProfit]))
      .toEqual([['live', 'USD', '0.00', '0.00', '0.00', '0.00', null, '0.00'], ['demo', 'USD', '10000.00', '0.00', '10000.00', '10000.00', null, '0.00']]);
    expect(r.body.data.items[0].updatedAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  });

  it('deposit and withdraw return the transaction and the wallet', async () => {
    const u = await registerUser(t.app);
    const d = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: 100, paymentMethod: 'bank_transfer' }, { token: u.token, key: newKey() });
    expect(d.status).toBe(201);
    expect(d.body.data.transaction).toMatchObject({ type: 'deposit', amount: '100.00', balanceAfter: '100.00', operationId: d.body.operationId, metadata: { paymentMethod: 'bank_transfer' } });
    const w = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '40.5' }, { token: u.token, key: newKey() });
    expect(w.status).toBe(201);
    expect(w.body.data.transaction).toMatchObject({ type: 'withdrawal', amount: '-40.50', balanceAfter: '59.50' });
    expect(w.body.data.wallet.balance).toBe('59.50');
    const over = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '59.51' }, { token: u.token, key: newKey() });
    expect(over.status).toBe(422);
    expect(over.body.error.code).toBe('INSUFFICIENT_FUNDS');
  });

  it('transfers to another account number, with the note on both sides', async () => {
    const a = await fundedUser(t.app, '100.00');
    const b = await registerUser(t.app);
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: b.user.accountNumber, amount: '30.00', note: 'rent' }, { token: a.token, key: newKey() });
    expect(r.status).toBe(201);
    expect(r.body.data.transaction).toMatchObject({ type: 'transfer_out', amount: '-30.00', balanceAfter: '70.00', counterparty: b.user.accountNumber, note: 'rent' });
    expect(r.body.data.wallet.balance).toBe('70.00');
    const hb = await call(t.app, 'GET', '/api/v1/wallets/live/transactions', undefined, { token: b.token });
    expect(hb.body.data.items[0]).toMatchObject({ type: 'transfer_in', amount: '30.00', balanceAfter: '30.00', counterparty: a.user.accountNumber, note: 'rent', operationId: r.body.operationId });
  });

  it('refuses a transfer to oneself (400), to an unknown account (404) and beyond the balance (422)', async () => {
    const a = await fundedUser(t.app, '10.00');
    const self = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: a.user.accountNumber, amount: '1.00' }, { token: a.token, key: newKey() });
    expect([self.status, self.body.error.code]).toEqual([400, 'VALIDATION_FAILED']);
    for (const acct of ['0000000000', 'nope', "1' OR '1'='1"]) {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: acct, amount: '1.00' }, { token: a.token, key: newKey() });
      expect([r.status, r.body.error.code]).toEqual([404, 'RECIPIENT_NOT_FOUND']);
    }
    const b = await registerUser(t.app);
    const over = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: b.user.accountNumber, amount: '10.01' }, { token: a.token, key: newKey() });
    expect([over.status, over.body.error.code]).toEqual([422, 'INSUFFICIENT_FUNDS']);
    const demo = await call(t.app, 'POST', '/api/v1/wallets/demo/transfer', { toAccountNumber: b.user.accountNumber, amount: '10.01' }, { token: a.token, key: newKey() });
    expect(demo.status).toBe(201);
    const bw = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: b.token });
    expect(bw.body.data.items.map((w: any) => w.balance)).toEqual(['0.00', '10010.01']);
  });

  it('pages history newest first with a stable cursor, and filters by type and time', async () => {
    const u = await registerUser(t.app);
    for (let i = 1; i <= 7; i++) {
      await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: `${i}.00` }, { token: u.token, key: newKey() });
    }
    await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '1.00' }, { token: u.token, key: newKey() });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r: any = await call(t.app, 'GET', `/api/v1/wallets/live/transactions?limit=3${cursor ? `&cursor=${cursor}` : ''}`, undefined, { token: u.token });
      expect(r.status).toBe(200);
      expect(r.body.data.items.length).toBeLessThanOrEqual(3);
      seen.push(...r.body.data.items.map((i: any) => i.amount));
      cursor = r.body.data.nextCursor;
    } while (cursor);
    expect(seen).toEqual(['-1.00', '7.00', '6.00', '5.00', '4.00', '3.00', '2.00', '1.00']);
    const deposits = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?type=deposit&limit=200', undefined, { token: u.token });
    expect(deposits.body.data.items).toHaveLength(7);
    const future = await call(t.app, 'GET', `/api/v1/wallets/live/transactions?from=${new Date(Date.now() + 60_000).toISOString()}`, undefined, { token: u.token });
    expect(future.body.data.items).toEqual([]);
    const past = await call(t.app, 'GET', `/api/v1/wallets/live/transactions?to=2000-01-01T00:00:00.000Z`, undefined, { token: u.token });
    expect(past.body.data).toEqual({ items: [], nextCursor: null });
    for (const q of ['limit=0', 'limit=201', 'limit=abc', 'type=bogus', 'from=yesterday', 'cursor=%%%']) {
      const r = await call(t.app, 'GET', `/api/v1/wallets/live/transactions?${q}`, undefined, { token: u.token });
      expect([q, r.status, r.body.error.code]).toEqual([q, 400, 'VALIDATION_FAILED']);
    }
  });

  it('bad input never changes anything', async () => {
    const u = await fundedUser(t.app, '100.00');
    const b = await registerUser(t.app);
    const bad: unknown[] = ['-5', '0', '0.00', 'abc', '1.001', '1000000000.01', '1e309', ' 5', '5 ', '0x10', '+5', '', null, [], {}, true, ['5']];
    const raws = ['{"amount": -5}', '{"amount": 0}', '{"amount": 1e309}', '{"amount": 1.001}', '{"amount": 1000000000.01}', `{"amount": "${'9'.repeat(5000)}"}`, '[]', '"5"', 'null', '5'];
    const routes: [string, (a: unknown) => Record<string, unknown>][] = [
      ['/api/v1/wallets/live/deposit', (a) => ({ amount: a })],
      ['/api/v1/wallets/live/withdraw', (a) => ({ amount: a })],
      ['/api/v1/wallets/live/transfer', (a) => ({ amount: a, toAccountNumber: b.user.accountNumber })],
    ];
    for (const [path, body] of routes) {
      for (const a of bad) {
        const r = await call(t.app, 'POST', path, body(a), { token: u.token, key: newKey() });
        expect([path, a, r.status, r.body.error.code]).toEqual([path, a, 400, 'VALIDATION_FAILED']);
      }
      for (const raw of raws) {
        const r = await call(t.app, 'POST', path, undefined, { token: u.token, key: newKey(), raw });
        expect([path, raw.slice(0, 40), r.status]).toEqual([path, raw.slice(0, 40), 400]);
      }
      const extra = await call(t.app, 'POST', path, { ...body('1.00'), userId: '1' }, { token: u.token, key: newKey() });
      expect([path, extra.status, extra.body.error.details[0].message]).toEqual([path, 400, 'unknown property']);
      const none = await call(t.app, 'POST', path, undefined, { token: u.token, key: newKey() });
      expect(none.status).toBe(400);
    }
    const long = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { amount: '1.00', toAccountNumber: b.user.accountNumber, note: 'x'.repeat(201) }, { token: u.token, key: newKey() });
    expect(long.status).toBe(400);
    const w = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    expect(w.body.data.items.map((x: any) => x.balance)).toEqual(['100.00', '10000.00']);
    const keys = await sql<{ n: string }>`SELECT count(*) AS n FROM idempotency_keys WHERE user_id = ${u.user.id}`.execute(t.database.db);
    expect(keys.rows[0]!.n).toBe('1');
  });

  it('a user only ever sees their own wallets', async () => {
    const a = await fundedUser(t.app, '42.00');
    const b = await registerUser(t.app);
    const r = await call(t.app, 'GET', '/api/v1/wallets/live/transactions', undefined, { token: b.token });
    expect(r.body.data.items).toEqual([]);
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: b.token });
    expect(w.body.data.wallet.balance).toBe('0.00');
    expect(a.user.id).not.toBe(b.user.id);
  });
});
