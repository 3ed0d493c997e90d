/**
 * Order use cases: place, close, modify, list. Each one that changes a position is one
 * transaction with its idempotency key inside (DESIGN.md rules 1 and 6); a close locks
 * the order row, then the wallet (rule 3). Every close — user, stop-loss, take-profit,
 * stop-out — settles through the same SQL function (`order_settle`, migration 0009), so it
 * posts the same way; the statement-path closes (`closeLocked`) also run the close hooks,
 * and a user's close takes that path whenever a hook may act on it.
 */
import type { Db, Trx } from '../../platform/db/database.js';
import { ReadRouter } from '../../platform/db/read-router.js';
import { camelRow, preparedSql } from '../../platform/db/inline.js';
import type { CloseReason, OrderRow, OrderSide, OrderStatus, WalletRow, WalletType } from '../../platform/db/schema.js';
import { DomainError, InsufficientMarginError, NotFoundError, ValidationError } from '../../platform/errors.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import { IdempotencyService, storedRejections, type IdempotencyKey, type IdempotentOutcome } from '../../platform/idempotency.service.js';
import { sql } from 'kysely';
import { parse as parseJson } from 'lossless-json';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatFixed, formatMoney, ZERO } from '../../platform/money.js';
import { queryBatch, type TransactionService } from '../../platform/transaction.service.js';
import type { Mismatch } from '../admin/admin.service.js';
import type { FinancialService } from '../wallets/financial.service.js';
import { lockWalletSql, type Settlement, type WalletChangeRow } from '../wallets/ledger.repository.js';
import { toWalletView, type RequestContext, type Valuation, type WalletService } from '../wallets/wallet.service.js';
import type { Instrument, Instruments } from './instruments.js';
import { closePriceOf, levelAtOrBelow, levelProblem, openPriceOf, profitOf, requiredMargin, stopLossReached, takeProfitReached, textDecimals, type PriceQuote } from './pricing.js';
import type { QuoteBook } from './quote.book.js';
import {
  closedOrderNoticeSql, findOrder, insertOrderSql, listOrders, lockOrder, lockWalletById, marginMismatches, openedOrderNoticeSql, orderByIdSql,
  orderSettleSql, openOrdersOfWallets, openOrdersOfWalletSql, updateOrderLevels, type OpenOrderRow, type OrderNotice,
} from './trading.repository.js';

export interface OrderView {
  id: string;
  symbol: string;
  side: OrderSide;
  volume: string;
  leverage: number;
  walletType: WalletType;
  openPrice: string;
  margin: string;
  stopLoss: string | null;
  takeProfit: string | null;
  status: OrderStatus;
  closePrice: string | null;
  profit: string | null;
  closeReason: CloseReason | null;
  openedAt: string;
  closedAt: string | null;
}

export function toOrderView(o: OrderRow): OrderView {
  const price = (v: string | null) => (v === null ? null : formatFixed(v, o.digits));
  return {
    id: o.id,
    symbol: o.symbol,
    side: o.side,
    volume: formatFixed(o.volume, 2),
    leverage: o.leverage,
    walletType: o.walletType,
    openPrice: formatFixed(o.openPrice, o.digits),
    margin: formatMoney(o.margin),
    stopLoss: price(o.stopLoss),
    takeProfit: price(o.takeProfit),
    status: o.status,
    closePrice: price(o.closePrice),
    profit: o.profit === null ? null : formatMoney(o.profit),
    closeReason: o.closeReason,
    openedAt: o.openedAt.toISOString(),
    closedAt: o.closedAt === null ? null : o.closedAt.toISOString(),
  };
}

/** A settled close, for its 'order closed' log line. */
interface SettledClose {
  orderId: string;
  /** Signed, 2 decimals: the full profit or loss (before any negative balance compensation). */
  profit: string;
  closePrice: string;
  closeReason: CloseReason;
  log: AppLogger;
}

/**
 * A close hook's work as one statement sent in the close's own round trip: after
 * `order_close` in a user's close call, after `order_settle` in every other close. It
 * must change nothing unless the operation `operationId` closed the order (a user's call
 * may replay or store a rejection). `finish` takes its rows (after a user's close commits;
 * inside the transaction of the others, as their settlement's log lines are).
 */
