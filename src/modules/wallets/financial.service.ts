/**
 * FinancialService: the seed's atomic money operations. Every change of a wallet's
 * balance, margin or realized profit goes through here and writes its ledger entry
 * in the same statement; each call is atomic (its own transaction, or the caller's
 * when one is passed) and logged with `logger.financial` (old and new balance).
 */
import type { Trx } from '../../platform/db/database.js';
import type { WalletType } from '../../platform/db/schema.js';
import { DomainError, InsufficientFundsError, NotFoundError } from '../../platform/errors.js';
import { storedRejections } from '../../platform/idempotency.service.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal } from '../../platform/money.js';
import { queryBatch, type TransactionService } from '../../platform/transaction.service.js';
import { sql, type RawBuilder } from 'kysely';
import { preparedSql } from '../../platform/db/inline.js';
import { toWalletChangeRow, walletChangeSql, type PostingInfo, type Settlement, type WalletChangeRow } from './ledger.repository.js';

/**
 * The entry types a single-wallet change here can carry (margin_reserve moves no money).
 * A close's trade_profit, trade_loss, margin_release and negative_balance_compensation
 * are posted by `order_settle` (migration 0009), its referral_commission entries by
 * `referral_commissions_pay` (migration 0010); their log lines are written here.
 */
export type OperationType = 'deposit' | 'withdrawal' | 'adjustment' | 'referral_commission' | 'referral_bonus' | 'margin_reserve';

/** The house account on the other side of each entry type. */
function houseAccountFor(operation: OperationType, book: WalletType): string {
  switch (operation) {
    case 'deposit': return book === 'demo' ? 'demo_faucet' : 'deposit_gateway';
    case 'withdrawal': return book === 'demo' ? 'demo_faucet' : 'withdrawal_gateway';
    case 'adjustment': return 'adjustments';
    case 'margin_reserve': return 'dealing';
    case 'referral_commission': return 'referral_commissions';
    case 'referral_bonus': return 'referral_bonuses';
  }
}

export interface FinancialContext {
  /** Join the caller's transaction (one of TransactionService's) instead of opening one. */
  trx?: Trx;
  operationId: string;
  log?: AppLogger;
  orderId?: string | null;
  counterparty?: string | null;
  note?: string | null;
}

export interface CombinedDeltas {
  balance?: string | Decimal;
  margin?: string | Decimal;
  profit?: string | Decimal;
}

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
  finish(raw: Record<string, unknown> | undefined): Promise<T>;
}

/** What the money calls value open positions at, and whom they tell a wallet with positions changed. */
export interface PositionsInput {
  /** Every current quote as JSON, `[{symbol, bid, ask}]` with exact decimal strings (QuoteBook.inputsJson). */
  quotesJson: string;
  /** NOTIFY channel of the risk engine (null: nobody listens). */
  notifyChannel: string | null;
}

/** A money call (migration 0007): its statement, its notices, and the log line of its row. */
export interface MoneyCallPlan<R> {
  statement: string;
  /** Notices to send after the call's COMMIT (BatchOptions.afterCommit). */
  afterCommit: string[];
  finish(row: R): void;
}

/**
 * After a money call's commit: the id of each wallet it changed that holds open positions,
 * on `channel` (the risk engine's), so the engine re-reads it at once rather than at its
 * next resync. The user's wallet of `walletType` and, for a transfer, the recipient's.
 * The calls can send this notice themselves (`p_notify`), but inside the transaction it
 * serialised every such commit (BatchOptions.afterCommit); the calls get NULL. Only
 * an operation that posted (`operationId`'s postings) notifies: not a replay, whose
 * postings carry the first request's operation, nor a stored rejection.
 */
function walletNotices(channel: string | null, operationId: string, userId: string, walletType: WalletType, toAccountNumber?: string): string[] {
  if (channel === null) return [];
  const users = toAccountNumber === undefined
    ? sql`${userId}::bigint`
    : sql`${userId}::bigint, (SELECT u.id FROM users u WHERE u.account_number = ${toAccountNumber}::text)`;
  return [preparedSql(sql`SELECT pg_notify(${channel}::text, w.id::text) FROM wallets w
                          WHERE w.user_id IN (${users}) AND w.type = ${walletType}::text AND w.margin > 0
                            AND EXISTS (SELECT 1 FROM ledger_postings p WHERE p.operation_id = ${operationId}::text)`)];
}

