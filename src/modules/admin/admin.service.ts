/**
 * Admin use cases: adjustments, user search and detail, block/unblock, the audit log
 * and reconciliation. Every admin action writes its audit row in its own transaction.
 */
import type { Db } from '../../platform/db/database.js';
import type { UserRow, WalletType } from '../../platform/db/schema.js';
import { NotFoundError } from '../../platform/errors.js';
import { decodeCursor, toPage } from '../../platform/http/pagination.js';
import type { IdempotencyKey, IdempotencyService, IdempotentOutcome } from '../../platform/idempotency.service.js';
import type { AppLogger } from '../../platform/logger.js';
import { Decimal, formatMoney } from '../../platform/money.js';
import type { TransactionService } from '../../platform/transaction.service.js';
import { findUserById } from '../auth/auth.repository.js';
import { toUserView } from '../auth/auth.service.js';
import { notifyUserChanged, type UserStateCache } from '../auth/user-state.cache.js';
import type { FinancialService } from '../wallets/financial.service.js';
import { findWallets } from '../wallets/ledger.repository.js';
import type { WalletService } from '../wallets/wallet.service.js';
import { balanceMismatches, bookSums, countWallets, insertAudit, listAudit, searchUsers, setBlocked } from './admin.repository.js';

export interface Mismatch {
  walletId: string;
  userId: string;
  walletType: string;
  field: 'balance' | 'margin';
  expected: string;
  actual: string;
}

/** Wallets whose margin differs from their open orders' margin; the trading module provides it. */
export type MarginCheck = (db: Db) => Promise<Mismatch[]>;

export interface AdminContext {
  actorId: string;
  operationId: string;
  log: AppLogger;
}

export function toAdminUserView(u: UserRow) {
  return { ...toUserView(u), blocked: u.blocked };
}

export class AdminService {
  marginCheck: MarginCheck = async () => [];
  /** Called after a committed write of a user (the read router's read-your-writes). */
  afterWrite: (userId: string) => Promise<void> = async () => undefined;

  constructor(
    private readonly db: Db,
    private readonly tx: TransactionService,
    private readonly idempotency: IdempotencyService,
    private readonly financial: FinancialService,
    private readonly wallets: WalletService,
    private readonly cache: UserStateCache,
  ) {}

  async adjust(key: IdempotencyKey, ctx: AdminContext, input: { userId: string; walletType: WalletType; amount: string; reason: string }): Promise<IdempotentOutcome> {
    return this.idempotency.execute(key, async (trx) => {
      const target = await findUserById(trx, input.userId);
      if (!target) throw new NotFoundError('User');
      const amount = new Decimal(input.amount);
      const row = await this.financial.updateWalletBalance(input.userId, amount, input.walletType, 'adjustment', { reason: input.reason, adminId: ctx.actorId }, {
        trx, operationId: ctx.operationId, log: ctx.log, note: input.reason,
      });
      await this.wallets.tellPositions(trx, row);
      await insertAudit(trx, {
        actorId: ctx.actorId, action: 'adjustment', targetUserId: input.userId, operationId: ctx.operationId,
        details: { walletType: input.walletType, amount: formatMoney(amount), reason: input.reason, postingId: row.postingId },
      });
      const transaction = {
        id: row.postingId!,
        type: 'adjustment',
        amount: formatMoney(amount),
        balanceAfter: formatMoney(row.balance),
        createdAt: row.postingCreatedAt!.toISOString(),
        operationId: ctx.operationId,
        note: input.reason,
        metadata: { reason: input.reason, adminId: ctx.actorId },
      };
      return { status: 201, data: { transaction, wallet: await this.wallets.view(trx, row) } };
    }, { operation: 'adjustment', log: ctx.log }).then(async (outcome) => {
      if (!outcome.replayed && outcome.status < 300) await this.afterWrite(input.userId);
      return outcome;
    });
  }

  async listUsers(search: string | undefined, limit: number, cursor: string | undefined) {
    const rows = await searchUsers(this.db, search, limit, decodeCursor(cursor));
    return toPage(rows, limit, toAdminUserView);
  }

  async getUser(userId: string) {
    const user = await findUserById(this.db, userId);
    if (!user) throw new NotFoundError('User');
    const rows = await findWallets(this.db, userId);
    const wallets = await Promise.all(rows.map((w) => this.wallets.view(this.db, w)));
    return { user: toAdminUserView(user), wallets };
  }

  async setBlocked(ctx: AdminContext, userId: string, blocked: boolean) {
    const user = await this.tx.executeWithRetry(async (trx) => {
      const u = await setBlocked(trx, userId, blocked);
      if (!u) throw new NotFoundError('User');
      await insertAudit(trx, { actorId: ctx.actorId, action: blocked ? 'block' : 'unblock', targetUserId: userId, details: {}, operationId: ctx.operationId });
      await notifyUserChanged(trx, userId);
      return u;
    }, { operation: blocked ? 'block_user' : 'unblock_user', log: ctx.log });
    this.cache.invalidate(userId);
    ctx.log.info({ targetUserId: userId, blocked }, blocked ? 'user blocked' : 'user unblocked');
    return { user: toAdminUserView(user) };
  }

  async audit(limit: number, cursor: string | undefined) {
    const rows = await listAudit(this.db, limit, decodeCursor(cursor));
    return toPage(rows, limit, (r) => ({ id: r.id, actorId: r.actorId, action: r.action, targetUserId: r.targetUserId, details: r.details, createdAt: r.createdAt.toISOString() }));
  }

  /** Recomputes every wallet from the ledger and open orders; checks each book sums to 0.00. */
  async reconcile() {
    const [balance, margin, books, checkedWallets] = await Promise.all([
      balanceMismatches(this.db), this.marginCheck(this.db), bookSums(this.db), countWallets(this.db),
    ]);
    const mismatches: (Mismatch | { entryId: string; field: 'entry'; expected: string; actual: string })[] = [
      ...balance.map((m) => ({ walletId: m.walletId, userId: m.userId, walletType: m.walletType, field: 'balance' as const, expected: formatMoney(m.expected), actual: formatMoney(m.actual) })),
      ...margin,
      ...books.unbalanced.map((e) => ({ entryId: e.entryId, field: 'entry' as const, expected: '0.00', actual: formatMoney(e.total) })),
    ];
    const sum = (book: string) => formatMoney(books.sums.find((s) => s.book === book)?.total ?? '0');
    const result = { live: { sum: sum('live') }, demo: { sum: sum('demo') } };
    const ok = mismatches.length === 0 && result.live.sum === '0.00' && result.demo.sum === '0.00';
    return { ok, checkedWallets, mismatches, books: result };
  }
}