export interface CloseHookCall {
  statement(orderId: string, operationId: string): string;
  finish(rows: unknown[], context: { orderId: string; operationId: string; log: AppLogger }): void;
}

/**
 * What a module does on every close (user, stop-loss, take-profit, stop-out), in the
 * close's transaction, as a statement in the close's round trip (the referral
 * commissions).
 */
export interface CloseHook {
  /** The statement for this user's closes; undefined: nothing to do. `db` is the close's transaction where there is one. */
  inCall(userId: string, db: Db | Trx): Promise<CloseHookCall | undefined>;
}

/** The row of order_close after the claim's columns (node-postgres, snake_case); closed_order null when nothing changed. */
interface CloseCallRow {
  closed_order: string | null;
  settlement: string | null;
  open_orders: number | null;
  unrealized_pnl: string | null;
}

/** A row as JSON text (row_to_json): numbers kept as their exact text, never a binary float. */
function parseRowJson(text: string): Record<string, unknown> {
  return parseJson(text, undefined, (digits: string) => digits) as Record<string, unknown>;
}

export interface ClosedOrder {
  order: OrderRow;
  /** The wallet after the close (balance, margin, realized profit). */
  wallet: WalletChangeRow;
  /** Its remaining open positions (a user's close reads them; the engine's do not). */
  valuation?: Valuation;
}

/** What the risk engine learns of the wallet of an order just opened. */
export type OpenedWallet = Pick<WalletChangeRow, 'id' | 'userId' | 'type' | 'balance'>;

/** Told after each commit, so in-memory state (risk engine, streams) follows the database. */
export interface TradingObserver {
  orderOpened(order: OrderRow, wallet: OpenedWallet): void;
  orderClosed(closed: ClosedOrder): void;
  orderModified(order: OrderRow): void;
}

export interface PlaceOrderInput {
  symbol: string;
  side: OrderSide;
  volume: string;
  walletType: WalletType;
  leverage?: string | number;
  stopLoss?: string | null;
  takeProfit?: string | null;
}

export interface ModifyOrderInput {
  stopLoss?: string | null;
  takeProfit?: string | null;
}

/** The wallet as a stop-out step found it under lock. */
export interface WalletSnapshot {
  balance: string;
  orders: OpenOrderRow[];
}

export type StopOutStep =
  | { kind: 'closed'; closed: ClosedOrder }
  | { kind: 'safe'; state: WalletSnapshot }
  /** Another order is the one to close (the database's choice, by unrealized P&L, then opened_at and id). */
  | { kind: 'repick'; state: WalletSnapshot; orderId: string }
  | { kind: 'gone' };

export type TriggeredClose = { kind: 'closed'; closed: ClosedOrder } | { kind: 'skipped'; order: OrderRow | undefined };

const notOpen = () => new DomainError('ORDER_NOT_OPEN', 'The order is not open');
const noQuote = (symbol: string) => new DomainError('NO_QUOTE', `There is no price for ${symbol} yet`);
const insufficientMargin = (margin: string, freeMargin: string) =>
  new InsufficientMarginError(`This order needs ${margin} of margin; free margin is ${freeMargin}`);

/** The rejections order_close stores; the symbol of a missing quote is written where the body says `{symbol}`. */
const CLOSE_REJECTIONS = storedRejections({ order: new NotFoundError('Order'), not_open: notOpen(), no_quote: noQuote('{symbol}') });

/**
 * The rejections order_open stores; the free margin is only known inside the call, which
 * writes it where the body says `{freeMargin}`.
 */
function openRejections(margin: string): string {
  return storedRejections({ wallet: new NotFoundError('Wallet'), margin: insufficientMargin(margin, '{freeMargin}') });
}

/** The 'order closed' line, once the close (and its hooks) went through. */
function logClosed(e: SettledClose): void {
  e.log.info({ orderId: e.orderId, closeReason: e.closeReason, closePrice: e.closePrice, profit: e.profit }, 'order closed');
}

/** The close hooks' log lines from their statements' results (in the order sent). */
function finishCalls(calls: CloseHookCall[], results: { rows: unknown[] }[], context: { orderId: string; operationId: string; log: AppLogger }): void {
  calls.forEach((c, i) => c.finish(results[i]?.rows ?? [], context));
}

