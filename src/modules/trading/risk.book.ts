/**
 * The risk engine's in-memory index of open positions. A new quote must not cost a
 * scan of every order or wallet, so everything a quote can trigger sits in heaps per
 * symbol, keyed by the price (in integer ticks of the symbol's digits) at which it
 * triggers; a quote pops only what it reached:
 *
 * - stop-loss and take-profit levels of open orders, one heap per side and kind;
 * - for each wallet, a "safe band" per symbol it trades: how far that symbol's bid may
 *   fall (buys) or its ask rise (sells) before the wallet could reach the next margin
 *   threshold (margin call, or stop-out once in margin call). The wallet's slack
 *   (equity − threshold, less a cent per order for the per-order rounding) is split
 *   between its symbols, so while every symbol stays inside its band the wallet is
 *   provably above the threshold. A quote outside a band re-evaluates that wallet
 *   exactly and draws new bands. In margin call, upper bands watch for recovery.
 *
 * All arithmetic here is exact integer arithmetic: prices in ticks, money in cents,
 * P&L rounded half-to-even to the cent per order as its close would be (bigint; the
 * decimal library would cost ten times more per wallet).
 *
 * Entries are never removed in place: each carries the version of its order or wallet
 * and is skipped when stale; heaps are compacted when stale entries dominate.
 * Nothing here touches the database: the engine acts on what the book reports, and the
 * book only chooses what to look at. Every decision is re-checked under row locks.
 */
import type { OrderSide, WalletType } from '../../platform/db/schema.js';
import { Decimal, roundCents } from '../../platform/money.js';
import { Heap } from './heap.js';
import { closePriceOf, rawProfit } from './pricing.js';

export type TriggerReason = 'stop_loss' | 'take_profit';

export interface BookOrderInput {
  id: string;
  userId: string;
  walletId: string;
  walletType: WalletType;
  symbol: string;
  side: OrderSide;
  volume: Decimal;
  contractSize: Decimal;
  openPrice: Decimal;
  margin: Decimal;
  stopLoss: Decimal | null;
  takeProfit: Decimal | null;
  openedAt: Date;
}

export interface BookOrder extends BookOrderInput {
  idNum: bigint;
  exposure: Decimal;
  marginCents: bigint;
  /** Open price in ticks of the symbol's digits; undefined when it is off that grid (then valued with decimals). */
  openT: bigint | undefined;
  /** P&L in cents = (closeT − openT) × pnlFactor / pnlDivisor (negated for a sell), before rounding. */
  pnlFactor: bigint;
  pnlDivisor: bigint;
  /** volume × contractSize × 10^8, rounded up: the sensitivity used for bands. */
  exposure8: bigint;
  /** Version of its stop-loss / take-profit entries. */
  v: number;
  /** A close of it is in flight: its levels must not trigger again meanwhile. */
  closing: boolean;
}

export interface BookWallet {
  id: string;
  userId: string;
  walletType: WalletType;
  balanceCents: bigint;
  marginCents: bigint;
  orders: Map<string, BookOrder>;
  /** Open orders per symbol. */
  symbols: Map<string, number>;
  marginCall: boolean;
  /** Version of its band entries. */
  v: number;
  /** Changes on every change of the wallet; a slow read of it applies only if this did not move. */
  seq: number;
}

export interface Evaluation {
  equityCents: bigint;
  marginCents: bigint;
  openOrders: number;
  stopOut: boolean;
  /** The level fell to or below the margin-call level just now (send the event). */
  marginCallRaised: boolean;
}

export interface QuoteEffects {
  triggered: { order: BookOrder; reason: TriggerReason }[];
  wallets: BookWallet[];
}

interface Entry {
  key: bigint;
  id: string;
  v: number;
}

const maxHeap = () => new Heap<Entry>((a, b) => a.key > b.key);
const minHeap = () => new Heap<Entry>((a, b) => a.key < b.key);
const pow10 = (n: number) => 10n ** BigInt(n);

const DECIMAL_POW10 = Array.from({ length: 24 }, (_, i) => new Decimal(10).pow(i));

/** Decimal → integer units of 10^-places, exactly (the value has at most `places` decimals). */
function toUnits(value: Decimal, places: number): bigint {
  return BigInt(value.times(DECIMAL_POW10[places] ?? new Decimal(10).pow(places)).toFixed(0));
}

