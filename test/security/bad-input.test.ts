import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, startTestApp, type TestApp } from '../helpers/app.js';
import { makeAdmin, open, setQuote, type User } from '../trading/helpers.js';

/**
 * The bad-input matrix over every money and trading endpoint: each value is refused
 * with 400 (413 / 415 for size and content type) and nothing is written.
 */
let t: TestApp;
let admin: User;
let trader: Awaited<ReturnType<typeof fundedUser>>;
let orderId: string;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
  await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
  trader = await fundedUser(t.app, '5000.00');
  orderId = (await open(t, trader, { symbol: 'EURUSD', side: 'buy', volume: '0.10' })).id;
});
afterAll(async () => { await t.close(); });

const BAD_DECIMALS: unknown[] = [
  '-5', '0', '-0', 'abc', '1.000001', '1e3', ' 5', '5 ', '0x10', '+5', '', null, [], {}, true, ['5'],
  '1'.repeat(5000), '9007199254740993.001',
];
const BAD_RAW = ['1e3', '-0', '1.1000000000000001', '9007199254740993.5', '1e309', '-1'];

interface Target {
  name: string;
  method: 'POST' | 'PATCH';
  url: () => string;
  token: () => string;
  body: (field: unknown) => Record<string, unknown>;
  rawBody: (numberText: string) => string;
}

const targets: Target[] = [
  { name: 'deposit', method: 'POST', url: () => '/api/v1/wallets/live/deposit', token: () => trader.token, body: (v) => ({ amount: v }), rawBody: (n) => `{"amount": ${n}}` },
  { name: 'withdraw', method: 'POST', url: () => '/api/v1/wallets/live/withdraw', token: () => trader.token, body: (v) => ({ amount: v }), rawBody: (n) => `{"amount": ${n}}` },
  { name: 'transfer', method: 'POST', url: () => '/api/v1/wallets/live/transfer', token: () => trader.token, body: (v) => ({ amount: v, toAccountNumber: admin.user.accountNumber }), rawBody: (n) => `{"amount": ${n}, "toAccountNumber": "${admin.user.accountNumber}"}` },
  { name: 'order volume', method: 'POST', url: () => '/api/v1/orders', token: () => trader.token, body: (v) => ({ symbol: 'EURUSD', side: 'buy', volume: v, walletType: 'live' }), rawBody: (n) => `{"symbol":"EURUSD","side":"buy","walletType":"live","volume": ${n}}` },
  { name: 'order stopLoss', method: 'POST', url: () => '/api/v1/orders', token: () => trader.token, body: (v) => ({ symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'live', stopLoss: v === null ? 'x' : v }), rawBody: (n) => `{"symbol":"EURUSD","side":"buy","walletType":"live","volume":"0.01","stopLoss": ${n}}` },
  { name: 'modify takeProfit', method: 'PATCH', url: () => `/api/v1/orders/${orderId}`, token: () => trader.token, body: (v) => ({ takeProfit: v === null ? 'x' : v }), rawBody: (n) => `{"takeProfit": ${n}}` },
  { name: 'adjustment', method: 'POST', url: () => '/api/v1/admin/adjustments', token: () => admin.token, body: (v) => ({ userId: trader.user.id, walletType: 'live', amount: v === '-5' ? '--5' : v, reason: 'test' }), rawBody: (n) => `{"userId":"${trader.user.id}","walletType":"live","reason":"test","amount": ${n === '-1' ? '"--1"' : n}}` },
];

async function snapshot() {
  const r = await sql<{ n: string; s: string }>`SELECT (SELECT count(*) FROM ledger_postings) || '/' || (SELECT count(*) FROM orders) || '/' || (SELECT count(*) FROM idempotency_keys) AS n, (SELECT string_agg(balance::text || ':' || margin::text, ',' ORDER BY id) FROM wallets) AS s`.execute(t.database.db);
  return r.rows[0];
}

describe('bad input on every money and trading endpoint', () => {
  it('is refused with 400 and writes nothing', async () => {
    const before = await snapshot();
    for (const target of targets) {
      const send = (body: unknown, raw?: string, extra: Partial<{ contentType: string }> = {}) =>
        call(t.app, target.method, target.url(), body, { token: target.token(), key: newKey(), raw, ...extra });
      for (const v of BAD_DECIMALS) {
        const r = await send(target.body(v));
        expect([target.name, v, r.status, r.body?.error?.code]).toEqual([target.name, v, 400, 'VALIDATION_FAILED']);
      }
      for (const n of BAD_RAW) {
        const r = await send(undefined, target.rawBody(n));
        expect([target.name, n, r.status]).toEqual([target.name, n, 400]);
      }
      const cases: [string, string, number][] = [
        ['unknown property', JSON.stringify({ ...target.body('1.00'), hacker: true }), 400],
        ['__proto__ key', `{"__proto__": {"admin": true}, ${JSON.stringify(target.body('1.00')).slice(1)}`, 400],
        ['constructor key', `{"constructor": {"prototype": {}}, ${JSON.stringify(target.body('1.00')).slice(1)}`, 400],
        ['duplicate key', `${JSON.stringify(target.body('1.00')).slice(0, -1)}, ${JSON.stringify(target.body('2.00')).slice(1)}`, 400],
        ['malformed JSON', '{"amount": ', 400],
        ['array body', '[1, 2]', 400],
        ['10 MB body', JSON.stringify({ ...target.body('1.00'), pad: 'x'.repeat(10 * 1024 * 1024) }), 413],
      ];
      for (const [what, raw, status] of cases) {
        const r = await send(undefined, raw);
        expect([target.name, what, r.status]).toEqual([target.name, what, status]);
      }
      const wrongType = await send(undefined, 'amount=5', { contentType: 'application/x-www-form-urlencoded' });
      expect([target.name, wrongType.status]).toEqual([target.name, 415]);
      const longString = await send({ ...target.body('1.00'), note: 'n'.repeat(60_000) });
      expect([target.name, 'very long string', longString.status]).toEqual([target.name, 'very long string', 400]);
    }
    expect(await snapshot()).toEqual(before);
  });
});
