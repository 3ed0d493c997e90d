/** A WebSocket client of GET /api/v1/stream for tests: every message kept, waits bounded. */
import WebSocket from 'ws';

export interface WsMessage { type: string; data: any; at: number }

export interface WsClient {
  ws: WebSocket;
  messages: WsMessage[];
  /** Settles when the socket closes, with the close code and reason. */
  closed: Promise<{ code: number; reason: string }>;
  /** The first message from index `from` on that matches; rejects after `timeoutMs`. */
  next(pred: (m: WsMessage) => boolean, timeoutMs?: number, from?: number): Promise<WsMessage>;
  send(value: unknown): void;
  /** Drops the connection at once (no closing handshake). */
  close(): void;
}

export interface WsClientOptions {
  headers?: Record<string, string>;
  /** The default of `next`'s `timeoutMs`. */
  timeoutMs?: number;
}

/** The ws:// base of an app listening on a loopback port. */
export function wsBase(app: { server: { address(): unknown } }): string {
  const addr = app.server.address() as { port: number };
  return `ws://127.0.0.1:${addr.port}`;
}

/** Connects to `url` (the stream's full address, query included) without waiting for anything. */
export function connectStream(url: string, options: WsClientOptions = {}): WsClient {
  const ws = new WebSocket(url, { headers: options.headers ?? {} });
  const messages: WsMessage[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (data) => {
    messages.push({ ...JSON.parse(data.toString()), at: Date.now() });
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => undefined);
  const next: WsClient['next'] = (pred, timeoutMs = options.timeoutMs ?? 5_000, from = 0) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no matching message in ${timeoutMs} ms; got ${JSON.stringify(messages.slice(from).map((m) => m.type))}`)), timeoutMs);
    const check = () => {
      const m = messages.slice(from).find(pred);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      } else waiters.push(check);
    };
    check();
  });
  return { ws, messages, closed, next, send: (v) => ws.send(JSON.stringify(v)), close: () => ws.terminate() };
}

/** Opens a stream with `token` and waits for its first message (the snapshot). */
export async function openClient(base: string, token: string): Promise<WsClient> {
  const c = connectStream(`${base}/api/v1/stream?token=${token}`);
  await c.next(() => true);
  return c;
}

/** Matches a quotes message that carries `symbol` at `bid`. */
export const hasQuote = (symbol: string, bid: string) => (m: WsMessage) =>
  m.type === 'quotes' && (m.data as { symbol: string; bid: string }[]).some((q) => q.symbol === symbol && q.bid === bid);