/**
 * Money as PostgreSQL prints a numeric of scale 2 ("-12.30") in cents, without the
 * decimal library (the engine's resync compares every wallet with positions each time);
 * undefined for any other form.
 */
export function textToCents(text: string): bigint | undefined {
  const m = /^(-?)(\d+)\.(\d\d)$/.exec(text);
  if (!m) return undefined;
  const cents = BigInt(m[2]! + m[3]!);
  return m[1] ? -cents : cents;
}

export function centsToDecimal(cents: bigint): Decimal {
  return new Decimal(cents.toString()).div(100);
}

/** num / den rounded half-to-even (den > 0). */
function divHalfEven(num: bigint, den: bigint): bigint {
  const neg = num < 0n;
  const a = neg ? -num : num;
  let q = a / den;
  const r2 = (a % den) * 2n;
  if (r2 > den || (r2 === den && (q & 1n) === 1n)) q += 1n;
  return neg ? -q : q;
}

class SymbolBook {
  readonly scale: Decimal;
  /** 10^(digits + 2): a move of t ticks costs t × exposure8 / bandScale, in micro-dollars (10^-6 USD). */
  readonly bandScale: bigint;
  bid: Decimal | undefined;
  ask: Decimal | undefined;
  bidT = 0n;
  askT = 0n;
  /** Buy stop-loss: triggers when bid ≤ level (max-heap). */
  readonly slBuy = maxHeap();
  /** Buy take-profit: bid ≥ level (min-heap). */
  readonly tpBuy = minHeap();
  /** Sell stop-loss: ask ≥ level (min-heap). */
  readonly slSell = minHeap();
  /** Sell take-profit: ask ≤ level (max-heap). */
  readonly tpSell = maxHeap();
  /** Wallet bands: bid below the key (max-heap), ask above it (min-heap)… */
  readonly downBid = maxHeap();
  readonly downAsk = minHeap();
  /** …and, in margin call, bid above / ask below it (recovery). */
  readonly upBid = minHeap();
  readonly upAsk = maxHeap();
  orders = 0;
  wallets = 0;

  constructor(readonly symbol: string, readonly digits: number) {
    this.scale = new Decimal(10).pow(digits);
    this.bandScale = pow10(digits + 2);
  }

  ticksFloor(price: Decimal): bigint {
    return BigInt(price.times(this.scale).floor().toFixed(0));
  }

  ticksCeil(price: Decimal): bigint {
    return BigInt(price.times(this.scale).ceil().toFixed(0));
  }
}

export interface RiskLevels {
  stopOutLevel: Decimal;
  marginCallLevel: Decimal;
}

export class RiskBook {
  readonly orders = new Map<string, BookOrder>();
  readonly wallets = new Map<string, BookWallet>();
  private readonly books = new Map<string, SymbolBook>();
  /** Source of wallet `seq` values: unique across wallets, so a wallet re-created after leaving never repeats one. */
  private clock = 0;
  /** Levels in hundredths of a percent (50 % → 5000). */
  private readonly stopOutH: bigint;
  private readonly marginCallH: bigint;

  constructor(
    levels: RiskLevels,
    private readonly digitsOf: (symbol: string) => number | undefined,
  ) {
    this.stopOutH = toUnits(levels.stopOutLevel, 2);
    this.marginCallH = toUnits(levels.marginCallLevel, 2);
  }

  private book(symbol: string, digitsHint = 2): SymbolBook {
    let b = this.books.get(symbol);
    if (!b) {
      b = new SymbolBook(symbol, this.digitsOf(symbol) ?? digitsHint);
      this.books.set(symbol, b);
    }
    return b;
  }

  // --- prices -----------------------------------------------------------------

  /** Sets a symbol's price without triggering anything (start-up). */
  setPrice(symbol: string, bid: Decimal, ask: Decimal): void {
    const b = this.book(symbol, bid.decimalPlaces());
    b.bid = bid;
    b.ask = ask;
    b.bidT = b.ticksFloor(bid);
    b.askT = b.ticksCeil(ask);
  }

  price(symbol: string): { bid: Decimal; ask: Decimal } | undefined {
    const b = this.books.get(symbol);
    return b?.bid && b.ask ? { bid: b.bid, ask: b.ask } : undefined;
  }

