/**
 * Wallet use cases: views, deposit, withdraw, transfer, history. Each money use case
 * is one transaction with its idempotency key inside (DESIGN.md rules 1 and 6).
 */
import type { Db, Trx } from '../../platform/db/database.js';
import { ReadRouter } from '../../platform/db/read-router.js';
import type { PostingRow, WalletRow, WalletType } from '../../platform/db/schema.js';
import { DomainError, InsufficientFundsError, NotFoundError, ValidationError } from '../../platform/errors.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import { IdempotencyService, type IdempotencyKey, type IdempotentOutcome } from '../../platform/idempotency.service.js';
import { camelRow } from '../../platform/db/inline.js';
import type pg from 'pg';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatMoney, ZERO } from '../../platform/money.js';
import type { FinancialService } from './financial.service.js';
import { findWallet, findWallets, listPostings, transferSql, type TransferRow, type WalletChangeRow } from './ledger.repository.js';

export interface Valuation {
  /** Sum of the open orders' unrealized P&L, each rounded half-to-even to the cent. */
  unrealizedPnl: Decimal;
  openOrders: number;
}

/** Values wallets at current quotes; the trading module provides it. */
export type ValuationProvider = (db: Db | Trx, walletIds: string[]) => Promise<Map<string, Valuation>>;

/**
 * The same valuation in two halves, for a money operation's first round trip: `sql`
 * selects the open orders of the user's wallet of `type` when it has margin and
 * `guard` (SQL) holds, `fromRows` values the rows it returned (as node-postgres gives them).
 */
export interface ValuationQuery {
  sql(userId: string, type: WalletType, guard: string): string;
  fromRows(rows: Record<string, unknown>[]): Map<string, Valuation>;
}

export interface DepositEvent {
  userId: string;
  walletType: WalletType;
  amount: Decimal;
  operationId: string;
  postingId: string;
  log: AppLogger;
}

/** In-transaction hook run by every deposit; may return the wallet's newer state. */
export type DepositHook = (trx: Trx, event: DepositEvent) => Promise<WalletChangeRow | void>;

export interface WalletView {
  type: WalletType;
  currency: string;
  balance: string;
  margin: string;
  equity: string;
  freeMargin: string;
  marginLevel: string | null;
  realizedProfit: string;
  updatedAt: string;
}

export interface TransactionView {
  id: string;
  type: string;
  amount: string;
  balanceAfter: string;
  createdAt: string;
  operationId: string;
  counterparty?: string;
  orderId?: string;
  note?: string;
  metadata?: Record<string, unknown>;
}

type WalletState = Pick<WalletRow, 'id' | 'type' | 'currency' | 'balance' | 'margin' | 'realizedProfit' | 'updatedAt'>;

export function toWalletView(w: WalletState, v: Valuation | undefined): WalletView {
  const balance = new Decimal(w.balance);
  const margin = new Decimal(w.margin);
  const equity = balance.plus(v?.unrealizedPnl ?? ZERO);
  const hasOrders = (v?.openOrders ?? 0) > 0 && margin.gt(0);
  return {
    type: w.type,
    currency: w.currency.trim(),
    balance: formatMoney(balance),
    margin: formatMoney(margin),
    equity: formatMoney(equity),
    freeMargin: formatMoney(equity.minus(margin)),
    marginLevel: hasOrders ? formatMoney(equity.div(margin).times(100)) : null,
    realizedProfit: formatMoney(w.realizedProfit),
    updatedAt: w.updatedAt.toISOString(),
  };
}

export function toTransactionView(p: Pick<PostingRow, 'id' | 'type' | 'amount' | 'balanceAfter' | 'createdAt' | 'operationId' | 'counterparty' | 'orderId' | 'note' | 'metadata'>): TransactionView {
  const view: TransactionView = {
    id: p.id,
    type: p.type,
    amount: formatMoney(p.amount),
    balanceAfter: formatMoney(p.balanceAfter ?? '0'),
    createdAt: p.createdAt.toISOString(),
    operationId: p.operationId,
  };
  if (p.counterparty !== null) view.counterparty = p.counterparty;
  if (p.orderId !== null) view.orderId = p.orderId;
  if (p.note !== null) view.note = p.note;
  if (p.metadata !== null) view.metadata = p.metadata;
  return view;
}

export const TRANSACTION_TYPES = [
  'deposit', 'withdrawal', 'transfer_in', 'transfer_out', 'trade_profit', 'trade_loss',
  'referral_commission', 'referral_bonus', 'adjustment', 'negative_balance_compensation',
] as const;

