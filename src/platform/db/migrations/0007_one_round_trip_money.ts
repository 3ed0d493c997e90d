import { sql, type Kysely } from 'kysely';

/**
 * Deposit, withdrawal and transfer as one PL/pgSQL call each, so the whole transaction
 * is one round trip (`BEGIN; SET LOCAL …; SELECT * FROM wallet_deposit(…); COMMIT`). The
 * second round trip of the statement form, not the work, was the larger cost: pgbench
 * running a deposit's SQL on one database gave 0.42× pgbench -N as two round trips and
 * 0.72× as one call (bench/FINDINGS.md). DESIGN.md's rules hold inside each call:
 *
 * - rule 6: the key is claimed first (CLAIM below: advisory try-lock on user and key, the
 *   same lock as IdempotencyService's claim statement, so the two paths exclude each
 *   other; then the key row inserted, or an expired one taken over, or the completed one
 *   returned untouched), and the response, or a business rejection, is written to the key
 *   row before the call returns. Every check runs before the first write, so a rejection
 *   needs no savepoint: it stores its answer and changes nothing else;
 * - rules 2 and 3: the wallets are locked (FOR UPDATE, several in ascending id order)
 *   before their values decide anything; balances change as `balance = balance ± amount`;
 * - rule 7: each entry's postings share an entry id and sum to zero.
 *
 * The claim is the same as IdempotencyService's claim statement, written again in
 * PL/pgSQL (a nested function call measured slower than the inlined block); both take
 * the same advisory lock, so a key is never processed by both paths at once.
 *
 * The calls answer in the same JSON text the TypeScript views render (`{transaction,
 * wallet}`: keys in the same order, money with two decimals, times in ISO-8601 UTC with
 * milliseconds), the wallet valued at the quotes the caller passes: each open order's
 * unrealized P&L rounded half-to-even to the cent, as API.md says. Rejections are the
 * bodies the caller passes (`p_rejections`: reason → [status, body]), so their text
 * lives in TypeScript only. test/wallets/money-calls.test.ts compares both paths byte
 * for byte.
 */

/**
 * Building blocks of the calls, also used by later migrations' calls (0008). Frozen with
 * this migration: a change to a call belongs in a new migration that replaces it.
 */

/** The parameters every call starts with: the idempotency key (IdempotencyService.claimArguments). */
export const KEY_PARAMETERS = 'p_user bigint, p_key text, p_method text, p_path text, p_hash text, p_ttl_hours int';
/** The columns every call returns first: the claim's, then the response it stored. */
export const CLAIM_COLUMNS = 'OUT locked boolean, OUT inserted boolean, OUT request_hash text, OUT response_status int, OUT response_body text';

/** PL/pgSQL: claims the key, or returns (inserted false) what the key already holds. */
export const CLAIM = `
      inserted := false;
      locked := pg_try_advisory_xact_lock(hashtextextended(p_user::text || ':' || p_key, 0));
      IF NOT locked THEN RETURN; END IF;
      INSERT INTO idempotency_keys AS k (user_id, key, method, path, request_hash, status, expires_at)
      VALUES (p_user, p_key, p_method, p_path, p_hash, 'processing', now() + make_interval(hours => p_ttl_hours))
      ON CONFLICT (user_id, key) DO UPDATE
        SET method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
            status = 'processing', response_status = NULL, response_body = NULL,
            created_at = now(), expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now();
      inserted := FOUND;
      IF NOT inserted THEN
        SELECT k.request_hash, k.response_status, k.response_body INTO request_hash, response_status, response_body
        FROM idempotency_keys k WHERE k.user_id = p_user AND k.key = p_key AND k.status = 'completed';
        RETURN;
      END IF;`;

/** PL/pgSQL: writes the call's response_status and response_body to the key row (never NULL: see the CHECK below). */
export const store = (fn: string) => `
      IF ${fn}.response_status IS NULL OR ${fn}.response_body IS NULL THEN
        RAISE EXCEPTION '% would store no response', '${fn}';
      END IF;
      UPDATE idempotency_keys SET status = 'completed', response_status = ${fn}.response_status, response_body = ${fn}.response_body
      WHERE user_id = p_user AND key = p_key;`;

