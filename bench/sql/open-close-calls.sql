-- An order open and its close through the calls the server makes (order_open, 0008;
-- order_close, 0009), each in its own transaction, without the leader's notice and in
-- separate round trips (the open's id is needed by the close): the database side of the
-- two trading operations, without Node. Not run by the bench;
-- by hand, on a bench database kept with --keep-data (bench/FINDINGS.md, seventh round):
--   pgbench -n -f bench/sql/open-close-calls.sql -D users=<its users> -c 16 -j 2 -T 8 <bench_trading's URL>
-- The open is priced at a fixed EURUSD quote; the wallets hold 1,000,000.00 each.
\set uid random(1, :users)
\set k random(1, 1000000000000)
BEGIN;
SELECT order_id FROM order_open(:uid, 'pgo-' || :client_id || '-' || :k, 'POST', '/pgbench/open', 'h', 24, 'live', 'EURUSD', 'buy', 0.01, 100, 100000, 5, 1.08010, 10.80, NULL, NULL, 'pgo-op-' || :client_id || '-' || :k, -0.10, '"symbol":"EURUSD"', '[{"symbol":"EURUSD","bid":"1.08000","ask":"1.08010"}]', '{"wallet":[404,"{}"],"margin":[422,"{}"]}', NULL) \gset
COMMIT;
BEGIN;
SELECT response_status FROM order_close(:uid, 'pgc-' || :client_id || '-' || :k, 'POST', '/pgbench/close', 'h', 24, :order_id, 'pgc-op-' || :client_id || '-' || :k, '[{"symbol":"EURUSD","bid":"1.08000","ask":"1.08010"}]', '{"order":[404,"{}"],"not_open":[409,"{}"],"no_quote":[422,"{}"]}', NULL);
COMMIT;
