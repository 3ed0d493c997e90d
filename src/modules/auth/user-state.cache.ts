/**
 * What every authenticated request must know about its user (token version, block,
 * role) without a database round trip each time. Entries are dropped when any
 * process changes the user (NOTIFY user_state, delivered on commit) and after a
 * lost listener connection; a ten-minute TTL is the backstop. `preload` fills it with
 * every user at start (100,000 users take a few MB and one query), so a user's first
 * request to a process does not cost a query of its own.
 */
import type { Db, Trx } from '../../platform/db/database.js';
import type { Role } from '../../platform/db/schema.js';
import type { NotificationHub } from '../../platform/db/notifications.js';
import { notifyOnCommit } from '../../platform/transaction.service.js';

export interface UserState {
  tokenVersion: number;
  blocked: boolean;
  role: Role;
}

export const USER_STATE_CHANNEL = 'user_state';

export class UserStateCache {
  private readonly entries = new Map<string, { state: UserState; at: number }>();
  /** Users invalidated while a preload runs: its rows for them may be older. */
  private invalidatedDuringLoad: Set<string> | undefined;
  /** Bumped by `clear`: a preload that started before stops adding rows. */
  private epoch = 0;
  /** Called on invalidation, so open streams of that user can be re-checked. */
  readonly listeners: ((userId: string) => void)[] = [];

  constructor(
    private readonly db: Db,
    // Invalidation arrives by NOTIFY on commit (and a lost listener connection clears
    // everything), so the TTL is only a backstop.
    private readonly ttlMs = 10 * 60_000,
    private readonly maxEntries = 200_000,
  ) {}

  attach(hub: NotificationHub): void {
    hub.on(USER_STATE_CHANNEL, (userId) => this.invalidate(userId));
    hub.onReconnect(() => {
      this.clear();
      // Back on the listener: refill (a preload while it is away could keep stale rows).
      if (hub.connected) this.preload().catch(() => undefined);
    });
  }

  async get(userId: string): Promise<UserState | undefined> {
    const hit = this.entries.get(userId);
    if (hit && Date.now() - hit.at < this.ttlMs) return hit.state;
    const row = await this.db.selectFrom('users').select(['tokenVersion', 'blocked', 'role']).where('id', '=', userId).executeTakeFirst();
    if (!row) return undefined;
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(userId, { state: row, at: Date.now() });
    return row;
  }

  /**
   * Loads every user's state (up to the cache's size) in pages of `pageSize` by id.
   * Returns how many were loaded. An invalidation that arrives meanwhile wins.
   */
  async preload(pageSize = 20_000): Promise<number> {
    const skip = new Set<string>();
    const epoch = this.epoch;
    this.invalidatedDuringLoad = skip;
    let loaded = 0;
    try {
      let after = '0';
      while (loaded < this.maxEntries) {
        const rows = await this.db.selectFrom('users').select(['id', 'tokenVersion', 'blocked', 'role'])
          .where('id', '>', after).orderBy('id').limit(Math.min(pageSize, this.maxEntries - loaded)).execute();
        if (rows.length === 0 || epoch !== this.epoch) break;
        const at = Date.now();
        for (const { id, ...state } of rows) {
          if (!skip.has(id) && !this.entries.has(id)) this.entries.set(id, { state, at });
        }
        loaded += rows.length;
        after = rows[rows.length - 1]!.id;
      }
    } finally {
      if (this.invalidatedDuringLoad === skip) this.invalidatedDuringLoad = undefined;
    }
    return loaded;
  }

  /** Forgets everything (messages may have been missed). */
  clear(): void {
    this.epoch++;
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }

  invalidate(userId: string): void {
    this.invalidatedDuringLoad?.add(userId);
    this.entries.delete(userId);
    for (const l of this.listeners) l(userId);
  }
}

/** Tells every process (on commit) that a user's tokens or block changed. */
export async function notifyUserChanged(trx: Trx, userId: string): Promise<void> {
  await notifyOnCommit(trx, USER_STATE_CHANNEL, userId);
}
