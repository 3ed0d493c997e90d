/**
 * npm run bench — the whole scenario of issue 8 on one machine, measured the way
 * DESIGN.md's performance section says:
 *
 *  1. its own embedded PostgreSQL (pg_stat_statements loaded), migrations, and a SQL
 *     seed of N users with funded live and demo wallets (balanced ledger entries) and
 *     open orders;
 *  2. the real server (node --import tsx src/server.ts, WORKERS processes) with
 *     limits off and a fixed JWT_SECRET, so tokens are minted here;
 *  3. pairs A B A B …: A = the money-moving HTTP flow driven by wrk (one wrk per
 *     operation, unique Idempotency-Keys), B = pgbench -N at scale 1 in its own
 *     database with as many clients as the server has pool connections; the ratio
 *     money req/s ÷ pgbench tps per pair and its median, (a) without sessions and
 *     (b) while the sessions are held;
 *  4. a light profile: each money operation alone, statements per operation from
 *     pg_stat_statements;
 *  5. WebSocket sessions from several load processes on their own loopback source
 *     addresses, held for the rest of the run: sessions held, disconnects, quote lag;
 *  6. rising load (rising connection counts: wrk is closed-loop and wrk2 is not in
 *     Debian), the full mix with reads;
 *  7. invariants (API reconciliation, SQL checks, idempotency), results as JSON and
 *     HTML under bench/results/, a summary table; everything started is stopped at
 *     the end and on Ctrl-C.
 *
 * Flags: --users N --sessions N --duration S --workers N --pairs N --rates a,b,c
 *        --pool N --connections N --orders N --referred PERCENT --warmup S --profile-seconds S
 *        --mix deposit=4,withdraw=2,transfer=2,order_open=1,order_close=1
 *        --server-env K=V (repeatable) --pg K=V (repeatable) --tsx --keep-data
 *        --no-profile --no-sweep --no-sessions --session-concurrency N --cpu-prof
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { countRows, migrate, openOrders, resetStatements, seed, sqlInvariants, startPostgres, topStatements, waitQuiet, withClient, type PgHandle } from './lib/db.js';
import { findPgbench, pgbenchInit, pgbenchRun, type PgbenchResult } from './lib/pgbench.js';
import { cleanupAll, commandOf, cpuBetween, cpuSnapshot, dataSegmentsTo, nodeProcesses, segmentsBetween, type CpuRoots, onCleanup, openFds, rssOf, sleep, spawnTracked, stopChild } from './lib/procs.js';
import { html, median, summaryText, type ApiRun, type BenchResult, type Pair, type ProfileResult } from './lib/report.js';
import { SessionFleet } from './lib/sessions.js';
import { textToCents } from '../src/modules/trading/risk.book.js';
import { mintToken } from './lib/tokens.js';
import { ALL_OPS, findWrk, MONEY_OPS, runWrk, splitConnections, type Op, type WrkJob, type WrkResult } from './lib/wrk.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

// --- options -----------------------------------------------------------------------------

const { values: argv } = parseArgs({
  options: {
    users: { type: 'string', default: '100000' },
    sessions: { type: 'string', default: '33000' },
    duration: { type: 'string', default: '30' },
    workers: { type: 'string', default: '2' },
    pairs: { type: 'string', default: '3' },
    rates: { type: 'string' },
    pool: { type: 'string', default: '50' },
    connections: { type: 'string' },
    orders: { type: 'string' },
    referred: { type: 'string', default: '0' },
    warmup: { type: 'string', default: '20' },
    'profile-seconds': { type: 'string' },
    mix: { type: 'string', default: 'deposit=4,withdraw=2,transfer=2,order_open=1,order_close=1' },
    'read-mix': { type: 'string', default: 'wallet=1,history=1' },
    'server-env': { type: 'string', multiple: true, default: [] },
    pg: { type: 'string', multiple: true, default: [] },
    'session-concurrency': { type: 'string', default: '64' },
    'sessions-per-process': { type: 'string', default: '11000' },
    tsx: { type: 'boolean', default: false },
    'keep-data': { type: 'boolean', default: false },
    'no-profile': { type: 'boolean', default: false },
    'no-sweep': { type: 'boolean', default: false },
    'no-sessions': { type: 'boolean', default: false },
    'no-sql-ceiling': { type: 'boolean', default: false },
    'cpu-prof': { type: 'boolean', default: false },
    nice: { type: 'string', default: '0' },
    help: { type: 'boolean', default: false },
  },
  allowPositionals: false,
});

if (argv.help) {
  const doc = fs.readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]!;
  process.stdout.write(`${doc.replace(/^\/\*\*\n?/, '').replace(/^ \* ?/gm, '')}\n`);
  process.exit(0);
}

const int = (name: string, v: string | undefined, min = 0): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    process.stderr.write(`--${name} must be an integer ≥ ${min} (got ${v})\n`);
    process.exit(2);
  }
  return n;
};
const kv = (list: string[], what: string): Record<string, string> => Object.fromEntries(list.map((s) => {
  const i = s.indexOf('=');
  if (i <= 0) {
    process.stderr.write(`${what} takes K=V (got ${s})\n`);
    process.exit(2);
  }
  return [s.slice(0, i), s.slice(i + 1)];
}));
const weights = (text: string): Partial<Record<Op, number>> => {
  const out: Partial<Record<Op, number>> = {};
  for (const [k, v] of Object.entries(kv(text.split(',').filter(Boolean), '--mix'))) {
    if (!(ALL_OPS as readonly string[]).includes(k)) {
      process.stderr.write(`unknown operation in mix: ${k} (known: ${ALL_OPS.join(', ')})\n`);
      process.exit(2);
    }
    out[k as Op] = Number(v);
  }
  return out;
};

const USERS = int('users', argv.users, 2);
const SESSIONS = argv['no-sessions'] ? 0 : Math.min(int('sessions', argv.sessions), USERS);
const DURATION = int('duration', argv.duration, 1);
const WORKERS = int('workers', argv.workers, 1);
const PAIRS = int('pairs', argv.pairs, 0);
const POOL = int('pool', argv.pool, 1);
const WARMUP = int('warmup', argv.warmup);
const PROFILE_S = int('profile-seconds', argv['profile-seconds'] ?? String(Math.max(3, Math.min(10, Math.round(DURATION / 2)))), 1);
const ORDERS = int('orders', argv.orders ?? String(Math.ceil(USERS / 2)));
const REFERRED = int('referred', argv.referred);
if (REFERRED > 100) {
  process.stderr.write(`--referred is a percentage, 0..100 (got ${REFERRED})\n`);
  process.exit(2);
}
const SESSION_CONCURRENCY = int('session-concurrency', argv['session-concurrency'], 1);
const PER_PROCESS = Math.min(14_000, int('sessions-per-process', argv['sessions-per-process'], 100));
const MONEY_MIX = weights(argv.mix!);
const READ_MIX = weights(argv['read-mix']!);
const SERVER_ENV = kv(argv['server-env'] ?? [], '--server-env');
const PG_SETTINGS = kv(argv.pg ?? [], '--pg');
const NICE = Number(argv.nice);
if (!Number.isInteger(NICE) || NICE < -20 || NICE > 19) {
  process.stderr.write(`--nice must be an integer in -20..19 (got ${argv.nice})\n`);
  process.exit(2);
}
// Every process the bench starts (server, PostgreSQL, wrk, pgbench, session processes)
// inherits this priority: on a shared machine a negative value keeps other users'
// processes from starving the single-threaded server more than pgbench's many backends.
if (NICE !== 0) os.setPriority(NICE);

// --- run state ----------------------------------------------------------------------------

const id = new Date().toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);
const workDir = path.join(ROOT, 'bench', '.data', `run-${id}`);
const abort = new AbortController();
const result: BenchResult = {
  id,
  startedAt: new Date().toISOString(),
  command: `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim(),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
  },
  config: {},
  notes: [],
  failures: [],
  pairsA: [],
  pairsB: [],
  medianRatioA: null,
  medianRatioB: null,
  profile: [],
  sqlCeilings: [],
  sweep: [],
  phases: [],
};

// --- progress -----------------------------------------------------------------------------

const multibar = new cliProgress.MultiBar({
  format: ' {bar} {percentage}% | {elapsed}s/{est}s | {phase} | {info}',
  hideCursor: true,
  clearOnComplete: false,
  stopOnComplete: false,
  noTTYOutput: true,
  notTTYSchedule: 15_000,
  stream: process.stderr,
}, cliProgress.Presets.shades_classic);
const t0 = Date.now();
let estimate = 60;
const bar = multibar.create(estimate, 0, { phase: 'starting', info: '', elapsed: 0, est: estimate });
let phase = 'starting';
let info = '';
const progressTimer = setInterval(() => {
  const elapsed = Math.round((Date.now() - t0) / 1000);
  if (elapsed >= estimate) estimate = elapsed + 10;
  bar.setTotal(estimate);
  bar.update(elapsed, { phase, info, elapsed, est: estimate });
}, 1000);
const log = (msg: string) => multibar.log(`${msg}\n`);
const setPhase = (p: string, i = '') => {
  phase = p;
  info = i;
};

const cpuRoots: CpuRoots = {};

async function timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  const before = cpuSnapshot(cpuRoots);
  setPhase(name);
  try {
    return await fn();
  } finally {
    result.phases.push({ name, start, end: Date.now(), cpu: cpuBetween(before, cpuSnapshot(cpuRoots), os.cpus().length) });
  }
}

const cpuOf = (name: string) => [...result.phases].reverse().find((p) => p.name === name)?.cpu;

// --- clean-up and signals -----------------------------------------------------------------

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) return;
    interrupted = true;
    log(`${sig}: stopping everything the bench started…`);
    abort.abort();
    void finish(130);
  });
}

let finishing: Promise<void> | undefined;
function finish(code: number): Promise<void> {
  finishing ??= (async () => {
    clearInterval(progressTimer);
    try {
      await cleanupAll();
      result.failures.push('interrupted: partial results');
      const files = writeResults();
      process.stderr.write(`partial results: ${files.json}\n`);
    } finally {
      multibar.stop();
      process.exit(code);
    }
  })();
  return finishing;
}

// --- the server ----------------------------------------------------------------------------

interface Server {
  pid: number;
  url: string;
  wsUrl: string;
  processes: () => number[];
}

async function startServer(pgh: PgHandle, jwtSecret: string, admin: { email: string; password: string }, port: number): Promise<Server> {
  const logFile = path.join(workDir, 'server.log');
  const out = fs.openSync(logFile, 'a');
  // The compiled server, as `npm start` runs it (built at the bench's start), or the sources through tsx.
  const entry = argv.tsx ? ['--import', 'tsx', path.join(ROOT, 'src', 'server.ts')] : [path.join(ROOT, 'dist', 'server.js')];
  const prof = argv['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${path.join(RESULTS, `prof-${id}`)}`] : [];
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: pgh.tradingUrl,
    JWT_SECRET: jwtSecret,
    JWT_TTL: '24h',
    ADMIN_EMAIL: admin.email,
    ADMIN_PASSWORD: admin.password,
    RATE_LIMIT_PER_MINUTE: '0',
    RATE_LIMIT_ANON_PER_MINUTE: '0',
    MAX_CONNECTIONS_PER_IP: '0',
    LOG_LEVEL: 'warn',
    LOG_PRETTY: '0',
    PRICE_FEED: 'simulated',
    WORKERS: String(WORKERS),
    DB_POOL_MAX: String(POOL),
    // Connections kept open while the API idles during pgbench's runs: closed after 10 s
    // idle (the default), each pair's API run began by opening them again (new backends,
    // authentication, statements prepared anew) and ran slower for its first seconds, where
    // pgbench's figure leaves its connection set-up out (bench/FINDINGS.md, sixth round).
    DB_POOL_MIN: String(Math.min(POOL, Number(SERVER_ENV.DB_POOL_MAX ?? POOL) || POOL)),
    ...SERVER_ENV,
  };
  delete env.LOG_FILE;
  const child = spawnTracked(process.execPath, [...prof, ...entry], { cwd: ROOT, env, stdio: ['ignore', out, out] });
  fs.closeSync(out);
  onCleanup(async () => {
    await stopChild(child, 'SIGTERM', 25_000);
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(`the server exited (${child.exitCode}) during start-up: ${fs.readFileSync(logFile, 'utf8').trim().split('\n').slice(-5).join(' | ')}`);
    }
    try {
      const r = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      if (r.status === 200) break;
    } catch {
      /* not yet */
    }
    if (Date.now() > deadline) throw new Error('the server did not answer /health within 180 s');
    await sleep(500);
  }
  const procs = () => nodeProcesses(child.pid!);
  // With WORKERS > 1 the first worker may answer before the others listen.
  const want = WORKERS > 1 ? WORKERS + 1 : 1;
  for (let i = 0; i < 60 && procs().length < want; i++) await sleep(500);
  await sleep(WORKERS > 1 ? 3000 : 500);
  return { pid: child.pid!, url, wsUrl: `ws://127.0.0.1:${port}/api/v1/stream`, processes: procs };
}

