/** A real redis-server of the test's own on a free loopback port, or a reason why there is none. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { freePort } from '../../src/platform/db/embedded.js';

export interface TestRedis {
  url: string;
  port: number;
  /** Stops the server, runs `whileDown`, and starts a new, empty one on the same port (every client connection drops). */
  restart(whileDown?: () => Promise<void>): Promise<void>;
  stop(): Promise<void>;
}


export function redisUnavailableReason(): string | undefined {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  return r.error ? 'redis-server is not installed (Debian package redis-server; .ci/run installs it)' : undefined;
}

async function spawnRedis(port: number): Promise<ChildProcess> {
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = net.connect(port, '127.0.0.1', () => { sock.end(); resolve(true); });
      sock.on('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('redis-server did not start');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return child;
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export async function startRedis(): Promise<TestRedis> {
  const port = await freePort();
  let child = await spawnRedis(port);
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    restart: async (whileDown) => {
      await stopChild(child);
      try {
        await whileDown?.();
      } finally {
        child = await spawnRedis(port);
      }
    },
    stop: () => stopChild(child),
  };
}
