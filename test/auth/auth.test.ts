import { createHmac } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, TEST_JWT_SECRET, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp({ JWT_TTL: '1h' }); });
afterAll(async () => { await t.close(); });

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
function hs256(payload: Record<string, unknown>, secret = TEST_JWT_SECRET, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT' }) {
  const head = `${b64(header)}.${b64(payload)}`;
  return `${head}.${createHmac('sha256', secret).update(head).digest('base64url')}`;
}

const me = (token?: string) => call(t.app, 'GET', '/api/v1/me', undefined, { token });
const login = (email: string, password: string, ip = '10.0.0.1') =>
  t.app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password }, remoteAddress: ip }).then((r) => ({ status: r.statusCode, body: r.json(), headers: r.headers }));

describe('auth', () => {
  it('registers with a lower-cased email, unique account number and referral code', async () => {
    const r = await call(t.app, 'POST', '/api/v1/auth/register', { email: 'Mixed.Case@Example.COM', password: 'long enough pw' });
    expect(r.status).toBe(201);
    const user = r.body.data.user;
    expect(user).toEqual({ id: expect.any(String), email: 'mixed.case@example.com', accountNumber: expect.stringMatching(/^[1-9][0-9]{9}$/), referralCode: expect.stringMatching(/^[A-Z2-9]{8}$/), role: 'user', createdAt: expect.any(String) });
    expect(typeof r.body.data.token).toBe('string');
    const dup = await call(t.app, 'POST', '/api/v1/auth/register', { email: 'MIXED.case@example.com', password: 'long enough pw' });
    expect([dup.status, dup.body.error.code]).toEqual([409, 'EMAIL_TAKEN']);
    expect((await me(r.body.data.token)).body.data.user).toEqual(user);
  });

  it('validates registration input', async () => {
    for (const body of [{ email: 'a@b.co', password: 'short' }, { email: 'not-an-email', password: 'long enough pw' }, { email: 'a@b.co', password: 'x'.repeat(129) }, { email: 'a@b.co', password: 'long enough pw', role: 'admin' }, { email: 123, password: 'long enough pw' }]) {
      const r = await call(t.app, 'POST', '/api/v1/auth/register', body);
      expect([r.status, r.body.error.code]).toEqual([400, 'VALIDATION_FAILED']);
    }
  });

  it('an unknown referral code is 422 and creates nothing', async () => {
    const r = await call(t.app, 'POST', '/api/v1/auth/register', { email: 'refd@example.com', password: 'long enough pw', referralCode: 'NOPE2345' });
    expect([r.status, r.body.error.code]).toEqual([422, 'INVALID_REFERRAL_CODE']);
    const n = await sql<{ n: string }>`SELECT count(*) AS n FROM users WHERE email = 'refd@example.com'`.execute(t.database.db);
    expect(n.rows[0]!.n).toBe('0');
    const ref = await registerUser(t.app);
    const ok = await call(t.app, 'POST', '/api/v1/auth/register', { email: 'refd@example.com', password: 'long enough pw', referralCode: ref.user.referralCode });
    expect(ok.status).toBe(201);
    const link = await sql<{ referrerId: string }>`SELECT referrer_id FROM users WHERE email = 'refd@example.com'`.execute(t.database.db);
    expect(link.rows[0]!.referrerId).toBe(ref.user.id);
  });

  it('logs in with the right password only', async () => {
    const u = await registerUser(t.app);
    const ok = await login(u.email.toUpperCase(), u.password);
    expect(ok.status).toBe(200);
    expect(ok.body.data.user.id).toBe(u.user.id);
    const bad = await login(u.email, 'wrong password', '10.9.9.9');
    expect([bad.status, bad.body.error.code]).toEqual([401, 'INVALID_CREDENTIALS']);
    const unknown = await login('nobody@example.com', 'whatever1', '10.9.9.9');
    expect([unknown.status, unknown.body.error.code]).toEqual([401, 'INVALID_CREDENTIALS']);
  });

  it('locks an email out from one IP after 5 failures, not from other IPs; success resets the count', async () => {
    const u = await registerUser(t.app);
    for (let i = 0; i < 4; i++) expect((await login(u.email, 'wrong-password', '10.1.1.1')).status).toBe(401);
    expect((await login(u.email, u.password, '10.1.1.1')).status).toBe(200); // resets
    for (let i = 0; i < 5; i++) expect((await login(u.email, 'wrong-password', '10.1.1.1')).status).toBe(401);
    const locked = await login(u.email, u.password, '10.1.1.1');
    expect([locked.status, locked.body.error.code]).toEqual([429, 'ACCOUNT_LOCKED']);
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(800);
    expect(Number(locked.headers['retry-after'])).toBeLessThanOrEqual(900);
    expect((await login(u.email, u.password, '10.2.2.2')).status).toBe(200);
  });

  it('caps failures per email at 100 an hour across all IPs', async () => {
    const u = await registerUser(t.app);
    await sql`INSERT INTO login_failures (email, ip, created_at) SELECT ${u.email}, '10.3.' || (g % 250) || '.' || (g / 250), now() - interval '20 minutes' FROM generate_series(1, 100) g`.execute(t.database.db);
    const r = await login(u.email, u.password, '10.77.77.77');
    expect([r.status, r.body.error.code]).toEqual([429, 'ACCOUNT_LOCKED']);
    expect(Number(r.headers['retry-after'])).toBeGreaterThan(2000);
  });

  it('logout revokes every earlier token', async () => {
    const u = await registerUser(t.app);
    const second = (await login(u.email, u.password, '10.5.5.5')).body.data.token;
    expect((await call(t.app, 'POST', '/api/v1/auth/logout', undefined, { token: u.token })).status).toBe(200);
    expect((await me(u.token)).status).toBe(401);
    expect((await me(second)).status).toBe(401);
    const fresh = (await login(u.email, u.password, '10.5.5.5')).body.data.token;
    expect((await me(fresh)).status).toBe(200);
  });

  it('password change needs the current password and revokes older tokens', async () => {
    const u = await registerUser(t.app);
    const wrong = await call(t.app, 'POST', '/api/v1/auth/password', { currentPassword: 'not it at all', newPassword: 'brand new password' }, { token: u.token });
    expect([wrong.status, wrong.body.error.code]).toEqual([401, 'INVALID_CREDENTIALS']);
    const ok = await call(t.app, 'POST', '/api/v1/auth/password', { currentPassword: u.password, newPassword: 'brand new password' }, { token: u.token });
    expect(ok.status).toBe(200);
    expect((await me(u.token)).status).toBe(401);
    expect((await me(ok.body.data.token)).status).toBe(200);
    expect((await login(u.email, u.password, '10.6.6.6')).status).toBe(401);
    expect((await login(u.email, 'brand new password', '10.6.6.6')).status).toBe(200);
  });

  it('refuses missing, malformed, forged, expired and alg:none tokens with 401', async () => {
    const u = await registerUser(t.app);
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: u.user.id, tv: 0, role: 'user' };
    expect((await me(hs256({ ...claims, iat: now }))).status).toBe(200); // the helper signs like the server
    const tokens = [
      undefined,
      'garbage',
      hs256({ ...claims, iat: now }, 'some other secret that is long enough!!'),
      hs256({ ...claims, iat: now - 7200, exp: now - 3600 }),
      `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, iat: now })}.`,
      hs256({ ...claims, iat: now }, TEST_JWT_SECRET, { alg: 'HS512', typ: 'JWT' }),
      hs256({ ...claims, role: 'admin', sub: '999999', iat: now }),
    ];
    for (const token of tokens) {
      const r = await me(token);
      expect([r.status, r.body.error.code]).toEqual([401, 'UNAUTHENTICATED']);
    }
    const raw = await t.app.inject({ method: 'GET', url: '/api/v1/me', headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
    expect(raw.statusCode).toBe(401);
  });

  it('a blocked user gets 403 ACCOUNT_BLOCKED on every authenticated route and on a correct login', async () => {
    const u = await registerUser(t.app);
    await sql`UPDATE users SET blocked = true WHERE id = ${u.user.id}`.execute(t.database.db);
    t.services.userCache.invalidate(u.user.id);
    for (const [method, url] of [['GET', '/api/v1/me'], ['GET', '/api/v1/wallets'], ['POST', '/api/v1/wallets/live/deposit']] as const) {
      const r = await call(t.app, method, url, method === 'POST' ? { amount: '1' } : undefined, { token: u.token, key: newKey() });
      expect([url, r.status, r.body.error.code]).toEqual([url, 403, 'ACCOUNT_BLOCKED']);
    }
    const l = await login(u.email, u.password, '10.8.8.8');
    expect([l.status, l.body.error.code]).toEqual([403, 'ACCOUNT_BLOCKED']);
  });

  it('a change made by another process reaches this one through NOTIFY', async () => {
    const u = await registerUser(t.app);
    expect((await me(u.token)).status).toBe(200); // cached now
    await sql`UPDATE users SET token_version = token_version + 1 WHERE id = ${u.user.id}`.execute(t.database.db);
    await sql`SELECT pg_notify('user_state', ${u.user.id})`.execute(t.database.db);
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      status = (await me(u.token)).status;
    }
    expect(status).toBe(401);
  });
});