const serverRss = (s: Server) => s.processes().reduce((sum, pid) => sum + rssOf(pid), 0);

async function api<T>(s: Server, method: string, p: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: T; headers: Headers }> {
  const r = await fetch(`${s.url}${p}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await r.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = { text };
  }
  return { status: r.status, json: json as T, headers: r.headers };
}

// --- main ----------------------------------------------------------------------------------

async function main() {
  const wrk = findWrk();
  if (!wrk) {
    process.stderr.write('wrk is not on PATH. Install Debian\'s package: apt-get install -y wrk (as root; sudo otherwise)\n');
    await finish(1);
    return;
  }
  const pgbench = findPgbench();
  if (!pgbench) {
    result.notes.push('pgbench is not on PATH: install Debian\'s postgresql-client (apt-get install -y postgresql-client); the ratio is omitted');
  }
  result.machine.wrk = 'wrk 4.1.0 (Debian)';
  if (pgbench) result.machine.pgbench = pgbench.version;
  fs.mkdirSync(workDir, { recursive: true });
  fs.mkdirSync(RESULTS, { recursive: true });
  if (!argv['keep-data']) onCleanup(() => fs.rmSync(workDir, { recursive: true, force: true }));

  // 1. PostgreSQL, schema, seed
  const pgh = await timed('postgres', async () => {
    const maxConnections = WORKERS * POOL + WORKERS * 4 + 100;
    const handle = await startPostgres(path.join(workDir, 'pg'), maxConnections, PG_SETTINGS, (m) => log(`  [pg] ${m}`));
    onCleanup(() => handle.embedded.stop());
    cpuRoots.postgres = Number(fs.readFileSync(path.join(handle.embedded.pgData, 'postmaster.pid'), 'utf8').split('\n')[0]);
    await migrate(handle.tradingUrl);
    return handle;
  });
  result.machine.postgres = await withClient(pgh.adminUrl, async (c) => String((await c.query('SHOW server_version')).rows[0].server_version));
  log(`PostgreSQL ${result.machine.postgres} on 127.0.0.1:${pgh.port}, data in ${workDir}`);

  const seeded = await timed('seed', () => seed(pgh.tradingUrl, { users: USERS, liveBalance: '1000000.00', demoBalance: '10000.00', orders: ORDERS, referredPercent: REFERRED }));
  result.seed = { users: seeded.users.length, orders: seeded.orders, referred: seeded.referred, postings: seeded.postings, seconds: seeded.seconds, hasOrdersTable: seeded.hasOrders };
  log(`seeded ${seeded.users.length} users, ${seeded.users.length * 2} wallets, ${seeded.postings} postings, ${seeded.orders} open orders, ${seeded.referred} referred users in ${seeded.seconds.toFixed(1)} s`);

  // tokens
  const jwtSecret = randomBytes(48).toString('base64url');
  const tokenOf = new Map<string, string>();
  const lines: string[] = [];
  for (const u of seeded.users) {
    const t = mintToken(jwtSecret, { sub: u.id, tv: 0, role: 'user' }, 24 * 3600);
    tokenOf.set(u.id, t);
    lines.push(`${t}\t${u.accountNumber}`);
  }
  const usersList = path.join(workDir, 'users.tsv');
  fs.writeFileSync(usersList, `${lines.join('\n')}\n`);
  const sessionTokens = path.join(workDir, 'sessions.txt');
  // Sessions spread over the users (every k-th), so they share users with the HTTP flow.
  const step = SESSIONS > 0 ? USERS / SESSIONS : 1;
  fs.writeFileSync(sessionTokens, `${Array.from({ length: SESSIONS }, (_, i) => tokenOf.get(seeded.users[Math.floor(i * step)]!.id)!).join('\n')}\n`);

  // pgbench database
  if (pgbench) {
    await timed('pgbench -i', () => pgbenchInit(pgbench.path, pgh.port, pgh.password, 'bench_pgbench'));
  }

  // 2. the server
  const admin = { email: 'bench-admin@bench.local', password: randomBytes(12).toString('base64url') };
  const port = await freePort();
  if (!argv.tsx) {
    await timed('build', async () => {
      execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'inherit' }); // as `npm start` builds
    });
  }
  const server = await timed('server start', () => startServer(pgh, jwtSecret, admin, port));
  cpuRoots.server = server.pid;
  const rssAtStart = serverRss(server);
  const serverProcs = server.processes();
  const effectiveWorkers = WORKERS > 1 ? Math.max(1, serverProcs.length - 1) : 1;
  if (effectiveWorkers !== WORKERS) {
    result.notes.push(`asked for WORKERS=${WORKERS} but the server runs ${effectiveWorkers} serving process(es) (${serverProcs.length} Node processes): pgbench clients follow what runs`);
  }
  const CLIENTS = effectiveWorkers * POOL;
  const CONNECTIONS = int('connections', argv.connections ?? String(CLIENTS), 1);
  const rates = (argv.rates ?? [Math.round(CLIENTS / 4), Math.round(CLIENTS / 2), CLIENTS, CLIENTS * 2, CLIENTS * 4].join(','))
    .split(',').map((x) => int('rates', x, 1));
  log(`server: ${serverProcs.length} Node process(es) [${serverProcs.map((p) => `${p}: ${commandOf(p).slice(0, 60)}`).join('; ')}], ${CLIENTS} pool connections in total`);

  const login = await api<{ data?: { token: string } }>(server, 'POST', '/api/v1/auth/login', undefined, admin);
  const adminToken = login.json.data?.token;
  if (!adminToken) result.failures.push(`admin login failed (${login.status}): reconciliation through the API is skipped`);

  const symbols = await api(server, 'GET', '/api/v1/symbols', undefined);
  const hasOrders = symbols.status === 200 && seeded.hasOrders;
  if (!hasOrders) result.notes.push('the trading routes are not available: the flow has no order opens and closes');
  const moneyMix: Partial<Record<Op, number>> = { ...MONEY_MIX };
  if (!hasOrders) {
    delete moneyMix.order_open;
    delete moneyMix.order_close;
  }
  const fullMix = { ...moneyMix, ...READ_MIX };

  result.config = {
    users: USERS, sessions: SESSIONS, duration: DURATION, pairs: PAIRS, workers: WORKERS, effectiveWorkers, pool: POOL, clients: CLIENTS,
    connections: CONNECTIONS, rates, warmup: WARMUP, profileSeconds: PROFILE_S, openOrdersSeeded: seeded.orders, referredPercent: REFERRED,
    moneyMix, readMix: READ_MIX, serverEntry: argv.tsx ? 'node --import tsx src/server.ts' : 'node dist/server.js',
    serverEnv: SERVER_ENV, pgSettings: PG_SETTINGS, pgbench: pgbench ? `pgbench -N -c ${CLIENTS} -j ${Math.min(2, CLIENTS)} -T ${DURATION} (scale 1)` : 'missing',
    loadGenerator: 'wrk -t1 per operation with bench/wrk/flow.lua (closed loop)',
    nice: NICE,
  };
  result.notes.push('wrk2 is not in Debian\'s archive (apt-cache policy wrk2: no candidate) and wrk is closed-loop: rising connection counts stand in for rising open-loop rates');

  const estimatePairs = PAIRS * 2 * (DURATION + 3);
  estimate = Math.round((Date.now() - t0) / 1000 + WARMUP + estimatePairs * (SESSIONS > 0 ? 2 : 1)
    + (argv['no-profile'] ? 0 : Object.keys(moneyMix).length * (PROFILE_S + 3))
    + (SESSIONS > 0 ? Math.max(20, SESSIONS / 500) + 10 : 0) + (argv['no-sweep'] ? 0 : rates.length * (DURATION + 3)) + 30);

  // --- helpers bound to this run ---
  let closeFileSeq = 0;
  async function jobsFor(mix: Partial<Record<Op, number>>, connections: number): Promise<WrkJob[]> {
    const split = splitConnections(Math.max(connections, Object.keys(mix).length), mix);
    const jobs: WrkJob[] = [];
    for (const [op, n] of Object.entries(split) as [Op, number][]) {
      let list = usersList;
      if (op === 'order_close') {
        const open = await openOrders(pgh.tradingUrl, 500_000);
        if (open.length === 0) continue;
        list = path.join(workDir, `close-${closeFileSeq++}.tsv`);
        fs.writeFileSync(list, `${open.map((o) => `${tokenOf.get(o.userId) ?? mintToken(jwtSecret, { sub: o.userId, tv: 0, role: 'user' }, 24 * 3600)}\t${o.id}`).join('\n')}\n`);
      }
      jobs.push({ op, connections: n, list });
    }
    return jobs;
  }

  async function apiRun(label: string, phaseName: string, mix: Partial<Record<Op, number>>, connections: number, seconds: number): Promise<ApiRun> {
    const jobs = await jobsFor(mix, connections);
    const startedAt = Date.now();
    const perOp = await runWrk(wrk!, server.url, jobs, seconds, `${id}-${label.replace(/[^A-Za-z0-9]+/g, '_')}`, workDir, abort.signal);
    return summarizeRun(label, phaseName, startedAt, seconds, jobs.reduce((s, j) => s + j.connections, 0), perOp);
  }

  async function pgbenchPhase(label: string): Promise<PgbenchResult> {
    return timed(label, () => pgbenchRun(pgbench!.path, pgh.port, pgh.password, 'bench_pgbench', CLIENTS, DURATION, abort.signal));
  }

  async function pairs(tag: 'a' | 'b', out: Pair[]) {
    for (let i = 1; i <= PAIRS && !abort.signal.aborted; i++) {
      const a = await timed(`${tag}${i} API`, () => apiRun(`pair ${tag}${i} API`, `${tag}-api`, moneyMix, CONNECTIONS, DURATION));
      a.cpu = cpuOf(`${tag}${i} API`);
      info = `API ${a.moneyRps.toFixed(0)} money req/s`;
      log(`  ${tag}${i} API: ${a.moneyRps.toFixed(1)} money req/s, worst p50 ${a.worstMoneyP50Ms} ms, worst p99 ${a.worstMoneyP99Ms} ms, errors ${a.errors}`);
      if (!pgbench) {
        out.push({ index: i, api: a, pgbench: emptyPgbench(), ratio: NaN });
        continue;
      }
      let b: PgbenchResult;
      try {
        b = await pgbenchPhase(`${tag}${i} pgbench`);
      } catch (err) {
        if (abort.signal.aborted) throw err;
        result.failures.push(`pair ${tag}${i}: ${err instanceof Error ? err.message : String(err)}`);
        log(`  ${tag}${i} pgbench: ${err instanceof Error ? err.message : String(err)}`);
        out.push({ index: i, api: a, pgbench: emptyPgbench(), ratio: NaN });
        continue;
      }
      b.cpu = cpuOf(`${tag}${i} pgbench`);
      const ratio = a.moneyRps / b.tps;
      log(`  ${tag}${i} pgbench: ${b.tps.toFixed(1)} tps (avg ${b.latencyAvgMs} ms) → ratio ${ratio.toFixed(3)}`);
      out.push({ index: i, api: a, pgbench: b, ratio });
    }
  }

  // 3. warm-up, pairs (a)
  if (WARMUP > 0) {
    await timed('warm-up', () => apiRun('warm-up', 'warmup', moneyMix, CONNECTIONS, WARMUP));
  }
  await pairs('a', result.pairsA);
  result.medianRatioA = pgbench ? median(result.pairsA.map((p) => p.ratio).filter((x) => Number.isFinite(x))) : null;
  if (result.medianRatioA !== null) log(`median ratio (a) no sessions: ${result.medianRatioA.toFixed(3)}`);

  // 4. profile: one money operation at a time
  if (!argv['no-profile'] && !abort.signal.aborted) {
    for (const op of Object.keys(moneyMix) as Op[]) {
      if (abort.signal.aborted) break;
      const p = await timed(`profile ${op}`, async () => {
        // Requests of the run before still in flight would count here: let them finish first.
        if (pgh.statStatements) {
          await waitQuiet(pgh.tradingUrl);
          await resetStatements(pgh.tradingUrl);
        }
        const before = pgh.statStatements ? await topStatements(pgh.tradingUrl, 0) : undefined;
        const serverPids = new Set(server.processes());
        const segsBefore = dataSegmentsTo(pgh.port, serverPids);
        const run = await apiRun(`profile ${op}`, 'profile', { [op]: 1 }, CONNECTIONS, PROFILE_S);
        const o = run.perOp[0]!;
        let statementsPerOp: number | null = null;
        let commitsPerOp: number | null = null;
        let nestedPerOp: number | null = null;
        let roundTripsPerOp: number | null = null;
        let top: ProfileResult['top'] = [];
        if (pgh.statStatements && o.requests > 0) {
          await waitQuiet(pgh.tradingUrl);
          const segs = segmentsBetween(segsBefore, dataSegmentsTo(pgh.port, serverPids));
          const after = await topStatements(pgh.tradingUrl, 20);
          // One idempotency-key claim per money operation (wrk's count misses the requests in flight at its end).
          const n = after.claims > 0 ? after.claims : o.requests;
          statementsPerOp = after.totalCalls / n;
          roundTripsPerOp = segs > 0 ? segs / n : null;
          nestedPerOp = after.nestedCalls / n;
          commitsPerOp = (after.commits - (before?.commits ?? 0)) / n;
          top = after.statements.map((s) => ({ query: s.query, calls: s.calls, perOp: s.calls / n, meanMs: s.meanMs, meanPlanMs: s.meanPlanMs, totalMs: s.totalMs }));
        }
        return { op, rps: o.rps, okRps: o.okRps, requests: o.requests, ok: o.ok, latencyMs: o.latencyMs, statementsPerOp, roundTripsPerOp, nestedPerOp, commitsPerOp, top, cpu: undefined } as ProfileResult;
      });
      p.cpu = cpuOf(`profile ${op}`);
      log(`  profile ${op}: ${p.okRps.toFixed(1)} ok req/s, p99 ${p.latencyMs.p99} ms, ${p.roundTripsPerOp?.toFixed(2) ?? 'n/a'} round trips/op, ${p.statementsPerOp?.toFixed(2) ?? 'n/a'} statements/op`);
      result.profile.push(p);
    }
  }

  // 4b. database-side ceilings: the deposit's SQL run by pgbench on the trading database
  if (pgbench && !argv['no-sql-ceiling'] && !abort.signal.aborted) {
    const scripts = [
      ['deposit-current.sql', 'the deposit statements of the seed code (7 round trips: BEGIN, set_config, claim, SAVEPOINT, wallet+postings, key UPDATE, COMMIT)'],
      ['deposit-one-statement.sql', 'the same deposit as one statement: 1 round trip'],
      ['deposit-call.sql', 'the deposit as the server sends it now: one wallet_deposit call, 1 round trip'],
    ] as const;
    const baseline = median(result.pairsA.map((p) => p.pgbench.tps).filter((x) => Number.isFinite(x)));
    for (const [file, description] of scripts) {
      if (abort.signal.aborted) break;
      const name = `sql ${file.replace(/\.sql$/, '')}`;
      let r: PgbenchResult;
      try {
        r = await timed(name, () => pgbenchRun(pgbench.path, pgh.port, pgh.password, 'bench_trading', CLIENTS, Math.max(PROFILE_S, 10), abort.signal,
          ['-n', '-f', path.join(ROOT, 'bench', 'sql', file), '-D', `users=${USERS}`]));
      } catch (err) {
        if (abort.signal.aborted) throw err;
        result.failures.push(`${file}: ${err instanceof Error ? err.message : String(err)}`);
        continue;
      }
      result.sqlCeilings.push({ script: file, description, tps: r.tps, transactions: r.transactions, latencyAvgMs: r.latencyAvgMs, failed: r.failed, vsPgbenchN: baseline ? r.tps / baseline : null, cpu: cpuOf(name) });
      log(`  ${file}: ${r.tps.toFixed(1)} tps (avg ${r.latencyAvgMs} ms)${baseline ? ` = ${(r.tps / baseline).toFixed(2)}× pgbench -N` : ''}`);
    }
  }

  // 5. sessions
  let fleet: SessionFleet | undefined;
  if (SESSIONS > 0 && !abort.signal.aborted) {
    const probe = await probeStream(server.wsUrl, tokenOf.get(seeded.users[0]!.id)!);
    if (!probe.ok) {
      result.sessions = { requested: SESSIONS, measured: false, reason: probe.reason };
      log(`sessions not measured: ${probe.reason}`);
    } else {
      await sleep(2000);
      const rssBefore = serverRss(server);
      const f = new SessionFleet(SESSIONS, PER_PROCESS);
      fleet = f;
      onCleanup(() => f.stop());
      const started = Date.now();
      const ok = await timed('sessions connect', async () => {
        f.start(server.wsUrl, sessionTokens, SESSION_CONCURRENCY);
        return f.waitConnected(Math.max(120_000, SESSIONS * 20), (s) => { info = `${s.connected}/${SESSIONS} connected, ${s.failed} failed`; });
      });
      const connectSeconds = Math.round((Date.now() - started) / 100) / 10;
      f.mark('held idle');
      await timed('sessions settle', () => sleep(5000));
      const s = f.stats();
      const rssAfter = serverRss(server);
      result.memory = {
        serverRssBeforeMb: Math.round(rssBefore / 2 ** 20),
        serverRssAfterMb: Math.round(rssAfter / 2 ** 20),
        perSessionKb: s.open > 0 ? Math.round((rssAfter - rssBefore) / s.open / 1024 * 10) / 10 : null,
        serverRssAtStartMb: Math.round(rssAtStart / 2 ** 20),
        perSessionVsStartKb: s.open > 0 ? Math.round((rssAfter - rssAtStart) / s.open / 1024 * 10) / 10 : null,
        serverProcesses: server.processes().length,
        serverFds: server.processes().map(openFds),
      };
      log(`sessions: ${s.connected}/${SESSIONS} connected in ${connectSeconds} s (${ok ? 'all settled' : 'timed out'}), failed ${s.failed} ${JSON.stringify(s.failures)}; server RSS ${result.memory.serverRssBeforeMb} → ${result.memory.serverRssAfterMb} MB`);
      result.sessions = { requested: SESSIONS, measured: true, workers: f.workers, connectSeconds };
    }
  } else if (SESSIONS === 0) {
    result.sessions = { requested: 0, measured: false, reason: 'no sessions requested' };
  }

  // 6. pairs (b) and rising load while the sessions are held
  if (fleet) {
    fleet.mark('pairs (b)');
    await pairs('b', result.pairsB);
    result.medianRatioB = pgbench ? median(result.pairsB.map((p) => p.ratio).filter((x) => Number.isFinite(x))) : null;
    if (result.medianRatioB !== null) log(`median ratio (b) sessions held: ${result.medianRatioB.toFixed(3)}`);
  }
  if (!argv['no-sweep'] && !abort.signal.aborted) {
    fleet?.mark('rising load');
    for (const c of rates) {
      if (abort.signal.aborted) break;
      const run = await timed(`load ${c} conns`, () => apiRun(`rising load ${c} connections`, 'sweep', fullMix, c, DURATION));
      run.cpu = cpuOf(`load ${c} conns`);
      log(`  rising load ${c} connections: ${run.moneyRps.toFixed(1)} money req/s, ${run.rps.toFixed(1)} req/s, worst money p99 ${run.worstMoneyP99Ms} ms, errors ${run.errors}`);
      result.sweep.push(run);
    }
  }
  if (fleet) {
    fleet.mark('after load');
    await timed('sessions hold', () => sleep(3000));
    const s = fleet.stats();
    result.sessions = {
      ...result.sessions!, connected: s.connected, heldAtEnd: s.open, failed: s.failed, disconnects: s.disconnects, closeCodes: s.closeCodes,
      failures: s.failures, lag: fleet.lag(), series: fleet.series, loadGeneratorRssMb: Math.round(s.workerRss / 2 ** 20),
    };
  }

  // The run is over: stop the sessions (after their figures are taken) so the checks below reach an idle server.
  if (fleet) await fleet.stop();

  // 7. invariants
  if (!abort.signal.aborted) {
    await timed('invariants', async () => {
      const checks: { name: string; ok: boolean; detail: string }[] = [];
      const attempt = async (name: string, fn: () => Promise<{ name: string; ok: boolean; detail: string }[]>) => {
        try {
          checks.push(...(await fn()));
        } catch (err) {
          checks.push({ name, ok: false, detail: `could not run: ${err instanceof Error ? err.message : String(err)}` });
        }
      };
      await attempt('idempotency through the API', () => duplicateKeyCheck(server, seeded.users.slice(0, 5).map((u) => tokenOf.get(u.id)!)));
      if (adminToken) {
        await attempt('GET /api/v1/admin/reconciliation ok', async () => {
          const rec = await api<{ data?: { ok: boolean; checkedWallets: number; mismatches: unknown[]; books: unknown } }>(server, 'GET', '/api/v1/admin/reconciliation', adminToken);
          const d = rec.json.data;
          return [{ name: 'GET /api/v1/admin/reconciliation ok', ok: rec.status === 200 && d?.ok === true,
            detail: d ? `checked ${d.checkedWallets} wallets, ${d.mismatches.length} mismatches, books ${JSON.stringify(d.books)}` : `status ${rec.status}` }];
        });
      }
      await attempt('SQL invariants', async () => (await sqlInvariants(pgh.tradingUrl, seeded.hasOrders, undefined)).checks);
      result.invariants = { ok: checks.every((c) => c.ok), checks };
    });
    const h = await api(server, 'GET', '/health', undefined).catch(() => undefined);
    result.health = h?.json;
    result.config.rowsAtEnd = await countRows(pgh.tradingUrl);
  }

}

function emptyPgbench(): PgbenchResult {
  return { clients: 0, durationS: 0, tps: NaN, transactions: 0, failed: 0, latencyAvgMs: NaN, latencyStddevMs: undefined, progress: [], startedAt: Date.now() };
}

function summarizeRun(label: string, phaseName: string, startedAt: number, seconds: number, connections: number, perOp: WrkResult[]): ApiRun {
  const money = perOp.filter((o) => (MONEY_OPS as readonly string[]).includes(o.op));
  const withOk = money.filter((o) => o.ok > 0);
  return {
    label,
    phase: phaseName,
    startedAt,
    seconds,
    connections,
    perOp,
    moneyRps: money.reduce((s, o) => s + o.okRps, 0),
    rps: perOp.reduce((s, o) => s + o.rps, 0),
    worstMoneyP99Ms: Math.max(0, ...withOk.map((o) => o.latencyMs.p99)),
    worstMoneyP50Ms: Math.max(0, ...withOk.map((o) => o.latencyMs.p50)),
    errors: perOp.reduce((s, o) => s + (o.requests - o.ok) + o.socketErrors.connect + o.socketErrors.timeout, 0),
  };
}

/** One WebSocket to the stream: does it exist and does a bench token authenticate? */
async function probeStream(url: string, token: string): Promise<{ ok: boolean; reason?: string }> {
  const { default: WebSocket } = await import('ws');
  return new Promise((resolve) => {
    const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`, { perMessageDeflate: false, handshakeTimeout: 10_000 });
    const done = (v: { ok: boolean; reason?: string }) => {
      clearTimeout(timer);
      ws.removeAllListeners();
      ws.on('error', () => undefined);
      ws.terminate();
      resolve(v);
    };
    const timer = setTimeout(() => done({ ok: false, reason: 'no message on the stream within 10 s' }), 10_000);
    ws.on('message', () => done({ ok: true }));
    ws.on('unexpected-response', (_req, res) => done({ ok: false, reason: `GET /api/v1/stream answered HTTP ${res.statusCode} (route not available)` }));
    ws.on('close', (code) => done({ ok: false, reason: `stream closed with ${code} before any message` }));
    ws.on('error', (err) => done({ ok: false, reason: `stream error: ${err.message}` }));
  });
}

