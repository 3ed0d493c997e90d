/** A WebSocket stream client for the fan-out tests: every message kept, waits bounded. */
import WebSocket from 'ws';

export interface WsMessage { type: string; data: any; at: number }

export interface WsClient {
  ws: WebSocket;
  messages: WsMessage[];
  /** The first message from index `from` on that matches; rejects after `timeoutMs`. */
  next(pred: (m: WsMessage) => boolean, timeoutMs?: number, from?: number): Promise<WsMessage>;
  close(): void;
}

export function wsBase(app: { server: { address(): unknown } }): string {
  const addr = app.server.address() as { port: number };
  return `ws://127.0.0.1:${addr.port}`;
}

/** Opens a stream and waits for its first message (the snapshot). */
export async function openClient(base: string, token: string): Promise<WsClient> {
  const ws = new WebSocket(`${base}/api/v1/stream?token=${token}`);
  const messages: WsMessage[] = [];
  const waiters: (() => void)[] = [];
  ws.on('message', (data) => {
    messages.push({ ...JSON.parse(data.toString()), at: Date.now() });
    for (const w of waiters.splice(0)) w();
  });
  ws.on('error', () => undefined);
  const next: WsClient['next'] = (pred, timeoutMs = 5_000, from = 0) => new Promise((resolve, reject) => {
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
  const c: WsClient = { ws, messages, next, close: () => ws.terminate() };
  await next(() => true);
  return c;
}

export const hasQuote = (symbol: string, bid: string) => (m: WsMessage) =>
  m.type === 'quotes' && (m.data as { symbol: string; bid: string }[]).some((q) => q.symbol === symbol && q.bid === bid);
