/**
 * The bench's own PostgreSQL (the project's EmbeddedPostgres on a throw-away data
 * folder), its databases, the SQL seed and the SQL side of the invariants.
 */
import fs from 'node:fs';
import pg from 'pg';
import { EmbeddedPostgres } from '../../src/platform/db/embedded.js';
import { createDatabase } from '../../src/platform/db/database.js';
import { migrateToLatest } from '../../src/platform/db/migrator.js';
import { hashPassword } from '../../src/modules/auth/password.js';

export const TRADING_DB = 'bench_trading';
export const PGBENCH_DB = 'bench_pgbench';

export interface PgHandle {
  embedded: EmbeddedPostgres;
  adminUrl: string;
  tradingUrl: string;
  pgbenchUrl: string;
  port: number;
  password: string;
  statStatements: boolean;
}

export async function startPostgres(dataDir: string, maxConnections: number, extra: Record<string, string>, log: (m: string) => void): Promise<PgHandle> {
  fs.mkdirSync(dataDir, { recursive: true });
  const settings: Record<string, string | number> = {
    shared_preload_libraries: 'pg_stat_statements',
    'pg_stat_statements.max': 5000,
    'pg_stat_statements.track': 'all',
    ...extra,
  };
  const embedded = new EmbeddedPostgres({ dataDir, port: 0, maxConnections, user: 'postgres', settings, log });
  await embedded.start();
  const adminUrl = embedded.url();
  const password = decodeURIComponent(new URL(adminUrl).password);
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    for (const name of [TRADING_DB, PGBENCH_DB]) {
      const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
      if (!rowCount) await c.query(`CREATE DATABASE ${name}`);
    }
  } finally {
    await c.end();
  }
  const handle: PgHandle = {
    embedded, adminUrl, port: embedded.port, password,
    tradingUrl: embedded.url(TRADING_DB), pgbenchUrl: embedded.url(PGBENCH_DB), statStatements: false,
  };
  try {
    await withClient(handle.tradingUrl, (t) => t.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements'));
    handle.statStatements = true;
  } catch (err) {
    log(`pg_stat_statements unavailable: ${err instanceof Error ? err.message : String(err)}`);
  }
  return handle;
}

export async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

export async function migrate(url: string): Promise<string[]> {
  const handle = createDatabase(url, { max: 2, min: 0, acquireTimeoutMs: 30_000, idleTimeoutMs: 1_000 }, 'bench-migrate');
  try {
    return await migrateToLatest(handle.db);
  } finally {
    await handle.close();
  }
}

export interface SeedOptions {
  users: number;
  liveBalance: string;
  demoBalance: string;
  /** Open orders to create (one per user on the live wallet, on the first `orders` users with an even index). */
  orders: number;
  /**
   * Percentage of users with a referrer (0: none): user i (from 1) is referred by user
   * i / 2 when i % 100 < the percentage. Whether that referrer is referred too follows
   * the same rule, so at 50 % about half the referred users have one paid level, a
   * quarter two and a quarter three.
   */
  referredPercent?: number;
}

export interface SeedResult {
  users: { id: string; accountNumber: string }[];
  seconds: number;
  hasOrders: boolean;
  orders: number;
  referred: number;
  postings: number;
}

/** Account numbers of bench users: 10 digits starting with 8, unique per index. */
export const ACCOUNT_PREFIX = '8';

/**
 * Seeds users, wallets, their funding entries and open orders with set-based SQL.
 * Every wallet's balance is funded by one ledger entry (wallet posting + house posting,
 * summing to zero, balance_after set), so reconciliation holds from the start; every
 * wallet's margin is the sum of its open orders' margin.
 */
