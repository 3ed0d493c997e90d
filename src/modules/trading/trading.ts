/**
 * The trading module's parts, wired: instruments, quotes, orders, the risk engine, the
 * price feed and the stream hub. Also plugs the module into the others: wallet
 * valuation, the free-margin check of withdrawals and transfers, the margin part of
 * reconciliation, and stream revocation on logout, password change and block.
 */
import type { Config } from '../../config.js';
import type { Db } from '../../platform/db/database.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import { DomainError, ValidationError } from '../../platform/errors.js';
import type { IdempotencyService } from '../../platform/idempotency.service.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import type { TransactionService } from '../../platform/transaction.service.js';
import type { AdminService } from '../admin/admin.service.js';
import type { UserStateCache } from '../auth/user-state.cache.js';
import type { FinancialService } from '../wallets/financial.service.js';
import type { WalletService } from '../wallets/wallet.service.js';
import { Instruments, toSymbolView } from './instruments.js';
import { OrderService, type OrderClosedHook } from './order.service.js';
import { SimulatedPriceFeed } from './price.feed.js';
import { textDecimals } from './pricing.js';
import { QuoteBook } from './quote.book.js';
import { RiskBook } from './risk.book.js';
import { RiskEngine } from './risk.engine.js';
import { StreamHub } from './stream.hub.js';

export interface TradingDeps {
  config: Readonly<Config>;
  db: Db;
  log: AppLogger;
  hub?: NotificationHub;
  tx: TransactionService;
  idempotency: IdempotencyService;
  financial: FinancialService;
  wallets: WalletService;
  admin: AdminService;
  userCache: UserStateCache;
}

export interface TradingOptions {
  closeConcurrency?: number;
  resyncIntervalMs?: number;
}

export class Trading {
  readonly instruments: Instruments;
  readonly quotes: QuoteBook;
  readonly orders: OrderService;
  readonly book: RiskBook;
  readonly engine: RiskEngine;
  readonly streams: StreamHub;
  readonly feed: SimulatedPriceFeed | undefined;

  constructor(private readonly deps: TradingDeps, options: TradingOptions = {}) {
    const { config, db, log } = deps;
    const levels = { stopOutLevel: new Decimal(config.stopOutLevel), marginCallLevel: new Decimal(config.marginCallLevel) };
    this.instruments = new Instruments(config.symbols);
    this.quotes = new QuoteBook(this.instruments);
    this.orders = new OrderService(db, deps.tx, deps.idempotency, deps.financial, deps.wallets, this.instruments, this.quotes, levels.stopOutLevel);
    this.book = new RiskBook(levels, (s) => this.instruments.get(s)?.digits);
    this.streams = new StreamHub(this.quotes, this.instruments, deps.userCache, config.quotePushIntervalMs, log);
    this.engine = new RiskEngine(db, deps.tx, this.orders, this.quotes, this.book, this.streams, log, {
      closeConcurrency: options.closeConcurrency ?? 4,
      resyncIntervalMs: options.resyncIntervalMs ?? 5_000,
    });
    this.orders.observer = this.engine;
    this.feed = config.priceFeed === 'simulated'
      ? new SimulatedPriceFeed(this.instruments, this.quotes, (q) => this.engine.submitFeedQuotes(q), config.priceFeedIntervalMs, config.priceFeedSeed, log)
      : undefined;

    deps.wallets.valuation = (d, ids) => this.orders.valuation(d, ids);
    deps.financial.freeMarginCheck = (trx, row) => this.orders.freeMarginCheck(trx, row);
    deps.admin.marginCheck = (d) => this.orders.marginCheck(d);
    deps.userCache.listeners.push((userId) => void this.streams.recheckUser(userId));
  }

  /** Registers a hook run inside every close's transaction (user, stop-loss, take-profit, stop-out). */
  onOrderClosed(hook: OrderClosedHook): void {
    this.orders.onOrderClosed(hook);
  }

  /** Loads the last quotes and open orders, then starts the engine, the stream pushes and the feed. */
  async start(): Promise<void> {
    await this.quotes.load(this.deps.db);
    await this.engine.start(this.deps.hub);
    this.streams.start();
    this.feed?.start();
  }

  /** Feed first, then the engine (its closes finish), then the streams: all before the pool closes. */
  async stop(): Promise<void> {
    this.feed?.stop();
    await this.engine.stop();
    this.streams.stop();
  }

  symbols() {
    return this.instruments.list().map(toSymbolView);
  }

  quoteViews() {
    return this.quotes.list().map((q) => this.quotes.view(q));
  }

  /** POST /admin/quotes: validates, then hands the quote to the engine and waits for its closes. */
  async setAdminQuote(ctx: { actorId: string; operationId: string; log: AppLogger }, input: { symbol: string; bid: string; ask: string }) {
    const bid = new Decimal(input.bid);
    const ask = new Decimal(input.ask);
    if (bid.gt(ask)) throw new ValidationError('Invalid quote', [{ field: 'ask', message: 'must be at least the bid' }]);
    const inst = this.instruments.get(input.symbol);
    if (!inst) throw new DomainError('UNKNOWN_SYMBOL', `Unknown symbol ${input.symbol}`, [{ field: 'symbol', message: 'not a tradable symbol' }]);
    for (const [field, text] of [['bid', input.bid], ['ask', input.ask]] as const) {
      if (textDecimals(text) > inst.digits) throw new ValidationError('Invalid quote', [{ field, message: `must have at most ${inst.digits} decimals` }]);
    }
    const r = await this.engine.submitAdminQuote({ symbol: inst.symbol, bid, ask }, ctx);
    ctx.log.info({ symbol: inst.symbol, bid: input.bid, ask: input.ask, triggered: r.triggered }, 'admin quote applied');
    return { quote: this.quotes.view(r.quote), triggered: r.triggered };
  }
}
