import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, registerUser, startTestApp, type TestApp } from '../helpers/app.js';
import { redisUnavailableReason, startRedis, type TestRedis } from '../helpers/redis.js';

describe('rate limits', () => {
  let t: TestApp;
  beforeAll(async () => { t = await startTestApp({ RATE_LIMIT_PER_MINUTE: '5', RATE_LIMIT_ANON_PER_MINUTE: '3' }); });
  afterAll(async () => { await t.close(); });

  it('the N+1th request of a user in the window is 429 RATE_LIMITED with Retry-After', async () => {
    const u = await registerUser(t.app); // anonymous request 1 from this IP
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await call(t.app, 'GET', '/api/v1/me', undefined, { token: u.token })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429]);
    const r = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    expect([r.status, r.body.error.code]).toEqual([429, 'RATE_LIMITED']);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
    expect(Number(r.headers['retry-after'])).toBeLessThanOrEqual(60);
    const other = await registerUser(t.app);
    expect((await call(t.app, 'GET', '/api/v1/me', undefined, { token: other.token })).status).toBe(200);
  });

  it('limits unauthenticated requests per IP, never /health or /metrics', async () => {
    const login = (ip: string) => t.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: 'x@example.com', password: 'whatever1' }, remoteAddress: ip });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await login('10.20.30.40')).statusCode);
    expect(statuses).toEqual([401, 401, 401, 429]);
    expect((await login('10.20.30.41')).statusCode).toBe(401);
    for (let i = 0; i < 10; i++) {
      expect((await t.app.inject({ method: 'GET', url: '/health', remoteAddress: '10.20.30.40' })).statusCode).toBe(200);
      expect((await t.app.inject({ method: 'GET', url: '/metrics', remoteAddress: '10.20.30.40' })).statusCode).toBe(200);
    }
  });
});

const noRedis = redisUnavailableReason();
if (noRedis) console.warn(`skipping the shared Redis rate-limit test: ${noRedis}`);

describe.skipIf(noRedis !== undefined)('rate limits shared through Redis', () => {
  let redis: TestRedis;
  let a: TestApp;
  let b: TestApp;
  beforeAll(async () => {
    redis = await startRedis();
    a = await startTestApp({ RATE_LIMIT_PER_MINUTE: '4', REDIS_URL: redis.url });
    b = await startTestApp({ RATE_LIMIT_PER_MINUTE: '4', REDIS_URL: redis.url }, a.url);
  });
  afterAll(async () => {
    await b?.close();
    await a?.close();
    await redis?.stop();
  });

  it('two app instances on one Redis share one limit', async () => {
    const u = await registerUser(a.app);
    const statuses = [];
    for (const app of [a.app, b.app, a.app, b.app, a.app, b.app]) statuses.push((await call(app, 'GET', '/api/v1/me', undefined, { token: u.token })).status);
    expect(statuses).toEqual([200, 200, 200, 200, 429, 429]);
  });
});