/** An order id as the path may carry it (anything else is an order nobody has). */
const ORDER_ID = /^[0-9]{1,18}$/;

/** What an order open depends on besides the wallet (OrderService.openTerms). */
interface OpenTerms {
  inst: Instrument;
  volume: Decimal;
  leverage: number;
  stopLoss: Decimal | null;
  takeProfit: Decimal | null;
  quote: PriceQuote;
  openPrice: Decimal;
  margin: Decimal;
}

/** The row of order_open after the claim's columns (node-postgres, snake_case); order_id null when nothing changed. */
interface OpenCallRow {
  order_id: string | null;
  opened_at: Date | null;
  wallet_id: string | null;
  balance: string | null;
}

function invalid(field: string, message: string): ValidationError {
  return new ValidationError(`Invalid ${field}`, [{ field, message }]);
}

function parseVolume(i: Instrument, text: string): Decimal {
  const v = new Decimal(text);
  if (v.lt(i.minVolume) || v.gt(i.maxVolume)) throw invalid('volume', `must be between ${i.minVolume.toFixed(2)} and ${i.maxVolume.toFixed(2)} lots`);
  if (!v.mod(i.volumeStep).isZero()) throw invalid('volume', `must be a multiple of ${i.volumeStep.toFixed(2)}`);
  return v;
}

function parsePrice(digits: number, text: string | null | undefined, field: string): Decimal | null {
  if (text === null || text === undefined) return null;
  if (textDecimals(text) > digits) throw invalid(field, `must have at most ${digits} decimals`);
  const p = new Decimal(text);
  if (!p.gt(0)) throw invalid(field, 'must be greater than 0');
  return p;
}

/** Unrealized P&L of open orders at current quotes, each rounded to the cent as its close would be. */
function unrealized(o: Pick<OpenOrderRow, 'side' | 'openPrice' | 'volume' | 'contractSize' | 'symbol'>, q: PriceQuote | undefined): Decimal {
  if (!q) return ZERO;
  return profitOf(o.side, new Decimal(o.openPrice), closePriceOf(o.side, q), new Decimal(o.volume), new Decimal(o.contractSize));
}

export class OrderService {
  private readonly closeHooks: CloseHook[] = [];
  observer: TradingObserver | undefined;
  /**
   * Runs last inside the transaction of a user's modify (and of an open on the statement
   * path): the market notifies the leader there, so the notice is delivered on commit,
   * before the answer.
   */
  inTransaction: ((trx: Trx, order: { id: string; walletId: string }) => Promise<void>) | undefined;
  /**
   * The same notice for a one-call open or close (null: none), sent right after its
   * COMMIT in the same round trip (BatchOptions.afterCommit), so still before the answer.
   * A NOTIFY inside the call would hold PostgreSQL's notify lock through the commit's WAL
   * flush and serialise the commits of every notifying transaction.
   */
  orderNotice: (() => OrderNotice | null) | undefined;
  /** Positions closed by stop-out since start (committed). */
  stopOuts = 0;

  constructor(
    private readonly db: Db,
    private readonly tx: TransactionService,
    private readonly idempotency: IdempotencyService,
    private readonly financial: FinancialService,
    private readonly wallets: WalletService,
    private readonly instruments: Instruments,
    private readonly quotes: QuoteBook,
    private readonly stopOutLevel: Decimal,
    // Read routing (DATABASE_READ_URLS): order reads may go to replicas; writes note the user's position.
    private readonly reads: ReadRouter = new ReadRouter({ primary: db }),
  ) {}

  /** After a committed, non-replayed write of a user: later reads of theirs see it on any replica. */
  private async noted(userId: string, outcome: IdempotentOutcome): Promise<IdempotentOutcome> {
    if (!outcome.replayed && outcome.status < 300) await this.reads.noteWrite(userId);
    return outcome;
  }

  /** Registers a hook run in every close's transaction (user, stop-loss, take-profit, stop-out). */
  onOrderClosed(hook: CloseHook): void {
    this.closeHooks.push(hook);
  }

  private quoteOf = (symbol: string): PriceQuote | undefined => this.quotes.get(symbol);

