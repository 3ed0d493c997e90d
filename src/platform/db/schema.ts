/**
 * The Database interface: one type per table, as Kysely sees it (camelCase through
 * the CamelCasePlugin). NUMERIC and BIGINT columns arrive as strings (node-postgres'
 * default, kept on purpose): money never passes through a JS number.
 */
import type { ColumnType, Generated, Insertable, Selectable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
/** NUMERIC: read as string, written as string. */
type Numeric = ColumnType<string, string | undefined, string>;
/** BIGINT ids: read as string. */
type Id = ColumnType<string, never, never>;

export type WalletType = 'live' | 'demo';
export type Role = 'user' | 'admin';

export interface AppSettingsTable {
  key: string;
  value: string;
  createdAt: Generated<Date>;
}

export interface UsersTable {
  id: Id;
  email: string;
  passwordHash: string;
  accountNumber: string;
  referralCode: string;
  referrerId: string | null;
  role: ColumnType<Role, Role | undefined, Role>;
  blocked: ColumnType<boolean, boolean | undefined, boolean>;
  tokenVersion: ColumnType<number, number | undefined, number>;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface WalletsTable {
  id: Id;
  userId: string;
  type: WalletType;
  currency: ColumnType<string, string | undefined, string>;
  balance: Numeric;
  margin: Numeric;
  realizedProfit: Numeric;
  createdAt: Timestamp;
  updatedAt: Timestamp;
}

export interface HouseAccountsTable {
  code: string;
  description: string;
}

export interface LedgerPostingsTable {
  id: Id;
  entryId: string;
  book: WalletType;
  walletId: string | null;
  houseAccount: string | null;
  type: string;
  amount: string;
  balanceAfter: string | null;
  operationId: string;
  orderId: string | null;
  counterparty: string | null;
  note: string | null;
  metadata: ColumnType<Record<string, unknown> | null, string | null | undefined, never>;
  createdAt: Timestamp;
}

export interface IdempotencyKeysTable {
  userId: string;
  key: string;
  method: string;
  path: string;
  requestHash: string;
  status: 'processing' | 'completed';
  responseStatus: number | null;
  responseBody: string | null;
  createdAt: Timestamp;
  expiresAt: Timestamp;
}

export interface LoginFailuresTable {
  id: Id;
  email: string;
  ip: string;
  createdAt: Timestamp;
}

export interface AdminAuditTable {
  id: Id;
  actorId: string;
  action: string;
  targetUserId: string | null;
  details: ColumnType<Record<string, unknown>, string, never>;
  operationId: string;
  createdAt: Timestamp;
}

export interface Database {
  appSettings: AppSettingsTable;
  users: UsersTable;
  wallets: WalletsTable;
  houseAccounts: HouseAccountsTable;
  ledgerPostings: LedgerPostingsTable;
  idempotencyKeys: IdempotencyKeysTable;
  loginFailures: LoginFailuresTable;
  adminAudit: AdminAuditTable;
  quotes: QuotesTable;
  orders: OrdersTable;
}

export type UserRow = Selectable<UsersTable>;
export type WalletRow = Selectable<WalletsTable>;
export type PostingRow = Selectable<LedgerPostingsTable>;
export type NewPosting = Insertable<LedgerPostingsTable>;

export type OrderSide = 'buy' | 'sell';
export type OrderStatus = 'open' | 'closed';
export type CloseReason = 'user' | 'stop_loss' | 'take_profit' | 'stop_out';

/** The last quote of each symbol (prices are NUMERIC: strings, never floats). */
export interface QuotesTable {
  symbol: string;
  bid: string;
  ask: string;
  time: ColumnType<Date, Date | string, Date | string>;
}

export interface OrdersTable {
  id: Id;
  userId: string;
  walletId: string;
  walletType: WalletType;
  symbol: string;
  side: OrderSide;
  volume: string;
  leverage: number;
  contractSize: string;
  digits: number;
  openPrice: string;
  margin: string;
  stopLoss: string | null;
  takeProfit: string | null;
  status: ColumnType<OrderStatus, OrderStatus | undefined, OrderStatus>;
  closePrice: string | null;
  profit: string | null;
  closeReason: CloseReason | null;
  openedAt: Timestamp;
  closedAt: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  openOperationId: string;
  closeOperationId: string | null;
}

export type OrderRow = Selectable<OrdersTable>;
export type QuoteRow = Selectable<QuotesTable>;
