import { sql, type Kysely } from 'kysely';
import { CLAIM, CLAIM_COLUMNS, DECLARE, KEY_PARAMETERS, reject, store, VALUATION, WALLET_JSON } from './0007_one_round_trip_money.js';

/**
 * Opening an order as one PL/pgSQL call, like the money calls of 0007: one round trip.
 * Everything that depends only on the request and the quote (instrument, volume,
 * leverage, levels, open price, required margin, the new order's unrealized P&L and its
 * view) is decided in TypeScript before the call; a request that fails there takes the
 * statement path, which stores the rejection. The call claims the key, locks the wallet,
 * values its open positions at the quotes passed, checks the free margin (rejection
 * 'wallet', or 'margin' with the free margin written into its message where the body
 * says `{freeMargin}`), inserts the order, reserves its margin, tells the market leader
 * (NOTIFY p_notice->>'channel' with `{o, w, id, l}`, delivered on commit) and stores the
 * response: `{order, wallet}`, the order as TypeScript rendered it (`p_order_view`: the
 * view's fields between `id` and `openedAt`) with its id and open time filled in. A call
 * that waited more than MAX_LOCK_WAIT_MS for the wallet raises a serialization failure,
 * so it is retried at the quotes of that moment (the statement is priced per attempt).
 * The server now passes `p_notice` NULL and sends the leader's notice itself after the
 * COMMIT (OrderService.orderNotice): a NOTIFY inside serialised the commits.
 */
/** The longest wait for the wallet's lock after which the call's prices are still used. */
export const MAX_LOCK_WAIT_MS = 250;

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql.raw(`
    CREATE FUNCTION order_open(${KEY_PARAMETERS},
      p_type text, p_symbol text, p_side text, p_volume numeric, p_leverage int, p_contract_size numeric, p_digits int,
      p_open_price numeric, p_margin numeric, p_stop_loss numeric, p_take_profit numeric, p_operation_id text,
      p_new_pnl numeric, p_order_view text, p_quotes jsonb, p_rejections jsonb, p_notice jsonb,
      ${CLAIM_COLUMNS}, OUT order_id bigint, OUT opened_at timestamptz, OUT wallet_id bigint, OUT balance numeric)
    LANGUAGE plpgsql AS $$
    DECLARE ${DECLARE}
      reason text;
      started timestamptz := clock_timestamp();
    BEGIN ${CLAIM}
      SELECT * INTO w FROM wallets WHERE user_id = p_user AND type = p_type FOR UPDATE;
      IF NOT FOUND THEN reason := 'wallet'; END IF;
      -- The open price, the margin and the quotes were fixed before the call: after a long
      -- wait for the wallet (another operation of this user, a stop-out) they are stale.
      -- A serialization failure rolls back the claim too, and TransactionService retries
      -- with a statement priced anew.
      IF clock_timestamp() - started > interval '${MAX_LOCK_WAIT_MS} milliseconds' THEN
        RAISE EXCEPTION 'order_open waited % for the wallet: priced again', clock_timestamp() - started
          USING ERRCODE = 'serialization_failure';
      END IF;
      ${reject('order_open')}
      ${VALUATION}
      IF p_margin > w.balance + pnl - w.margin THEN
        response_status := (p_rejections #>> '{margin,0}')::int;
        response_body := replace(p_rejections #>> '{margin,1}', '{freeMargin}', round(w.balance + pnl - w.margin, 2)::text);
        ${store('order_open')}
        RETURN;
      END IF;
      INSERT INTO orders (user_id, wallet_id, wallet_type, symbol, side, volume, leverage, contract_size, digits,
                          open_price, margin, stop_loss, take_profit, open_operation_id)
      VALUES (p_user, w.id, p_type, p_symbol, p_side, p_volume, p_leverage, p_contract_size, p_digits,
              p_open_price, p_margin, p_stop_loss, p_take_profit, p_operation_id)
      RETURNING id, orders.opened_at INTO order_id, created;
      UPDATE wallets SET margin = margin + p_margin, updated_at = now() WHERE id = w.id RETURNING * INTO w;
      n := n + 1;
      pnl := pnl + p_new_pnl;
      IF p_notice IS NOT NULL THEN
        PERFORM pg_notify(p_notice ->> 'channel',
          jsonb_build_object('o', p_notice -> 'o', 'w', w.id::text, 'id', order_id::text, 'l', p_notice -> 'l')::text);
      END IF;
      opened_at := created;
      wallet_id := w.id;
      balance := w.balance;
      t := iso_time(created);
      response_status := 201;
      response_body := '{"order":{"id":"' || order_id::text || '",' || p_order_view
        || ',"openedAt":"' || t || '","closedAt":null},"wallet":' || ${WALLET_JSON} || '}';
      ${store('order_open')}
    END $$`).execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP FUNCTION order_open(bigint, text, text, text, text, int, text, text, text, numeric, int, numeric, int, numeric, numeric, numeric, numeric, text, numeric, text, jsonb, jsonb, jsonb)`.execute(db);
}
