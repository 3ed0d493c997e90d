/**
 * Read routing for DATABASE_READ_URLS (issue 7): read-only queries go to streaming
 * replicas, round-robin, and to the primary when no replica may answer.
 *
 * A replica may answer a read of user U only when
 *  - it is up (last probe or query fine; a connection error marks it down and it is
 *    re-probed every `probeIntervalMs`), and
 *  - its replay position (`pg_last_wal_replay_lsn()`, cached, refreshed at most every
 *    `refreshMs`) has reached U's last write LSN and the router's `floor`.
 *
 * Read-your-writes across processes: after a committed write the writer calls
 * `noteWrite(userId)`, which reads `pg_current_wal_insert_lsn()` on the primary (a
 * position at or past the write's commit record) and NOTIFYs `userId:lsn` on one
 * channel every process LISTENs to. Notifications can still be in flight when the
 * user's next request reaches another process, so `read()` first runs a fence: a
 * NOTIFY on this process's own channel, sent after the read arrived. PostgreSQL
 * delivers notifications in commit order, so when the fence comes back every write
 * note committed before the read arrived has been heard. Concurrent reads share a
 * fence, and one fence per process is in flight at a time.
 *
 * The floor covers what the router cannot know per user: writes before its LISTEN was
 * active (start-up, listener reconnect: the primary's LSN once the LISTEN is proven),
 * user entries evicted from the bounded map (their LSN), and lag (the primary's LSN of
 * `maxLagMs` ago: a replica further behind serves nobody).
 *
 * Without read URLs the router is the primary and does nothing else: no NOTIFY, no LSN
 * query, no timer.
 */
import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { DomainError } from '../errors.js';
import type { AppLogger } from '../logger.js';
import { createDatabase, type DatabaseHandle, type Db, type PoolSettings } from './database.js';
import type { NotificationHub } from './notifications.js';

/** Channel of the write notes, payload `userId:lsn`. */
export const WRITE_LSN_CHANNEL = 'read_your_writes';
export const REPLICA_APPLICATION_NAME = 'trading-backend-replica';

export interface ReadRouterOptions {
  primary: Db;
  /** DATABASE_READ_URLS; none = everything on the primary, at no cost. */
  readUrls?: readonly string[];
  /** Pool of each replica (default: 10 connections). */
  pool?: PoolSettings;
  /** Without a hub only this process's own writes are known (fine for one process). */
  hub?: NotificationHub;
  log?: AppLogger;
  /** Oldest cached replay LSN a read may rely on before a refresh is started (ms). */
  refreshMs?: number;
  /** Maintenance tick: probe down replicas, sample the primary's LSN, prune (ms). */
  probeIntervalMs?: number;
  probeTimeoutMs?: number;
  /** A replica more than this far behind the primary serves no reads (ms). */
  maxLagMs?: number;
  /** Bound of the per-user LSN map. */
  maxTrackedUsers?: number;
  /** Cross-process fence before each replica read (default on when a hub is given). */
  fence?: boolean;
  fenceTimeoutMs?: number;
}

interface Replica {
  name: string;
  handle: DatabaseHandle;
  up: boolean;
  replayLsn: bigint;
  checkedAt: number;
  refreshing: Promise<void> | undefined;
  lastError: string | undefined;
  reads: number;
}

export interface ReplicaStatus {
  name: string;
  up: boolean;
  replayLsn: string;
  reads: number;
  lastError?: string;
}

export interface ReadRouterStatus {
  enabled: boolean;
  /** True until the router has proven it hears every write note (then all reads go to the primary). */
  blind: boolean;
  floor: string;
  trackedUsers: number;
  primaryReads: number;
  retriedOnPrimary: number;
  replicas: ReplicaStatus[];
}

interface Fence {
  id: string;
  promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
  timer?: NodeJS.Timeout;
}

const NO_WAIT: Promise<void> = Promise.resolve();
const MAX_LSN = (1n << 64n) - 1n;

