/**
 * A referred user's close pays the referral commissions in the close's own round trip:
 * `order_close` and `referral_commissions_pay` (migration 0010) in one transaction. The
 * commissions are paid exactly once, posted as a balanced entry each, recorded, and
 * logged; a replayed or rejected close pays nothing; a demo close pays nothing.
 */
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';
import { roundTrips } from '../helpers/round-trips.js';
import { listenTo } from '../helpers/db.js';
import { WALLET_CHANNEL } from '../../src/modules/trading/trading.repository.js';
import { close, expectReconciled, getOrder, makeAdmin, open, setQuote, wallet, type User } from '../trading/helpers.js';

const lines: Record<string, unknown>[] = [];
let t: TestApp;
let admin: User;
beforeAll(async () => {
  t = await startTestApp({}, undefined, { logLines: lines });
  admin = await makeAdmin(t);
  await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
});
afterAll(async () => { await t.close(); });

async function referredUser() {
  const a = await registerUser(t.app);
  const b = await registerUser(t.app, { referralCode: a.user.referralCode });
  const c = await registerUser(t.app, { referralCode: b.user.referralCode });
  const d = await registerUser(t.app, { referralCode: c.user.referralCode });
  for (const [u, type] of [[d, 'live'], [d, 'demo']] as const) {
    const r = await call(t.app, 'POST', `/api/v1/wallets/${type}/deposit`, { amount: '5000.00' }, { token: u.token, key: newKey() });
    expect(r.status).toBe(201);
  }
  return { a, b, c, d };
}

const balances = async (users: User[]) => Promise.all(users.map(async (u) => (await wallet(t, u)).balance));

