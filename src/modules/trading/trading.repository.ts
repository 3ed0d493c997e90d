/** Every query of the trading module: quotes and orders. */
import { sql, type Insertable } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import type { CloseReason, OrderRow, OrdersTable, OrderStatus, WalletType } from '../../platform/db/schema.js';
import { createdMicros, olderThan, type Cursor } from '../../platform/http/pagination.js';
import { preparedQuery, preparedSql } from '../../platform/db/inline.js';

// --- quotes -----------------------------------------------------------------

export async function loadQuotes(db: Db) {
  return db.selectFrom('quotes').selectAll().execute();
}

/** Stores the last quote of each symbol given (one statement). */
export async function upsertQuotes(db: Db | Trx, quotes: { symbol: string; bid: string; ask: string; time: Date }[]): Promise<void> {
  if (quotes.length === 0) return;
  await db.insertInto('quotes').values(quotes)
    .onConflict((oc) => oc.column('symbol').doUpdateSet((eb) => ({ bid: eb.ref('excluded.bid'), ask: eb.ref('excluded.ask'), time: eb.ref('excluded.time') })))
    .execute();
}

// --- orders -----------------------------------------------------------------

/**
 * Every column of an order, named (prepared statements: see WALLET_COLUMNS).
 */
export const ORDER_COLUMNS = [
  'id', 'userId', 'walletId', 'walletType', 'symbol', 'side', 'volume', 'leverage', 'contractSize', 'digits', 'openPrice', 'margin',
  'stopLoss', 'takeProfit', 'status', 'closePrice', 'profit', 'closeReason', 'openedAt', 'closedAt', 'openOperationId', 'closeOperationId',
] as const;

/** Inserts an order, as a prepared statement's `EXECUTE` (to share a round trip). */
export function insertOrderSql(values: Insertable<OrdersTable>): string {
  return preparedQuery((db) => db.insertInto('orders').values(values).returning(ORDER_COLUMNS));
}

/**
 * Settles an open order at `closePrice` (`order_settle`, migration 0009: the order row,
 * the P&L, the margin release and the negative-balance protection), as a prepared
 * statement's `EXECUTE`; its row says `settled` false when the order was not open.
 */
export function orderSettleSql(orderId: string, c: { closePrice: string; closeReason: CloseReason; operationId: string }): string {
  return preparedSql(sql`SELECT * FROM order_settle(${orderId}::bigint, ${c.closePrice}::numeric, ${c.closeReason}::text, ${c.operationId}::text)`);
}

/** One order by id, as a prepared statement's `EXECUTE` (after order_settle in the same round trip: the closed row). */
export function orderByIdSql(orderId: string): string {
  return preparedQuery((db) => db.selectFrom('orders').select(ORDER_COLUMNS).where('id', '=', orderId));
}

/** Locks one order (of one user, when given): the first lock of every order use case. */
export async function lockOrder(trx: Trx, orderId: string, userId?: string): Promise<OrderRow | undefined> {
  let q = trx.selectFrom('orders').selectAll().where('id', '=', orderId);
  if (userId !== undefined) q = q.where('userId', '=', userId);
  return q.forUpdate().executeTakeFirst();
}

export async function findOrder(db: Db, orderId: string, userId: string): Promise<OrderRow | undefined> {
  return db.selectFrom('orders').selectAll().where('id', '=', orderId).where('userId', '=', userId).executeTakeFirst();
}

export interface OrderFilter {
  userId: string;
  status?: OrderStatus;
  walletType?: WalletType;
  before?: Cursor;
  limit: number;
}

export async function listOrders(db: Db, f: OrderFilter) {
  let q = db.selectFrom('orders').selectAll().select(createdMicros('opened_at').as('createdMicros')).where('userId', '=', f.userId);
  if (f.status) q = q.where('status', '=', f.status);
  if (f.walletType) q = q.where('walletType', '=', f.walletType);
  if (f.before) q = q.where(olderThan(f.before, 'opened_at'));
  return q.orderBy('openedAt', 'desc').orderBy('id', 'desc').limit(f.limit + 1).execute();
}

