/**
 * The RiskBook against brute force: after every quote, every wallet the book did not
 * report must really be on the side of its thresholds the book believes, and exactly
 * the orders whose stop-loss or take-profit was reached are triggered. Prices move
 * by random walks with jumps and spread changes, over many wallets with mixed symbols.
 */
import { describe, expect, it } from 'vitest';
import { Decimal, roundCents, ZERO } from '../../src/platform/money.js';
import { seededRandom } from '../../src/modules/trading/price.feed.js';
import { closePriceOf, rawProfit, requiredMargin, stopLossReached, takeProfitReached } from '../../src/modules/trading/pricing.js';
import { centsToDecimal, RiskBook, textToCents, type BookWallet } from '../../src/modules/trading/risk.book.js';

const SYMBOLS = {
  EURUSD: { digits: 5, cs: new Decimal(100000), bid: 108000n, spread: 10n },
  XAUUSD: { digits: 2, cs: new Decimal(100), bid: 200000n, spread: 40n },
  BTCUSD: { digits: 2, cs: new Decimal(1), bid: 6000000n, spread: 2000n },
} as const;
type Sym = keyof typeof SYMBOLS;
const NAMES = Object.keys(SYMBOLS) as Sym[];
const SO = new Decimal(50);
const MC = new Decimal(100);

