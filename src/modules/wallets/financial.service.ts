/**
 * FinancialService: the seed's atomic money operations. Every change of a wallet's
 * balance, margin or realized profit goes through here and writes its ledger entry
 * in the same statement; each call is atomic (its own transaction, or the caller's
 * when one is passed) and logged with `logger.financial` (old and new balance).
 */
import type { Trx } from '../../platform/db/database.js';
import type { WalletType } from '../../platform/db/schema.js';
import { InsufficientFundsError, NotFoundError } from '../../platform/errors.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import type { TransactionService } from '../../platform/transaction.service.js';
import { sql } from 'kysely';
import { toWalletChangeRow, walletChangeSql, walletChangeWithCompensationSql, type PostingInfo, type ProtectedWalletChangeRow, type WalletChangeRow } from './ledger.repository.js';
import type { Valuation } from './wallet.service.js';

/** The transaction types of API.md that a single-wallet entry can carry. */
export type OperationType =
  | 'deposit' | 'withdrawal' | 'adjustment' | 'trade_profit' | 'trade_loss'
  | 'referral_commission' | 'referral_bonus' | 'negative_balance_compensation'
  | 'margin_reserve' | 'margin_release';

/** The house account on the other side of each entry type. */
function houseAccountFor(operation: OperationType, book: WalletType): string {
  switch (operation) {
    case 'deposit': return book === 'demo' ? 'demo_faucet' : 'deposit_gateway';
    case 'withdrawal': return book === 'demo' ? 'demo_faucet' : 'withdrawal_gateway';
    case 'adjustment': return 'adjustments';
    case 'trade_profit':
    case 'trade_loss':
    case 'margin_reserve':
    case 'margin_release': return 'dealing';
    case 'referral_commission': return 'referral_commissions';
    case 'referral_bonus': return 'referral_bonuses';
    case 'negative_balance_compensation': return 'negative_balance_compensation';
  }
}

export interface FinancialContext {
  /** Join the caller's transaction instead of opening one. */
  trx?: Trx;
  operationId: string;
  log?: AppLogger;
  orderId?: string | null;
  counterparty?: string | null;
  note?: string | null;
  /**
   * Money leaving the wallet must be withdrawable: `balance - margin` covers it
   * (checked in the UPDATE itself); open positions' unrealized P&L is checked by the
   * trading module's free-margin hook.
   */
  requireWithdrawable?: boolean;
}

export interface CombinedDeltas {
  balance?: string | Decimal;
  margin?: string | Decimal;
  profit?: string | Decimal;
}

/** `valuation`: the wallet's open positions when the caller read them already. */
export type FreeMarginCheck = (trx: Trx, wallet: WalletChangeRow, valuation?: Valuation) => Promise<void>;

/** The ledger entry of a wallet change: its type, house account and references. */
function postingFor(operationType: OperationType, walletType: WalletType, context: Omit<FinancialContext, 'trx'>, metadata: Record<string, unknown> | null): PostingInfo {
  return {
    type: operationType,
    houseAccount: houseAccountFor(operationType, walletType),
    operationId: context.operationId,
    orderId: context.orderId,
    counterparty: context.counterparty,
    note: context.note,
    metadata,
  };
}

/** The seed's `logger.financial` line of a wallet change: old and new balance. */
function logChange(log: AppLogger, operation: string, operationId: string, userId: string, walletType: WalletType,
  d: { balance: string; margin: string; profit: string }, row: { oldBalance: string; balance: string; postingId: string | null }, metadata: Record<string, unknown> | null) {
  log.financial(operation, {
    operationId, userId, walletType, amount: d.balance, margin: d.margin, profit: d.profit,
    oldBalance: row.oldBalance, newBalance: row.balance, postingId: row.postingId, metadata,
  });
}

/**
 * A wallet change in two halves: the statement (SQL, values inlined) and what turns its
 * row (as node-postgres or Kysely returns it) into the result, with the checks and the
 * `logger.financial` line.
 */
export interface WalletChangePlan<T> {
  statement: string;
  finish(trx: Trx, raw: Record<string, unknown> | undefined, valuation?: Valuation): Promise<T>;
}

const text = (v: string | Decimal | undefined) => (v === undefined ? '0' : new Decimal(v).toFixed());

export class FinancialService {
  /** Set by the trading module: refuses a withdrawal that would leave free margin below 0. */
  freeMarginCheck?: FreeMarginCheck;

  constructor(
    private readonly tx: TransactionService,
    private readonly log: AppLogger,
  ) {}

  /** Credits (amount > 0) or debits (amount < 0) a wallet against the house account of `operationType`. */
  async updateWalletBalance(
    userId: string,
    amount: string | Decimal,
    walletType: WalletType,
    operationType: OperationType,
    metadata: Record<string, unknown> | null = null,
    context: FinancialContext,
  ): Promise<WalletChangeRow> {
    return this.performCombinedOperation(userId, { balance: amount }, walletType, operationType, metadata, context);
  }

