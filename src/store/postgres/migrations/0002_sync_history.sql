-- Each integration's syncs (issue 20): the page's chart and table, and the
-- administrator's overview. Like everything of an integration, they go with it.

-- One row per sync, `seq` counting up per integration; `doc` is the SyncRecord.
-- Pruned on write: older than 7 days, or beyond the newest 2,000.
CREATE TABLE sync_history (
    integration uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    started_at  timestamptz NOT NULL,
    doc         jsonb NOT NULL,
    PRIMARY KEY (integration, seq)
);
CREATE INDEX sync_history_by_time ON sync_history (integration, started_at);

-- What the overview sorts by, kept beside the history so that it reads one row per
-- integration: the latest sync (`last`, a SyncRecord), when the latest sync without
-- an error ended, and the latest sync that posted to Splunk (an Attempt).
CREATE TABLE sync_summaries (
    integration  uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    first_seq    bigint NOT NULL,
    next_seq     bigint NOT NULL,
    last         jsonb NOT NULL,
    last_success timestamptz,
    last_attempt jsonb
);