/** The row of wallet_deposit and wallet_withdraw after the claim's columns (node-postgres, snake_case); null when nothing changed. */
export interface WalletCallRow {
  old_balance: string | null;
  new_balance: string | null;
  posting_id: string | null;
}

/** The row of wallet_transfer after the claim's columns. */
export interface TransferCallRow extends WalletCallRow {
  recipient_old_balance: string | null;
  recipient_new_balance: string | null;
}

/** A transfer to an account number nobody has (API.md: 404 for any such number). */
function recipientNotFound(): DomainError {
  return new DomainError('RECIPIENT_NOT_FOUND', 'No account with this account number');
}

/**
 * The business rejections wallet_withdraw and wallet_transfer store, rendered here once
 * (reason → [status, body]) so their text lives in TypeScript only.
 */
const CALL_REJECTIONS = storedRejections({
  wallet: new NotFoundError('Wallet'),
  recipient: recipientNotFound(),
  funds: new InsufficientFundsError(),
  free_margin: InsufficientFundsError.freeMargin(),
});

const text = (v: string | Decimal | undefined) => (v === undefined ? '0' : new Decimal(v).toFixed());

export class FinancialService {
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
    // The statement is an EXECUTE of a prepared statement: queryBatch prepares it on the connection first.
    const run = async () => {
      const [result] = await queryBatch([plan.statement]);
      return plan.finish(result!.rows[0] as Record<string, unknown> | undefined);
    };
    if (context.trx) return run();
    return this.tx.executeWithRetry(run, { operation: operationType, log: context.log });
  }

  /**
   * performCombinedOperation in two halves, for a caller that sends the statement in a
   * round trip of its own making (the idempotency claim's): `statement` (SQL, values
   * inlined) changes nothing unless `guard` holds; `finish` takes its row and writes
   * the log line. Money leaving a wallet goes through the calls below (planWithdrawCall,
   * planTransferCall), which check what is withdrawable.
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
    const statement = walletChangeSql(userId, walletType, d, postingFor(operationType, walletType, context, metadata), guard);
    const finish = async (raw: Record<string, unknown> | undefined) => {
      const row = toWalletChangeRow(raw);
      if (!row) throw new NotFoundError('Wallet');
      logChange(context.log ?? this.log, operationType, context.operationId, userId, walletType, d, row, metadata);
      return row;
    };
    return { statement, finish };
  }

  /**
   * A deposit as one call of `wallet_deposit` (migration 0007, 0011): it claims the idempotency
   * key (`claim`: IdempotencyService.claimArguments), credits the wallet against the
   * deposit's house account with both postings, and stores the response, the wallet
   * valued at `positions.quotesJson`; after the commit a wallet with open positions notifies
   * `positions.notifyChannel` (`afterCommit`). The caller runs `statement` as a transaction of one
   * round trip (IdempotencyService.executeCall); `finish` writes the `logger.financial`
   * line of a call that changed the wallet.
   */
  planDepositCall(userId: string, walletType: WalletType, amount: Decimal, metadata: Record<string, unknown> | null,
    context: Omit<FinancialContext, 'trx'>, claim: RawBuilder<unknown>, positions: PositionsInput): MoneyCallPlan<WalletCallRow> {
    const statement = preparedSql(sql`
      SELECT * FROM wallet_deposit(${claim}, ${walletType}::text, ${amount.toFixed()}::numeric, ${houseAccountFor('deposit', walletType)}::text,
                                   ${context.operationId}::text, ${metadata === null ? null : JSON.stringify(metadata)}::text, ${positions.quotesJson}::jsonb,
                                   NULL::text)`);
    return {
      statement,
      afterCommit: walletNotices(positions.notifyChannel, context.operationId, userId, walletType),
      finish: (row) => this.logCall(row, 'deposit', userId, walletType, amount.toFixed(), context, metadata),
    };
  }

  /**
   * A withdrawal as one call of `wallet_withdraw` (migration 0007), like planDepositCall:
   * the amount must be withdrawable (`min(balance - margin, freeMargin)`), else the call
   * stores the rejection. After the commit a wallet with open positions notifies `positions.notifyChannel`.
   */
  planWithdrawCall(userId: string, walletType: WalletType, amount: Decimal,
    context: Omit<FinancialContext, 'trx'>, claim: RawBuilder<unknown>, positions: PositionsInput): MoneyCallPlan<WalletCallRow> {
    const statement = preparedSql(sql`
      SELECT * FROM wallet_withdraw(${claim}, ${walletType}::text, ${amount.toFixed()}::numeric, ${houseAccountFor('withdrawal', walletType)}::text,
                                    ${context.operationId}::text, ${positions.quotesJson}::jsonb, ${CALL_REJECTIONS}::jsonb, NULL::text)`);
    return {
      statement,
      afterCommit: walletNotices(positions.notifyChannel, context.operationId, userId, walletType),
      finish: (row) => this.logCall(row, 'withdrawal', userId, walletType, amount.neg().toFixed(), context, null),
    };
  }

  /**
   * A transfer (`amount` as sent, which the log line shows) to the same wallet type of `toAccountNumber` as one call of
   * `wallet_transfer` (migration 0007): both wallets locked in id order, the checks,
   * both balances and postings, the stored response (or rejection). A transfer to
   * oneself raises SQLSTATE TS400 (a 400, never stored).
   */
  planTransferCall(userId: string, walletType: WalletType, toAccountNumber: string, amount: string, note: string | null,
    context: Omit<FinancialContext, 'trx'>, claim: RawBuilder<unknown>, positions: PositionsInput): MoneyCallPlan<TransferCallRow> {
    const statement = preparedSql(sql`
      SELECT * FROM wallet_transfer(${claim}, ${walletType}::text, ${toAccountNumber}::text, ${new Decimal(amount).toFixed()}::numeric, ${context.operationId}::text,
                                    ${note}::text, ${positions.quotesJson}::jsonb, ${CALL_REJECTIONS}::jsonb, NULL::text)`);
    const finish = (row: TransferCallRow) => {
      if (row.posting_id === null) return; // a stored rejection: nothing changed
      (context.log ?? this.log).financial('transfer', {
        operationId: context.operationId, userId, walletType, amount, to: toAccountNumber,
        oldBalance: row.old_balance, newBalance: row.new_balance, recipientOldBalance: row.recipient_old_balance, recipientNewBalance: row.recipient_new_balance,
      });
    };
    return { statement, afterCommit: walletNotices(positions.notifyChannel, context.operationId, userId, walletType, toAccountNumber), finish };
  }

  /** The `logger.financial` line of an order_open call's margin reservation (migration 0008). */
  logMarginReserve(userId: string, walletType: WalletType, margin: string, balance: string, context: Omit<FinancialContext, 'trx'>): void {
    logChange(context.log ?? this.log, 'margin_reserve', context.operationId, userId, walletType, { balance: '0', margin, profit: '0' },
      { oldBalance: balance, balance, postingId: null }, null);
  }

  /** The `logger.financial` line of a single-wallet call that changed the wallet (also a referral commission's, migration 0010). */
  logCall(row: WalletCallRow, operation: OperationType, userId: string, walletType: WalletType, amount: string,
    context: Omit<FinancialContext, 'trx'>, metadata: Record<string, unknown> | null): void {
    if (row.posting_id === null) return; // a stored rejection: nothing changed
    logChange(context.log ?? this.log, operation, context.operationId, userId, walletType, { balance: amount, margin: '0', profit: '0' },
      { oldBalance: String(row.old_balance), balance: String(row.new_balance), postingId: row.posting_id }, metadata);
  }

  /**
   * The `logger.financial` lines of a close's settlement (`order_settle`, migration 0009,
   * which does the change in SQL for every kind of close): the P&L and margin release,
   * and the house's compensation when a loss went beyond the balance.
   */
  logSettlement(row: Settlement, margin: string, metadata: Record<string, unknown>,
    context: Omit<FinancialContext, 'trx'>): void {
    const log = context.log ?? this.log;
    const profit = new Decimal(row.profit).toFixed();
    logChange(log, row.operation, context.operationId, row.userId, row.type, { balance: profit, margin: new Decimal(margin).neg().toFixed(), profit },
      row, metadata);
    if (new Decimal(row.compensation).gt(0)) {
      log.financial('negative_balance_compensation', {
        operationId: context.operationId,
        userId: row.userId,
        walletType: row.type,
        amount: row.compensation,
        intermediateBalance: row.intermediateBalance,
        newBalance: row.balance,
        postingId: row.compensationPostingId,
        orderId: context.orderId ?? null,
      });
    }
  }

}
