/**
 * The money paths' round trips to PostgreSQL (issue 8): counted at the driver, so a
 * change that adds a query to a deposit or a withdrawal fails here, not only in the
 * benchmark. And the error path of statements that travel with the idempotency claim.
 */
import { sql } from 'kysely';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { IdempotencyService } from '../../src/platform/idempotency.service.js';
import { DomainError } from '../../src/platform/errors.js';
import { createDatabase } from '../../src/platform/db/database.js';
import { createLogger } from '../../src/platform/logger.js';
import { TransactionService } from '../../src/platform/transaction.service.js';
import { closedOrderNoticeSql, openedOrderNoticeSql, openOrdersOfWalletSql, WALLET_CHANNEL } from '../../src/modules/trading/trading.repository.js';
import { CHANNELS } from '../../src/modules/trading/market.js';
import { lockWalletSql, walletChangeSql } from '../../src/modules/wallets/ledger.repository.js';
import { literal, preparationsFor } from '../../src/platform/db/inline.js';
import { Decimal } from '../../src/platform/money.js';
import { call, fundedUser, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';
import { makeAdmin, place, setQuote } from '../trading/helpers.js';
import { roundTrips } from '../helpers/round-trips.js';
import { listenTo } from '../helpers/db.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t.close(); });
afterEach(() => { vi.restoreAllMocks(); });

describe('round trips per money operation', () => {
  it("a deposit, a withdrawal, a transfer and a stored rejection are one round trip each (BEGIN, one call, COMMIT, then the risk engine's notice in a transaction of its own)", async () => {
    const u = await fundedUser(t.app, '100.00');
    await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token }); // the user's state is cached
    const dep = await roundTrips(async () => {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '5.00' }, { token: u.token, key: newKey() });
      expect(r.status).toBe(201);
      expect(r.body.data.wallet.balance).toBe('105.00');
    });
    expect(dep.texts).toHaveLength(1);
    expect(dep.texts[0]).toMatch(/^(PREPARE[\s\S]*)?BEGIN; SET LOCAL lock_timeout = '\d+ms'; SET LOCAL statement_timeout = '\d+ms'; EXECUTE s_[0-9a-f]{20}\([^;]*\); COMMIT; BEGIN; SET LOCAL synchronous_commit = off; EXECUTE s_[0-9a-f]{20}\([^;]*\); COMMIT$/);
    expect(dep.texts[0]).not.toMatch(/SAVEPOINT/); // a deposit has nothing to undo selectively
    const wd = await roundTrips(async () => {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '7.00' }, { token: u.token, key: newKey() });
      expect(r.status).toBe(201);
      expect(r.body.data.wallet.balance).toBe('98.00');
    });
    expect(wd.count).toBe(1);
    expect(wd.texts[0]).toMatch(/^(PREPARE[\s\S]*)?BEGIN;[\s\S]*EXECUTE s_[0-9a-f]{20}\([\s\S]*\); COMMIT; BEGIN; SET LOCAL synchronous_commit = off; EXECUTE s_[0-9a-f]{20}\([^;]*\); COMMIT$/);
    expect(wd.texts[0]).not.toMatch(/SAVEPOINT/); // every check runs before the first write
    const other = await registerUser(t.app);
    const tr = await roundTrips(async () => {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: other.user.accountNumber, amount: '3.00' }, { token: u.token, key: newKey() });
      expect(r.status).toBe(201);
      expect(r.body.data.wallet.balance).toBe('95.00');
    });
    expect(tr.count).toBe(1);
    // A rejection too: the call stores it and changes nothing else.
    const no = await roundTrips(async () => {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '1000.00' }, { token: u.token, key: newKey() });
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('INSUFFICIENT_FUNDS');
    });
    expect(no.count).toBe(1);
  });

  it("a referred user's qualifying live deposit runs the signup-bonus hook on the statement path; smaller and demo deposits, and qualifying ones once the bonus is known paid, are one round trip", async () => {
    const referrer = await registerUser(t.app);
    const me = await registerUser(t.app, { referralCode: referrer.user.referralCode });
    await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: me.token });
    let balance = '';
    const deposit = (type: string, amount: string) => roundTrips(async () => {
      const r = await call(t.app, 'POST', `/api/v1/wallets/${type}/deposit`, { amount }, { token: me.token, key: newKey() });
      expect(r.status).toBe(201);
      balance = r.body.data.wallet.balance;
    });
    expect((await deposit('live', '99.99')).count).toBe(1);
    expect((await deposit('demo', '500.00')).count).toBe(1);
    // the claim, the credit, the bonus (both wallets), the response
    expect((await deposit('live', '100.00')).count).toBeGreaterThan(1);
    // The next qualifying deposit still runs the hook and finds the bonus paid; from then on one call.
    expect((await deposit('live', '100.00')).count).toBeGreaterThan(1);
    expect((await deposit('live', '100.00')).count).toBe(1);
    expect(balance).toBe('409.99'); // 99.99 + 3 × 100.00 + the 10.00 bonus once
    const bonuses = await sql<{ n: string }>`SELECT count(*)::text AS n FROM referral_bonuses WHERE referee_id = ${me.user.id}`.execute(t.database.db);
    expect(bonuses.rows[0]!.n).toBe('1');
  });

  it('a withdrawal from a wallet with open positions checks free margin in its one round trip and tells the risk engine on commit', async () => {
    const admin = await makeAdmin(t);
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const u = await fundedUser(t.app, '2000.00');
    const o = await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.10', walletType: 'live' });
    expect(o.status).toBe(201);
    await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    const listener = await listenTo(t.url, WALLET_CHANNEL);
    const { notices } = listener;
    try {
      const cents = (m: string) => BigInt(m.replace('.', ''));
      let freeMargin = '';
      let available = '';
      const firstKey = newKey();
      const wd = await roundTrips(async () => {
        const r = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '10.00' }, { token: u.token, key: firstKey });
        expect(r.status).toBe(201);
        expect(r.body.data.wallet.marginLevel).not.toBeNull();
        const w = r.body.data.wallet;
        freeMargin = w.freeMargin;
        available = String(cents(w.balance) - cents(w.margin)).replace(/(\d\d)$/, '.$1');
      });
      // bought at the ask, valued at the bid: free margin is 1.00 below balance - margin
      expect(cents(available) - cents(freeMargin)).toBe(100n);
      expect(wd.count).toBe(1);
      const walletId = (await t.database.db.selectFrom('wallets').select('id').where('userId', '=', u.user.id).where('type', '=', 'live').executeTakeFirstOrThrow()).id;
      await expect.poll(() => notices).toEqual([walletId]);
      const too = await roundTrips(async () => {
        // within balance - margin, beyond free margin
        const r = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: available }, { token: u.token, key: newKey() });
        expect(r.status).toBe(422);
        expect(r.body.error.message).toBe('This would leave the free margin of open positions below 0.00');
      });
      expect(too.count).toBe(1);
      // Neither a rejection nor a replay notifies: the next withdrawal's notice is the second one (notices arrive in commit order).
      const replay = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '10.00' }, { token: u.token, key: firstKey });
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect((await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '1.00' }, { token: u.token, key: newKey() })).status).toBe(201);
      // A marker after everything: once it is in, every notice before it is too.
      await sql`SELECT pg_notify(${WALLET_CHANNEL}::text, 'end')`.execute(t.database.db);
      await expect.poll(() => notices.at(-1)).toBe('end');
      expect(notices).toEqual([walletId, walletId, 'end']);
    } finally {
      await listener.end();
    }
    await call(t.app, 'POST', `/api/v1/orders/${o.body.data.order.id}/close`, undefined, { token: u.token, key: newKey() });
  });
});

