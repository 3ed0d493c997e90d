import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, newKey, registerUser, startTestApp, type TestApp } from '../helpers/app.js';

const lines: Record<string, unknown>[] = [];
let t: TestApp;
beforeAll(async () => { t = await startTestApp({}, undefined, { logLines: lines }); });
afterAll(async () => { await t.close(); });

describe('audit trail', () => {
  it('a financial operation is traceable by operationId from the response to the log lines and the ledger rows', async () => {
    const a = await registerUser(t.app);
    const b = await registerUser(t.app);
    await call(t.app, 'POST', '/api/v1/wallets/live/deposit', { amount: '20.00' }, { token: a.token, key: newKey() });
    const r = await call(t.app, 'POST', '/api/v1/wallets/live/transfer', { toAccountNumber: b.user.accountNumber, amount: '7.00' }, { token: a.token, key: newKey() });
    const op = r.body.operationId;
    expect(r.headers['x-operation-id']).toBe(op);
    const logged = lines.filter((l) => l.operationId === op);
    expect(logged.map((l) => l.msg)).toEqual(expect.arrayContaining(['incoming request', 'financial transfer', 'request completed']));
    const fin = logged.find((l) => l.event === 'financial')!;
    expect(fin).toMatchObject({ userId: a.user.id, amount: '7.00', oldBalance: '20.00', newBalance: '13.00' });
    const rows = await sql<{ type: string; amount: string }>`SELECT type, amount FROM ledger_postings WHERE operation_id = ${op} ORDER BY type`.execute(t.database.db);
    expect(rows.rows).toEqual([{ type: 'transfer_in', amount: '7.00' }, { type: 'transfer_out', amount: '-7.00' }]);
    // secrets never reach the logs
    const all = JSON.stringify(lines);
    expect(all).not.toContain(a.token);
    expect(all).not.toContain('correct horse battery');
  });
});
