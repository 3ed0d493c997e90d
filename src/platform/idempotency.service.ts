/**
 * IdempotencyService: the seed's names with API.md's semantics and DESIGN.md rule 6.
 * The key is claimed at the start of the operation's own transaction and the outcome
 * stored before that transaction commits, so a committed operation always has its
 * stored response and vice versa. A concurrent duplicate gets 409 at once
 * (pg_try_advisory_xact_lock) instead of queueing on the unique index.
 */
import { sql, type RawBuilder } from 'kysely';
import type { Trx } from './db/database.js';
import { pgErrorToDomain } from './db/pg-errors.js';
import { DomainError } from './errors.js';
import type { AppLogger } from './logger.js';
import type pg from 'pg';
import { preparedSql } from './db/inline.js';
import type { BatchOptions, TransactionContext, TransactionOptions, TransactionService } from './transaction.service.js';

export interface IdempotencyKey {
  userId: string;
  key: string;
  method: string;
  path: string;
  /** Hash of method, path and the canonical body (values as sent). */
  requestHash: string;
}

export interface StoredResponse {
  status: number;
  /** The JSON text of `data` (success) or `error` (rejection), byte for byte as first sent. */
  body: string;
}

export interface IdempotentOutcome extends StoredResponse {
  replayed: boolean;
}

export interface OperationResult {
  status: number;
  data: unknown;
}

/** A claim row: camelCase through Kysely, snake_case straight from node-postgres. */
interface ClaimRow {
  locked: boolean;
  inserted: boolean;
  requestHash?: string | null;
  request_hash?: string | null;
  responseStatus?: number | null;
  response_status?: number | null;
  responseBody?: string | null;
  response_body?: string | null;
}

/** The stored form of a business rejection: its status and the `error` object. */
function rejectionResponse(error: DomainError): StoredResponse {
  const body = JSON.stringify(error.details ? { code: error.code, message: error.message, details: error.details } : { code: error.code, message: error.message });
  return { status: error.status, body };
}

/**
 * The business rejections a PL/pgSQL operation (migrations 0007–0009) may store, as the
 * JSON it takes: reason → [status, body]. Their text is rendered here, in TypeScript only.
 */
export function storedRejections(errors: Record<string, DomainError>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(errors).map(([reason, error]) => {
    const r = rejectionResponse(error);
    return [reason, [r.status, r.body]];
  })));
}

export const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9_.:-]{1,255}$/;

export class IdempotencyService {
  /** Counters read by /metrics. */
  readonly stats = { replays: 0, conflicts: 0, reused: 0 };

  constructor(
    private readonly tx: TransactionService,
    private readonly ttlHours: number,
  ) {}

  /** The key of a request: the header scoped to the user, with the request's fingerprint. */
  static generateKey(userId: string, header: string, method: string, path: string, requestHash: string): IdempotencyKey {
    return { userId, key: header, method, path, requestHash };
  }

  /**
   * Claims the key inside `trx`. Returns the stored response when the same request
   * already completed; throws 409 while another transaction holds the key, 422 when
   * the key was used for a different request.
   */
  async checkIdempotency(trx: Trx, k: IdempotencyKey): Promise<{ isExisting: boolean; record?: StoredResponse }> {
    const { rows } = await this.claimQuery(k).execute(trx);
    return this.judgeClaim(rows[0]!, k);
  }

  /** The claim as a prepared statement's `EXECUTE`, so it can travel with BEGIN (see claimQuery). */
  private claimSql(k: IdempotencyKey): string {
    return preparedSql(this.claimQuery(k));
  }

