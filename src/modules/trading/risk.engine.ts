/**
 * The risk engine: applies every new quote (simulated feed or admin) in order, and
 * closes what it triggers — stop-losses and take-profits at that quote's price,
 * stop-outs (lowest unrealized P&L first, ties the oldest, repeated until the level is
 * above STOP_OUT_LEVEL) — and raises one margin_call per crossing of MARGIN_CALL_LEVEL.
 *
 * Quotes and wallet checks run as tasks, one at a time, so triggers always see quotes
 * in order; closes inside a task run a few in parallel, each in its own transaction.
 * Which orders and wallets a quote touches comes from the RiskBook's heaps, never from
 * a scan. The engine has start/stop so that, with several processes, one elected
 * process can run it (an advisory lock around start) while the others forward quotes.
 */
import { randomUUID } from 'node:crypto';
import type { Db, Trx } from '../../platform/db/database.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import type { OrderRow } from '../../platform/db/schema.js';
import { ServiceUnavailableError } from '../../platform/errors.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatMoney } from '../../platform/money.js';
import type { TransactionService } from '../../platform/transaction.service.js';
import { insertAudit } from '../admin/admin.repository.js';
import { toOrderView, type ClosedOrder, type OpenedWallet, type OrderService, type OrderView, type TradingObserver, type WalletSnapshot } from './order.service.js';
import type { Quote, QuoteBook } from './quote.book.js';
import { centsToDecimal, RiskBook, textToCents, type BookOrderInput, type BookWallet, type Evaluation, type QuoteEffects } from './risk.book.js';
import { openOrdersPage, upsertQuotes, WALLET_CHANNEL, walletSnapshots, walletStates, walletsWithMarginAfter, type OpenOrderRow, type WalletStateRow } from './trading.repository.js';

export interface MarginCallData {
  walletType: string;
  marginLevel: string;
  equity: string;
  margin: string;
}

/** Wallets with positions read per query by the periodic resync. */
const RESYNC_PAGE = 2_000;

/**
 * How long a refresh gathers wallets before it reads them. Notices come one per operation
 * (a deposit to a wallet with positions, an order opened elsewhere…); read one by one,
 * their re-reads cost a quarter of the deposits a second this machine serves when half
 * the wallets hold positions (bench/FINDINGS.md, sixth round). A task that must see them
 * (a quote, a wallet check, a resync) takes them along at once.
 */
export const REFRESH_BATCH_MS = 20;

/** Where account events go (the stream hub). */
export interface AccountEvents {
  orderClosed(userId: string, order: OrderView): void;
  marginCall(userId: string, data: MarginCallData): void;
}

/** A quote as stored and as sent to the other processes. */
export interface QuoteRow {
  symbol: string;
  bid: string;
  ask: string;
  time: Date;
}

/** Where applied quotes go for the other processes (market.ts). */
export interface QuoteFanout {
  /** Inside an admin quote's transaction (a NOTIFY there is delivered on its commit). */
  inTransaction(trx: Trx, rows: QuoteRow[]): Promise<void>;
  /** Once applied (feed) or committed (admin: `admin` is true). Calls are sent in order. */
  publish(rows: QuoteRow[], admin: boolean): Promise<void>;
}

export interface QuoteInput {
  symbol: string;
  bid: Decimal;
  ask: Decimal;
}

export interface EngineOptions {
  /** Closes of one quote running at once (each its own transaction). */
  closeConcurrency: number;
  /** How often balances are re-read for wallets with positions (catches changes made elsewhere). */
  resyncIntervalMs: number;
}

interface AdminAudit {
  actorId: string;
  operationId: string;
  log: AppLogger;
}

type Task =
  | { kind: 'quotes'; quotes: Map<string, QuoteInput>; audit?: AdminAudit; resolve?: (r: { quotes: Quote[]; triggered: number }) => void; reject?: (e: unknown) => void }
  | { kind: 'wallets'; ids: Set<string> }
  | { kind: 'refresh'; ids: Set<string> }
  | { kind: 'resync'; pageSize?: number; done?: () => void };

