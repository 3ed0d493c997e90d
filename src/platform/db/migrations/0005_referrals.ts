import { sql, type Kysely } from 'kysely';

/**
 * Referral bonuses and commissions. The unique keys are the "exactly once" of
 * API.md: one signup bonus per referee, one commission per order and level, also
 * against two transactions arriving at the same moment.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE referral_bonuses (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      referee_id bigint NOT NULL REFERENCES users (id),
      referrer_id bigint NOT NULL REFERENCES users (id),
      referrer_amount numeric(20, 2) NOT NULL CHECK (referrer_amount >= 0),
      referee_amount numeric(20, 2) NOT NULL CHECK (referee_amount >= 0),
      deposit_posting_id bigint NOT NULL,
      operation_id text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT referral_bonuses_referee_key UNIQUE (referee_id)
    );
    CREATE INDEX referral_bonuses_referrer_idx ON referral_bonuses (referrer_id);

    CREATE TABLE referral_commissions (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      order_id bigint NOT NULL REFERENCES orders (id),
      level smallint NOT NULL CHECK (level BETWEEN 1 AND 3),
      referrer_id bigint NOT NULL REFERENCES users (id),
      referee_id bigint NOT NULL REFERENCES users (id),
      amount numeric(20, 2) NOT NULL CHECK (amount > 0),
      posting_id bigint NOT NULL,
      operation_id text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT referral_commissions_order_level_key UNIQUE (order_id, level)
    );
    CREATE INDEX referral_commissions_referrer_idx ON referral_commissions (referrer_id, created_at DESC, id DESC);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE referral_commissions, referral_bonuses`.execute(db);
}