  /** A one-call open's or close's statements after COMMIT: the leader's notice, built by `sqlOf`, when there is a leader to tell. */
  private leaderNotice(sqlOf: (n: OrderNotice) => string): string[] {
    const n = this.orderNotice?.();
    return n ? [sqlOf(n)] : [];
  }

  // --- use cases --------------------------------------------------------------

  /**
   * What an order open depends on besides the wallet: the instrument, the checked volume,
   * leverage and levels, the open price at the current quote and the required margin.
   * Throws the request's rejection.
   */
  private openTerms(input: PlaceOrderInput): OpenTerms {
    const inst = this.instruments.get(input.symbol);
    if (!inst) throw new DomainError('UNKNOWN_SYMBOL', `Unknown symbol ${input.symbol}`, [{ field: 'symbol', message: 'not a tradable symbol' }]);
    const volume = parseVolume(inst, input.volume);
    const leverage = input.leverage === undefined ? Math.min(100, inst.maxLeverage) : Number(input.leverage);
    if (leverage > inst.maxLeverage) throw invalid('leverage', `must be at most ${inst.maxLeverage} for ${inst.symbol}`);
    const stopLoss = parsePrice(inst.digits, input.stopLoss, 'stopLoss');
    const takeProfit = parsePrice(inst.digits, input.takeProfit, 'takeProfit');
    const quote = this.quotes.get(inst.symbol);
    if (!quote) throw noQuote(inst.symbol);
    const openPrice = openPriceOf(input.side, quote);
    const problem = levelProblem(input.side, openPrice, stopLoss, takeProfit);
    if (problem) throw invalid(problem.field, problem.message);
    const margin = requiredMargin(volume, inst.contractSize, openPrice, leverage);
    return { inst, volume, leverage, stopLoss, takeProfit, quote, openPrice, margin };
  }

  /** The order row an open inserts, but its id, wallet and open time. */
  private openValues(ctx: RequestContext, input: PlaceOrderInput, t: OpenTerms) {
    return {
      userId: ctx.userId,
      walletType: input.walletType,
      symbol: t.inst.symbol,
      side: input.side,
      volume: t.volume.toFixed(2),
      leverage: t.leverage,
      contractSize: t.inst.contractSize.toFixed(),
      digits: t.inst.digits,
      openPrice: t.openPrice.toFixed(),
      margin: t.margin.toFixed(2),
      stopLoss: t.stopLoss?.toFixed() ?? null,
      takeProfit: t.takeProfit?.toFixed() ?? null,
      openOperationId: ctx.operationId,
    };
  }

  /**
   * A request whose terms hold is one call (`order_open`, migration 0008): claim, wallet
   * lock, free-margin check at the current quotes, the order, its margin and the stored
   * response, then the notice for the market leader after the COMMIT, in one round trip.
   * A request whose terms fail takes the statement path (placeOrderInStatements), which
   * stores the rejection.
   */
  async placeOrder(key: IdempotencyKey, ctx: RequestContext, input: PlaceOrderInput): Promise<IdempotentOutcome> {
    try {
      this.openTerms(input);
    } catch (err) {
      if (!(err instanceof DomainError)) throw err;
      return this.placeOrderInStatements(key, ctx, input);
    }
    let values: ReturnType<OrderService['openValues']> | undefined;
    // Priced at each attempt, just before it is sent: a retry opens at the quote of its
    // own time, and a call that waited too long for the wallet's lock asks for one (0008).
    const statement = () => {
      const terms = this.openTerms(input);
      values = this.openValues(ctx, input, terms);
      return this.openCall(key, values, terms);
    };
    const afterCommit = this.leaderNotice((n) => openedOrderNoticeSql(n, ctx.userId, input.walletType, ctx.operationId));
    const { outcome, row } = await this.idempotency.executeCall<OpenCallRow>(key, statement, { operation: 'place_order', log: ctx.log, afterCommit });
    if (!outcome.replayed && row.order_id !== null && values) {
      const order: OrderRow = {
        ...values, id: String(row.order_id), walletId: String(row.wallet_id), status: 'open', closePrice: null, profit: null, closeReason: null,
        openedAt: row.opened_at!, closedAt: null, closeOperationId: null,
      };
      this.financial.logMarginReserve(ctx.userId, input.walletType, new Decimal(values.margin).toFixed(), String(row.balance), { operationId: ctx.operationId, log: ctx.log });
      ctx.log.info({ orderId: order.id, symbol: order.symbol, side: order.side, volume: order.volume, openPrice: order.openPrice, margin: order.margin }, 'order opened');
      this.observer?.orderOpened(order, { id: order.walletId, userId: ctx.userId, type: input.walletType, balance: String(row.balance) });
    }
    return this.noted(ctx.userId, outcome);
  }