/**
 * The same deposit sent five times at once with one key, then once more: exactly one
 * is applied (balance moves once), the others get 409 IDEMPOTENCY_IN_PROGRESS or the
 * replayed 201, and the late one replays with Idempotent-Replayed: true.
 */
async function duplicateKeyCheck(server: Server, tokens: string[]): Promise<{ name: string; ok: boolean; detail: string }[]> {
  const out: { name: string; ok: boolean; detail: string }[] = [];
  let applied = 0;
  let wrong = 0;
  let replays = 0;
  const statuses: Record<string, number> = {};
  for (const [i, token] of tokens.entries()) {
    const before = await api<{ data: { wallet: { balance: string } } }>(server, 'GET', '/api/v1/wallets/demo', token);
    const key = `bench-dup-${id}-${i}`;
    const body = { amount: '1.23' };
    const rs = await Promise.all(Array.from({ length: 5 }, () => api(server, 'POST', '/api/v1/wallets/demo/deposit', token, body, { 'idempotency-key': key })));
    for (const r of rs) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    const late = await api(server, 'POST', '/api/v1/wallets/demo/deposit', token, body, { 'idempotency-key': key });
    if (late.status === 201 && late.headers.get('idempotent-replayed') === 'true') replays++;
    const after = await api<{ data: { wallet: { balance: string } } }>(server, 'GET', '/api/v1/wallets/demo', token);
    const was = textToCents(before.json.data.wallet.balance);
    const now = textToCents(after.json.data.wallet.balance);
    if (was !== undefined && now !== undefined && now - was === 123n) applied++;
    else wrong++;
  }
  out.push({ name: 'same key sent 5× at once then again: applied exactly once', ok: wrong === 0 && applied === tokens.length,
    detail: `${applied}/${tokens.length} users moved by exactly 1.23; statuses of the concurrent sends ${JSON.stringify(statuses)}` });
  out.push({ name: 'a repeated key replays (Idempotent-Replayed: true)', ok: replays === tokens.length, detail: `${replays}/${tokens.length} replayed` });
  return out;
}

