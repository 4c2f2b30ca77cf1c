-- The backlog quota per account on PostgreSQL (issue 16): what the embedded store
-- keeps under QUOTA_FLOOR / QUOTA_NOTICE / quota_drops, shared by every node.

-- Bytes of the account's stored audit chunks (their bodies) and job snapshots
-- (their JSON text): what the quota is enforced on. Kept with the heads row that
-- every ingest of the account locks, so an ingest adds to it in its own
-- transaction; the quota sweep sets it to the exact sum again.
ALTER TABLE account_heads ADD COLUMN stored_bytes bigint NOT NULL DEFAULT 0;
UPDATE account_heads h SET stored_bytes =
    coalesce((SELECT sum(octet_length(c.body)) FROM audit_chunks c WHERE c.account = h.account), 0)
  + coalesce((SELECT sum(octet_length(j.snapshot::text)) FROM jobs j WHERE j.account = h.account), 0);

-- A gap per integration, source and reason: retention's and the quota's apart.
ALTER TABLE gaps ADD COLUMN reason text NOT NULL DEFAULT 'retention'
    CHECK (reason IN ('retention', 'backlog_quota'));
ALTER TABLE gaps DROP CONSTRAINT gaps_pkey;
ALTER TABLE gaps ADD PRIMARY KEY (integration, source, reason);

-- The sequences the quota dropped, audit events as runs and job changes one by one
-- (siemsync's own notices left out: they are not counted as lost). A checkpoint
-- commit whose post carried some of them (it was in flight on its node when another
-- node's sweep dropped them) takes them out of the gap the sweep counted them in:
-- an event is either delivered or counted, never both. The periodic sweep removes
-- a run once every reader of the account passed it.
CREATE TABLE quota_dropped (
    account   text COLLATE "C" NOT NULL,
    source    text NOT NULL CHECK (source IN ('audit', 'jobs')),
    first_seq bigint NOT NULL,
    last_seq  bigint NOT NULL,
    PRIMARY KEY (account, source, first_seq)
);
-- The commit's un-count looks for the runs that end at or after its post's first
-- event: with the key alone it would walk every older run of the account, and the
-- runs of an account whose slowest integration lags stay until it passes them.
CREATE INDEX quota_dropped_ends ON quota_dropped (account, source, last_seq);

-- Per account: what the quota dropped in all (`drops`, a QuotaDrops) and what the
-- notice in the account's stream owes (`pending`, a PendingNotice), both written in
-- the sweep's transaction and the notice's.
CREATE TABLE account_quota (
    account text COLLATE "C" PRIMARY KEY,
    drops   jsonb,
    pending jsonb NOT NULL
);
