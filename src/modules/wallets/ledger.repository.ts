/**
 * Every query of the ledger and the wallet rows. A wallet's balance is the
 * materialised sum of its postings; both change in one statement, so they can never
 * drift apart. House accounts have no balance row (no hot rows): their balance is
 * the sum of their postings.
 */
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import type { WalletRow, WalletType } from '../../platform/db/schema.js';
import { createdMicros, olderThan, type Cursor } from '../../platform/http/pagination.js';
import { camelRow, preparedQuery, preparedSql } from '../../platform/db/inline.js';

export interface PostingInfo {
  type: string;
  houseAccount: string;
  operationId: string;
  orderId?: string | null;
  counterparty?: string | null;
  note?: string | null;
  metadata?: Record<string, unknown> | null;
}

export interface WalletChangeRow {
  id: string;
  userId: string;
  type: WalletType;
  currency: string;
  balance: string;
  margin: string;
  realizedProfit: string;
  updatedAt: Date;
  oldBalance: string;
  postingId: string | null;
  postingCreatedAt: Date | null;
}

export interface WalletDeltas {
  balance: string;
  margin: string;
  profit: string;
}

/**
 * Applies deltas to one wallet (`balance = balance + $delta`, never a value computed
 * from an unlocked read) and, when the balance moves, writes the two postings of the
 * entry (wallet and house account) in the same statement. `guard` (SQL) is a
 * condition: the statement changes nothing unless it holds
 * (the idempotency claim, when the statement travels with it).
 *
 * Returned as `EXECUTE` of a statement prepared per connection, with its values inlined,
 * so it can share a round trip.
 */
export function walletChangeSql(
  userId: string,
  walletType: WalletType,
  deltas: WalletDeltas,
  posting: PostingInfo | undefined,
  guard = 'TRUE',
): string {
  const p = posting;
  const withPosting = p !== undefined && deltas.balance !== '0';
  return preparedSql(sql`
    WITH w AS (
      UPDATE wallets
      SET balance = balance + ${deltas.balance}::numeric,
          margin = margin + ${deltas.margin}::numeric,
          realized_profit = realized_profit + ${deltas.profit}::numeric,
          updated_at = now()
      WHERE user_id = ${userId} AND type = ${walletType} AND ${sql.raw(guard)}
      RETURNING *
    ), e AS (
      SELECT nextval('journal_entry_id_seq') AS id FROM w WHERE ${withPosting}
    ), p AS (
      INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, counterparty, note, metadata)
      SELECT e.id, w.type, v.wallet_id, v.house_account, ${p?.type ?? ''}, v.amount, v.balance_after,
             ${p?.operationId ?? ''}, ${p?.orderId ?? null}::bigint, ${p?.counterparty ?? null}, ${p?.note ?? null},
             ${p?.metadata ? JSON.stringify(p.metadata) : null}::jsonb
      FROM w CROSS JOIN e CROSS JOIN LATERAL (VALUES
        (w.id, NULL::text, ${deltas.balance}::numeric, w.balance),
        (NULL::bigint, ${p?.houseAccount ?? null}::text, -${deltas.balance}::numeric, NULL::numeric)
      ) AS v (wallet_id, house_account, amount, balance_after)
      RETURNING id, wallet_id, created_at
    )
    SELECT w.id, w.user_id, w.type, w.currency, w.balance, w.margin, w.realized_profit, w.updated_at,
           w.balance - ${deltas.balance}::numeric AS old_balance,
           (SELECT p.id FROM p WHERE p.wallet_id IS NOT NULL) AS posting_id,
           (SELECT p.created_at FROM p WHERE p.wallet_id IS NOT NULL) AS posting_created_at
    FROM w
  `);
}

/** The row of `walletChangeSql` as node-postgres returns it, in the app's names. */
export function toWalletChangeRow<T extends WalletChangeRow = WalletChangeRow>(raw: Record<string, unknown> | undefined): T | undefined {
  return raw ? camelRow<T>(raw) : undefined;
}

/**
 * Every column of a wallet, named: a prepared statement's result columns must not change
 * when a later migration adds one (`SELECT *` would then fail on every open connection).
 */
export const WALLET_COLUMNS = ['id', 'userId', 'type', 'currency', 'balance', 'margin', 'realizedProfit', 'createdAt', 'updatedAt'] as const;

/** Locks the user's wallet of `type` (SELECT … FOR UPDATE), as SQL text; only when `guard` holds. */
export function lockWalletSql(userId: string, type: WalletType, guard = 'TRUE'): string {
  return preparedQuery((db) => db.selectFrom('wallets').select(WALLET_COLUMNS).where('userId', '=', userId).where('type', '=', type)
    .where(sql<boolean>`${sql.raw(guard)}`).forUpdate());
}

export async function findWallet(db: Db | Trx, userId: string, type: WalletType): Promise<WalletRow | undefined> {
  return db.selectFrom('wallets').selectAll().where('userId', '=', userId).where('type', '=', type).executeTakeFirst();
}

export async function findWallets(db: Db | Trx, userId: string): Promise<WalletRow[]> {
  return db.selectFrom('wallets').selectAll().where('userId', '=', userId).orderBy('type', 'desc').execute(); // live, then demo
}

export interface HistoryFilter {
  walletId: string;
  type?: string;
  from?: Date;
  to?: Date;
  before?: Cursor;
  limit: number;
}

export async function listPostings(db: Db | Trx, f: HistoryFilter) {
  let q = db.selectFrom('ledgerPostings').selectAll().select(createdMicros().as('createdMicros')).where('walletId', '=', f.walletId);
  if (f.type) q = q.where('type', '=', f.type);
  if (f.from) q = q.where('createdAt', '>=', f.from);
  if (f.to) q = q.where('createdAt', '<=', f.to);
  if (f.before) q = q.where(olderThan(f.before));
  return q.orderBy('createdAt', 'desc').orderBy('id', 'desc').limit(f.limit + 1).execute();
}

export async function findPosting(db: Db | Trx, id: string) {
  return db.selectFrom('ledgerPostings').selectAll().where('id', '=', id).executeTakeFirst();
}

/** The row of a close's settlement (`order_settle`, migration 0009) in the app's names: the wallet after the close, and the P&L. */
export interface Settlement extends WalletChangeRow {
  settled: boolean;
  profit: string;
  /** trade_profit, trade_loss or margin_release. */
  operation: string;
  /** What the balance change alone leaves: old balance + delta (negative when the house compensates). */
  intermediateBalance: string;
  /** The house's compensation that brought the balance back to 0.00 ("0" when there was none). */
  compensation: string;
  compensationPostingId: string | null;
}