export async function seed(url: string, o: SeedOptions): Promise<SeedResult> {
  const t0 = Date.now();
  const passwordHash = await hashPassword('bench-password-not-secret');
  return withClient(url, async (c) => {
    await c.query('BEGIN');
    await c.query(`SET LOCAL synchronous_commit = off`);
    await c.query(
      `INSERT INTO users (email, password_hash, account_number, referral_code, role)
       SELECT 'bench' || i || '@bench.local', $1,
              $3 || lpad(i::text, 9, '0'),
              (SELECT string_agg(substr('ABCDEFGHJKLMNPQRSTUVWXYZ23456789', ((i::bigint >> (5 * k)) & 31)::int + 1, 1), '' ORDER BY k DESC)
                 FROM generate_series(0, 7) k),
              'user'
       FROM generate_series(1, $2::int) i
       ORDER BY i`,
      [passwordHash, o.users, ACCOUNT_PREFIX],
    );
    let referred = 0;
    if ((o.referredPercent ?? 0) > 0) {
      // The account number carries i: the referrer is found through its unique index.
      const r = await c.query(
        `UPDATE users u SET referrer_id = r.id
         FROM users r
         WHERE u.email LIKE 'bench%@bench.local' AND substr(u.account_number, 2)::int > 1
           AND substr(u.account_number, 2)::int % 100 < $1
           AND r.account_number = $2 || lpad((substr(u.account_number, 2)::int / 2)::text, 9, '0')`,
        [o.referredPercent, ACCOUNT_PREFIX],
      );
      referred = r.rowCount ?? 0;
    }
    await c.query(
      `INSERT INTO wallets (user_id, type, balance)
       SELECT u.id, t.type, CASE t.type WHEN 'live' THEN $1::numeric ELSE $2::numeric END
       FROM users u CROSS JOIN (VALUES ('live'), ('demo')) AS t (type)
       WHERE u.email LIKE 'bench%@bench.local'
       ORDER BY u.id, t.type DESC`,
      [o.liveBalance, o.demoBalance],
    );
    const posted = await c.query(
      `WITH w AS MATERIALIZED (
         SELECT w.id, w.type, w.balance, nextval('journal_entry_id_seq') AS entry_id
         FROM wallets w JOIN users u ON u.id = w.user_id
         WHERE u.email LIKE 'bench%@bench.local' AND w.balance > 0
       )
       INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, metadata)
       SELECT entry_id, type, id, NULL, 'deposit', balance, balance, 'bench-seed-' || id, '{"reason":"bench_seed"}'::jsonb FROM w
       UNION ALL
       SELECT entry_id, type, NULL, CASE type WHEN 'live' THEN 'deposit_gateway' ELSE 'demo_faucet' END, 'deposit', -balance, NULL,
              'bench-seed-' || id, '{"reason":"bench_seed"}'::jsonb FROM w`,
    );
    const hasOrders = (await c.query(`SELECT to_regclass('public.orders') IS NOT NULL AS ok`)).rows[0].ok as boolean;
    let orders = 0;
    if (hasOrders && o.orders > 0) {
      // EURUSD buy 0.01 lot at the start ask 1.08010, leverage 100: margin 10.801 → 10.81 (rounded up).
      // No stop-loss or take-profit, and balances far above margin: the risk engine leaves them open.
      const r = await c.query(
        `INSERT INTO orders (user_id, wallet_id, wallet_type, symbol, side, volume, leverage, contract_size, digits, open_price, margin, open_operation_id)
         SELECT w.user_id, w.id, 'live', 'EURUSD', 'buy', 0.01, 100, 100000, 5, 1.08010, 10.81, 'bench-seed-order'
         FROM wallets w JOIN users u ON u.id = w.user_id
         WHERE u.email LIKE 'bench%@bench.local' AND w.type = 'live'
         ORDER BY u.id
         LIMIT $1`,
        [o.orders],
      );
      orders = r.rowCount ?? 0;
      await c.query(
        `UPDATE wallets w SET margin = s.margin
         FROM (SELECT wallet_id, sum(margin) AS margin FROM orders WHERE status = 'open' GROUP BY wallet_id) s
         WHERE w.id = s.wallet_id`,
      );
    }
    await c.query('COMMIT');
    await c.query('VACUUM ANALYZE');
    const { rows } = await c.query<{ id: string; account_number: string }>(
      `SELECT id, account_number FROM users WHERE email LIKE 'bench%@bench.local' ORDER BY id`,
    );
    return {
      users: rows.map((r) => ({ id: r.id, accountNumber: r.account_number })),
      seconds: (Date.now() - t0) / 1000,
      hasOrders,
      orders,
      referred,
      postings: posted.rowCount ?? 0,
    };
  });
}

/** Open orders of bench users (id, owner), for the close flow; shuffled. */
export async function openOrders(url: string, limit: number): Promise<{ id: string; userId: string }[]> {
  return withClient(url, async (c) => {
    const { rows } = await c.query<{ id: string; user_id: string }>(
      `SELECT id, user_id FROM orders WHERE status = 'open' ORDER BY random() LIMIT $1`, [limit]);
    return rows.map((r) => ({ id: r.id, userId: r.user_id }));
  });
}