/** `16/B374D848` → bigint. */
export function parseLsn(text: string): bigint {
  const m = /^([0-9A-F]{1,8})\/([0-9A-F]{1,8})$/i.exec(text);
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/**
 * The position up to which a standby that replayed up to `replay` has everything.
 * A replay position at a page start (after a record ending there, or a WAL segment
 * switch) is the same state as that page's first record position, which is what the
 * primary's insert LSN reports while nothing newer exists: without this, a replica
 * would look behind forever on a quiet primary after every segment switch.
 */
export function replayHorizon(replay: bigint, blockSize: number, segmentSize: bigint): bigint {
  if (replay % segmentSize === 0n) return replay + 40n; // long page header (SizeOfXLogLongPHD)
  if (replay % BigInt(blockSize) === 0n) return replay + 24n; // short page header (SizeOfXLogShortPHD)
  return replay;
}

/** What a failed replica read means: down, a recovery conflict, unknown (probe it), or the query's own error. */
export function classifyReplicaError(err: unknown): 'connection' | 'conflict' | 'unknown' | 'other' {
  if (err instanceof DomainError) return 'other';
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string') {
    if (/^[0-9A-Z]{5}$/.test(code)) {
      // 08: connection exception; 57P01-03: shutdown / cannot connect now; 53300: too many connections.
      if (code.startsWith('08') || ['57P01', '57P02', '57P03', '53300'].includes(code)) return 'connection';
      // On a standby, a query cancelled by a recovery conflict.
      if (code === '40001' || code === '40P01') return 'conflict';
      return 'other';
    }
    if (/^E[A-Z_]+$/.test(code)) return 'connection'; // ECONNREFUSED, ECONNRESET, ETIMEDOUT, …
    return 'other';
  }
  // node-postgres reports a dropped connection and a pool acquire timeout as plain Errors.
  return err instanceof Error && err.constructor === Error ? 'unknown' : 'other';
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms); }),
  ]);
}

