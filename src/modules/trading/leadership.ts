/**
 * Leader election with a PostgreSQL session advisory lock held on a dedicated
 * connection (not a pool connection: the lock lives as long as that session).
 *
 * - `start()` makes one attempt and, when it wins, runs `acquire` before returning:
 *   a single process is the leader as soon as start-up is done.
 * - Followers retry `pg_try_advisory_lock` every `retryMs`.
 * - The leader checks its connection every `retryMs`; when it errors or ends, the
 *   process is no longer the leader (`release` runs) and PostgreSQL has dropped the
 *   lock, so another process takes it within about a second. A killed process loses
 *   its session, hence the lock, the same way.
 * - `stop()` releases (handlers first, then the session, so a follower takes over
 *   only after this process stopped acting).
 *
 * Every transition runs one at a time (a promise chain), so acquire and release never
 * interleave.
 */
import pg from 'pg';
import type { AppLogger } from '../../platform/logger.js';

export interface LeadershipHandlers {
  /** This process just became the leader: start the leader's work. A throw gives the lock back. */
  acquire(): Promise<void>;
  /** This process is no longer the leader (connection lost, or stop): stop the leader's work. */
  release(): Promise<void>;
}

export interface LeadershipOptions {
  retryMs?: number;
  /** Bound of the leader's connection check. */
  checkTimeoutMs?: number;
}

export class Leadership {
  private client: pg.Client | undefined;
  private leader = false;
  private stopped = true;
  private timer: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private busy = false;
  /** Times this process became the leader (for logs and tests). */
  terms = 0;
  private readonly retryMs: number;
  private readonly checkTimeoutMs: number;

  constructor(
    private readonly connectionString: string,
    /** Name of the lock (hashed into a 64-bit advisory lock key). */
    private readonly name: string,
    private readonly handlers: LeadershipHandlers,
    private readonly log: AppLogger,
    options: LeadershipOptions = {},
  ) {
    this.retryMs = options.retryMs ?? 1_000;
    this.checkTimeoutMs = options.checkTimeoutMs ?? 3_000;
  }

  get isLeader(): boolean {
    return this.leader;
  }

  /** One attempt now (acquire included when it wins), then retries/checks on a timer. */
  async start(): Promise<void> {
    this.stopped = false;
    await this.serial(() => this.tick());
    this.timer = setInterval(() => {
      if (this.busy) return;
      void this.serial(() => this.tick());
    }, this.retryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.serial(async () => {
      await this.demote('stopping');
      await this.dropClient();
    });
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(async () => {
      this.busy = true;
      try {
        await fn();
      } catch (err) {
        this.log.error({ err, lock: this.name }, 'leadership step failed');
      } finally {
        this.busy = false;
      }
    });
    this.chain = run;
    return run;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    if (this.leader) {
      if (!(await this.healthy())) await this.demote('lock connection lost');
      return;
    }
    const client = await this.connection();
    if (!client) return;
    let won = false;
    try {
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtextextended($1, 7)) AS ok', [this.name]);
      won = rows[0]?.ok === true;
    } catch (err) {
      this.log.warn({ err, lock: this.name }, 'leader election attempt failed');
      await this.dropClient();
      return;
    }
    if (!won || this.stopped) {
      if (won) await this.dropClient();
      return;
    }
    this.leader = true;
    this.terms++;
    this.log.info({ lock: this.name, pid: process.pid }, 'became the leader');
    try {
      await this.handlers.acquire();
    } catch (err) {
      this.log.error({ err, lock: this.name }, 'could not start as the leader; giving the lock back');
      await this.demote('start failed');
      await this.dropClient();
    }
  }

  private async demote(reason: string): Promise<void> {
    if (!this.leader) return;
    this.leader = false;
    this.log.warn({ lock: this.name, reason }, 'no longer the leader');
    try {
      await this.handlers.release();
    } catch (err) {
      this.log.error({ err, lock: this.name }, 'leader release failed');
    }
  }

  /** The session holding the lock still answers (bounded). */
  private async healthy(): Promise<boolean> {
    const c = this.client;
    if (!c) return false;
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        c.query('SELECT 1'),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('lock connection check timed out')), this.checkTimeoutMs); }),
      ]);
      return true;
    } catch {
      await this.dropClient();
      return false;
    } finally {
      if (timer) clearTimeout(timer);
    }
  }

  private async connection(): Promise<pg.Client | undefined> {
    if (this.client) return this.client;
    const client = new pg.Client({ connectionString: this.connectionString, application_name: 'trading-backend-leader', keepAlive: true });
    const lost = () => {
      if (this.client !== client) return;
      this.client = undefined;
      // The lock went with the session: stop acting now, not at the next check.
      if (this.leader && !this.stopped) void this.serial(() => this.demote('lock connection lost'));
    };
    client.on('error', lost);
    client.on('end', lost);
    try {
      await client.connect();
    } catch (err) {
      this.log.warn({ err, lock: this.name }, 'leader election: cannot connect');
      await client.end().catch(() => undefined);
      return undefined;
    }
    this.client = client;
    return client;
  }

  private async dropClient(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => undefined);
  }
}