export interface RequestContext {
  userId: string;
  operationId: string;
  log: AppLogger;
}

export class WalletService {
  readonly depositHooks: DepositHook[] = [];
  valuation: ValuationProvider = async () => new Map();
  valuationQuery: ValuationQuery | undefined;

  constructor(
    private readonly db: Db,
    private readonly idempotency: IdempotencyService,
    private readonly financial: FinancialService,
    // Read routing (issue 7): reads may go to replicas; writes note the user's position.
    private readonly router: ReadRouter = new ReadRouter({ primary: db }),
  ) {}

  /** Registers an in-transaction hook run by every deposit (the referral module's signup bonus). */
  onDeposit(hook: DepositHook): void {
    this.depositHooks.push(hook);
  }

  async view(db: Db | Trx, w: WalletState): Promise<WalletView> {
    const v = new Decimal(w.margin).gt(0) ? (await this.valuation(db, [w.id])).get(w.id) : undefined;
    return toWalletView(w, v);
  }

  async listWallets(userId: string): Promise<WalletView[]> {
    return this.router.read(userId, async (db) => { // read routing
      const rows = await findWallets(db, userId);
      const withMargin = rows.filter((r) => new Decimal(r.margin).gt(0)).map((r) => r.id);
      const values = withMargin.length ? await this.valuation(db, withMargin) : new Map<string, Valuation>();
      return rows.map((r) => toWalletView(r, values.get(r.id)));
    });
  }

  async getWallet(userId: string, type: WalletType): Promise<WalletView> {
    return this.router.read(userId, async (db) => { // read routing
      const row = await findWallet(db, userId, type);
      if (!row) throw new NotFoundError('Wallet');
      return this.view(db, row);
    });
  }

  /** Read routing: a committed (not replayed) write makes the user's next reads see it. */
  private async noteWrite(userId: string, outcome: Promise<IdempotentOutcome>): Promise<IdempotentOutcome> {
    const o = await outcome;
    if (!o.replayed && o.status < 300) await this.router.noteWrite(userId);
    return o;
  }

  /**
   * The open positions of the user's wallet of `type` when it has margin, as a statement
   * to send with the wallet change (it sees the change: it runs after it).
   */
  private positionsSql(userId: string, type: WalletType): string {
    if (!this.valuationQuery) return 'SELECT NULL AS none WHERE FALSE';
    return this.valuationQuery.sql(userId, type, IdempotencyService.CLAIMED);
  }

  private positionsOf(result: pg.QueryResult | undefined, walletId: string): Valuation | undefined {
    if (!this.valuationQuery || !result || result.rows.length === 0) return undefined;
    return this.valuationQuery.fromRows(result.rows as Record<string, unknown>[]).get(walletId);
  }

