/**
 * Results: the JSON document, a self-contained HTML report (inline SVG charts, no
 * scripts or external files) and the summary table printed at the end.
 */
import type { PgbenchResult } from './pgbench.js';
import type { CpuUse } from './procs.js';
import type { LagSummary } from './sessions.js';
import { MONEY_OPS, type Op, type WrkResult } from './wrk.js';

export interface ApiRun {
  label: string;
  phase: string;
  startedAt: number;
  seconds: number;
  connections: number;
  perOp: WrkResult[];
  /** Successful money-moving responses per second (all money operations together). */
  moneyRps: number;
  /** All responses per second. */
  rps: number;
  worstMoneyP99Ms: number;
  worstMoneyP50Ms: number;
  errors: number;
  cpu?: CpuUse;
}

export interface Pair {
  index: number;
  api: ApiRun;
  pgbench: PgbenchResult;
  ratio: number;
}

export interface ProfileResult {
  op: Op;
  rps: number;
  okRps: number;
  requests: number;
  ok: number;
  latencyMs: WrkResult['latencyMs'];
  /**
   * Top-level statements per operation, BEGIN and COMMIT included. Each is a round trip
   * unless the server batches several in one simple-protocol query (then they count apart).
   */
  statementsPerOp: number | null;
  /** Client→PostgreSQL round trips per operation, counted on the wire (data segments from the server's pool connections). */
  roundTripsPerOp?: number | null;
  /** Statements run inside the server per operation (foreign-key checks, functions). */
  nestedPerOp: number | null;
  commitsPerOp: number | null;
  cpu: CpuUse | undefined;
  top: { query: string; calls: number; perOp: number; meanMs: number; meanPlanMs: number; totalMs: number }[];
}

export interface BenchResult {
  id: string;
  startedAt: string;
  finishedAt?: string;
  command: string;
  machine: Record<string, string | number>;
  config: Record<string, unknown>;
  notes: string[];
  failures: string[];
  seed?: Record<string, unknown>;
  pairsA: Pair[];
  pairsB: Pair[];
  medianRatioA: number | null;
  medianRatioB: number | null;
  profile: ProfileResult[];
  /** pgbench running the deposit's own SQL (bench/sql/*.sql) on the trading database: the database-side ceilings. */
  sqlCeilings: { script: string; description: string; tps: number; transactions?: number; latencyAvgMs: number; failed: number; vsPgbenchN: number | null; cpu?: CpuUse }[];
  sweep: ApiRun[];
  sessions?: {
    requested: number;
    measured: boolean;
    reason?: string;
    workers?: number;
    connected?: number;
    heldAtEnd?: number;
    failed?: number;
    disconnects?: number;
    closeCodes?: Record<string, number>;
    failures?: Record<string, number>;
    connectSeconds?: number;
    lag?: { total: LagSummary; phases: Record<string, LagSummary> };
    series?: { t: number; open: number; p50: number | null; p99: number | null; quotes: number; phase: string }[];
    loadGeneratorRssMb?: number;
  };
  memory?: {
    serverRssBeforeMb: number;
    serverRssAfterMb: number;
    /** (RSS with sessions − RSS just before them) ÷ sessions: V8 may reuse heap freed after the HTTP runs, so this can be low. */
    perSessionKb: number | null;
    /** RSS of the idle server right after start-up. */
    serverRssAtStartMb?: number;
    /** (RSS with sessions − RSS at start-up) ÷ sessions: an upper bound (includes heap grown by the HTTP runs). */
    perSessionVsStartKb?: number | null;
    serverProcesses: number;
    serverFds?: number[];
  };
  invariants?: { ok: boolean; checks: { name: string; ok: boolean; detail: string }[] };
  health?: unknown;
  phases: { name: string; start: number; end: number; cpu?: CpuUse }[];
}

export const median = (xs: number[]): number | null => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const r1 = (x: number) => Math.round(x * 10) / 10;
const nv = (x: number | null) => (x === null ? 'n/a' : Math.round(x * 100) / 100);
const r2 = (x: number) => Math.round(x * 100) / 100;
const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

