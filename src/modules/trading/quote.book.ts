/**
 * The current quote of each symbol, in memory: what orders open and close at, what
 * wallets are valued at, what the stream pushes. Only the risk engine changes it (it
 * applies each new quote, then runs the triggers; feed quotes are persisted after, admin
 * quotes before), so every reader sees quotes in the order they were applied.
 */
import type { Db } from '../../platform/db/database.js';
import { Decimal, formatFixed } from '../../platform/money.js';
import type { Instruments } from './instruments.js';
import { loadQuotes } from './trading.repository.js';

export interface Quote {
  symbol: string;
  bid: Decimal;
  ask: Decimal;
  time: Date;
  /** Increases with every quote applied (any symbol); the stream conflates by it. */
  seq: number;
}

export interface QuoteView {
  symbol: string;
  bid: string;
  ask: string;
  time: string;
}

export class QuoteBook {
  private readonly quotes = new Map<string, Quote>();
  private lastSeq = 0;
  private inputs: { seq: number; json: string } | undefined;

  constructor(private readonly instruments: Instruments) {}

  /** Stored quotes win over the configured start prices: the last quote survives a restart. */
  async load(db: Db): Promise<void> {
    const stored = new Map((await loadQuotes(db)).map((r) => [r.symbol, r]));
    for (const i of this.instruments.list()) {
      const row = stored.get(i.symbol);
      // On the symbol's price grid even if its digits were configured down since.
      if (row) this.set(i.symbol, new Decimal(row.bid).toDecimalPlaces(i.digits, Decimal.ROUND_FLOOR), new Decimal(row.ask).toDecimalPlaces(i.digits, Decimal.ROUND_CEIL), row.time);
      else if (i.startBid && i.startAsk) this.set(i.symbol, i.startBid, i.startAsk, new Date());
    }
  }

  get seq(): number {
    return this.lastSeq;
  }

  get(symbol: string): Quote | undefined {
    return this.quotes.get(symbol);
  }

  /** Every quote, in the instruments' order. */
  list(): Quote[] {
    const out: Quote[] = [];
    for (const s of this.instruments.symbols()) {
      const q = this.quotes.get(s);
      if (q) out.push(q);
    }
    return out;
  }

  set(symbol: string, bid: Decimal, ask: Decimal, time: Date): Quote {
    const q = { symbol, bid, ask, time, seq: ++this.lastSeq };
    this.quotes.set(symbol, q);
    return q;
  }

  /**
   * Every quote as JSON with exact decimal strings, `[{symbol, bid, ask}]`, for the
   * database's valuations (migrations 0007–0009); encoded once per change of the book,
   * not once per request.
   */
  inputsJson(): string {
    if (this.inputs?.seq !== this.lastSeq) {
      this.inputs = { seq: this.lastSeq, json: JSON.stringify(this.list().map((q) => ({ symbol: q.symbol, bid: q.bid.toFixed(), ask: q.ask.toFixed() }))) };
    }
    return this.inputs.json;
  }

  view(q: Quote): QuoteView {
    const digits = this.instruments.get(q.symbol)?.digits ?? q.bid.decimalPlaces();
    return { symbol: q.symbol, bid: formatFixed(q.bid, digits), ask: formatFixed(q.ask, digits), time: q.time.toISOString() };
  }
}
