import { sql, type Kysely } from 'kysely';

/**
 * Less work per money operation, found with the benchmark (bench/FINDINGS.md):
 *
 * - `ledger_postings_entry_idx` is dropped: no query looks postings up by entry (the
 *   reconciliation groups the whole table), and every posting paid for it.
 * - The house-account foreign key becomes a CHECK on the same eight codes. A foreign-key
 *   check takes FOR KEY SHARE on the referenced row, so every posting of every
 *   transaction locked one of eight house_accounts rows: a hot row (DESIGN.md rule 8)
 *   that turned concurrent share locks into multixacts. The CHECK keeps the guarantee.
 * - The idempotency keys' expiry index becomes BRIN: keys expire in the order they were
 *   written, so a block range index serves the cleanup job's range scan and costs
 *   next to nothing per insert, where the btree cost an index insert per key.
 * - Wallets and idempotency keys leave room on their pages (fillfactor), so the balance
 *   update and the stored response can be HOT updates (no index entries written).
 */
const HOUSE_ACCOUNTS = [
  'deposit_gateway', 'withdrawal_gateway', 'demo_faucet', 'adjustments', 'dealing',
  'referral_commissions', 'referral_bonuses', 'negative_balance_compensation',
] as const;

export async function up(db: Kysely<unknown>): Promise<void> {
  const codes = sql.join(HOUSE_ACCOUNTS.map((c) => sql.lit(c)));
  await sql`DROP INDEX ledger_postings_entry_idx`.execute(db);
  await sql`ALTER TABLE ledger_postings DROP CONSTRAINT ledger_postings_house_account_fkey`.execute(db);
  await sql`ALTER TABLE ledger_postings ADD CONSTRAINT ledger_postings_house_account_known CHECK (house_account IN (${codes}))`.execute(db);
  await sql`DROP INDEX idempotency_keys_expires_idx`.execute(db);
  await sql`CREATE INDEX idempotency_keys_expires_brin ON idempotency_keys USING brin (expires_at)`.execute(db);
  await sql`ALTER TABLE wallets SET (fillfactor = 80)`.execute(db);
  await sql`ALTER TABLE idempotency_keys SET (fillfactor = 70)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE idempotency_keys RESET (fillfactor)`.execute(db);
  await sql`ALTER TABLE wallets RESET (fillfactor)`.execute(db);
  await sql`DROP INDEX idempotency_keys_expires_brin`.execute(db);
  await sql`CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at)`.execute(db);
  await sql`ALTER TABLE ledger_postings DROP CONSTRAINT ledger_postings_house_account_known`.execute(db);
  await sql`ALTER TABLE ledger_postings ADD CONSTRAINT ledger_postings_house_account_fkey FOREIGN KEY (house_account) REFERENCES house_accounts (code)`.execute(db);
  await sql`CREATE INDEX ledger_postings_entry_idx ON ledger_postings (entry_id)`.execute(db);
}
