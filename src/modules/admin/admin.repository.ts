/** Every query of the admin module. */
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import { createdMicros, olderThan, type Cursor } from '../../platform/http/pagination.js';

export async function insertAudit(trx: Trx, a: { actorId: string; action: string; targetUserId: string | null; details: Record<string, unknown>; operationId: string }) {
  await trx.insertInto('adminAudit').values({ ...a, details: JSON.stringify(a.details) }).execute();
}

export async function listAudit(db: Db, limit: number, before?: Cursor) {
  let q = db.selectFrom('adminAudit').selectAll().select(createdMicros().as('createdMicros'));
  if (before) q = q.where(olderThan(before));
  return q.orderBy('createdAt', 'desc').orderBy('id', 'desc').limit(limit + 1).execute();
}

export async function searchUsers(db: Db, search: string | undefined, limit: number, before?: Cursor) {
  let q = db.selectFrom('users').selectAll().select(createdMicros().as('createdMicros'));
  if (search) {
    const s = search.toLowerCase();
    const like = `%${s.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    q = q.where((eb) => eb.or([eb('email', 'like', like), eb('accountNumber', '=', search)]));
  }
  if (before) q = q.where(olderThan(before));
  return q.orderBy('createdAt', 'desc').orderBy('id', 'desc').limit(limit + 1).execute();
}

export async function setBlocked(trx: Trx, userId: string, blocked: boolean) {
  return trx.updateTable('users').set({ blocked, updatedAt: new Date() }).where('id', '=', userId).returningAll().executeTakeFirst();
}

/** Wallets whose balance differs from the sum of their postings. */
export async function balanceMismatches(db: Db) {
  const { rows } = await sql<{ walletId: string; userId: string; walletType: string; actual: string; expected: string }>`
    SELECT w.id AS wallet_id, w.user_id, w.type AS wallet_type, w.balance AS actual, coalesce(p.total, 0) AS expected
    FROM wallets w
    LEFT JOIN (SELECT wallet_id, sum(amount) AS total FROM ledger_postings WHERE wallet_id IS NOT NULL GROUP BY wallet_id) p ON p.wallet_id = w.id
    WHERE w.balance <> coalesce(p.total, 0)
    ORDER BY w.id LIMIT 1000
  `.execute(db);
  return rows;
}

export async function countWallets(db: Db): Promise<number> {
  const row = await db.selectFrom('wallets').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
  return Number(row.n);
}

/** Each book's sum over user and house postings (must be 0.00), and entries that do not balance. */
export async function bookSums(db: Db) {
  const { rows } = await sql<{ book: string; total: string }>`SELECT book, sum(amount) AS total FROM ledger_postings GROUP BY book`.execute(db);
  const { rows: unbalanced } = await sql<{ entryId: string; total: string }>`
    SELECT entry_id, sum(amount) AS total FROM ledger_postings GROUP BY entry_id HAVING sum(amount) <> 0 LIMIT 100
  `.execute(db);
  return { sums: rows, unbalanced };
}
