-- The deposit as the seed code ran it (2026-11-26 morning), statement for statement (7 round trips):
-- BEGIN, the SET LOCAL bounds, the idempotency claim, SAVEPOINT, the wallet update with
-- its two postings, the stored response, COMMIT. Run by pgbench against the bench's
-- trading database: the database-side ceiling of the current request path.
\set uid random(1, :users)
\set cents random(100, 10000)
\set k random(1, 1000000000000)
BEGIN;
SELECT set_config('lock_timeout', '5000ms', true), set_config('statement_timeout', '15000ms', true);
WITH l AS (SELECT pg_try_advisory_xact_lock(hashtextextended(:uid || ':pgb-' || :client_id || '-' || :k, 0)) AS ok),
ins AS (
  INSERT INTO idempotency_keys (user_id, key, method, path, request_hash, status, expires_at)
  SELECT :uid, 'pgb-' || :client_id || '-' || :k, 'POST', '/pgbench/deposit', 'h', 'processing', now() + interval '24 hours'
  FROM l WHERE l.ok
  ON CONFLICT (user_id, key) DO NOTHING
  RETURNING 1
)
SELECT l.ok, EXISTS (SELECT 1 FROM ins) FROM l;
SAVEPOINT idempotent_operation;
WITH w AS (
  UPDATE wallets SET balance = balance + (:cents / 100.0)::numeric, margin = margin + 0::numeric,
         realized_profit = realized_profit + 0::numeric, updated_at = now()
  WHERE user_id = :uid AND type = 'live' AND (NULL::numeric IS NULL OR balance - margin >= NULL::numeric)
  RETURNING *
), e AS (
  SELECT nextval('journal_entry_id_seq') AS id FROM w
), p AS (
  INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id)
  SELECT e.id, w.type, v.wallet_id, v.house_account, 'deposit', v.amount, v.balance_after, 'bench-pgb-' || :client_id || '-' || :k
  FROM w CROSS JOIN e CROSS JOIN LATERAL (VALUES
    (w.id, NULL::text, (:cents / 100.0)::numeric, w.balance),
    (NULL::bigint, 'deposit_gateway'::text, -(:cents / 100.0)::numeric, NULL::numeric)
  ) AS v (wallet_id, house_account, amount, balance_after)
  RETURNING id, wallet_id, created_at
)
SELECT w.id, w.balance, (SELECT p.id FROM p WHERE p.wallet_id IS NOT NULL) FROM w;
UPDATE idempotency_keys SET status = 'completed', response_status = 201, response_body = '{}'
WHERE user_id = :uid AND key = 'pgb-' || :client_id || '-' || :k;
END;
