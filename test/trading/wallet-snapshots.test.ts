/**
 * walletSnapshots, the risk engine's re-read of wallets it is told changed: balance,
 * margin and open orders of each wallet from one statement, oldest order first; wallets
 * without open orders come with none, closed orders are left out, unknown ids are absent.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fundedUser, startTestApp, type TestApp } from '../helpers/app.js';
import { walletSnapshots } from '../../src/modules/trading/trading.repository.js';
import { close, makeAdmin, open, setQuote } from './helpers.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
  const admin = await makeAdmin(t);
  await setQuote(t, admin, 'EURUSD', '1.10000', '1.10000');
});
afterAll(async () => { await t?.close(); });

const walletOf = async (userId: string, type: 'live' | 'demo') =>
  t.database.db.selectFrom('wallets').select(['id', 'balance', 'margin']).where('userId', '=', userId).where('type', '=', type).executeTakeFirstOrThrow();

describe('walletSnapshots', () => {
  it('returns each wallet once with its balance, margin and open orders, oldest first', async () => {
    const a = await fundedUser(t.app, '1000.00');
    const b = await fundedUser(t.app, '500.00');
    const first = await open(t, a, { symbol: 'EURUSD', side: 'buy', volume: '0.01', leverage: 100 });
    const second = await open(t, a, { symbol: 'EURUSD', side: 'sell', volume: '0.02', leverage: 100, stopLoss: '1.20000' });
    const closed = await open(t, a, { symbol: 'EURUSD', side: 'buy', volume: '0.01', leverage: 100 });
    expect((await close(t, a, closed.id)).status).toBe(200);
    const wa = await walletOf(a.user.id, 'live');
    const wb = await walletOf(b.user.id, 'live');

    const snaps = await walletSnapshots(t.database.db, [wb.id, wa.id, '999999999']);
    expect(snaps.map((s) => s.id).sort()).toEqual([wa.id, wb.id].sort());
    const sa = snaps.find((s) => s.id === wa.id)!;
    const sb = snaps.find((s) => s.id === wb.id)!;
    expect(sa).toMatchObject({ userId: a.user.id, type: 'live', balance: wa.balance, margin: wa.margin });
    expect(sa.margin).toBe('33.00'); // 11.00 + 22.00: the closed order's margin is released
    expect(sa.orders.map((o) => o.id)).toEqual([first.id, second.id]);
    expect(sa.orders[1]).toMatchObject({ walletId: wa.id, side: 'sell', volume: '0.02', stopLoss: '1.2', takeProfit: null, margin: '22.00' });
    expect(sb).toEqual({ id: wb.id, userId: b.user.id, type: 'live', balance: '500.00', margin: '0.00', orders: [] });
    expect(await walletSnapshots(t.database.db, [])).toEqual([]);
    for (const o of [first, second]) expect((await close(t, a, o.id)).status).toBe(200);
  });
});
