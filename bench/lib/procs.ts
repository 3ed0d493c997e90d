/**
 * Child processes the bench starts, and their clean-up: every child is registered
 * here, so the end of the run and Ctrl-C stop exactly what the bench started (by
 * pid, never by name). Waits are bounded.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';

const children = new Set<ChildProcess>();
const cleanups: (() => Promise<void> | void)[] = [];

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  return track(spawn(cmd, args, opts));
}

/** Registers a clean-up step run (last registered first) by cleanupAll. */
export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Sends `signal`, waits up to `graceMs`, then SIGKILL; resolves when the child is gone. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    child.kill(signal);
  } catch {
    return;
  }
  const timedOut = await Promise.race([exited.then(() => false), sleep(graceMs).then(() => true)]);
  if (timedOut && isRunning(child)) {
    try {
      child.kill('SIGKILL');
    } catch {
      /* gone */
    }
    await Promise.race([exited, sleep(5_000)]);
  }
}

let cleaning: Promise<void> | undefined;

/** Runs the clean-ups, then stops any child still running. Idempotent. */
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`clean-up step failed: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
    await Promise.all([...children].map((c) => stopChild(c, 'SIGTERM', 5_000)));
  })();
  return cleaning;
}

// --- process tree and memory ------------------------------------------------------

function readPpid(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[1]);
  } catch {
    return undefined;
  }
}

/** The pid and every descendant's pid. */
export function processTree(root: number): number[] {
  const byParent = new Map<number, number[]>();
  for (const name of fs.readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(name)) continue;
    const pid = Number(name);
    const ppid = readPpid(pid);
    if (ppid === undefined) continue;
    const list = byParent.get(ppid) ?? [];
    list.push(pid);
    byParent.set(ppid, list);
  }
  const out: number[] = [];
  const stack = [root];
  while (stack.length) {
    const pid = stack.pop()!;
    out.push(pid);
    stack.push(...(byParent.get(pid) ?? []));
  }
  return out;
}

export function commandOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** Resident set size of one process in bytes (0 when gone). */
export function rssOf(pid: number): number {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+([0-9]+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** The Node processes of a process tree (the server's primary and workers), without helper binaries such as esbuild. */
export function nodeProcesses(root: number): number[] {
  return processTree(root).filter((pid) => {
    const cmd = commandOf(pid);
    return /(^|\/)node(\s|$)/.test(cmd.split(' ')[0] ?? '') || cmd.startsWith('node ');
  });
}

/** Total CPU time (user + system) of a process in seconds. */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(rest[11]) + Number(rest[12]);
    return ticks / 100;
  } catch {
    return 0;
  }
}

/** Open file descriptors of a process. */
export function openFds(pid: number): number {
  try {
    return fs.readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

// --- CPU accounting per phase ---------------------------------------------------------

function statTicks(pid: number): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime stime cutime cstime: a reaped child's time moves into its parent's c-times.
    return Number(rest[11]) + Number(rest[12]) + Number(rest[13]) + Number(rest[14]);
  } catch {
    return 0;
  }
}

function machineTicks(): { busy: number; total: number; kernel: number } {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = v;
  return { busy: user + nice + system + irq + softirq + steal, total: user + nice + system + idle + iowait + irq + softirq + steal, kernel: irq + softirq + steal };
}

export interface CpuSnapshot {
  at: number;
  machine: { busy: number; total: number; kernel: number };
  bench: number;
  server: number;
  postgres: number;
}

export interface CpuRoots {
  server?: number;
  postgres?: number;
}

const treeTicks = (root: number | undefined) => (root === undefined ? 0 : processTree(root).reduce((s, pid) => s + statTicks(pid), 0));

export function cpuSnapshot(roots: CpuRoots): CpuSnapshot {
  return { at: Date.now(), machine: machineTicks(), bench: treeTicks(process.pid), server: treeTicks(roots.server), postgres: treeTicks(roots.postgres) };
}

export interface CpuUse {
  /** Percent of one core (200 = both cores of a 2-core machine busy). */
  machinePct: number;
  serverPct: number;
  postgresPct: number;
  /** The bench itself, wrk, pgbench and the session processes. */
  loadGeneratorPct: number;
  /** Interrupts, soft interrupts (loopback TCP is processed there) and steal: no process is charged for them. */
  kernelPct: number;
  /** Everything else on the machine (other users' processes): the noise. */
  otherPct: number;
  /** Length of the window the percentages are averaged over (a phase: its run and what surrounds it). */
  seconds?: number;
}

export function cpuBetween(a: CpuSnapshot, b: CpuSnapshot, cores: number): CpuUse {
  const totalTicks = b.machine.total - a.machine.total;
  const secs = (b.at - a.at) / 1000;
  // /proc/stat counts every core; per-process ticks are USER_HZ (100 per second).
  const pctOfCore = (ticks: number) => (secs > 0 ? Math.round((ticks / 100 / secs) * 1000) / 10 : 0);
  const machinePct = totalTicks > 0 ? Math.round(((b.machine.busy - a.machine.busy) / totalTicks) * cores * 1000) / 10 : 0;
  const server = b.server - a.server;
  const postgres = b.postgres - a.postgres;
  const gen = Math.max(0, b.bench - a.bench - server - postgres);
  const ours = pctOfCore(server) + pctOfCore(postgres) + pctOfCore(gen);
  const kernelPct = totalTicks > 0 ? Math.round(((b.machine.kernel - a.machine.kernel) / totalTicks) * cores * 1000) / 10 : 0;
  return {
    machinePct,
    serverPct: pctOfCore(server),
    postgresPct: pctOfCore(postgres),
    loadGeneratorPct: pctOfCore(gen),
    kernelPct,
    otherPct: Math.max(0, Math.round((machinePct - ours - kernelPct) * 10) / 10),
    seconds: secs,
  };
}

// --- round trips to PostgreSQL, counted on the wire ------------------------------------

/**
 * Data-carrying TCP segments each established connection from `pids` to `port` has sent
 * (`ss -tin` data_segs_out), keyed by local address. node-postgres corks every query, so
 * one query (or one batch of statements sent together) is one segment on loopback: the
 * difference of two snapshots counts client→PostgreSQL round trips.
 */
export function dataSegmentsTo(port: number, pids: Set<number>): Map<string, number> {
  const r = spawnSync('ss', ['-tinpH', 'state', 'established', `( dport = :${port} )`], { encoding: 'utf8' });
  const out = new Map<string, number>();
  if (r.status !== 0) return out;
  const lines = r.stdout.split('\n');
  for (let i = 0; i < lines.length - 1; i++) {
    const head = lines[i]!;
    const pid = /pid=([0-9]+)/.exec(head);
    const local = head.trim().split(/\s+/)[2];
    if (!pid || !local || !pids.has(Number(pid[1]))) continue;
    const segs = /data_segs_out:([0-9]+)/.exec(lines[i + 1] ?? '');
    out.set(local, segs ? Number(segs[1]) : 0);
  }
  return out;
}

export function segmentsBetween(before: Map<string, number>, after: Map<string, number>): number {
  let n = 0;
  for (const [k, v] of after) n += v - (before.get(k) ?? 0);
  return n;
}
