/**
 * npm run bench:risk — the cost of one quote tick for the risk engine with 100,000
 * open orders in memory (the RiskBook): finding the stop-losses / take-profits the
 * quote reached and the wallets whose margin it moved, and re-evaluating those
 * wallets exactly. The database closes that follow cost per close, not per open
 * order, and are not part of this figure.
 *
 * ORDERS (default 100000), WALLETS (default 40000), TICKS (default 2000), SEED.
 */
import { Decimal, roundCents, ZERO } from '../src/platform/money.js';
import { seededRandom } from '../src/modules/trading/price.feed.js';
import { closePriceOf, rawProfit, requiredMargin } from '../src/modules/trading/pricing.js';
import { centsToDecimal, RiskBook, type BookOrderInput } from '../src/modules/trading/risk.book.js';

const ORDERS = Number(process.env.ORDERS ?? 100_000);
const WALLETS = Number(process.env.WALLETS ?? 40_000);
const TICKS = Number(process.env.TICKS ?? 2_000);
const random = seededRandom(Number(process.env.SEED ?? 7));

const SYMBOLS = {
  EURUSD: { digits: 5, cs: new Decimal(100000), bidT: 108000n, spreadT: 10n, maxLev: 500 },
  GBPUSD: { digits: 5, cs: new Decimal(100000), bidT: 126000n, spreadT: 15n, maxLev: 500 },
  XAUUSD: { digits: 2, cs: new Decimal(100), bidT: 200000n, spreadT: 40n, maxLev: 200 },
  BTCUSD: { digits: 2, cs: new Decimal(1), bidT: 6000000n, spreadT: 2000n, maxLev: 20 },
};
type Sym = keyof typeof SYMBOLS;
const NAMES = Object.keys(SYMBOLS) as Sym[];
const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
const quote = (s: Sym) => {
  const p = SYMBOLS[s];
  const scale = new Decimal(10).pow(p.digits);
  return { bid: new Decimal(p.bidT.toString()).div(scale), ask: new Decimal((p.bidT + p.spreadT).toString()).div(scale) };
};

const book = new RiskBook({ stopOutLevel: new Decimal(50), marginCallLevel: new Decimal(100) }, (s) => SYMBOLS[s as Sym]?.digits);
for (const s of NAMES) {
  const q = quote(s);
  book.setPrice(s, q.bid, q.ask);
}

const margins = new Map<string, Decimal>();
const inputs: BookOrderInput[] = [];
for (let i = 1; i <= ORDERS; i++) {
  const walletId = String(1 + Math.floor(random() * WALLETS));
  const symbol = pick(NAMES);
  const side = random() < 0.5 ? 'buy' : 'sell';
  const q = quote(symbol);
  const openPrice = side === 'buy' ? q.ask : q.bid;
  const volume = new Decimal(1 + Math.floor(random() * 200)).div(100);
  const margin = requiredMargin(volume, SYMBOLS[symbol].cs, openPrice, Math.min(100, SYMBOLS[symbol].maxLev));
  margins.set(walletId, (margins.get(walletId) ?? ZERO).plus(margin));
  const scale = new Decimal(10).pow(SYMBOLS[symbol].digits);
  const away = () => new Decimal(20 + Math.floor(random() * 5000)).times(SYMBOLS[symbol].spreadT.toString()).div(10).div(scale);
  const sl = random() < 0.7 ? (side === 'buy' ? openPrice.minus(away()) : openPrice.plus(away())) : null;
  const tp = random() < 0.7 ? (side === 'buy' ? openPrice.plus(away()) : openPrice.minus(away())) : null;
  inputs.push({
    id: String(i), userId: walletId, walletId, walletType: 'live', symbol, side, volume, contractSize: SYMBOLS[symbol].cs, openPrice, margin,
    stopLoss: sl && sl.gt(0) ? sl.toDecimalPlaces(SYMBOLS[symbol].digits) : null,
    takeProfit: tp && tp.gt(0) ? tp.toDecimalPlaces(SYMBOLS[symbol].digits) : null,
    openedAt: new Date(1_700_000_000_000 + i),
  });
}
// Margin levels spread from 60 % to 2000 %.
const balances = new Map([...margins].map(([id, m]) => [id, m.times(0.6 + random() * random() * 19.4).toDecimalPlaces(2)]));

