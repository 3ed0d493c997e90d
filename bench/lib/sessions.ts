/**
 * The WebSocket sessions: several session-load processes (bench/sessions-worker.ts),
 * each under 15,000 sockets and bound to its own loopback source address, merged
 * here: sessions held, disconnects, and quote lag histograms per phase and per second.
 */
import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hdr from 'hdr-histogram-js';
import { sleep, spawnTracked, stopChild } from './procs.js';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'sessions-worker.ts');
export const MAX_PER_WORKER = 14_000;

export interface WorkerStats {
  target: number;
  attempted: number;
  connected: number;
  open: number;
  failed: number;
  disconnects: number;
  closeCodes: Record<string, number>;
  failures: Record<string, number>;
  messages: number;
  quotes: number;
}

export interface LagSummary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

const newHist = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });

export function summarize(h: hdr.Histogram): LagSummary {
  return {
    count: h.totalCount,
    p50: h.getValueAtPercentile(50),
    p90: h.getValueAtPercentile(90),
    p99: h.getValueAtPercentile(99),
    p999: h.getValueAtPercentile(99.9),
    max: h.maxValue,
    mean: Math.round(h.mean * 10) / 10,
  };
}

export class SessionFleet {
  private readonly procs: { child: ChildProcess; stats?: WorkerStats; rss: number; address: string }[] = [];
  private readonly total = newHist();
  private readonly phases = new Map<string, hdr.Histogram>();
  private phase = 'connect';
  private second = newHist();
  private ticker: NodeJS.Timeout | undefined;
  /** Per second: sessions open, lag p50/p99 of the quotes received in that second. */
  readonly series: { t: number; open: number; p50: number | null; p99: number | null; quotes: number; phase: string }[] = [];

  constructor(private readonly sessions: number, private readonly perWorker: number) {}

  get workers(): number {
    return this.procs.length;
  }

  /** Spawns the workers; they start connecting at once. */
  start(wsUrl: string, tokensFile: string, concurrency: number): void {
    const per = Math.min(this.perWorker, MAX_PER_WORKER);
    const count = Math.max(1, Math.ceil(this.sessions / per));
    const share = Math.ceil(this.sessions / count);
    for (let i = 0; i < count; i++) {
      const from = i * share;
      const to = Math.min(this.sessions, from + share);
      if (from >= to) break;
      const address = `127.0.0.${2 + i}`;
      const child = spawnTracked(process.execPath, ['--import', 'tsx', WORKER], {
        env: { ...process.env, BENCH_SESSIONS: JSON.stringify({ url: wsUrl, localAddress: address, tokensFile, from, to, concurrency }) },
        stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
      });
      const entry: (typeof this.procs)[number] = { child, rss: 0, address };
      child.on('message', (m: { type: string; stats: WorkerStats; hist: string | null; rss: number }) => {
        entry.stats = m.stats;
        entry.rss = m.rss;
        if (m.hist) {
          const h = hdr.decodeFromCompressedBase64(m.hist, 32, false);
          this.total.add(h);
          this.current().add(h);
          this.second.add(h);
          h.destroy();
        }
      });
      this.procs.push(entry);
    }
    this.ticker = setInterval(() => {
      const s = this.second;
      this.second = newHist();
      this.series.push({
        t: Date.now(),
        open: this.stats().open,
        p50: s.totalCount ? s.getValueAtPercentile(50) : null,
        p99: s.totalCount ? s.getValueAtPercentile(99) : null,
        quotes: s.totalCount,
        phase: this.phase,
      });
      s.destroy();
    }, 1000);
  }

  private current(): hdr.Histogram {
    let h = this.phases.get(this.phase);
    if (!h) this.phases.set(this.phase, (h = newHist()));
    return h;
  }

  /** Lag recorded from now on counts for `name` (and the total). */
  mark(name: string): void {
    this.phase = name;
  }

  stats(): WorkerStats & { workers: number; workerRss: number } {
    const agg: WorkerStats & { workers: number; workerRss: number } = {
      target: this.sessions, attempted: 0, connected: 0, open: 0, failed: 0, disconnects: 0, closeCodes: {}, failures: {}, messages: 0, quotes: 0,
      workers: this.procs.length, workerRss: 0,
    };
    for (const p of this.procs) {
      agg.workerRss += p.rss;
      const s = p.stats;
      if (!s) continue;
      agg.attempted += s.attempted;
      agg.connected += s.connected;
      agg.open += s.open;
      agg.failed += s.failed;
      agg.disconnects += s.disconnects;
      agg.messages += s.messages;
      agg.quotes += s.quotes;
      for (const [k, v] of Object.entries(s.closeCodes)) agg.closeCodes[k] = (agg.closeCodes[k] ?? 0) + v;
      for (const [k, v] of Object.entries(s.failures)) agg.failures[k] = (agg.failures[k] ?? 0) + v;
    }
    return agg;
  }

  /** Waits until every session connected or failed (bounded); calls `tick` each second. */
  async waitConnected(timeoutMs: number, tick: (s: ReturnType<SessionFleet['stats']>) => void): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = this.stats();
      tick(s);
      if (s.connected + s.failed >= this.sessions) return true;
      if (this.procs.every((p) => p.child.exitCode !== null)) return false;
      if (Date.now() > deadline) return false;
      await sleep(1000);
    }
  }

  lag(): { total: LagSummary; phases: Record<string, LagSummary> } {
    const phases: Record<string, LagSummary> = {};
    for (const [k, h] of this.phases) phases[k] = summarize(h);
    return { total: summarize(this.total), phases };
  }

  async stop(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    await Promise.all(this.procs.map(async (p) => {
      if (p.child.exitCode !== null) return;
      const exited = new Promise<void>((r) => p.child.once('exit', () => r()));
      try {
        p.child.send({ type: 'stop' });
      } catch {
        /* gone */
      }
      const ok = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!ok) await stopChild(p.child, 'SIGKILL', 2_000);
    }));
  }
}
