/**
 * Wallet use cases: views, deposit, withdraw, transfer, history. Each money use case
 * is one transaction with its idempotency key inside (DESIGN.md rules 1 and 6).
 */
import type { Db, Trx } from '../../platform/db/database.js';
import { ReadRouter } from '../../platform/db/read-router.js';
import type { PostingRow, WalletRow, WalletType } from '../../platform/db/schema.js';
import { NotFoundError, ValidationError } from '../../platform/errors.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import { IdempotencyService, type IdempotencyKey, type IdempotentOutcome } from '../../platform/idempotency.service.js';
import type pg from 'pg';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatMoney, ZERO } from '../../platform/money.js';
import type { FinancialService, MoneyCallPlan, PositionsInput } from './financial.service.js';
import { notifyOnCommit, SQLSTATE, sqlState } from '../../platform/transaction.service.js';
import { findWallet, findWallets, listPostings, type WalletChangeRow } from './ledger.repository.js';

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

/**
 * Whether a hook may act on a deposit (false: it certainly does nothing). A deposit no
 * hook may act on is one PL/pgSQL call in one round trip; the others run the hooks.
 */
export type DepositHookFilter = (userId: string, walletType: WalletType, amount: Decimal) => Promise<boolean>;

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
  readonly depositHooks: { hook: DepositHook; mayAct: DepositHookFilter }[] = [];
  /** What the money calls value open positions at and notify (set by the trading module). */
  positions: () => PositionsInput = () => ({ quotesJson: '[]', notifyChannel: null });
  valuation: ValuationProvider = async () => new Map();
  valuationQuery: ValuationQuery | undefined;

  constructor(
    private readonly db: Db,
    private readonly idempotency: IdempotencyService,
    private readonly financial: FinancialService,
    // Read routing (issue 7): reads may go to replicas; writes note the user's position.
    private readonly router: ReadRouter = new ReadRouter({ primary: db }),
  ) {}

  /**
   * Inside a transaction that changed a wallet outside the money calls (a hook's deposit,
   * an admin adjustment): a wallet with open positions tells the risk engine on commit,
   * as the calls do (`positions().notifyChannel`).
   */
  async tellPositions(trx: Trx, row: { id: string; margin: string }): Promise<void> {
    const channel = this.positions().notifyChannel;
    if (channel && new Decimal(row.margin).gt(0)) await notifyOnCommit(trx, channel, row.id);
  }

  /** Registers an in-transaction hook run by every deposit (the referral module's signup bonus). */
  onDeposit(hook: DepositHook, mayAct: DepositHookFilter = async () => true): void {
    this.depositHooks.push({ hook, mayAct });
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
   * A deposit some hook may act on (a referred user's qualifying deposit: the signup
   * bonus) runs the hooks in its transaction, in the statement form: the wallet change
   * and the wallet's open positions travel with the idempotency claim, the stored
   * response with COMMIT. Every other deposit is one call (`wallet_deposit`, see oneCall).
   */
  async deposit(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string, paymentMethod: string | undefined): Promise<IdempotentOutcome> {
    const metadata = paymentMethod ? { paymentMethod } : null;
    const value = new Decimal(amount);
    let hooks = false;
    for (const h of this.depositHooks) hooks ||= await h.mayAct(ctx.userId, type, value);
    if (!hooks) {
      const plan = this.financial.planDepositCall(ctx.userId, type, value, metadata, { operationId: ctx.operationId, log: ctx.log },
        this.idempotency.claimArguments(key), this.positions());
      return this.oneCall(key, ctx, 'deposit', plan);
    }
    const plan = this.financial.planCombinedOperation(ctx.userId, { balance: value }, type, 'deposit', metadata, {
      operationId: ctx.operationId, log: ctx.log,
    }, IdempotencyService.CLAIMED);
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx, first) => { // read routing
      const raw = first[0]?.rows[0] as Record<string, unknown> | undefined;
      const valuation = raw ? this.positionsOf(first[1], String(raw.id)) : undefined;
      const row = await plan.finish(raw);
      await this.tellPositions(trx, row);
      const transaction = this.changeToTransaction(row, 'deposit', value.toFixed(), ctx.operationId, { metadata });
      let latest = row;
      for (const { hook } of this.depositHooks) {
        const newer = await hook(trx, { userId: ctx.userId, walletType: type, amount: value, operationId: ctx.operationId, postingId: row.postingId!, log: ctx.log });
        if (newer) latest = newer;
      }
      return { status: 201, data: { transaction, wallet: toWalletView(latest, valuation) } };
    }, {
      operation: 'deposit', log: ctx.log, first: `${plan.statement}; ${this.positionsSql(ctx.userId, type)}`,
      // A deposit's only rejection is a missing wallet, which registration rules out: no savepoint.
      savepoint: false,
    }));
  }

  /** One call (migration 0007): the withdrawable amount is `min(balance - margin, freeMargin)`. */
  async withdraw(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string): Promise<IdempotentOutcome> {
    const plan = this.financial.planWithdrawCall(ctx.userId, type, new Decimal(amount), { operationId: ctx.operationId, log: ctx.log },
      this.idempotency.claimArguments(key), this.positions());
    return this.oneCall(key, ctx, 'withdrawal', plan);
  }

  /** One call (migration 0007): both wallets locked in id order, the checks, both sides, the stored response. */
  async transfer(key: IdempotencyKey, ctx: RequestContext, type: WalletType, toAccountNumber: string, amount: string, note: string | undefined): Promise<IdempotentOutcome> {
    const plan = this.financial.planTransferCall(ctx.userId, type, toAccountNumber, amount, note ?? null, { operationId: ctx.operationId, log: ctx.log },
      this.idempotency.claimArguments(key), this.positions());
    return this.oneCall(key, ctx, 'transfer', plan);
  }

  /**
   * A money operation that is one PL/pgSQL call (migration 0007): claim, checks, change,
   * postings and the stored response (or rejection) in one round trip with BEGIN and
   * COMMIT. The calls raise for what is never stored: a deposit's missing wallet
   * (no_data_found) and a transfer to oneself (TS400); both roll back, key included.
   */
  private oneCall<R extends object>(key: IdempotencyKey, ctx: RequestContext, operation: string, plan: MoneyCallPlan<R>): Promise<IdempotentOutcome> {
    return this.noteWrite(ctx.userId, (async () => { // read routing
      try {
        const { outcome, row } = await this.idempotency.executeCall<R>(key, plan.statement, { operation, log: ctx.log, afterCommit: plan.afterCommit });
        if (!outcome.replayed) plan.finish(row);
        return outcome;
      } catch (err) {
        const state = sqlState(err);
        if (state === SQLSTATE.noDataFound) throw new NotFoundError('Wallet');
        if (state === SQLSTATE.ownTransfer) throw new ValidationError('Cannot transfer to your own account', [{ field: 'toAccountNumber', message: 'is your own account' }]);
        throw err;
      }
    })());
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
