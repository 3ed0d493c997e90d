/**
 * One session-load process of the bench (a child of bench/run.ts with an IPC
 * channel): opens its share of authenticated WebSocket sessions to
 * GET /api/v1/stream from its own loopback source address, holds them, and reports
 * every second: sessions connected, disconnects, and the quote delivery lag
 * (receive time − each quote's `time`) as an HDR histogram of the interval.
 *
 * Config (JSON in BENCH_SESSIONS): { url, localAddress, tokensFile, from, to, concurrency }.
 * Parent messages: { type: 'stop' } closes everything and exits.
 */
import fs from 'node:fs';
import * as hdr from 'hdr-histogram-js';
import WebSocket from 'ws';

interface Config {
  url: string;
  localAddress: string;
  tokensFile: string;
  from: number;
  to: number;
  concurrency: number;
}

const cfg = JSON.parse(process.env.BENCH_SESSIONS ?? '{}') as Config;
const tokens = fs.readFileSync(cfg.tokensFile, 'utf8').split('\n').filter(Boolean).slice(cfg.from, cfg.to);

const newHist = () => hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
let interval = newHist();

const stats = {
  target: tokens.length,
  attempted: 0,
  /** Handshake done and first message (the snapshot) received. */
  connected: 0,
  /** Currently open and authenticated. */
  open: 0,
  failed: 0,
  /** Closed after having been connected. */
  disconnects: 0,
  closeCodes: {} as Record<string, number>,
  failures: {} as Record<string, number>,
  messages: 0,
  quotes: 0,
};

const sockets = new Set<WebSocket>();
let stopping = false;
let inflight = 0;
let next = 0;

/**
 * The quote times of a message, parsed once per distinct message: every session of a
 * push gets the same bytes, so the load generator decodes each push once, not once per
 * session (it must stay cheaper than the server it measures).
 */
const parsed = new Map<string, number[]>();
function quoteTimes(data: Buffer): number[] {
  const key = data.toString('latin1');
  let times = parsed.get(key);
  if (times === undefined) {
    times = [];
    try {
      const msg = JSON.parse(data.toString('utf8')) as { type?: string; data?: { time?: unknown }[] };
      if (msg.type === 'quotes' && Array.isArray(msg.data)) {
        for (const q of msg.data) if (typeof q.time === 'string') times.push(Date.parse(q.time));
      }
    } catch {
      // not JSON: no quotes
    }
    if (parsed.size >= 256) parsed.clear();
    parsed.set(key, times);
  }
  return times;
}

function bump(map: Record<string, number>, key: string) {
  map[key] = (map[key] ?? 0) + 1;
}

function openOne(token: string) {
  inflight++;
  stats.attempted++;
  let connected = false;
  let settled = false;
  const settle = () => {
    if (settled) return;
    settled = true;
    inflight--;
    pump();
  };
  const ws = new WebSocket(`${cfg.url}?token=${encodeURIComponent(token)}`, {
    localAddress: cfg.localAddress,
    perMessageDeflate: false,
    // The server's own tests check what it sends; the load generator skips re-validating
    // every message's UTF-8 (10-20 % of its CPU per message, measured with 16,000 sockets).
    skipUTF8Validation: true,
    handshakeTimeout: 60_000,
    maxPayload: 1 << 20,
  });
  sockets.add(ws);
  ws.on('message', (data: Buffer) => {
    stats.messages++;
    if (!connected) {
      // The first message is the snapshot: it proves authentication; its quotes may be old.
      connected = true;
      stats.connected++;
      stats.open++;
      settle();
      return;
    }
    const now = Date.now();
    for (const time of quoteTimes(data)) {
      interval.recordValue(Math.max(0, Math.min(now - time, 3_600_000)));
      stats.quotes++;
    }
  });
  ws.on('unexpected-response', (_req, res) => {
    bump(stats.failures, `http ${res.statusCode ?? '?'}`);
    stats.failed++;
    res.resume();
    ws.terminate();
    settle();
  });
  ws.on('error', (err: NodeJS.ErrnoException) => {
    if (!connected && !settled) {
      bump(stats.failures, err.code ?? err.message.slice(0, 60));
      stats.failed++;
      settle();
    }
  });
  ws.on('close', (code: number) => {
    sockets.delete(ws);
    if (connected) {
      stats.open--;
      if (!stopping) {
        stats.disconnects++;
        bump(stats.closeCodes, String(code));
      }
    } else if (!settled) {
      bump(stats.failures, `closed ${code}`);
      stats.failed++;
      settle();
    }
  });
}

function pump() {
  while (!stopping && inflight < cfg.concurrency && next < tokens.length) openOne(tokens[next++]!);
}

function report(final = false) {
  const h = interval;
  interval = newHist();
  process.send?.({
    type: final ? 'final' : 'stats',
    stats,
    hist: h.totalCount > 0 ? hdr.encodeIntoCompressedBase64(h) : null,
    rss: process.memoryUsage().rss,
  });
  h.destroy();
}

const timer = setInterval(() => report(), 1000);

process.on('message', (m: { type?: string }) => {
  if (m?.type !== 'stop' || stopping) return;
  stopping = true;
  clearInterval(timer);
  report(true);
  for (const ws of sockets) ws.terminate();
  setTimeout(() => process.exit(0), 200);
});
// The parent died: do not linger.
process.on('disconnect', () => process.exit(0));

pump();
