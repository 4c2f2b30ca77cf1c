-- An account's own ingest allowance (issue 17), where the operator set one; NULL:
-- the node's configured default.
ALTER TABLE accounts
    ADD COLUMN ingest_events_per_sec bigint CHECK (ingest_events_per_sec >= 1),
    ADD COLUMN ingest_burst bigint CHECK (ingest_burst >= 1);
