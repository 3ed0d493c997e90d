/** Every query of the referral module (plain SQL: the tables are small and the queries indexed). */
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import { createdMicros, olderThan, type Cursor } from '../../platform/http/pagination.js';

/** The referrers of a user, level 1 to 3 (null where the chain ends). */
export async function referrerChain(trx: Db | Trx, userId: string): Promise<(string | null)[]> {
  const { rows } = await sql<{ l1: string | null; l2: string | null; l3: string | null }>`
    SELECT u0.referrer_id AS l1, u1.referrer_id AS l2, u2.referrer_id AS l3
    FROM users u0
    LEFT JOIN users u1 ON u1.id = u0.referrer_id
    LEFT JOIN users u2 ON u2.id = u1.referrer_id
    WHERE u0.id = ${userId}`.execute(trx);
  const r = rows[0];
  return r ? [r.l1, r.l2, r.l3] : [null, null, null];
}

/** The referrer chains of up to `limit` users with ids above `after`, by id (for a preload). */
export async function referrerChainsAfter(db: Db, after: string, limit: number): Promise<{ id: string; l1: string | null; l2: string | null; l3: string | null }[]> {
  const { rows } = await sql<{ id: string; l1: string | null; l2: string | null; l3: string | null }>`
    SELECT u0.id, u0.referrer_id AS l1, u1.referrer_id AS l2, u2.referrer_id AS l3
    FROM users u0
    LEFT JOIN users u1 ON u1.id = u0.referrer_id
    LEFT JOIN users u2 ON u2.id = u1.referrer_id
    WHERE u0.id > ${after}
    ORDER BY u0.id
    LIMIT ${limit}`.execute(db);
  return rows;
}

/** Up to `limit` referees whose signup bonus was paid, with ids above `after`, by id (for a preload). */
export async function paidRefereesAfter(db: Db, after: string, limit: number): Promise<string[]> {
  const { rows } = await sql<{ refereeId: string }>`
    SELECT referee_id FROM referral_bonuses WHERE referee_id > ${after} ORDER BY referee_id LIMIT ${limit}`.execute(db);
  return rows.map((r) => r.refereeId);
}

/** Claims the referee's one signup bonus; false when it was already paid (or is being paid). */
export async function claimSignupBonus(trx: Trx, b: { refereeId: string; referrerId: string; referrerAmount: string; refereeAmount: string; depositPostingId: string; operationId: string }): Promise<boolean> {
  const { rows } = await sql`
    INSERT INTO referral_bonuses (referee_id, referrer_id, referrer_amount, referee_amount, deposit_posting_id, operation_id)
    VALUES (${b.refereeId}, ${b.referrerId}, ${b.referrerAmount}, ${b.refereeAmount}, ${b.depositPostingId}, ${b.operationId})
    ON CONFLICT (referee_id) DO NOTHING
    RETURNING id`.execute(trx);
  return rows.length === 1;
}

export async function referralStats(db: Db, userId: string) {
  const { rows } = await sql<{
    referralCode: string; level1: string; level2: string; level3: string;
    c1: string | null; c2: string | null; c3: string | null; bonuses: string | null;
  }>`
    SELECT u.referral_code,
      (SELECT count(*) FROM users r1 WHERE r1.referrer_id = u.id) AS level1,
      (SELECT count(*) FROM users r1 JOIN users r2 ON r2.referrer_id = r1.id WHERE r1.referrer_id = u.id) AS level2,
      (SELECT count(*) FROM users r1 JOIN users r2 ON r2.referrer_id = r1.id JOIN users r3 ON r3.referrer_id = r2.id WHERE r1.referrer_id = u.id) AS level3,
      c.c1, c.c2, c.c3,
      (SELECT coalesce(sum(referrer_amount), 0) FROM referral_bonuses WHERE referrer_id = u.id)
        + (SELECT coalesce(sum(referee_amount), 0) FROM referral_bonuses WHERE referee_id = u.id) AS bonuses
    FROM users u
    LEFT JOIN LATERAL (
      SELECT sum(amount) FILTER (WHERE level = 1) AS c1, sum(amount) FILTER (WHERE level = 2) AS c2, sum(amount) FILTER (WHERE level = 3) AS c3
      FROM referral_commissions WHERE referrer_id = u.id
    ) c ON true
    WHERE u.id = ${userId}`.execute(db);
  return rows[0];
}

export async function listCommissions(db: Db, referrerId: string, limit: number, before?: Cursor) {
  const cursorFilter = before ? sql`AND ${olderThan(before, 'c.created_at', 'c.id')}` : sql``;
  const { rows } = await sql<{ id: string; level: number; amount: string; refereeAccountNumber: string; orderId: string; createdAt: Date; createdMicros: string }>`
    SELECT c.id, c.level, c.amount, u.account_number AS referee_account_number, c.order_id, c.created_at, ${createdMicros('c.created_at')} AS created_micros
    FROM referral_commissions c JOIN users u ON u.id = c.referee_id
    WHERE c.referrer_id = ${referrerId} ${cursorFilter}
    ORDER BY c.created_at DESC, c.id DESC
    LIMIT ${limit + 1}`.execute(db);
  return rows;
}