export const cpuText = (c: CpuUse | undefined) => (c ? `${c.serverPct}/${c.postgresPct}/${c.loadGeneratorPct}/${c.kernelPct ?? '?'}/${c.otherPct}` : '-');
const CPU_HEAD = 'CPU% srv/pg/gen/irq/other';

/** Milliseconds of CPU per operation, by who spent them (`total`: the four together, the noise left out). */
export interface CpuPerOp { server: number; postgres: number; generator: number; kernel: number; total: number }

/**
 * CPU use over a phase as ms of CPU per operation, for `operations` done in it: a percent
 * of one core is 10 ms of CPU a second, over the phase's whole window (`c.seconds`, which
 * includes the moments around the run). Undefined without CPU figures, window or operations.
 */
export function cpuPerOp(c: CpuUse | undefined, operations: number): CpuPerOp | undefined {
  if (!c || !(c.seconds !== undefined && c.seconds > 0) || !(operations > 0)) return undefined;
  const seconds = c.seconds;
  const ms = (pct: number) => Math.round(((pct * 10 * seconds) / operations) * 1000) / 1000;
  return {
    server: ms(c.serverPct), postgres: ms(c.postgresPct), generator: ms(c.loadGeneratorPct), kernel: ms(c.kernelPct),
    total: ms(c.serverPct + c.postgresPct + c.loadGeneratorPct + c.kernelPct),
  };
}

const cpuMsText = (c: CpuPerOp | undefined) => (c ? `${c.server}/${c.postgres}/${c.generator}/${c.kernel} = ${c.total}` : '-');
const CPU_MS_HEAD = 'CPU ms/op srv/pg/gen/irq = total';

/** Successful money-moving responses of an API run (the ratio's numerator). */
const moneyOk = (run: ApiRun) => run.perOp.filter((o) => MONEY_OPS.includes(o.op)).reduce((s, o) => s + o.ok, 0);

/**
 * A pair's CPU per operation: the API's per successful money request (everything the
 * server, PostgreSQL, wrk and the kernel did during the run, reads and errors included,
 * charged to the money requests), pgbench's per transaction, and their quotient. The
 * ratio is that quotient times the CPU the API's run got ÷ the CPU pgbench's got: when both
 * keep the machine busy, the two are the same, and the quotient shows where each side's
 * time per operation goes.
 */
export function pairCpu(p: Pair): { api: CpuPerOp | undefined; pgbench: CpuPerOp | undefined; quotient: number | null } {
  const api = cpuPerOp(p.api.cpu, moneyOk(p.api));
  const pgbench = cpuPerOp(p.pgbench.cpu, p.pgbench.transactions);
  return { api, pgbench, quotient: api && pgbench && api.total > 0 ? Math.round((pgbench.total / api.total) * 100) / 100 : null };
}

const pairCpuRows = (pairs: Pair[]) => pairs.map((p) => {
  const c = pairCpu(p);
  return [p.index, cpuMsText(c.api), cpuMsText(c.pgbench), c.quotient ?? 'n/a', r2(p.ratio)];
});
const PAIR_CPU_HEAD = ['pair', `API per money request: ${CPU_MS_HEAD}`, `pgbench per transaction: ${CPU_MS_HEAD}`, 'pgbench ÷ API CPU per op', 'measured ratio'];

/** A profile row, in the summary and in the HTML alike. */
const profileRow = (p: ProfileResult) => [p.op, r1(p.okRps), p.latencyMs.p50, p.latencyMs.p99, nv(p.roundTripsPerOp ?? null), nv(p.statementsPerOp), nv(p.nestedPerOp), nv(p.commitsPerOp), cpuText(p.cpu), cpuMsText(cpuPerOp(p.cpu, p.requests))];