/** PL/pgSQL: stores the rejection `reason` (a key of p_rejections) and returns. */
export const reject = (fn: string) => `
      IF reason IS NOT NULL THEN
        response_status := (p_rejections #>> ARRAY[reason, '0'])::int;
        response_body := p_rejections #>> ARRAY[reason, '1'];
        ${store(fn)}
        RETURN;
      END IF;`;

/** PL/pgSQL: n (open orders) and pnl (their unrealized P&L at p_quotes) of the wallet in `w`. */
export const VALUATION = `
      IF w.margin > 0 THEN
        SELECT count(*), COALESCE(sum(round_cents_half_even(
                 CASE o.side WHEN 'buy' THEN q.bid - o.open_price ELSE o.open_price - q.ask END * o.volume * o.contract_size)), 0)
        INTO n, pnl
        FROM orders o LEFT JOIN jsonb_to_recordset(p_quotes) AS q (symbol text, bid numeric, ask numeric) ON q.symbol = o.symbol
        WHERE o.wallet_id = w.id AND o.status = 'open';
      END IF;`;

/** SQL expression: API.md's `wallet` of `w` (after the change) as JSON text, with n and pnl from VALUATION. */
export const WALLET_JSON = `'{"type":' || to_json(w.type)::text
        || ',"currency":' || to_json(trim(w.currency))::text
        || ',"balance":"' || round(w.balance, 2)::text
        || '","margin":"' || round(w.margin, 2)::text
        || '","equity":"' || round(w.balance + pnl, 2)::text
        || '","freeMargin":"' || round(w.balance + pnl - w.margin, 2)::text
        || '","marginLevel":' || CASE WHEN n > 0 AND w.margin > 0
                                      THEN '"' || round_cents_half_even(round(w.balance + pnl, 40) * 100 / w.margin)::text || '"'
                                      ELSE 'null' END
        || ',"realizedProfit":"' || round(w.realized_profit, 2)::text
        || '","updatedAt":"' || CASE WHEN w.updated_at = created THEN t ELSE iso_time(w.updated_at) END || '"}'`;

/** SQL expression: the common head of API.md's `transaction` (the posting in posting_id, created). */
export const transactionHead = (type: string, amount: string) => `'{"id":"' || posting_id::text
        || '","type":"${type}","amount":"' || round(${amount}, 2)::text
        || '","balanceAfter":"' || round(w.balance, 2)::text
        || '","createdAt":"' || t
        || '","operationId":' || to_json(p_operation_id)::text`;

export const DECLARE = `
      w wallets;
      entry bigint;
      created timestamptz;
      t text;
      n int := 0;
      pnl numeric := 0;`;

