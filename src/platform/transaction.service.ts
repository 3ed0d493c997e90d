/**
 * TransactionService: the seed's transaction core. One operation = one database
 * transaction (DESIGN.md rule 1), bounded by SET LOCAL lock_timeout and
 * statement_timeout (rule 4), retried whole on deadlock, serialization failure and
 * lock timeout: at most 3 retries, backoff 10, 20, 40 ms with jitter (rule 3).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Kysely, PostgresDialect, CamelCasePlugin, sql, type IsolationLevel } from 'kysely';
import pg from 'pg';
import type { Trx } from './db/database.js';
import { literal, preparationsFor } from './db/inline.js';
import type { Database } from './db/schema.js';
import type { UserRow } from './db/schema.js';
import { NotFoundError, ServiceUnavailableError } from './errors.js';
import type { AppLogger } from './logger.js';

export const SQLSTATE = {
  deadlock: '40P01',
  serializationFailure: '40001',
  lockNotAvailable: '55P03',
  uniqueViolation: '23505',
  checkViolation: '23514',
  foreignKeyViolation: '23503',
  queryCanceled: '57014',
  noDataFound: 'P0002',
  /** Raised by wallet_transfer (migration 0007) for a transfer to oneself. */
  ownTransfer: 'TS400',
} as const;

const RETRYABLE = new Set<string>([SQLSTATE.deadlock, SQLSTATE.serializationFailure, SQLSTATE.lockNotAvailable]);

