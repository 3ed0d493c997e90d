/**
 * Order reads against a REAL streaming replica (issue 7), end to end through the API:
 * GET /api/v1/orders and GET /api/v1/orders/:id are served by the standby, and a user
 * who just opened or closed an order (or whose order the risk engine just closed)
 * sees it in the very next read, on the process that wrote and on another one.
 * Two apps (own pools, listeners and routers) on one primary + hot standby
 * (test/replicas/replica.ts) stand for two API processes behind a load balancer.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, type TestApp } from '../helpers/app.js';
import { waitUntil } from '../helpers/server-process.js';
import { makeAdmin, setQuote, type User } from '../trading/helpers.js';
import { replicaReads, routersCaughtUp, sqlOn, startReplicatedApps, stopReplicatedApps, type ReplicatedCluster } from './replica.js';

let cluster: ReplicatedCluster | undefined;
let a: TestApp | undefined;
let b: TestApp | undefined;
let admin: User;

beforeAll(async () => {
  ({ cluster, a, b } = await startReplicatedApps());
  admin = await makeAdmin(a);
  await setQuote(a, admin, 'XAUUSD', '2000.00', '2000.40');
}, 240_000);

afterAll(() => stopReplicatedApps({ cluster, a, b }), 120_000);

interface Order { id: string; status: string; openedAt: string; closeReason: string | null; stopLoss: string | null }

async function openOrder(t: TestApp, token: string, stopLoss: string | null = null): Promise<Order> {
  const r = await call(t.app, 'POST', '/api/v1/orders', { symbol: 'XAUUSD', side: 'buy', volume: '0.01', walletType: 'live', stopLoss }, { token, key: newKey() });
  expect(r.status, r.raw).toBe(201);
  return r.body.data.order as Order;
}

async function getOrder(t: TestApp, token: string, id: string): Promise<{ status: number; order?: Order }> {
  const r = await call(t.app, 'GET', `/api/v1/orders/${id}`, undefined, { token });
  return { status: r.status, order: r.body?.data?.order as Order | undefined };
}

async function listOrders(t: TestApp, token: string, query = ''): Promise<Order[]> {
  const r = await call(t.app, 'GET', `/api/v1/orders${query}`, undefined, { token });
  expect(r.status, r.raw).toBe(200);
  return r.body.data.items as Order[];
}

describe('order reads on a streaming replica', () => {
  it('GET /orders and GET /orders/:id are served by the replica', async () => {
    const u = await fundedUser(a!.app, '1000.00');
    const order = await openOrder(a!, u.token);
    await routersCaughtUp(cluster!, [a!, b!]);

    await cluster!.pauseReplay();
    try {
      // Changed on the primary behind the apps' backs: only the paused standby still has the old time.
      const marked = '2001-02-03T04:05:06.000Z';
      await sqlOn(cluster!.primaryUrl(), 'UPDATE orders SET opened_at = $1 WHERE id = $2', [marked, order.id]);
      for (const t of [a!, b!]) {
        const before = replicaReads(t);
        const one = await getOrder(t, u.token, order.id);
        expect(one.status).toBe(200);
        expect(one.order!.openedAt, 'GET /orders/:id answered by the standby').toBe(order.openedAt);
        const list = await listOrders(t, u.token);
        expect(list.map((o) => o.id)).toEqual([order.id]);
        expect(list[0]!.openedAt, 'GET /orders answered by the standby').toBe(order.openedAt);
        expect(replicaReads(t) - before).toBe(2);
      }
    } finally {
      await cluster!.resumeReplay();
    }
    // Replayed: the standby shows the change too.
    expect(await waitUntil(async () => (await getOrder(a!, u.token, order.id)).order?.openedAt.startsWith('2001-02-03') === true, 15_000, 50)).toBe(true);
  });

  it('a user sees their own order open and close at once, on the same and the other process (replay paused)', async () => {
    const u = await fundedUser(a!.app, '1000.00');
    await cluster!.waitForCatchUp();
    await cluster!.pauseReplay();
    try {
      for (let i = 0; i < 6; i++) {
        const [writer, reader] = i % 2 === 0 ? [a!, b!] : [b!, a!];
        const order = await openOrder(writer, u.token);
        // The standby can never have it: each of these reads went to the primary.
        for (const t of [writer, reader]) {
          const one = await getOrder(t, u.token, order.id);
          expect(one.status, `open, iteration ${i}`).toBe(200);
          expect(one.order).toMatchObject({ id: order.id, status: 'open' });
          expect((await listOrders(t, u.token, '?status=open')).map((o) => o.id)).toContain(order.id);
        }
        const closed = await call(reader.app, 'POST', `/api/v1/orders/${order.id}/close`, undefined, { token: u.token, key: newKey() });
        expect(closed.status, closed.raw).toBe(200);
        for (const t of [writer, reader]) {
          expect((await getOrder(t, u.token, order.id)).order, `closed, iteration ${i}`).toMatchObject({ status: 'closed', closeReason: 'user' });
          expect((await listOrders(t, u.token, '?status=open')).map((o) => o.id)).not.toContain(order.id);
        }
      }
      // A close by the risk engine (a stop-loss of an admin quote) is seen at once as well.
      const sl = await openOrder(b!, u.token, '1990.00');
      expect((await setQuote(a!, admin, 'XAUUSD', '1989.00', '1989.40')).triggered).toBe(1);
      for (const t of [a!, b!]) {
        expect((await getOrder(t, u.token, sl.id)).order).toMatchObject({ status: 'closed', closeReason: 'stop_loss' });
      }
      await setQuote(a!, admin, 'XAUUSD', '2000.00', '2000.40');
    } finally {
      await cluster!.resumeReplay();
    }
  });

  it('read-your-writes holds in the real race with replay running, while others read from the replica', async () => {
    const u = await fundedUser(a!.app, '1000.00');
    const other = await fundedUser(b!.app, '1000.00');
    const others = await openOrder(b!, other.token);
    await cluster!.waitForCatchUp();
    const before = replicaReads(a!) + replicaReads(b!);
    for (let i = 0; i < 25; i++) {
      const [writer, reader] = i % 2 === 0 ? [a!, b!] : [b!, a!];
      const order = await openOrder(writer, u.token);
      const [mine, theirs, list] = await Promise.all([getOrder(writer, u.token, order.id), getOrder(reader, u.token, order.id), listOrders(reader, u.token)]);
      expect(mine.status, `same process, iteration ${i}`).toBe(200);
      expect(theirs.status, `other process, iteration ${i}`).toBe(200);
      expect(list[0]!.id, `other process's list, iteration ${i}`).toBe(order.id);
      expect((await getOrder(reader, other.token, others.id)).order).toMatchObject({ status: 'open' });
    }
    expect(replicaReads(a!) + replicaReads(b!) - before, 'the replica served reads during the loop').toBeGreaterThan(0);
  });
});