/** A SQL ceiling's figures after its name (and, in the HTML, its description). */
const ceilingFigures = (c: BenchResult['sqlCeilings'][number]) => [r1(c.tps), c.latencyAvgMs, c.failed, c.vsPgbenchN === null ? 'n/a' : r2(c.vsPgbenchN), cpuText(c.cpu), cpuMsText(cpuPerOp(c.cpu, c.transactions ?? 0))];

// --- summary table ---------------------------------------------------------------------

function table(head: string[], rows: (string | number)[][]): string {
  const cells = [head, ...rows.map((r) => r.map(String))];
  const w = head.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function summaryText(r: BenchResult): string {
  const out: string[] = [];
  out.push(`Bench ${r.id} — ${r.config.users} users, ${r.config.sessions} sessions requested, ${r.config.duration} s per run, ` +
    `${r.config.effectiveWorkers} server process(es) × pool ${r.config.pool} = ${r.config.clients} clients, ${r.config.connections} HTTP connections`);
  for (const [name, pairs, med] of [['(a) no sessions', r.pairsA, r.medianRatioA], ['(b) sessions held', r.pairsB, r.medianRatioB]] as const) {
    if (pairs.length === 0) continue;
    out.push('', `Pairs ${name}: money-moving req/s ÷ pgbench -N tps`);
    out.push(table(['pair', 'API money req/s', 'API p50 ms', 'API p99 ms (worst op)', 'errors', `API ${CPU_HEAD}`, 'pgbench tps', 'pgbench lat ms', `pgbench ${CPU_HEAD}`, 'ratio'],
      pairs.map((p) => [p.index, r1(p.api.moneyRps), p.api.worstMoneyP50Ms, p.api.worstMoneyP99Ms, p.api.errors, cpuText(p.api.cpu), r1(p.pgbench.tps), p.pgbench.latencyAvgMs, cpuText(p.pgbench.cpu), r2(p.ratio)])));
    out.push(`median ratio ${name}: ${med === null ? 'n/a' : r2(med)}`);
    out.push('', `CPU per operation ${name}, ms (when both runs keep the machine busy, the ratio is pgbench's CPU per transaction ÷ the API's per money request):`);
    out.push(table(PAIR_CPU_HEAD, pairCpuRows(pairs)));
  }
  const lastA = r.pairsA.at(-1)?.api ?? r.pairsB.at(-1)?.api;
  if (lastA) {
    out.push('', `Per operation (last pair, ${lastA.label}):`);
    out.push(opTable(lastA.perOp));
  }
  if (r.profile.length) {
    out.push('', 'Profile (one operation at a time; top-level statements per operation from pg_stat_statements, BEGIN/COMMIT included;',
      'statements batched into one simple query are one round trip but count apart; nested = foreign-key checks and function bodies):');
    out.push(table(['op', 'ok req/s', 'p50 ms', 'p99 ms', 'round trips/op', 'statements/op', 'nested stmts/op', 'commits/op', CPU_HEAD, CPU_MS_HEAD],
      r.profile.map(profileRow)));
  }
  if (r.sqlCeilings.length) {
    out.push('', 'Database-side ceilings (pgbench running the deposit\'s SQL on the trading database, same clients):');
    out.push(table(['script', 'tps', 'avg ms', 'failed', '÷ pgbench -N (median of pairs a)', CPU_HEAD, CPU_MS_HEAD],
      r.sqlCeilings.map((c) => [c.script, ...ceilingFigures(c)])));
  }
  if (r.sweep.length) {
    out.push('', 'Rising load (closed loop: rising connection counts stand in for rising rates; full mix incl. reads):');
    out.push(table(['connections', 'money req/s', 'all req/s', 'worst money p50 ms', 'worst money p99 ms', 'errors', CPU_HEAD],
      r.sweep.map((s) => [s.connections, r1(s.moneyRps), r1(s.rps), s.worstMoneyP50Ms, s.worstMoneyP99Ms, s.errors, cpuText(s.cpu)])));
    out.push('', `Per operation (highest load, ${r.sweep.at(-1)!.connections} connections):`);
    out.push(opTable(r.sweep.at(-1)!.perOp));
  }
  const s = r.sessions;
  if (s) {
    out.push('');
    if (!s.measured) out.push(`Sessions: not measured (${s.reason})`);
    else {
      out.push(`Sessions: ${s.connected}/${s.requested} connected in ${s.connectSeconds} s over ${s.workers} load processes; held at end ${s.heldAtEnd}; ` +
        `failed ${s.failed}; disconnects ${s.disconnects}${s.failures && Object.keys(s.failures).length ? ` (failures ${JSON.stringify(s.failures)})` : ''}`);
      if (s.lag) {
        out.push(table(['quote lag ms', 'quotes', 'p50', 'p90', 'p99', 'p99.9', 'max'],
          [['all', s.lag.total.count, s.lag.total.p50, s.lag.total.p90, s.lag.total.p99, s.lag.total.p999, s.lag.total.max],
            ...Object.entries(s.lag.phases).map(([k, v]) => [k, v.count, v.p50, v.p90, v.p99, v.p999, v.max])]));
      }
    }
  }
  if (r.memory) {
    out.push(`Server memory: RSS ${r.memory.serverRssAtStartMb ?? '?'} MB at start, ${r.memory.serverRssBeforeMb} MB before sessions → ${r.memory.serverRssAfterMb} MB with them (${r.memory.serverProcesses} processes): ` +
      `${r.memory.perSessionKb === null ? 'n/a' : `${r.memory.perSessionKb} KB per session`} over the RSS just before, ` +
      `${r.memory.perSessionVsStartKb == null ? 'n/a' : `${r.memory.perSessionVsStartKb} KB`} over the RSS at start (upper bound)`);
  }
  if (r.invariants) {
    out.push('', `Invariants: ${r.invariants.ok ? 'OK' : 'FAILED'}`);
    for (const c of r.invariants.checks) out.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`);
  }
  if (r.notes.length) out.push('', 'Notes:', ...r.notes.map((n) => `  - ${n}`));
  if (r.failures.length) out.push('', 'Failures:', ...r.failures.map((n) => `  - ${n}`));
  return out.join('\n');
}

function opTable(perOp: WrkResult[]): string {
  return table(['op', 'conns', 'ok req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'errors by status/code'],
    perOp.map((o) => [o.op, o.connections, r1(o.okRps), o.latencyMs.p50, o.latencyMs.p95, o.latencyMs.p99, o.latencyMs.max,
      errorText(o)]));
}

function errorText(o: WrkResult): string {
  const parts = Object.entries(o.codes).map(([k, v]) => `${k}×${v}`);
  const se = o.socketErrors;
  if (se.timeout) parts.push(`timeout×${se.timeout}`);
  if (se.connect + se.read + se.write) parts.push(`socket×${se.connect + se.read + se.write}`);
  return parts.join(' ') || '-';
}

// --- HTML -------------------------------------------------------------------------------

interface Series { name: string; color: string; points: [number, number][]; dashed?: boolean }

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563', '#ca8a04'];

function chart(title: string, series: Series[], opts: { xLabel: string; yLabel: string; bands?: { name: string; start: number; end: number }[]; width?: number; height?: number; connect?: boolean }): string {
  const W = opts.width ?? 900;
  const H = opts.height ?? 280;
  const m = { l: 60, r: 16, t: 28, b: 40 };
  const all = series.flatMap((s) => s.points);
  if (all.length === 0) return `<h3>${esc(title)}</h3><p>no data</p>`;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const x0 = Math.min(...xs, ...(opts.bands ?? []).map((b) => b.start));
  const x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(...ys, 1) * 1.08;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - (Math.max(0, y) / y1) * (H - m.t - m.b);
  const parts: string[] = [];
  (opts.bands ?? []).forEach((b, i) => {
    const a = sx(Math.max(b.start, x0));
    const z = sx(Math.min(b.end, x1));
    if (z <= a) return;
    parts.push(`<rect x="${a.toFixed(1)}" y="${m.t}" width="${(z - a).toFixed(1)}" height="${H - m.t - m.b}" fill="${i % 2 ? '#f1f5f9' : '#e2e8f0'}"/>`);
    if (z - a > 6 * b.name.length) parts.push(`<text x="${((a + z) / 2).toFixed(1)}" y="${m.t + 10}" font-size="9" text-anchor="middle" fill="#475569">${esc(b.name)}</text>`);
  });
  for (let i = 0; i <= 4; i++) {
    const y = (y1 / 4) * i;
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#cbd5e1" stroke-width="0.5"/>`);
    parts.push(`<text x="${m.l - 6}" y="${(sy(y) + 3).toFixed(1)}" font-size="10" text-anchor="end">${y >= 100 ? Math.round(y) : r1(y)}</text>`);
  }
  for (let i = 0; i <= 6; i++) {
    const x = x0 + ((x1 - x0) / 6) * i;
    parts.push(`<text x="${sx(x).toFixed(1)}" y="${H - m.b + 14}" font-size="10" text-anchor="middle">${Math.round(x)}</text>`);
  }
  parts.push(`<text x="${(W / 2).toFixed(0)}" y="${H - 6}" font-size="11" text-anchor="middle">${esc(opts.xLabel)}</text>`);
  parts.push(`<text x="12" y="${(H / 2).toFixed(0)}" font-size="11" text-anchor="middle" transform="rotate(-90 12 ${(H / 2).toFixed(0)})">${esc(opts.yLabel)}</text>`);
  series.forEach((s) => {
    const pts = [...s.points].sort((a, b) => a[0] - b[0]);
    // Break the line where points are more than a few seconds apart (between phases).
    let d = '';
    let prev: number | undefined;
    for (const [x, y] of pts) {
      d += `${prev === undefined || (!opts.connect && x - prev > 3 * Math.max(1, (x1 - x0) / 400)) ? 'M' : 'L'}${sx(x).toFixed(1)},${sy(y).toFixed(1)} `;
      prev = x;
    }
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.5"${s.dashed ? ' stroke-dasharray="4 3"' : ''}/>`);
    if (pts.length < 30) for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
  });
  const legend = series.map((s, i) => `<tspan x="${m.l + 8 + (i % 4) * 200}" dy="${i % 4 === 0 && i > 0 ? 12 : 0}" fill="${s.color}">■ ${esc(s.name)}</tspan>`).join('');
  parts.push(`<text x="${m.l + 8}" y="${m.t - 12}" font-size="11">${legend}</text>`);
  return `<h3>${esc(title)}</h3><svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join('')}</svg>`;
}

