-- siemsync's shared state on PostgreSQL: everything a node needs that another node
-- wrote. Nodes keep nothing of their own that another node needs.
--
-- Key columns of the event tables use the "C" collation: byte order, as in the
-- embedded store, and cheaper comparisons than a language collation.

-- Accounts as far as siemsync knows them: whether the feature is turned on.
CREATE TABLE accounts (
    account      text PRIMARY KEY,
    siem_enabled boolean NOT NULL,
    updated_at   timestamptz NOT NULL
);

-- Each account's newest sequences. Every ingest of the account locks its row, which
-- serialises the account's writes across all nodes: sequences stay gap-free and in
-- order, and the dedup window is checked against a settled head. `audit_stored_at`
-- makes the storage time of an account's chunks never go backwards, so dropping old
-- partitions removes a prefix of every account's sequence, never a hole.
CREATE TABLE account_heads (
    account         text COLLATE "C" PRIMARY KEY,
    audit_seq       bigint NOT NULL DEFAULT 0,
    job_seq         bigint NOT NULL DEFAULT 0,
    audit_stored_at timestamptz
);

-- Account-scoped API tokens: only a SHA-256 hash of the secret is kept.
CREATE TABLE account_tokens (
    id         uuid PRIMARY KEY,
    hash       text NOT NULL UNIQUE,
    account    text NOT NULL,
    name       text,
    created_at timestamptz NOT NULL
);
CREATE INDEX account_tokens_by_account ON account_tokens (account);

-- Integrations; `doc` is the Integration with its HEC token sealed (when a secret
-- key is set). `version` grows by one on every change (compare-and-set), `shard`
-- says which lease covers its delivery.
CREATE TABLE integrations (
    id         uuid PRIMARY KEY,
    account    text NOT NULL,
    shard      integer NOT NULL,
    version    bigint NOT NULL,
    created_at timestamptz NOT NULL,
    doc        jsonb NOT NULL
);
CREATE INDEX integrations_by_account ON integrations (account);
CREATE INDEX integrations_by_shard ON integrations (shard);

-- Everything below belongs to one integration and goes with it.
CREATE TABLE checkpoints (
    integration     uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    audit_seq       bigint NOT NULL,
    job_seq         bigint NOT NULL,
    delivered_audit bigint NOT NULL,
    delivered_jobs  bigint NOT NULL,
    last_success    timestamptz
);

CREATE SEQUENCE dead_letter_ids;
CREATE TABLE dead_letters (
    integration uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    id          bigint NOT NULL,
    doc         jsonb NOT NULL,
    PRIMARY KEY (integration, id)
);

CREATE TABLE replays (
    integration uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    doc         jsonb NOT NULL
);

CREATE TABLE gaps (
    integration uuid NOT NULL REFERENCES integrations (id) ON DELETE CASCADE,
    source      text NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    count       bigint NOT NULL,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (integration, source)
);

CREATE TABLE connection_reports (
    integration uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    doc         jsonb NOT NULL
);

-- What the node delivering an integration last observed of it, so that any node
-- can answer for it.
CREATE TABLE delivery_status (
    integration uuid PRIMARY KEY REFERENCES integrations (id) ON DELETE CASCADE,
    node        text NOT NULL,
    observed_at timestamptz NOT NULL,
    doc         jsonb NOT NULL
);

-- The audit log: chunks of consecutive events of one account, each `body` exactly
-- the embedded store's chunk record (events already encoded as HEC receives them).
-- Partitioned by storage time so that retention drops whole partitions. Partitions
-- are created ahead of time by the nodes (see partitions.rs), not here.
CREATE TABLE audit_chunks (
    account   text COLLATE "C" NOT NULL,
    first_seq bigint NOT NULL,
    last_seq  bigint NOT NULL,
    stored_at timestamptz NOT NULL,
    body      bytea NOT NULL
) PARTITION BY RANGE (stored_at);
CREATE INDEX audit_chunks_by_seq ON audit_chunks (account, last_seq) INCLUDE (first_seq, stored_at);

-- The ids (16-byte hashes, in sequence order) of each chunk's events, for the dedup
-- window. Not partitioned: the ids of an account's last `dedup_window` events stay
-- here even after retention dropped the events themselves.
CREATE TABLE audit_ids (
    account   text COLLATE "C" NOT NULL,
    first_seq bigint NOT NULL,
    hashes    bytea NOT NULL,
    PRIMARY KEY (account, first_seq)
);

-- The latest snapshot of every job, with its change sequence.
CREATE TABLE jobs (
    account     text COLLATE "C" NOT NULL,
    job         text COLLATE "C" NOT NULL,
    change_seq  bigint NOT NULL,
    running     boolean NOT NULL,
    finished    boolean NOT NULL,
    ingested_at timestamptz NOT NULL,
    snapshot    jsonb NOT NULL,
    PRIMARY KEY (account, job)
);
CREATE UNIQUE INDEX jobs_by_change ON jobs (account, change_seq);
CREATE INDEX jobs_running ON jobs (account, job) WHERE running;

-- Finished jobs whose snapshot retention removed: a late retry of an older,
-- unfinished snapshot must not bring such a job back as running.
CREATE TABLE job_tombstones (
    account  text COLLATE "C" NOT NULL,
    job      text COLLATE "C" NOT NULL,
    swept_at timestamptz NOT NULL,
    PRIMARY KEY (account, job)
);

-- The nodes of the cluster and their heartbeats.
CREATE TABLE nodes (
    name         text PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    stopping     boolean NOT NULL DEFAULT false,
    info         jsonb NOT NULL DEFAULT '{}'
);

-- Ownership of delivery: integrations hash into a fixed number of shards; a node
-- holds a shard while its lease has not expired. `epoch` grows by one at every
-- change of owner and fences every checkpoint commit.
CREATE TABLE shard_leases (
    shard      integer PRIMARY KEY,
    owner      text,
    epoch      bigint NOT NULL DEFAULT 0,
    expires_at timestamptz
);
INSERT INTO shard_leases (shard) SELECT generate_series(0, 255);

-- Every checkpoint commit, with the lease it was made under: append-only, so that
-- who moved which checkpoint under which epoch can be checked afterwards.
CREATE TABLE checkpoint_commits (
    id           bigserial PRIMARY KEY,
    integration  uuid NOT NULL,
    node         text NOT NULL,
    shard        integer NOT NULL,
    epoch        bigint NOT NULL,
    audit_seq    bigint NOT NULL,
    job_seq      bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkpoint_commits_by_time ON checkpoint_commits (committed_at);
