/**
 * TransactionService: the seed's transaction core. One operation = one database
 * transaction (DESIGN.md rule 1), bounded by SET LOCAL lock_timeout and
 * statement_timeout (rule 4), retried whole on deadlock, serialization failure and
 * lock timeout: at most 3 retries, backoff 10, 20, 40 ms with jitter (rule 3).
 */
import { sql, type IsolationLevel } from 'kysely';
import type { Db, Trx } from './db/database.js';
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

  get successRate(): number {
    const total = this.committed + this.rolledBack;
    return total === 0 ? 1 : Math.round((this.committed / total) * 10_000) / 10_000;
  }
}

export interface TransactionOptions {
  /** For logs: what this transaction does. */
  operation?: string;
  isolationLevel?: IsolationLevel;
  /** Retries after the first attempt (default 3). */
  maxRetries?: number;
  lockTimeoutMs?: number;
  statementTimeoutMs?: number;
  log?: AppLogger;
}

export interface TransactionSettings {
  lockTimeoutMs: number;
  statementTimeoutMs: number;
}

export const BACKOFF_MS = [10, 20, 40] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class TransactionService {
  readonly stats = new TransactionStats();
  /** Called on every outcome; the metrics module hooks in here. */
  onOutcome?: (outcome: 'committed' | 'rolled_back' | 'retried' | 'deadlock' | 'exhausted') => void;

  constructor(
    private readonly db: Db,
    private readonly settings: TransactionSettings,
    private readonly log: AppLogger,
  ) {}

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
  async executeWithRetry<T>(fn: (trx: Trx) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    const maxRetries = options.maxRetries ?? BACKOFF_MS.length;
    const log = options.log ?? this.log;
    const operation = options.operation ?? 'transaction';
    const lockTimeout = options.lockTimeoutMs ?? this.settings.lockTimeoutMs;
    const statementTimeout = options.statementTimeoutMs ?? this.settings.statementTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        let builder = this.db.transaction();
        if (options.isolationLevel) builder = builder.setIsolationLevel(options.isolationLevel);
        const result = await builder.execute(async (trx) => {
          await sql`SELECT set_config('lock_timeout', ${`${lockTimeout}ms`}, true), set_config('statement_timeout', ${`${statementTimeout}ms`}, true)`.execute(trx);
          return fn(trx);
        });
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

  /** Locks the user's row (SELECT … FOR UPDATE) and passes it to `fn`. */
  async executeWithUserLock<T>(userId: string, fn: (trx: Trx, user: UserRow) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
    return this.executeWithRetry(async (trx) => {
      const user = await trx.selectFrom('users').selectAll().where('id', '=', userId).forUpdate().executeTakeFirst();
      if (!user) throw new NotFoundError('User');
      return fn(trx, user);
    }, options);
  }
}