  /** The `order_open` call (migration 0008) for these values and terms, as SQL. */
  private openCall(key: IdempotencyKey, values: ReturnType<OrderService['openValues']>, terms: OpenTerms): string {
    const view = toOrderView({
      ...values, id: '', walletId: '', status: 'open', closePrice: null, profit: null, closeReason: null, openedAt: new Date(0), closedAt: null, closeOperationId: null,
    });
    const { id: _id, openedAt: _openedAt, closedAt: _closedAt, ...fields } = view;
    const newPnl = unrealized({ ...values, symbol: terms.inst.symbol }, terms.quote);
    return preparedSql(sql`
      SELECT * FROM order_open(${this.idempotency.claimArguments(key)}, ${values.walletType}::text, ${values.symbol}::text, ${values.side}::text,
        ${values.volume}::numeric, ${values.leverage}::int, ${values.contractSize}::numeric, ${values.digits}::int, ${values.openPrice}::numeric,
        ${values.margin}::numeric, ${values.stopLoss}::numeric, ${values.takeProfit}::numeric, ${values.openOperationId}::text,
        ${newPnl.toFixed()}::numeric, ${JSON.stringify(fields).slice(1, -1)}::text, ${this.quotes.inputsJson()}::jsonb,
        ${openRejections(values.margin)}::jsonb, NULL::jsonb)`);
  }

  /**
   * Three round trips: the wallet's lock and its open orders travel with the idempotency
   * claim; the order row and the margin reservation go together; the notice for the
   * market leader and the stored response go with COMMIT. For requests whose terms fail:
   * the rejection is decided after the claim, so it is stored.
   */
  private async placeOrderInStatements(key: IdempotencyKey, ctx: RequestContext, input: PlaceOrderInput): Promise<IdempotentOutcome> {
    let opened: { order: OrderRow; wallet: WalletChangeRow } | undefined;
    const first = `${lockWalletSql(ctx.userId, input.walletType, IdempotencyService.CLAIMED)}; ${openOrdersOfWalletSql({ userId: ctx.userId, type: input.walletType, guard: IdempotencyService.CLAIMED })}`;
    const outcome = await this.idempotency.execute(key, async (trx, locked) => {
      opened = undefined;
      const terms = this.openTerms(input);
      const { quote, margin } = terms;
      const wallet = locked[0]?.rows[0] ? camelRow<WalletRow>(locked[0].rows[0] as Record<string, unknown>) : undefined;
      if (!wallet) throw new NotFoundError('Wallet');
      const open = (locked[1]?.rows ?? []).map((r) => camelRow<OpenOrderRow>(r as Record<string, unknown>));
      const pnl = open.reduce((sum, o) => sum.plus(unrealized(o, this.quoteOf(o.symbol))), ZERO);
      const freeMargin = new Decimal(wallet.balance).plus(pnl).minus(wallet.margin);
      if (margin.gt(freeMargin)) throw insufficientMargin(formatMoney(margin), formatMoney(freeMargin));

      const reserve = this.financial.planCombinedOperation(ctx.userId, { margin }, input.walletType, 'margin_reserve', null, { operationId: ctx.operationId, log: ctx.log });
      const [inserted, reserved] = await queryBatch([insertOrderSql({ ...this.openValues(ctx, input, terms), walletId: wallet.id }), reserve.statement]);
      const order = camelRow<OrderRow>(inserted!.rows[0] as Record<string, unknown>);
      const row = await reserve.finish(reserved!.rows[0] as Record<string, unknown> | undefined);
      opened = { order, wallet: row };
      await this.inTransaction?.(trx, order);
      ctx.log.info({ orderId: order.id, symbol: order.symbol, side: order.side, volume: order.volume, openPrice: order.openPrice, margin: order.margin }, 'order opened');
      const valuation: Valuation = { unrealizedPnl: pnl.plus(unrealized(order, quote)), openOrders: open.length + 1 };
      return { status: 201, data: { order: toOrderView(order), wallet: toWalletView(row, valuation) } };
    }, { operation: 'place_order', log: ctx.log, first });
    if (opened && !outcome.replayed && outcome.status === 201) this.observer?.orderOpened(opened.order, opened.wallet);
    return this.noted(ctx.userId, outcome);
  }