describe("a referred user's close", () => {
  it('pays levels 1 to 3 in the one round trip of the close: balanced entries, recorded, logged, once', async () => {
    const { a, b, c, d } = await referredUser();
    const referrers = [c, b, a];
    const before = await balances(referrers); // c holds the 25.00 signup bonus of d's first deposit
    expect(before).toEqual(['25.00', '0.00', '0.00']);
    const order = await open(t, d, { symbol: 'EURUSD', side: 'buy', volume: '1.50' });
    const key = newKey();
    let answer = '';
    const trips = await roundTrips(async () => {
      const r = await close(t, d, order.id, key);
      expect(r.status, r.raw).toBe(200);
      answer = r.raw;
    });
    expect(trips.count, trips.texts.map((x) => x.slice(0, 80)).join(' | ')).toBe(1);
    expect(trips.texts[0]).toMatch(/^(PREPARE[\s\S]*)?BEGIN;[\s\S]*EXECUTE s_[0-9a-f]{20}\([\s\S]*\); EXECUTE s_[0-9a-f]{20}\([\s\S]*\); COMMIT$/);
    // 1.50 lots × 5.00 / 2.00 / 1.00 (the default rates)
    expect(await balances(referrers)).toEqual(['32.50', '3.00', '1.50']);

    const op = JSON.parse(answer).operationId as string;
    const postings = await sql<{ walletUser: string | null; houseAccount: string | null; type: string; amount: string; balanceAfter: string | null; orderId: string; metadata: unknown; entryId: string }>`
      SELECT w.user_id AS wallet_user, p.house_account, p.type, p.amount, p.balance_after, p.order_id, p.metadata, p.entry_id
      FROM ledger_postings p LEFT JOIN wallets w ON w.id = p.wallet_id
      WHERE p.operation_id = ${op} AND p.type = 'referral_commission' ORDER BY p.id`.execute(t.database.db);
    expect(postings.rows).toEqual([
      ['1', c, '7.50', '32.50'], ['2', b, '3.00', '3.00'], ['3', a, '1.50', '1.50'],
    ].flatMap(([level, u, amount, after]) => {
      const metadata = { level: Number(level), refereeId: d.user.id, orderId: order.id };
      return [
        { walletUser: (u as User).user.id, houseAccount: null, type: 'referral_commission', amount, balanceAfter: after, orderId: order.id, metadata, entryId: expect.any(String) },
        { walletUser: null, houseAccount: 'referral_commissions', type: 'referral_commission', amount: `-${amount as string}`, balanceAfter: null, orderId: order.id, metadata, entryId: expect.any(String) },
      ];
    }));
    for (let i = 0; i < 6; i += 2) expect(postings.rows[i]!.entryId).toBe(postings.rows[i + 1]!.entryId); // one entry per commission
    const recorded = await sql<{ level: number; referrerId: string; amount: string }>`
      SELECT c.level, c.referrer_id, c.amount FROM referral_commissions c
      JOIN ledger_postings p ON p.id = c.posting_id AND p.type = 'referral_commission' AND p.wallet_id IS NOT NULL
      WHERE c.order_id = ${order.id} AND c.operation_id = ${op} AND c.referee_id = ${d.user.id} ORDER BY c.level`.execute(t.database.db);
    expect(recorded.rows).toEqual([
      { level: 1, referrerId: c.user.id, amount: '7.50' }, { level: 2, referrerId: b.user.id, amount: '3.00' }, { level: 3, referrerId: a.user.id, amount: '1.50' },
    ]);
    // The seed's logger.financial line of each credit, after the commit.
    const logged = lines.filter((l) => l.operationId === op && l.msg === 'financial referral_commission');
    expect(logged.map((l) => [l.userId, l.amount, l.oldBalance, l.newBalance, (l.metadata as { level: number }).level])).toEqual([
      [c.user.id, '7.5', '25.00', '32.50', 1], [b.user.id, '3', '0.00', '3.00', 2], [a.user.id, '1.5', '0.00', '1.50', 3],
    ]);
    expect(logged.every((l) => typeof l.postingId === 'string')).toBe(true);

    // The function itself, sent again for the same close: nothing (no unique violation either).
    const twice = await sql`SELECT * FROM referral_commissions_pay(${order.id}::bigint, ${op}::text, ${JSON.stringify([[c.user.id, '5.00']])}::jsonb)`.execute(t.database.db);
    expect(twice.rows).toEqual([]);
    // The same key again: the stored answer, nothing paid again.
    const replay = await close(t, d, order.id, key);
    expect(replay.status).toBe(200);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.data).toEqual(JSON.parse(answer).data);
    // A new key for the closed order: the stored rejection, nothing paid.
    const again = await roundTrips(async () => {
      const r = await close(t, d, order.id);
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe('ORDER_NOT_OPEN');
    });
    expect(again.count).toBe(1);
    expect(await balances(referrers)).toEqual(['32.50', '3.00', '1.50']);
    const count = await sql<{ n: string }>`SELECT count(*)::text AS n FROM referral_commissions WHERE order_id = ${order.id}`.execute(t.database.db);
    expect(count.rows[0]!.n).toBe('3');
    await expectReconciled(t, admin);
  });

  it('of a demo order pays nothing, in one round trip too', async () => {
    const { a, b, c, d } = await referredUser();
    const order = await open(t, d, { symbol: 'EURUSD', side: 'sell', volume: '1.00', walletType: 'demo' });
    const trips = await roundTrips(async () => {
      const r = await close(t, d, order.id);
      expect(r.status, r.raw).toBe(200);
    });
    expect(trips.count).toBe(1);
    expect(await balances([c, b, a])).toEqual(['25.00', '0.00', '0.00']);
    const count = await sql<{ n: string }>`SELECT count(*)::text AS n FROM referral_commissions WHERE order_id = ${order.id}`.execute(t.database.db);
    expect(count.rows[0]!.n).toBe('0');
  });

  it('closed by the risk engine (stop-loss), with a chain nobody had read yet, pays the same commissions under the close\'s operation', async () => {
    const a = await registerUser(t.app);
    const b = await registerUser(t.app, { referralCode: a.user.referralCode });
    const c = await registerUser(t.app, { referralCode: b.user.referralCode });
    const e = await registerUser(t.app, { referralCode: c.user.referralCode });
    // Below the qualifying amount: no bonus, and nothing has read e's chain yet.
    expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '99.00' }, { token: e.token, key: newKey() })).status).toBe(201);
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    const order = await open(t, e, { symbol: 'EURUSD', side: 'buy', volume: '0.05', stopLoss: '1.07990' });
    // The admin quote answers once the closes it triggered are committed.
    expect((await setQuote(t, admin, 'EURUSD', '1.07980', '1.07990')).triggered).toBe(1);
    expect(await getOrder(t, e, order.id)).toMatchObject({ status: 'closed', closeReason: 'stop_loss' });
    // 0.05 lots × 5.00 / 2.00 / 1.00
    expect(await balances([c, b, a])).toEqual(['0.25', '0.10', '0.05']);
    const rows = await sql<{ level: number; amount: string; same: boolean }>`
      SELECT c.level, c.amount, c.operation_id = o.close_operation_id AS same
      FROM referral_commissions c JOIN orders o ON o.id = c.order_id WHERE c.order_id = ${order.id} ORDER BY c.level`.execute(t.database.db);
    expect(rows.rows).toEqual([{ level: 1, amount: '0.25', same: true }, { level: 2, amount: '0.10', same: true }, { level: 3, amount: '0.05', same: true }]);
    expect(lines.filter((l) => l.msg === 'financial referral_commission' && (l.metadata as { orderId?: string }).orderId === order.id)).toHaveLength(3);
    await setQuote(t, admin, 'EURUSD', '1.08000', '1.08010');
    await expectReconciled(t, admin);
  });

  it("tells the risk engine of a referrer's wallet with positions that a bonus or a commission credited it", async () => {
    const b = await registerUser(t.app);
    const c = await registerUser(t.app, { referralCode: b.user.referralCode });
    const d = await registerUser(t.app, { referralCode: c.user.referralCode });
    // c trades: its wallet has positions.
    expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '99.00' }, { token: c.token, key: newKey() })).status).toBe(201);
    await open(t, c, { symbol: 'EURUSD', side: 'buy', volume: '0.01' });
    const walletOf = async (u: User) => (await t.database.db.selectFrom('wallets').select('id').where('userId', '=', u.user.id).where('type', '=', 'live').executeTakeFirstOrThrow()).id;
    const cWallet = await walletOf(c);
    const listener = await listenTo(t.url, WALLET_CHANNEL);
    try {
      // d's first qualifying deposit: c, its referrer, gets the 25.00 bonus (d's own wallet has no positions: no notice).
      expect((await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '5000.00' }, { token: d.token, key: newKey() })).status).toBe(201);
      await expect.poll(() => listener.notices).toEqual([cWallet]);
      // d's close: c gets a level-1 commission; b a level-2 one (no positions: no notice).
      const order = await open(t, d, { symbol: 'EURUSD', side: 'sell', volume: '1.00' });
      expect((await close(t, d, order.id)).status).toBe(200);
      await expect.poll(() => listener.notices).toEqual([cWallet, cWallet]);
    } finally {
      await listener.end();
    }
  });
});
