/**
 * Crash safety (issue 3): the REAL server process on a per-test database, a storm of
 * random transfers over HTTP with Idempotency-Keys at concurrency ≥ 16, `kill -9`
 * mid-storm, a new start on the same database; then reconciliation is ok, the total
 * of all live balances is unchanged to the cent, no balance is negative, and every
 * request whose answer was lost, re-sent with its original key and body, is applied
 * at most once (each transfer carries its key as its note, so the ledger shows how
 * many times each key's transfer was posted).
 *
 * To make the kill also hit transactions between COMMIT and the answer (the case that
 * needs the replay), the storm runs with a test-only deferred trigger that makes each
 * commit take a few milliseconds, like a slow disk or a synchronous replica would (it
 * is dropped before the restart), and storms again, a bounded number of times, until
 * at least one such transfer was seen.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase } from '../helpers/db.js';
import {
  fromCents, http, loginVia, registerVia, startServer, toCents, waitUntil, type ExitInfo, type HttpReply, type ServerProcess,
} from '../helpers/server-process.js';

const USERS = 20;
const CONCURRENCY = 24;
const PLANNED = 1_000;
/** The server is killed once this many storm requests have been answered. */
const KILL_AFTER = 150;
/** Storm rounds at most, until a kill has landed between a COMMIT and its answer. */
const MAX_ROUNDS = 4;
const ADMIN = { email: 'crash-admin@example.com', password: 'crash-admin-password-1' };

let database: { url: string; drop: () => Promise<void> };
let client: pg.Client;
const servers: ServerProcess[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  client = new pg.Client({ connectionString: database.url });
  await client.connect();
});

afterAll(async () => {
  for (const s of servers) {
    if (!s.isRunning()) continue;
    await s.terminate().catch(() => s.kill());
  }
  await client?.end().catch(() => undefined);
  await database?.drop();
});

function serverEnv() {
  return {
    DATABASE_URL: database.url,
    ADMIN_EMAIL: ADMIN.email,
    ADMIN_PASSWORD: ADMIN.password,
    DB_POOL_MAX: '20',
  };
}

interface User { token: string; accountNumber: string }
interface StormRequest {
  key: string;
  from: number;
  body: { toAccountNumber: string; amount: string; note: string };
  reply?: HttpReply;
  error?: string;
}

const randInt = (n: number) => Math.floor(Math.random() * n);
const centsString = (c: number) => fromCents(BigInt(c));

function transfer(base: string, u: User, r: StormRequest) {
  return http(base, 'POST', '/api/v1/wallets/live/transfer', r.body, { token: u.token, key: r.key, timeoutMs: 20_000 });
}

/** A resend; a 503 (transient, nothing stored) is retried with the same key, a bounded number of times. */
async function resend(base: string, u: User, r: StormRequest): Promise<HttpReply> {
  for (let attempt = 1; ; attempt++) {
    const reply = await transfer(base, u, r);
    if (reply.status !== 503 || attempt === 5) return reply;
    await new Promise((done) => setTimeout(done, 200 * attempt));
  }
}

/** transfer_out postings per note (= idempotency key), and completed key rows, straight from the ledger. */
async function ledgerByKey(keys: string[]) {
  const postings = await client.query<{ note: string; n: string }>(
    `SELECT note, count(*)::text AS n FROM ledger_postings WHERE type = 'transfer_out' AND note = ANY($1) GROUP BY note`, [keys]);
  const stored = await client.query<{ key: string; status: string; response_status: number | null }>(
    `SELECT key, status, response_status FROM idempotency_keys WHERE key = ANY($1)`, [keys]);
  return {
    count: (k: string) => Number(postings.rows.find((r) => r.note === k)?.n ?? '0'),
    stored: (k: string) => stored.rows.find((r) => r.key === k),
  };
}

