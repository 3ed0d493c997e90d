import { sql, type Kysely } from 'kysely';
import { CLAIM, CLAIM_COLUMNS, DECLARE, KEY_PARAMETERS, reject, store, VALUATION, WALLET_JSON } from './0007_one_round_trip_money.js';

/**
 * Closing an order, in SQL only:
 *
 * - `order_settle` is the settlement of every close (user, stop-loss, take-profit,
 *   stop-out): the order row closed at the price given, its P&L (half-to-even to the
 *   cent), the margin released, the P&L posted against the house's dealing account, and,
 *   when a loss exceeds the balance, the shortfall credited back from
 *   `negative_balance_compensation` in an entry of its own so the balance ends at 0.00
 *   (API.md). It locks the order, then the wallet (DESIGN.md rule 3) and returns the
 *   wallet's new state (`settled` false when the order was not open). The risk engine's
 *   closes and the statement path call it in their transactions.
 * - `order_close` is a user's close as one call, like 0007's: the claim, the order's lock
 *   (rejections 'order' and 'not_open'), the close price from the quotes passed ('no_quote'
 *   with the symbol written where its body says `{symbol}`), order_settle, the notice for
 *   the market leader, the wallet's remaining positions and the stored response
 *   `{order, wallet}`, rendered as the TypeScript views render them. It returns the closed
 *   order and the settlement as JSON text for the after-commit work (risk engine, logs).
 *   The server now passes `p_notice` NULL and sends the leader's notice itself after the
 *   COMMIT (OrderService.orderNotice): a NOTIFY inside serialised the commits.
 */

/** SQL expression: API.md's `order` of `ord` as JSON text (prices with the symbol's digits). */
const ORDER_JSON = `'{"id":"' || ord.id::text
        || '","symbol":' || to_json(ord.symbol)::text
        || ',"side":"' || ord.side
        || '","volume":"' || round(ord.volume, 2)::text
        || '","leverage":' || ord.leverage::text
        || ',"walletType":"' || ord.wallet_type
        || '","openPrice":"' || round_half_even(ord.open_price, ord.digits)::text
        || '","margin":"' || round(ord.margin, 2)::text
        || '","stopLoss":' || CASE WHEN ord.stop_loss IS NULL THEN 'null' ELSE '"' || round_half_even(ord.stop_loss, ord.digits)::text || '"' END
        || ',"takeProfit":' || CASE WHEN ord.take_profit IS NULL THEN 'null' ELSE '"' || round_half_even(ord.take_profit, ord.digits)::text || '"' END
        || ',"status":"' || ord.status
        || '","closePrice":' || CASE WHEN ord.close_price IS NULL THEN 'null' ELSE '"' || round_half_even(ord.close_price, ord.digits)::text || '"' END
        || ',"profit":' || CASE WHEN ord.profit IS NULL THEN 'null' ELSE '"' || round(ord.profit, 2)::text || '"' END
        || ',"closeReason":' || CASE WHEN ord.close_reason IS NULL THEN 'null' ELSE '"' || ord.close_reason || '"' END
        || ',"openedAt":"' || iso_time(ord.opened_at)
        || '","closedAt":' || CASE WHEN ord.closed_at IS NULL THEN 'null' ELSE '"' || iso_time(ord.closed_at) || '"' END || '}'`;