export async function up(db: Kysely<unknown>): Promise<void> {
  // Rule 5: a completed key always has the response a replay returns.
  await sql`
    ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_completed_has_response
      CHECK (status <> 'completed' OR (response_status IS NOT NULL AND response_body IS NOT NULL))`.execute(db);
  await sql`
    CREATE FUNCTION round_cents_half_even(x numeric) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
      SELECT CASE WHEN abs(x * 100 - trunc(x * 100)) = 0.5 AND mod(trunc(x * 100), 2) = 0
                  THEN round(trunc(x * 100) / 100, 2)
                  ELSE round(x, 2) END
    $$`.execute(db);

  await sql`
    CREATE FUNCTION iso_time(t timestamptz) RETURNS text
    LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
      SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    $$`.execute(db);

  // A deposit: its only failure, a missing wallet, raises no_data_found and rolls the
  // whole transaction back, key included (as the statement path does: no savepoint).
  await sql.raw(`
    CREATE FUNCTION wallet_deposit(${KEY_PARAMETERS},
      p_type text, p_amount numeric, p_house text, p_operation_id text, p_metadata text, p_quotes jsonb,
      ${CLAIM_COLUMNS}, OUT old_balance numeric, OUT new_balance numeric, OUT posting_id bigint)
    LANGUAGE plpgsql AS $$
    DECLARE ${DECLARE}
    BEGIN ${CLAIM}
      UPDATE wallets SET balance = balance + p_amount, updated_at = now()
      WHERE user_id = p_user AND type = p_type
      RETURNING * INTO w;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'no % wallet for user %', p_type, p_user USING ERRCODE = 'no_data_found';
      END IF;
      old_balance := w.balance - p_amount;
      new_balance := w.balance;
      entry := nextval('journal_entry_id_seq');
      INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, metadata)
      VALUES (entry, w.type, w.id, NULL, 'deposit', p_amount, w.balance, p_operation_id, p_metadata::jsonb)
      RETURNING id, created_at INTO posting_id, created;
      INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, metadata)
      VALUES (entry, w.type, NULL, p_house, 'deposit', -p_amount, NULL, p_operation_id, p_metadata::jsonb);
      ${VALUATION}
      t := iso_time(created);
      response_status := 201;
      response_body := '{"transaction":' || ${transactionHead('deposit', 'p_amount')}
        || CASE WHEN p_metadata IS NULL THEN '' ELSE ',"metadata":' || p_metadata END
        || '},"wallet":' || ${WALLET_JSON} || '}';
      ${store('wallet_deposit')}
    END $$`).execute(db);

  // A withdrawal: withdrawable = min(balance - margin, free margin) (API.md). Rejections
  // ('funds': more than balance - margin, or no wallet; 'free_margin': open positions'
  // free margin would go below 0) are stored. A wallet with positions tells the risk
  // engine it changed (NOTIFY p_notify, delivered on commit).
  await sql.raw(`
    CREATE FUNCTION wallet_withdraw(${KEY_PARAMETERS},
      p_type text, p_amount numeric, p_house text, p_operation_id text, p_quotes jsonb, p_rejections jsonb, p_notify text,
      ${CLAIM_COLUMNS}, OUT old_balance numeric, OUT new_balance numeric, OUT posting_id bigint)
    LANGUAGE plpgsql AS $$
    DECLARE ${DECLARE}
      reason text;
    BEGIN ${CLAIM}
      SELECT * INTO w FROM wallets WHERE user_id = p_user AND type = p_type FOR UPDATE;
      IF NOT FOUND OR w.balance - w.margin < p_amount THEN
        reason := 'funds';
      ELSE ${VALUATION}
        IF w.margin > 0 AND w.balance - p_amount + pnl - w.margin < 0 THEN reason := 'free_margin'; END IF;
      END IF;
      ${reject('wallet_withdraw')}
      UPDATE wallets SET balance = balance - p_amount, updated_at = now() WHERE id = w.id RETURNING * INTO w;
      old_balance := w.balance + p_amount;
      new_balance := w.balance;
      entry := nextval('journal_entry_id_seq');
      INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id)
      VALUES (entry, w.type, w.id, NULL, 'withdrawal', -p_amount, w.balance, p_operation_id)
      RETURNING id, created_at INTO posting_id, created;
      INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id)
      VALUES (entry, w.type, NULL, p_house, 'withdrawal', p_amount, NULL, p_operation_id);
      IF w.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, w.id::text); END IF;
      t := iso_time(created);
      response_status := 201;
      response_body := '{"transaction":' || ${transactionHead('withdrawal', '-p_amount')}
        || '},"wallet":' || ${WALLET_JSON} || '}';
      ${store('wallet_withdraw')}
    END $$`).execute(db);

  // A transfer to the same wallet type of the account p_to. Both wallets are locked in
  // ascending id order. Rejections: 'wallet' (the sender has none), 'recipient' (no such
  // account), 'funds', 'free_margin'; a transfer to oneself is a 400 that is never
  // stored: it raises SQLSTATE 'TS400', which rolls everything back, key included.
  // (Migration 0012 adds the recipient's notice to this function.)
  await sql.raw(`
    CREATE FUNCTION wallet_transfer(${KEY_PARAMETERS},
      p_type text, p_to text, p_amount numeric, p_operation_id text, p_note text, p_quotes jsonb, p_rejections jsonb, p_notify text,
      ${CLAIM_COLUMNS}, OUT old_balance numeric, OUT new_balance numeric, OUT recipient_old_balance numeric,
      OUT recipient_new_balance numeric, OUT posting_id bigint)
    LANGUAGE plpgsql AS $$
    DECLARE ${DECLARE}
      reason text;
      r wallets;
      rec record;
      sender_account text;
      recipient_id bigint;
      recipient_account text;
    BEGIN ${CLAIM}
      -- Account numbers never change: read unlocked. The lock statement has no join, so
      -- when it waits for a concurrent update it re-checks only the wallet's own columns
      -- (a join or a semi-join there let READ COMMITTED's re-check drop the sender's row
      -- under load, answering 404 for a wallet that exists).
      SELECT u.account_number INTO sender_account FROM users u WHERE u.id = p_user;
      SELECT u.id, u.account_number INTO recipient_id, recipient_account FROM users u WHERE u.account_number = p_to;
      FOR rec IN
        SELECT lw AS wallet FROM wallets lw
        WHERE lw.type = p_type AND lw.user_id IN (p_user, recipient_id)
        ORDER BY lw.id
        FOR UPDATE
      LOOP
        IF (rec.wallet).user_id = p_user THEN w := rec.wallet; ELSE r := rec.wallet; END IF;
      END LOOP;
      IF w.id IS NULL THEN
        reason := 'wallet';
      ELSIF sender_account = p_to THEN
        RAISE EXCEPTION 'transfer to one''s own account' USING ERRCODE = 'TS400';
      ELSIF r.id IS NULL THEN
        reason := 'recipient';
      ELSIF w.balance - w.margin < p_amount THEN
        reason := 'funds';
      ELSE ${VALUATION}
        IF w.margin > 0 AND w.balance - p_amount + pnl - w.margin < 0 THEN reason := 'free_margin'; END IF;
      END IF;
      ${reject('wallet_transfer')}
      old_balance := w.balance;
      recipient_old_balance := r.balance;
      UPDATE wallets SET balance = balance - p_amount, updated_at = now() WHERE id = w.id RETURNING * INTO w;
      UPDATE wallets SET balance = balance + p_amount, updated_at = now() WHERE id = r.id RETURNING * INTO r;
      new_balance := w.balance;
      recipient_new_balance := r.balance;
      entry := nextval('journal_entry_id_seq');
      INSERT INTO ledger_postings (entry_id, book, wallet_id, type, amount, balance_after, operation_id, counterparty, note)
      VALUES (entry, w.type, w.id, 'transfer_out', -p_amount, w.balance, p_operation_id, recipient_account, p_note)
      RETURNING id, created_at INTO posting_id, created;
      INSERT INTO ledger_postings (entry_id, book, wallet_id, type, amount, balance_after, operation_id, counterparty, note)
      VALUES (entry, r.type, r.id, 'transfer_in', p_amount, r.balance, p_operation_id, sender_account, p_note);
      IF w.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, w.id::text); END IF;
      t := iso_time(created);
      response_status := 201;
      response_body := '{"transaction":' || ${transactionHead('transfer_out', '-p_amount')}
        || ',"counterparty":' || to_json(recipient_account)::text
        || CASE WHEN p_note IS NULL THEN '' ELSE ',"note":' || to_json(p_note)::text END
        || '},"wallet":' || ${WALLET_JSON} || '}';
      ${store('wallet_transfer')}
    END $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION wallet_transfer(bigint, text, text, text, text, int, text, text, numeric, text, text, jsonb, jsonb, text)`.execute(db);
  await sql`DROP FUNCTION wallet_withdraw(bigint, text, text, text, text, int, text, numeric, text, text, jsonb, jsonb, text)`.execute(db);
  await sql`DROP FUNCTION wallet_deposit(bigint, text, text, text, text, int, text, numeric, text, text, text, jsonb)`.execute(db);
  await sql`DROP FUNCTION iso_time(timestamptz)`.execute(db);
  await sql`DROP FUNCTION round_cents_half_even(numeric)`.execute(db);
  await sql`ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_completed_has_response`.execute(db);
}