// --- pg_stat_statements --------------------------------------------------------------

export interface StatementStat {
  query: string;
  calls: number;
  totalMs: number;
  meanMs: number;
  /** Mean planning time (0 unless `pg_stat_statements.track_planning` is on: `--pg pg_stat_statements.track_planning=on`). */
  meanPlanMs: number;
  rows: number;
}

export async function resetStatements(url: string): Promise<void> {
  await withClient(url, (c) => c.query('SELECT pg_stat_statements_reset()'));
}

/**
 * Top-level statements since the last reset (each one a round trip from a client;
 * statements run inside functions and foreign-key triggers are counted apart), the
 * commits, and the number of idempotency-key claims (one per money operation).
 */
export async function topStatements(url: string, limit = 25): Promise<{ statements: StatementStat[]; totalCalls: number; nestedCalls: number; claims: number; commits: number }> {
  return withClient(url, async (c) => {
    const { rows } = await c.query(
      `SELECT query, toplevel, calls::bigint AS calls, total_exec_time AS total, mean_exec_time AS mean, mean_plan_time AS plan, rows::bigint AS rows
       FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
       WHERE d.datname = current_database() AND query NOT ILIKE '%pg_stat_statements%' AND query NOT ILIKE '%pg_stat_activity%'
       ORDER BY calls DESC, total_exec_time DESC`,
    );
    const all = rows.map((r) => ({ toplevel: r.toplevel as boolean, query: String(r.query).replace(/\s+/g, ' ').trim(), calls: Number(r.calls), totalMs: Number(r.total), meanMs: Number(r.mean), meanPlanMs: Number(r.plan), rows: Number(r.rows) }));
    const top = all.filter((x) => x.toplevel);
    const totalCalls = top.reduce((s, x) => s + x.calls, 0);
    const nestedCalls = all.filter((x) => !x.toplevel).reduce((s, x) => s + x.calls, 0);
    // The statement path's claim statement, and the one-call operations, which claim inside.
    const claims = top.filter((x) => (/pg_try_advisory_xact_lock/.test(x.query) && /idempotency_keys/.test(x.query))
      || /FROM (wallet_deposit|wallet_withdraw|wallet_transfer|order_open|order_close)\(/.test(x.query)).reduce((s, x) => s + x.calls, 0);
    const commits = Number((await c.query(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`)).rows[0].xact_commit);
    return { statements: top.slice(0, limit), totalCalls, nestedCalls, claims, commits };
  });
}

/** Waits (bounded) until no other session of this database is inside a statement or transaction. */
export async function waitQuiet(url: string, timeoutMs = 15_000): Promise<boolean> {
  return withClient(url, async (c) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const n = Number((await c.query(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND state IN ('active', 'idle in transaction') AND query NOT ILIKE 'LISTEN%'`)).rows[0].n);
      if (n === 0) return true;
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 200));
    }
  });
}

// --- invariants ------------------------------------------------------------------------

export interface InvariantReport {
  ok: boolean;
  checks: { name: string; ok: boolean; detail: string }[];
}

