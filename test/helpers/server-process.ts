/**
 * The REAL server as a child process (`node --import tsx src/server.ts`), for the
 * process-level tests: start it on a port of our own, wait for /health, SIGTERM or
 * SIGKILL it, and find / stop the embedded PostgreSQL it leaves behind.
 * Loopback only; every wait is bounded.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, isAlive, processCommand } from '../../src/platform/db/embedded.js';

export const PROJECT_ROOT = path.resolve(fileURLToPath(new URL('../..', import.meta.url)));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A fresh folder path under the project's git-ignored .test-data/ (not created). */
export function testDataDir(name: string): string {
  return path.join(PROJECT_ROOT, '.test-data', `${name}-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** A port that was free a moment ago on 127.0.0.1 (the server does not support PORT=0). */
export { freePort };

// ---------------------------------------------------------------------------
// processes

/** Alive and not a zombie: the server's own check. */
export const isProcessAlive = isAlive;

export { processCommand };

/** The real, effective, saved and filesystem uids of a process (from /proc/<pid>/status). */
export function processUids(pid: number): number[] {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const line = status.split('\n').find((l) => l.startsWith('Uid:'));
  if (!line) throw new Error(`no Uid line in /proc/${pid}/status`);
  return line.slice(4).trim().split(/\s+/).map(Number);
}

export async function waitUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= deadline) return false;
    await sleep(stepMs);
  }
}

// ---------------------------------------------------------------------------
// the embedded PostgreSQL of a DATA_DIR

export function postmasterPidFile(dataDir: string): string {
  return path.join(dataDir, 'pg', 'postmaster.pid');
}

/** The pid recorded in DATA_DIR's postmaster.pid, if the file exists. */
export function postmasterPid(dataDir: string): number | undefined {
  let content: string;
  try {
    content = fs.readFileSync(postmasterPidFile(dataDir), 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number(content.split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** A live postgres process holding DATA_DIR's postmaster.pid, if any. */
export function livePostmaster(dataDir: string): number | undefined {
  const pid = postmasterPid(dataDir);
  return pid !== undefined && isProcessAlive(pid) && processCommand(pid).includes('postgres') ? pid : undefined;
}

/** Test clean-up: stops a postmaster still holding DATA_DIR (SIGINT, then SIGKILL), bounded. */
export async function stopPostmaster(dataDir: string): Promise<void> {
  const pid = livePostmaster(dataDir);
  if (pid === undefined) return;
  try { process.kill(pid, 'SIGINT'); } catch { /* gone */ }
  if (await waitUntil(() => !isProcessAlive(pid), 15_000)) return;
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  await waitUntil(() => !isProcessAlive(pid), 5_000);
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
}

// ---------------------------------------------------------------------------
// the server process

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly port: number;
  readonly baseUrl: string;
  /** stdout and stderr so far, interleaved (last 2 MB). */
  output(): string;
  readonly exited: Promise<ExitInfo>;
  isRunning(): boolean;
  /** SIGTERM and wait (bounded) for the exit; throws when it does not exit in time. */
  terminate(timeoutMs?: number): Promise<ExitInfo & { ms: number }>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<ExitInfo>;
}

export interface StartOptions {
  /** DATA_DIR or DATABASE_URL and anything else; wins over the defaults. */
  env: Record<string, string>;
  /** The project folder to run `src/server.ts` of (default: this checkout). */
  cwd?: string;
  /** Default: a free port. */
  port?: number;
  /** Bound for /health to answer 200 (default 90 s: a first start runs initdb). */
  healthTimeoutMs?: number;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) {
    try { c.kill('SIGKILL'); } catch { /* gone */ }
  }
});

/** Only what a server needs from our environment: nothing of Vitest's or a developer's DATABASE_URL. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'TMPDIR', 'LANG', 'TZ', 'EMBEDDED_PG_USER']) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  return env;
}

function spawnServer(cwd: string, port: number, env: Record<string, string>): ServerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd,
    env: {
      ...baseEnv(),
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'warn',
      PRICE_FEED: 'manual',
      RATE_LIMIT_PER_MINUTE: '0',
      RATE_LIMIT_ANON_PER_MINUTE: '0',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let out = '';
  const append = (c: Buffer) => {
    out += c.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
  };
  child.stdout!.on('data', append);
  child.stderr!.on('data', append);
  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = { code, signal };
      running.delete(child);
      resolve(exitInfo);
    });
    child.once('error', (err) => {
      out += `\n[spawn error] ${err.message}\n`;
      exitInfo = { code: -1, signal: null };
      running.delete(child);
      resolve(exitInfo);
    });
  });
  const server: ServerProcess = {
    child,
    pid: child.pid ?? -1,
    port,
    baseUrl: `http://127.0.0.1:${port}`,
    output: () => out,
    exited,
    isRunning: () => exitInfo === undefined,
    async terminate(timeoutMs = 20_000) {
      const started = Date.now();
      if (exitInfo) return { ...exitInfo, ms: 0 };
      child.kill('SIGTERM');
      const r = await Promise.race([exited, sleep(timeoutMs).then(() => undefined)]);
      if (!r) {
        child.kill('SIGKILL');
        await exited;
        throw new Error(`the server did not exit within ${timeoutMs} ms of SIGTERM; output:\n${out.slice(-4000)}`);
      }
      return { ...r, ms: Date.now() - started };
    },
    async kill() {
      if (exitInfo) return exitInfo;
      child.kill('SIGKILL');
      return exited;
    },
  };
  return server;
}

