import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, type TestApp } from './helpers/app.js';

let t: TestApp;
beforeAll(async () => { t = await startTestApp(); });
afterAll(async () => { await t.close(); });

describe('smoke', () => {
  it('registers, deposits, reads', async () => {
    const u = await registerUser(t.app);
    const d = await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '100.50' }, { token: u.token, key: newKey() });
    console.log(d.status, d.raw);
    const w = await call(t.app, 'GET', '/api/v1/wallets', undefined, { token: u.token });
    console.log(w.raw);
    const h = await call(t.app, 'GET', '/api/v1/wallets/demo/transactions', undefined, { token: u.token });
    console.log(h.raw);
    expect(d.status).toBe(201);
  });
});
