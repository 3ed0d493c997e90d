-- The deposit as the server sends it now (migration 0007): BEGIN, the bounds, one
-- wallet_deposit call (claim, wallet credit, both postings, the response rendered and
-- stored) and COMMIT in one round trip. Run by pgbench against the bench's trading
-- database: the database-side ceiling of today's request path, without Node.
\set uid random(1, :users)
\set cents random(100, 10000)
\set k random(1, 1000000000000)
BEGIN \; SET LOCAL lock_timeout = '5000ms' \; SET LOCAL statement_timeout = '15000ms' \; SELECT * FROM wallet_deposit(:uid, 'pgbc-' || :client_id || '-' || :k, 'POST', '/pgbench/deposit', 'h', 24, 'live', (:cents / 100.0)::numeric, 'deposit_gateway', 'bench-pgbc-' || :client_id || '-' || :k, NULL, '[{"symbol":"EURUSD","bid":"1.08000","ask":"1.08010"}]') \; COMMIT;