describe("the referral hooks' filters", () => {
  it("read no referrer chain for users that existed when the chains were preloaded, and one for a user registered since", async () => {
    const a = await registerUser(t.app);
    const b = await registerUser(t.app, { referralCode: a.user.referralCode });
    const c = await registerUser(t.app, { referralCode: b.user.referralCode });
    const d = await registerUser(t.app, { referralCode: c.user.referralCode });
    await deposit(c, '100.00'); // c's signup bonus: paid
    const referrals = t.services.referrals;
    // A close of this user's may pay commissions: closeCall has a statement (a referred user's).
    const paysOnClose = async (userId: string) => (await referrals.closeCall(userId, t.database.db)) !== undefined;
    expect(await referrals.preload(2)).toBeGreaterThanOrEqual(4); // pages of two users
    const known = await roundTrips(async () => {
      expect(await paysOnClose(a.user.id)).toBe(false);
      expect(await paysOnClose(b.user.id)).toBe(true);
      expect(await paysOnClose(d.user.id)).toBe(true);
      expect(await referrals.mayActOnDeposit(d.user.id, 'live', new Decimal('100.00'))).toBe(true);
      expect(await referrals.mayActOnDeposit(c.user.id, 'live', new Decimal('100.00'))).toBe(false); // bonus paid
      expect(await referrals.mayActOnDeposit(a.user.id, 'live', new Decimal('100.00'))).toBe(false);
    });
    expect(known.count).toBe(0);
    const e = await registerUser(t.app, { referralCode: d.user.referralCode });
    const late = await roundTrips(async () => {
      expect(await paysOnClose(e.user.id)).toBe(true);
      expect(await paysOnClose(e.user.id)).toBe(true);
    });
    expect(late.count).toBe(1); // read once, then kept
    // The preloaded chain is the whole chain: d's close pays c, b and a (levels 1 to 3).
    await deposit(d, '5000.00');
    const admin = await makeAdmin(t);
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const before = await Promise.all([c, b, a].map((u) => balance(u)));
    const order = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '1.00', walletType: 'live' }, { token: d.token, key: newKey() });
    expect(order.status, order.raw).toBe(201);
    const closed = await call(t.app, 'POST', `/api/v1/orders/${order.body.data.order.id}/close`, undefined, { token: d.token, key: newKey() });
    expect(closed.status, closed.raw).toBe(200);
    const after = await Promise.all([c, b, a].map((u) => balance(u)));
    // 1.00 lot × 5.00 / 2.00 / 1.00 per level (config.referral.rates)
    expect(after.map((x, i) => new Decimal(x).minus(before[i]!).toFixed(2))).toEqual(t.config.referral.rates.map((r) => new Decimal(r).toFixed(2)));
  });
});

