import { sql, type Kysely } from 'kysely';

/**
 * Trading: the last quote of each symbol (so prices survive a restart) and orders.
 * The database defends the order's life (DESIGN.md rule 5): an order is open with no
 * close fields, or closed with all of them, and a closed order never changes again,
 * so no order can close twice whatever the code does.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE quotes (
      symbol text PRIMARY KEY,
      bid numeric NOT NULL,
      ask numeric NOT NULL,
      time timestamptz NOT NULL,
      CONSTRAINT quotes_prices CHECK (bid > 0 AND ask >= bid)
    );

    CREATE TABLE orders (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      user_id bigint NOT NULL REFERENCES users (id),
      wallet_id bigint NOT NULL REFERENCES wallets (id),
      wallet_type text NOT NULL CHECK (wallet_type IN ('live', 'demo')),
      symbol text NOT NULL,
      side text NOT NULL CHECK (side IN ('buy', 'sell')),
      volume numeric(12, 2) NOT NULL CHECK (volume > 0),
      leverage integer NOT NULL CHECK (leverage >= 1),
      -- the instrument as it was at opening: the order stays valid if the configuration changes
      contract_size numeric NOT NULL CHECK (contract_size > 0),
      digits smallint NOT NULL CHECK (digits BETWEEN 0 AND 10),
      open_price numeric NOT NULL CHECK (open_price > 0),
      margin numeric(20, 2) NOT NULL CHECK (margin > 0),
      stop_loss numeric CHECK (stop_loss > 0),
      take_profit numeric CHECK (take_profit > 0),
      status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
      close_price numeric,
      profit numeric(20, 2),
      close_reason text CHECK (close_reason IN ('user', 'stop_loss', 'take_profit', 'stop_out')),
      opened_at timestamptz NOT NULL DEFAULT now(),
      closed_at timestamptz,
      open_operation_id text NOT NULL,
      close_operation_id text,
      CONSTRAINT orders_close_fields CHECK (
        (status = 'open' AND close_price IS NULL AND profit IS NULL AND close_reason IS NULL AND closed_at IS NULL AND close_operation_id IS NULL)
        OR (status = 'closed' AND close_price IS NOT NULL AND profit IS NOT NULL AND close_reason IS NOT NULL AND closed_at IS NOT NULL AND close_operation_id IS NOT NULL)
      )
    );
    -- the user's order list, newest first
    CREATE INDEX orders_user_idx ON orders (user_id, opened_at DESC, id DESC);
    -- open orders of a wallet (valuation, free margin, stop-out) and all open orders (risk engine start)
    CREATE INDEX orders_open_wallet_idx ON orders (wallet_id, opened_at, id) WHERE status = 'open';

    CREATE FUNCTION orders_closed_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      RAISE EXCEPTION 'order % is closed and cannot change', OLD.id USING ERRCODE = 'restrict_violation';
    END $$;
    CREATE TRIGGER orders_closed_is_final
      BEFORE UPDATE OR DELETE ON orders
      FOR EACH ROW WHEN (OLD.status = 'closed') EXECUTE FUNCTION orders_closed_is_final();
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`
    DROP TABLE orders, quotes;
    DROP FUNCTION orders_closed_is_final();
  `.execute(db);
}