  /**
   * A user's close. One call (`order_close`, migration 0009): claim, the order's lock, the
   * close price from the current quotes, the settlement and the stored response, with the
   * statements of the close hooks that may act on it (a referred user's commissions:
   * `referral_commissions_pay`, migration 0010) after it, and the leader's notice after
   * the COMMIT, all in one round trip.
   */
  async closeOrder(key: IdempotencyKey, ctx: RequestContext, orderId: string): Promise<IdempotentOutcome> {
    // An id that cannot exist: 404, stored under the key like any rejection.
    if (!ORDER_ID.test(orderId)) return this.idempotency.execute(key, async () => { throw new NotFoundError('Order'); }, { operation: 'close_order', log: ctx.log });
    const calls = await this.hookCalls(ctx.userId, this.db);
    const statement = () => [preparedSql(sql`
      SELECT * FROM order_close(${this.idempotency.claimArguments(key)}, ${orderId}::bigint, ${ctx.operationId}::text,
        ${this.quotes.inputsJson()}::jsonb, ${CLOSE_REJECTIONS}::jsonb, NULL::jsonb)`),
    ...calls.map((c) => c.statement(orderId, ctx.operationId))].join('; ');
    const afterCommit = this.leaderNotice((n) => closedOrderNoticeSql(n, orderId, ctx.operationId));
    const { outcome, row, rest } = await this.idempotency.executeCall<CloseCallRow>(key, statement, { operation: 'close_order', log: ctx.log, afterCommit });
    if (!outcome.replayed && row.closed_order !== null && row.settlement !== null) {
      const order = camelRow<OrderRow>(parseRowJson(row.closed_order));
      order.openedAt = new Date(order.openedAt as unknown as string);
      order.closedAt = new Date(order.closedAt as unknown as string);
      order.leverage = Number(order.leverage);
      order.digits = Number(order.digits);
      const settlement = camelRow<Settlement>(parseRowJson(row.settlement));
      settlement.updatedAt = new Date(settlement.updatedAt as unknown as string);
      settlement.postingCreatedAt = settlement.postingCreatedAt === null ? null : new Date(settlement.postingCreatedAt as unknown as string);
      const closed = this.settled(order, settlement, ctx.operationId, ctx.log);
      finishCalls(calls, rest, { orderId: order.id, operationId: ctx.operationId, log: ctx.log });
      logClosed(closed);
      this.observer?.orderClosed({ order, wallet: settlement, valuation: { unrealizedPnl: new Decimal(String(row.unrealized_pnl)), openOrders: Number(row.open_orders) } });
    }
    return this.noted(ctx.userId, outcome);
  }

  async modifyOrder(key: IdempotencyKey, ctx: RequestContext, orderId: string, input: ModifyOrderInput): Promise<IdempotentOutcome> {
    let modified: OrderRow | undefined;
    const outcome = await this.idempotency.execute(key, async (trx) => {
      modified = undefined;
      const order = await lockOrder(trx, orderId, ctx.userId);
      if (!order) throw new NotFoundError('Order');
      if (order.status !== 'open') throw notOpen();
      const current = (v: string | null) => (v === null ? null : new Decimal(v));
      const stopLoss = input.stopLoss === undefined ? current(order.stopLoss) : parsePrice(order.digits, input.stopLoss, 'stopLoss');
      const takeProfit = input.takeProfit === undefined ? current(order.takeProfit) : parsePrice(order.digits, input.takeProfit, 'takeProfit');
      const problem = levelProblem(order.side, new Decimal(order.openPrice), stopLoss, takeProfit);
      if (problem) throw invalid(problem.field, problem.message);
      const updated = await updateOrderLevels(trx, order.id, { stopLoss: stopLoss?.toFixed() ?? null, takeProfit: takeProfit?.toFixed() ?? null });
      if (!updated) throw notOpen();
      modified = updated;
      await this.inTransaction?.(trx, updated);
      return { status: 200, data: { order: toOrderView(updated) } };
    }, { operation: 'modify_order', log: ctx.log });
    if (modified && !outcome.replayed && outcome.status === 200) this.observer?.orderModified(modified);
    return this.noted(ctx.userId, outcome);
  }

