/**
 * Wallet use cases: views, deposit, withdraw, transfer, history. Each money use case
 * is one transaction with its idempotency key inside (DESIGN.md rules 1 and 6).
 */
import type { Db, Trx } from '../../platform/db/database.js';
import { ReadRouter } from '../../platform/db/read-router.js';
import type { PostingRow, WalletRow, WalletType } from '../../platform/db/schema.js';
import { DomainError, InsufficientFundsError, NotFoundError, ValidationError } from '../../platform/errors.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import type { IdempotencyKey, IdempotencyService, IdempotentOutcome } from '../../platform/idempotency.service.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatMoney, ZERO } from '../../platform/money.js';
import type { FinancialService } from './financial.service.js';
import { findWallet, findWallets, listPostings, lockWalletsForTransfer, postTransfer, type WalletChangeRow } from './ledger.repository.js';

export interface Valuation {
  /** Sum of the open orders' unrealized P&L, each rounded half-to-even to the cent. */
  unrealizedPnl: Decimal;
  openOrders: number;
}

/** Values wallets at current quotes; the trading module provides it. */
export type ValuationProvider = (db: Db | Trx, walletIds: string[]) => Promise<Map<string, Valuation>>;

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

  async deposit(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string, paymentMethod: string | undefined): Promise<IdempotentOutcome> {
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx) => { // read routing
      const metadata = paymentMethod ? { paymentMethod } : null;
      let row = await this.financial.updateWalletBalance(ctx.userId, amount, type, 'deposit', metadata, { trx, operationId: ctx.operationId, log: ctx.log });
      const transaction = this.changeToTransaction(row, 'deposit', amount, ctx.operationId, { metadata });
      for (const hook of this.depositHooks) {
        const newer = await hook(trx, { userId: ctx.userId, walletType: type, amount: new Decimal(amount), operationId: ctx.operationId, postingId: row.postingId!, log: ctx.log });
        if (newer) row = newer;
      }
      return { status: 201, data: { transaction, wallet: await this.view(trx, row) } };
    }, { operation: 'deposit', log: ctx.log }));
  }

  async withdraw(key: IdempotencyKey, ctx: RequestContext, type: WalletType, amount: string): Promise<IdempotentOutcome> {
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx) => { // read routing
      const row = await this.financial.updateWalletBalance(ctx.userId, new Decimal(amount).neg(), type, 'withdrawal', null, {
        trx, operationId: ctx.operationId, log: ctx.log, requireWithdrawable: true,
      });
      return { status: 201, data: { transaction: this.changeToTransaction(row, 'withdrawal', `-${amount}`, ctx.operationId, {}), wallet: await this.view(trx, row) } };
    }, { operation: 'withdrawal', log: ctx.log }));
  }

  async transfer(key: IdempotencyKey, ctx: RequestContext, type: WalletType, toAccountNumber: string, amount: string, note: string | undefined): Promise<IdempotentOutcome> {
    return this.noteWrite(ctx.userId, this.idempotency.execute(key, async (trx) => { // read routing
      const locked = await lockWalletsForTransfer(trx, ctx.userId, toAccountNumber, type);
      const from = locked.find((w) => w.userId === ctx.userId);
      if (!from) throw new NotFoundError('Wallet');
      if (from.accountNumber === toAccountNumber) throw new ValidationError('Cannot transfer to your own account', [{ field: 'toAccountNumber', message: 'is your own account' }]);
      const to = locked.find((w) => w.userId !== ctx.userId);
      if (!to) throw new DomainError('RECIPIENT_NOT_FOUND', 'No account with this account number');
      if (new Decimal(from.balance).minus(from.margin).lt(amount)) throw new InsufficientFundsError();
      const result = await postTransfer(trx, { walletId: from.id, userId: from.userId, accountNumber: from.accountNumber }, { walletId: to.id, userId: to.userId, accountNumber: to.accountNumber }, type, amount, ctx.operationId, note ?? null);
      if (new Decimal(result.from.margin).gt(0) && this.financial.freeMarginCheck) {
        const sender = await findWallet(trx, ctx.userId, type);
        await this.financial.freeMarginCheck(trx, { ...sender!, oldBalance: from.balance, postingId: result.from.postingId, postingCreatedAt: result.from.createdAt });
      }
      ctx.log.financial('transfer', {
        operationId: ctx.operationId, userId: ctx.userId, walletType: type, amount, to: toAccountNumber,
        oldBalance: from.balance, newBalance: result.from.balance, recipientOldBalance: to.balance, recipientNewBalance: result.to.balance,
      });
      const transaction: TransactionView = {
        id: result.from.postingId,
        type: 'transfer_out',
        amount: formatMoney(new Decimal(amount).neg()),
        balanceAfter: formatMoney(result.from.balance),
        createdAt: result.from.createdAt.toISOString(),
        operationId: ctx.operationId,
        counterparty: to.accountNumber,
      };
      if (note !== undefined) transaction.note = note;
      const wallet = await findWallet(trx, ctx.userId, type);
      return { status: 201, data: { transaction, wallet: await this.view(trx, wallet!) } };
    }, { operation: 'transfer', log: ctx.log }));
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