async function deposit(u: { token: string }, amount: string) {
  const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount }, { token: u.token, key: newKey() });
  expect(r.status, r.raw).toBe(201);
}

async function balance(u: { token: string }): Promise<string> {
  const r = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
  return r.body.data.items.find((w: { type: string }) => w.type === 'live').balance as string;
}

describe('round trips per order operation', () => {
  it("an order open and a close are one round trip each (BEGIN, one call, COMMIT, then the leader's notice in a transaction of its own)", async () => {
    const admin = await makeAdmin(t);
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const u = await fundedUser(t.app, '5000.00');
    await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    let orderId = '';
    let secondId = '';
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    const notices: Record<string, unknown>[] = [];
    listener.on('notification', (n) => notices.push(JSON.parse(n.payload ?? '{}') as Record<string, unknown>));
    await listener.query(`LISTEN ${CHANNELS.orders}`);
    const afterCommit = /^(PREPARE[\s\S]*)?BEGIN;[\s\S]*EXECUTE s_[0-9a-f]{20}\([\s\S]*\); COMMIT; BEGIN; SET LOCAL synchronous_commit = off; EXECUTE s_[0-9a-f]{20}\([^;]*\); COMMIT$/;
    const openKey = newKey();
    try {
      const open = await roundTrips(async () => {
        const r = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '0.10', walletType: 'live' }, { token: u.token, key: openKey });
        expect(r.status, r.raw).toBe(201);
        orderId = r.body.data.order.id;
        expect(r.body.data.wallet.margin).toBe(r.body.data.order.margin);
      });
      expect(open.count, open.texts.map((x) => x.slice(0, 60)).join(' | ')).toBe(1);
      expect(open.texts[0]).toMatch(afterCommit);
      const walletId = (await t.database.db.selectFrom('wallets').select('id').where('userId', '=', u.user.id).where('type', '=', 'live').executeTakeFirstOrThrow()).id;
      await expect.poll(() => notices.length).toBe(1);
      // From this process, which is the leader and told its engine itself.
      expect(notices[0]).toEqual({ o: t.services.trading.market.origin, w: walletId, id: orderId, l: true });
      const second = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'sell', volume: '0.10', walletType: 'live' }, { token: u.token, key: newKey() });
      expect(second.status).toBe(201);
      secondId = second.body.data.order.id;
      const close = await roundTrips(async () => {
        const r = await call(t.app, 'POST', `/api/v1/orders/${orderId}/close`, undefined, { token: u.token, key: newKey() });
        expect(r.status, r.raw).toBe(200);
        expect(r.body.data.order.status).toBe('closed');
        // The other position is still open: the wallet view is valued with it.
        expect(r.body.data.wallet.margin).toBe(second.body.data.order.margin);
        expect(r.body.data.wallet.marginLevel).not.toBeNull();
      });
      expect(close.count, close.texts.map((x) => x.slice(0, 60)).join(' | ')).toBe(1);
      expect(close.texts[0]).toMatch(afterCommit);
      await expect.poll(() => notices.length).toBe(3);
      expect(notices[1]).toMatchObject({ w: walletId, id: secondId, l: true });
      expect(notices[2]).toMatchObject({ w: walletId, id: orderId, l: true });
      // Neither a stored rejection nor a replay notifies, for an open or a close.
      const replayed = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '0.10', walletType: 'live' }, { token: u.token, key: openKey });
      expect(replayed.headers['idempotent-replayed']).toBe('true');
      const tooBig = await roundTrips(async () => {
        const r = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'EURUSD', side: 'buy', volume: '100.00', walletType: 'live' }, { token: u.token, key: newKey() });
        expect(r.status).toBe(422);
        expect(r.body.error.code).toBe('INSUFFICIENT_MARGIN');
      });
      expect(tooBig.count).toBe(1); // the call's own stored rejection, with its after-COMMIT statement
      const again = await call(t.app, 'POST', `/api/v1/orders/${orderId}/close`, undefined, { token: u.token, key: newKey() });
      expect(again.status).toBe(409);
      // A marker after everything: once it is in, every notice before it is too.
      await sql`SELECT pg_notify(${CHANNELS.orders}::text, '{"end":true}')`.execute(t.database.db);
      await expect.poll(() => notices.at(-1)).toEqual({ end: true });
      expect(notices).toHaveLength(4);
    } finally {
      await listener.end();
    }
    const gone = await roundTrips(async () => {
      const r = await call(t.app, 'POST', `/api/v1/orders/${orderId}/close`, undefined, { token: u.token, key: newKey() });
      expect(r.status).toBe(409);
      expect(r.body.error.code).toBe('ORDER_NOT_OPEN');
    });
    expect(gone.count).toBe(1); // the call stores the rejection
    await call(t.app, 'POST', `/api/v1/orders/${secondId}/close`, undefined, { token: u.token, key: newKey() });
  });
});

