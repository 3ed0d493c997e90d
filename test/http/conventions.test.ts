import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
let token: string;
beforeAll(async () => {
  t = await startTestApp();
  token = (await registerUser(t.app)).token;
});
afterAll(async () => { await t.close(); });

const LEAKS = /select|insert|update|postgres|stack|\bat \/|node_modules|127\.0\.0\.1|password_hash/i;

function expectError(r: { status: number; body: any; raw: string; headers: any }, status: number, code: string) {
  expect(r.status).toBe(status);
  expect(r.body.success).toBe(false);
  expect(r.body.error.code).toBe(code);
  expect(typeof r.body.error.message).toBe('string');
  expect(r.body.operationId).toBe(r.headers['x-operation-id']);
  expect(r.raw).not.toMatch(LEAKS);
}

async function liveBalance() {
  const r = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token });
  return r.body.data.wallet.balance as string;
}

describe('request conventions', () => {
  it('malformed JSON is 400 VALIDATION_FAILED', async () => {
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { token, key: newKey(), raw: '{"amount": "10",' });
    expectError(r, 400, 'VALIDATION_FAILED');
  });

  it('a 65 KiB body is 413 PAYLOAD_TOO_LARGE', async () => {
    const raw = JSON.stringify({ amount: '10', paymentMethod: 'x'.repeat(65 * 1024) });
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { token, key: newKey(), raw });
    expectError(r, 413, 'PAYLOAD_TOO_LARGE');
  });

  it('text/plain is 415 UNSUPPORTED_MEDIA_TYPE, even before authentication', async () => {
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { key: newKey(), raw: 'amount=10', contentType: 'text/plain' });
    expectError(r, 415, 'UNSUPPORTED_MEDIA_TYPE');
  });

  it('an empty body on a route that takes none is accepted with or without a JSON content type', async () => {
    const u = await registerUser(t.app);
    const plain = await t.app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: { authorization: `Bearer ${u.token}`, 'content-type': 'text/plain' } });
    expect(plain.statusCode).toBe(200);
    const v = await registerUser(t.app);
    const json = await t.app.inject({ method: 'POST', url: '/api/v1/auth/logout', headers: { authorization: `Bearer ${v.token}`, 'content-type': 'application/json' } });
    expect(json.statusCode).toBe(200);
  });

  it('unknown routes and malformed ids are 404 NOT_FOUND in the envelope', async () => {
    expectError(await call(t.app, 'GET', '/api/v1/nope', undefined, { token }), 404, 'NOT_FOUND');
    expectError(await call(t.app, 'GET', '/nope'), 404, 'NOT_FOUND');
    expectError(await call(t.app, 'GET', '/api/v1/wallets/savings', undefined, { token }), 404, 'NOT_FOUND');
    expectError(await call(t.app, 'POST', '/api/v1/wallets/savings/deposit', { amount: '1' }, { token, key: newKey() }), 404, 'NOT_FOUND');
  });

  it('checks in order: 401 before 404 resource, 404 before a missing key, a missing key before body validation', async () => {
    expectError(await call(t.app, 'POST', '/api/v1/wallets/savings/deposit', { amount: 'x' }), 401, 'UNAUTHENTICATED');
    expectError(await call(t.app, 'POST', '/api/v1/wallets/savings/deposit', { amount: 'x' }, { token }), 404, 'NOT_FOUND');
    expectError(await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: 'x' }, { token }), 400, 'IDEMPOTENCY_KEY_REQUIRED');
    expectError(await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: 'x' }, { token, key: 'bad key!' }), 400, 'VALIDATION_FAILED');
    expectError(await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: 'x' }, { token, key: 'k'.repeat(256) }), 400, 'VALIDATION_FAILED');
  });

  it('refuses 1e3 and 1.1000000000000001 where a 2-decimal amount is expected, and changes nothing', async () => {
    const before = await liveBalance();
    for (const raw of ['{"amount": 1e3}', '{"amount": 1.1000000000000001}', '{"amount": "1e3"}', '{"amount": -0}', '{"amount": 9007199254740993}']) {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { token, key: newKey(), raw });
      expectError(r, 400, 'VALIDATION_FAILED');
      expect(r.body.error.details[0].field).toBe('amount');
    }
    expect(await liveBalance()).toBe(before);
  });

  it('accepts a JSON number judged by its text, and keeps it exact', async () => {
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { token, key: newKey(), raw: '{"amount": 12.30}' });
    expect(r.status).toBe(201);
    expect(r.body.data.transaction.amount).toBe('12.30');
  });

  it('refuses duplicate keys, __proto__ and constructor keys', async () => {
    for (const raw of ['{"amount":"1","amount":"2"}', '{"amount":"1","amount":"1"}', '{"amount":"1","__proto__":{"x":1}}', '{"amount":"1","constructor":{}}']) {
      const r = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', undefined, { token, key: newKey(), raw });
      expectError(r, 400, 'VALIDATION_FAILED');
    }
  });

  it('gives every response a new operationId, also in X-Operation-Id', async () => {
    const a = await call(t.app, 'GET', '/api/v1/me', undefined, { token });
    const b = await call(t.app, 'GET', '/api/v1/me', undefined, { token });
    expect(a.body.operationId).toBe(a.headers['x-operation-id']);
    expect(a.body.operationId).not.toBe(b.body.operationId);
  });

  it('serves /health outside the envelope', async () => {
    const r = await call(t.app, 'GET', '/health');
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('ok');
    expect(r.body.db.ok).toBe(true);
    expect(r.body.db.pool).toEqual({ total: expect.any(Number), idle: expect.any(Number), waiting: expect.any(Number) });
    expect(r.body.transactions).toMatchObject({ committed: expect.any(Number), successRate: expect.any(Number) });
    expect(r.body.success).toBeUndefined();
  });
});