  /**
   * A new quote: returns the orders whose stop-loss or take-profit it reached (marked
   * closing) and the wallets whose band it left (to be evaluated). Cost: the entries
   * popped, times log n.
   */
  applyQuote(symbol: string, bid: Decimal, ask: Decimal): QuoteEffects {
    this.setPrice(symbol, bid, ask);
    const b = this.book(symbol);
    const triggered: QuoteEffects['triggered'] = [];
    const take = (heap: Heap<Entry>, reached: (key: bigint) => boolean, reason: TriggerReason) => {
      for (let top = heap.peek(); top && reached(top.key); top = heap.peek()) {
        heap.pop();
        const o = this.orders.get(top.id);
        if (!o || o.v !== top.v || o.closing) continue;
        o.closing = true;
        triggered.push({ order: o, reason });
      }
    };
    take(b.slBuy, (k) => b.bidT <= k, 'stop_loss');
    take(b.tpBuy, (k) => b.bidT >= k, 'take_profit');
    take(b.slSell, (k) => b.askT >= k, 'stop_loss');
    take(b.tpSell, (k) => b.askT <= k, 'take_profit');

    const wallets = new Map<string, BookWallet>();
    const leave = (heap: Heap<Entry>, outside: (key: bigint) => boolean) => {
      for (let top = heap.peek(); top && outside(top.key); top = heap.peek()) {
        heap.pop();
        const w = this.wallets.get(top.id);
        if (w && w.v === top.v) wallets.set(w.id, w);
      }
    };
    leave(b.downBid, (k) => b.bidT < k);
    leave(b.downAsk, (k) => b.askT > k);
    leave(b.upBid, (k) => b.bidT > k);
    leave(b.upAsk, (k) => b.askT < k);
    return { triggered, wallets: [...wallets.values()] };
  }

  // --- wallets and orders --------------------------------------------------------

  /** Creates or updates a wallet's balance; returns it. */
  upsertWallet(s: { id: string; userId: string; walletType: WalletType; balance: Decimal }): BookWallet {
    let w = this.wallets.get(s.id);
    if (!w) {
      w = {
        id: s.id, userId: s.userId, walletType: s.walletType, balanceCents: toUnits(s.balance, 2), marginCents: 0n,
        orders: new Map(), symbols: new Map(), marginCall: false, v: 0, seq: ++this.clock,
      };
      this.wallets.set(s.id, w);
    } else this.setBalance(s.id, s.balance);
    return w;
  }

  setBalance(walletId: string, balance: Decimal): void {
    const w = this.wallets.get(walletId);
    const cents = toUnits(balance, 2);
    if (w && w.balanceCents !== cents) {
      w.balanceCents = cents;
      w.seq = ++this.clock;
    }
  }

  balance(walletId: string): Decimal | undefined {
    const w = this.wallets.get(walletId);
    return w && centsToDecimal(w.balanceCents);
  }

  /** Adds an open order (its wallet must be known, see upsertWallet). */
  addOrder(input: BookOrderInput): BookOrder {
    const existing = this.orders.get(input.id);
    if (existing) return existing;
    const w = this.wallets.get(input.walletId);
    if (!w) throw new Error(`wallet ${input.walletId} is not in the book`);
    const b = this.book(input.symbol, input.openPrice.decimalPlaces());
    const csPlaces = input.contractSize.decimalPlaces();
    const lotsX100 = toUnits(input.volume, 2);
    const cs = toUnits(input.contractSize, csPlaces);
    const openScaled = input.openPrice.times(b.scale);
    // lots × contractSize × 10^8 = (lots×100) × (cs×10^c) × 10^(6−c); rounded up past 6 decimals of cs
    const exposure8 = csPlaces <= 6 ? lotsX100 * cs * pow10(6 - csPlaces) : (lotsX100 * cs + pow10(csPlaces - 6) - 1n) / pow10(csPlaces - 6);
    // An explicit literal: spreading `input` here costs ten times more (100,000 orders at start-up).
    const o: BookOrder = {
      id: input.id,
      userId: input.userId,
      walletId: input.walletId,
      walletType: input.walletType,
      symbol: input.symbol,
      side: input.side,
      volume: input.volume,
      contractSize: input.contractSize,
      openPrice: input.openPrice,
      margin: input.margin,
      stopLoss: input.stopLoss,
      takeProfit: input.takeProfit,
      openedAt: input.openedAt,
      idNum: BigInt(input.id),
      exposure: input.volume.times(input.contractSize),
      marginCents: toUnits(input.margin, 2),
      openT: openScaled.isInteger() ? BigInt(openScaled.toFixed(0)) : undefined,
      // P&L in USD = Δticks/10^d × lots × cs; in cents: Δticks × (lots×100) × (cs×10^c) / 10^(d+c)
      pnlFactor: lotsX100 * cs,
      pnlDivisor: pow10(b.digits + csPlaces),
      exposure8,
      v: 0,
      closing: false,
    };
    this.orders.set(o.id, o);
    w.orders.set(o.id, o);
    w.marginCents += o.marginCents;
    w.seq = ++this.clock;
    b.orders++;
    const n = w.symbols.get(o.symbol) ?? 0;
    w.symbols.set(o.symbol, n + 1);
    if (n === 0) b.wallets++;
    this.pushLevels(o);
    return o;
  }

