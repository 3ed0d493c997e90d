import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, fundedUser, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';
import { DomainError } from '../../src/platform/errors.js';
import { IdempotencyService } from '../../src/platform/idempotency.service.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t.close(); });

const deposit = (token: string, key: string, body: unknown, raw?: string) =>
  call(t.app, 'POST', '/api/v1/wallets/live/deposit', body, { token, key, raw });

describe('idempotency', () => {
  it('replays the same request with the original status and data, a new operationId and Idempotent-Replayed', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    const first = await deposit(u.token, key, { amount: '10.00', paymentMethod: 'card' });
    const again = await deposit(u.token, key, undefined, '{ "paymentMethod": "card",\n "amount": "10.00" }');
    expect(first.status).toBe(201);
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(again.body.data).toEqual(first.body.data);
    expect(JSON.stringify(again.body.data)).toBe(JSON.stringify(first.body.data));
    expect(again.body.operationId).not.toBe(first.body.operationId);
    expect(again.headers['x-operation-id']).toBe(again.body.operationId);
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet.balance).toBe('10.00');
  });

  it('same key with a different body, path or value text is 422 IDEMPOTENCY_KEY_REUSED', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    expect((await deposit(u.token, key, { amount: '50' })).status).toBe(201);
    for (const raw of ['{"amount": 50}', '{"amount": "50.00"}', '{"amount": "51"}']) {
      const r = await deposit(u.token, key, undefined, raw);
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    }
    const other = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '50' }, { token: u.token, key });
    expect(other.status).toBe(422);
    expect(other.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet.balance).toBe('50.00');
  });

  it('keys are scoped per user', async () => {
    const a = await registerUser(t.app);
    const b = await registerUser(t.app);
    const key = newKey();
    expect((await deposit(a.token, key, { amount: '5.00' })).headers['idempotent-replayed']).toBeUndefined();
    const rb = await deposit(b.token, key, { amount: '5.00' });
    expect(rb.status).toBe(201);
    expect(rb.headers['idempotent-replayed']).toBeUndefined();
  });

  it('stores and replays a business rejection; the retry after funding is still the stored 422', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    const first = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '30.00' }, { token: u.token, key });
    expect(first.status).toBe(422);
    expect(first.body.error.code).toBe('INSUFFICIENT_FUNDS');
    await deposit(u.token, newKey(), { amount: '100.00' });
    const again = await call(t.app, 'POST', '/api/v1/wallets/live/withdraw', { amount: '30.00' }, { token: u.token, key });
    expect(again.status).toBe(422);
    expect(again.body.error).toEqual(first.body.error);
    expect(again.headers['idempotent-replayed']).toBe('true');
    const w = await call(t.app, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(w.body.data.wallet.balance).toBe('100.00');
  });

  it('never stores a 400: the same key may be used again after fixing the body', async () => {
    const u = await registerUser(t.app);
    const key = newKey();
    expect((await deposit(u.token, key, { amount: '-5' })).status).toBe(400);
    const ok = await deposit(u.token, key, { amount: '5.00' });
    expect(ok.status).toBe(201);
    expect(ok.headers['idempotent-replayed']).toBeUndefined();
  });

  it('an expired key acts as new, and the cleanup deletes only expired keys', async () => {
    const u = await fundedUser(t.app, '10.00');
    const key = newKey();
    expect((await deposit(u.token, key, { amount: '1.00' })).status).toBe(201);
    await sql`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = ${key}`.execute(t.database.db);
    const fresh = await deposit(u.token, key, { amount: '1.00' });
    expect(fresh.status).toBe(201);
    expect(fresh.headers['idempotent-replayed']).toBeUndefined();
    await sql`UPDATE idempotency_keys SET expires_at = now() - interval '1 second' WHERE key = ${key}`.execute(t.database.db);
    const before = await sql<{ n: string }>`SELECT count(*) AS n FROM idempotency_keys WHERE expires_at > now()`.execute(t.database.db);
    const deleted = await t.services.tx.executeWithRetry((trx) => t.services.idempotency.cleanupExpired(trx));
    expect(deleted).toBe(1);
    const after = await sql<{ n: string }>`SELECT count(*) AS n FROM idempotency_keys WHERE expires_at > now()`.execute(t.database.db);
    expect(after.rows[0]!.n).toBe(before.rows[0]!.n);
  });
});

describe("the seed's IdempotencyService calls inside one transaction", () => {
  it('checkIdempotency claims a new key, markCompleted stores the response, a second check replays it; markFailed stores a rejection', async () => {
    const { tx, idempotency } = t.services;
    const u = await registerUser(t.app);
    const k = (key: string) => IdempotencyService.generateKey(u.user.id, key, 'POST', '/test', 'hash');
    const done = k(newKey());
    const first = await tx.executeWithRetry(async (trx) => {
      const c = await idempotency.checkIdempotency(trx, done);
      await idempotency.markCompleted(trx, done, { status: 201, body: '{"ok":true}' });
      return c;
    });
    expect(first).toEqual({ isExisting: false });
    const again = await tx.executeWithRetry((trx) => idempotency.checkIdempotency(trx, done));
    expect(again).toEqual({ isExisting: true, record: { status: 201, body: '{"ok":true}' } });

    const failed = k(newKey());
    const stored = await tx.executeWithRetry(async (trx) => {
      await idempotency.checkIdempotency(trx, failed);
      return idempotency.markFailed(trx, failed, new DomainError('INSUFFICIENT_FUNDS', 'Insufficient funds'));
    });
    expect(stored.status).toBe(422);
    const replay = await tx.executeWithRetry((trx) => idempotency.checkIdempotency(trx, failed));
    expect(replay).toEqual({ isExisting: true, record: stored });
    expect(JSON.parse(replay.record!.body)).toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
  });
});
