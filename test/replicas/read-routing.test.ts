/**
 * Read routing against a REAL streaming replica (issue 7): a primary and a hot standby
 * of this test's own (test/replicas/replica.ts). Two apps with their own pools,
 * listeners and routers stand for two API processes behind a load balancer.
 *
 * (a) reads go to the replica: with replay paused, a row changed on the primary behind
 *     the app's back still reads old, i.e. the answer came from the standby;
 * (b) read-your-writes: a deposit followed at once by a history read, through the same
 *     and through the other app, always shows the deposit — with replay paused (the
 *     standby can never have it) and with replay running (the real race), 50 times;
 * (c) a stopped replica fails no read (they go to the primary) and serves again once
 *     it is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPLICA_APPLICATION_NAME } from '../../src/platform/db/read-router.js';
import { call, newKey, registerUser, type TestApp } from '../helpers/app.js';
import { waitUntil } from '../helpers/server-process.js';
import { primaryLsn, replicaReads, routerReady, routersCaughtUp, routerSees, sqlOn, startReplicatedApps, stopReplicatedApps, type ReplicatedCluster } from './replica.js';

let cluster: ReplicatedCluster | undefined;
let a: TestApp | undefined;
let b: TestApp | undefined;

beforeAll(async () => {
  ({ cluster, a, b } = await startReplicatedApps());
}, 240_000);

afterAll(() => stopReplicatedApps({ cluster, a, b }), 120_000);

async function deposit(t: TestApp, token: string, amount: string) {
  const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount }, { token, key: newKey() });
  expect(r.status, r.raw).toBe(201);
  return r.body.data as { transaction: { id: string; balanceAfter: string }; wallet: { balance: string } };
}

async function latest(t: TestApp, token: string) {
  const r = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?limit=1', undefined, { token });
  expect(r.status, r.raw).toBe(200);
  return r.body.data.items[0] as { id: string; balanceAfter: string } | undefined;
}

async function wallet(t: TestApp, token: string) {
  const r = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token });
  expect(r.status, r.raw).toBe(200);
  return r.body.data.wallet as { balance: string; updatedAt: string };
}

describe('read routing to a streaming replica', () => {
  it('the replica replicates from the primary (the set-up is real)', async () => {
    const rows = await sqlOn<{ recovery: boolean }>(cluster!.replicaUrl(), 'SELECT pg_is_in_recovery() AS recovery');
    expect(rows[0]!.recovery).toBe(true);
    const rep = await sqlOn<{ state: string }>(cluster!.primaryUrl('postgres'), 'SELECT state FROM pg_stat_replication');
    expect(rep.map((r) => r.state)).toEqual(['streaming']);
  });

  it('(a) reads go to the replica', async () => {
    const u = await registerUser(a!.app);
    const d = await deposit(a!, u.token, '100.00');
    await routersCaughtUp(cluster!, [a!, b!]);

    await cluster!.pauseReplay();
    try {
      // Changed on the primary behind the app's back: no write note, and the paused
      // standby cannot have it. Only an answer from the standby still shows the old time.
      const marked = '2001-02-03T04:05:06.000Z';
      await sqlOn(cluster!.primaryUrl(), "UPDATE wallets SET updated_at = $1 WHERE user_id = $2 AND type = 'live'", [marked, u.user.id]);
      expect((await sqlOn<{ n: string }>(cluster!.primaryUrl(), "SELECT count(*) AS n FROM wallets WHERE user_id = $1 AND updated_at = $2", [u.user.id, marked]))[0]!.n).toBe('1');

      for (const t of [a!, b!]) {
        const before = replicaReads(t);
        const w = await wallet(t, u.token);
        expect(w.updatedAt, 'the answer came from the standby').not.toBe(marked);
        expect(w.balance).toBe('100.00');
        expect((await latest(t, u.token))?.id).toBe(d.transaction.id);
        expect(replicaReads(t) - before).toBe(2);
      }
      const stats = await call(a!.app, 'GET', '/api/v1/referrals/stats', undefined, { token: u.token });
      expect(stats.status, stats.raw).toBe(200);
      // The standby itself sees the app's pool.
      const conns = await sqlOn<{ n: string }>(cluster!.replicaUrl('postgres'), 'SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1', [REPLICA_APPLICATION_NAME]);
      expect(Number(conns[0]!.n)).toBeGreaterThan(0);
    } finally {
      await cluster!.resumeReplay();
    }
    // Once replayed, the standby shows the change too.
    expect(await waitUntil(async () => (await wallet(a!, u.token)).updatedAt.startsWith('2001-02-03'), 15_000, 50)).toBe(true);
  });

  it('(b) a writer reads its own write at once, through the same and the other process', async () => {
    const u = await registerUser(a!.app);
    const other = await registerUser(b!.app);
    await deposit(b!, other.token, '5.00');
    let cents = 0;

    // Replay paused: the standby never has these deposits, so every read that shows
    // them was routed to the primary because of the user's write position.
    await cluster!.pauseReplay();
    try {
      for (let i = 0; i < 20; i++) {
        const [writer, reader] = i % 2 === 0 ? [a!, b!] : [b!, a!];
        const d = await deposit(writer, u.token, '1.00');
        cents += 100;
        expect((await latest(writer, u.token))?.id, `same process, iteration ${i}`).toBe(d.transaction.id);
        expect((await latest(reader, u.token))?.id, `other process, iteration ${i}`).toBe(d.transaction.id);
        expect((await wallet(reader, u.token)).balance).toBe((cents / 100).toFixed(2));
      }
    } finally {
      await cluster!.resumeReplay();
    }
    await cluster!.waitForCatchUp();

    // Replay running: the real race between the standby and the next read.
    const before = replicaReads(a!) + replicaReads(b!);
    for (let i = 0; i < 50; i++) {
      const [writer, reader] = i % 2 === 0 ? [a!, b!] : [b!, a!];
      const d = await deposit(writer, u.token, '1.00');
      cents += 100;
      expect(d.wallet.balance).toBe((cents / 100).toFixed(2));
      const [mine, theirs, w] = await Promise.all([latest(writer, u.token), latest(reader, u.token), wallet(reader, u.token)]);
      expect(mine?.id, `same process, iteration ${i}`).toBe(d.transaction.id);
      expect(theirs?.id, `other process, iteration ${i}`).toBe(d.transaction.id);
      expect(w.balance, `other process, iteration ${i}`).toBe((cents / 100).toFixed(2));
      // Someone who did not write is served by the replica meanwhile.
      expect((await wallet(reader, other.token)).balance).toBe('5.00');
    }
    expect(replicaReads(a!) + replicaReads(b!) - before, 'the replica served reads during the loop').toBeGreaterThan(0);
  });

  it('(c) a stopped replica fails no read, and serves again once it is back', async () => {
    const u = await registerUser(a!.app);
    await deposit(a!, u.token, '42.00');
    await cluster!.waitForCatchUp();
    expect(await routerSees(a!, await primaryLsn(cluster!))).toBe(true);

    await cluster!.stopReplica();
    try {
      for (let i = 0; i < 10; i++) {
        for (const t of [a!, b!]) {
          expect((await wallet(t, u.token)).balance).toBe(`${42 + i}.00`);
          const h = await call(t.app, 'GET', '/api/v1/wallets/live/transactions?limit=5', undefined, { token: u.token });
          expect(h.status, h.raw).toBe(200);
          const list = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
          expect(list.status, list.raw).toBe(200);
        }
        // Writes do not depend on the replica either.
        await deposit(i % 2 ? a! : b!, u.token, '1.00');
      }
      for (const t of [a!, b!]) {
        expect(t.services.reads.status().replicas[0]!.up, 'marked down').toBe(false);
      }
    } finally {
      await cluster!.startReplica();
    }
    await cluster!.waitForCatchUp();
    for (const t of [a!, b!]) {
      expect(await routerReady(t), JSON.stringify(t.services.reads.status())).toBe(true);
      const before = replicaReads(t);
      // Used again: a read of a user whose writes the standby has replayed goes there.
      const used = await waitUntil(async () => {
        expect((await wallet(t, u.token)).balance).toBe('52.00');
        return replicaReads(t) > before;
      }, 15_000, 50);
      expect(used, JSON.stringify(t.services.reads.status())).toBe(true);
    }
  });
});
