/**
 * kill -9 of the REAL server (issue 2): the postmaster it started survives the kill;
 * the next start on the same DATA_DIR finds it through postmaster.pid, shuts it down
 * and comes up healthy — no crash, no "undefined" in its output — with the data intact.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  http, isProcessAlive, livePostmaster, loginVia, postmasterPid, processCommand, registerVia,
  removeDir, startServer, stopPostmaster, testDataDir, waitUntil, type ServerProcess,
} from '../helpers/server-process.js';

const dataDir = testDataDir('kill9');
const servers: ServerProcess[] = [];

afterAll(async () => {
  for (const s of servers) await s.kill();
  await stopPostmaster(dataDir);
  expect(livePostmaster(dataDir)).toBeUndefined();
  removeDir(dataDir);
});

describe('kill -9 of the real server', () => {
  it('the next start on the same DATA_DIR shuts the stale postmaster down and comes up with the data', async () => {
    const first = await startServer({ env: { DATA_DIR: dataDir } });
    servers.push(first);
    const email = `kill9-${Date.now()}@example.com`;
    const u = await registerVia(first.baseUrl, email);
    const d = await http(first.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '250.75' }, { token: u.token, key: 'kill9-dep' });
    expect(d.status, d.raw).toBe(201);

    const stalePm = postmasterPid(dataDir);
    expect(stalePm).toBeDefined();

    const exit = await first.kill();
    expect(exit.signal).toBe('SIGKILL');
    // The premise: the postmaster outlives its killed parent and still holds the folder.
    expect(isProcessAlive(stalePm!), 'the postmaster survives kill -9 of the server').toBe(true);
    expect(livePostmaster(dataDir)).toBe(stalePm);

    const pgLog = path.join(dataDir, 'postgresql.log');
    const logOffset = fs.statSync(pgLog).size;
    const second = await startServer({ env: { DATA_DIR: dataDir } });
    servers.push(second);
    // The stale one was shut down (not left running beside a new one, not reused by a crash loop).
    expect(await waitUntil(() => !isProcessAlive(stalePm!) || !processCommand(stalePm!).includes('postgres'), 5_000)).toBe(true);
    const newPm = livePostmaster(dataDir);
    expect(newPm).toBeDefined();
    expect(newPm).not.toBe(stalePm);
    // It was asked to stop (fast shutdown), and did, without the SIGQUIT fallback (immediate shutdown).
    const logSince = fs.readFileSync(pgLog, 'utf8').slice(logOffset);
    expect(logSince).toMatch(/received fast shutdown request/);
    expect(logSince).not.toMatch(/received immediate shutdown request/);
    expect(logSince, 'the new postmaster found a cleanly shut down cluster').not.toMatch(/was interrupted|not properly shut down/);

    const out = second.output();
    expect(out).not.toMatch(/undefined/);
    expect(out).not.toMatch(/"level":(50|60)/); // no error or fatal log line

    const login = await loginVia(second.baseUrl, email);
    expect(login.status, login.raw).toBe(200);
    const w = await http(second.baseUrl, 'GET', '/api/v1/wallets/live', undefined, { token: login.body.data.token });
    expect(w.status, w.raw).toBe(200);
    expect(w.body.data.wallet.balance).toBe('250.75');

    const exit2 = await second.terminate();
    expect(exit2, second.output()).toMatchObject({ code: 0, signal: null });
    expect(isProcessAlive(newPm!)).toBe(false);
    expect(livePostmaster(dataDir)).toBeUndefined();
  }, 150_000);
});
