/** A real app over a real (per-file) database, driven through app.inject. */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildApp, type Services } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createDatabase, type DatabaseHandle } from '../../src/platform/db/database.js';
import { NotificationHub } from '../../src/platform/db/notifications.js';
import { createLogger } from '../../src/platform/logger.js';
import { createTestDatabase } from './db.js';

export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

export interface TestApp {
  app: FastifyInstance;
  services: Services;
  database: DatabaseHandle;
  config: Readonly<Config>;
  url: string;
  close(): Promise<void>;
}

/** Collects the JSON log lines of an app (pass as `logLines` to see what it logged). */
export function logCollector(lines: Record<string, unknown>[]) {
  return { write: (line: string) => { lines.push(JSON.parse(line)); } };
}

export async function startTestApp(env: Record<string, string> = {}, existingUrl?: string, options: { logLines?: Record<string, unknown>[] } = {}): Promise<TestApp> {
  const created = existingUrl ? undefined : await createTestDatabase();
  const url = existingUrl ?? created!.url;
  const config = loadConfig({
    NODE_ENV: 'test',
    DATABASE_URL: url,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    RATE_LIMIT_PER_MINUTE: '0',
    RATE_LIMIT_ANON_PER_MINUTE: '0',
    PRICE_FEED: 'manual',
    DB_POOL_MAX: '20',
    ...env,
  });
  const log = options.logLines
    ? createLogger({ level: 'debug', destination: logCollector(options.logLines) })
    : createLogger({ level: config.logLevel });
  const database = createDatabase(url, config.pool);
  const hub = new NotificationHub(url, log);
  await hub.start();
  const { app, services } = await buildApp({ config, database, log, jwtSecret: TEST_JWT_SECRET, hub });
  await app.ready();
  return {
    app, services, database, config, url,
    close: async () => {
      await app.close();
      await hub.stop();
      await database.close();
      await created?.drop();
    },
  };
}

export interface Reply<T = any> {
  status: number;
  body: T;
  headers: Record<string, string | string[] | undefined>;
  raw: string;
}

export interface RequestOptions {
  token?: string;
  key?: string;
  headers?: Record<string, string>;
  /** Sent as is (with application/json unless contentType says otherwise). */
  raw?: string;
  contentType?: string;
}

export async function call<T = any>(app: FastifyInstance, method: string, url: string, body?: unknown, o: RequestOptions = {}): Promise<Reply<T>> {
  const headers: Record<string, string> = { ...o.headers };
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.key) headers['idempotency-key'] = o.key;
  let payload: string | undefined;
  if (o.raw !== undefined) payload = o.raw;
  else if (body !== undefined) payload = JSON.stringify(body);
  if (payload !== undefined) headers['content-type'] = o.contentType ?? 'application/json';
  const res = await app.inject({ method: method as 'GET', url, headers, payload });
  let parsed: unknown;
  try {
    parsed = JSON.parse(res.body);
  } catch {
    parsed = undefined;
  }
  return { status: res.statusCode, body: parsed as T, headers: res.headers as Reply['headers'], raw: res.body };
}

export const newKey = () => `k-${randomBytes(8).toString('hex')}`;

let counter = 0;
export async function registerUser(app: FastifyInstance, opts: { email?: string; referralCode?: string } = {}) {
  const email = opts.email ?? `user${Date.now()}-${counter++}-${randomBytes(3).toString('hex')}@example.com`;
  const r = await call(app, 'POST', '/api/v1/auth/register', { email, password: 'correct horse battery', ...(opts.referralCode ? { referralCode: opts.referralCode } : {}) });
  if (r.status !== 201) throw new Error(`register failed: ${r.status} ${r.raw}`);
  return { token: r.body.data.token as string, user: r.body.data.user as { id: string; email: string; accountNumber: string; referralCode: string; role: string }, email, password: 'correct horse battery' };
}

/** Registers a user and deposits into the live wallet. */
export async function fundedUser(app: FastifyInstance, amount: string, type: 'live' | 'demo' = 'live') {
  const u = await registerUser(app);
  const r = await call(app, 'POST', `/api/v1/wallets/${type}/deposit`, { amount }, { token: u.token, key: newKey() });
  if (r.status !== 201) throw new Error(`deposit failed: ${r.status} ${r.raw}`);
  return u;
}