export async function up(db: Kysely<unknown>): Promise<void> {
  // Prices shown with an order's digits, half-to-even like formatFixed (a quote can have
  // more decimals than an older order's digits when an instrument's digits were raised).
  await sql`
    CREATE FUNCTION round_half_even(x numeric, d int) RETURNS numeric
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
      SELECT CASE WHEN abs(x * power(10::numeric, d) - trunc(x * power(10::numeric, d))) = 0.5
                       AND mod(trunc(x * power(10::numeric, d)), 2) = 0
                  THEN round(trunc(x * power(10::numeric, d)) / power(10::numeric, d), d)
                  ELSE round(x, d) END
    $$`.execute(db);
  await sql.raw(`
    CREATE FUNCTION order_settle(p_order_id bigint, p_close_price numeric, p_reason text, p_operation_id text,
      OUT settled boolean, OUT profit numeric, OUT operation text,
      OUT id bigint, OUT user_id bigint, OUT type text, OUT currency text, OUT balance numeric, OUT margin numeric,
      OUT realized_profit numeric, OUT updated_at timestamptz, OUT old_balance numeric, OUT intermediate_balance numeric,
      OUT compensation numeric, OUT posting_id bigint, OUT posting_created_at timestamptz, OUT compensation_posting_id bigint)
    LANGUAGE plpgsql AS $$
    #variable_conflict use_column
    DECLARE
      o orders;
      w wallets;
      pr numeric;
      meta jsonb;
      entry bigint;
    BEGIN
      settled := false;
      IF p_close_price IS NULL OR p_close_price <= 0 THEN
        RAISE EXCEPTION 'order_settle needs a close price' USING ERRCODE = 'null_value_not_allowed';
      END IF;
      SELECT * INTO o FROM orders WHERE orders.id = p_order_id AND orders.status = 'open' FOR UPDATE;
      IF NOT FOUND THEN RETURN; END IF;
      pr := round_cents_half_even(CASE o.side WHEN 'buy' THEN p_close_price - o.open_price ELSE o.open_price - p_close_price END
                                  * o.volume * o.contract_size);
      UPDATE orders SET status = 'closed', close_price = p_close_price, profit = pr, close_reason = p_reason,
                        closed_at = now(), close_operation_id = p_operation_id
      WHERE orders.id = o.id;
      meta := jsonb_build_object('symbol', o.symbol, 'side', o.side, 'volume', round(o.volume, 2)::text,
                                 'closePrice', round_half_even(p_close_price, o.digits)::text, 'closeReason', p_reason);
      operation := CASE WHEN pr < 0 THEN 'trade_loss' WHEN pr > 0 THEN 'trade_profit' ELSE 'margin_release' END;

      SELECT * INTO w FROM wallets WHERE wallets.id = o.wallet_id FOR UPDATE;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'no wallet % for order %', o.wallet_id, o.id USING ERRCODE = 'no_data_found';
      END IF;
      order_settle.old_balance := w.balance;
      order_settle.intermediate_balance := w.balance + pr;
      UPDATE wallets SET balance = GREATEST(wallets.balance + pr, 0), margin = wallets.margin - o.margin,
                         realized_profit = wallets.realized_profit + pr, updated_at = now()
      WHERE wallets.id = w.id
      RETURNING * INTO w;
      IF pr <> 0 THEN
        entry := nextval('journal_entry_id_seq');
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, w.type, w.id, NULL, operation, pr, order_settle.intermediate_balance, p_operation_id, o.id, meta)
        RETURNING ledger_postings.id, ledger_postings.created_at INTO order_settle.posting_id, order_settle.posting_created_at;
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, w.type, NULL, 'dealing', operation, -pr, NULL, p_operation_id, o.id, meta);
      END IF;
      order_settle.compensation := GREATEST(-order_settle.intermediate_balance, 0);
      IF order_settle.compensation > 0 THEN
        entry := nextval('journal_entry_id_seq');
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, w.type, w.id, NULL, 'negative_balance_compensation', order_settle.compensation, 0, p_operation_id, o.id, meta)
        RETURNING ledger_postings.id INTO order_settle.compensation_posting_id;
        INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id, order_id, metadata)
        VALUES (entry, w.type, NULL, 'negative_balance_compensation', 'negative_balance_compensation', -order_settle.compensation, NULL,
                p_operation_id, o.id, meta);
      END IF;
      settled := true;
      order_settle.profit := pr;
      order_settle.id := w.id;
      order_settle.user_id := w.user_id;
      order_settle.type := w.type;
      order_settle.currency := w.currency;
      order_settle.balance := w.balance;
      order_settle.margin := w.margin;
      order_settle.realized_profit := w.realized_profit;
      order_settle.updated_at := w.updated_at;
    END $$`).execute(db);

  await sql.raw(`
    CREATE FUNCTION order_close(${KEY_PARAMETERS},
      p_order_id bigint, p_operation_id text, p_quotes jsonb, p_rejections jsonb, p_notice jsonb,
      ${CLAIM_COLUMNS}, OUT closed_order text, OUT settlement text, OUT open_orders int, OUT unrealized_pnl numeric)
    LANGUAGE plpgsql AS $$
    DECLARE ${DECLARE}
      reason text;
      ord orders;
      qt record;
      st record;
    BEGIN ${CLAIM}
      SELECT * INTO ord FROM orders WHERE orders.id = p_order_id AND orders.user_id = p_user FOR UPDATE;
      IF NOT FOUND THEN
        reason := 'order';
      ELSIF ord.status <> 'open' THEN
        reason := 'not_open';
      ELSE
        SELECT * INTO qt FROM jsonb_to_recordset(p_quotes) AS x (symbol text, bid numeric, ask numeric) WHERE x.symbol = ord.symbol;
        IF NOT FOUND THEN
          response_status := (p_rejections #>> '{no_quote,0}')::int;
          response_body := replace(p_rejections #>> '{no_quote,1}', '{symbol}', trim(to_json(ord.symbol)::text, '"'));
          ${store('order_close')}
          RETURN;
        END IF;
      END IF;
      ${reject('order_close')}
      SELECT * INTO st FROM order_settle(ord.id, CASE ord.side WHEN 'buy' THEN qt.bid ELSE qt.ask END, 'user', p_operation_id);
      SELECT * INTO ord FROM orders WHERE orders.id = p_order_id;
      SELECT * INTO w FROM wallets WHERE wallets.id = st.id;
      IF p_notice IS NOT NULL THEN
        PERFORM pg_notify(p_notice ->> 'channel',
          jsonb_build_object('o', p_notice -> 'o', 'w', ord.wallet_id::text, 'id', ord.id::text, 'l', p_notice -> 'l')::text);
      END IF;
      ${VALUATION}
      closed_order := row_to_json(ord)::text;
      settlement := row_to_json(st)::text;
      open_orders := n;
      unrealized_pnl := pnl;
      created := w.updated_at;
      t := iso_time(created);
      response_status := 200;
      response_body := '{"order":' || ${ORDER_JSON} || ',"wallet":' || ${WALLET_JSON} || '}';
      ${store('order_close')}
    END $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION order_close(bigint, text, text, text, text, int, bigint, text, jsonb, jsonb, jsonb)`.execute(db);
  await sql`DROP FUNCTION order_settle(bigint, numeric, text, text)`.execute(db);
  await sql`DROP FUNCTION round_half_even(numeric, int)`.execute(db);
}
