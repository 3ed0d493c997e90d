/**
 * The logger: pino (Fastify's own), with the seed's helpers `financial`,
 * `transactionStart`, `transactionSuccess` and `transactionFailure`.
 * The helpers live on the root instance; pino children inherit them through the
 * prototype chain, so `request.log.financial(...)` carries the request's operationId.
 */
import cluster from 'node:cluster';
import { pino, type Logger as PinoLogger, type LoggerOptions, type DestinationStream } from 'pino';

export interface LoggerHelpers {
  /** A money movement: operation, user, amount, old and new balance. */
  financial(operation: string, context: Record<string, unknown>): void;
  transactionStart(operation: string, context?: Record<string, unknown>): void;
  transactionSuccess(operation: string, context?: Record<string, unknown>): void;
  transactionFailure(operation: string, error: unknown, context?: Record<string, unknown>): void;
}

export type AppLogger = PinoLogger & LoggerHelpers;

export const redactPaths = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  'authorization',
  'password',
  'currentPassword',
  'newPassword',
  'token',
  '*.password',
  '*.currentPassword',
  '*.newPassword',
  '*.token',
  '*.passwordHash',
  '*.jwtSecret',
];

function errorFields(error: unknown): Record<string, unknown> {
  if (error instanceof Error) {
    const e = error as Error & { code?: unknown };
    return { err: { type: e.name, message: e.message, code: e.code, stack: e.stack } };
  }
  return { err: { message: String(error) } };
}

const helpers: LoggerHelpers & ThisType<PinoLogger> = {
  financial(operation, context) {
    this.info({ event: 'financial', operation, ...context }, `financial ${operation}`);
  },
  transactionStart(operation, context = {}) {
    this.debug({ event: 'transaction_start', operation, ...context }, `transaction start ${operation}`);
  },
  transactionSuccess(operation, context = {}) {
    this.debug({ event: 'transaction_success', operation, ...context }, `transaction success ${operation}`);
  },
  transactionFailure(operation, error, context = {}) {
    this.warn({ event: 'transaction_failure', operation, ...context, ...errorFields(error) }, `transaction failure ${operation}`);
  },
};

/** Adds the seed's helpers to a pino instance (and so to all its children). */
export function withHelpers(base: PinoLogger): AppLogger {
  return Object.assign(base, helpers) as AppLogger;
}

export interface LoggerSettings {
  level: string;
  pretty?: boolean;
  /** Rotated log files (pino-roll, daily and by size) instead of stdout. */
  file?: string;
  destination?: DestinationStream;
  name?: string;
}

export function createLogger(settings: LoggerSettings): AppLogger {
  const options: LoggerOptions = {
    level: settings.level,
    name: settings.name,
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    base: { pid: process.pid },
  };
  if (settings.destination) return withHelpers(pino(options, settings.destination));
  if (settings.file) {
    // One file per process when several run (cluster workers): app.log → app.worker-2.log
    const file = cluster.isWorker ? settings.file.replace(/(\.log)?$/, `.worker-${cluster.worker!.id}$1`) : settings.file;
    return withHelpers(pino({ ...options, transport: { target: 'pino-roll', options: { file, frequency: 'daily', size: '100m', mkdir: true, limit: { count: 14 } } } }));
  }
  if (settings.pretty) {
    return withHelpers(pino({ ...options, transport: { target: 'pino-pretty', options: { translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } }));
  }
  return withHelpers(pino(options));
}

/** The logger of a request or service, with the helpers typed in. */
export function asAppLogger(log: unknown): AppLogger {
  return log as AppLogger;
}
