/**
 * IdempotencyService: the seed's names with API.md's semantics and DESIGN.md rule 6.
 * The key is claimed at the start of the operation's own transaction and the outcome
 * stored before that transaction commits, so a committed operation always has its
 * stored response and vice versa. A concurrent duplicate gets 409 at once
 * (pg_try_advisory_xact_lock) instead of queueing on the unique index.
 */
import { sql } from 'kysely';
import type { Trx } from './db/database.js';
import { pgErrorToDomain } from './db/pg-errors.js';
import { DomainError } from './errors.js';
import type { AppLogger } from './logger.js';
import type { TransactionOptions, TransactionService } from './transaction.service.js';

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
    const { rows } = await sql<{ locked: boolean; inserted: boolean; requestHash: string | null; responseStatus: number | null; responseBody: string | null }>`
      WITH l AS (SELECT pg_try_advisory_xact_lock(hashtextextended(${`${k.userId}:${k.key}`}, 0)) AS ok),
      ins AS (
        INSERT INTO idempotency_keys (user_id, key, method, path, request_hash, status, expires_at)
        SELECT ${k.userId}, ${k.key}, ${k.method}, ${k.path}, ${k.requestHash}, 'processing', now() + make_interval(hours => ${this.ttlHours})
        FROM l WHERE l.ok
        ON CONFLICT (user_id, key) DO UPDATE
          SET method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
              status = 'processing', response_status = NULL, response_body = NULL,
              created_at = now(), expires_at = EXCLUDED.expires_at
          WHERE idempotency_keys.expires_at <= now()
        RETURNING 1
      )
      SELECT l.ok AS locked, EXISTS (SELECT 1 FROM ins) AS inserted,
             k.request_hash, k.response_status, k.response_body
      FROM l LEFT JOIN idempotency_keys k ON k.user_id = ${k.userId} AND k.key = ${k.key} AND k.status = 'completed'
    `.execute(trx);
    const row = rows[0]!;
    if (!row.locked || (!row.inserted && row.responseBody === null)) {
      this.stats.conflicts++;
      throw new DomainError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed; retry later');
    }
    if (row.inserted) return { isExisting: false };
    if (row.requestHash !== k.requestHash) {
      this.stats.reused++;
      throw new DomainError('IDEMPOTENCY_KEY_REUSED', 'This Idempotency-Key was already used for a different request');
    }
    this.stats.replays++;
    return { isExisting: true, record: { status: row.responseStatus!, body: row.responseBody! } };
  }

  /** Stores the response of a completed operation, in its transaction. */
  async markCompleted(trx: Trx, k: IdempotencyKey, response: StoredResponse): Promise<void> {
    await sql`
      UPDATE idempotency_keys SET status = 'completed', response_status = ${response.status}, response_body = ${response.body}
      WHERE user_id = ${k.userId} AND key = ${k.key}
    `.execute(trx);
  }

  /** Stores a business rejection (after rolling the operation back to the savepoint). */
  async markFailed(trx: Trx, k: IdempotencyKey, error: DomainError): Promise<StoredResponse> {
    const body = JSON.stringify(error.details ? { code: error.code, message: error.message, details: error.details } : { code: error.code, message: error.message });
    const response = { status: error.status, body };
    await this.markCompleted(trx, k, response);
    return response;
  }

  /**
   * The whole pattern in one transaction: claim the key, run the operation behind a
   * savepoint, store its response (or its business rejection), commit.
   */
  async execute(
    k: IdempotencyKey,
    operation: (trx: Trx) => Promise<OperationResult>,
    options: TransactionOptions & { log?: AppLogger } = {},
  ): Promise<IdempotentOutcome> {
    return this.tx.executeWithRetry(async (trx) => {
      const existing = await this.checkIdempotency(trx, k);
      if (existing.isExisting) return { ...existing.record!, replayed: true };
      await sql`SAVEPOINT idempotent_operation`.execute(trx);
      try {
        const result = await operation(trx);
        const response = { status: result.status, body: JSON.stringify(result.data) };
        await this.markCompleted(trx, k, response);
        return { ...response, replayed: false };
      } catch (err) {
        const domain = pgErrorToDomain(err);
        if (!domain || !domain.storable) throw err;
        // The rejection is stored and replayed; everything the operation wrote is undone.
        await sql`ROLLBACK TO SAVEPOINT idempotent_operation`.execute(trx);
        return { ...(await this.markFailed(trx, k, domain)), replayed: false };
      }
    }, options);
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