  /** Removes an order (closed); a wallet left without orders leaves the book. */
  removeOrder(orderId: string): BookOrder | undefined {
    const o = this.orders.get(orderId);
    if (!o) return undefined;
    this.orders.delete(orderId);
    o.v++;
    const b = this.book(o.symbol);
    b.orders--;
    const w = this.wallets.get(o.walletId);
    if (w) {
      w.orders.delete(orderId);
      w.marginCents -= o.marginCents;
      w.seq = ++this.clock;
      const n = (w.symbols.get(o.symbol) ?? 1) - 1;
      if (n === 0) {
        w.symbols.delete(o.symbol);
        b.wallets--;
      } else w.symbols.set(o.symbol, n);
      if (w.orders.size === 0) {
        w.v++;
        this.wallets.delete(w.id);
      }
    }
    return o;
  }

  /** New stop-loss / take-profit of an open order. */
  updateLevels(orderId: string, stopLoss: Decimal | null, takeProfit: Decimal | null): void {
    const o = this.orders.get(orderId);
    if (!o) return;
    o.stopLoss = stopLoss;
    o.takeProfit = takeProfit;
    o.v++;
    if (!o.closing) this.pushLevels(o);
  }

  /** A triggered close did not happen (the levels changed, or it failed): watch the order again. */
  release(orderId: string): void {
    const o = this.orders.get(orderId);
    if (!o || !o.closing) return;
    o.closing = false;
    o.v++;
    this.pushLevels(o);
  }

  private pushLevels(o: BookOrder): void {
    const b = this.book(o.symbol);
    if (o.stopLoss) {
      if (o.side === 'buy') this.push(b, b.slBuy, { key: b.ticksFloor(o.stopLoss), id: o.id, v: o.v }, b.orders);
      else this.push(b, b.slSell, { key: b.ticksCeil(o.stopLoss), id: o.id, v: o.v }, b.orders);
    }
    if (o.takeProfit) {
      if (o.side === 'buy') this.push(b, b.tpBuy, { key: b.ticksCeil(o.takeProfit), id: o.id, v: o.v }, b.orders);
      else this.push(b, b.tpSell, { key: b.ticksFloor(o.takeProfit), id: o.id, v: o.v }, b.orders);
    }
  }

  /** Pushes an entry; compacts the heap when stale entries outnumber live ones. */
  private push(b: SymbolBook, heap: Heap<Entry>, e: Entry, live: number): void {
    heap.push(e);
    if (heap.size > 2 * live + 256) {
      const isOrderHeap = heap === b.slBuy || heap === b.tpBuy || heap === b.slSell || heap === b.tpSell;
      heap.retain(isOrderHeap
        ? (x) => { const o = this.orders.get(x.id); return !!o && o.v === x.v && !o.closing; }
        : (x) => this.wallets.get(x.id)?.v === x.v);
    }
  }

  // --- valuation ----------------------------------------------------------------

  /** An order's unrealized P&L in cents at the current price, rounded half-to-even as its close would be. */
  pnlCents(o: BookOrder): bigint {
    const b = this.books.get(o.symbol);
    if (!b?.bid || !b.ask) return 0n;
    if (o.openT === undefined) {
      return toUnits(roundCents(rawProfit(o.side, o.openPrice, closePriceOf(o.side, { bid: b.bid, ask: b.ask }), o.exposure)), 2);
    }
    const diff = o.side === 'buy' ? b.bidT - o.openT : o.openT - b.askT;
    return divHalfEven(diff * o.pnlFactor, o.pnlDivisor);
  }