function run(seed: number) {
  const random = seededRandom(seed);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const prices = new Map<Sym, { bidT: bigint; spreadT: bigint }>(NAMES.map((s) => [s, { bidT: SYMBOLS[s].bid, spreadT: SYMBOLS[s].spread }]));
  const quote = (s: Sym) => {
    const p = prices.get(s)!;
    const scale = new Decimal(10).pow(SYMBOLS[s].digits);
    return { bid: new Decimal(p.bidT.toString()).div(scale), ask: new Decimal((p.bidT + p.spreadT).toString()).div(scale) };
  };
  const book = new RiskBook({ stopOutLevel: SO, marginCallLevel: MC }, (s) => SYMBOLS[s as Sym]?.digits);
  for (const s of NAMES) {
    const q = quote(s);
    book.setPrice(s, q.bid, q.ask);
  }

  let nextId = 1;
  for (let w = 1; w <= 150; w++) {
    const walletId = String(w);
    book.upsertWallet({ id: walletId, userId: walletId, walletType: 'live', balance: ZERO });
    let margin = ZERO;
    const n = 1 + Math.floor(random() * 4);
    for (let i = 0; i < n; i++) {
      const symbol = pick(NAMES);
      const side = random() < 0.5 ? 'buy' : 'sell';
      const q = quote(symbol);
      const openPrice = side === 'buy' ? q.ask : q.bid;
      const volume = new Decimal(1 + Math.floor(random() * 300)).div(100);
      const m = requiredMargin(volume, SYMBOLS[symbol].cs, openPrice, pick([20, 50, 100, 200]));
      margin = margin.plus(m);
      const scale = new Decimal(10).pow(SYMBOLS[symbol].digits);
      const away = (ticks: number) => new Decimal(ticks).div(scale);
      const sl = random() < 0.6 ? (side === 'buy' ? openPrice.minus(away(50 + Math.floor(random() * 3000))) : openPrice.plus(away(50 + Math.floor(random() * 3000)))) : null;
      const tp = random() < 0.6 ? (side === 'buy' ? openPrice.plus(away(50 + Math.floor(random() * 3000))) : openPrice.minus(away(50 + Math.floor(random() * 3000)))) : null;
      book.addOrder({
        id: String(nextId++), userId: walletId, walletId, walletType: 'live', symbol, side, volume, contractSize: SYMBOLS[symbol].cs,
        openPrice, margin: m, stopLoss: sl && sl.gt(0) ? sl : null, takeProfit: tp && tp.gt(0) ? tp : null, openedAt: new Date(1_700_000_000_000 + nextId),
      });
    }
    // Margin levels from about 60 % to 400 %.
    book.setBalance(walletId, margin.times(0.6 + random() * 3.4).toDecimalPlaces(2));
  }

  /** Exact state, computed independently of the book's bands. */
  const exact = (w: BookWallet) => {
    let equity = centsToDecimal(w.balanceCents);
    let margin = ZERO;
    for (const o of w.orders.values()) {
      const q = quote(o.symbol as Sym);
      equity = equity.plus(roundCents(rawProfit(o.side, o.openPrice, closePriceOf(o.side, q), o.volume.times(o.contractSize))));
      margin = margin.plus(o.margin);
    }
    return { equity, margin };
  };
  const closeOrder = (id: string) => {
    const o = book.orders.get(id)!;
    const q = quote(o.symbol as Sym);
    const w = book.wallets.get(o.walletId)!;
    const profit = roundCents(rawProfit(o.side, o.openPrice, closePriceOf(o.side, q), o.exposure));
    const balance = Decimal.max(centsToDecimal(w.balanceCents).plus(profit), ZERO);
    book.removeOrder(id);
    book.setBalance(o.walletId, balance);
  };
  const settle = (w: BookWallet) => {
    for (let ev = book.evaluate(w); ev.stopOut && book.wallets.has(w.id); ev = book.evaluate(w)) closeOrder(book.lowestPnl(w)!.id);
  };
  for (const w of [...book.wallets.values()]) settle(w);

  let evaluations = 0;
  let triggeredTotal = 0;
  for (let tick = 0; tick < 400; tick++) {
    const s = pick(NAMES);
    const p = prices.get(s)!;
    const jump = random() < 0.05 ? 40 : 4;
    const step = BigInt(Math.round((random() * 2 - 1) * Number(SYMBOLS[s].spread) * jump));
    p.bidT = p.bidT + step > 1n ? p.bidT + step : 1n;
    if (random() < 0.1) p.spreadT = BigInt(1 + Math.floor(random() * Number(SYMBOLS[s].spread) * 3));
    const q = quote(s);
    // What must trigger, by brute force, before the book is told.
    const due = new Set<string>();
    for (const o of book.orders.values()) {
      if (o.symbol !== s || o.closing) continue;
      if ((o.stopLoss && stopLossReached(o.side, o.stopLoss, q)) || (o.takeProfit && takeProfitReached(o.side, o.takeProfit, q))) due.add(o.id);
    }
    const effects = book.applyQuote(s, q.bid, q.ask);
    expect(new Set(effects.triggered.map((x) => x.order.id))).toEqual(due);
    triggeredTotal += due.size;
    for (const { order } of effects.triggered) closeOrder(order.id);
    for (const w of effects.wallets) {
      if (!book.wallets.has(w.id)) continue;
      evaluations++;
      settle(w);
    }
    for (const w of new Set(effects.triggered.map((x) => x.order.walletId))) {
      const bw = book.wallets.get(w);
      if (bw) settle(bw);
    }
    // The invariant: nobody unreported is past a threshold the book has not seen.
    for (const w of book.wallets.values()) {
      const { equity, margin } = exact(w);
      const level100 = equity.times(100);
      expect(level100.gt(SO.times(margin)), `wallet ${w.id} at or below stop-out unnoticed (tick ${tick})`).toBe(true);
      if (w.marginCall) expect(level100.lte(MC.times(margin)), `wallet ${w.id} recovered unnoticed (tick ${tick})`).toBe(true);
      else expect(level100.gt(MC.times(margin)), `wallet ${w.id} margin call unnoticed (tick ${tick})`).toBe(true);
    }
  }
  return { evaluations, triggeredTotal, wallets: book.wallets.size };
}

describe('RiskBook', () => {
  it.each([1, 2, 3, 42, 1234])('matches brute force over random quotes (seed %i)', (seed) => {
    const r = run(seed);
    // The runs must have exercised the interesting paths.
    expect(r.evaluations).toBeGreaterThan(0);
    expect(r.triggeredTotal).toBeGreaterThan(0);
  });
});

describe('textToCents (the resync compares every wallet with positions in cents)', () => {
  it('reads numeric(20,2) text exactly and refuses every other form', () => {
    expect(['0.00', '12.30', '-12.30', '1000000.05', '999999999999999999.99', '-999999999999999999.99', '-0.01'].map(textToCents))
      .toEqual([0n, 1230n, -1230n, 100000005n, 99999999999999999999n, -99999999999999999999n, -1n]);
    for (const t of ['12.3', '12', '12.300', '1e3', ' 1.00', '+1.00', '', 'NaN']) expect(textToCents(t)).toBeUndefined();
    // the same as the decimal library's reading
    for (const t of ['0.00', '12.30', '-12.30', '1000000.05', '999999999999999999.99', '-999999999999999999.99']) {
      expect(centsToDecimal(textToCents(t)!).eq(new Decimal(t))).toBe(true);
    }
  });
});