/** What the database itself says about money after the run (independent of the API's reconciliation). */
export async function sqlInvariants(url: string, hasOrders: boolean, seedTotals: { live: string } | undefined): Promise<InvariantReport & { liveTotal: string }> {
  return withClient(url, async (c) => {
    const checks: InvariantReport['checks'] = [];
    const add = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
    // Statistics of the run's rows, not of the seed's: the anti-join of postings and keys
    // below, planned on the seed's empty key table, was a nested loop that took 14 minutes
    // after a run of 100 users.
    await c.query('ANALYZE idempotency_keys, ledger_postings, wallets, orders');
    const books = (await c.query(`SELECT book, sum(amount)::text AS s, sum(amount) = 0 AS zero FROM ledger_postings GROUP BY book ORDER BY book`)).rows;
    add('each book sums to 0.00', books.every((b) => b.zero === true), books.map((b) => `${b.book}: ${b.s}`).join(', '));
    const entries = (await c.query(`SELECT count(*)::int AS n FROM (SELECT entry_id FROM ledger_postings GROUP BY entry_id HAVING sum(amount) <> 0) x`)).rows[0].n as number;
    add('every entry sums to 0.00', entries === 0, `${entries} unbalanced entries`);
    const walletMismatch = (await c.query(
      `SELECT count(*)::int AS n FROM wallets w
       LEFT JOIN (SELECT wallet_id, sum(amount) AS s FROM ledger_postings WHERE wallet_id IS NOT NULL GROUP BY wallet_id) p ON p.wallet_id = w.id
       WHERE w.balance <> coalesce(p.s, 0)`)).rows[0].n as number;
    add('every wallet equals the sum of its postings', walletMismatch === 0, `${walletMismatch} mismatches`);
    const negative = (await c.query(`SELECT count(*)::int AS n FROM wallets WHERE balance < 0 OR margin < 0`)).rows[0].n as number;
    add('no negative balance or margin', negative === 0, `${negative} wallets`);
    if (hasOrders) {
      const marginMismatch = (await c.query(
        `SELECT count(*)::int AS n FROM wallets w
         LEFT JOIN (SELECT wallet_id, sum(margin) AS m FROM orders WHERE status = 'open' GROUP BY wallet_id) o ON o.wallet_id = w.id
         WHERE w.margin <> coalesce(o.m, 0)`)).rows[0].n as number;
      add('every wallet margin equals its open orders', marginMismatch === 0, `${marginMismatch} mismatches`);
    }
    const cons = (await c.query(
      `SELECT (SELECT coalesce(sum(balance), 0) FROM wallets WHERE type = 'live')::text AS wallets,
              (SELECT coalesce(sum(amount), 0) FROM ledger_postings WHERE book = 'live' AND house_account IS NOT NULL)::text AS house,
              ((SELECT coalesce(sum(balance), 0) FROM wallets WHERE type = 'live')
                + (SELECT coalesce(sum(amount), 0) FROM ledger_postings WHERE book = 'live' AND house_account IS NOT NULL)) = 0 AS ok`)).rows[0];
    const liveTotal = cons.wallets as string;
    add('live wallets + live house postings conserved (= 0)', cons.ok === true,
      `live wallets ${cons.wallets} + house ${cons.house}${seedTotals ? ` (seeded ${seedTotals.live})` : ''}`);

    // Idempotency: every completed wallet-operation key maps to exactly one entry, and no such entry exists without a key.
    const keyed = (await c.query(
      `WITH k AS (
         SELECT user_id, key, path, (response_body::jsonb -> 'transaction' ->> 'operationId') AS op
         FROM idempotency_keys
         WHERE status = 'completed' AND response_status = 201 AND path ~ '/wallets/(live|demo)/(deposit|withdraw|transfer)$'
       ), per AS (
         SELECT k.user_id, k.key, count(DISTINCT p.entry_id) AS entries
         FROM k LEFT JOIN ledger_postings p ON p.operation_id = k.op AND p.type IN ('deposit', 'withdrawal', 'transfer_out')
         GROUP BY k.user_id, k.key
       )
       SELECT count(*)::int AS keys, count(*) FILTER (WHERE entries = 1)::int AS one, count(*) FILTER (WHERE entries > 1)::int AS many,
              count(*) FILTER (WHERE entries = 0)::int AS none FROM per`)).rows[0];
    const stray = (await c.query(
      `SELECT count(DISTINCT operation_id)::int AS n FROM ledger_postings p
       WHERE p.type IN ('deposit', 'withdrawal', 'transfer_out') AND p.operation_id NOT LIKE 'bench-%'
         AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.status = 'completed' AND (k.response_body::jsonb -> 'transaction' ->> 'operationId') = p.operation_id)
         AND (p.metadata IS NULL OR p.metadata ->> 'reason' IS DISTINCT FROM 'demo_initial_balance')`)).rows[0].n as number;
    add('no wallet key applied twice (one ledger entry per completed key)', keyed.many === 0 && keyed.none === 0,
      `${keyed.keys} completed keys: ${keyed.one} with one entry, ${keyed.many} with more, ${keyed.none} with none`);
    add('no wallet entry without a completed key', stray === 0, `${stray} operations without a key`);
    // Referral commissions (migration 0010): every live close paid each level of its user's
    // chain (up to 3; with the default rates every level of a 0.01-lot close is at least
    // 0.01), under the close's operation, as a balanced entry of two postings; nothing else paid.
    const hasCommissions = (await c.query(`SELECT to_regclass('public.referral_commissions') IS NOT NULL AS ok`)).rows[0].ok as boolean;
    if (hasCommissions) {
      const k = (await c.query(
        `WITH closes AS (
           SELECT o.id, o.close_operation_id,
                  (u0.referrer_id IS NOT NULL)::int + (u1.referrer_id IS NOT NULL)::int + (u2.referrer_id IS NOT NULL)::int AS levels
           FROM orders o JOIN users u0 ON u0.id = o.user_id
           LEFT JOIN users u1 ON u1.id = u0.referrer_id LEFT JOIN users u2 ON u2.id = u1.referrer_id
           WHERE o.status = 'closed' AND o.wallet_type = 'live'
         ), paid AS (
           SELECT c.order_id, count(*) AS n, bool_and(c.operation_id = cl.close_operation_id) AS same_op
           FROM referral_commissions c JOIN closes cl ON cl.id = c.order_id GROUP BY c.order_id
         ), legs AS (
           SELECT entry_id, count(*) AS n, sum(amount) AS total FROM ledger_postings WHERE type = 'referral_commission' GROUP BY entry_id
         )
         SELECT
           (SELECT count(*)::int FROM referral_commissions) AS paid,
           (SELECT count(*)::int FROM closes cl LEFT JOIN paid p ON p.order_id = cl.id WHERE coalesce(p.n, 0) <> cl.levels) AS wrong_levels,
           (SELECT count(*)::int FROM paid WHERE NOT same_op) AS wrong_op,
           (SELECT count(*)::int FROM referral_commissions c WHERE NOT EXISTS (SELECT 1 FROM closes cl WHERE cl.id = c.order_id)) AS stray,
           (SELECT count(*)::int FROM referral_commissions c JOIN ledger_postings p ON p.id = c.posting_id JOIN legs l ON l.entry_id = p.entry_id
            WHERE l.n <> 2 OR l.total <> 0 OR p.amount <> c.amount) AS bad_legs`)).rows[0] as { paid: number; wrong_levels: number; wrong_op: number; stray: number; bad_legs: number };
      add('every live close paid each level of its chain once, under its operation, as a balanced entry; nothing else paid',
        k.wrong_levels === 0 && k.wrong_op === 0 && k.stray === 0 && k.bad_legs === 0,
        `${k.paid} commissions; ${k.wrong_levels} closes with the wrong number, ${k.wrong_op} under another operation, ${k.stray} for orders not closed or not live, ${k.bad_legs} not two balanced postings`);
    }
    if (hasOrders) {
      const o = (await c.query(
        `SELECT
           (SELECT count(*)::int FROM idempotency_keys WHERE status = 'completed' AND response_status = 201 AND path = '/api/v1/orders') AS open_keys,
           (SELECT count(*)::int FROM orders WHERE open_operation_id <> 'bench-seed-order') AS opened,
           (SELECT count(*)::int FROM idempotency_keys WHERE status = 'completed' AND response_status = 200 AND path ~ '^/api/v1/orders/[0-9]+/close$') AS close_keys,
           (SELECT count(*)::int FROM orders WHERE close_reason = 'user') AS closed_by_user,
           (SELECT count(*)::int FROM (SELECT order_id FROM ledger_postings WHERE order_id IS NOT NULL AND type IN ('trade_profit', 'trade_loss') AND wallet_id IS NOT NULL GROUP BY order_id HAVING count(*) > 1) x) AS settled_twice`)).rows[0];
      add('orders opened = completed open keys', o.open_keys === o.opened, `${o.opened} orders opened, ${o.open_keys} completed keys`);
      add('orders closed by users = completed close keys', o.close_keys === o.closed_by_user, `${o.closed_by_user} closed by users, ${o.close_keys} completed keys`);
      add('no order settled twice', o.settled_twice === 0, `${o.settled_twice} orders with more than one P&L posting`);
    }
    return { ok: checks.every((x) => x.ok), checks, liveTotal };
  });
}

export async function countRows(url: string): Promise<Record<string, number>> {
  return withClient(url, async (c) => {
    const out: Record<string, number> = {};
    for (const t of ['users', 'wallets', 'ledger_postings', 'idempotency_keys', 'orders']) {
      try {
        out[t] = Number((await c.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n);
      } catch {
        /* table missing */
      }
    }
    return out;
  });
}
