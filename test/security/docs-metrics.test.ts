import { Validator } from '@seriousme/openapi-schema-validator';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t.close(); });

describe('OpenAPI, docs and metrics', () => {
  it('/openapi.json is a valid OpenAPI 3 document with every route and the Idempotency-Key header', async () => {
    const r = await call(t.app, 'GET', '/openapi.json');
    expect(r.status).toBe(200);
    const validator = new Validator();
    const result = await validator.validate(r.body);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(r.body.openapi).toMatch(/^3\./);
    const paths = Object.keys(r.body.paths);
    for (const p of ['/api/v1/auth/register', '/api/v1/auth/login', '/api/v1/me', '/api/v1/wallets', '/api/v1/wallets/{type}/deposit', '/api/v1/wallets/{type}/transactions', '/api/v1/admin/adjustments', '/api/v1/admin/reconciliation', '/health', '/metrics']) {
      expect(paths).toContain(p);
    }
    const deposit = r.body.paths['/api/v1/wallets/{type}/deposit'].post;
    expect(deposit.parameters.map((p: any) => `${p.in}:${p.name}`)).toEqual(expect.arrayContaining(['header:idempotency-key', 'path:type']));
    const amount = deposit.requestBody.content['application/json'].schema.properties.amount;
    expect(amount.oneOf).toEqual([{ type: 'string', pattern: '^[0-9]+(\\.[0-9]{1,2})?$' }, { type: 'number' }]);
    expect(deposit.security).toEqual([{ bearerAuth: [] }]);
  });

  it('/docs serves the Swagger UI', async () => {
    const r = await t.app.inject({ method: 'GET', url: '/docs/' });
    expect(r.statusCode).toBe(200);
    expect(r.body).toContain('swagger-ui');
  });

  it('/metrics exposes request, transaction, idempotency, pool, session, stop-out, rate-limit and reconciliation metrics', async () => {
    const u = await fundedUser(t.app, '5.00');
    const key = newKey();
    await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '1.00' }, { token: u.token, key });
    await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '1.00' }, { token: u.token, key });
    const r = await t.app.inject({ method: 'GET', url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toContain('text/plain');
    const text = r.body;
    expect(text).toMatch(/http_request_duration_seconds_bucket\{.*route="\/api\/v1\/wallets\/:type\/deposit".*status="201"/);
    expect(text).toMatch(/db_transactions_total\{outcome="committed"\} [1-9]/);
    expect(text).toMatch(/idempotency_events_total\{event="replay"\} 1/);
    expect(text).toMatch(/db_pool_connections\{state="total"\} \d+/);
    for (const name of ['websocket_sessions', 'stop_outs_total', 'rate_limit_rejections_total', 'reconciliation_mismatches', 'process_cpu_seconds_total', 'nodejs_heap_size_used_bytes']) {
      expect(text).toContain(name);
    }
  });
});