function toBookOrder(o: OpenOrderRow | OrderRow): BookOrderInput {
  return {
    id: o.id,
    userId: o.userId,
    walletId: o.walletId,
    walletType: o.walletType,
    symbol: o.symbol,
    side: o.side,
    volume: new Decimal(o.volume),
    contractSize: new Decimal(o.contractSize),
    openPrice: new Decimal(o.openPrice),
    margin: new Decimal(o.margin),
    stopLoss: o.stopLoss === null ? null : new Decimal(o.stopLoss),
    takeProfit: o.takeProfit === null ? null : new Decimal(o.takeProfit),
    openedAt: o.openedAt,
  };
}

async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export class RiskEngine implements TradingObserver {
  private readonly queue: Task[] = [];
  private running: Promise<void> | undefined;
  private pendingFeed: Extract<Task, { kind: 'quotes' }> | undefined;
  private pendingRefresh: Extract<Task, { kind: 'refresh' }> | undefined;
  /** Set while pendingRefresh gathers wallets and is not queued yet. */
  private refreshTimer: NodeJS.Timeout | undefined;
  private pendingChecks: Extract<Task, { kind: 'wallets' }> | undefined;
  private pendingResync = false;
  private resyncTimer: NodeJS.Timeout | undefined;
  private started = false;
  private stopping = false;
  private hubAttached = false;
  /** Called once a quote task's quotes are applied (the streams push them). */
  onQuotesApplied: (() => void) | undefined;
  /** Fan-out of every applied quote to the other processes (undefined: a single process). */
  fanout: QuoteFanout | undefined;
  /** The last quote publish sent (they complete in order: one connection). */
  private publishing: Promise<void> = Promise.resolve();
  /** Feed quotes waiting to be stored, latest per symbol, and the store in progress. */
  private readonly unstored = new Map<string, QuoteRow>();
  private storing: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    private readonly tx: TransactionService,
    private readonly orders: OrderService,
    private readonly quotes: QuoteBook,
    readonly book: RiskBook,
    private readonly events: AccountEvents,
    private readonly log: AppLogger,
    private readonly options: EngineOptions,
  ) {}

  // --- life cycle --------------------------------------------------------------

  /** Loads every open order and the wallets holding them, then watches. */
  async start(hub?: NotificationHub): Promise<void> {
    for (const q of this.quotes.list()) this.book.setPrice(q.symbol, q.bid, q.ask);
    const rows: OpenOrderRow[] = [];
    for (let after = '0'; ;) {
      const page = await openOrdersPage(this.db, after, 10_000);
      rows.push(...page);
      if (page.length < 10_000) break;
      after = page[page.length - 1]!.id;
    }
    const walletIds = [...new Set(rows.map((r) => r.walletId))];
    for (let i = 0; i < walletIds.length; i += 10_000) {
      for (const w of await walletStates(this.db, walletIds.slice(i, i + 10_000))) this.book.upsertWallet(this.walletInput(w));
    }
    for (const r of rows) this.book.addOrder(toBookOrder(r));
    const stopOuts = new Set<string>();
    for (const w of this.book.wallets.values()) {
      // State after a restart: margin calls already in force are not raised again.
      if (this.book.evaluate(w).stopOut) stopOuts.add(w.id);
    }
    this.started = true;
    this.stopping = false;
    if (stopOuts.size) this.checkWallets(stopOuts);
    if (hub && !this.hubAttached) {
      // Once: the engine may start and stop several times (leadership changes).
      this.hubAttached = true;
      hub.on(WALLET_CHANNEL, (walletId) => this.walletChanged(walletId));
      hub.onReconnect(() => this.scheduleResync());
    }
    if (this.options.resyncIntervalMs > 0) {
      this.resyncTimer = setInterval(() => this.scheduleResync(), this.options.resyncIntervalMs);
      this.resyncTimer.unref();
    }
    this.log.info({ orders: rows.length, wallets: this.book.wallets.size }, 'risk engine started');
  }

  /** Stops taking work and waits for the task in progress (and those queued) to finish. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.resyncTimer = undefined;
    this.releaseRefresh();
    while (this.running) await this.running;
    await this.flushQuotes();
    this.started = false;
  }

  // --- input --------------------------------------------------------------------

  /** Quotes of the simulated feed: conflated while the engine is busy (only the latest counts). */
  submitFeedQuotes(quotes: QuoteInput[]): void {
    if (this.stopping || !this.started) return;
    if (this.pendingFeed) {
      for (const q of quotes) this.pendingFeed.quotes.set(q.symbol, q);
      return;
    }
    this.pendingFeed = { kind: 'quotes', quotes: new Map(quotes.map((q) => [q.symbol, q])) };
    this.enqueue(this.pendingFeed);
  }

  /**
   * An admin's quote: stored with its audit row, applied, and every close it triggers
   * committed before this resolves; `triggered` counts them.
   */
  submitAdminQuote(quote: QuoteInput, audit: AdminAudit): Promise<{ quote: Quote; triggered: number }> {
    if (this.stopping || !this.started) return Promise.reject(new ServiceUnavailableError('The server is shutting down'));
    return new Promise((resolve, reject) => {
      this.enqueue({
        kind: 'quotes', quotes: new Map([[quote.symbol, quote]]), audit, reject,
        resolve: (r) => resolve({ quote: r.quotes[0]!, triggered: r.triggered }),
      });
    });
  }

  /** Started and not stopping: this process runs the automatic processing. */
  get active(): boolean {
    return this.started && !this.stopping;
  }

  /** A wallet with positions changed outside trading (deposit, withdrawal, adjustment…). */
  walletChanged(walletId: string): void {
    if (this.active && this.book.wallets.has(walletId)) this.scheduleRefresh(walletId);
  }

  /**
   * An order of this wallet was opened, closed or modified by another process: the
   * wallet's balance and open orders (with their levels) are re-read from the database.
   */
  orderChangedElsewhere(walletId: string): void {
    if (this.active) this.scheduleRefresh(walletId);
  }

  /** Re-reads every wallet with positions now (instead of at the next interval), `pageSize` at a time; resolves when done. */
  syncNow(pageSize = RESYNC_PAGE): Promise<void> {
    return new Promise((resolve) => this.enqueue({ kind: 'resync', pageSize, done: resolve }));
  }

  private scheduleResync(): void {
    if (!this.active || this.pendingResync) return;
    this.pendingResync = true;
    this.enqueue({ kind: 'resync' });
  }

  private scheduleRefresh(walletId: string): void {
    if (this.stopping) return;
    if (this.pendingRefresh) {
      this.pendingRefresh.ids.add(walletId);
      return;
    }
    this.pendingRefresh = { kind: 'refresh', ids: new Set([walletId]) };
    this.refreshTimer = setTimeout(() => this.releaseRefresh(), REFRESH_BATCH_MS);
  }

  /** Queues the gathering refresh now (its timer, or a task that must come after it). */
  private releaseRefresh(): void {
    if (!this.refreshTimer) return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    this.enqueue(this.pendingRefresh!);
  }

  // --- after-commit notifications of the order service ---------------------------

  orderOpened(order: OrderRow, wallet: OpenedWallet): void {
    this.book.upsertWallet({ id: wallet.id, userId: wallet.userId, walletType: wallet.type, balance: new Decimal(wallet.balance) });
    this.book.addOrder(toBookOrder(order));
    this.check(order.walletId);
  }

  orderClosed(closed: ClosedOrder): void {
    this.afterClose(closed);
    this.check(closed.order.walletId);
  }

  orderModified(order: OrderRow): void {
    this.book.updateLevels(order.id, order.stopLoss === null ? null : new Decimal(order.stopLoss), order.takeProfit === null ? null : new Decimal(order.takeProfit));
  }

  // --- the queue ----------------------------------------------------------------

  private enqueue(task: Task): void {
    // Wallets notified before this task are re-read before it runs.
    if (task !== this.pendingRefresh) this.releaseRefresh();
    this.queue.push(task);
    if (this.running) return;
    this.running = (async () => {
      while (this.queue.length > 0) {
        const t = this.queue.shift()!;
        if (t === this.pendingFeed) this.pendingFeed = undefined;
        if (t === this.pendingRefresh) this.pendingRefresh = undefined;
        if (t === this.pendingChecks) this.pendingChecks = undefined;
        if (t.kind === 'resync') this.pendingResync = false;
        try {
          await this.run(t);
        } catch (err) {
          this.log.error({ err, task: t.kind }, 'risk engine task failed');
          if (t.kind === 'quotes') t.reject?.(err);
        }
      }
      this.running = undefined;
    })();
  }

  private async run(t: Task): Promise<void> {
    switch (t.kind) {
      case 'quotes': return this.runQuotes(t);
      case 'wallets': {
        await this.stopOutAll([...t.ids], randomUUID(), this.log);
        return;
      }
      case 'refresh': return this.refresh([...t.ids]);
      case 'resync':
        try {
          return await this.resync(t.pageSize);
        } finally {
          t.done?.();
        }
    }
  }

  /**
   * Applies quotes. A feed quote is applied and published first and stored afterwards,
   * in the background (the latest per symbol, one store at a time): its age when it
   * reaches the streams must not include waiting for a pool connection, and a feed quote
   * that cannot be stored still moves the price (the next one is stored). An admin quote
   * is stored with its audit row first (its answer promises both), then applied.
   */
  private async runQuotes(t: Extract<Task, { kind: 'quotes' }>): Promise<void> {
    const time = new Date();
    const list = [...t.quotes.values()];
    const rows: QuoteRow[] = list.map((q) => ({ symbol: q.symbol, bid: q.bid.toFixed(), ask: q.ask.toFixed(), time }));
    const operationId = t.audit?.operationId ?? randomUUID();
    const log = t.audit?.log ?? this.log;
    if (t.audit) {
      const audit = t.audit;
      const view = this.quotes.view({ ...list[0]!, time, seq: 0 });
      // Earlier feed quotes stored and sent first: an older quote must not overwrite this one.
      await this.flushQuotes();
      await this.tx.executeWithRetry(async (trx) => {
        await upsertQuotes(trx, rows);
        await this.fanout?.inTransaction(trx, rows);
        await insertAudit(trx, { actorId: audit.actorId, action: 'quote', targetUserId: null, operationId, details: { symbol: view.symbol, bid: view.bid, ask: view.ask } });
      }, { operation: 'admin_quote', log });
      this.publish(rows, true);
    } else {
      this.publish(rows, false);
      this.storeLater(rows);
    }
    const applied: Quote[] = [];
    const effects: QuoteEffects = { triggered: [], wallets: [] };
    for (const q of list) {
      applied.push(this.quotes.set(q.symbol, q.bid, q.ask, time));
      const e = this.book.applyQuote(q.symbol, q.bid, q.ask);
      effects.triggered.push(...e.triggered);
      effects.wallets.push(...e.wallets);
    }
    this.onQuotesApplied?.();
    const triggered = await this.process(effects, operationId, log);
    if (triggered > 0) log.info({ triggered, symbols: list.map((q) => q.symbol) }, 'quote triggered closes');
    t.resolve?.({ quotes: applied, triggered });
  }

  private publish(rows: QuoteRow[], admin: boolean): void {
    if (!this.fanout) return;
    this.publishing = this.fanout.publish(rows, admin).catch((err: unknown) => this.log.warn({ err }, 'could not publish quotes'));
  }

  private storeLater(rows: QuoteRow[]): void {
    for (const r of rows) this.unstored.set(r.symbol, r);
    if (this.storing) return;
    this.storing = (async () => {
      while (this.unstored.size > 0) {
        const batch = [...this.unstored.values()];
        this.unstored.clear();
        await upsertQuotes(this.db, batch).catch((err: unknown) => this.log.warn({ err }, 'could not store feed quotes'));
      }
      this.storing = undefined;
    })();
  }

  /** Waits until every feed quote applied so far is stored and published. */
  private async flushQuotes(): Promise<void> {
    while (this.storing) await this.storing;
    await this.publishing;
  }

  /** Closes what a quote triggered, then evaluates the wallets it moved. Returns the closes. */
  private async process(effects: QuoteEffects, operationId: string, log: AppLogger): Promise<number> {
    let count = 0;
    const touched = new Set(effects.wallets.map((w) => w.id));
    await eachLimited(effects.triggered, this.options.closeConcurrency, async ({ order, reason }) => {
      const price = this.book.price(order.symbol)!;
      try {
        const r = await this.orders.closeTriggered(order.id, reason, price, operationId, log);
        if (r.kind === 'closed') {
          count++;
          this.afterClose(r.closed);
        } else if (r.order?.status === 'open') {
          // Its levels changed meanwhile: watch the current ones.
          this.orderModified(r.order);
          this.book.release(order.id);
        } else {
          this.book.removeOrder(order.id);
        }
      } catch (err) {
        log.error({ err, orderId: order.id, reason }, 'triggered close failed; retried on the next quote');
        this.book.release(order.id);
      }
      touched.add(order.walletId);
    });
    const stopOuts: string[] = [];
    for (const id of touched) {
      const w = this.book.wallets.get(id);
      if (w && this.assess(w).stopOut) stopOuts.push(id);
    }
    return count + (await this.stopOutAll(stopOuts, operationId, log));
  }

  private async stopOutAll(walletIds: string[], operationId: string, log: AppLogger): Promise<number> {
    let count = 0;
    await eachLimited(walletIds, this.options.closeConcurrency, async (id) => {
      try {
        count += await this.stopOut(id, operationId, log);
      } catch (err) {
        log.error({ err, walletId: id }, 'stop-out failed; retried on the next quote');
      }
    });
    return count;
  }

  /** Closes the wallet's worst order while it is at or below the stop-out level. */
  private async stopOut(walletId: string, operationId: string, log: AppLogger): Promise<number> {
    let closed = 0;
    let next: string | undefined; // the database's choice after a repick
    for (let guard = 0; guard < 1_000; guard++) {
      const w = this.book.wallets.get(walletId);
      if (!w || !this.assess(w).stopOut) break;
      const candidate = (next !== undefined && w.orders.has(next) ? next : undefined) ?? this.book.lowestPnl(w)?.id;
      next = undefined;
      if (candidate === undefined) break;
      const seq = w.seq;
      const step = await this.orders.stopOutStep(walletId, candidate, (s) => this.book.price(s), operationId, log);
      if (step.kind === 'closed') {
        closed++;
        this.afterClose(step.closed);
        continue;
      }
      if (step.kind === 'gone') break;
      // The book was behind the database: take the locked state (and its choice).
      this.sync(walletId, step.state, seq);
      if (step.kind === 'safe') break;
      next = step.orderId;
    }
    return closed;
  }

  // --- keeping the book in step with the database ---------------------------------

  private afterClose(closed: ClosedOrder): void {
    this.book.removeOrder(closed.order.id);
    this.book.setBalance(closed.order.walletId, new Decimal(closed.wallet.balance));
    this.events.orderClosed(closed.order.userId, toOrderView(closed.order));
  }

  /** Evaluates a wallet after a change made outside a task; stop-outs go to the queue. */
  private check(walletId: string): void {
    const w = this.book.wallets.get(walletId);
    if (w && this.assess(w).stopOut) this.checkWallets([walletId]);
  }

  private checkWallets(ids: Iterable<string>): void {
    if (this.stopping) return;
    if (!this.pendingChecks) {
      this.pendingChecks = { kind: 'wallets', ids: new Set() };
      this.enqueue(this.pendingChecks);
    }
    for (const id of ids) this.pendingChecks.ids.add(id);
  }

  /** Evaluates a wallet exactly and sends its margin call when it just crossed. */
  private assess(w: BookWallet): Evaluation {
    const ev = this.book.evaluate(w);
    if (ev.marginCallRaised) {
      const equity = centsToDecimal(ev.equityCents);
      const margin = centsToDecimal(ev.marginCents);
      this.events.marginCall(w.userId, {
        walletType: w.walletType,
        marginLevel: formatMoney(equity.div(margin).times(100)),
        equity: formatMoney(equity),
        margin: formatMoney(margin),
      });
    }
    return ev;
  }

  private walletInput(w: WalletStateRow) {
    return { id: w.id, userId: w.userId, walletType: w.type, balance: new Decimal(w.balance) };
  }

  /**
   * Replaces a wallet's orders and balance by what the database showed, unless the book
   * moved since the read (`seq`, -1 when the wallet was not in the book): then the
   * wallet is read again later.
   */
  private sync(walletId: string, state: WalletSnapshot, seq: number): void {
    const w = this.book.wallets.get(walletId);
    if ((w?.seq ?? -1) !== seq) {
      this.scheduleRefresh(walletId);
      return;
    }
    const dbIds = new Set(state.orders.map((o) => o.id));
    if (w) for (const id of [...w.orders.keys()]) if (!dbIds.has(id)) this.book.removeOrder(id);
    if (state.orders.length === 0) return;
    const first = state.orders[0]!;
    this.book.upsertWallet({ id: walletId, userId: first.userId, walletType: first.walletType, balance: new Decimal(state.balance) });
    for (const o of state.orders) {
      const b = this.book.orders.get(o.id);
      if (!b) {
        this.book.addOrder(toBookOrder(o));
        continue;
      }
      // Levels changed by another process (or a modify the book missed).
      const sl = o.stopLoss === null ? null : new Decimal(o.stopLoss);
      const tp = o.takeProfit === null ? null : new Decimal(o.takeProfit);
      const same = (a: Decimal | null, c: Decimal | null) => (a === null ? c === null : c !== null && a.eq(c));
      if (!same(b.stopLoss, sl) || !same(b.takeProfit, tp)) this.book.updateLevels(o.id, sl, tp);
    }
  }

  /** Re-reads some wallets (balance and open orders, one statement) and re-evaluates them. */
  private async refresh(ids: string[]): Promise<void> {
    const seqs = new Map(ids.map((id) => [id, this.book.wallets.get(id)?.seq ?? -1]));
    const stopOuts: string[] = [];
    for (const s of await walletSnapshots(this.db, ids)) {
      this.sync(s.id, s, seqs.get(s.id)!);
      const w = this.book.wallets.get(s.id);
      if (w && this.assess(w).stopOut) stopOuts.push(s.id);
    }
    if (stopOuts.length) await this.stopOutAll(stopOuts, randomUUID(), this.log);
  }

  /**
   * Every wallet with positions, re-read: balances changed by deposits, adjustments or
   * other processes, and any drift between the book and the orders table.
   */
  private async resync(pageSize = RESYNC_PAGE): Promise<void> {
    pageSize = Math.max(1, Math.floor(pageSize));
    const seqs = new Map<string, number>();
    for (const w of this.book.wallets.values()) seqs.set(w.id, w.seq);
    const reload: string[] = [];
    const seen = new Set<string>();
    const same = (cents: bigint, text: string) => {
      const c = textToCents(text);
      return c === undefined ? centsToDecimal(cents).cmp(text) === 0 : c === cents;
    };
    // In pages: 50,000 wallets with positions in one read and one loop held the leader's
    // event loop for a fifth of a second every interval (bench/FINDINGS.md, fifth round). A
    // wallet the book changed meanwhile has a new seq and is skipped, as one changed since
    // the read always was. The engine's queue waits for the whole resync, as it waited for
    // the single read before (a quote meanwhile is applied when it ends, the latest one).
    for (let after = '0'; ;) {
      if (!this.active) return; // stopping: no fallback reload of everything below
      const rows = await walletsWithMarginAfter(this.db, after, pageSize);
      for (const r of rows) {
        seen.add(r.id);
        const w = this.book.wallets.get(r.id);
        if (!w) {
          if (!seqs.has(r.id)) reload.push(r.id);
          continue;
        }
        if (seqs.get(r.id) !== w.seq) continue;
        if (!same(w.marginCents, r.margin) || !same(w.balanceCents, r.balance)) reload.push(r.id);
      }
      if (rows.length < pageSize) break;
      after = rows[rows.length - 1]!.id;
    }
    for (const [id, seq] of seqs) if (!seen.has(id) && this.book.wallets.get(id)?.seq === seq) reload.push(id);
    if (reload.length) await this.refresh(reload);
  }
}
