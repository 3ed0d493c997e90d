/**
 * /health follows the database (issue 2, API.md Operations): 200 with a live
 * PostgreSQL, 503 `status: "unavailable"` while it is stopped, and 200 again once it
 * is back — without restarting the app. The PostgreSQL is this test's own (not the
 * one the other test files share), on a fixed port so its restart keeps the URL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureDatabase } from '../../src/platform/db/bootstrap.js';
import { createDatabase } from '../../src/platform/db/database.js';
import { EmbeddedPostgres } from '../../src/platform/db/embedded.js';
import { migrateToLatest } from '../../src/platform/db/migrator.js';
import { call, startTestApp, type TestApp } from '../helpers/app.js';
import { freePort, livePostmaster, removeDir, stopPostmaster, testDataDir, waitUntil } from '../helpers/server-process.js';

const dataDir = testDataDir('health');
let pgServer: EmbeddedPostgres;
let t: TestApp | undefined;

beforeAll(async () => {
  pgServer = new EmbeddedPostgres({
    dataDir,
    port: await freePort(),
    maxConnections: 50,
    user: process.env.EMBEDDED_PG_USER ?? 'postgres',
    settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', shared_buffers: '32MB' },
  });
  await pgServer.start();
  await ensureDatabase(pgServer.url(), 'trading');
  const m = createDatabase(pgServer.url('trading'), { max: 1, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 1000 });
  try {
    await migrateToLatest(m.db);
  } finally {
    await m.close();
  }
  t = await startTestApp({}, pgServer.url('trading'));
});

afterAll(async () => {
  await t?.close(); // drops nothing: the database is not one it created
  await pgServer?.stop();
  await stopPostmaster(dataDir);
  expect(livePostmaster(dataDir)).toBeUndefined();
  removeDir(dataDir);
});

async function health() {
  const started = Date.now();
  const r = await call(t!.app, 'GET', '/health');
  return { ...r, ms: Date.now() - started };
}

describe('/health against a database that stops and returns', () => {
  it('is 200, then 503 unavailable while PostgreSQL is down, then 200 again without an app restart', async () => {
    const up = await health();
    expect(up.status, up.raw).toBe(200);
    expect(up.body).toMatchObject({ status: 'ok', db: { ok: true } });
    expect(typeof up.body.db.latencyMs).toBe('number');
    expect(up.body.db.pool).toMatchObject({ total: expect.any(Number), idle: expect.any(Number), waiting: expect.any(Number) });
    expect(up.body.transactions).toMatchObject({ committed: expect.any(Number), rolledBack: expect.any(Number) });
    expect(up.body.success, 'operational endpoints are not wrapped in the envelope').toBeUndefined();
    const port = pgServer.port;

    await pgServer.stop();
    expect(livePostmaster(dataDir)).toBeUndefined();

    const down = await health();
    expect(down.status, down.raw).toBe(503);
    expect(down.body).toMatchObject({ status: 'unavailable', db: { ok: false } });
    expect(down.ms, 'an unreachable database answers promptly (the check is bounded)').toBeLessThan(5_000);
    expect(down.raw).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|stack/i);
    // Still unavailable on a second look (no cached "ok").
    expect((await health()).status).toBe(503);

    await pgServer.start();
    expect(pgServer.port, 'the restarted PostgreSQL kept its port').toBe(port);

    // The same app instance recovers: its pool drops dead connections and opens new ones.
    let last = 0;
    const recovered = await waitUntil(async () => (last = (await health()).status) === 200, 15_000, 200);
    expect(recovered, `last /health status ${last}`).toBe(true);
    const back = await health();
    expect(back.body).toMatchObject({ status: 'ok', db: { ok: true } });
  }, 90_000);
});
