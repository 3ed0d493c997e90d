import { sql, type Kysely } from 'kysely';
import { CLAIM, CLAIM_COLUMNS, DECLARE, KEY_PARAMETERS, store, transactionHead, VALUATION, WALLET_JSON } from './0007_one_round_trip_money.js';

/**
 * A deposit to a wallet with open positions tells the risk engine, as a withdrawal does
 * (`NOTIFY p_notify` with the wallet's id, delivered on commit). Before, the engine saw a
 * deposit only at its next resync and could raise a margin call on the balance before it.
 * `wallet_deposit` of 0007 with one more parameter, last and optional (NULL: nobody
 * listens), so its callers' arguments stay valid; everything else is unchanged.
 * `depositFunction(false)` is 0007's function again (down()).
 */
const depositFunction = (notify: boolean) => `
    CREATE FUNCTION wallet_deposit(${KEY_PARAMETERS},
      p_type text, p_amount numeric, p_house text, p_operation_id text, p_metadata text, p_quotes jsonb${notify ? ', p_notify text DEFAULT NULL' : ''},
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
      ${notify ? 'IF w.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, w.id::text); END IF;' : ''}
      ${VALUATION}
      t := iso_time(created);
      response_status := 201;
      response_body := '{"transaction":' || ${transactionHead('deposit', 'p_amount')}
        || CASE WHEN p_metadata IS NULL THEN '' ELSE ',"metadata":' || p_metadata END
        || '},"wallet":' || ${WALLET_JSON} || '}';
      ${store('wallet_deposit')}
    END $$`;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION wallet_deposit(bigint, text, text, text, text, int, text, numeric, text, text, text, jsonb)`.execute(db);
  await sql.raw(depositFunction(true)).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION wallet_deposit(bigint, text, text, text, text, int, text, numeric, text, text, text, jsonb, text)`.execute(db);
  await sql.raw(depositFunction(false)).execute(db);
}