  /**
   * A single-wallet money operation in two round trips: the wallet change and the
   * wallet's open positions travel with the idempotency claim (and change nothing
   * unless the claim took the key); the stored response travels with COMMIT.
   */
  private singleWalletOperation(
    key: IdempotencyKey, ctx: RequestContext, type: WalletType, operation: 'deposit' | 'withdrawal', amount: Decimal, metadata: Record<string, unknown> | null,
    respond: (trx: Trx, row: WalletChangeRow, valuation: Valuation | undefined) => Promise<WalletChangeRow>,
  ): Promise<IdempotentOutcome> {
    const signed = operation === 'withdrawal' ? amount.neg() : amount;
    const plan = this.financial.planCombinedOperation(ctx.userId, { balance: signed }, type, operation, metadata, {
      operationId: ctx.operationId, log: ctx.log, requireWithdrawable: operation === 'withdrawal',
    }, IdempotencyService.CLAIMED);
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx, first) => { // read routing
      const raw = first[0]?.rows[0] as Record<string, unknown> | undefined;
      const valuation = raw ? this.positionsOf(first[1], String(raw.id)) : undefined;
      const row = await plan.finish(trx, raw, valuation);
      const transaction = this.changeToTransaction(row, operation, signed.toFixed(), ctx.operationId, { metadata });
      const latest = await respond(trx, row, valuation);
      return { status: 201, data: { transaction, wallet: toWalletView(latest, valuation) } };
    }, {
      operation, log: ctx.log, first: `${plan.statement}; ${this.positionsSql(ctx.userId, type)}`,
      // A deposit's only rejection is a missing wallet, which registration rules out: no savepoint.
      savepoint: operation === 'withdrawal',
    }));
  }

  async deposit(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string, paymentMethod: string | undefined): Promise<IdempotentOutcome> {
    const metadata = paymentMethod ? { paymentMethod } : null;
    return this.singleWalletOperation(key, ctx, type, 'deposit', new Decimal(amount), metadata, async (trx, row) => {
      let latest = row;
      for (const hook of this.depositHooks) {
        const newer = await hook(trx, { userId: ctx.userId, walletType: type, amount: new Decimal(amount), operationId: ctx.operationId, postingId: row.postingId!, log: ctx.log });
        if (newer) latest = newer;
      }
      return latest;
    });
  }

  async withdraw(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string): Promise<IdempotentOutcome> {
    return this.singleWalletOperation(key, ctx, type, 'withdrawal', new Decimal(amount), null, async (_trx, row) => row);
  }

  /**
   * Two round trips: the whole transfer (locks in id order, checks, both balances and
   * postings) and the sender's open positions travel with the idempotency claim; the
   * stored response with COMMIT. Which check failed is read from the locked rows.
   */
  async transfer(key: IdempotencyKey, ctx: RequestContext, type: WalletType, toAccountNumber: string, amount: string, note: string | undefined): Promise<IdempotentOutcome> {
    const statement = transferSql(ctx.userId, toAccountNumber, type, amount, ctx.operationId, note ?? null, IdempotencyService.CLAIMED);
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx, first) => { // read routing
      const locked = (first[0]?.rows ?? []).map((r) => camelRow<TransferRow>(r as Record<string, unknown>));
      const from = locked.find((w) => w.userId === ctx.userId);
      if (!from) throw new NotFoundError('Wallet');
      if (from.accountNumber === toAccountNumber) throw new ValidationError('Cannot transfer to your own account', [{ field: 'toAccountNumber', message: 'is your own account' }]);
      const to = locked.find((w) => w.userId !== ctx.userId);
      if (!to) throw new DomainError('RECIPIENT_NOT_FOUND', 'No account with this account number');
      if (from.balance === null || to.balance === null) throw new InsufficientFundsError();
      const sender: WalletChangeRow = {
        id: from.id, userId: from.userId, type: from.type!, currency: from.currency!, balance: from.balance, margin: from.margin,
        realizedProfit: from.realizedProfit!, updatedAt: from.updatedAt!, oldBalance: from.oldBalance, postingId: from.postingId, postingCreatedAt: from.postingCreatedAt,
      };
      const valuation = this.positionsOf(first[1], from.id);
      if (new Decimal(from.margin).gt(0) && this.financial.freeMarginCheck) await this.financial.freeMarginCheck(trx, sender, valuation);
      ctx.log.financial('transfer', {
        operationId: ctx.operationId, userId: ctx.userId, walletType: type, amount, to: toAccountNumber,
        oldBalance: from.oldBalance, newBalance: from.balance, recipientOldBalance: to.oldBalance, recipientNewBalance: to.balance,
      });
      const transaction: TransactionView = {
        id: from.postingId!,
        type: 'transfer_out',
        amount: formatMoney(new Decimal(amount).neg()),
        balanceAfter: formatMoney(from.balance),
        createdAt: from.postingCreatedAt!.toISOString(),
        operationId: ctx.operationId,
        counterparty: to.accountNumber,
      };
      if (note !== undefined) transaction.note = note;
      return { status: 201, data: { transaction, wallet: toWalletView(sender, valuation) } };
    }, { operation: 'transfer', log: ctx.log, first: `${statement}; ${this.positionsSql(ctx.userId, type)}` }));
  }

  async history(userId: string, type: WalletType, q: { limit: number; cursor?: string; type?: string; from?: string; to?: string }) {
    return this.router.read(userId, async (db) => { // read routing
      const wallet = await findWallet(db, userId, type);
      if (!wallet) throw new NotFoundError('Wallet');
      const rows = await listPostings(db, {
        walletId: wallet.id,
        type: q.type,
        from: q.from ? new Date(q.from) : undefined,
        to: q.to ? new Date(q.to) : undefined,
        before: decodeCursor(q.cursor),
        limit: q.limit,
      });
      return toPage(rows, q.limit, toTransactionView);
    });
  }

  private changeToTransaction(row: WalletChangeRow, type: string, amount: string, operationId: string, extra: { metadata?: Record<string, unknown> | null }): TransactionView {
    const view: TransactionView = {
      id: row.postingId!,
      type,
      amount: formatMoney(amount),
      balanceAfter: formatMoney(new Decimal(row.oldBalance).plus(amount)),
      createdAt: row.postingCreatedAt!.toISOString(),
      operationId,
    };
    if (extra.metadata) view.metadata = extra.metadata;
    return view;
  }
}