function replicaName(url: string, index: number): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 5432}${u.pathname}`;
  } catch {
    return `replica ${index + 1}`;
  }
}

/** Routes reads to replicas or the primary; one per process. */
export class ReadRouter {
  private readonly replicas: Replica[];
  private readonly primary: Db;
  private readonly hub: NotificationHub | undefined;
  private readonly log: AppLogger | undefined;
  private readonly refreshMs: number;
  private readonly probeIntervalMs: number;
  private readonly probeTimeoutMs: number;
  private readonly maxLagMs: number;
  private readonly maxTrackedUsers: number;
  private readonly fenceEnabled: boolean;
  private readonly fenceTimeoutMs: number;
  private readonly fenceChannel = `read_fence_${randomBytes(6).toString('hex')}`;

  /** userId → LSN of the user's last known write; Map order = least recently written first. */
  private readonly userLsn = new Map<string, bigint>();
  /** Users whose write LSN could not be read: primary only until the time given. */
  private readonly pinned = new Map<string, number>();
  private floor = 0n;
  private blind = true;
  private syncGeneration = 0;
  private syncing = false;
  private readonly lsnSamples: { at: number; lsn: bigint }[] = [];
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private fenceSeq = 0;
  private pendingFence: Fence | undefined;
  private inflightFence: Fence | undefined;
  private readonly fences = new Map<string, Fence>();
  private primaryReads = 0;
  private retriedOnPrimary = 0;

  constructor(options: ReadRouterOptions) {
    this.primary = options.primary;
    this.hub = options.hub;
    this.log = options.log;
    this.refreshMs = options.refreshMs ?? 75;
    this.probeIntervalMs = options.probeIntervalMs ?? 1000;
    this.probeTimeoutMs = options.probeTimeoutMs ?? 2000;
    this.maxLagMs = options.maxLagMs ?? 5000;
    this.maxTrackedUsers = options.maxTrackedUsers ?? 100_000;
    this.fenceEnabled = (options.fence ?? true) && options.hub !== undefined;
    this.fenceTimeoutMs = options.fenceTimeoutMs ?? 500;
    const pool = options.pool ?? { max: 10, min: 0, acquireTimeoutMs: 10_000, idleTimeoutMs: 10_000 };
    this.replicas = (options.readUrls ?? []).map((url, i) => ({
      name: replicaName(url, i),
      handle: createDatabase(url, pool, REPLICA_APPLICATION_NAME),
      up: false,
      replayLsn: 0n,
      checkedAt: 0,
      refreshing: undefined,
      lastError: 'not probed yet',
      reads: 0,
    }));
  }

  get enabled(): boolean {
    return this.replicas.length > 0;
  }

  /** Subscribes to the write notes and starts probing; a no-op without replicas. */
  start(): void {
    if (!this.enabled || this.timer || this.stopped) return;
    if (this.hub) {
      // The write channel first: its LISTEN is sent before the fence channel's, so an
      // echoed fence proves both are active.
      this.hub.on(WRITE_LSN_CHANNEL, (payload) => this.onWriteNote(payload));
      this.hub.on(this.fenceChannel, (payload) => this.onFence(payload));
      this.hub.onReconnect(() => {
        // Notes may have been missed: primary only until the LISTEN is proven again.
        this.blind = true;
        this.syncGeneration++;
        void this.sync();
      });
    }
    for (const r of this.replicas) void this.refresh(r);
    void this.sync();
    this.timer = setInterval(() => this.tick(), this.probeIntervalMs);
    this.timer.unref();
  }

  /** Stops the timer and closes the replica pools. */
  async close(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const f of [...this.fences.values(), ...(this.pendingFence ? [this.pendingFence] : [])]) f.reject(new Error('read router closed'));
    await Promise.all(this.replicas.map((r) => r.handle.close().catch(() => undefined)));
  }

  /**
   * The database for a read of `userId`, chosen now: a replica that has replayed the
   * user's last write, or the primary. No cross-process fence (see `read`): a write
   * made through another process counts once its note has arrived.
   */
  forUser(userId: string): Db {
    if (this.replicas.length === 0) return this.primary;
    return this.pick(userId)?.handle.db ?? this.primary;
  }

  /**
   * Runs a read on the database chosen for `userId`, after the cross-process fence.
   * A read that fails on a replica for a connection reason (or a recovery conflict)
   * runs once more on the primary. `fn` must not write.
   */
  async read<T>(userId: string, fn: (db: Db) => Promise<T>): Promise<T> {
    if (this.replicas.length === 0) return fn(this.primary);
    const replica = await this.choose(userId);
    if (!replica) {
      this.primaryReads++;
      return fn(this.primary);
    }
    try {
      const result = await fn(replica.handle.db);
      replica.reads++;
      return result;
    } catch (err) {
      const kind = classifyReplicaError(err);
      if (kind === 'other') throw err;
      if (kind === 'connection') this.markDown(replica, err);
      else if (kind === 'unknown') void this.refresh(replica); // the probe decides whether it is down
      this.retriedOnPrimary++;
      this.log?.warn({ replica: replica.name, err, kind }, 'replica read failed; retried on the primary');
      return fn(this.primary);
    }
  }

  /**
   * Call after a committed write of `userId` (before answering): the user's later reads,
   * in any process, see it. Costs one primary round trip, and only with replicas.
   */
  noteWrite(userId: string): Promise<void> {
    if (this.replicas.length === 0) return NO_WAIT;
    return this.recordWrite(userId);
  }

  status(): ReadRouterStatus {
    return {
      enabled: this.enabled,
      blind: this.enabled && this.blind,
      floor: formatLsn(this.floor),
      trackedUsers: this.userLsn.size,
      primaryReads: this.primaryReads,
      retriedOnPrimary: this.retriedOnPrimary,
      replicas: this.replicas.map((r) => ({
        name: r.name,
        up: r.up,
        replayLsn: formatLsn(r.replayLsn),
        reads: r.reads,
        ...(r.lastError ? { lastError: r.lastError } : {}),
      })),
    };
  }

  // --- choosing --------------------------------------------------------------

  private requiredLsn(userId: string): bigint {
    const until = this.pinned.get(userId);
    if (until !== undefined) {
      if (until > Date.now()) return MAX_LSN;
      this.pinned.delete(userId);
    }
    const own = this.userLsn.get(userId) ?? 0n;
    return own > this.floor ? own : this.floor;
  }

  /**
   * Round-robin over the replicas that may answer now (`advance` false only looks);
   * starts refreshes of stale replay positions.
   */
  private pick(userId: string, advance = true): Replica | undefined {
    if (this.blind) return undefined;
    const required = this.requiredLsn(userId);
    const now = Date.now();
    const n = this.replicas.length;
    let chosen: Replica | undefined;
    for (let i = 0; i < n; i++) {
      const index = (this.next + i) % n;
      const r = this.replicas[index]!;
      if (!r.up) continue;
      // The cached position only grows stale-low (safe); refresh it in the background.
      if (now - r.checkedAt > this.refreshMs) void this.refresh(r);
      if (!chosen && r.replayLsn >= required) {
        chosen = r;
        if (advance) this.next = index + 1;
      }
    }
    return chosen;
  }

  private async choose(userId: string): Promise<Replica | undefined> {
    if (!this.pick(userId, false)) return undefined; // nothing eligible: no fence needed
    if (this.fenceEnabled) {
      try {
        await this.fence();
      } catch {
        return undefined;
      }
    }
    // The fence may have brought this user's note.
    return this.pick(userId);
  }

  // --- write notes -----------------------------------------------------------

  private async recordWrite(userId: string): Promise<void> {
    try {
      const { rows } = await sql<{ lsn: string }>`SELECT lsn, pg_notify(${WRITE_LSN_CHANNEL}, ${userId}::text || ':' || lsn) FROM (SELECT pg_current_wal_insert_lsn()::text AS lsn) s`.execute(this.primary);
      this.remember(userId, parseLsn(rows[0]!.lsn));
    } catch (err) {
      // The write is committed; its position is unknown, so this process keeps the user on the primary.
      this.pinned.set(userId, Date.now() + this.maxLagMs);
      this.log?.warn({ err, userId }, 'could not record the write position; this user reads from the primary for a while');
    }
  }

  private onWriteNote(payload: string): void {
    const at = payload.lastIndexOf(':');
    if (at <= 0) return;
    try {
      this.remember(payload.slice(0, at), parseLsn(payload.slice(at + 1)));
    } catch {
      // a malformed note: ignore
    }
  }

  private remember(userId: string, lsn: bigint): void {
    const prev = this.userLsn.get(userId);
    if (prev !== undefined && prev >= lsn) return;
    this.userLsn.delete(userId);
    this.userLsn.set(userId, lsn);
    if (this.userLsn.size > this.maxTrackedUsers) {
      // The oldest entry goes; its LSN becomes everyone's requirement, which keeps it safe.
      const [oldest, oldestLsn] = this.userLsn.entries().next().value as [string, bigint];
      this.userLsn.delete(oldest);
      this.raiseFloor(oldestLsn);
    }
  }

  private raiseFloor(lsn: bigint): void {
    if (lsn > this.floor) this.floor = lsn;
  }

  // --- fences and the LISTEN proof -------------------------------------------

  /**
   * Resolves once every notification committed before this call has been heard. One
   * fence is in flight at a time; callers arriving meanwhile share the next one, which
   * is sent when the current one settles (after all of them arrived), like a group commit.
   */
  private fence(): Promise<void> {
    if (!this.hub?.connected) return Promise.reject(new Error('notification listener not connected'));
    if (!this.pendingFence) {
      let resolve!: () => void;
      let reject!: (err: Error) => void;
      const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
      this.pendingFence = { id: String(++this.fenceSeq), promise, resolve, reject };
      if (!this.inflightFence) setImmediate(() => this.sendFence());
    }
    return this.pendingFence.promise;
  }

  private sendFence(): void {
    const f = this.pendingFence;
    if (!f || this.inflightFence) return;
    this.pendingFence = undefined;
    if (this.stopped) return f.reject(new Error('read router closed'));
    this.inflightFence = f;
    const settled = () => {
      clearTimeout(f.timer);
      this.fences.delete(f.id);
      if (this.inflightFence === f) this.inflightFence = undefined;
      if (this.pendingFence) this.sendFence();
    };
    f.promise.then(settled, settled);
    this.fences.set(f.id, f);
    f.timer = setTimeout(() => f.reject(new Error('fence timed out')), this.fenceTimeoutMs);
    sql`SELECT pg_notify(${this.fenceChannel}, ${f.id})`.execute(this.primary).catch((err: Error) => f.reject(err));
  }

  private onFence(payload: string): void {
    this.fences.get(payload)?.resolve();
  }

  /**
   * Leaves blind mode once the LISTEN is proven (a fence came back) and the primary's
   * LSN read after that is the floor: every earlier write is covered by it, every
   * later one's note will be heard.
   */
  private async sync(): Promise<void> {
    if (this.stopped || this.syncing || !this.blind) return;
    if (!this.hub) {
      // One process: every write goes through this router.
      this.blind = false;
      return;
    }
    if (!this.hub.connected) return; // the hub's reconnect calls us again
    const generation = this.syncGeneration;
    this.syncing = true;
    try {
      await this.fence();
      const lsn = await this.primaryLsn();
      if (generation !== this.syncGeneration || this.stopped) return;
      this.raiseFloor(lsn);
      this.blind = false;
      this.log?.debug({ floor: formatLsn(this.floor) }, 'read router hears write notes; replicas may serve reads');
    } catch (err) {
      this.log?.debug({ err }, 'read router could not prove its LISTEN yet; retrying');
    } finally {
      this.syncing = false;
    }
  }

  private async primaryLsn(): Promise<bigint> {
    const { rows } = await sql<{ lsn: string }>`SELECT pg_current_wal_insert_lsn()::text AS lsn`.execute(this.primary);
    return parseLsn(rows[0]!.lsn);
  }

  // --- replicas --------------------------------------------------------------

  private refresh(r: Replica): Promise<void> {
    if (r.refreshing) return r.refreshing;
    r.refreshing = (async () => {
      try {
        const { rows } = await withTimeout(
          sql<{ recovery: boolean; lsn: string | null; block: number; segment: string }>`SELECT pg_is_in_recovery() AS recovery, pg_last_wal_replay_lsn()::text AS lsn, current_setting('wal_block_size')::int AS block, pg_size_bytes(current_setting('wal_segment_size'))::text AS segment`.execute(r.handle.db),
          this.probeTimeoutMs,
          `probe of replica ${r.name}`,
        );
        const row = rows[0]!;
        if (!row.recovery || row.lsn === null) {
          // A promoted or standalone server does not follow our primary.
          this.markDown(r, new Error('not a standby: pg_is_in_recovery() is false'));
          return;
        }
        // Set, not raised: after a restart the standby may be back at an earlier position.
        r.replayLsn = replayHorizon(parseLsn(row.lsn), row.block, BigInt(row.segment));
        r.checkedAt = Date.now();
        r.lastError = undefined;
        if (!r.up) {
          r.up = true;
          this.log?.info({ replica: r.name, replayLsn: row.lsn }, 'replica is up: it serves reads');
        }
      } catch (err) {
        this.markDown(r, err);
      } finally {
        r.refreshing = undefined;
      }
    })();
    return r.refreshing;
  }

  private markDown(r: Replica, err: unknown): void {
    r.lastError = err instanceof Error ? err.message || (err as { code?: string }).code || err.name : String(err);
    r.replayLsn = 0n;
    if (!r.up) return;
    r.up = false;
    this.log?.warn({ replica: r.name, reason: r.lastError }, 'replica is down: its reads go to the primary');
  }

  /** Probes down replicas, samples the primary's LSN for the lag bound, prunes the user map. */
  private tick(): void {
    if (this.stopped) return;
    for (const r of this.replicas) {
      if (!r.up || Date.now() - r.checkedAt > this.probeIntervalMs) void this.refresh(r);
    }
    if (this.blind) void this.sync();
    this.primaryLsn().then((lsn) => {
      const now = Date.now();
      this.lsnSamples.push({ at: now, lsn });
      // The newest sample at least maxLagMs old is the floor; older ones are done.
      let cut = -1;
      for (let i = 0; i < this.lsnSamples.length && this.lsnSamples[i]!.at <= now - this.maxLagMs; i++) cut = i;
      if (cut >= 0) {
        this.raiseFloor(this.lsnSamples[cut]!.lsn);
        this.lsnSamples.splice(0, cut + 1);
      }
    }, () => undefined);
    this.prune();
  }

  /** Entries every up replica has replayed need no memory: they move into the floor. */
  private prune(): void {
    const now = Date.now();
    for (const [userId, until] of this.pinned) if (until <= now) this.pinned.delete(userId);
    let min: bigint | undefined;
    for (const r of this.replicas) if (r.up && (min === undefined || r.replayLsn < min)) min = r.replayLsn;
    if (min === undefined) return;
    for (const [userId, lsn] of this.userLsn) {
      if (lsn > min) continue;
      this.userLsn.delete(userId);
      this.raiseFloor(lsn);
    }
  }
}
