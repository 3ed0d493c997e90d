/** PRICE_FEED=simulated: a seeded random walk in whole ticks, repeatable from the same seed. */
import { afterAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/platform/logger.js';
import { Instruments } from '../../src/modules/trading/instruments.js';
import { SimulatedPriceFeed } from '../../src/modules/trading/price.feed.js';
import { QuoteBook } from '../../src/modules/trading/quote.book.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { call } from './helpers.js';

const log = createLogger({ level: 'silent' });

function walk(seed: number, steps: number): string[] {
  const instruments = new Instruments();
  const quotes = new QuoteBook(instruments);
  for (const i of instruments.list()) quotes.set(i.symbol, i.startBid!, i.startAsk!, new Date(0));
  const feed = new SimulatedPriceFeed(instruments, quotes, () => undefined, 1000, seed, log);
  const out: string[] = [];
  for (let s = 0; s < steps; s++) {
    for (const q of feed.next()) {
      quotes.set(q.symbol, q.bid, q.ask, new Date(0));
      const v = quotes.view(quotes.get(q.symbol)!);
      out.push(`${v.symbol} ${v.bid} ${v.ask}`);
    }
  }
  return out;
}

describe('simulated feed', () => {
  it('repeats from the same seed and differs with another', () => {
    const a = walk(7, 50);
    expect(walk(7, 50)).toEqual(a);
    expect(walk(8, 50)).not.toEqual(a);
  });

  it('moves in whole ticks and keeps each spread', () => {
    const spreads: Record<string, string> = { EURUSD: '0.00010', GBPUSD: '0.00015', XAUUSD: '0.40', BTCUSD: '20.00' };
    for (const line of walk(3, 200)) {
      const [symbol, bid, ask] = line.split(' ') as [string, string, string];
      const digits = ['XAUUSD', 'BTCUSD'].includes(symbol) ? 2 : 5;
      expect(bid.split('.')[1]).toHaveLength(digits);
      const spread = (BigInt(ask.replace('.', '')) - BigInt(bid.replace('.', ''))).toString();
      expect(spread).toBe(BigInt(spreads[symbol]!.replace('.', '')).toString());
    }
  });

  let t: TestApp | undefined;
  afterAll(async () => { await t?.close(); });

  it('moves the prices of a running app and stores them', async () => {
    t = await startTestApp({ PRICE_FEED: 'simulated', PRICE_FEED_SEED: '11', PRICE_FEED_INTERVAL_MS: '20' });
    const before = (await call(t.app, 'GET', '/api/v1/quotes')).body.data.items;
    await new Promise((r) => setTimeout(r, 400));
    const after = (await call(t.app, 'GET', '/api/v1/quotes')).body.data.items;
    expect(after).not.toEqual(before);
    const stored = await t.database.db.selectFrom('quotes').selectAll().execute();
    expect(stored.map((q) => q.symbol).sort()).toEqual(['BTCUSD', 'EURUSD', 'GBPUSD', 'XAUUSD']);
  });
});