  /**
   * Changes balance, margin and realized profit of one wallet at once. The balance
   * part is posted against the house account of `operationType`; margin is a
   * reservation inside the wallet and moves no money.
   */
  async performCombinedOperation(
    userId: string,
    deltas: CombinedDeltas,
    walletType: WalletType,
    operationType: OperationType,
    metadata: Record<string, unknown> | null = null,
    context: FinancialContext,
  ): Promise<WalletChangeRow> {
    return this.perform(this.planCombinedOperation(userId, deltas, walletType, operationType, metadata, context), operationType, context);
  }

  /** Runs a planned change in the caller's transaction, or in its own. */
  private async perform<T>(plan: WalletChangePlan<T>, operationType: OperationType, context: FinancialContext): Promise<T> {
    const run = async (trx: Trx) => {
      const { rows } = await sql.raw<Record<string, unknown>>(plan.statement).execute(trx);
      // Through Kysely the row is camelCase already; toWalletChangeRow leaves it so.
      return plan.finish(trx, rows[0]);
    };
    if (context.trx) return run(context.trx);
    return this.tx.executeWithRetry(run, { operation: operationType, log: context.log });
  }

  /**
   * performCombinedOperation in two halves, for a caller that sends the statement in a
   * round trip of its own making (the idempotency claim's): `statement` (SQL, values
   * inlined) changes nothing unless `guard` holds; `finish` takes its row and does the
   * checks and the log line. `valuation` (the wallet's open positions, when the caller
   * read them in the same round trip) spares the free-margin check its query.
   */
  planCombinedOperation(
    userId: string,
    deltas: CombinedDeltas,
    walletType: WalletType,
    operationType: OperationType,
    metadata: Record<string, unknown> | null,
    context: Omit<FinancialContext, 'trx'>,
    guard = 'TRUE',
  ): WalletChangePlan<WalletChangeRow> {
    const d = { balance: text(deltas.balance), margin: text(deltas.margin), profit: text(deltas.profit) };
    const balanceDelta = new Decimal(d.balance);
    // Money leaving (or margin reserved) must be covered by balance - margin.
    const outflow = balanceDelta.neg().plus(new Decimal(d.margin).gt(0) ? d.margin : 0);
    // The UPDATE's condition sees the row before the change: old balance - old margin >= outflow.
    const minAvailable = context.requireWithdrawable && outflow.gt(0) ? outflow.toFixed() : undefined;
    const statement = walletChangeSql(userId, walletType, d, postingFor(operationType, walletType, context, metadata), minAvailable, guard);
    const finish = async (trx: Trx, raw: Record<string, unknown> | undefined, valuation?: Valuation) => {
      const row = toWalletChangeRow(raw);
      if (!row) {
        if (minAvailable !== undefined) throw new InsufficientFundsError();
        throw new NotFoundError('Wallet');
      }
      if (context.requireWithdrawable && outflow.gt(0) && new Decimal(row.margin).gt(0) && this.freeMarginCheck) {
        await this.freeMarginCheck(trx, row, valuation);
      }
      logChange(context.log ?? this.log, operationType, context.operationId, userId, walletType, d, row, metadata);
      return row;
    };
    return { statement, finish };
  }

  /**
   * performCombinedOperation with negative balance protection, for trade settlement:
   * a debit larger than the balance is posted in full (its balanceAfter is the negative
   * intermediate value), and the shortfall is credited in a separate
   * `negative_balance_compensation` entry from the house, so the balance ends at 0.00
   * and never below. Always inside the caller's transaction or its own, like the others.
   */
  async performProtectedOperation(
    userId: string,
    deltas: CombinedDeltas,
    walletType: WalletType,
    operationType: OperationType,
    metadata: Record<string, unknown> | null = null,
    context: FinancialContext,
  ): Promise<ProtectedWalletChangeRow> {
    return this.perform(this.planProtectedOperation(userId, deltas, walletType, operationType, metadata, context), operationType, context);
  }

  /** performProtectedOperation in two halves, like planCombinedOperation. */
  planProtectedOperation(
    userId: string,
    deltas: CombinedDeltas,
    walletType: WalletType,
    operationType: OperationType,
    metadata: Record<string, unknown> | null,
    context: Omit<FinancialContext, 'trx'>,
  ): WalletChangePlan<ProtectedWalletChangeRow> {
    const d = { balance: text(deltas.balance), margin: text(deltas.margin), profit: text(deltas.profit) };
    const statement = walletChangeWithCompensationSql(userId, walletType, d, postingFor(operationType, walletType, context, metadata),
      { type: 'negative_balance_compensation', houseAccount: houseAccountFor('negative_balance_compensation', walletType) });
    const finish = async (_trx: Trx, raw: Record<string, unknown> | undefined) => {
      const row = toWalletChangeRow<ProtectedWalletChangeRow>(raw);
      if (!row) throw new NotFoundError('Wallet');
      const log = context.log ?? this.log;
      logChange(log, operationType, context.operationId, userId, walletType, d, row, metadata);
      if (new Decimal(row.compensation).gt(0)) {
        log.financial('negative_balance_compensation', {
          operationId: context.operationId,
          userId,
          walletType,
          amount: row.compensation,
          intermediateBalance: row.intermediateBalance,
          newBalance: row.balance,
          postingId: row.compensationPostingId,
          orderId: context.orderId ?? null,
        });
      }
      return row;
    };
    return { statement, finish };
  }

}