  /** The order a stop-out closes first: lowest unrealized P&L, ties the oldest. */
  lowestPnl(w: BookWallet): BookOrder | undefined {
    let best: BookOrder | undefined;
    let bestPnl = 0n;
    for (const o of w.orders.values()) {
      if (o.closing) continue;
      const p = this.pnlCents(o);
      if (!best || p < bestPnl || (p === bestPnl && (o.openedAt.getTime() < best.openedAt.getTime() || (o.openedAt.getTime() === best.openedAt.getTime() && o.idNum < best.idNum)))) {
        best = o;
        bestPnl = p;
      }
    }
    return best;
  }

  /**
   * Values a wallet exactly at the current prices, updates its margin-call state and
   * draws its new bands. The caller acts on `stopOut` and `marginCallRaised`.
   */
  evaluate(w: BookWallet): Evaluation {
    w.v++;
    let equity = w.balanceCents;
    const exposures = new Map<string, { exposure8: bigint; buys: boolean; sells: boolean }>();
    for (const o of w.orders.values()) {
      equity += this.pnlCents(o);
      const e = exposures.get(o.symbol);
      if (e) {
        e.exposure8 += o.exposure8;
        if (o.side === 'buy') e.buys = true;
        else e.sells = true;
      } else exposures.set(o.symbol, { exposure8: o.exposure8, buys: o.side === 'buy', sells: o.side === 'sell' });
    }
    const margin = w.marginCents;
    const n = w.orders.size;
    if (n === 0 || margin <= 0n) {
      w.marginCall = false;
      return { equityCents: equity, marginCents: margin, openOrders: n, stopOut: false, marginCallRaised: false };
    }
    // equity / margin × 100 ≤ level  ⟺  equity × 10000 ≤ level×100 × margin (all integers)
    const equity4 = equity * 10000n;
    const stopOut = equity4 <= this.stopOutH * margin;
    const inMarginCall = equity4 <= this.marginCallH * margin;
    const marginCallRaised = inMarginCall && !w.marginCall;
    w.marginCall = inMarginCall;

    // Bands, in micro-dollars (equity4 = cents × 10^4). The rounding of each order's P&L can move equity by up to
    // a cent per order beyond the linear move; one more cent keeps the threshold
    // strictly out of reach.
    const rounding = BigInt(n + 1) * 10000n;
    const k = BigInt(exposures.size);
    const downLevel = inMarginCall || this.stopOutH > this.marginCallH ? this.stopOutH : this.marginCallH;
    const downSlack = equity4 - downLevel * margin - rounding;
    const down = downSlack > 0n ? downSlack / k : 0n;
    let up = -1n;
    if (inMarginCall) {
      const upSlack = this.marginCallH * margin - equity4 - rounding;
      up = upSlack > 0n ? upSlack / k : 0n;
    }
    for (const [symbol, { exposure8, buys, sells }] of exposures) {
      const b = this.books.get(symbol);
      if (!b?.bid || !b.ask || exposure8 === 0n) continue;
      // Ticks the price may move against the wallet while the loss stays within `down`
      // (a buy loses as the bid falls, a sell as the ask rises; both bounded by the total).
      const dd = (down * b.bandScale) / exposure8;
      const live = b.wallets;
      if (buys) this.push(b, b.downBid, { key: b.bidT - dd, id: w.id, v: w.v }, live);
      if (sells) this.push(b, b.downAsk, { key: b.askT + dd, id: w.id, v: w.v }, live);
      if (up >= 0n) {
        const du = (up * b.bandScale) / exposure8;
        if (buys) this.push(b, b.upBid, { key: b.bidT + du, id: w.id, v: w.v }, live);
        if (sells) this.push(b, b.upAsk, { key: b.askT - du, id: w.id, v: w.v }, live);
      }
    }
    return { equityCents: equity, marginCents: margin, openOrders: n, stopOut, marginCallRaised };
  }

  /** Forgets every order, wallet and price (this process stopped being the leader). */
  clear(): void {
    this.orders.clear();
    this.wallets.clear();
    this.books.clear();
  }

  /** Sizes of the heaps, for tests and the benchmark. */
  stats() {
    let entries = 0;
    for (const b of this.books.values()) {
      entries += b.slBuy.size + b.tpBuy.size + b.slSell.size + b.tpSell.size + b.downBid.size + b.downAsk.size + b.upBid.size + b.upAsk.size;
    }
    return { orders: this.orders.size, wallets: this.wallets.size, heapEntries: entries };
  }
}