export function sqlState(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Counters read by /health and /metrics. */
export class TransactionStats {
  committed = 0;
  rolledBack = 0;
  retried = 0;
  deadlocks = 0;
  exhausted = 0;
  /** Refused by admission control (the pool's queue was full). */
  shed = 0;

  get successRate(): number {
    const total = this.committed + this.rolledBack;
    return total === 0 ? 1 : Math.round((this.committed / total) * 10_000) / 10_000;
  }
}

/** What a transaction function can do besides querying through `trx`. */
export interface TransactionContext {
  /** Results of `options.prelude`, which ran in the same round trip as BEGIN. */
  prelude: pg.QueryResult[];
  /**
   * With `options.tolerantPrelude`: the error one of the prelude's statements raised.
   * The statements before it ran; the transaction is aborted until the function rolls
   * back to a savepoint the prelude took, or throws.
   */
  preludeError?: unknown;
  /** Queues SQL (literals already escaped) to run in the same round trip as COMMIT. */
  beforeCommit(statement: string): void;
  /** Drops what was queued so far (the work it belonged to is being rolled back). */
  discardQueued(): void;
}

interface Running {
  client: pg.PoolClient;
  queued: string[];
}

/** The transaction the current async context runs in (one per `runOnce`). */
const running = new AsyncLocalStorage<Running>();

/** Queues a statement (literals already escaped) to travel with the COMMIT of the caller's transaction; false outside one. */
function runBeforeCommit(statement: string): boolean {
  const tx = running.getStore();
  if (!tx) return false;
  tx.queued.push(statement);
  return true;
}

/**
 * NOTIFY `channel` from inside the caller's transaction: delivered when it commits, never
 * if it rolls back. Queued to travel in the COMMIT's round trip (nobody reads its result);
 * run at once on `trx` when that is not one of TransactionService's transactions.
 */
export async function notifyOnCommit(trx: Trx, channel: string, payload: string): Promise<void> {
  if (runBeforeCommit(`SELECT pg_notify(${literal(channel)}, ${literal(payload)})`)) return;
  await sql`SELECT pg_notify(${channel}, ${payload})`.execute(trx);
}

/**
 * Sends several statements (values inlined, see db/inline.ts) in one round trip in the
 * transaction the caller runs in, and returns each one's result. A failing statement
 * aborts the transaction (the ones after it do not run) and rejects like any query.
 */
export async function queryBatch(statements: string[]): Promise<pg.QueryResult[]> {
  const tx = running.getStore();
  if (!tx) throw new Error('queryBatch outside a transaction');
  return send(tx.client, statements.join(';\n'));
}

/** The prepared statements (db/inline.ts) a connection has; `uncertain` after a failed PREPARE batch. */
interface PreparedState {
  done: Set<string>;
  uncertain: boolean;
}

const preparedBy = new WeakMap<pg.ClientBase, PreparedState>();

function preparedOf(client: pg.ClientBase): PreparedState {
  let state = preparedBy.get(client);
  if (!state) {
    state = { done: new Set(), uncertain: false };
    preparedBy.set(client, state);
  }
  return state;
}

/**
 * Sends a simple query (one or more statements), preceded in the same round trip by
 * the PREPAREs its `EXECUTE`s need on this connection. Returns one result per
 * statement of `text`.
 */
async function send(client: pg.ClientBase, text: string): Promise<pg.QueryResult[]> {
  const state = preparedOf(client);
  const need = preparationsFor(text, state.done);
  // A rejection's batch starts by leaving an aborted state (ROLLBACK TO SAVEPOINT): an
  // aborted transaction refuses PREPARE, so the PREPAREs go right after that statement.
  const rollback = /^ROLLBACK TO SAVEPOINT [a-z_]+; /.exec(text)?.[0] ?? '';
  const full = need.names.length > 0 ? `${rollback}${need.sql};\n${text.slice(rollback.length)}` : text;
  let result: pg.QueryResult | pg.QueryResult[];
  try {
    result = (await client.query(full)) as unknown as pg.QueryResult | pg.QueryResult[];
  } catch (err) {
    // Which PREPAREs ran is unknown (they outlive a rollback): resynchronised after it.
    if (need.names.length > 0) state.uncertain = true;
    throw err;
  }
  for (const name of need.names) state.done.add(name);
  const all = Array.isArray(result) ? result : [result];
  if (need.names.length === 0) return all;
  return rollback ? [all[0]!, ...all.slice(1 + need.names.length)] : all.slice(need.names.length);
}

/** After a failure: what the connection really has prepared. */
async function resyncPrepared(client: pg.ClientBase): Promise<void> {
  const state = preparedOf(client);
  if (!state.uncertain) return;
  const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_prepared_statements');
  state.done = new Set(rows.map((r) => r.name));
  state.uncertain = false;
}

export interface TransactionOptions {
  /**
   * SQL statements (literals already escaped) run right after BEGIN in the same round
   * trip; their results reach the function as `ctx.prelude`.
   */
  prelude?: string;
  /** A failing prelude statement reaches the function as `ctx.preludeError` instead of ending the attempt. */
  tolerantPrelude?: boolean;
  /** For logs: what this transaction does. */
  operation?: string;
  isolationLevel?: IsolationLevel;
  /** Retries after the first attempt (default 3). */
  maxRetries?: number;
  lockTimeoutMs?: number;
  statementTimeoutMs?: number;
  log?: AppLogger;
}

/** executeBatchWithRetry's options: a transaction's, and what follows its COMMIT. */
export interface BatchOptions extends TransactionOptions {
  /**
   * Statements sent right after COMMIT, in the same round trip, as a transaction of their
   * own with synchronous_commit off: notices (pg_notify) that need not be atomic with the
   * operation. PostgreSQL serialises the commits of
   * transactions that NOTIFY (one lock, held through the commit's WAL flush), so a notice
   * inside a money transaction made every such commit wait for the one before; here it
   * waits for nothing. They run only when the transaction committed: in one simple query
   * an error ends the round trip before them. A connection lost between COMMIT and them
   * loses the notice, so a listener must also catch up otherwise (the risk engine's
   * periodic resync). If one of them fails (a full NOTIFY queue, the connection lost at
   * that instant), the round trip fails although the transaction committed, as when a
   * connection is lost during COMMIT: the caller answers with an error, and a retry with
   * the same idempotency key gets the stored response. One statement per element.
   */
  afterCommit?: readonly string[];
}

export interface TransactionSettings {
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  /**
   * Admission control: when this many transactions already wait for a pool connection,
   * a new one is refused at once (503 with Retry-After) instead of queueing: under
   * overload the answers stay fast and the ones admitted stay within their latency.
   */
  maxWaiting?: number;
}

export const BACKOFF_MS = [10, 20, 40] as const;

/** How many results BEGIN and its SET LOCAL bounds give (TransactionService.begin). */
const BEGIN_STATEMENTS = 3;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Transactions run on one pool client of their own; queries of `trx` reach it through
 * AsyncLocalStorage. That lets BEGIN and the SET LOCAL bounds travel in one round trip
 * (with the idempotency claim), and the stored response with COMMIT: an operation in
 * statements costs two or three round trips, not eight. An operation that is one
 * PL/pgSQL call is one round trip (executeBatchWithRetry).
 */
export class TransactionService {
  readonly stats = new TransactionStats();
  /** Called on every outcome; the metrics module hooks in here. */
  onOutcome?: (outcome: 'committed' | 'rolled_back' | 'retried' | 'deadlock' | 'exhausted') => void;

  private readonly bound: Kysely<Database>;
  private readonly pool: pg.Pool;

  constructor(
    database: { pool: pg.Pool },
    private readonly settings: TransactionSettings,
    private readonly log: AppLogger,
  ) {
    this.pool = database.pool;
    // Each real client gets one stable wrapper whose release() is a no-op: the
    // transaction, not the query, owns the client.
    const wrappers = new WeakMap<pg.PoolClient, { query: pg.PoolClient['query']; release(): void }>();
    const boundPool = {
      connect: async () => {
        const client = running.getStore()?.client;
        if (!client) throw new Error('transaction query outside its transaction');
        let w = wrappers.get(client);
        if (!w) {
          w = { query: client.query.bind(client) as pg.PoolClient['query'], release: () => undefined };
          wrappers.set(client, w);
        }
        return w;
      },
      end: async () => undefined,
    };
    this.bound = new Kysely<Database>({ dialect: new PostgresDialect({ pool: boundPool as unknown as pg.Pool }), plugins: [new CamelCasePlugin()] });
  }

  static isDeadlockError(err: unknown): boolean {
    return sqlState(err) === SQLSTATE.deadlock;
  }

  /** Deadlock (40P01), serialization failure (40001) and lock timeout (55P03). */
  static isRetryableError(err: unknown): boolean {
    const state = sqlState(err);
    return state !== undefined && RETRYABLE.has(state);
  }

  private count(outcome: 'committed' | 'rolled_back' | 'retried' | 'deadlock' | 'exhausted') {
    switch (outcome) {
      case 'committed': this.stats.committed++; break;
      case 'rolled_back': this.stats.rolledBack++; break;
      case 'retried': this.stats.retried++; break;
      case 'deadlock': this.stats.deadlocks++; break;
      case 'exhausted': this.stats.exhausted++; break;
    }
    this.onOutcome?.(outcome);
  }

  /**
   * Runs `fn(trx)` in one transaction and commits; any throw rolls everything back.
   * Retryable failures re-run the whole function; when retries are exhausted a
   * ServiceUnavailableError (503, Retry-After) is thrown.
   */
  async executeWithRetry<T>(fn: (trx: Trx, ctx: TransactionContext) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    return this.retrying((lockTimeout, statementTimeout) => this.runOnce(fn, options, lockTimeout, statementTimeout), options);
  }

  /**
   * A transaction that is one round trip: BEGIN, the bounds, `statements` (SQL, values
   * inlined; typically one PL/pgSQL call that claims its idempotency key, checks, changes
   * and stores its response) and COMMIT in a single simple query. Retried like
   * executeWithRetry; returns the results of `statements`. A function is called at each
   * attempt once it has its connection, so what it writes in (a price) is of that moment.
   */
  async executeBatchWithRetry(statements: string | (() => string), options: BatchOptions = {}): Promise<pg.QueryResult[]> {
    return this.retrying((lockTimeout, statementTimeout) => this.runBatchOnce(statements, options, lockTimeout, statementTimeout), options);
  }

  /** The retry loop of rule 3 around one attempt. */
  private async retrying<T>(attemptOnce: (lockTimeout: number, statementTimeout: number) => Promise<T>, options: TransactionOptions): Promise<T> {
    const maxRetries = options.maxRetries ?? BACKOFF_MS.length;
    const log = options.log ?? this.log;
    const operation = options.operation ?? 'transaction';
    const lockTimeout = options.lockTimeoutMs ?? this.settings.lockTimeoutMs;
    const statementTimeout = options.statementTimeoutMs ?? this.settings.statementTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await attemptOnce(lockTimeout, statementTimeout);
        this.count('committed');
        return result;
      } catch (err) {
        this.count('rolled_back');
        const deadlock = TransactionService.isDeadlockError(err);
        if (deadlock) this.count('deadlock');
        if (!TransactionService.isRetryableError(err)) throw err;
        if (attempt >= maxRetries) {
          this.count('exhausted');
          log.transactionFailure(operation, err, { attempts: attempt + 1, retriesExhausted: true });
          throw new ServiceUnavailableError('The operation could not complete because of concurrent activity; please retry');
        }
        const base = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]!;
        const delay = base / 2 + Math.random() * base; // jitter: 0.5×..1.5× the step
        this.count('retried');
        log.warn({ operation, attempt: attempt + 1, sqlState: sqlState(err), delayMs: Math.round(delay) }, 'retrying transaction');
        await sleep(delay);
      }
    }
  }

  /** A pool client, unless admission control refuses (the pool's queue is full). */
  private async connect(): Promise<pg.PoolClient> {
    const maxWaiting = this.settings.maxWaiting ?? 0;
    if (maxWaiting > 0 && this.pool.waitingCount >= maxWaiting) {
      this.stats.shed++;
      throw new ServiceUnavailableError('The server is busy; please retry shortly');
    }
    return this.pool.connect();
  }

  /** BEGIN with the bounds of rule 4: BEGIN_STATEMENTS statements. */
  private static begin(options: TransactionOptions, lockTimeout: number, statementTimeout: number): string {
    return `BEGIN${options.isolationLevel ? ` ISOLATION LEVEL ${options.isolationLevel.toUpperCase()}` : ''};`
      + ` SET LOCAL lock_timeout = '${Math.trunc(lockTimeout)}ms'; SET LOCAL statement_timeout = '${Math.trunc(statementTimeout)}ms';`;
  }

  /** Ends a failed attempt: ROLLBACK, then what the connection really has prepared; the error it gives release() discards the connection. */
  private static async abandon(client: pg.PoolClient): Promise<Error | undefined> {
    let discard: Error | undefined;
    // Without a transaction in progress ROLLBACK only warns; if it fails the connection is gone.
    await client.query('ROLLBACK').catch((e: Error) => { discard = e; });
    if (!discard) await resyncPrepared(client).catch((e: Error) => { discard = e; });
    return discard;
  }

  /**
   * One attempt's frame: a connection (admission control first), `work` on it, and on any
   * failure ROLLBACK and the connection's prepared statements checked; the error that
   * work or the clean-up sets as `discard` makes release() drop the connection.
   */
  private async attempt<T>(work: (client: pg.PoolClient, onDiscard: (e: Error) => void) => Promise<T>): Promise<T> {
    const client = await this.connect();
    let discard: Error | undefined;
    try {
      return await work(client, (e) => { discard = e; });
    } catch (err) {
      discard = await TransactionService.abandon(client);
      throw err;
    } finally {
      client.release(discard);
    }
  }

  /**
   * Sends `text` ending in COMMIT, then `afterCommit` (BatchOptions) in a transaction of
   * its own; returns the results up to COMMIT's. PostgreSQL answers COMMIT with ROLLBACK
   * when an earlier error aborted the transaction.
   */
  private static async commit(client: pg.PoolClient, text: string, afterCommit: readonly string[] = []): Promise<pg.QueryResult[]> {
    const after = afterCommit.length ? `; BEGIN; SET LOCAL synchronous_commit = off; ${afterCommit.join('; ')}; COMMIT` : '';
    const all = await send(client, text + after);
    const results = afterCommit.length ? all.slice(0, -(afterCommit.length + 3)) : all;
    if (results[results.length - 1]!.command === 'ROLLBACK') throw new Error('transaction was aborted and rolled back');
    return results;
  }

  /** One attempt of executeBatchWithRetry. */
  private async runBatchOnce(statements: string | (() => string), options: BatchOptions, lockTimeout: number, statementTimeout: number): Promise<pg.QueryResult[]> {
    return this.attempt(async (client) => {
      const text = typeof statements === 'string' ? statements : statements();
      const results = await TransactionService.commit(client, `${TransactionService.begin(options, lockTimeout, statementTimeout)} ${text}; COMMIT`, options.afterCommit);
      return results.slice(BEGIN_STATEMENTS, -1);
    });
  }

  /** One attempt: BEGIN + SET LOCAL (+ prelude) | fn | queued statements + COMMIT, or ROLLBACK. */
  private async runOnce<T>(fn: (trx: Trx, ctx: TransactionContext) => Promise<T>, options: TransactionOptions, lockTimeout: number, statementTimeout: number): Promise<T> {
    return this.attempt(async (client, onDiscard) => {
      const begin = TransactionService.begin(options, lockTimeout, statementTimeout) + (options.prelude ? ` ${options.prelude}` : '');
      let results: pg.QueryResult[] = [];
      let preludeError: unknown;
      try {
        results = await send(client, begin);
      } catch (err) {
        if (!options.tolerantPrelude || !options.prelude) throw err;
        preludeError = err;
      }
      const queued: string[] = [];
      const ctx: TransactionContext = {
        prelude: results.slice(BEGIN_STATEMENTS), preludeError, beforeCommit: (st) => void queued.push(st), discardQueued: () => void queued.splice(0),
      };
      const result = await running.run({ client, queued }, () => fn(this.bound as unknown as Trx, ctx));
      await TransactionService.commit(client, `${queued.map((q) => `${q}; `).join('')}COMMIT`);
      // Only after a PREPARE batch that failed (a tolerated prelude error). The transaction
      // committed: a failure here discards the connection, it does not fail the operation.
      await resyncPrepared(client).catch(onDiscard);
      return result;
    });
  }

  /** Locks the user's row (SELECT … FOR UPDATE) and passes it to `fn`. */
  async executeWithUserLock<T>(userId: string, fn: (trx: Trx, user: UserRow) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    return this.executeWithRetry(async (trx) => {
      const user = await trx.selectFrom('users').selectAll().where('id', '=', userId).forUpdate().executeTakeFirst();
      if (!user) throw new NotFoundError('User');
      return fn(trx, user);
    }, options);
  }
}
