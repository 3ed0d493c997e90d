-- The same deposit as ONE statement in autocommit (1 round trip): advisory try-lock on
-- the key, the wallet update only when the key is new, both postings, and the key row
-- written as completed with its response, all in one CTE. (A PL/pgSQL function per
-- operation gives the same round-trip count and adds the savepoint semantics for stored
-- rejections.) The database-side ceiling of a one-round-trip request path.
\set uid random(1, :users)
\set cents random(100, 10000)
\set k random(1, 1000000000000)
WITH l AS (
  SELECT pg_try_advisory_xact_lock(hashtextextended(:uid || ':pgb1-' || :client_id || '-' || :k, 0)) AS ok
), old AS (
  SELECT 1 FROM idempotency_keys WHERE user_id = :uid AND key = 'pgb1-' || :client_id || '-' || :k
), w AS (
  UPDATE wallets SET balance = balance + (:cents / 100.0)::numeric, updated_at = now()
  WHERE user_id = :uid AND type = 'live' AND (SELECT ok FROM l) AND NOT EXISTS (SELECT 1 FROM old)
  RETURNING id, type, balance, updated_at
), e AS (
  SELECT nextval('journal_entry_id_seq') AS id FROM w
), p AS (
  INSERT INTO ledger_postings (entry_id, book, wallet_id, house_account, type, amount, balance_after, operation_id)
  SELECT e.id, w.type, v.wallet_id, v.house_account, 'deposit', v.amount, v.balance_after, 'bench-pgb1-' || :client_id || '-' || :k
  FROM w CROSS JOIN e CROSS JOIN LATERAL (VALUES
    (w.id, NULL::text, (:cents / 100.0)::numeric, w.balance),
    (NULL::bigint, 'deposit_gateway'::text, -(:cents / 100.0)::numeric, NULL::numeric)
  ) AS v (wallet_id, house_account, amount, balance_after)
  RETURNING id, wallet_id, created_at
), k AS (
  INSERT INTO idempotency_keys (user_id, key, method, path, request_hash, status, response_status, response_body, expires_at)
  SELECT :uid, 'pgb1-' || :client_id || '-' || :k, 'POST', '/pgbench/deposit', 'h', 'completed', 201,
         json_build_object('transaction', json_build_object('id', p.id::text, 'type', 'deposit', 'amount', (:cents / 100.0)::numeric(20, 2)::text,
           'balanceAfter', w.balance::text, 'createdAt', p.created_at), 'wallet', json_build_object('balance', w.balance::text, 'updatedAt', w.updated_at))::text,
         now() + interval '24 hours'
  FROM w JOIN p ON p.wallet_id = w.id
  RETURNING response_body
)
SELECT (SELECT ok FROM l) AS locked, (SELECT response_body FROM k) AS body;
