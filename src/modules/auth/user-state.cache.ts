/**
 * What every authenticated request must know about its user (token version, block,
 * role) without a database round trip each time. Entries are dropped when any
 * process changes the user (NOTIFY user_state, delivered on commit) and after a
 * lost listener connection; a ten-minute TTL is the backstop.
 */
import type { Db, Trx } from '../../platform/db/database.js';
import { sql } from 'kysely';
import type { Role } from '../../platform/db/schema.js';
import type { NotificationHub } from '../../platform/db/notifications.js';

export interface UserState {
  tokenVersion: number;
  blocked: boolean;
  role: Role;
}

export const USER_STATE_CHANNEL = 'user_state';

export class UserStateCache {
  private readonly entries = new Map<string, { state: UserState; at: number }>();
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
    hub.onReconnect(() => this.entries.clear());
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

  invalidate(userId: string): void {
    this.entries.delete(userId);
    for (const l of this.listeners) l(userId);
  }
}

/** Tells every process (on commit) that a user's tokens or block changed. */
export async function notifyUserChanged(trx: Trx, userId: string): Promise<void> {
  await sql`SELECT pg_notify(${USER_STATE_CHANNEL}, ${userId})`.execute(trx);
}
