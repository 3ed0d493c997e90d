/**
 * The environment, read once. One TypeBox schema describes every variable; a bad
 * value stops the process with a message naming each bad variable. Nothing else in
 * the code base reads process.env.
 */
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { Decimal } from './platform/money.js';

const Int = (pattern = '^[0-9]+$') => Type.String({ pattern });
const Decimal2 = Type.String({ pattern: '^[0-9]+(\\.[0-9]{1,2})?$' });
const SYMBOL_SPEC = '[A-Z0-9._-]{1,16}:[0-9]+(\\.[0-9]+)?:[0-9]{1,2}:[1-9][0-9]{0,5}(:[0-9]+(\\.[0-9]+)?:[0-9]+(\\.[0-9]+)?)?';
const SYMBOLS_PATTERN = `^${SYMBOL_SPEC}(,${SYMBOL_SPEC})*$`;
const Bool = Type.Union([
  Type.Literal('1'), Type.Literal('0'), Type.Literal('true'), Type.Literal('false'),
  Type.Literal('yes'), Type.Literal('no'), Type.Literal(''),
]);

export const EnvSchema = Type.Object({
  NODE_ENV: Type.Optional(Type.Union([Type.Literal('production'), Type.Literal('development'), Type.Literal('test')])),
  PORT: Type.Optional(Int()),
  HOST: Type.Optional(Type.String({ minLength: 1 })),
  DATABASE_URL: Type.Optional(Type.String({ pattern: '^postgres(ql)?://' })),
  DATABASE_READ_URLS: Type.Optional(Type.String()),
  DATA_DIR: Type.Optional(Type.String({ minLength: 1 })),
  EMBEDDED_PG_PORT: Type.Optional(Int()),
  EMBEDDED_PG_MAX_CONNECTIONS: Type.Optional(Int()),
  EMBEDDED_PG_USER: Type.Optional(Type.String({ pattern: '^[a-z_][a-z0-9_-]*$' })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 32 })),
  JWT_TTL: Type.Optional(Type.String({ pattern: '^[0-9]+[smhd]?$' })),
  ADMIN_EMAIL: Type.Optional(Type.String({ pattern: '^[^@\\s]+@[^@\\s]+$' })),
  ADMIN_PASSWORD: Type.Optional(Type.String({ minLength: 8, maxLength: 128 })),
  PRICE_FEED: Type.Optional(Type.Union([Type.Literal('simulated'), Type.Literal('manual')])),
  PRICE_FEED_SEED: Type.Optional(Int()),
  PRICE_FEED_INTERVAL_MS: Type.Optional(Int()),
  QUOTE_PUSH_INTERVAL_MS: Type.Optional(Int()),
  /** Instruments replacing the defaults: `SYMBOL:contractSize:digits:maxLeverage[:bid:ask]`, comma-separated. */
  SYMBOLS: Type.Optional(Type.String({ pattern: SYMBOLS_PATTERN })),
  STOP_OUT_LEVEL: Type.Optional(Decimal2),
  MARGIN_CALL_LEVEL: Type.Optional(Decimal2),
  DEMO_INITIAL_BALANCE: Type.Optional(Decimal2),
  REFERRAL_QUALIFYING_DEPOSIT: Type.Optional(Decimal2),
  REFERRAL_BONUS_REFERRER: Type.Optional(Decimal2),
  REFERRAL_BONUS_REFEREE: Type.Optional(Decimal2),
  REFERRAL_RATES: Type.Optional(Type.String({ pattern: '^[0-9]+(\\.[0-9]{1,2})?,[0-9]+(\\.[0-9]{1,2})?,[0-9]+(\\.[0-9]{1,2})?$' })),
  IDEMPOTENCY_TTL_HOURS: Type.Optional(Int()),
  RECONCILIATION_INTERVAL_MINUTES: Type.Optional(Int()),
  RATE_LIMIT_PER_MINUTE: Type.Optional(Int()),
  RATE_LIMIT_ANON_PER_MINUTE: Type.Optional(Int()),
  LOG_LEVEL: Type.Optional(Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)))),
  LOG_FILE: Type.Optional(Type.String({ minLength: 1 })),
  LOG_PRETTY: Type.Optional(Bool),
  TRUST_PROXY: Type.Optional(Type.String()),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  WORKERS: Type.Optional(Type.String({ pattern: '^(auto|[1-9][0-9]*)$' })),
  DB_POOL_MAX: Type.Optional(Int('^[1-9][0-9]*$')),
  DB_POOL_MIN: Type.Optional(Int()),
  DB_POOL_ACQUIRE_MS: Type.Optional(Int('^[1-9][0-9]*$')),
  DB_POOL_IDLE_MS: Type.Optional(Int()),
  DB_POOL_MAX_WAITING: Type.Optional(Int()),
  DB_LOCK_TIMEOUT_MS: Type.Optional(Int('^[1-9][0-9]*$')),
  DB_STATEMENT_TIMEOUT_MS: Type.Optional(Int('^[1-9][0-9]*$')),
  SHUTDOWN_TIMEOUT_MS: Type.Optional(Int('^[1-9][0-9]*$')),
  MAX_CONNECTIONS_PER_IP: Type.Optional(Int()),
  MAX_STREAMS_PER_USER: Type.Optional(Int('^[1-9][0-9]*$')),
});
export type Env = Static<typeof EnvSchema>;

