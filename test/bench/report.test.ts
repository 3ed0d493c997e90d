import { describe, expect, it } from 'vitest';
import { cpuPerOp, pairCpu, summaryText, type BenchResult, type Pair } from '../../bench/lib/report.js';
import type { CpuUse } from '../../bench/lib/procs.js';

const cpu = (serverPct: number, postgresPct: number, loadGeneratorPct: number, kernelPct: number, otherPct = 0): CpuUse =>
  ({ machinePct: serverPct + postgresPct + loadGeneratorPct + kernelPct + otherPct, serverPct, postgresPct, loadGeneratorPct, kernelPct, otherPct });

describe('the bench report: CPU per operation', () => {
  it('turns percent of a core at a rate into ms of CPU per operation, the noise left out', () => {
    // 80 % of a core at 800 req/s: 800 ms of CPU a second over 800 requests = 1 ms each.
    expect(cpuPerOp(cpu(80, 120, 10, 6, 30), 800)).toEqual({ server: 1, postgres: 1.5, generator: 0.125, kernel: 0.075, total: 2.7 });
    expect(cpuPerOp(undefined, 800)).toBeUndefined();
    expect(cpuPerOp(cpu(80, 120, 10, 6), 0)).toBeUndefined();
  });

  it("predicts a pair's ratio from pgbench's CPU per transaction and the API's per request", () => {
    const pair = {
      index: 1,
      api: { rps: 800, moneyRps: 800, cpu: cpu(80, 100, 12, 8) },
      pgbench: { tps: 3000, cpu: cpu(0, 150, 30, 15) },
      ratio: 0.27,
    } as unknown as Pair;
    const c = pairCpu(pair);
    expect(c.api?.total).toBe(2.5); // (80 + 100 + 12 + 8) × 10 / 800
    expect(c.pgbench?.total).toBe(0.65); // 195 × 10 / 3000
    expect(c.predicted).toBe(0.26);
    expect(pairCpu({ ...pair, pgbench: { ...pair.pgbench, cpu: undefined } }).predicted).toBeNull();
  });

  it('prints the pair CPU table in the summary', () => {
    const pair = {
      index: 1,
      api: { label: 'pair a1 API', rps: 800, moneyRps: 800, worstMoneyP50Ms: 20, worstMoneyP99Ms: 60, errors: 0, perOp: [], cpu: cpu(80, 100, 12, 8) },
      pgbench: { tps: 3000, latencyAvgMs: 5, cpu: cpu(0, 150, 30, 15) },
      ratio: 0.27,
    } as unknown as Pair;
    const r = {
      id: 't', config: { users: 10, sessions: 0, duration: 5, effectiveWorkers: 2, pool: 8, clients: 16, connections: 16 },
      pairsA: [pair], pairsB: [], medianRatioA: 0.27, medianRatioB: null, profile: [], sqlCeilings: [], sweep: [], notes: [], failures: [],
    } as unknown as BenchResult;
    const text = summaryText(r);
    expect(text).toContain('CPU per operation (a) no sessions');
    expect(text).toMatch(/1\s+1\/1\.25\/0\.15\/0\.1 = 2\.5\s+0\/0\.5\/0\.1\/0\.05 = 0\.65\s+0\.26\s+0\.27/);
  });
});
