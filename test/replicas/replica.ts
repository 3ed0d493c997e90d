/**
 * A real streaming replica for tests: a primary EmbeddedPostgres of the test's own and
 * a hot standby made from a base backup taken without pg_basebackup (the embedded
 * package has none): pg_backup_start, a file copy of the data folder, pg_backup_stop's
 * label written as backup_label, standby.signal and primary_conninfo. The standby is
 * started by the same EmbeddedPostgres class on the copied folder: with PG_VERSION
 * present it skips initdb and reads the copied credentials.json, so no change to
 * embedded.ts is needed. A physical replication slot keeps the WAL the standby needs.
 * Loopback only; every wait is bounded.
 *
 * Below the cluster: what the replica API tests share: two apps (own pools, listeners
 * and routers) on the cluster, standing for two API processes behind a load balancer,
 * and ways to look at the servers and at the apps' read routers.
 */
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { expect } from 'vitest';
import { ensureDatabase } from '../../src/platform/db/bootstrap.js';
import { createDatabase } from '../../src/platform/db/database.js';
import { EmbeddedPostgres } from '../../src/platform/db/embedded.js';
import { migrateToLatest } from '../../src/platform/db/migrator.js';
import { parseLsn, replayHorizon } from '../../src/platform/db/read-router.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { databaseUrl } from '../helpers/db.js';
import { freePort, livePostmaster, removeDir, stopPostmaster, testDataDir, waitUntil } from '../helpers/server-process.js';

const SLOT = 'test_replica_slot';
const REPLICA_NAME = 'test_replica';
const MAX_CONNECTIONS = 100;
const USER = process.env.EMBEDDED_PG_USER ?? 'postgres';

// Both servers get the same limits: a hot standby refuses to run with fewer
// max_connections / max_wal_senders / … than its primary.
const COMMON = { fsync: 'off', shared_buffers: '32MB', max_wal_senders: 5, max_replication_slots: 5, hot_standby: 'on' };

/** Files and folder contents a base backup leaves out (PostgreSQL docs, "Making a Base Backup Using the Low Level API"). */
const SKIP_FILES = new Set(['postmaster.pid', 'postmaster.opts', 'backup_label', 'backup_label.old', 'tablespace_map', 'standby.signal', 'recovery.signal', 'pg_internal.init']);
const EMPTY_DIRS = new Set(['pg_wal', 'pg_replslot', 'pg_dynshmem', 'pg_notify', 'pg_serial', 'pg_snapshots', 'pg_stat_tmp', 'pg_subtrans', 'pgsql_tmp']);

export interface ReplicatedCluster {
  primary: EmbeddedPostgres;
  replica: EmbeddedPostgres;
  database: string;
  primaryUrl(db?: string): string;
  replicaUrl(db?: string): string;
  /** Waits (bounded) until the standby streams and has replayed everything the primary wrote so far. */
  waitForCatchUp(timeoutMs?: number): Promise<void>;
  pauseReplay(): Promise<void>;
  resumeReplay(): Promise<void>;
  stopReplica(): Promise<void>;
  startReplica(): Promise<void>;
  /** Stops both servers and removes both folders; safe to call twice and after a failed start. */
  destroy(): Promise<void>;
}

/** Copies a live data folder file by file; files that vanish while we copy are skipped. */
function copyDataDir(from: string, to: string, top = true): void {
  fs.mkdirSync(to, { recursive: true, mode: 0o700 });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) {
      if (EMPTY_DIRS.has(entry.name)) {
        fs.mkdirSync(dst, { mode: 0o700 });
        if (top && entry.name === 'pg_wal') fs.mkdirSync(path.join(dst, 'archive_status'), { mode: 0o700 });
        continue;
      }
      copyDataDir(src, dst, false);
    } else if (entry.isFile()) {
      if (SKIP_FILES.has(entry.name) || entry.name.startsWith('pgsql_tmp')) continue;
      try {
        fs.copyFileSync(src, dst);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
  }
}

