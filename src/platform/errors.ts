/**
 * Domain errors. Services throw them (so the transaction rolls back); one error
 * handler turns them into the API.md error envelope. The code → status map is a
 * Record over the ErrorCode union, so the compiler proves it complete.
 */
export type ErrorCode =
  | 'VALIDATION_FAILED'
  | 'IDEMPOTENCY_KEY_REQUIRED'
  | 'UNAUTHENTICATED'
  | 'INVALID_CREDENTIALS'
  | 'FORBIDDEN'
  | 'ACCOUNT_BLOCKED'
  | 'NOT_FOUND'
  | 'RECIPIENT_NOT_FOUND'
  | 'EMAIL_TAKEN'
  | 'ORDER_NOT_OPEN'
  | 'IDEMPOTENCY_IN_PROGRESS'
  | 'PAYLOAD_TOO_LARGE'
  | 'UNSUPPORTED_MEDIA_TYPE'
  | 'IDEMPOTENCY_KEY_REUSED'
  | 'INSUFFICIENT_FUNDS'
  | 'INSUFFICIENT_MARGIN'
  | 'INVALID_REFERRAL_CODE'
  | 'UNKNOWN_SYMBOL'
  | 'NO_QUOTE'
  | 'RATE_LIMITED'
  | 'ACCOUNT_LOCKED'
  | 'SERVICE_UNAVAILABLE'
  | 'INTERNAL';

export const errorStatus: Record<ErrorCode, number> = {
  VALIDATION_FAILED: 400,
  IDEMPOTENCY_KEY_REQUIRED: 400,
  UNAUTHENTICATED: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  ACCOUNT_BLOCKED: 403,
  NOT_FOUND: 404,
  RECIPIENT_NOT_FOUND: 404,
  EMAIL_TAKEN: 409,
  ORDER_NOT_OPEN: 409,
  IDEMPOTENCY_IN_PROGRESS: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  IDEMPOTENCY_KEY_REUSED: 422,
  INSUFFICIENT_FUNDS: 422,
  INSUFFICIENT_MARGIN: 422,
  INVALID_REFERRAL_CODE: 422,
  UNKNOWN_SYMBOL: 422,
  NO_QUOTE: 422,
  RATE_LIMITED: 429,
  ACCOUNT_LOCKED: 429,
  SERVICE_UNAVAILABLE: 503,
  INTERNAL: 500,
};

export const errorCodes = Object.keys(errorStatus) as ErrorCode[];

export interface ErrorDetail {
  field?: string;
  message: string;
}

export class DomainError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details?: ErrorDetail[],
    /** Seconds for a Retry-After header (429, 503). */
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = 'DomainError';
    this.status = errorStatus[code];
  }

  /**
   * Business rejections decided inside an operation are stored with its idempotency
   * key and replayed (API.md, Idempotency); 400s and transient failures never are.
   */
  get storable(): boolean {
    return this.status !== 400 && this.status < 500 && !['UNAUTHENTICATED', 'ACCOUNT_BLOCKED', 'FORBIDDEN', 'RATE_LIMITED', 'IDEMPOTENCY_IN_PROGRESS', 'IDEMPOTENCY_KEY_REUSED'].includes(this.code);
  }
}

export class ValidationError extends DomainError {
  constructor(message: string, details?: ErrorDetail[]) {
    super('VALIDATION_FAILED', message, details);
  }
}

export class NotFoundError extends DomainError {
  constructor(what = 'Resource') {
    super('NOT_FOUND', `${what} not found`);
  }
}

export class InsufficientFundsError extends DomainError {
  constructor(message = 'Insufficient funds') {
    super('INSUFFICIENT_FUNDS', message);
  }

  /** Money leaving a wallet with open positions may not take its free margin below 0. */
  static freeMargin(): InsufficientFundsError {
    return new InsufficientFundsError('This would leave the free margin of open positions below 0.00');
  }
}

export class InsufficientMarginError extends DomainError {
  constructor(message = 'Free margin is below the margin this order needs') {
    super('INSUFFICIENT_MARGIN', message);
  }
}

export class UnauthenticatedError extends DomainError {
  constructor(message = 'Authentication required') {
    super('UNAUTHENTICATED', message);
  }
}

/** Retries exhausted, or the database unreachable: the client may try again. */
export class ServiceUnavailableError extends DomainError {
  constructor(message = 'Service temporarily unavailable, please retry', retryAfter = 1) {
    super('SERVICE_UNAVAILABLE', message, undefined, retryAfter);
  }
}
