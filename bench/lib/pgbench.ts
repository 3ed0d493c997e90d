/**
 * The baseline: PostgreSQL's own pgbench, TPC-B-like without the branch/teller
 * updates (-N: one balance update, one read, one history insert), at scale 1 in its
 * own database on the bench's PostgreSQL.
 */
import { spawnSync } from 'node:child_process';
import { spawnTracked, stopChild } from './procs.js';

export interface PgbenchResult {
  clients: number;
  durationS: number;
  tps: number;
  transactions: number;
  failed: number;
  latencyAvgMs: number;
  latencyStddevMs: number | undefined;
  /** Per second of the run (from -P 1): tps and average latency. */
  progress: { t: number; tps: number; latMs: number }[];
  startedAt: number;
  cpu?: import('./procs.js').CpuUse;
}

export function findPgbench(): { path: string; version: string } | undefined {
  const r = spawnSync('sh', ['-c', 'command -v pgbench'], { encoding: 'utf8' });
  const p = r.stdout.trim();
  if (r.status !== 0 || !p) return undefined;
  const v = spawnSync(p, ['--version'], { encoding: 'utf8' });
  return { path: p, version: v.stdout.trim() };
}

function pgEnv(port: number, password: string, db: string): NodeJS.ProcessEnv {
  return { ...process.env, PGHOST: '127.0.0.1', PGPORT: String(port), PGUSER: 'postgres', PGPASSWORD: password, PGDATABASE: db };
}

export async function pgbenchInit(bin: string, port: number, password: string, db: string): Promise<void> {
  const child = spawnTracked(bin, ['-i', '-s', '1', '-q'], { env: pgEnv(port, password, db), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`pgbench -i failed (exit ${code}): ${out.trim().split('\n').slice(-3).join(' | ')}`);
}

export async function pgbenchRun(bin: string, port: number, password: string, db: string, clients: number, seconds: number, abort: AbortSignal, script: string[] = ['-N']): Promise<PgbenchResult> {
  const jobs = Math.min(2, clients);
  const startedAt = Date.now();
  const child = spawnTracked(bin, [...script, '-c', String(clients), '-j', String(jobs), '-T', String(seconds), '-P', '1'], {
    env: pgEnv(port, password, db), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  const onAbort = () => void stopChild(child, 'SIGINT', 3_000);
  abort.addEventListener('abort', onAbort, { once: true });
  const guard = setTimeout(() => void stopChild(child, 'SIGKILL', 1_000), (seconds + 60) * 1000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(guard);
  abort.removeEventListener('abort', onAbort);
  const tps = /tps = ([0-9.]+) \(without initial connection time\)/.exec(out);
  const processed = /number of transactions actually processed: ([0-9]+)/.exec(out);
  // pgbench's -T clock runs while its clients connect: a short run on a busy machine may finish none.
  if (code === 0 && !tps && processed?.[1] === '0') {
    throw new Error(`pgbench finished no transaction in ${seconds} s (its ${clients} clients were still connecting): use a longer --duration`);
  }
  if (code !== 0 || !tps) throw new Error(`pgbench failed (exit ${code}): ${out.trim().split('\n').slice(-4).join(' | ')}`);
  const num = (re: RegExp) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : undefined;
  };
  const progress: PgbenchResult['progress'] = [];
  for (const m of out.matchAll(/progress: ([0-9.]+) s, ([0-9.]+) tps, lat ([0-9.]+) ms/g)) {
    progress.push({ t: Number(m[1]), tps: Number(m[2]), latMs: Number(m[3]) });
  }
  return {
    clients,
    durationS: seconds,
    tps: Number(tps[1]),
    transactions: num(/number of transactions actually processed: ([0-9]+)/) ?? 0,
    failed: num(/number of failed transactions: ([0-9]+)/) ?? 0,
    latencyAvgMs: num(/latency average = ([0-9.]+) ms/) ?? 0,
    latencyStddevMs: num(/latency stddev = ([0-9.]+) ms/),
    progress,
    startedAt,
  };
}
