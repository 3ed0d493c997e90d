/** Helpers of the trading tests: an admin, quotes, orders, reconciliation. */
import { expect } from 'vitest';
import { call, fundedUser, newKey, registerUser, type TestApp } from '../helpers/app.js';

export interface User {
  token: string;
  user: { id: string; email: string; accountNumber: string };
  email: string;
  password: string;
}

/** Registers a user, makes it admin in the database and logs in again. */
export async function makeAdmin(t: TestApp): Promise<User> {
  const u = await registerUser(t.app);
  await t.database.db.updateTable('users').set({ role: 'admin' }).where('id', '=', u.user.id).execute();
  t.services.userCache.invalidate(u.user.id);
  const r = await call(t.app, 'POST', '/api/v1/auth/login', { email: u.email, password: u.password });
  expect(r.status).toBe(200);
  return { ...u, token: r.body.data.token };
}

export async function setQuote(t: TestApp, admin: User, symbol: string, bid: string, ask: string) {
  const r = await call(t.app, 'POST', '/api/v1/admin/quotes', { symbol, bid, ask }, { token: admin.token });
  if (r.status !== 200) throw new Error(`quote failed: ${r.status} ${r.raw}`);
  return r.body.data as { quote: { symbol: string; bid: string; ask: string; time: string }; triggered: number };
}

export interface OrderInput {
  symbol: string;
  side: 'buy' | 'sell';
  volume: string;
  walletType?: 'live' | 'demo';
  leverage?: number;
  stopLoss?: string | null;
  takeProfit?: string | null;
}

export async function place(t: TestApp, u: { token: string }, input: OrderInput, key = newKey()) {
  return call(t.app, 'POST', '/api/v1/orders', { walletType: 'live', ...input }, { token: u.token, key });
}

const opened: { u: { token: string }; id: string }[] = [];

/** Places an order that must succeed; returns the order. */
export async function open(t: TestApp, u: { token: string }, input: OrderInput) {
  const r = await place(t, u, input);
  if (r.status !== 201) throw new Error(`place failed: ${r.status} ${r.raw}`);
  opened.push({ u, id: r.body.data.order.id });
  return r.body.data.order as Order;
}

/** Closes every order `open` opened that is still open, so one test's positions cannot trigger in the next. */
export async function closeLeftovers(t: TestApp) {
  for (const { u, id } of opened.splice(0)) await close(t, u, id);
}

export async function close(t: TestApp, u: { token: string }, orderId: string, key = newKey()) {
  return call(t.app, 'POST', `/api/v1/orders/${orderId}/close`, undefined, { token: u.token, key });
}

export async function getOrder(t: TestApp, u: { token: string }, orderId: string): Promise<Order> {
  const r = await call(t.app, 'GET', `/api/v1/orders/${orderId}`, undefined, { token: u.token });
  expect(r.status).toBe(200);
  return r.body.data.order;
}

export async function wallet(t: TestApp, u: { token: string }, type: 'live' | 'demo' = 'live') {
  const r = await call(t.app, 'GET', `/api/v1/wallets/${type}`, undefined, { token: u.token });
  expect(r.status).toBe(200);
  return r.body.data.wallet as { balance: string; margin: string; equity: string; freeMargin: string; marginLevel: string | null; realizedProfit: string };
}

export async function transactions(t: TestApp, u: { token: string }, type: 'live' | 'demo' = 'live') {
  const r = await call(t.app, 'GET', `/api/v1/wallets/${type}/transactions?limit=200`, undefined, { token: u.token });
  expect(r.status).toBe(200);
  return r.body.data.items as { id: string; type: string; amount: string; balanceAfter: string; orderId?: string }[];
}

export async function expectReconciled(t: TestApp, admin: User) {
  const r = await call(t.app, 'GET', '/api/v1/admin/reconciliation', undefined, { token: admin.token });
  expect(r.status).toBe(200);
  expect(r.body.data.mismatches).toEqual([]);
  expect(r.body.data.books).toEqual({ live: { sum: '0.00' }, demo: { sum: '0.00' } });
  expect(r.body.data.ok).toBe(true);
}

export interface Order {
  id: string;
  symbol: string;
  side: 'buy' | 'sell';
  volume: string;
  leverage: number;
  walletType: 'live' | 'demo';
  openPrice: string;
  margin: string;
  stopLoss: string | null;
  takeProfit: string | null;
  status: 'open' | 'closed';
  closePrice: string | null;
  profit: string | null;
  closeReason: null | 'user' | 'stop_loss' | 'take_profit' | 'stop_out';
  openedAt: string;
  closedAt: string | null;
}

export { call, fundedUser, newKey, registerUser };