async function liveBalances(base: string, users: User[]): Promise<bigint[]> {
  return Promise.all(users.map(async (u) => {
    const r = await http(base, 'GET', '/api/v1/wallets/live', undefined, { token: u.token });
    expect(r.status, r.raw).toBe(200);
    return toCents(r.body.data.wallet.balance as string);
  }));
}

async function reconciliation(base: string) {
  const login = await loginVia(base, ADMIN.email, ADMIN.password);
  expect(login.status, login.raw).toBe(200);
  const r = await http(base, 'GET', '/api/v1/admin/reconciliation', undefined, { token: login.body.data.token });
  expect(r.status, r.raw).toBe(200);
  return r.body.data as { ok: boolean; checkedWallets: number; mismatches: unknown[]; books: { live: { sum: string }; demo: { sum: string } } };
}

interface RoundResult {
  sent: number;
  answered: number;
  lost: number;
  committedLost: number;
}

/**
 * One storm: transfers until KILL_AFTER answers, kill -9, wait for the old sessions to end,
 * start again on the same database, check everything, re-send what was lost (twice).
 * Returns the new server.
 */
async function stormRound(server: ServerProcess, users: User[], deposited: bigint, tag: string): Promise<{ server: ServerProcess; result: RoundResult }> {
  // A test-only slow commit, so that the kill also finds transactions between COMMIT and the answer.
  await client.query(`
    CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM pg_sleep(0.02); RETURN NULL; END $$;
    CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT ON idempotency_keys
      DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit();
  `);
  const plan: StormRequest[] = Array.from({ length: PLANNED }, (_, i) => {
    const from = randInt(USERS);
    const to = (from + 1 + randInt(USERS - 1)) % USERS;
    const key = `storm-${tag}-${i}`;
    // 0.01 .. 150.00 against balances of 500+: mostly accepted; an INSUFFICIENT_FUNDS is fine too
    return { key, from, body: { toAccountNumber: users[to]!.accountNumber, amount: centsString(1 + randInt(15_000)), note: key } };
  });
  const sent: StormRequest[] = [];
  let next = 0;
  let answered = 0;
  let killed: Promise<ExitInfo> | undefined;
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (!killed && next < plan.length) {
      const r = plan[next++]!;
      sent.push(r);
      try {
        r.reply = await transfer(server.baseUrl, users[r.from]!, r);
        answered++;
        if (answered >= KILL_AFTER && !killed) killed = server.kill();
      } catch (e) {
        r.error = (e as Error).message;
      }
    }
  }));
  expect(killed, 'the server was killed mid-storm').toBeDefined();
  expect((await killed!).signal).toBe('SIGKILL');

  const unanswered = sent.filter((r) => !r.reply);
  expect(sent.length - unanswered.length).toBeGreaterThanOrEqual(KILL_AFTER);
  expect(unanswered.length, 'requests in flight at the kill got no answer').toBeGreaterThan(0);
  for (const r of sent.filter((x) => x.reply)) expect([201, 422, 503], r.reply!.raw).toContain(r.reply!.status);
  for (const r of sent.filter((x) => x.reply?.status === 422)) expect(r.reply!.body.error.code).toBe('INSUFFICIENT_FUNDS');
  for (const r of sent.filter((x) => x.reply?.status === 503)) expect(r.reply!.body.error.code).toBe('SERVICE_UNAVAILABLE');
  // A 503 (retries exhausted on a loaded machine) stores nothing: like a lost answer, it is re-sent.
  const transient = sent.filter((r) => r.reply?.status === 503);
  const lost = [...unanswered, ...transient];
  const got = sent.filter((r) => r.reply && r.reply.status !== 503);

  // The killed process's sessions end (their transactions commit or roll back) before we look.
  const drained = await waitUntil(async () => {
    const { rows } = await client.query<{ n: string }>(
      `SELECT count(*)::text AS n FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()`);
    return rows[0]!.n === '0';
  }, 20_000, 100);
  expect(drained, 'the killed server\'s database sessions are gone').toBe(true);
  await client.query('DROP TRIGGER test_slow_commit ON idempotency_keys; DROP FUNCTION test_slow_commit()');

  // --- a new start on the same database ----------------------------------------------
  server = await startServer({ env: serverEnv() });
  servers.push(server);

  const rec1 = await reconciliation(server.baseUrl);
  expect(rec1.mismatches).toEqual([]);
  expect(rec1.books.live.sum).toBe('0.00');
  expect(rec1.books.demo.sum).toBe('0.00');
  expect(rec1.ok).toBe(true);
  const mid = await liveBalances(server.baseUrl, users);
  for (const b of mid) expect(b >= 0n, `balance ${fromCents(b)}`).toBe(true);
  expect(fromCents(mid.reduce((a, b) => a + b, 0n))).toBe(fromCents(deposited));

  // No key was left half-done: a committed key always has its stored outcome.
  const { rows: stuck } = await client.query(`SELECT key FROM idempotency_keys WHERE status <> 'completed'`);
  expect(stuck).toEqual([]);

  // Every answered request is in the ledger exactly as answered.
  const keys = sent.map((r) => r.key);
  const beforeResend = await ledgerByKey(keys);
  for (const r of got) {
    expect(beforeResend.count(r.key), `${r.key} answered ${r.reply!.status}`).toBe(r.reply!.status === 201 ? 1 : 0);
  }
  for (const r of lost) expect(beforeResend.count(r.key), r.key).toBeLessThanOrEqual(1);
  for (const r of transient) {
    expect(beforeResend.count(r.key), `${r.key} answered 503`).toBe(0);
    expect(beforeResend.stored(r.key), `${r.key} answered 503: nothing stored`).toBeUndefined();
  }

  // --- re-send every lost request, twice, with its original key and body -------------------
  const resent: { r: StormRequest; committedBefore: boolean; first: HttpReply; second: HttpReply }[] = [];
  for (let i = 0; i < lost.length; i += 8) {
    await Promise.all(lost.slice(i, i + 8).map(async (r) => {
      const committedBefore = beforeResend.stored(r.key)?.status === 'completed';
      const first = await resend(server.baseUrl, users[r.from]!, r);
      const second = await resend(server.baseUrl, users[r.from]!, r);
      resent.push({ r, committedBefore, first, second });
    }));
  }
  for (const { r, committedBefore, first, second } of resent) {
    expect([201, 422], first.raw).toContain(first.status);
    if (committedBefore) {
      // The first attempt committed but its answer was lost: the resend is its replay.
      expect(first.headers.get('idempotent-replayed'), `${r.key} ${first.raw}`).toBe('true');
      expect(first.status).toBe(beforeResend.stored(r.key)!.response_status);
      if (first.status === 201) expect(beforeResend.count(r.key)).toBe(1);
    } else {
      expect(first.headers.get('idempotent-replayed'), `${r.key} ${first.raw}`).toBeNull();
      expect(beforeResend.count(r.key)).toBe(0);
    }
    // Whatever happened, the next resend is a replay of the same outcome.
    expect(second.headers.get('idempotent-replayed'), second.raw).toBe('true');
    expect(second.status).toBe(first.status);
    expect(second.body.operationId).not.toBe(first.body.operationId);
    if (first.status === 201) {
      expect(first.body.data.transaction.note).toBe(r.key);
      expect(second.body.data.transaction.id).toBe(first.body.data.transaction.id);
    }
  }

  // --- after the resends: each key applied exactly once if it succeeded, never twice ------------
  const afterResend = await ledgerByKey(keys);
  const finalStatus = new Map<string, number>([
    ...got.map((r) => [r.key, r.reply!.status] as const),
    ...resent.map(({ r, first }) => [r.key, first.status] as const),
  ]);
  expect(finalStatus.size).toBe(sent.length);
  for (const [key, status] of finalStatus) {
    expect(afterResend.count(key), `${key} final status ${status}`).toBe(status === 201 ? 1 : 0);
  }
  const succeeded = [...finalStatus.values()].filter((st) => st === 201).length;
  const { rows: roundOut } = await client.query<{ n: string }>(
    `SELECT count(*)::text AS n FROM ledger_postings WHERE type = 'transfer_out' AND note LIKE $1`, [`storm-${tag}-%`]);
  expect(Number(roundOut[0]!.n), 'no transfer of this round that no key accounts for').toBe(succeeded);

  const rec2 = await reconciliation(server.baseUrl);
  expect(rec2.mismatches).toEqual([]);
  expect(rec2.ok).toBe(true);
  const end = await liveBalances(server.baseUrl, users);
  for (const b of end) expect(b >= 0n, `balance ${fromCents(b)}`).toBe(true);
  expect(fromCents(end.reduce((a, b) => a + b, 0n))).toBe(fromCents(deposited));

  return {
    server,
    result: { sent: sent.length, answered: sent.length - unanswered.length, lost: lost.length, committedLost: resent.filter((x) => x.committedBefore).length },
  };
}

