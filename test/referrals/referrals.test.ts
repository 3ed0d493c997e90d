import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';
import { close, expectReconciled, makeAdmin, open, setQuote, wallet, type User } from '../trading/helpers.js';

let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp();
  admin = await makeAdmin(t);
  await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
});
afterAll(async () => { await t.close(); });

const deposit = (u: { token: string }, amount: string, type = 'live', key = newKey()) =>
  call(t.app, 'POST', `/api/v1/wallets/${type}/deposit`, { amount }, { token: u.token, key });
const stats = async (u: { token: string }) => (await call(t.app, 'GET', '/api/v1/referrals/stats', undefined, { token: u.token })).body.data;
const commissions = async (u: { token: string }) => (await call(t.app, 'GET', '/api/v1/referrals/commissions', undefined, { token: u.token })).body.data.items;
const history = async (u: { token: string }, type: string) =>
  (await call(t.app, 'GET', `/api/v1/wallets/live/transactions?type=${type}`, undefined, { token: u.token })).body.data.items;

async function chain() {
  const a = await registerUser(t.app);
  const b = await registerUser(t.app, { referralCode: a.user.referralCode });
  const c = await registerUser(t.app, { referralCode: b.user.referralCode });
  return { a, b, c };
}

describe('referrals', () => {
  it('the three-level example: bonus on the first qualifying deposit, commissions on live closes only', async () => {
    const { a, b, c } = await chain();
    expect((await deposit(c, '99.99')).status).toBe(201); // below the qualifying amount: neither pays nor forfeits
    expect((await wallet(t, b)).balance).toBe('0.00');
    const first = await deposit(c, '100.00');
    expect(first.status).toBe(201);
    expect(first.body.data.wallet.balance).toBe('209.99'); // 99.99 + 100.00 + 10.00 bonus
    expect((await wallet(t, b)).balance).toBe('25.00');
    expect((await wallet(t, a)).balance).toBe('0.00');
    await deposit(c, '10000.00');
    expect((await wallet(t, b)).balance).toBe('25.00');
    expect((await wallet(t, c)).balance).toBe('10209.99');
    expect(await history(c, 'referral_bonus')).toEqual([expect.objectContaining({ type: 'referral_bonus', amount: '10.00' })]);

    const order = await open(t, c, { symbol: 'EURUSD', side: 'buy', volume: '2.00', leverage: 100 });
    expect((await close(t, c, order.id)).status).toBe(200);
    expect((await wallet(t, b)).balance).toBe('35.00');
    expect((await wallet(t, a)).balance).toBe('4.00');
    expect(await history(b, 'referral_commission')).toEqual([expect.objectContaining({ amount: '10.00', orderId: order.id })]);

    const demo = await open(t, c, { symbol: 'EURUSD', side: 'buy', volume: '2.00', walletType: 'demo' });
    expect((await close(t, c, demo.id)).status).toBe(200);
    expect((await wallet(t, b)).balance).toBe('35.00');
    expect((await wallet(t, a)).balance).toBe('4.00');

    expect(await stats(a)).toEqual({
      referralCode: a.user.referralCode,
      referees: { level1: 1, level2: 1, level3: 0 },
      commissions: { total: '4.00', level1: '0.00', level2: '4.00', level3: '0.00' },
      bonuses: { total: '0.00' },
    });
    expect(await stats(b)).toEqual({
      referralCode: b.user.referralCode,
      referees: { level1: 1, level2: 0, level3: 0 },
      commissions: { total: '10.00', level1: '10.00', level2: '0.00', level3: '0.00' },
      bonuses: { total: '25.00' },
    });
    expect((await stats(c)).bonuses.total).toBe('10.00');
    expect(await commissions(a)).toEqual([{ id: expect.any(String), level: 2, amount: '4.00', refereeAccountNumber: c.user.accountNumber, orderId: order.id, createdAt: expect.any(String) }]);
    await expectReconciled(t, admin);
  });

  it('pays level 3 and nothing beyond', async () => {
    const { a, b, c } = await chain();
    const d = await registerUser(t.app, { referralCode: c.user.referralCode });
    const e = await registerUser(t.app, { referralCode: d.user.referralCode });
    await deposit(e, '5000.00');
    const order = await open(t, e, { symbol: 'EURUSD', side: 'sell', volume: '1.50' });
    expect((await close(t, e, order.id)).status).toBe(200);
    expect((await wallet(t, d)).balance).toBe('32.50'); // 25.00 bonus + 1.50 × 5.00
    expect((await wallet(t, c)).balance).toBe('3.00'); // 1.50 × 2.00
    expect((await wallet(t, b)).balance).toBe('1.50'); // 1.50 × 1.00
    expect((await wallet(t, a)).balance).toBe('0.00');
    expect((await stats(b)).referees).toEqual({ level1: 1, level2: 1, level3: 1 });
    await expectReconciled(t, admin);
  });

  it('two simultaneous first deposits of one referee pay one bonus pair', async () => {
    const { b, c } = await chain();
    const results = await Promise.all([deposit(c, '150.00'), deposit(c, '150.00'), deposit(c, '200.00')]);
    expect(results.map((r) => r.status)).toEqual([201, 201, 201]);
    expect((await wallet(t, b)).balance).toBe('25.00');
    expect((await wallet(t, c)).balance).toBe('510.00');
    const n = await sql<{ n: string }>`SELECT count(*) AS n FROM referral_bonuses WHERE referee_id = ${c.user.id}`.execute(t.database.db);
    expect(n.rows[0]!.n).toBe('1');
    await expectReconciled(t, admin);
  });

  it('a close triggered by stop-out pays the commission once', async () => {
    const { a, b, c } = await chain();
    await deposit(c, '100.00'); // 110.00 with the bonus
    const order = await open(t, c, { symbol: 'EURUSD', side: 'buy', volume: '0.10', leverage: 100 });
    const q = await setQuote(t, admin, 'EURUSD', '1.07400', '1.07410');
    expect(q.triggered).toBeGreaterThanOrEqual(1);
    const closed = (await call(t.app, 'GET', `/api/v1/orders/${order.id}`, undefined, { token: c.token })).body.data.order;
    expect(closed.closeReason).toBe('stop_out');
    expect(await commissions(b)).toEqual([expect.objectContaining({ level: 1, amount: '0.50', orderId: order.id })]);
    expect(await commissions(a)).toEqual([expect.objectContaining({ level: 2, amount: '0.20', orderId: order.id })]);
    expect((await close(t, c, order.id)).status).toBe(409);
    expect(await commissions(b)).toHaveLength(1);
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    await expectReconciled(t, admin);
  });

  it('an invalid code is 422 and creates no user', async () => {
    const r = await call(t.app, 'POST', '/api/v1/auth/register', { email: 'nobody-referred@example.com', password: 'long enough pw', referralCode: 'ZZZZZZZZ' });
    expect([r.status, r.body.error.code]).toEqual([422, 'INVALID_REFERRAL_CODE']);
    const n = await sql<{ n: string }>`SELECT count(*) AS n FROM users WHERE email = 'nobody-referred@example.com'`.execute(t.database.db);
    expect(n.rows[0]!.n).toBe('0');
  });
});
