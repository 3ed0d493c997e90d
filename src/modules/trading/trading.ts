/**
 * The trading module's parts, wired: instruments, quotes, orders, the risk engine, the
 * price feed and the stream hub. Also plugs the module into the others: wallet
 * valuation, the free-margin check of withdrawals and transfers, the margin part of
 * reconciliation, and stream revocation on logout, password change and block.
 */
import type { Config } from '../../config.js';
import type { Db } from '../../platform/db/database.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import type { PubSub } from '../../platform/pubsub.js';
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
import { Market } from './market.js';
import { openOrdersOfWalletSql, WALLET_CHANNEL } from './trading.repository.js';
import { OrderService, type CloseHook, type OrderView } from './order.service.js';
import { SimulatedPriceFeed } from './price.feed.js';
import { textDecimals } from './pricing.js';
import { QuoteBook } from './quote.book.js';
import { RiskBook } from './risk.book.js';
import { RiskEngine, type MarginCallData } from './risk.engine.js';
import { StreamHub } from './stream.hub.js';
import type { ReadRouter } from '../../platform/db/read-router.js';

export interface TradingDeps {
  config: Readonly<Config>;
  db: Db;
  log: AppLogger;
  hub?: NotificationHub;
  /** Quotes and account events between processes (Redis pub/sub with REDIS_URL); `hub` when unset. */
  broadcast?: PubSub;
  /** The database for the market leader's lock session; with `hub`, processes share one feed and one engine. */
  connectionString?: string;
  tx: TransactionService;
  idempotency: IdempotencyService;
  financial: FinancialService;
  wallets: WalletService;
  admin: AdminService;
  userCache: UserStateCache;
  /** Read routing to replicas (DATABASE_READ_URLS); the primary alone without it. */
  reads?: ReadRouter;
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
  /** Leader election and the fan-out of quotes and account events between processes (market.ts). */
  readonly market: Market;

  constructor(private readonly deps: TradingDeps, options: TradingOptions = {}) {
    const { config, db, log } = deps;
    const levels = { stopOutLevel: new Decimal(config.stopOutLevel), marginCallLevel: new Decimal(config.marginCallLevel) };
    this.instruments = new Instruments(config.symbols);
    this.quotes = new QuoteBook(this.instruments);
    this.orders = new OrderService(db, deps.tx, deps.idempotency, deps.financial, deps.wallets, this.instruments, this.quotes, levels.stopOutLevel, deps.reads);
    this.book = new RiskBook(levels, (s) => this.instruments.get(s)?.digits);
    this.streams = new StreamHub(this.quotes, this.instruments, deps.userCache, config.quotePushIntervalMs, log, config.maxStreamsPerUser);
    // The engine's account events go through the market: to this process's sessions and to the others'.
    const events = { orderClosed: (u: string, o: OrderView) => this.market.orderClosed(u, o), marginCall: (u: string, m: MarginCallData) => this.market.marginCall(u, m) };
    this.engine = new RiskEngine(db, deps.tx, this.orders, this.quotes, this.book, events, log, {
      closeConcurrency: options.closeConcurrency ?? 4,
      resyncIntervalMs: options.resyncIntervalMs ?? 5_000,
    });
    this.market = new Market({
      db, hub: deps.hub, broadcast: deps.broadcast, connectionString: deps.connectionString, instruments: this.instruments, quotes: this.quotes,
      engine: this.engine, streams: this.streams, log,
      lead: () => this.lead(),
      unlead: () => this.unlead(),
    });
    this.orders.observer = this.market.observer();
    this.orders.inTransaction = (trx, order) => this.market.orderChanged(trx, order);
    this.orders.orderNotice = () => this.market.orderNotice();
    this.feed = config.priceFeed === 'simulated'
      ? new SimulatedPriceFeed(this.instruments, this.quotes, (q) => this.engine.submitFeedQuotes(q), config.priceFeedIntervalMs, config.priceFeedSeed, log)
      : undefined;

    deps.wallets.valuation = (d, ids) => this.orders.valuation(d, ids);
    deps.wallets.valuationQuery = { sql: (userId, type, guard) => openOrdersOfWalletSql({ userId, type, guard }), fromRows: (rows) => this.orders.valuationOfRows(rows) };
    deps.wallets.positions = () => ({ quotesJson: this.quotes.inputsJson(), notifyChannel: WALLET_CHANNEL });
    deps.admin.marginCheck = (d) => this.orders.marginCheck(d);
    deps.userCache.listeners.push((userId) => void this.streams.recheckUser(userId));
  }

  /** Registers a hook run inside every close's transaction (user, stop-loss, take-profit, stop-out). */
  onOrderClosed(hook: CloseHook): void {
    this.orders.onOrderClosed(hook);
  }

  /**
   * Elects the market leader (a single process wins at once, before this resolves) and
   * starts the stream pushes. The leader loads the last quotes and open orders and
   * starts the engine and the feed (lead); a follower loads the quotes and follows.
   */
  async start(): Promise<void> {
    await this.market.start();
    this.streams.start();
  }

  /** Leadership first (feed, then the engine and its closes, then the lock), then the streams: all before the pool closes. */
  async stop(): Promise<void> {
    await this.market.stop();
    this.streams.stop();
  }

  /** Became the market leader: quotes and open orders from the database, then the engine and the feed. */
  private async lead(): Promise<void> {
    await this.quotes.load(this.deps.db);
    await this.engine.start(this.deps.hub);
    this.feed?.start();
  }

  /** No longer the leader (lost the lock, or stopping): the feed, then the engine; the book is rebuilt on the next lead. */
  private async unlead(): Promise<void> {
    this.feed?.stop();
    await this.engine.stop();
    this.book.clear();
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
    // On the leader it is applied here; a follower forwards it to the leader and waits (market.ts).
    const r = await this.market.adminQuote({ symbol: inst.symbol, bid, ask }, ctx);
    ctx.log.info({ symbol: inst.symbol, bid: input.bid, ask: input.ask, triggered: r.triggered, leader: this.market.isLeader }, 'admin quote applied');
    return { quote: r.quote, triggered: r.triggered };
  }
}
