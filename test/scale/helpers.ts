/** Helpers of the scale tests: several real server processes on one database. */
import { http, loginVia, waitUntil, type ServerProcess } from '../helpers/server-process.js';
import { connectStream, type WsClient } from '../helpers/ws-client.js';

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

export type StreamClient = WsClient;

/** A stream of a server process with `token`, once its socket is open (bounded: 5 s). */
export function openStream(s: ServerProcess, token: string): Promise<StreamClient> {
  const c = connectStream(`ws://127.0.0.1:${s.port}/api/v1/stream?token=${token}`);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('stream did not open in 5 s')), 5_000);
    c.ws.once('open', () => {
      clearTimeout(timer);
      resolve(c);
    });
  });
}
