/**
 * Graceful restart of the REAL server process on its embedded PostgreSQL (issue 2):
 * start on a fresh DATA_DIR, register and deposit over HTTP, SIGTERM → exit 0 within
 * the shutdown bound with the postmaster gone, start again on the same DATA_DIR →
 * login works, the old token still works (the generated JWT secret is kept in the
 * database) and the balance is there.
 */
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  http, isProcessAlive, livePostmaster, loginVia, postmasterPid, postmasterPidFile, registerVia,
  removeDir, startServer, stopPostmaster, testDataDir, type ServerProcess,
} from '../helpers/server-process.js';

const SHUTDOWN_TIMEOUT_MS = 10_000;
const dataDir = testDataDir('restart');
const env = { DATA_DIR: dataDir, SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) };
const servers: ServerProcess[] = [];

afterAll(async () => {
  for (const s of servers) await s.kill();
  await stopPostmaster(dataDir);
  expect(livePostmaster(dataDir)).toBeUndefined();
  removeDir(dataDir);
});

describe('restart of the real server on the same DATA_DIR', () => {
  it('keeps users, tokens and balances across a SIGTERM and a new start', async () => {
    // --- first life ---------------------------------------------------------
    const first = await startServer({ env });
    servers.push(first);
    const pmPid = postmasterPid(dataDir);
    expect(pmPid, 'the embedded PostgreSQL wrote its postmaster.pid').toBeDefined();
    expect(isProcessAlive(pmPid!)).toBe(true);

    const email = `restart-${Date.now()}@example.com`;
    const u = await registerVia(first.baseUrl, email);
    const d1 = await http(first.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '1234.56' }, { token: u.token, key: 'restart-dep-1' });
    expect(d1.status, d1.raw).toBe(201);
    const d2 = await http(first.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '0.44' }, { token: u.token, key: 'restart-dep-2' });
    expect(d2.status, d2.raw).toBe(201);
    expect(d2.body.data.wallet.balance).toBe('1235.00');

    // --- SIGTERM: exit 0 within the bound, PostgreSQL stopped with it -------------
    const exit = await first.terminate(SHUTDOWN_TIMEOUT_MS + 5_000);
    expect(exit, first.output()).toMatchObject({ code: 0, signal: null });
    expect(exit.ms).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(isProcessAlive(pmPid!), 'the postmaster exited with the server').toBe(false);
    expect(fs.existsSync(postmasterPidFile(dataDir)), 'a clean PostgreSQL shutdown removes postmaster.pid').toBe(false);
    expect(livePostmaster(dataDir)).toBeUndefined();

    // --- second life on the same DATA_DIR -----------------------------------------
    const second = await startServer({ env });
    servers.push(second);
    const newPm = postmasterPid(dataDir);
    expect(newPm).toBeDefined();
    expect(newPm).not.toBe(pmPid);

    const login = await loginVia(second.baseUrl, email);
    expect(login.status, login.raw).toBe(200);
    expect(login.body.data.user.id).toBe(u.user.id);
    expect(login.body.data.user.accountNumber).toBe(u.user.accountNumber);

    const w = await http(second.baseUrl, 'GET', '/api/v1/wallets/live', undefined, { token: login.body.data.token });
    expect(w.status, w.raw).toBe(200);
    expect(w.body.data.wallet.balance).toBe('1235.00');

    // The token of the first life still verifies: the generated secret lives in the database.
    const me = await http(second.baseUrl, 'GET', '/api/v1/me', undefined, { token: u.token });
    expect(me.status, me.raw).toBe(200);

    // A committed deposit's idempotent response replays after the restart, and applies nothing.
    const replay = await http(second.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '0.44' }, { token: u.token, key: 'restart-dep-2' });
    expect(replay.status, replay.raw).toBe(201);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body.data.transaction.id).toBe(d2.body.data.transaction.id);
    const after = await http(second.baseUrl, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(after.body.data.wallet.balance).toBe('1235.00');

    const exit2 = await second.terminate(SHUTDOWN_TIMEOUT_MS + 5_000);
    expect(exit2, second.output()).toMatchObject({ code: 0, signal: null });
    expect(isProcessAlive(newPm!)).toBe(false);
    expect(livePostmaster(dataDir)).toBeUndefined();
    expect(`${first.output()}${second.output()}`).not.toMatch(/undefined/);
  }, 150_000);
});