  /**
   * The claim as one statement: a non-blocking advisory lock on (user, key), then the
   * key row inserted — or an expired one taken over — or the completed one found.
   */
  private claimQuery(k: IdempotencyKey): RawBuilder<ClaimRow> {
    return sql<ClaimRow>`
      WITH l AS (SELECT pg_try_advisory_xact_lock(hashtextextended(${`${k.userId}:${k.key}`}::text, 0)) AS ok),
      ins AS (
        INSERT INTO idempotency_keys (user_id, key, method, path, request_hash, status, expires_at)
        SELECT ${k.userId}::bigint, ${k.key}::text, ${k.method}::text, ${k.path}::text, ${k.requestHash}::text, 'processing',
               now() + make_interval(hours => ${Math.trunc(this.ttlHours)}::int)
        FROM l WHERE l.ok
        ON CONFLICT (user_id, key) DO UPDATE
          SET method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
              status = 'processing', response_status = NULL, response_body = NULL,
              created_at = now(), expires_at = EXCLUDED.expires_at
          WHERE idempotency_keys.expires_at <= now()
        RETURNING 1
      )
      SELECT l.ok AS locked, EXISTS (SELECT 1 FROM ins) AS inserted,
             set_config('idempotency.claimed', CASE WHEN EXISTS (SELECT 1 FROM ins) THEN 'on' ELSE 'off' END, true) AS claimed,
             k.request_hash, k.response_status, k.response_body
      FROM l LEFT JOIN idempotency_keys k ON k.user_id = ${k.userId}::bigint AND k.key = ${k.key}::text AND k.status = 'completed'`;
  }

  private judgeClaim(row: ClaimRow, k: IdempotencyKey): { isExisting: boolean; record?: StoredResponse } {
    const r = { locked: row.locked, inserted: row.inserted, requestHash: row.requestHash ?? row.request_hash ?? null, responseStatus: row.responseStatus ?? row.response_status ?? null, responseBody: row.responseBody ?? row.response_body ?? null };
    if (!r.locked || (!r.inserted && r.responseBody === null)) {
      this.stats.conflicts++;
      throw new DomainError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry later');
    }
    if (r.inserted) return { isExisting: false };
    if (r.requestHash !== k.requestHash) {
      this.stats.reused++;
      throw new DomainError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used for a different request');
    }
    this.stats.replays++;
    return { isExisting: true, record: { status: r.responseStatus!, body: r.responseBody! } };
  }

  private completeSql(k: IdempotencyKey, response: StoredResponse): string {
    return preparedSql(this.completeQuery(k, response));
  }

  private completeQuery(k: IdempotencyKey, response: StoredResponse): RawBuilder<unknown> {
    return sql`
      UPDATE idempotency_keys SET status = 'completed', response_status = ${Math.trunc(response.status)}::int, response_body = ${response.body}::text
      WHERE user_id = ${k.userId}::bigint AND key = ${k.key}::text`;
  }

  /** Stores the response of a completed operation, in its transaction. */
  async markCompleted(trx: Trx, k: IdempotencyKey, response: StoredResponse): Promise<void> {
    await this.completeQuery(k, response).execute(trx);
  }

  /** Stores a business rejection (after rolling the operation back to the savepoint). */
  async markFailed(trx: Trx, k: IdempotencyKey, error: DomainError): Promise<StoredResponse> {
    const response = rejectionResponse(error);
    await this.markCompleted(trx, k, response);
    return response;
  }

  /**
   * SQL that is true in a transaction whose claim took the key (a new or expired key).
   * An operation's `first` statements carry it as a condition: they run in the claim's
   * round trip, before the claim is judged, and must change nothing otherwise.
   */
  static readonly CLAIMED = `current_setting('idempotency.claimed', true) = 'on'`;

