/**
 * The HTTP load: one wrk process per operation (bench/wrk/flow.lua), all at once, so
 * each operation gets wrk's own latency distribution. wrk is closed-loop: each of
 * its connections sends the next request when the last one answered.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnTracked, stopChild } from './procs.js';

export const FLOW_LUA = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'wrk', 'flow.lua');

export type Op = 'deposit' | 'withdraw' | 'transfer' | 'order_open' | 'order_close' | 'wallet' | 'history';
export const MONEY_OPS: readonly Op[] = ['deposit', 'withdraw', 'transfer', 'order_open', 'order_close'];
export const ALL_OPS: readonly Op[] = [...MONEY_OPS, 'wallet', 'history'];

export interface WrkResult {
  op: Op;
  connections: number;
  durationS: number;
  requests: number;
  ok: number;
  rps: number;
  okRps: number;
  latencyMs: { p50: number; p75: number; p90: number; p95: number; p99: number; p999: number; max: number; mean: number };
  status: Record<string, number>;
  codes: Record<string, number>;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  /** Per epoch second: successful and failed responses. */
  okSecs: Record<string, number>;
  errSecs: Record<string, number>;
  /** order_close: times the list of open orders ran out and started over. */
  wrapped: number;
}

export function findWrk(): string | undefined {
  const r = spawnSync('sh', ['-c', 'command -v wrk'], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

export interface WrkJob {
  op: Op;
  connections: number;
  list: string;
}

interface RawResult {
  duration_us: number;
  requests: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { min: number; max: number; mean: number; stdev: number; pct: Record<string, number> };
  status: Record<string, number>;
  codes: Record<string, number>;
  ok_secs: Record<string, number>;
  err_secs: Record<string, number>;
  issued: number;
  wrapped: number;
}

/** Runs every job at once for `seconds` against `url`; resolves with one result per job. */
export async function runWrk(wrk: string, url: string, jobs: WrkJob[], seconds: number, prefix: string, workDir: string, abort: AbortSignal): Promise<WrkResult[]> {
  fs.mkdirSync(workDir, { recursive: true });
  const runs = jobs.filter((j) => j.connections > 0).map((job) => {
    const out = path.join(workDir, `wrk-${prefix}-${job.op}.json`);
    fs.rmSync(out, { force: true });
    let stderr = '';
    const child = spawnTracked(wrk, ['-t1', `-c${job.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', FLOW_LUA, url], {
      env: { ...process.env, BENCH_OP: job.op, BENCH_LIST: job.list, BENCH_PREFIX: `${prefix}-${job.op}`, BENCH_OUT: out },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr?.on('data', (c: Buffer) => { if (stderr.length < 4000) stderr += c.toString(); });
    const onAbort = () => void stopChild(child, 'SIGINT', 3_000);
    abort.addEventListener('abort', onAbort, { once: true });
    const done = new Promise<WrkResult>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => {
        abort.removeEventListener('abort', onAbort);
        if (!fs.existsSync(out)) return reject(new Error(`wrk (${job.op}) exited ${code} without a result: ${stderr.trim()}`));
        const raw = JSON.parse(fs.readFileSync(out, 'utf8')) as RawResult;
        resolve(toResult(job, raw));
      });
    });
    // wrk stops itself after -d; this bounds a wrk that hangs.
    const guard = setTimeout(() => void stopChild(child, 'SIGKILL', 1_000), (seconds + 30) * 1000);
    return done.finally(() => clearTimeout(guard));
  });
  return Promise.all(runs);
}

function toResult(job: WrkJob, r: RawResult): WrkResult {
  const ms = (us: number | undefined) => Math.round(((us ?? 0) / 1000) * 100) / 100;
  const durationS = r.duration_us / 1e6;
  let ok = 0;
  for (const [s, n] of Object.entries(r.status ?? {})) if (Number(s) >= 200 && Number(s) < 300) ok += n;
  return {
    op: job.op,
    connections: job.connections,
    durationS,
    requests: r.requests,
    ok,
    rps: r.requests / durationS,
    okRps: ok / durationS,
    latencyMs: {
      p50: ms(r.latency_us.pct['50']), p75: ms(r.latency_us.pct['75']), p90: ms(r.latency_us.pct['90']), p95: ms(r.latency_us.pct['95']),
      p99: ms(r.latency_us.pct['99']), p999: ms(r.latency_us.pct['99.9']), max: ms(r.latency_us.max), mean: ms(r.latency_us.mean),
    },
    status: r.status ?? {},
    codes: r.codes ?? {},
    socketErrors: { connect: r.errors.connect, read: r.errors.read, write: r.errors.write, timeout: r.errors.timeout },
    okSecs: r.ok_secs ?? {},
    errSecs: r.err_secs ?? {},
    wrapped: r.wrapped ?? 0,
  };
}

/** Splits `total` connections over the weighted operations (each at least 1). */
export function splitConnections(total: number, weights: Partial<Record<Op, number>>): Partial<Record<Op, number>> {
  const entries = Object.entries(weights).filter(([, w]) => (w ?? 0) > 0) as [Op, number][];
  const sum = entries.reduce((s, [, w]) => s + w, 0);
  const out: Partial<Record<Op, number>> = {};
  let given = 0;
  entries.forEach(([op, w], i) => {
    const n = i === entries.length - 1 ? Math.max(1, total - given) : Math.max(1, Math.round((total * w) / sum));
    out[op] = n;
    given += n;
  });
  return out;
}