/** Closes a locked open order; undefined when it was not open. */
export async function updateOrderLevels(trx: Trx, orderId: string, levels: { stopLoss: string | null; takeProfit: string | null }): Promise<OrderRow | undefined> {
  return trx.updateTable('orders').set(levels).where('id', '=', orderId).where('status', '=', sql.lit('open')).returningAll().executeTakeFirst();
}

export type OpenOrderRow = Pick<OrderRow, 'id' | 'userId' | 'walletId' | 'walletType' | 'symbol' | 'side' | 'volume' | 'contractSize' | 'digits' | 'openPrice' | 'margin' | 'stopLoss' | 'takeProfit' | 'openedAt'>;

const OPEN_COLUMNS = ['id', 'userId', 'walletId', 'walletType', 'symbol', 'side', 'volume', 'contractSize', 'digits', 'openPrice', 'margin', 'stopLoss', 'takeProfit', 'openedAt'] as const;

/**
 * The open orders of one wallet, to travel in another statement's round trip (a
 * prepared statement's `EXECUTE`). `of` names the wallet by id, or by user and type,
 * then only when it has margin and `guard` (SQL) holds.
 */
export function openOrdersOfWalletSql(of: { walletId: string } | { userId: string; type: WalletType; guard: string }): string {
  return preparedQuery((db) => {
    // 'open' as a literal, not a parameter: the generic plan of a prepared statement can
    // use the partial index (WHERE status = 'open') only when it sees the value.
    const q = db.selectFrom('orders').select(OPEN_COLUMNS).where('status', '=', sql.lit('open'));
    if ('walletId' in of) return q.where('walletId', '=', of.walletId);
    return q.where('walletId', '=', (eb) => eb.selectFrom('wallets').select('id')
      .where('userId', '=', of.userId).where('type', '=', of.type).where('margin', '>', '0').where(sql<boolean>`${sql.raw(of.guard)}`));
  });
}

/** Open orders of some wallets, oldest first (a plain read). */
export async function openOrdersOfWallets(db: Db | Trx, walletIds: string[]): Promise<OpenOrderRow[]> {
  if (walletIds.length === 0) return [];
  return db.selectFrom('orders').select(OPEN_COLUMNS)
    .where('walletId', 'in', walletIds).where('status', '=', sql.lit('open'))
    .orderBy('walletId').orderBy('openedAt').orderBy('id')
    .execute();
}

/** Every open order, for the risk engine's start (streamed in pages by id). */
export async function openOrdersPage(db: Db, afterId: string, limit: number): Promise<OpenOrderRow[]> {
  return db.selectFrom('orders').select(OPEN_COLUMNS)
    .where('status', '=', sql.lit('open')).where('id', '>', afterId)
    .orderBy('id').limit(limit)
    .execute();
}

export interface WalletStateRow {
  id: string;
  userId: string;
  type: WalletType;
  balance: string;
  margin: string;
}

/** Balance and margin of up to `limit` wallets with open positions (margin > 0) with ids above `after`, by id. */
export async function walletsWithMarginAfter(db: Db, after: string, limit: number): Promise<WalletStateRow[]> {
  return db.selectFrom('wallets').select(['id', 'userId', 'type', 'balance', 'margin'])
    .where('margin', '>', '0').where('id', '>', after).orderBy('id').limit(limit).execute();
}

export async function walletStates(db: Db | Trx, walletIds: string[]): Promise<WalletStateRow[]> {
  if (walletIds.length === 0) return [];
  return db.selectFrom('wallets').select(['id', 'userId', 'type', 'balance', 'margin']).where('id', 'in', walletIds).execute();
}

/**
 * Balance and open orders (oldest first) of some wallets, in one statement: one round
 * trip and one snapshot, so a balance is never paired with orders of another moment.
 * Wallets that do not exist are absent.
 */
