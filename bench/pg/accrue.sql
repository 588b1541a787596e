-- Accrue: earn 10 points on a paid receipt, exactly once per receipt.
-- pgbench variables from run.sh: customers, hot (= min(10, customers)), run (a tag per run).
-- Customer skew as in loyalty-load: 10% of transactions on the hot customers 0..hot-1, 90% uniform.
\set r random(1, 10)
\if :r = 1
\set aid random(0, :hot - 1)
\else
\set aid random(0, :customers - 1)
\endif
-- A fresh receipt id per transaction: run tag, client, 63-bit random.
\set rid random(1, 9000000000000000000)
BEGIN;
-- 1. Lock and read the account (the engine locks the account's slot), then claim the receipt with
--    its answer. A conflict means a replay: nothing is applied, the stored answer is returned.
WITH a AS (
    SELECT account_id, balance, version FROM accounts WHERE account_id = :aid FOR UPDATE
), c AS (
    INSERT INTO receipts (program, receipt_id, op, account_id, response)
    SELECT 'demo', :run::text || '-' || :client_id::text || '-' || :rid::text, 'accrue', account_id,
           jsonb_build_object('account_id', account_id::text, 'earned', '10',
                              'balance', (balance + 10)::text, 'seq', version + 1)
    FROM a
    ON CONFLICT DO NOTHING
    RETURNING receipt_id, (response->>'seq')::bigint AS seq, (response->>'balance')::numeric AS balance_after
)
SELECT count(*) AS claimed, coalesce(max(receipt_id), '') AS receipt,
       coalesce(max(seq), 0) AS seq, coalesce(max(balance_after), 0) AS balance_after
FROM c \gset
\if :claimed
-- 2. Apply: one balance update, one ledger row.
UPDATE accounts SET balance = balance + 10, version = version + 1 WHERE account_id = :aid;
INSERT INTO ledger (account_id, seq, kind, amount, balance_after, receipt_id)
VALUES (:aid, :seq, 'accrue', 10, :balance_after, :receipt);
\else
-- Replay (never taken here: every receipt id is fresh): answer from the stored row.
SELECT response FROM receipts
WHERE program = 'demo' AND receipt_id = :run::text || '-' || :client_id::text || '-' || :rid::text AND op = 'accrue';
\endif
COMMIT;
