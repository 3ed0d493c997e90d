/** Helpers of the scale tests: several real server processes on one database. */
import WebSocket from 'ws';
import { http, loginVia, waitUntil, type ServerProcess } from '../helpers/server-process.js';

export interface Health { market?: { leader: boolean; shared: boolean; terms: number } }

export async function isLeader(s: ServerProcess): Promise<boolean | undefined> {
  try {
    const r = await http<Health>(s.baseUrl, 'GET', '/health', undefined, { timeoutMs: 3_000 });
    return r.body?.market?.leader;
  } catch {
    return undefined;
  }
}

/** Waits (bounded) until exactly one of the running servers reports itself leader; returns it. */
export async function waitForOneLeader(servers: ServerProcess[], timeoutMs: number): Promise<ServerProcess | undefined> {
  let found: ServerProcess | undefined;
  await waitUntil(async () => {
    const live = servers.filter((s) => s.isRunning());
    const flags = await Promise.all(live.map(isLeader));
    const leaders = live.filter((_, i) => flags[i] === true);
    found = leaders.length === 1 ? leaders[0] : undefined;
    return found !== undefined;
  }, timeoutMs, 200);
  return found;
}

export async function adminToken(base: string, email: string, password: string): Promise<string> {
  const r = await loginVia(base, email, password);
  if (r.status !== 200) throw new Error(`admin login failed: ${r.status} ${r.raw}`);
  return r.body.data.token as string;
}

export interface StreamClient {
  ws: WebSocket;
  messages: { type: string; data: any; at: number }[];
  close(): void;
}

export function openStream(s: ServerProcess, token: string): Promise<StreamClient> {
  const ws = new WebSocket(`ws://127.0.0.1:${s.port}/api/v1/stream?token=${token}`);
  const messages: StreamClient['messages'] = [];
  ws.on('message', (data) => messages.push({ ...JSON.parse(data.toString()), at: Date.now() }));
  ws.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('stream did not open in 5 s')), 5_000);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve({ ws, messages, close: () => ws.terminate() });
    });
  });
}
