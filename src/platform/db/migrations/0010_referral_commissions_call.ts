import { sql, type Kysely } from 'kysely';

/**
 * The referral commissions of a close, in SQL: `referral_commissions_pay` pays each
 * referrer of the chain passed (level 1 to 3) `volume × rate` rounded half-to-even to the
 * cent, credited to the referrer's live wallet against the `referral_commissions` house
 * account (both postings, as FinancialService writes a wallet change) and recorded in
 * referral_commissions, whose unique (order, level) key makes each happen at most once.
 *
 * It pays only for an order that the operation `p_operation_id` itself closed, from a
 * live wallet, and only once: sent in the same round trip as a user's `order_close`
 * call, it does nothing when that call replayed a stored answer or stored a rejection
 * (the order was not closed by this operation). Every close uses it (the user's, after
 * `order_close`; the risk engine's stop-loss, take-profit and stop-out, after
 * `order_settle` in the same round trip), so the commission exists once. It returns one row per commission paid, for the
 * `logger.financial` lines.
 *
 * `p_levels`: `[[referrerId, rate], …]` from level 1, as JSON (ids and rates as text).
 * `p_notify`: the risk engine's channel, told of each credited wallet with open positions
 * (NULL: nobody listens).
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE FUNCTION referral_commissions_pay(p_order_id bigint, p_operation_id text, p_levels jsonb, p_notify text DEFAULT NULL,
      OUT level int, OUT referrer_id bigint, OUT amount numeric, OUT old_balance numeric, OUT new_balance numeric, OUT posting_id bigint)
    RETURNS SETOF record
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
      o orders;
      w wallets;
      lv record;
      entry bigint;
      meta jsonb;
    BEGIN
      SELECT * INTO o FROM orders
      WHERE orders.id = p_order_id AND orders.status = 'closed' AND orders.close_operation_id = p_operation_id AND orders.wallet_type = 'live';
      IF NOT FOUND THEN RETURN; END IF;
      -- Paid already (the same statement sent twice): nothing, rather than a unique violation.
      IF EXISTS (SELECT 1 FROM referral_commissions c WHERE c.order_id = o.id) THEN RETURN; END IF;
      FOR lv IN SELECT x.value ->> 0 AS referrer, (x.value ->> 1)::numeric AS rate, x.ordinality AS n
                FROM jsonb_array_elements(p_levels) WITH ORDINALITY AS x
                WHERE x.ordinality <= 3 ORDER BY x.ordinality LOOP
        EXIT WHEN lv.referrer IS NULL;
        referral_commissions_pay.amount := round_cents_half_even(o.volume * lv.rate);
        CONTINUE WHEN referral_commissions_pay.amount <= 0;
        referral_commissions_pay.level := lv.n;
        referral_commissions_pay.referrer_id := lv.referrer::bigint;
        UPDATE wallets SET balance = wallets.balance + referral_commissions_pay.amount, updated_at = now()
        WHERE wallets.user_id = referral_commissions_pay.referrer_id AND wallets.type = 'live'
        RETURNING * INTO w;
        IF NOT FOUND THEN
          RAISE EXCEPTION 'no live wallet for referrer %', referral_commissions_pay.referrer_id USING ERRCODE = 'no_data_found';
        END IF;
        referral_commissions_pay.old_balance := w.balance - referral_commissions_pay.amount;
        referral_commissions_pay.new_balance := w.balance;
        meta := jsonb_build_object('level', lv.n, 'refereeId', o.user_id::text, 'orderId', o.id::text);
        entry := nextval('journal_entry_id_seq');
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, 'live', w.id, NULL, 'referral_commission', referral_commissions_pay.amount, w.balance, p_operation_id, o.id, meta)
        RETURNING ledger_postings.id INTO referral_commissions_pay.posting_id;
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, 'live', NULL, 'referral_commissions', 'referral_commission', -referral_commissions_pay.amount, NULL, p_operation_id, o.id, meta);
        INSERT INTO referral_commissions (order_id, level, referrer_id, referee_id, amount, posting_id, operation_id)
        VALUES (o.id, lv.n, referral_commissions_pay.referrer_id, o.user_id, referral_commissions_pay.amount, referral_commissions_pay.posting_id, p_operation_id);
        -- A referrer's wallet with positions: the risk engine learns of the credit on commit.
        IF w.margin > 0 AND p_notify IS NOT NULL THEN PERFORM pg_notify(p_notify, w.id::text); END IF;
        RETURN NEXT;
      END LOOP;
    END $$`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION referral_commissions_pay(bigint, text, jsonb, text)`.execute(db);
}