describe('kill -9 in the middle of a transfer storm', () => {
  it('loses no money, applies nothing twice and replays what committed', async () => {
    const run = randomBytes(4).toString('hex');
    let server = await startServer({ env: serverEnv() });
    servers.push(server);

    // --- ≥ 16 funded users -------------------------------------------------------
    const users: User[] = [];
    let deposited = 0n;
    for (let batch = 0; batch < USERS; batch += 8) {
      const made = await Promise.all(Array.from({ length: Math.min(8, USERS - batch) }, async (_, i) => {
        const reg = await registerVia(server.baseUrl, `storm-${run}-${batch + i}@example.com`);
        const amounts = [centsString(50_000 + randInt(100_000)), centsString(1 + randInt(9_999))];
        for (const [j, amount] of amounts.entries()) {
          const d = await http(server.baseUrl, 'POST', '/api/v1/wallets/live/deposit', { amount }, { token: reg.token, key: `fund-${run}-${j}` });
          expect(d.status, d.raw).toBe(201);
        }
        return { user: { token: reg.token, accountNumber: reg.user.accountNumber }, cents: amounts.reduce((s, a) => s + toCents(a), 0n) };
      }));
      for (const m of made) {
        users.push(m.user);
        deposited += m.cents;
      }
    }
    expect(users).toHaveLength(USERS);
    const before = await liveBalances(server.baseUrl, users);
    expect(before.reduce((a, b) => a + b, 0n)).toBe(deposited);

    // The kill lands between a COMMIT and its answer only by chance: storm again (bounded)
    // until at least one lost answer belonged to a committed transfer, so its replay is checked.
    const rounds: RoundResult[] = [];
    while (rounds.length < MAX_ROUNDS && !rounds.some((r) => r.committedLost > 0)) {
      const round = await stormRound(server, users, deposited, `${run}-${rounds.length}`);
      server = round.server;
      rounds.push(round.result);
      console.log(`crash storm round ${rounds.length}: ${round.result.sent} sent, ${round.result.answered} answered before the kill, `
        + `${round.result.lost} without an outcome (no answer, or a 503), ${round.result.committedLost} of them had committed (replayed on resend)`);
    }
    expect(rounds.some((r) => r.committedLost > 0), 'some lost answers belonged to committed transfers').toBe(true);

    // Nothing but the storms' transfers moved money between the users.
    const { rows: totalOut } = await client.query<{ n: string }>(`SELECT count(*)::text AS n FROM ledger_postings WHERE type = 'transfer_out' AND (note IS NULL OR note NOT LIKE 'storm-%')`);
    expect(totalOut[0]!.n).toBe('0');

    const exit = await server.terminate();
    expect(exit, server.output()).toMatchObject({ code: 0, signal: null });
  }, 240_000);
});
