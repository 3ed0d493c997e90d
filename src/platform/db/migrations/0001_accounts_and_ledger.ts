import { sql, type Kysely } from 'kysely';

/**
 * Users, wallets, the double-entry ledger, idempotency keys, login failures and the
 * admin audit log. The database defends the money itself (DESIGN.md rule 5): balance
 * and margin checks, append-only ledger, one wallet of each type per user.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE app_settings (
      key text PRIMARY KEY,
      value text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE users (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      email text NOT NULL CONSTRAINT users_email_lower CHECK (email = lower(email)),
      password_hash text NOT NULL,
      account_number text NOT NULL CONSTRAINT users_account_number_key UNIQUE,
      referral_code text NOT NULL CONSTRAINT users_referral_code_key UNIQUE,
      referrer_id bigint REFERENCES users (id),
      role text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
      blocked boolean NOT NULL DEFAULT false,
      token_version integer NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT users_not_own_referrer CHECK (referrer_id IS DISTINCT FROM id)
    );
    CREATE UNIQUE INDEX users_email_key ON users (email);
    CREATE INDEX users_referrer_id_idx ON users (referrer_id) WHERE referrer_id IS NOT NULL;
    CREATE INDEX users_created_idx ON users (created_at DESC, id DESC);

    CREATE TABLE wallets (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      user_id bigint NOT NULL REFERENCES users (id),
      type text NOT NULL CHECK (type IN ('live', 'demo')),
      currency char(3) NOT NULL DEFAULT 'USD',
      balance numeric(20, 2) NOT NULL DEFAULT 0 CONSTRAINT wallets_balance_nonnegative CHECK (balance >= 0),
      margin numeric(20, 2) NOT NULL DEFAULT 0 CONSTRAINT wallets_margin_nonnegative CHECK (margin >= 0),
      realized_profit numeric(20, 2) NOT NULL DEFAULT 0,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT wallets_user_type_key UNIQUE (user_id, type)
    );

    -- The house side of every entry. Their balances are derived from postings, never
    -- stored: a balance column here would be a row every transaction updates.
    CREATE TABLE house_accounts (
      code text PRIMARY KEY,
      description text NOT NULL
    );
    INSERT INTO house_accounts (code, description) VALUES
      ('deposit_gateway', 'Money arriving from payment providers'),
      ('withdrawal_gateway', 'Money leaving to payment providers'),
      ('demo_faucet', 'Play money of demo wallets'),
      ('adjustments', 'Manual adjustments by administrators'),
      ('dealing', 'Counterparty of trading profit and loss'),
      ('referral_commissions', 'Referral commissions paid'),
      ('referral_bonuses', 'Referral signup bonuses paid'),
      ('negative_balance_compensation', 'Losses beyond a wallet''s balance absorbed by the house');

    CREATE SEQUENCE journal_entry_id_seq;

    -- One row per posting. The postings of one entry share entry_id and sum to zero.
    CREATE TABLE ledger_postings (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      entry_id bigint NOT NULL,
      book text NOT NULL CHECK (book IN ('live', 'demo')),
      wallet_id bigint REFERENCES wallets (id),
      house_account text REFERENCES house_accounts (code),
      type text NOT NULL,
      amount numeric(20, 2) NOT NULL CHECK (amount <> 0),
      balance_after numeric(20, 2),
      operation_id text NOT NULL,
      order_id bigint,
      counterparty text,
      note text,
      metadata jsonb,
      created_at timestamptz NOT NULL DEFAULT now(),
      CONSTRAINT ledger_postings_one_account CHECK ((wallet_id IS NULL) <> (house_account IS NULL)),
      CONSTRAINT ledger_postings_balance_after_wallet CHECK ((wallet_id IS NULL) = (balance_after IS NULL))
    );
    CREATE INDEX ledger_postings_wallet_idx ON ledger_postings (wallet_id, created_at DESC, id DESC) WHERE wallet_id IS NOT NULL;
    CREATE INDEX ledger_postings_entry_idx ON ledger_postings (entry_id);
    CREATE INDEX ledger_postings_operation_idx ON ledger_postings (operation_id);
    CREATE INDEX ledger_postings_order_idx ON ledger_postings (order_id) WHERE order_id IS NOT NULL;

    CREATE FUNCTION ledger_postings_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'ledger postings are append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER ledger_postings_append_only
      BEFORE UPDATE OR DELETE ON ledger_postings
      FOR EACH ROW EXECUTE FUNCTION ledger_postings_append_only();
    CREATE TRIGGER ledger_postings_no_truncate
      BEFORE TRUNCATE ON ledger_postings
      FOR EACH STATEMENT EXECUTE FUNCTION ledger_postings_append_only();

    CREATE TABLE idempotency_keys (
      user_id bigint NOT NULL REFERENCES users (id),
      key text NOT NULL,
      method text NOT NULL,
      path text NOT NULL,
      request_hash text NOT NULL,
      status text NOT NULL CHECK (status IN ('processing', 'completed')),
      response_status integer,
      -- text, not jsonb: a replay returns the stored body byte for byte, key order included
      response_body text,
      created_at timestamptz NOT NULL DEFAULT now(),
      expires_at timestamptz NOT NULL,
      CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key)
    );
    CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

    CREATE TABLE login_failures (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      email text NOT NULL,
      ip text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX login_failures_email_ip_idx ON login_failures (email, ip, created_at);
    CREATE INDEX login_failures_email_idx ON login_failures (email, created_at);
    CREATE INDEX login_failures_created_idx ON login_failures (created_at);

    CREATE TABLE admin_audit (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      actor_id bigint NOT NULL REFERENCES users (id),
      action text NOT NULL,
      target_user_id bigint REFERENCES users (id),
      details jsonb NOT NULL DEFAULT '{}',
      operation_id text NOT NULL,
      created_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX admin_audit_created_idx ON admin_audit (created_at DESC, id DESC);
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE admin_audit, login_failures, idempotency_keys, ledger_postings, house_accounts, wallets, users, app_settings;
    DROP SEQUENCE journal_entry_id_seq;
    DROP FUNCTION ledger_postings_append_only();
  `.execute(db);
}
