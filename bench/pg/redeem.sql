-- Redeem: spend 1 point directly on a receipt, exactly once per receipt; refused (and the refusal
-- stored as the answer) when the balance is short.
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
-- 1. Lock and read the account (the engine locks the account's slot), decide, then claim the
--    receipt with its answer. A conflict means a replay: nothing is applied.
WITH a AS (
    SELECT account_id, balance, version FROM accounts WHERE account_id = :aid FOR UPDATE
), c AS (
    INSERT INTO receipts (program, receipt_id, op, account_id, response)
    SELECT 'demo', :run::text || '-' || :client_id::text || '-' || :rid::text, 'redeem', account_id,
           CASE WHEN balance >= 1
                THEN jsonb_build_object('account_id', account_id::text, 'redeemed', '1',
                                        'balance', (balance - 1)::text, 'seq', version + 1)
                ELSE jsonb_build_object('error', 'INSUFFICIENT_POINTS', 'balance', balance::text)
           END
    FROM a
    ON CONFLICT DO NOTHING
    RETURNING receipt_id, (response->>'seq')::bigint AS seq, (response->>'balance')::numeric AS balance_after
)
SELECT count(*) AS claimed, coalesce(max(receipt_id), '') AS receipt,
       coalesce(max(seq), 0) AS seq, coalesce(max(balance_after), 0) AS balance_after
FROM c \gset
\if :claimed = 1 AND :seq > 0
-- 2. Apply: one conditional balance update, one ledger row.
UPDATE accounts SET balance = balance - 1, version = version + 1 WHERE account_id = :aid AND balance >= 1;
INSERT INTO ledger (account_id, seq, kind, amount, balance_after, receipt_id)
VALUES (:aid, :seq, 'redeem', -1, :balance_after, :receipt);
\elif :claimed = 0
-- Replay (never taken here: every receipt id is fresh): answer from the stored row.
SELECT response FROM receipts
WHERE program = 'demo' AND receipt_id = :run::text || '-' || :client_id::text || '-' || :rid::text AND op = 'redeem';
\endif
COMMIT;
