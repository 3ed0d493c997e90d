import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UserStateCache } from '../../src/modules/auth/user-state.cache.js';
import { registerUser, startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp();
});
afterAll(async () => {
  await t.close();
});

describe('UserStateCache preload', () => {
  it('loads every user in pages, then answers without a query; an invalidation drops the entry', async () => {
    const users = await Promise.all([1, 2, 3, 4, 5].map(() => registerUser(t.app)));
    const cache = new UserStateCache(t.database.db);
    const loaded = await cache.preload(2);
    const { rows } = await sql<{ n: string }>`SELECT count(*) AS n FROM users`.execute(t.database.db);
    expect(loaded).toBe(Number(rows[0]!.n));
    expect(cache.size).toBe(loaded);

    // A change made behind the cache's back is not seen until the user is invalidated:
    // proof that the preloaded entry, not a query, answered.
    const id = users[0]!.user.id;
    await sql`UPDATE users SET blocked = true WHERE id = ${id}`.execute(t.database.db);
    expect((await cache.get(id))?.blocked).toBe(false);
    cache.invalidate(id);
    expect((await cache.get(id))?.blocked).toBe(true);
    await sql`UPDATE users SET blocked = false WHERE id = ${id}`.execute(t.database.db);
  });

  it('an invalidation that arrives during a preload wins over the rows being loaded', async () => {
    const u = await registerUser(t.app);
    const cache = new UserStateCache(t.database.db);
    await sql`UPDATE users SET token_version = token_version + 1 WHERE id = ${u.user.id}`.execute(t.database.db);
    const loading = cache.preload(1);
    cache.invalidate(u.user.id);
    await loading;
    const state = await cache.get(u.user.id);
    const { rows } = await sql<{ v: number }>`SELECT token_version AS v FROM users WHERE id = ${u.user.id}`.execute(t.database.db);
    expect(state?.tokenVersion).toBe(rows[0]!.v);
  });

  it('a clear during a preload stops it from adding rows', async () => {
    await registerUser(t.app);
    const cache = new UserStateCache(t.database.db);
    const loading = cache.preload(1);
    cache.clear();
    await loading;
    expect(cache.size).toBeLessThanOrEqual(1);
  });
});