/** The copy must belong to whoever owns the primary's folder (the `postgres` user when we are root). */
function chownTree(dir: string, uid: number, gid: number): void {
  fs.chownSync(dir, uid, gid);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) chownTree(p, uid, gid);
    else fs.chownSync(p, uid, gid);
  }
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  c.on('error', () => undefined);
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/** Starts a primary with a migrated `database`, then a hot standby of it. */
export async function startReplicatedCluster(database = 'trading'): Promise<ReplicatedCluster> {
  const primaryDir = testDataDir('replica-primary');
  const replicaDir = testDataDir('replica-standby');
  const primary = new EmbeddedPostgres({
    dataDir: primaryDir,
    port: await freePort(),
    maxConnections: MAX_CONNECTIONS,
    user: USER,
    settings: { ...COMMON, wal_level: 'replica' },
  });
  const replica = new EmbeddedPostgres({
    dataDir: replicaDir,
    port: await freePort(),
    maxConnections: MAX_CONNECTIONS,
    user: USER,
    settings: { ...COMMON },
  });
  let destroyed = false;
  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    await replica.stop().catch(() => undefined);
    await primary.stop().catch(() => undefined);
    await stopPostmaster(replicaDir);
    await stopPostmaster(primaryDir);
    const left = [livePostmaster(replicaDir), livePostmaster(primaryDir)].filter((p) => p !== undefined);
    removeDir(replicaDir);
    removeDir(primaryDir);
    if (left.length) throw new Error(`PostgreSQL still running after clean-up: pids ${left.join(', ')}`);
  };

  try {
    await primary.start();
    await ensureDatabase(primary.url(), database);
    const m = createDatabase(primary.url(database), { max: 1, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 1000 });
    try {
      await migrateToLatest(m.db);
    } finally {
      await m.close();
    }

    // Replication connections from loopback, with the superuser's password (initdb's
    // defaults usually have this line already; make sure).
    const hba = path.join(primary.pgData, 'pg_hba.conf');
    const hbaText = fs.readFileSync(hba, 'utf8');
    if (!/^\s*host\s+replication\s+all\s+127\.0\.0\.1\/32\s+scram-sha-256/m.test(hbaText)) {
      fs.appendFileSync(hba, '\nhost    replication     all             127.0.0.1/32            scram-sha-256\n');
    }
    const credentials = JSON.parse(fs.readFileSync(path.join(primaryDir, 'credentials.json'), 'utf8')) as { user: string; password: string };

    // The base backup: one session from pg_backup_start to pg_backup_stop.
    await withClient(primary.url(), async (c) => {
      await c.query('SELECT pg_reload_conf()');
      await c.query('SELECT pg_create_physical_replication_slot($1, true)', [SLOT]);
      await c.query("SELECT pg_backup_start('replica-test', true)");
      copyDataDir(primary.pgData, replica.pgData);
      const { rows } = await c.query<{ labelfile: string; spcmapfile: string | null }>('SELECT labelfile, spcmapfile FROM pg_backup_stop(false)');
      fs.writeFileSync(path.join(replica.pgData, 'backup_label'), rows[0]!.labelfile);
      if (rows[0]!.spcmapfile) fs.writeFileSync(path.join(replica.pgData, 'tablespace_map'), rows[0]!.spcmapfile);
    });
    fs.writeFileSync(path.join(replica.pgData, 'standby.signal'), '');
    fs.appendFileSync(path.join(replica.pgData, 'postgresql.auto.conf'),
      `\nprimary_conninfo = 'host=127.0.0.1 port=${primary.port} user=${credentials.user} password=${credentials.password} application_name=${REPLICA_NAME}'\n`
      + `primary_slot_name = '${SLOT}'\n`);
    fs.copyFileSync(path.join(primaryDir, 'credentials.json'), path.join(replicaDir, 'credentials.json'));
    fs.chmodSync(replica.pgData, 0o700);
    const owner = fs.statSync(primary.pgData);
    if (process.getuid?.() === 0) chownTree(replica.pgData, owner.uid, owner.gid);

    await replica.start();
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }

  const cluster: ReplicatedCluster = {
    primary,
    replica,
    database,
    primaryUrl: (db = database) => databaseUrl(primary.url(), db),
    replicaUrl: (db = database) => databaseUrl(replica.url(), db),
    async waitForCatchUp(timeoutMs = 30_000) {
      const target = await withClient(primary.url(), async (c) => (await c.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')).rows[0]!.lsn);
      let last = 'no answer';
      const ok = await waitUntil(async () => {
        try {
          return await withClient(replica.url(), async (c) => {
            const { rows } = await c.query<{ replay: string | null; block: number; segment: string }>(
              "SELECT pg_last_wal_replay_lsn()::text AS replay, current_setting('wal_block_size')::int AS block, pg_size_bytes(current_setting('wal_segment_size'))::text AS segment");
            const r = rows[0]!;
            last = `replay ${r.replay} / target ${target}`;
            return r.replay !== null && replayHorizon(parseLsn(r.replay), r.block, BigInt(r.segment)) >= parseLsn(target);
          });
        } catch (e) {
          last = (e as Error).message;
          return false;
        }
      }, timeoutMs, 50);
      if (!ok) throw new Error(`the standby did not catch up within ${timeoutMs} ms (${last})`);
    },
    async pauseReplay() {
      await withClient(replica.url(), async (c) => {
        await c.query('SELECT pg_wal_replay_pause()');
        const paused = await waitUntil(async () => (await c.query<{ s: string }>('SELECT pg_get_wal_replay_pause_state() AS s')).rows[0]!.s === 'paused', 10_000, 20);
        if (!paused) throw new Error('replay did not pause');
      });
    },
    async resumeReplay() {
      await withClient(replica.url(), (c) => c.query('SELECT pg_wal_replay_resume()'));
    },
    stopReplica: () => replica.stop(),
    async startReplica() {
      await replica.start();
    },
    destroy,
  };
  try {
    // Streaming, not just started: the primary sees the standby's WAL receiver.
    const streaming = await waitUntil(() => withClient(primary.url(), async (c) =>
      (await c.query("SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", [REPLICA_NAME])).rowCount === 1), 30_000, 100);
    if (!streaming) throw new Error(`the standby does not stream; its log: ${fs.readFileSync(replica.logFile, 'utf8').slice(-2000)}`);
    await cluster.waitForCatchUp();
  } catch (e) {
    await destroy().catch(() => undefined);
    throw e;
  }
  return cluster;
}

/** Rows of one statement on its own connection to `url`. */
export function sqlOn<T extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<T[]> {
  return withClient(url, async (c) => (await c.query<T>(text, values)).rows);
}

/** The primary's current WAL insert position. */
export const primaryLsn = async (cluster: ReplicatedCluster) =>
  parseLsn((await sqlOn<{ lsn: string }>(cluster.primaryUrl(), 'SELECT pg_current_wal_insert_lsn()::text AS lsn'))[0]!.lsn);

/** Waits (bounded) until an app's router sees every replica up and is not blind. */
export async function routerReady(t: TestApp): Promise<boolean> {
  return waitUntil(() => {
    const s = t.services.reads.status();
    return !s.blind && s.replicas.every((r) => r.up);
  }, 20_000, 50);
}

/** Waits until an app's router has seen the standby replay at least `lsn`. */
export async function routerSees(t: TestApp, lsn: bigint): Promise<boolean> {
  return waitUntil(() => {
    // A read triggers the refresh of a stale cached position; so does the 1 s tick.
    t.services.reads.forUser('0');
    const r = t.services.reads.status().replicas[0]!;
    return r.up && parseLsn(r.replayLsn) >= lsn;
  }, 15_000, 25);
}

/** Waits until the standby has replayed all written so far, and asserts that each app's router has seen that. */
export async function routersCaughtUp(cluster: ReplicatedCluster, apps: TestApp[]): Promise<void> {
  const target = await primaryLsn(cluster);
  await cluster.waitForCatchUp();
  for (const t of apps) expect(await routerSees(t, target)).toBe(true);
}

/** How many reads an app's router has sent to the (one) replica. */
export const replicaReads = (t: TestApp) => t.services.reads.status().replicas[0]!.reads;

export interface ReplicatedApps {
  cluster: ReplicatedCluster;
  a: TestApp;
  b: TestApp;
}

/**
 * A replicated cluster and two apps on it that read from its standby, both routers
 * ready. What was started is stopped again if a later step fails.
 */
export async function startReplicatedApps(): Promise<ReplicatedApps> {
  const cluster = await startReplicatedCluster();
  const env = { DATABASE_READ_URLS: cluster.replicaUrl(), DB_POOL_MAX: '10' };
  let a: TestApp | undefined;
  let b: TestApp | undefined;
  try {
    a = await startTestApp(env, cluster.primaryUrl());
    b = await startTestApp(env, cluster.primaryUrl());
    expect(await routerReady(a), JSON.stringify(a.services.reads.status())).toBe(true);
    expect(await routerReady(b), JSON.stringify(b.services.reads.status())).toBe(true);
    return { cluster, a, b };
  } catch (e) {
    await stopReplicatedApps({ cluster, a, b }).catch(() => undefined);
    throw e;
  }
}

/** Each step runs even when an earlier one fails; the servers and folders always go. */
export async function stopReplicatedApps(s: Partial<ReplicatedApps>): Promise<void> {
  await s.b?.close().catch(() => undefined);
  await s.a?.close().catch(() => undefined);
  await s.cluster?.destroy();
}