/** Starts the server and waits for /health 200. On failure the process is killed and the error carries its output. */
export async function startServer(opts: StartOptions): Promise<ServerProcess> {
  const cwd = opts.cwd ?? PROJECT_ROOT;
  const healthTimeoutMs = opts.healthTimeoutMs ?? 90_000;
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const server = spawnServer(cwd, port, opts.env);
    const deadline = Date.now() + healthTimeoutMs;
    let last = 'no answer yet';
    for (;;) {
      if (!server.isRunning()) break;
      try {
        const res = await fetch(`${server.baseUrl}/health`, { signal: AbortSignal.timeout(3000) });
        last = `${res.status} ${await res.text()}`;
        if (res.status === 200) return server;
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline) {
        await server.kill();
        throw new Error(`the server did not become healthy within ${healthTimeoutMs} ms (last: ${last}); output:\n${server.output().slice(-4000)}`);
      }
      await sleep(150);
    }
    const exit = await server.exited;
    // Someone took the port between our probe and the server's listen: try another one.
    if (opts.port === undefined && attempt < 3 && /EADDRINUSE/.test(server.output())) continue;
    throw new Error(`the server exited before it was healthy (${exit.code ?? exit.signal}); output:\n${server.output().slice(-4000)}`);
  }
}

// ---------------------------------------------------------------------------
// HTTP over loopback

export interface HttpReply<T = any> {
  status: number;
  body: T;
  raw: string;
  headers: Headers;
}

export interface HttpOptions {
  token?: string;
  key?: string;
  timeoutMs?: number;
}

/** One request; rejects on a network failure (no answer), resolves with any HTTP status. */
export async function http<T = any>(baseUrl: string, method: string, url: string, body?: unknown, o: HttpOptions = {}): Promise<HttpReply<T>> {
  const headers: Record<string, string> = {};
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  if (o.key) headers['idempotency-key'] = o.key;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${baseUrl}${url}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(o.timeoutMs ?? 30_000),
  });
  const raw = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, body: parsed as T, raw, headers: res.headers };
}

export const PASSWORD = 'correct horse battery';

export async function registerVia(baseUrl: string, email: string) {
  const r = await http(baseUrl, 'POST', '/api/v1/auth/register', { email, password: PASSWORD });
  if (r.status !== 201) throw new Error(`register failed: ${r.status} ${r.raw}`);
  return { token: r.body.data.token as string, user: r.body.data.user as { id: string; email: string; accountNumber: string }, email };
}

export async function loginVia(baseUrl: string, email: string, password = PASSWORD): Promise<HttpReply> {
  return http(baseUrl, 'POST', '/api/v1/auth/login', { email, password });
}

// ---------------------------------------------------------------------------
// money as integer cents (never a float)

const MONEY = /^(-?)([0-9]+)\.([0-9]{2})$/;

export function toCents(s: string): bigint {
  const m = MONEY.exec(s);
  if (!m) throw new Error(`not a 2-decimal money string: ${JSON.stringify(s)}`);
  const v = BigInt(m[2]!) * 100n + BigInt(m[3]!);
  return m[1] ? -v : v;
}

export function fromCents(c: bigint): string {
  const neg = c < 0n;
  const a = neg ? -c : c;
  return `${neg ? '-' : ''}${a / 100n}.${(a % 100n).toString().padStart(2, '0')}`;
}