// Timed: what the engine does at start-up with the rows it loaded.
let t0 = performance.now();
for (const [id, balance] of balances) book.upsertWallet({ id, userId: id, walletType: 'live', balance });
for (const input of inputs) book.addOrder(input);
for (const w of book.wallets.values()) book.evaluate(w);
const buildMs = performance.now() - t0;
const walletsAtStart = book.wallets.size;

/** Stands in for the database close: the order leaves the book, its P&L lands in the balance. */
function settle(orderId: string) {
  const o = book.orders.get(orderId);
  if (!o) return;
  const w = book.wallets.get(o.walletId)!;
  const q = book.price(o.symbol)!;
  const profit = roundCents(rawProfit(o.side, o.openPrice, closePriceOf(o.side, q), o.exposure));
  const balance = Decimal.max(centsToDecimal(w.balanceCents).plus(profit), ZERO);
  book.removeOrder(orderId);
  book.setBalance(o.walletId, balance);
}

const times: number[] = [];
const jumpTimes: number[] = [];
let evaluated = 0;
let triggered = 0;
let stoppedOut = 0;
for (let tick = 0; tick < TICKS; tick++) {
  const s = pick(NAMES);
  const p = SYMBOLS[s];
  // Mostly small moves (a few points), now and then a jump of tens of spreads.
  const jump = random() < 0.02;
  const size = jump ? 30 : 1;
  p.bidT += BigInt(Math.round((random() * 2 - 1) * Number(p.spreadT) * size));
  if (p.bidT < 1n) p.bidT = 1n;
  const q = quote(s);
  t0 = performance.now();
  const effects = book.applyQuote(s, q.bid, q.ask);
  // Timed: detection and exact re-evaluation (what the engine does before the closes).
  for (const w of effects.wallets) {
    evaluated++;
    book.evaluate(w);
  }
  (jump ? jumpTimes : times).push(performance.now() - t0);
  triggered += effects.triggered.length;
  // Untimed: the closes (database work in the real engine).
  for (const { order } of effects.triggered) settle(order.id);
  for (const w of effects.wallets) {
    for (let ev = book.evaluate(w); ev.stopOut && book.wallets.has(w.id); ev = book.evaluate(w)) {
      settle(book.lowestPnl(w)!.id);
      stoppedOut++;
    }
  }
}

const fmt = (ms: number) => `${ms.toFixed(3)} ms`;
function summary(xs: number[]): string {
  if (xs.length === 0) return 'none';
  xs.sort((a, b) => a - b);
  const pct = (p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  return `median ${fmt(pct(50))}, p99 ${fmt(pct(99))}, max ${fmt(xs[xs.length - 1]!)}, mean ${fmt(mean)} (${xs.length} ticks)`;
}
const stats = book.stats();
console.log(`risk tick benchmark: ${ORDERS} open orders in ${walletsAtStart} wallets, ${TICKS} ticks; book built (engine start-up) in ${(buildMs / 1000).toFixed(2)} s`);
console.log(`  tick of a few points: ${summary(times)}`);
console.log(`  jump of ~30 spreads:  ${summary(jumpTimes)}`);
console.log(`  per tick on average: ${(evaluated / TICKS).toFixed(1)} wallets re-evaluated, ${(triggered / TICKS).toFixed(2)} SL/TP triggered; ${stoppedOut} stop-out closes in all`);
console.log(`  left: ${stats.orders} open orders, ${stats.wallets} wallets, ${stats.heapEntries} heap entries`);