export interface Config {
  env: 'production' | 'development' | 'test';
  port: number;
  host: string;
  databaseUrl: string | undefined;
  databaseReadUrls: string[];
  dataDir: string;
  embeddedPg: { port: number; maxConnections: number; user: string };
  jwtSecret: string | undefined;
  jwtTtl: string;
  admin: { email: string; password: string } | undefined;
  priceFeed: 'simulated' | 'manual';
  priceFeedSeed: number | undefined;
  priceFeedIntervalMs: number;
  quotePushIntervalMs: number;
  /** SYMBOLS parsed; undefined keeps the instruments of API.md. */
  symbols: SymbolSpec[] | undefined;
  stopOutLevel: string;
  marginCallLevel: string;
  demoInitialBalance: string;
  referral: { qualifyingDeposit: string; bonusReferrer: string; bonusReferee: string; rates: [string, string, string] };
  idempotencyTtlHours: number;
  reconciliationIntervalMinutes: number;
  rateLimitPerMinute: number;
  rateLimitAnonPerMinute: number;
  logLevel: string;
  logFile: string | undefined;
  logPretty: boolean;
  trustProxy: boolean | string;
  redisUrl: string | undefined;
  workers: number;
  pool: { max: number; min: number; acquireTimeoutMs: number; idleTimeoutMs: number; maxWaiting: number };
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  shutdownTimeoutMs: number;
  maxConnectionsPerIp: number;
  maxStreamsPerUser: number;
}

/** One instrument of SYMBOLS (strings stay exact; the trading module turns them into decimals). */
export interface SymbolSpec {
  symbol: string;
  contractSize: string;
  digits: number;
  maxLeverage: number;
  bid?: string;
  ask?: string;
}

