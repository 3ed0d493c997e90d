/** Every query of the auth module. */
import { sql } from 'kysely';
import type { Db, Trx } from '../../platform/db/database.js';
import type { Role, UserRow } from '../../platform/db/schema.js';

export async function findUserByEmail(db: Db | Trx, email: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('email', '=', email).executeTakeFirst();
}

export async function findUserById(db: Db | Trx, id: string): Promise<UserRow | undefined> {
  return db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
}

export async function findUserIdByReferralCode(trx: Trx, code: string): Promise<string | undefined> {
  const row = await trx.selectFrom('users').select('id').where('referralCode', '=', code).executeTakeFirst();
  return row?.id;
}

export interface NewUser {
  email: string;
  passwordHash: string;
  accountNumber: string;
  referralCode: string;
  referrerId: string | null;
  role?: Role;
}

/**
 * Inserts a user with its live and demo wallets in one statement. Returns undefined
 * when a unique key (email, account number or referral code) is already taken.
 */
export async function insertUserWithWallets(trx: Trx, u: NewUser): Promise<UserRow | undefined> {
  const { rows } = await sql<UserRow>`
    WITH u AS (
      INSERT INTO users (email, password_hash, account_number, referral_code, referrer_id, role)
      VALUES (${u.email}, ${u.passwordHash}, ${u.accountNumber}, ${u.referralCode}, ${u.referrerId}, ${u.role ?? 'user'})
      ON CONFLICT DO NOTHING
      RETURNING *
    ), w AS (
      INSERT INTO wallets (user_id, type) SELECT u.id, t.type FROM u CROSS JOIN (VALUES ('live'), ('demo')) AS t (type)
    )
    SELECT * FROM u
  `.execute(trx);
  return rows[0];
}

export async function bumpTokenVersion(trx: Trx, userId: string, passwordHash?: string): Promise<number> {
  let q = trx.updateTable('users').set((eb) => ({ tokenVersion: eb('tokenVersion', '+', 1), updatedAt: new Date() }));
  if (passwordHash) q = q.set({ passwordHash });
  const row = await q.where('id', '=', userId).returning('tokenVersion').executeTakeFirstOrThrow();
  return row.tokenVersion;
}

/** Failed logins inside the two windows of the lock-out rule, newest first. */
export async function loginFailureWindow(db: Db, email: string, ip: string) {
  const { rows } = await sql<{ pairRetry: number | null; emailRetry: number | null }>`
    SELECT
      (SELECT extract(epoch from (created_at + interval '15 minutes' - now()))
         FROM login_failures WHERE email = ${email} AND ip = ${ip} AND created_at > now() - interval '15 minutes'
         ORDER BY created_at DESC OFFSET 4 LIMIT 1) AS pair_retry,
      (SELECT extract(epoch from (created_at + interval '1 hour' - now()))
         FROM login_failures WHERE email = ${email} AND created_at > now() - interval '1 hour'
         ORDER BY created_at DESC OFFSET 99 LIMIT 1) AS email_retry
  `.execute(db);
  const r = rows[0]!;
  return { pairRetry: r.pairRetry === null ? null : Number(r.pairRetry), emailRetry: r.emailRetry === null ? null : Number(r.emailRetry) };
}

export async function recordLoginFailure(db: Db, email: string, ip: string): Promise<void> {
  await db.insertInto('loginFailures').values({ email, ip }).execute();
}

export async function clearLoginFailures(db: Db, email: string, ip: string): Promise<void> {
  await db.deleteFrom('loginFailures').where('email', '=', email).where('ip', '=', ip).execute();
}

export async function deleteStaleLoginFailures(db: Db | Trx, batchSize = 5000): Promise<number> {
  const { numAffectedRows } = await sql`
    DELETE FROM login_failures WHERE id IN (
      SELECT id FROM login_failures WHERE created_at < now() - interval '1 hour' LIMIT ${batchSize}
    )`.execute(db);
  return Number(numAffectedRows ?? 0);
}

export async function getSetting(db: Db, key: string): Promise<string | undefined> {
  const row = await db.selectFrom('appSettings').select('value').where('key', '=', key).executeTakeFirst();
  return row?.value;
}

/** Stores a value unless one exists; returns the value that won. */
export async function putSettingOnce(db: Db, key: string, value: string): Promise<string> {
  await db.insertInto('appSettings').values({ key, value }).onConflict((oc) => oc.column('key').doNothing()).execute();
  return (await getSetting(db, key))!;
}

export async function upsertAdmin(trx: Trx, email: string, passwordHash: string, accountNumber: string, referralCode: string): Promise<UserRow> {
  const existing = await trx.selectFrom('users').selectAll().where('email', '=', email).forUpdate().executeTakeFirst();
  if (existing) {
    return trx.updateTable('users').set({ passwordHash, role: 'admin', updatedAt: new Date() }).where('id', '=', existing.id).returningAll().executeTakeFirstOrThrow();
  }
  const created = await insertUserWithWallets(trx, { email, passwordHash, accountNumber, referralCode, referrerId: null, role: 'admin' });
  if (!created) throw new Error('could not create the admin user');
  return created;
}
