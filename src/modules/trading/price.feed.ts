/**
 * PRICE_FEED=simulated: a random walk of each symbol's price in whole ticks of its
 * digits, spread kept as it started. Seeded (PRICE_FEED_SEED), so a run can be repeated:
 * the same seed gives the same sequence of quotes from the same start prices.
 */
import { randomInt } from 'node:crypto';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import type { Instruments } from './instruments.js';
import type { QuoteBook } from './quote.book.js';
import type { QuoteInput } from './risk.engine.js';

/** mulberry32: a small, fast, seedable PRNG (good enough for a price simulation). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class SimulatedPriceFeed {
  private timer: NodeJS.Timeout | undefined;
  private readonly random: () => number;
  readonly seed: number;

  constructor(
    private readonly instruments: Instruments,
    private readonly quotes: QuoteBook,
    private readonly sink: (quotes: QuoteInput[]) => void,
    private readonly intervalMs: number,
    seed: number | undefined,
    private readonly log: AppLogger,
  ) {
    this.seed = seed ?? randomInt(0, 2 ** 31);
    this.random = seededRandom(this.seed);
  }

  /** The next quote of every symbol that has a price: ±(0..~1 bp of the price) in ticks. */
  next(): QuoteInput[] {
    const out: QuoteInput[] = [];
    for (const i of this.instruments.list()) {
      const q = this.quotes.get(i.symbol);
      if (!q) continue;
      const scale = new Decimal(10).pow(i.digits);
      const bidTicks = BigInt(q.bid.times(scale).toFixed(0));
      const spread = BigInt(q.ask.times(scale).toFixed(0)) - bidTicks;
      // A step of up to about one basis point of the price, at least one tick.
      const maxStep = BigInt(q.bid.times(scale).div(10_000).ceil().toFixed(0)) || 1n;
      const r = this.random();
      const step = BigInt(Math.floor(r * (2 * Number(maxStep) + 1))) - maxStep;
      let bid = bidTicks + step;
      if (bid < 1n) bid = 1n;
      out.push({ symbol: i.symbol, bid: new Decimal(bid.toString()).div(scale), ask: new Decimal((bid + spread).toString()).div(scale) });
    }
    return out;
  }

  start(): void {
    this.log.info({ seed: this.seed, intervalMs: this.intervalMs }, 'simulated price feed started');
    this.timer = setInterval(() => {
      try {
        this.sink(this.next());
      } catch (err) {
        this.log.error({ err }, 'price feed tick failed');
      }
    }, this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
