-- The engine's durable state, as a user would model it in PostgreSQL.
--   accounts : one row per customer; balance is money-like (exact decimal), never negative;
--              version counts the account's writes (the engine's account version / ledger seq).
--   ledger   : append-only, one row per balance change; per-account sequence (seq = the account's
--              version after the change), so sum(amount) = balance for every account.
--   receipts : the idempotency table; one row per (program, receipt, operation) holding the first
--              answer, written in the same transaction as the balance change.
-- Seeding: psql variable :customers (set by run.sh). Every customer starts with 1000 points,
-- posted as ledger entry seq 1 so the ledger invariant holds from the start.

SET client_min_messages = warning;
DROP TABLE IF EXISTS receipts, ledger, accounts;

CREATE TABLE accounts (
    account_id bigint        PRIMARY KEY,
    balance    numeric(20,2) NOT NULL CHECK (balance >= 0),
    version    bigint        NOT NULL
);

CREATE TABLE ledger (
    account_id    bigint        NOT NULL REFERENCES accounts,
    seq           bigint        NOT NULL,
    kind          text          NOT NULL,
    amount        numeric(20,2) NOT NULL,
    balance_after numeric(20,2) NOT NULL,
    receipt_id    text          NOT NULL,
    created_at    timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, seq)
);

CREATE TABLE receipts (
    program    text        NOT NULL,
    receipt_id text        NOT NULL,
    op         text        NOT NULL,
    account_id bigint      NOT NULL,
    response   jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (program, receipt_id, op)
);

INSERT INTO accounts (account_id, balance, version)
SELECT g, 1000, 1 FROM generate_series(0, :customers - 1) AS g;

INSERT INTO ledger (account_id, seq, kind, amount, balance_after, receipt_id)
SELECT g, 1, 'seed', 1000, 1000, 'seed-' || g FROM generate_series(0, :customers - 1) AS g;

VACUUM ANALYZE accounts;
VACUUM ANALYZE ledger;
VACUUM ANALYZE receipts;
