/**
 * What survives a restart: the last quote of each symbol, and the open orders the risk
 * engine watches (a stop-loss set before the restart triggers after it). The app's
 * close stops the engine before the pool goes.
 */
import { afterAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { call, fundedUser, getOrder, makeAdmin, open, setQuote } from './helpers.js';

const apps: TestApp[] = [];
afterAll(async () => {
  for (const a of apps.reverse()) await a.close().catch(() => undefined);
});

it('keeps the last quotes and the open orders across a restart', async () => {
  const first = await startTestApp();
  apps.push(first);
  const admin = await makeAdmin(first);
  const u = await fundedUser(first.app, '1000.00');
  await setQuote(first, admin, 'XAUUSD', '2010.00', '2010.40');
  await setQuote(first, admin, 'EURUSD', '1.09000', '1.09012');
  const o = await open(first, u, { symbol: 'XAUUSD', side: 'buy', volume: '0.10', stopLoss: '2005.00' });
  await first.app.close();

  const second = await startTestApp({}, first.url);
  apps.push(second);
  const quotes = (await call(second.app, 'GET', '/api/v1/quotes')).body.data.items;
  expect(quotes.map((q: { symbol: string; bid: string; ask: string }) => [q.symbol, q.bid, q.ask])).toEqual([
    ['EURUSD', '1.09000', '1.09012'], ['GBPUSD', '1.26000', '1.26015'], ['XAUUSD', '2010.00', '2010.40'], ['BTCUSD', '60000.00', '60020.00'],
  ]);
  expect(second.services.trading.book.stats()).toMatchObject({ orders: 1, wallets: 1 });
  const q = await setQuote(second, admin, 'XAUUSD', '2004.00', '2004.40');
  expect(q.triggered).toBe(1);
  expect(await getOrder(second, u, o.id)).toMatchObject({ status: 'closed', closeReason: 'stop_loss', closePrice: '2004.00', profit: '-64.00' });
});