async function freePort(): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as import('node:net').AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function writeResults(): { json: string; htmlFile: string } {
  result.finishedAt = new Date().toISOString();
  fs.mkdirSync(RESULTS, { recursive: true });
  const json = path.join(RESULTS, `bench-${id}.json`);
  const htmlFile = path.join(RESULTS, `bench-${id}.html`);
  fs.writeFileSync(json, JSON.stringify(result, null, 2));
  fs.writeFileSync(htmlFile, html(result));
  fs.copyFileSync(json, path.join(RESULTS, 'latest.json'));
  fs.copyFileSync(htmlFile, path.join(RESULTS, 'latest.html'));
  return { json, htmlFile };
}

main().then(async () => {
  if (interrupted) return;
  setPhase('stopping');
  await cleanupAll();
  clearInterval(progressTimer);
  bar.update(estimate, { phase: 'done', info: '', elapsed: Math.round((Date.now() - t0) / 1000), est: estimate });
  multibar.stop();
  const files = writeResults();
  process.stdout.write(`\n${summaryText(result)}\n\nResults: ${path.relative(process.cwd(), files.json)}\nReport:  ${path.relative(process.cwd(), files.htmlFile)}\n`);
  process.exit(result.failures.length || result.invariants?.ok === false ? 1 : 0);
}, async (err: unknown) => {
  if (interrupted) return;
  result.failures.push(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  log(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  await cleanupAll();
  clearInterval(progressTimer);
  multibar.stop();
  try {
    const files = writeResults();
    process.stdout.write(`\n${summaryText(result)}\n\nPartial results: ${files.json}\n`);
  } catch {
    /* nothing to write */
  }
  process.exit(1);
});