  async listOrders(userId: string, q: { limit: number; cursor?: string; status?: OrderStatus; walletType?: WalletType }) {
    const rows = await this.reads.read(userId, (db) => listOrders(db, { userId, status: q.status, walletType: q.walletType, before: decodeCursor(q.cursor), limit: q.limit }));
    return toPage(rows, q.limit, toOrderView);
  }

  async getOrder(userId: string, orderId: string) {
    const row = await this.reads.read(userId, (db) => findOrder(db, orderId, userId));
    if (!row) throw new NotFoundError('Order');
    return { order: toOrderView(row) };
  }

  // --- closing --------------------------------------------------------------------

  /**
   * Closes a locked open order at `closePrice`: the order row, then the wallet (margin
   * released, P&L posted against the dealing account, nothing for exactly 0.00, negative
   * balance protection on a loss), then the close hooks — all in the caller's transaction.
   */
  private async closeLocked(trx: Trx, order: OrderRow, closePrice: Decimal, reason: CloseReason, operationId: string, log: AppLogger): Promise<ClosedOrder> {
    const calls = await this.hookCalls(order.userId, trx);
    // The settlement (order_settle, migration 0009), the hooks' statements (they act only if
    // this operation closed the order) and the closed row in one round trip.
    const [settled, ...results] = await queryBatch([orderSettleSql(order.id, { closePrice: closePrice.toFixed(), closeReason: reason, operationId }),
      ...calls.map((c) => c.statement(order.id, operationId)), orderByIdSql(order.id)]);
    const settlement = camelRow<Settlement>(settled!.rows[0] as Record<string, unknown>);
    if (!settlement.settled) throw notOpen();
    const closedRow = camelRow<OrderRow>(results[calls.length]!.rows[0] as Record<string, unknown>);
    const event = this.settled(closedRow, settlement, operationId, log);
    finishCalls(calls, results, { orderId: order.id, operationId, log });
    logClosed(event);
    return { order: closedRow, wallet: settlement };
  }

  /** The close hooks' statements for a close of this user's (in the order registered). */
  private async hookCalls(userId: string, db: Db | Trx): Promise<CloseHookCall[]> {
    const calls: CloseHookCall[] = [];
    for (const h of this.closeHooks) {
      const call = await h.inCall(userId, db);
      if (call) calls.push(call);
    }
    return calls;
  }

  /** The `logger.financial` lines of a settled close, and what its 'order closed' line says. */
  private settled(closed: OrderRow, s: Settlement, operationId: string, log: AppLogger): SettledClose {
    const closePrice = formatFixed(closed.closePrice!, closed.digits);
    const volume = formatFixed(closed.volume, 2);
    const reason = closed.closeReason!;
    this.financial.logSettlement(s, closed.margin, { symbol: closed.symbol, side: closed.side, volume, closePrice, closeReason: reason },
      { operationId, log, orderId: closed.id });
    return { orderId: closed.id, profit: formatMoney(s.profit), closePrice, closeReason: reason, log };
  }

