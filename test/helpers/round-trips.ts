/** Round trips to PostgreSQL counted at the driver (issue 8). */
import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { vi } from 'vitest';

/**
 * Runs `fn` and returns the queries sent to PostgreSQL on its behalf through the pool:
 * those issued in its async context, not the background work (risk engine, jobs) of
 * the same process, nor the cross-process notices published after commit.
 */
export async function roundTrips(fn: () => Promise<unknown>): Promise<{ count: number; texts: string[] }> {
  const texts: string[] = [];
  const mine = new AsyncLocalStorage<true>();
  const original = pg.Client.prototype.query;
  vi.spyOn(pg.Client.prototype, 'query').mockImplementation(function (this: pg.Client, ...args: unknown[]) {
    const q = args[0];
    // The listener connection's publishes (after commit, off the pool) are not the operation's.
    const app = (this as unknown as { connectionParameters?: { application_name?: string } }).connectionParameters?.application_name;
    if (mine.getStore() && app !== 'trading-backend-listener') texts.push(typeof q === 'string' ? q : (q as { text?: string }).text ?? '?');
    return (original as (...a: unknown[]) => unknown).apply(this, args);
  } as never);
  try {
    await mine.run(true, fn);
  } finally {
    vi.restoreAllMocks();
  }
  return { count: texts.length, texts };
}
