import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
let admin: Awaited<ReturnType<typeof registerUser>>;
beforeAll(async () => {
  t = await startTestApp();
  admin = await registerUser(t.app);
  await sql`UPDATE users SET role = 'admin' WHERE id = ${admin.user.id}`.execute(t.database.db);
  t.services.userCache.invalidate(admin.user.id);
});
afterAll(async () => { await t.close(); });

const adjust = (body: unknown, key = newKey(), token = admin.token) => call(t.app, 'POST', '/api/v1/admin/adjustments', body, { token, key });

describe('admin', () => {
  it('non-admins get 403 FORBIDDEN on every admin route; no token is 401', async () => {
    const u = await registerUser(t.app);
    for (const [m, url] of [['GET', '/api/v1/admin/users'], ['GET', `/api/v1/admin/users/${u.user.id}`], ['POST', `/api/v1/admin/users/${u.user.id}/block`], ['GET', '/api/v1/admin/audit'], ['GET', '/api/v1/admin/reconciliation'], ['POST', '/api/v1/admin/adjustments']] as const) {
      const r = await call(t.app, m, url, undefined, { token: u.token, key: newKey() });
      expect([url, r.status, r.body.error.code]).toEqual([url, 403, 'FORBIDDEN']);
      const anon = await call(t.app, m, url);
      expect([url, anon.status]).toEqual([url, 401]);
    }
  });

  it('adjusts a wallet up and down, never below 0.00, idempotently, and audits it', async () => {
    const u = await fundedUser(t.app, '10.00');
    const key = newKey();
    const up = await adjust({ userId: u.user.id, walletType: 'live', amount: '5.25', reason: 'goodwill' }, key);
    expect(up.status).toBe(201);
    expect(up.body.data.transaction).toMatchObject({ type: 'adjustment', amount: '5.25', balanceAfter: '15.25', note: 'goodwill' });
    expect(up.body.data.wallet.balance).toBe('15.25');
    const replay = await adjust({ userId: u.user.id, walletType: 'live', amount: '5.25', reason: 'goodwill' }, key);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    const down = await adjust({ userId: u.user.id, walletType: 'live', amount: '-15.25', reason: 'chargeback' });
    expect(down.body.data.wallet.balance).toBe('0.00');
    const below = await adjust({ userId: u.user.id, walletType: 'live', amount: '-0.01', reason: 'too far' });
    expect([below.status, below.body.error.code]).toEqual([422, 'INSUFFICIENT_FUNDS']);
    for (const amount of ['0', '-0', '0.00', '--1', '1.234', '-', '']) {
      const r = await adjust({ userId: u.user.id, walletType: 'live', amount, reason: 'bad' });
      expect([amount, r.status]).toEqual([amount, 400]);
    }
    const missing = await adjust({ userId: '999999', walletType: 'live', amount: '1.00', reason: 'ghost' });
    expect([missing.status, missing.body.error.code]).toEqual([404, 'NOT_FOUND']);
    const audit = await call(t.app, 'GET', '/api/v1/admin/audit?limit=200', undefined, { token: admin.token });
    const mine = audit.body.data.items.filter((a: any) => a.targetUserId === u.user.id);
    expect(mine.map((a: any) => [a.action, a.details.amount])).toEqual([['adjustment', '-15.25'], ['adjustment', '5.25']]);
    expect(mine[0]).toMatchObject({ actorId: admin.user.id, createdAt: expect.any(String), id: expect.any(String) });
  });

  it('searches users by email or account number and shows one with wallets', async () => {
    const u = await fundedUser(t.app, '3.00');
    const byEmail = await call(t.app, 'GET', `/api/v1/admin/users?search=${encodeURIComponent(u.email.slice(0, 12).toUpperCase())}`, undefined, { token: admin.token });
    expect(byEmail.body.data.items.map((x: any) => x.id)).toContain(u.user.id);
    const byAccount = await call(t.app, 'GET', `/api/v1/admin/users?search=${u.user.accountNumber}`, undefined, { token: admin.token });
    expect(byAccount.body.data.items).toEqual([{ ...u.user, blocked: false }]);
    const one = await call(t.app, 'GET', `/api/v1/admin/users/${u.user.id}`, undefined, { token: admin.token });
    expect(one.body.data.user).toEqual({ ...u.user, blocked: false });
    expect(one.body.data.wallets.map((w: any) => [w.type, w.balance])).toEqual([['live', '3.00'], ['demo', '10000.00']]);
    expect((await call(t.app, 'GET', '/api/v1/admin/users/999999', undefined, { token: admin.token })).status).toBe(404);
    expect((await call(t.app, 'GET', '/api/v1/admin/users/abc', undefined, { token: admin.token })).status).toBe(404);
  });

  it('blocks and unblocks a user', async () => {
    const u = await registerUser(t.app);
    const b = await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/block`, undefined, { token: admin.token });
    expect(b.body.data.user.blocked).toBe(true);
    expect((await call(t.app, 'GET', '/api/v1/me', undefined, { token: u.token })).status).toBe(403);
    const ub = await call(t.app, 'POST', `/api/v1/admin/users/${u.user.id}/unblock`, {}, { token: admin.token });
    expect(ub.body.data.user.blocked).toBe(false);
    expect((await call(t.app, 'GET', '/api/v1/me', undefined, { token: u.token })).status).toBe(200);
    const audit = await call(t.app, 'GET', '/api/v1/admin/audit', undefined, { token: admin.token });
    expect(audit.body.data.items.slice(0, 2).map((a: any) => [a.action, a.targetUserId])).toEqual([['unblock', u.user.id], ['block', u.user.id]]);
  });

  it('reconciliation is ok, and finds a wallet that does not match its postings', async () => {
    const ok = await call(t.app, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin.token });
    expect(ok.body.data).toMatchObject({ ok: true, mismatches: [], books: { live: { sum: '0.00' }, demo: { sum: '0.00' } } });
    expect(ok.body.data.checkedWallets).toBeGreaterThan(4);
    const u = await fundedUser(t.app, '10.00');
    await sql`UPDATE wallets SET balance = balance + 1 WHERE user_id = ${u.user.id} AND type = 'live'`.execute(t.database.db);
    const bad = await call(t.app, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin.token });
    expect(bad.body.data.ok).toBe(false);
    expect(bad.body.data.mismatches).toEqual([expect.objectContaining({ userId: u.user.id, walletType: 'live', field: 'balance', expected: '10.00', actual: '11.00' })]);
    await sql`UPDATE wallets SET balance = balance - 1 WHERE user_id = ${u.user.id} AND type = 'live'`.execute(t.database.db);
  });

  it('the ledger is append-only', async () => {
    await expect(sql`UPDATE ledger_postings SET amount = amount + 1`.execute(t.database.db)).rejects.toMatchObject({ code: '23001' });
    await expect(sql`DELETE FROM ledger_postings`.execute(t.database.db)).rejects.toMatchObject({ code: '23001' });
    await expect(sql`UPDATE wallets SET balance = -1`.execute(t.database.db)).rejects.toMatchObject({ code: '23514' });
  });

  it('a posting can only name a known house account', async () => {
    const insert = (house: string) => sql`
      INSERT INTO ledger_postings (entry_id, book, house_account, type, amount, operation_id)
      VALUES (nextval('journal_entry_id_seq'), 'live', ${house}, 'adjustment', '1.00', 'test-house-check')`.execute(t.database.db);
    await expect(insert('no_such_account')).rejects.toMatchObject({ code: '23514', constraint: 'ledger_postings_house_account_known' });
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM ledger_postings WHERE operation_id = 'test-house-check'`.execute(t.database.db);
    expect(rows[0]!.n).toBe('0');
  });
});