  /**
   * A stop-loss or take-profit the engine saw reached at `quote`: locks the order and
   * closes it at that quote's price if its (possibly just modified) level is still reached.
   */
  async closeTriggered(orderId: string, reason: 'stop_loss' | 'take_profit', quote: PriceQuote, operationId: string, log: AppLogger): Promise<TriggeredClose> {
    const result = await this.tx.executeWithRetry<TriggeredClose>(async (trx) => {
      const order = await lockOrder(trx, orderId);
      if (!order || order.status !== 'open') return { kind: 'skipped', order };
      const level = reason === 'stop_loss' ? order.stopLoss : order.takeProfit;
      const reached = level !== null && (reason === 'stop_loss' ? stopLossReached(order.side, new Decimal(level), quote) : takeProfitReached(order.side, new Decimal(level), quote));
      if (!reached) return { kind: 'skipped', order };
      return { kind: 'closed', closed: await this.closeLocked(trx, order, closePriceOf(order.side, quote), reason, operationId, log) };
    }, { operation: reason, log });
    if (result.kind === 'closed') await this.reads.noteWrite(result.closed.order.userId);
    return result;
  }

  /**
   * One stop-out step, chosen without locks by the engine: locks the order, then its
   * wallet, and re-checks under the locks that the wallet is at or below the stop-out
   * level and that this order has the lowest unrealized P&L (ties: the oldest). Only
   * then it closes it; otherwise it reports what it found.
   */
  async stopOutStep(walletId: string, orderId: string, priceOf: (symbol: string) => PriceQuote | undefined, operationId: string, log: AppLogger): Promise<StopOutStep> {
    const step = await this.tx.executeWithRetry<StopOutStep>(async (trx) => {
      const order = await lockOrder(trx, orderId);
      const wallet = await lockWalletById(trx, walletId);
      if (!wallet) return { kind: 'gone' };
      const open = await openOrdersOfWallets(trx, [walletId]); // oldest first
      let equity = new Decimal(wallet.balance);
      let lowest: { id: string; pnl: Decimal } | undefined;
      for (const o of open) {
        const pnl = unrealized(o, priceOf(o.symbol));
        equity = equity.plus(pnl);
        if (!lowest || pnl.lt(lowest.pnl)) lowest = { id: o.id, pnl };
      }
      const state = { balance: wallet.balance, orders: open };
      if (!lowest || !levelAtOrBelow(equity, new Decimal(wallet.margin), this.stopOutLevel)) return { kind: 'safe', state };
      if (!order || order.status !== 'open' || order.walletId !== walletId || order.id !== lowest.id) return { kind: 'repick', state, orderId: lowest.id };
      const quote = priceOf(order.symbol);
      if (!quote) return { kind: 'safe', state };
      log.info({ walletId, orderId, equity: formatMoney(equity), margin: wallet.margin }, 'stop-out');
      return { kind: 'closed', closed: await this.closeLocked(trx, order, closePriceOf(order.side, quote), 'stop_out', operationId, log) };
    }, { operation: 'stop_out', log });
    if (step.kind === 'closed') {
      this.stopOuts++; // counted after commit, for /metrics
      await this.reads.noteWrite(step.closed.order.userId);
    }
    return step;
  }

  // --- what other modules call ------------------------------------------------------

  /** Unrealized P&L of each wallet's open orders at current quotes (WalletService.valuation). */
  async valuation(db: Db | Trx, walletIds: string[]): Promise<Map<string, Valuation>> {
    return this.valueOrders(await openOrdersOfWallets(db, walletIds));
  }

  /** The valuation of open orders read elsewhere (`openOrdersOfWalletSql`, raw rows). */
  valuationOfRows(rows: Record<string, unknown>[]): Map<string, Valuation> {
    return this.valueOrders(rows.map((r) => camelRow<OpenOrderRow>(r)));
  }

  private valueOrders(orders: OpenOrderRow[]): Map<string, Valuation> {
    const out = new Map<string, Valuation>();
    for (const o of orders) {
      const v = out.get(o.walletId) ?? { unrealizedPnl: ZERO, openOrders: 0 };
      v.unrealizedPnl = v.unrealizedPnl.plus(unrealized(o, this.quoteOf(o.symbol)));
      v.openOrders++;
      out.set(o.walletId, v);
    }
    return out;
  }

  /** AdminService.marginCheck: wallets whose margin differs from their open orders'. */
  async marginCheck(db: Db): Promise<Mismatch[]> {
    return (await marginMismatches(db)).map((m) => ({
      walletId: m.walletId, userId: m.userId, walletType: m.walletType, field: 'margin' as const, expected: formatMoney(m.expected), actual: formatMoney(m.actual),
    }));
  }
}
