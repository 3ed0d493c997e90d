import { describe, expect, it } from 'vitest';
import { cpuPerOp, pairCpu, summaryText, type BenchResult, type Pair } from '../../bench/lib/report.js';
import type { CpuUse } from '../../bench/lib/procs.js';

const cpu = (seconds: number, serverPct: number, postgresPct: number, loadGeneratorPct: number, kernelPct: number, otherPct = 0): CpuUse =>
  ({ machinePct: serverPct + postgresPct + loadGeneratorPct + kernelPct + otherPct, serverPct, postgresPct, loadGeneratorPct, kernelPct, otherPct, seconds });

/** A pair: the API's run of 10 s inside a phase of 10.5 s, with reads and an error besides its 8,000 money requests. */
function pair(): Pair {
  const op = (name: string, ok: number, requests = ok) => ({
    op: name, ok, requests, connections: 4, okRps: ok / 10, rps: requests / 10, latencyMs: { p50: 20, p95: 40, p99: 60, max: 90 },
    codes: requests > ok ? { '409 CONFLICT': requests - ok } : {}, socketErrors: { connect: 0, read: 0, write: 0, timeout: 0 },
  });
  return {
    index: 1,
    api: {
      label: 'pair a1 API', seconds: 10, rps: 1000, moneyRps: 800, worstMoneyP50Ms: 20, worstMoneyP99Ms: 60, errors: 1,
      perOp: [op('deposit', 5000, 5001), op('order_close', 3000), op('wallet', 1999)],
      cpu: cpu(10.5, 80, 100, 12, 8),
    },
    pgbench: { tps: 3000, transactions: 30000, latencyAvgMs: 5, cpu: cpu(10, 1, 149, 30, 15) },
    ratio: 0.27,
  } as unknown as Pair;
}

describe('the bench report: CPU per operation', () => {
  it("turns percent of a core over the phase's window into ms of CPU per operation, the noise left out", () => {
    // 80 % of a core for 10 s is 8,000 ms of CPU, over 8,000 operations 1 ms each.
    expect(cpuPerOp(cpu(10, 80, 120, 10, 6, 30), 8000)).toEqual({ server: 1, postgres: 1.5, generator: 0.125, kernel: 0.075, total: 2.7 });
    // The same percentages over a longer window are more CPU for the same operations.
    expect(cpuPerOp(cpu(12, 80, 120, 10, 6), 8000)?.total).toBe(3.24);
    expect(cpuPerOp(undefined, 8000)).toBeUndefined();
    expect(cpuPerOp(cpu(10, 80, 120, 10, 6), 0)).toBeUndefined();
    expect(cpuPerOp({ ...cpu(10, 80, 120, 10, 6), seconds: undefined }, 8000)).toBeUndefined();
  });

  it("charges a pair's API CPU to its successful money requests and pgbench's to its transactions", () => {
    const c = pairCpu(pair());
    // 200 % of a core for 10.5 s = 21,000 ms over the 8,000 successful money requests (not the 10,000 responses).
    expect(c.api).toEqual({ server: 1.05, postgres: 1.313, generator: 0.158, kernel: 0.105, total: 2.625 });
    expect(c.pgbench?.total).toBe(0.65); // 195 % for 10 s over 30,000 transactions
    expect(c.quotient).toBe(0.25);
    const p = pair();
    expect(pairCpu({ ...p, pgbench: { ...p.pgbench, cpu: undefined } }).quotient).toBeNull();
  });

  it('prints the pair CPU table in the summary', () => {
    const r = {
      id: 't', config: { users: 10, sessions: 0, duration: 10, effectiveWorkers: 2, pool: 8, clients: 16, connections: 16 },
      pairsA: [pair()], pairsB: [], medianRatioA: 0.27, medianRatioB: null, profile: [], sqlCeilings: [], sweep: [], notes: [], failures: [],
    } as unknown as BenchResult;
    const text = summaryText(r);
    expect(text).toContain('CPU per operation (a) no sessions');
    expect(text).toMatch(/1\s+1\.05\/1\.313\/0\.158\/0\.105 = 2\.625\s+0\.003\/0\.497\/0\.1\/0\.05 = 0\.65\s+0\.25\s+0\.27/);
  });
});
