/**
 * PostgreSQL errors recognised by SQLSTATE and constraint name (never by message
 * text) and turned into the domain error they mean.
 */
import { DomainError, InsufficientFundsError, ServiceUnavailableError } from '../errors.js';
import { sqlState, SQLSTATE } from '../transaction.service.js';

const CONSTRAINTS: Record<string, () => DomainError> = {
  wallets_balance_nonnegative: () => new InsufficientFundsError(),
  users_email_key: () => new DomainError('EMAIL_TAKEN', 'An account with this email already exists'),
  idempotency_keys_pkey: () => new DomainError('IDEMPOTENCY_IN_PROGRESS', 'A request with this Idempotency-Key is still being processed'),
};

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH']);

/** True for errors that mean the database cannot be reached right now. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  if (!e) return false;
  const state = sqlState(err);
  if (state && (state.startsWith('08') || state === '57P01' || state === '57P02' || state === '57P03' || state === '53300')) return true;
  if (e.code && CONNECTION_CODES.has(e.code)) return true;
  // node-postgres reports these without a code
  const m = e.message ?? '';
  return err instanceof Error && (m.startsWith('Connection terminated') || m.includes('timeout exceeded when trying to connect') || m === 'Client has encountered a connection error and is not queryable');
}

export function pgErrorToDomain(err: unknown): DomainError | undefined {
  if (err instanceof DomainError) return err;
  const state = sqlState(err);
  const constraint = (err as { constraint?: string } | null)?.constraint;
  if (constraint && (state === SQLSTATE.checkViolation || state === SQLSTATE.uniqueViolation)) {
    const make = CONSTRAINTS[constraint];
    if (make) return make();
  }
  if (isConnectionError(err)) return new ServiceUnavailableError('The database is unreachable; please retry', 2);
  if (state === SQLSTATE.queryCanceled) return new ServiceUnavailableError('The operation took too long; please retry', 1);
  return undefined;
}