function htmlTable(head: string[], rows: (string | number)[][]): string {
  return `<table><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(String(c))}</td>`).join('')}</tr>`).join('')}</tbody></table>`;
}

export function html(r: BenchResult): string {
  const t0 = Date.parse(r.startedAt);
  const rel = (ms: number) => (ms - t0) / 1000;
  const bands = r.phases.map((p) => ({ name: p.name, start: rel(p.start), end: rel(p.end) }));
  const apiRuns = [...r.pairsA.map((p) => p.api), ...r.pairsB.map((p) => p.api), ...r.sweep];
  const perSec = new Map<number, number>();
  const errSec = new Map<number, number>();
  for (const run of apiRuns) {
    for (const o of run.perOp) {
      if (o.op === 'wallet' || o.op === 'history') continue;
      for (const [s, n] of Object.entries(o.okSecs)) perSec.set(Number(s), (perSec.get(Number(s)) ?? 0) + n);
      for (const [s, n] of Object.entries(o.errSecs)) errSec.set(Number(s), (errSec.get(Number(s)) ?? 0) + n);
    }
  }
  const pg = [...r.pairsA, ...r.pairsB].flatMap((p) => p.pgbench.progress.map((x) => [rel(p.pgbench.startedAt) + x.t, x.tps] as [number, number]));
  const pgLat = [...r.pairsA, ...r.pairsB].flatMap((p) => p.pgbench.progress.map((x) => [rel(p.pgbench.startedAt) + x.t, x.latMs] as [number, number]));
  const money = [...perSec.entries()].map(([s, n]) => [rel(s * 1000), n] as [number, number]);
  // wrk buckets by whole epoch seconds: the first and last bucket of a run are partial.
  const throughput = chart('Throughput over time', [
    { name: 'API money-moving ok req/s', color: COLORS[0]!, points: money },
    { name: 'API error responses/s', color: COLORS[1]!, points: [...errSec.entries()].map(([s, n]) => [rel(s * 1000), n]) },
    { name: 'pgbench -N tps', color: COLORS[2]!, points: pg },
  ], { xLabel: 'seconds since start', yLabel: 'per second', bands });
  const latPoints = (key: 'worstMoneyP50Ms' | 'worstMoneyP99Ms') => apiRuns.map((a) => [rel(a.startedAt) + a.seconds / 2, a[key]] as [number, number]);
  const latency = chart('Latency over time (API: per run, worst money operation; pgbench: per second average)', [
    { name: 'API p50 ms', color: COLORS[0]!, points: latPoints('worstMoneyP50Ms') },
    { name: 'API p99 ms', color: COLORS[1]!, points: latPoints('worstMoneyP99Ms') },
    { name: 'pgbench avg ms', color: COLORS[2]!, points: pgLat, dashed: true },
  ], { xLabel: 'seconds since start', yLabel: 'ms', bands });
  let sessions = '';
  if (r.sessions?.series?.length) {
    const ser = r.sessions.series;
    sessions = chart('Sessions held', [{ name: 'open sessions', color: COLORS[3]!, points: ser.map((x) => [rel(x.t), x.open]) }], { xLabel: 'seconds since start', yLabel: 'sessions', bands })
      + chart('Quote delivery lag per second', [
        { name: 'lag p50 ms', color: COLORS[0]!, points: ser.filter((x) => x.p50 !== null).map((x) => [rel(x.t), x.p50!]) },
        { name: 'lag p99 ms', color: COLORS[1]!, points: ser.filter((x) => x.p99 !== null).map((x) => [rel(x.t), x.p99!]) },
      ], { xLabel: 'seconds since start', yLabel: 'ms', bands });
  }
  let sweep = '';
  if (r.sweep.length) {
    const ops = [...new Set(r.sweep.flatMap((s) => s.perOp.map((o) => o.op)))];
    sweep = chart('Rising load: throughput by connections', [
      { name: 'money ok req/s', color: COLORS[0]!, points: r.sweep.map((s) => [s.connections, s.moneyRps]) },
      { name: 'all req/s', color: COLORS[6]!, points: r.sweep.map((s) => [s.connections, s.rps]) },
    ], { xLabel: 'HTTP connections', yLabel: 'req/s', connect: true })
      + chart('Rising load: p99 latency by connections', ops.map((op, i) => ({
        name: `${op} p99 ms`, color: COLORS[i % COLORS.length]!,
        points: r.sweep.flatMap((s) => {
          const o = s.perOp.find((x) => x.op === op);
          return o && o.ok > 0 && o.latencyMs.p99 > 0 ? [[s.connections, o.latencyMs.p99] as [number, number]] : [];
        }),
      })), { xLabel: 'HTTP connections', yLabel: 'ms', connect: true });
  }
  const pairRows = (pairs: Pair[]) => pairs.map((p) => [p.index, r1(p.api.moneyRps), p.api.worstMoneyP50Ms, p.api.worstMoneyP99Ms, p.api.errors, cpuText(p.api.cpu), r1(p.pgbench.tps), p.pgbench.latencyAvgMs, cpuText(p.pgbench.cpu), r2(p.ratio)]);
  const pairHead = ['pair', 'API money req/s', 'API p50 ms (worst op)', 'API p99 ms (worst op)', 'errors', `API ${CPU_HEAD}`, 'pgbench tps', 'pgbench avg ms', `pgbench ${CPU_HEAD}`, 'ratio'];
  const opRows = (perOp: WrkResult[]) => perOp.map((o) => [o.op, o.connections, r1(o.okRps), o.latencyMs.p50, o.latencyMs.p95, o.latencyMs.p99, o.latencyMs.max, errorText(o)]);
  const opHead = ['operation', 'connections', 'ok req/s', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms', 'errors by status/code'];
  const body = [
    `<h1>Bench ${esc(r.id)}</h1>`,
    `<p>${esc(r.command)}<br>started ${esc(r.startedAt)}, finished ${esc(r.finishedAt ?? '')}</p>`,
    htmlTable(['machine', ''], Object.entries(r.machine).map(([k, v]) => [k, v])),
    htmlTable(['configuration', ''], Object.entries(r.config).map(([k, v]) => [k, typeof v === 'object' ? JSON.stringify(v) : String(v)])),
    `<h2>Ratio: money-moving requests/s ÷ pgbench -N tps</h2>`,
    `<p><b>(a) no sessions: median ${r.medianRatioA === null ? 'n/a' : r2(r.medianRatioA)}</b>; <b>(b) sessions held: median ${r.medianRatioB === null ? 'n/a' : r2(r.medianRatioB)}</b></p>`,
    r.pairsA.length ? `<h3>(a) no sessions</h3>${htmlTable(pairHead, pairRows(r.pairsA))}` : '',
    r.pairsB.length ? `<h3>(b) sessions held</h3>${htmlTable(pairHead, pairRows(r.pairsB))}` : '',
    `<p>CPU columns: percent of one core used during the run by the server processes / PostgreSQL / the load generators (wrk, pgbench, session processes, the bench) / interrupts, soft interrupts and steal (loopback TCP work is charged there, to no process) / everything else on the machine (other users: the noise of a shared machine).</p>`,
    r.pairsA.length || r.pairsB.length ? `<h3>CPU per operation</h3><p>The same CPU figures as milliseconds of CPU per successful money request of the API (everything done during the run, reads and errors included, charged to them) and per pgbench transaction. Each side's rate is the CPU it got divided by its CPU per operation; when both runs keep the machine busy, the ratio is pgbench's CPU per transaction ÷ the API's per money request, and this table shows where each side's time goes.</p>` : '',
    ...([['(a)', r.pairsA], ['(b)', r.pairsB]] as const).map(([tag, pairs]) => (pairs.length ? htmlTable([`${tag} ${PAIR_CPU_HEAD[0]}`, ...PAIR_CPU_HEAD.slice(1)], pairCpuRows(pairs)) : '')),
    throughput, latency,
    ...[...r.pairsA, ...r.pairsB].map((p) => `<h3>Per operation: ${esc(p.api.label)}</h3>${htmlTable(opHead, opRows(p.api.perOp))}`),
    r.profile.length ? `<h2>Profile: statements per operation</h2><p>Statements = top-level statements per operation (pg_stat_statements, BEGIN/COMMIT included, background work of the server included), per idempotency-key claim. Each is a round trip unless several are sent in one simple-protocol query. Round trips are counted on the wire: data-carrying TCP segments the server's pool connections sent to PostgreSQL (ss -tin data_segs_out), per claim.</p>${htmlTable(['operation', 'ok req/s', 'p50 ms', 'p99 ms', 'round trips/op', 'statements/op', 'nested statements/op', 'commits/op', CPU_HEAD, CPU_MS_HEAD],
      r.profile.map(profileRow))}` : '',
    ...r.profile.map((p) => `<h3>${esc(p.op)}: top statements</h3>${htmlTable(['calls/op', 'mean ms', 'mean plan ms', 'total ms', 'statement'], p.top.map((t) => [r2(t.perOp), Math.round(t.meanMs * 1000) / 1000, Math.round(t.meanPlanMs * 1000) / 1000, Math.round(t.totalMs), t.query.slice(0, 300)]))}`),
    r.sqlCeilings.length ? `<h2>Database-side ceilings</h2><p>pgbench running the deposit's own SQL against the trading database with the same clients: what the database allows for the current statement sequence and for one statement per deposit.</p>${htmlTable(['script', 'description', 'tps', 'avg ms', 'failed', '÷ pgbench -N', CPU_HEAD, CPU_MS_HEAD], r.sqlCeilings.map((c) => [c.script, c.description, ...ceilingFigures(c)]))}` : '',
    r.sweep.length ? `<h2>Rising load</h2><p>wrk is closed-loop and wrk2 is not in Debian's archive, so rising connection counts stand in for rising rates.</p>${htmlTable(['connections', 'money req/s', 'all req/s', 'worst money p50 ms', 'worst money p99 ms', 'errors', CPU_HEAD], r.sweep.map((s) => [s.connections, r1(s.moneyRps), r1(s.rps), s.worstMoneyP50Ms, s.worstMoneyP99Ms, s.errors, cpuText(s.cpu)]))}` : '',
    sweep,
    ...r.sweep.map((s) => `<h3>Per operation: ${esc(s.label)}</h3>${htmlTable(opHead, opRows(s.perOp))}`),
    r.sessions ? `<h2>Sessions</h2>${r.sessions.measured ? htmlTable(['', ''], [
      ['requested', r.sessions.requested], ['connected', r.sessions.connected ?? 0], ['held at end', r.sessions.heldAtEnd ?? 0],
      ['failed', r.sessions.failed ?? 0], ['disconnects', r.sessions.disconnects ?? 0], ['load processes', r.sessions.workers ?? 0],
      ['connect time s', r.sessions.connectSeconds ?? 0], ['failures', JSON.stringify(r.sessions.failures ?? {})], ['close codes', JSON.stringify(r.sessions.closeCodes ?? {})],
      ['load generator RSS MB', r.sessions.loadGeneratorRssMb ?? 0],
    ]) + (r.sessions.lag ? htmlTable(['quote lag ms', 'quotes', 'p50', 'p90', 'p99', 'p99.9', 'max'], [
      ['all', r.sessions.lag.total.count, r.sessions.lag.total.p50, r.sessions.lag.total.p90, r.sessions.lag.total.p99, r.sessions.lag.total.p999, r.sessions.lag.total.max],
      ...Object.entries(r.sessions.lag.phases).map(([k, v]) => [k, v.count, v.p50, v.p90, v.p99, v.p999, v.max]),
    ]) : '') : `<p>not measured: ${esc(r.sessions.reason ?? '')}</p>`}` : '',
    sessions,
    r.memory ? `<h2>Server memory</h2>${htmlTable(['', ''], [['RSS at start MB', r.memory.serverRssAtStartMb ?? 'n/a'], ['RSS before sessions MB', r.memory.serverRssBeforeMb], ['RSS with sessions MB', r.memory.serverRssAfterMb], ['per session KB (vs just before)', r.memory.perSessionKb ?? 'n/a'], ['per session KB (vs start, upper bound)', r.memory.perSessionVsStartKb ?? 'n/a'], ['server processes', r.memory.serverProcesses], ['server open fds', JSON.stringify(r.memory.serverFds ?? [])]])}` : '',
    r.invariants ? `<h2>Invariants: ${r.invariants.ok ? 'OK' : 'FAILED'}</h2>${htmlTable(['check', 'ok', 'detail'], r.invariants.checks.map((c) => [c.name, c.ok ? 'ok' : 'FAIL', c.detail]))}` : '',
    r.notes.length ? `<h2>Notes</h2><ul>${r.notes.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : '',
    r.failures.length ? `<h2>Failures</h2><ul>${r.failures.map((n) => `<li>${esc(n)}</li>`).join('')}</ul>` : '',
  ].join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>Bench ${esc(r.id)}</title><style>
body{font-family:sans-serif;max-width:960px;margin:24px auto;color:#0f172a}table{border-collapse:collapse;margin:8px 0 16px}
td,th{border:1px solid #cbd5e1;padding:3px 8px;font-size:13px;text-align:right}td:first-child,th:first-child{text-align:left}
h3{margin-top:24px}</style></head><body>${body}</body></html>`;
}
