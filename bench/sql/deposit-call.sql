-- The deposit as the server sends it now (migrations 0007, 0011): BEGIN, the bounds, one
-- wallet_deposit call (claim, wallet credit, both postings, the response rendered and
-- stored) and COMMIT, then the risk engine's notice for a wallet with open positions in a
-- transaction of its own (TransactionService's afterCommit), all in one round trip. Run by
-- pgbench against the bench's trading database: the database-side ceiling of today's
-- request path, without Node.
\set uid random(1, :users)
\set cents random(100, 10000)
\set k random(1, 1000000000000)
BEGIN \; SET LOCAL lock_timeout = '5000ms' \; SET LOCAL statement_timeout = '15000ms' \; SELECT * FROM wallet_deposit(:uid, 'pgbc-' || :client_id || '-' || :k, 'POST', '/pgbench/deposit', 'h', 24, 'live', (:cents / 100.0)::numeric, 'deposit_gateway', 'bench-pgbc-' || :client_id || '-' || :k, NULL, '[{"symbol":"EURUSD","bid":"1.08000","ask":"1.08010"}]', NULL) \; COMMIT \; BEGIN \; SET LOCAL synchronous_commit = off \; SELECT pg_notify('trading_wallet', w.id::text) FROM wallets w WHERE w.user_id IN (:uid) AND w.type = 'live' AND w.margin > 0 AND EXISTS (SELECT 1 FROM ledger_postings p WHERE p.operation_id = 'bench-pgbc-' || :client_id || '-' || :k) \; COMMIT;