  /**
   * The whole pattern in one transaction: claim the key, run the operation behind a
   * savepoint, store its response (or its business rejection), commit.
   *
   * Round trip 1: BEGIN, SET LOCAL, the claim, the savepoint and `options.first` (the
   * operation's first statements, guarded by CLAIMED; their results reach `operation`).
   * Then whatever the operation still needs. Last: the stored response and COMMIT (and
   * for a rejection the ROLLBACK TO SAVEPOINT before it): two round trips at least. The
   * money operations that need no TypeScript inside their transaction are one call instead
   * (executeCall).
   *
   * `savepoint: false` spares the subtransaction, for an operation whose business
   * rejections cannot happen in practice (a deposit: only a missing wallet). Without the
   * savepoint nothing can be undone selectively, so a rejection is then not stored: the
   * whole transaction rolls back, the key included, and the error is answered as is.
   */
  async execute(
    k: IdempotencyKey,
    operation: (trx: Trx, first: pg.QueryResult[]) => Promise<OperationResult>,
    options: TransactionOptions & { log?: AppLogger; first?: string; savepoint?: boolean } = {},
  ): Promise<IdempotentOutcome> {
    const { first, savepoint = true, ...txOptions } = options;
    const reject = (ctx: TransactionContext, error: DomainError, cause: unknown): IdempotentOutcome => {
      if (!savepoint) throw cause ?? error;
      // The rejection is stored and replayed; everything the operation wrote is undone.
      const response = rejectionResponse(error);
      ctx.discardQueued();
      if (savepoint) ctx.beforeCommit('ROLLBACK TO SAVEPOINT idempotent_operation');
      ctx.beforeCommit(this.completeSql(k, response));
      return { ...response, replayed: false };
    };
    return this.tx.executeWithRetry(async (trx, ctx) => {
      if (ctx.preludeError !== undefined) {
        // One of `first`'s statements failed. They only act once the key is ours, so a
        // storable rejection is stored when the claim did take the key.
        const domain = pgErrorToDomain(ctx.preludeError);
        if (!domain || !domain.storable || !savepoint) throw ctx.preludeError;
        await sql`ROLLBACK TO SAVEPOINT idempotent_operation`.execute(trx).catch(() => { throw ctx.preludeError; });
        const { rows } = await sql<{ claimed: boolean }>`SELECT ${sql.raw(IdempotencyService.CLAIMED)} AS claimed`.execute(trx);
        if (!rows[0]?.claimed) throw ctx.preludeError;
        return reject(ctx, domain, undefined);
      }
      const existing = this.judgeClaim(ctx.prelude[0]!.rows[0] as ClaimRow, k);
      if (existing.isExisting) return { ...existing.record!, replayed: true };
      try {
        const result = await operation(trx, ctx.prelude.slice(savepoint ? 2 : 1));
        const response = { status: result.status, body: JSON.stringify(result.data) };
        ctx.beforeCommit(this.completeSql(k, response));
        return { ...response, replayed: false };
      } catch (err) {
        const domain = pgErrorToDomain(err);
        if (!domain || !domain.storable) throw err;
        return reject(ctx, domain, err);
      }
    }, { ...txOptions, prelude: `${this.claimSql(k)}${savepoint ? '; SAVEPOINT idempotent_operation' : ''}${first ? `; ${first}` : ''}`, tolerantPrelude: first !== undefined });
  }

  /**
   * The arguments a PL/pgSQL operation (migration 0007) claims its key with:
   * user, key, method, path, request hash and time to live, as SQL.
   */
  claimArguments(k: IdempotencyKey): RawBuilder<unknown> {
    return sql`${k.userId}::bigint, ${k.key}::text, ${k.method}::text, ${k.path}::text, ${k.requestHash}::text, ${Math.trunc(this.ttlHours)}::int`;
  }

  /**
   * An operation that is one call of a PL/pgSQL function which claims the key itself
   * (the same advisory lock and rules as `execute`'s claim statement, so the
   * two paths exclude each other) and stores its response before it returns: BEGIN, the
   * call and COMMIT are one round trip. The call's row has the claim's columns (locked,
   * inserted, request_hash, response_status, response_body); when the call took the key,
   * response_status and response_body are what it stored. A replay, a key in progress and
   * a reused key are judged as in `execute` (nothing was changed). Returns the outcome
   * and the row, for the caller's log line, and the results of statements sent after the
   * call in the same round trip (`rest`), which must change nothing unless it did.
   */
  async executeCall<R extends object>(k: IdempotencyKey, call: string | (() => string), options: BatchOptions = {}): Promise<{ outcome: IdempotentOutcome; row: R; rest: pg.QueryResult[] }> {
    const [result, ...rest] = await this.tx.executeBatchWithRetry(call, options);
    const row = result!.rows[0] as R & ClaimRow;
    const existing = this.judgeClaim(row, k);
    if (existing.isExisting) return { outcome: { ...existing.record!, replayed: true }, row, rest };
    return { outcome: { status: row.response_status!, body: row.response_body!, replayed: false }, row, rest };
  }

  /** Deletes expired keys in batches; returns how many went. */
  async cleanupExpired(trx: Trx, batchSize = 5000): Promise<number> {
    const { numAffectedRows } = await sql`
      DELETE FROM idempotency_keys WHERE ctid IN (
        SELECT ctid FROM idempotency_keys WHERE expires_at <= now() LIMIT ${batchSize} FOR UPDATE SKIP LOCKED
      )`.execute(trx);
    return Number(numAffectedRows ?? 0);
  }
}