describe('statements sent with the idempotency claim', () => {
  const svc = () => t.services.idempotency;
  const keyOf = (userId: string, key: string) => IdempotencyService.generateKey(userId, key, 'POST', '/test/first', 'hash-1');

  it('a storable error raised by them is stored as the rejection, and replayed without running them again', async () => {
    const u = await fundedUser(t.app, '10.00');
    const k = keyOf(u.user.id, newKey());
    // Drives the balance below 0: the wallet's CHECK answers INSUFFICIENT_FUNDS.
    const first = `UPDATE wallets SET balance = balance - 11 WHERE user_id = ${literal(u.user.id)} AND type = 'live' AND ${IdempotencyService.CLAIMED}`;
    const operation = vi.fn(async () => ({ status: 201, data: { ok: true } }));
    const once = await svc().execute(k, operation, { first });
    expect(once).toMatchObject({ status: 422, replayed: false });
    expect(JSON.parse(once.body)).toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    expect(operation).not.toHaveBeenCalled();
    const again = await svc().execute(k, operation, { first });
    expect(again).toMatchObject({ status: 422, replayed: true, body: once.body });
    const { rows } = await sql<{ balance: string }>`SELECT balance FROM wallets WHERE user_id = ${u.user.id} AND type = 'live'`.execute(t.database.db);
    expect(rows[0]!.balance).toBe('10.00');
  });

  it('they change nothing for a replayed key: the guard holds only when the claim took the key', async () => {
    const u = await registerUser(t.app);
    const k = keyOf(u.user.id, newKey());
    const first = `UPDATE wallets SET balance = balance + 1 WHERE user_id = ${literal(u.user.id)} AND type = 'live' AND ${IdempotencyService.CLAIMED} RETURNING balance`;
    const op = async (_trx: unknown, results: pg.QueryResult[]) => ({ status: 201, data: { balance: results[0]!.rows[0]!.balance as string } });
    const a = await svc().execute(k, op, { first });
    const b = await svc().execute(k, op, { first });
    expect(a).toMatchObject({ status: 201, replayed: false, body: '{"balance":"1.00"}' });
    expect(b).toMatchObject({ status: 201, replayed: true, body: '{"balance":"1.00"}' });
    const { rows } = await sql<{ balance: string }>`SELECT balance FROM wallets WHERE user_id = ${u.user.id} AND type = 'live'`.execute(t.database.db);
    expect(rows[0]!.balance).toBe('1.00');
  });

  it('without a savepoint a rejection is not stored: everything rolls back, the key included', async () => {
    const u = await registerUser(t.app);
    const k = keyOf(u.user.id, newKey());
    const first = `UPDATE wallets SET balance = balance + 1 WHERE user_id = ${literal(u.user.id)} AND type = 'live' AND ${IdempotencyService.CLAIMED}`;
    await expect(svc().execute(k, async () => { throw new DomainError('INSUFFICIENT_FUNDS', 'no'); }, { first, savepoint: false }))
      .rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    const { rows } = await sql<{ n: string; balance: string }>`
      SELECT (SELECT count(*) FROM idempotency_keys WHERE user_id = ${u.user.id} AND key = ${k.key}) AS n,
             (SELECT balance FROM wallets WHERE user_id = ${u.user.id} AND type = 'live') AS balance`.execute(t.database.db);
    expect(rows[0]).toEqual({ n: '0', balance: '0.00' });
  });

  it('a non-storable error rolls everything back, the key included', async () => {
    const u = await registerUser(t.app);
    const k = keyOf(u.user.id, newKey());
    await expect(svc().execute(k, async () => ({ status: 201, data: {} }), { first: `SELECT 1 / (CASE WHEN ${IdempotencyService.CLAIMED} THEN 0 ELSE 1 END)` }))
      .rejects.toMatchObject({ code: '22012' });
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM idempotency_keys WHERE user_id = ${u.user.id} AND key = ${k.key}`.execute(t.database.db);
    expect(rows[0]!.n).toBe('0');
  });
});

describe('prepared statements', () => {
  const log = createLogger({ level: 'silent' });
  const ok = async () => ({ status: 201, data: { ok: true } });
  /** An IdempotencyService over a pool of one connection (so every call uses the same one). */
  const onOneConnection = async (fn: (idem: IdempotencyService) => Promise<void>) => {
    const one = createDatabase((t.database.pool.options as { connectionString: string }).connectionString, { max: 1, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 60_000 });
    try {
      await fn(new IdempotencyService(new TransactionService(one, { lockTimeoutMs: 5000, statementTimeoutMs: 15000 }, log), 24));
    } finally {
      await one.close();
    }
  };

  it('are prepared once per connection, in the round trip that first needs them', async () => {
    await onOneConnection(async (idem) => {
      const u = await registerUser(t.app);
      const key = () => IdempotencyService.generateKey(u.user.id, newKey(), 'POST', '/test/prepared', 'h');
      const a = await roundTrips(() => idem.execute(key(), ok));
      expect(a.count).toBe(2);
      expect(a.texts[0]).toMatch(/^PREPARE s_[0-9a-f]{20} AS [\s\S]*BEGIN[\s\S]*EXECUTE s_/);
      expect(a.texts[1]).toMatch(/^PREPARE s_[0-9a-f]{20} AS\s+UPDATE idempotency_keys[\s\S]*EXECUTE s_[\s\S]*COMMIT$/);
      const b = await roundTrips(() => idem.execute(key(), ok));
      expect(b.count).toBe(2);
      expect(b.texts.join('\n')).not.toMatch(/PREPARE/);
    });
  });

  it('a rejection raised by PostgreSQL on a connection that never stored a response is stored (PREPARE after the rollback)', async () => {
    await onOneConnection(async (idem) => {
      const u = await fundedUser(t.app, '5.00');
      const k = IdempotencyService.generateKey(u.user.id, newKey(), 'POST', '/test/prepared', 'h');
      // The wallet's CHECK (balance >= 0) answers INSUFFICIENT_FUNDS: a storable rejection raised by the database.
      const overdraw = async (trx: Parameters<Parameters<typeof idem.execute>[1]>[0]) => {
        await sql`UPDATE wallets SET balance = balance - 6 WHERE user_id = ${u.user.id} AND type = 'live'`.execute(trx);
        return { status: 201, data: {} };
      };
      const once = await idem.execute(k, overdraw);
      expect(once).toMatchObject({ status: 422, replayed: false });
      expect(await idem.execute(k, overdraw)).toMatchObject({ status: 422, replayed: true, body: once.body });
    });
  });

  it('after a failed batch the connection learns what it has prepared, and goes on working', async () => {
    await onOneConnection(async (idem) => {
      const u = await registerUser(t.app);
      const key = () => IdempotencyService.generateKey(u.user.id, newKey(), 'POST', '/test/prepared', 'h');
      // The claim's PREPARE travels in the batch that then fails.
      await expect(idem.execute(key(), ok, { first: 'SELECT 1 / 0' })).rejects.toMatchObject({ code: '22012' });
      const next = await roundTrips(async () => expect(await idem.execute(key(), ok)).toMatchObject({ status: 201, replayed: false }));
      expect(next.texts[0]).not.toMatch(/PREPARE/); // the claim survived the rollback and is known again
      expect(next.texts[0]).toMatch(/EXECUTE s_/);
    });
  });
});

describe('generic plans of the prepared statements', () => {
  it('use the indexes: the open orders of a wallet through the partial index, the wallet by (user, type)', async () => {
    // The generic plan (PostgreSQL moves a prepared statement to it after five runs when it
    // is not costlier), with sequential scans off: on the tests' small tables they can be
    // cheaper; what matters is whether the generic plan can use the index at all. On a
    // connection of its own: a pool connection may hold a generic plan made earlier with
    // sequential scans on, which EXPLAIN EXECUTE would show.
    const explain = async (statement: string) => {
      const client = new pg.Client({ connectionString: t.url });
      await client.connect();
      try {
        await client.query(`SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan; ${preparationsFor(statement, new Set()).sql}`);
        const r = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN ${statement}`);
        return r.rows.map((x) => x['QUERY PLAN']).join('\n');
      } finally {
        await client.end();
      }
    };
    const byUser = await explain(openOrdersOfWalletSql({ userId: '1', type: 'live', guard: 'TRUE' }));
    expect(byUser).toMatch(/orders_open_wallet_idx/);
    expect(byUser).toMatch(/wallets_user_type_key/);
    expect(byUser).not.toMatch(/Seq Scan/);
    expect(await explain(openOrdersOfWalletSql({ walletId: '1' }))).toMatch(/orders_open_wallet_idx/);
    expect(await explain(lockWalletSql('1', 'live'))).toMatch(/wallets_user_type_key/);
    const change = await explain(walletChangeSql('1', 'live', { balance: '1.00', margin: '0', profit: '0' }, { type: 'deposit', houseAccount: 'deposit_gateway', operationId: 'op-explain' }));
    expect(change).toMatch(/wallets_user_type_key/);
    expect(change).not.toMatch(/Seq Scan on wallets/);
    // The leader's notices after an open's and a close's COMMIT.
    const notice = { channel: CHANNELS.orders, origin: 'explain', leader: false };
    const opened = await explain(openedOrderNoticeSql(notice, '1', 'live', 'op-explain'));
    expect(opened).toMatch(/wallets_user_type_key/);
    expect(opened).toMatch(/orders_open_wallet_idx/);
    expect(opened).not.toMatch(/Seq Scan/);
    const closed = await explain(closedOrderNoticeSql(notice, '1', 'op-explain'));
    expect(closed).toMatch(/orders_pkey/);
    expect(closed).not.toMatch(/Seq Scan/);
  });

  it("the money and order-open calls' own statements use their indexes (auto_explain of the function bodies, generic plans)", async () => {
    const admin = await makeAdmin(t);
    await setQuote(t, admin, 'EURUSD', '1.10000', '1.10010');
    const u = await fundedUser(t.app, '1000.00');
    const other = await registerUser(t.app);
    const o = await place(t, u, { symbol: 'EURUSD', side: 'buy', volume: '0.01', walletType: 'live' }); // margin > 0: the valuation runs
    expect(o.status).toBe(201);
    const client = new pg.Client({ connectionString: t.url });
    await client.connect();
    const plans: string[] = [];
    client.on('notice', (n) => plans.push(n.message ?? ''));
    const claim = (key: string) => `${literal(u.user.id)}, ${literal(key)}, 'POST', '/explain', 'h', 24`;
    const rejections = literal(JSON.stringify({ wallet: [404, '{}'], recipient: [404, '{}'], funds: [422, '{}'], free_margin: [422, '{}'], margin: [422, '{}'] }));
    const quotes = literal(JSON.stringify([{ symbol: 'EURUSD', bid: '1.10000', ask: '1.10010' }]));
    try {
      await client.query(`LOAD 'auto_explain'`);
      await client.query(`SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET auto_explain.log_level = notice;
                          SET enable_seqscan = off; SET plan_cache_mode = force_generic_plan`);
      await client.query('BEGIN');
      await client.query(`SELECT * FROM wallet_deposit(${claim('explain-d')}, 'live', 1.00, 'deposit_gateway', 'op-d', NULL, ${quotes})`);
      await client.query(`SELECT * FROM wallet_withdraw(${claim('explain-w')}, 'live', 1.00, 'withdrawal_gateway', 'op-w', ${quotes}, ${rejections}, NULL)`);
      await client.query(`SELECT * FROM wallet_transfer(${claim('explain-t')}, 'live', ${literal(other.user.accountNumber)}, 1.00, 'op-t', NULL, ${quotes}, ${rejections}, NULL)`);
      await client.query(`SELECT * FROM order_open(${claim('explain-o')}, 'live', 'EURUSD', 'buy', 0.01, 100, 100000, 5, 1.10010, 11.01, NULL, NULL, 'op-o',
                          -0.10, '"symbol":"EURUSD"', ${quotes}, ${rejections}, NULL)`);
      await client.query('ROLLBACK');
    } finally {
      await client.end();
    }
    const text = plans.join('\n');
    expect(text).toMatch(/order_open/);
    expect(text).toMatch(/idempotency_keys_pkey/);
    expect(text).toMatch(/wallets_user_type_key/);
    expect(text).toMatch(/users_account_number_key/);
    expect(text).toMatch(/orders_open_wallet_idx/);
    expect(text).not.toMatch(/Seq Scan/);
    await call(t.app, 'POST', `/api/v1/orders/${o.body.data.order.id}/close`, undefined, { token: u.token, key: newKey() });
  });
});