export async function walletSnapshots(db: Db, walletIds: string[]): Promise<(WalletStateRow & { orders: OpenOrderRow[] })[]> {
  if (walletIds.length === 0) return [];
  const rows = await db.selectFrom('wallets as w')
    .leftJoin('orders as o', (join) => join.onRef('o.walletId', '=', 'w.id').on('o.status', '=', sql.lit('open')))
    .select(['w.id as wId', 'w.userId as wUserId', 'w.type as wType', 'w.balance as wBalance', 'w.margin as wMargin'])
    .select(OPEN_COLUMNS.map((c) => `o.${c}` as const))
    .where('w.id', 'in', walletIds)
    .orderBy('w.id').orderBy('o.openedAt').orderBy('o.id')
    .execute();
  const out: (WalletStateRow & { orders: OpenOrderRow[] })[] = [];
  for (const { wId, wUserId, wType, wBalance, wMargin, ...order } of rows) {
    let last = out[out.length - 1];
    if (last?.id !== wId) out.push((last = { id: wId, userId: wUserId, type: wType, balance: wBalance, margin: wMargin, orders: [] }));
    if (order.id !== null) last.orders.push(order as OpenOrderRow);
  }
  return out;
}

/** Locks a wallet by id (after the order row: DESIGN.md rule 3). */
export async function lockWalletById(trx: Trx, walletId: string): Promise<WalletStateRow | undefined> {
  return trx.selectFrom('wallets').select(['id', 'userId', 'type', 'balance', 'margin']).where('id', '=', walletId).forUpdate().executeTakeFirst();
}

/** Wallets whose margin differs from the sum of their open orders' margin (reconciliation). */
export async function marginMismatches(db: Db) {
  const { rows } = await sql<{ walletId: string; userId: string; walletType: string; actual: string; expected: string }>`
    SELECT w.id AS wallet_id, w.user_id, w.type AS wallet_type, w.margin AS actual, coalesce(o.total, 0) AS expected
    FROM wallets w
    LEFT JOIN (SELECT wallet_id, sum(margin) AS total FROM orders WHERE status = 'open' GROUP BY wallet_id) o ON o.wallet_id = w.id
    WHERE w.margin <> coalesce(o.total, 0)
    ORDER BY w.id LIMIT 1000
  `.execute(db);
  return rows;
}

/**
 * The risk engine's channel: a wallet with positions changed outside trading (a deposit, a
 * withdrawal, either side of a transfer: right after their COMMIT, FinancialService's
 * `walletNotices`; a deposit on the hooks' path, an admin adjustment, a referral bonus or
 * commission: on commit, WalletService.tellPositions and migration 0010); the payload is
 * the wallet id.
 */
export const WALLET_CHANNEL = 'trading_wallet';

/**
 * The notice a one-call open or close (`order_open`, `order_close`) sends the market
 * leader right after its COMMIT (Market.orderNotice): the channel, the sending process,
 * and whether that process was the active leader, which tells its own engine.
 */
export interface OrderNotice { channel: string; origin: string; leader: boolean }

/** The payload for the order `o`: Market's `{o, w, id, l}`. */
const orderMessage = (n: OrderNotice) =>
  sql`json_build_object('o', ${n.origin}::text, 'w', o.wallet_id::text, 'id', o.id::text, 'l', ${n.leader}::boolean)::text`;

/**
 * After an open's COMMIT: the notice for the order that `operationId` opened in the
 * user's wallet, while it is open. A stored rejection opened none, and a replay's order
 * carries the first request's operation: neither notifies. The wallet's open orders are
 * read newest first, so the order just opened is the first one read.
 */
export function openedOrderNoticeSql(n: OrderNotice, userId: string, walletType: WalletType, operationId: string): string {
  return preparedSql(sql`SELECT pg_notify(${n.channel}::text, ${orderMessage(n)})
                         FROM (SELECT o.id, o.wallet_id FROM wallets w JOIN orders o ON o.wallet_id = w.id AND o.status = 'open'
                               WHERE w.user_id = ${userId}::bigint AND w.type = ${walletType}::text AND o.open_operation_id = ${operationId}::text
                               ORDER BY o.opened_at DESC, o.id DESC LIMIT 1) o`);
}

/** After a close's COMMIT: the notice for the order, when `operationId` closed it (not a rejection, not a replay). */
export function closedOrderNoticeSql(n: OrderNotice, orderId: string, operationId: string): string {
  return preparedSql(sql`SELECT pg_notify(${n.channel}::text, ${orderMessage(n)}) FROM orders o
                         WHERE o.id = ${orderId}::bigint AND o.close_operation_id = ${operationId}::text`);
}