/** Parses SYMBOLS (already matched against its pattern); pushes what is wrong into `problems`. */
function parseSymbols(text: string, problems: string[]): SymbolSpec[] {
  const specs: SymbolSpec[] = [];
  for (const part of text.split(',')) {
    const [symbol, contractSize, digits, maxLeverage, bid, ask] = part.split(':') as [string, string, string, string, string?, string?];
    const spec: SymbolSpec = { symbol, contractSize, digits: Number(digits), maxLeverage: Number(maxLeverage) };
    const decimals = (v: string) => (v.split('.')[1] ?? '').length;
    if (specs.some((s) => s.symbol === symbol)) problems.push(`SYMBOLS: ${symbol} is listed twice`);
    if (!/[1-9]/.test(contractSize)) problems.push(`SYMBOLS: ${symbol} needs a contract size above 0`);
    if (spec.digits > 10) problems.push(`SYMBOLS: ${symbol} may have at most 10 digits`);
    if (bid !== undefined && ask !== undefined) {
      if (decimals(bid) > spec.digits || decimals(ask) > spec.digits) problems.push(`SYMBOLS: ${symbol} start prices have more than ${spec.digits} decimals`);
      else if (!/[1-9]/.test(bid) || new Decimal(bid).gt(ask)) problems.push(`SYMBOLS: ${symbol} needs 0 < bid <= ask`);
      spec.bid = bid;
      spec.ask = ask;
    }
    specs.push(spec);
  }
  return specs;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`Invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

const truthy = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes'].includes(v);

/** Parses and validates an environment; throws a ConfigError naming every bad variable. */
export function loadConfig(source: Record<string, string | undefined> = process.env): Readonly<Config> {
  // Only the variables we know, and empty strings count as unset.
  const env: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const v = source[key];
    if (v !== undefined && v !== '') env[key] = v;
  }
  const problems = [...Value.Errors(EnvSchema, env)].map((e) => {
    const name = e.path.replace(/^\//, '');
    return `${name}: ${e.message}${name in env && !/JWT_SECRET|PASSWORD/.test(name) ? ` (got ${JSON.stringify(env[name])})` : ''}`;
  });
  const e = env as Env;
  const nodeEnv = e.NODE_ENV ?? 'development';
  if (nodeEnv === 'production') {
    if (!e.JWT_SECRET) problems.push('JWT_SECRET: required when NODE_ENV=production');
    if (!e.DATABASE_URL) problems.push('DATABASE_URL: required when NODE_ENV=production (no embedded database in production)');
  }
  if ((e.ADMIN_EMAIL === undefined) !== (e.ADMIN_PASSWORD === undefined)) {
    problems.push('ADMIN_EMAIL/ADMIN_PASSWORD: set both or neither');
  }
  const num = (v: string | undefined, d: number) => (v === undefined ? d : Number(v));
  const port = num(e.PORT, 3000);
  if (port > 65535) problems.push(`PORT: must be at most 65535 (got "${e.PORT}")`);
  const poolMax = num(e.DB_POOL_MAX, 50);
  const poolMin = num(e.DB_POOL_MIN, 0);
  if (poolMin > poolMax) problems.push(`DB_POOL_MIN: must not exceed DB_POOL_MAX (${poolMin} > ${poolMax})`);
  const symbols = e.SYMBOLS === undefined || problems.some((p) => p.startsWith('SYMBOLS')) ? undefined : parseSymbols(e.SYMBOLS, problems);
  if (problems.length > 0) throw new ConfigError(problems);

  const rates = (e.REFERRAL_RATES ?? '5.00,2.00,1.00').split(',') as [string, string, string];
  const workers = e.WORKERS === 'auto' ? availableParallelism() : num(e.WORKERS, 1);
  const config: Config = {
    env: nodeEnv,
    port,
    host: e.HOST ?? '127.0.0.1',
    databaseUrl: e.DATABASE_URL,
    databaseReadUrls: (e.DATABASE_READ_URLS ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    dataDir: path.resolve(e.DATA_DIR ?? './.data'),
    embeddedPg: {
      port: num(e.EMBEDDED_PG_PORT, 0),
      maxConnections: num(e.EMBEDDED_PG_MAX_CONNECTIONS, Math.max(200, workers * poolMax + 50)),
      user: e.EMBEDDED_PG_USER ?? 'postgres',
    },
    jwtSecret: e.JWT_SECRET,
    jwtTtl: e.JWT_TTL ?? '1h',
    admin: e.ADMIN_EMAIL && e.ADMIN_PASSWORD ? { email: e.ADMIN_EMAIL.toLowerCase(), password: e.ADMIN_PASSWORD } : undefined,
    priceFeed: e.PRICE_FEED ?? 'simulated',
    priceFeedSeed: e.PRICE_FEED_SEED === undefined ? undefined : Number(e.PRICE_FEED_SEED),
    priceFeedIntervalMs: num(e.PRICE_FEED_INTERVAL_MS, 500),
    quotePushIntervalMs: num(e.QUOTE_PUSH_INTERVAL_MS, 1000),
    symbols,
    stopOutLevel: e.STOP_OUT_LEVEL ?? '50',
    marginCallLevel: e.MARGIN_CALL_LEVEL ?? '100',
    demoInitialBalance: e.DEMO_INITIAL_BALANCE ?? '10000.00',
    referral: {
      qualifyingDeposit: e.REFERRAL_QUALIFYING_DEPOSIT ?? '100.00',
      bonusReferrer: e.REFERRAL_BONUS_REFERRER ?? '25.00',
      bonusReferee: e.REFERRAL_BONUS_REFEREE ?? '10.00',
      rates,
    },
    idempotencyTtlHours: num(e.IDEMPOTENCY_TTL_HOURS, 24),
    reconciliationIntervalMinutes: num(e.RECONCILIATION_INTERVAL_MINUTES, 10),
    rateLimitPerMinute: num(e.RATE_LIMIT_PER_MINUTE, 600),
    rateLimitAnonPerMinute: num(e.RATE_LIMIT_ANON_PER_MINUTE, 60),
    logLevel: e.LOG_LEVEL ?? 'info',
    logFile: e.LOG_FILE,
    logPretty: e.LOG_PRETTY === undefined ? nodeEnv !== 'production' && process.stdout.isTTY === true : truthy(e.LOG_PRETTY),
    trustProxy: e.TRUST_PROXY === undefined || ['0', 'false', 'no'].includes(e.TRUST_PROXY) ? false
      : truthy(e.TRUST_PROXY) ? true : e.TRUST_PROXY,
    redisUrl: e.REDIS_URL,
    workers,
    pool: {
      max: poolMax,
      min: poolMin,
      acquireTimeoutMs: num(e.DB_POOL_ACQUIRE_MS, 30_000),
      idleTimeoutMs: num(e.DB_POOL_IDLE_MS, 10_000),
      // Admission control: past this many transactions waiting for a connection, a new
      // one is refused at once with 503 rather than queued behind them. 0 (the default):
      // off, every transaction queues up to DB_POOL_ACQUIRE_MS as the seed's pool does.
      maxWaiting: num(e.DB_POOL_MAX_WAITING, 0),
    },
    lockTimeoutMs: num(e.DB_LOCK_TIMEOUT_MS, 5_000),
    statementTimeoutMs: num(e.DB_STATEMENT_TIMEOUT_MS, 15_000),
    shutdownTimeoutMs: num(e.SHUTDOWN_TIMEOUT_MS, 10_000),
    maxConnectionsPerIp: num(e.MAX_CONNECTIONS_PER_IP, 1000),
    maxStreamsPerUser: num(e.MAX_STREAMS_PER_USER, 5),
  };
  return Object.freeze(config);
}
