//! Writing a copy of the embedded store into PostgreSQL (`siemsync migrate
//! --from-sled`, see `store::to_postgres`): rows keep their ids and sequences, so
//! checkpoints, dead letters and replay cursors stay valid.
//!
//! Every write is "insert what is missing, and check that what is there is the
//! same": running the copy again, or after it was killed half way, ends in the same
//! rows with nothing doubled, and a database that holds other data for the same ids
//! (a node ran on it since) is refused with [`PgError::Differs`], in a transaction
//! that is rolled back.

use super::error::PgError;
use super::{to_i64, PgStore, Shared};
use crate::model::{AccountId, Integration};
use crate::store::sled_export::{RawChunk, RawIds, RawTombstone};
use crate::store::{Account, AccountToken, Checkpoint, DeadLetter, Gap, Heads, StoredJob};
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use tokio_postgres::types::ToSql;

/// How many rows of one kind a write added, and how many it found already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Rows added.
    pub added: u64,
    /// Rows that were there already, identical.
    pub present: u64,
}

impl Copied {
    fn note(&mut self, inserted: bool) {
        if inserted {
            self.added += 1;
        } else {
            self.present += 1;
        }
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: Copied) {
        self.added += other.added;
        self.present += other.present;
    }
}

/// One integration with everything that belongs to it, copied in one transaction.
#[derive(Debug, Clone)]
pub struct IntegrationCopy {
    /// The integration, its HEC token as stored (sealed or not).
    pub integration: Integration,
    /// Its checkpoint, if it ever moved.
    pub checkpoint: Option<Checkpoint>,
    /// Its dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// Its replay record, as the replay actor wrote it.
    pub replay: Option<serde_json::Value>,
    /// Its last connection test's report.
    pub connection_report: Option<serde_json::Value>,
    /// The gaps retention or the backlog quota left in its delivery.
    pub gaps: Vec<Gap>,
}

/// What copying one integration did, per kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntegrationCopied {
    /// The integration row.
    pub integrations: Copied,
    /// Its checkpoint.
    pub checkpoints: Copied,
    /// Its dead letters.
    pub dead_letters: Copied,
    /// Its replay.
    pub replays: Copied,
    /// Its connection report.
    pub connection_reports: Copied,
    /// Its gaps (one per source).
    pub gaps: Copied,
}

type Params<'a> = [&'a (dyn ToSql + Sync)];

/// Inserts a row unless one with its key exists (`insert` ends in `ON CONFLICT DO
/// NOTHING`); then the row there must match (`same` selects it by every column, with
/// the same parameters). True when it was inserted.
async fn insert_or_same(
    tx: &deadpool_postgres::Transaction<'_>,
    insert: &str,
    same: &str,
    params: &Params<'_>,
    what: impl FnOnce() -> String,
) -> Result<bool, PgError> {
    if tx.execute(insert, params).await? == 1 {
        return Ok(true);
    }
    match tx.query_opt(same, params).await? {
        Some(_) => Ok(false),
        None => Err(PgError::Differs(what())),
    }
}

impl Shared {
    /// Whether two integration documents are the same, their HEC tokens compared
    /// opened (a sealed one that does not open with this store's key is no match).
    fn same_doc(
        &self,
        mut a: serde_json::Value,
        mut b: serde_json::Value,
        id: &uuid::Uuid,
    ) -> bool {
        let token = |doc: &mut serde_json::Value| -> Option<String> {
            let t = doc.get_mut("hec_token")?.take();
            let t = t.as_str()?;
            if crate::store::secrets::is_sealed(t) {
                self.cipher.as_ref()?.open(t, id.as_bytes()).ok()
            } else {
                Some(t.to_owned())
            }
        };
        let (ta, tb) = (token(&mut a), token(&mut b));
        ta.is_some() && ta == tb && a == b
    }

    async fn import_integration(&self, c: &IntegrationCopy) -> Result<IntegrationCopied, PgError> {
        let it = &c.integration;
        let id = it.id;
        let mut out = IntegrationCopied::default();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let doc = serde_json::to_value(it).map_err(|e| PgError::Db(e.to_string()))?;
        let version = to_i64(it.version);
        let shard = self.shard_of(&id);
        let inserted = tx
            .execute(
                "INSERT INTO integrations (id, account, shard, version, created_at, doc)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &it.account.as_str(),
                    &shard,
                    &version,
                    &it.created_at,
                    &doc,
                ],
            )
            .await?
            == 1;
        if !inserted {
            // Compared with the HEC tokens opened: a token sealed during the copy
            // has a fresh nonce each run.
            // The columns compared by PostgreSQL, at its precision.
            let row = tx
                .query_opt(
                    "SELECT doc, account = $2 AND shard = $3 AND version = $4 AND created_at = $5
                     FROM integrations WHERE id = $1",
                    &[&id, &it.account.as_str(), &shard, &version, &it.created_at],
                )
                .await?;
            let same = row.is_some_and(|r| r.get(1) && self.same_doc(r.get(0), doc.clone(), &id));
            if !same {
                return Err(PgError::Differs(format!(
                    "integration {id} of account {}",
                    it.account
                )));
            }
        }
        out.integrations.note(inserted);
        if let Some(cp) = &c.checkpoint {
            out.checkpoints.note(
                insert_or_same(
                    &tx,
                    "INSERT INTO checkpoints (integration, audit_seq, job_seq, delivered_audit,
                       delivered_jobs, last_success)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (integration) DO NOTHING",
                    "SELECT 1 FROM checkpoints WHERE integration = $1 AND audit_seq = $2
                       AND job_seq = $3 AND delivered_audit = $4 AND delivered_jobs = $5
                       AND last_success IS NOT DISTINCT FROM $6",
                    &[
                        &id,
                        &to_i64(cp.audit_seq),
                        &to_i64(cp.job_seq),
                        &to_i64(cp.delivered_audit),
                        &to_i64(cp.delivered_jobs),
                        &cp.last_success,
                    ],
                    || format!("the checkpoint of integration {id} (it moved since: a node delivered from this database)"),
                )
                .await?,
            );
        }
        for d in &c.dead_letters {
            let doc = serde_json::to_value(d).map_err(|e| PgError::Db(e.to_string()))?;
            out.dead_letters.note(
                insert_or_same(
                    &tx,
                    "INSERT INTO dead_letters (integration, id, doc) VALUES ($1, $2, $3)
                     ON CONFLICT (integration, id) DO NOTHING",
                    "SELECT 1 FROM dead_letters WHERE integration = $1 AND id = $2 AND doc = $3",
                    &[&id, &to_i64(d.id), &doc],
                    || format!("dead letter {} of integration {id}", d.id),
                )
                .await?,
            );
        }
        for (table, doc, counter) in [
            ("replays", &c.replay, &mut out.replays),
            (
                "connection_reports",
                &c.connection_report,
                &mut out.connection_reports,
            ),
        ] {
            let Some(doc) = doc else { continue };
            counter.note(
                insert_or_same(
                    &tx,
                    &format!(
                        "INSERT INTO {table} (integration, doc) VALUES ($1, $2)
                         ON CONFLICT (integration) DO NOTHING"
                    ),
                    &format!("SELECT 1 FROM {table} WHERE integration = $1 AND doc = $2"),
                    &[&id, doc],
                    || format!("the {} of integration {id}", table.trim_end_matches('s')),
                )
                .await?,
            );
        }
        // One per source and reason, as the embedded store keeps them.
        for g in &c.gaps {
            out.gaps.note(
                insert_or_same(
                    &tx,
                    "INSERT INTO gaps (integration, source, first_at, last_at, count, recorded_at, reason)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (integration, source, reason) DO NOTHING",
                    "SELECT 1 FROM gaps WHERE integration = $1 AND source = $2 AND first_at = $3
                       AND last_at = $4 AND count = $5 AND recorded_at = $6 AND reason = $7",
                    &[
                        &id,
                        &g.source.as_str(),
                        &g.from,
                        &g.to,
                        &to_i64(g.count),
                        &g.recorded_at,
                        &g.reason.as_str(),
                    ],
                    || {
                        format!(
                            "the {} {} gap of integration {id}",
                            g.source.as_str(),
                            g.reason.as_str()
                        )
                    },
                )
                .await?,
            );
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn import_chunks(
        &self,
        account: &AccountId,
        chunks: &[RawChunk],
    ) -> Result<Copied, PgError> {
        let (Some(lo), Some(hi)) = (chunks.first(), chunks.last()) else {
            return Ok(Copied::default());
        };
        let mut client = self.pool.get().await?;
        // Old storage times need their partitions (made as a node makes them).
        let width = (self.options.partition_width.as_secs() as i64).max(1);
        let starts: BTreeSet<i64> = chunks
            .iter()
            .map(|c| c.stored_at.timestamp().div_euclid(width) * width)
            .collect();
        for start in starts {
            let at = DateTime::<Utc>::from_timestamp(start, 0).unwrap_or_default();
            self.create_partition(&client, at).await?;
        }
        let tx = client.transaction().await?;
        let a = account.as_str();
        let there = tx
            .query(
                "SELECT first_seq, last_seq, stored_at, body FROM audit_chunks
                 WHERE account = $1 AND last_seq >= $2 AND first_seq <= $3",
                &[&a, &to_i64(lo.first), &to_i64(hi.last)],
            )
            .await?;
        let mine: HashMap<i64, &RawChunk> = chunks.iter().map(|c| (to_i64(c.first), c)).collect();
        let mut present = BTreeSet::new();
        for row in &there {
            let first: i64 = row.get(0);
            let same = mine.get(&first).is_some_and(|c| {
                row.get::<_, i64>(1) == to_i64(c.last)
                    && row.get::<_, DateTime<Utc>>(2) == c.stored_at
                    && row.get::<_, &[u8]>(3) == c.record.as_slice()
            });
            if !same {
                return Err(PgError::Differs(format!(
                    "the audit events of account {account} from sequence {first}"
                )));
            }
            present.insert(first);
        }
        let missing: Vec<&RawChunk> = chunks
            .iter()
            .filter(|c| !present.contains(&to_i64(c.first)))
            .collect();
        if !missing.is_empty() {
            let first: Vec<i64> = missing.iter().map(|c| to_i64(c.first)).collect();
            let last: Vec<i64> = missing.iter().map(|c| to_i64(c.last)).collect();
            let at: Vec<DateTime<Utc>> = missing.iter().map(|c| c.stored_at).collect();
            let body: Vec<&[u8]> = missing.iter().map(|c| c.record.as_slice()).collect();
            tx.execute(
                "INSERT INTO audit_chunks (account, first_seq, last_seq, stored_at, body)
                 SELECT $1, f, l, t, b
                 FROM unnest($2::int8[], $3::int8[], $4::timestamptz[], $5::bytea[]) AS u (f, l, t, b)",
                &[&a, &first, &last, &at, &body],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Copied {
            added: missing.len() as u64,
            present: present.len() as u64,
        })
    }

    async fn import_ids(&self, account: &AccountId, ids: &[RawIds]) -> Result<Copied, PgError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let a = account.as_str();
        let first: Vec<i64> = ids.iter().map(|i| to_i64(i.first)).collect();
        let hashes: Vec<&[u8]> = ids.iter().map(|i| i.hashes.as_slice()).collect();
        let differs = tx
            .query_opt(
                "SELECT a.first_seq FROM audit_ids a
                 JOIN unnest($2::int8[], $3::bytea[]) AS u (f, h) ON a.account = $1 AND a.first_seq = u.f
                 WHERE a.hashes <> u.h LIMIT 1",
                &[&a, &first, &hashes],
            )
            .await?;
        if let Some(row) = differs {
            return Err(PgError::Differs(format!(
                "the event ids of account {account} from sequence {}",
                row.get::<_, i64>(0)
            )));
        }
        let added = tx
            .execute(
                "INSERT INTO audit_ids (account, first_seq, hashes)
                 SELECT $1, f, h FROM unnest($2::int8[], $3::bytea[]) AS u (f, h)
                 ON CONFLICT (account, first_seq) DO NOTHING",
                &[&a, &first, &hashes],
            )
            .await?;
        tx.commit().await?;
        Ok(Copied {
            added,
            present: ids.len() as u64 - added,
        })
    }

    async fn import_jobs(
        &self,
        account: &AccountId,
        jobs: &[StoredJob],
        tombstones: &[RawTombstone],
    ) -> Result<Copied, PgError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let a = account.as_str();
        let mut docs = Vec::with_capacity(jobs.len());
        for j in jobs {
            docs.push(serde_json::to_value(&j.snapshot).map_err(|e| PgError::Db(e.to_string()))?);
        }
        let names: Vec<&str> = jobs.iter().map(|j| j.snapshot.job.as_str()).collect();
        let seqs: Vec<i64> = jobs.iter().map(|j| to_i64(j.change_seq)).collect();
        let running: Vec<bool> = jobs.iter().map(|j| j.snapshot.in_progress()).collect();
        let finished: Vec<bool> = jobs.iter().map(|j| j.snapshot.is_finished()).collect();
        let times: Vec<DateTime<Utc>> = jobs.iter().map(|j| j.snapshot.ingested_at).collect();
        let differs = tx
            .query_opt(
                "SELECT j.job FROM jobs j
                 JOIN unnest($2::text[], $3::int8[], $4::jsonb[]) AS u (n, s, d)
                   ON j.account = $1 AND j.job = u.n
                 WHERE j.change_seq <> u.s OR j.snapshot <> u.d LIMIT 1",
                &[&a, &names, &seqs, &docs],
            )
            .await?;
        if let Some(row) = differs {
            return Err(PgError::Differs(format!(
                "job {} of account {account}",
                row.get::<_, String>(0)
            )));
        }
        let added = tx
            .execute(
                "INSERT INTO jobs (account, job, change_seq, running, finished, ingested_at, snapshot)
                 SELECT $1, n, s, r, f, t, d
                 FROM unnest($2::text[], $3::int8[], $4::bool[], $5::bool[], $6::timestamptz[], $7::jsonb[])
                   AS u (n, s, r, f, t, d)
                 ON CONFLICT (account, job) DO NOTHING",
                &[&a, &names, &seqs, &running, &finished, &times, &docs],
            )
            .await
            .map_err(|e| match e.code() {
                // Another job holds one of these change sequences.
                Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => {
                    PgError::Differs(format!("the job changes of account {account}"))
                }
                _ => e.into(),
            })?;
        let done: Vec<&str> = tombstones.iter().map(|t| t.job.as_str()).collect();
        let swept: Vec<DateTime<Utc>> = tombstones.iter().map(|t| t.swept_at).collect();
        tx.execute(
            "INSERT INTO job_tombstones (account, job, swept_at)
             SELECT $1, n, t FROM unnest($2::text[], $3::timestamptz[]) AS u (n, t)
             ON CONFLICT (account, job) DO NOTHING",
            &[&a, &done, &swept],
        )
        .await?;
        tx.commit().await?;
        Ok(Copied {
            added,
            present: jobs.len() as u64 - added,
        })
    }
}

/// One account of the copy as it will be written first: its newest sequences and
/// the storage time of its newest audit chunk.
#[derive(Debug, Clone)]
pub struct AccountHeads {
    /// The account.
    pub account: AccountId,
    /// Its newest audit and job sequences.
    pub heads: Heads,
    /// Its newest audit chunk's storage time, if it has one.
    pub audit_stored_at: Option<DateTime<Utc>>,
}

/// How a copy began: fresh, or resuming one of the same source; or not at all,
/// because nodes are live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportStart {
    /// These nodes are live: nothing was written.
    NodesLive(Vec<String>),
    /// Nothing of a copy was there.
    Fresh,
    /// A copy of the same source was interrupted (or finished) before.
    Resumed,
    /// The copy finished before and nodes have run on the database since (the
    /// first of them started then): nothing was written.
    UsedSince(DateTime<Utc>),
}

/// Locks `sled_import` against a copy starting (nodes) or against nodes
/// checking (a copy); see [`PgStore::begin_import`].
const NODE_LOCK: &str = "LOCK TABLE sled_import IN SHARE MODE";
const COPY_LOCK: &str = "LOCK TABLE sled_import IN SHARE ROW EXCLUSIVE MODE";

/// The live nodes on the database at `url`, read before anything (the schema
/// included) is changed: none when it has no `nodes` table yet.
pub async fn live_nodes_at(url: &str) -> Result<Vec<String>, PgError> {
    let url = super::tls::PgUrl::parse(url)?;
    let tls = url.tls()?;
    let mut config = url.config;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(std::time::Duration::from_secs(5));
    }
    let (client, connection) = super::connect::connect(&config, &tls).await?;
    let driver = tokio::spawn(connection);
    let exists: bool = client
        .query_one("SELECT to_regclass('nodes') IS NOT NULL", &[])
        .await?
        .get(0);
    let live = if exists {
        client
            .query(super::leases::LIVE_NODES, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    drop(client);
    // The connection ends with its client; its outcome says nothing more.
    let _ = driver.await;
    Ok(live)
}

impl PgStore {
    /// Refuses a node's start while a copy from sled is under way or was
    /// interrupted. Called after the node registered: a copy checks the live nodes
    /// after taking the lock this takes, so either the copy sees this node and
    /// refuses, or this sees the copy's marker.
    pub async fn check_no_unfinished_import(&self) -> Result<(), PgError> {
        self.run(|s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(NODE_LOCK).await?;
            let copying = tx
                .query_opt("SELECT 1 FROM sled_import WHERE state = 'copying'", &[])
                .await?
                .is_some();
            tx.commit().await?;
            if copying {
                return Err(PgError::ImportUnfinished);
            }
            // A finished copy on which a node now runs: running the copy again is
            // refused from here on (`begin_import`). Its own statement, after the
            // shared lock's transaction: two nodes starting at once would deadlock
            // upgrading that lock. A copy starting in between sees this node live.
            s.pool
                .get()
                .await?
                .execute(
                    "UPDATE sled_import SET nodes_since = clock_timestamp()
                     WHERE state = 'done' AND nodes_since IS NULL",
                    &[],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Starts (or resumes) a copy, before any of its data is written: refuses when
    /// a node is live, when another source was copied here, or when any account
    /// being copied has other newest sequences here, or (unless this same source is
    /// resumed) any audit chunk or job; then marks the copy `copying`, so nodes
    /// refuse to start until [`PgStore::finish_import`]. All in one transaction:
    /// a refusal writes nothing.
    pub async fn begin_import(
        &self,
        fingerprint: String,
        accounts: Vec<AccountHeads>,
    ) -> Result<ImportStart, PgError> {
        self.run_write(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            tx.batch_execute(COPY_LOCK).await?;
            let live: Vec<String> = tx.query(super::leases::LIVE_NODES, &[]).await?.iter().map(|r| r.get(0)).collect();
            if !live.is_empty() {
                return Ok(ImportStart::NodesLive(live));
            }
            let marker = tx
                .query_opt("SELECT source_fingerprint, nodes_since FROM sled_import FOR UPDATE", &[])
                .await?;
            if let Some(since) = marker.as_ref().and_then(|row| row.get::<_, Option<DateTime<Utc>>>(1)) {
                return Ok(ImportStart::UsedSince(since));
            }
            let start = match marker {
                Some(row) if row.get::<_, String>(0) == fingerprint => ImportStart::Resumed,
                Some(_) => {
                    return Err(PgError::Differs(
                        "the copy of another data directory (sled_import names another source)".into(),
                    ))
                }
                None => ImportStart::Fresh,
            };
            let names: Vec<&str> = accounts.iter().map(|a| a.account.as_str()).collect();
            for a in &accounts {
                let row = tx
                    .query_opt(
                        "SELECT audit_seq, job_seq, audit_stored_at FROM account_heads WHERE account = $1",
                        &[&a.account.as_str()],
                    )
                    .await?;
                if let Some(row) = row {
                    let same = row.get::<_, i64>(0) == to_i64(a.heads.audit)
                        && row.get::<_, i64>(1) == to_i64(a.heads.jobs)
                        && row.get::<_, Option<DateTime<Utc>>>(2) == a.audit_stored_at;
                    if !same {
                        return Err(PgError::Differs(format!(
                            "the newest sequences of account {} (events were stored here since, or another history)",
                            a.account
                        )));
                    }
                }
            }
            if start == ImportStart::Fresh {
                for (table, what) in [("audit_chunks", "audit events"), ("jobs", "jobs")] {
                    let row = tx
                        .query_opt(
                            &format!("SELECT account FROM {table} WHERE account = ANY($1) LIMIT 1"),
                            &[&names],
                        )
                        .await?;
                    if let Some(row) = row {
                        return Err(PgError::Differs(format!(
                            "the {what} of account {}",
                            row.get::<_, String>(0)
                        )));
                    }
                }
            }
            tx.execute(
                "INSERT INTO sled_import (state, source_fingerprint, started_at)
                 VALUES ('copying', $1, clock_timestamp())
                 ON CONFLICT (only_row) DO UPDATE SET state = 'copying', finished_at = NULL",
                &[&fingerprint],
            )
            .await?;
            tx.commit().await?;
            Ok(start)
        })
        .await
    }

    /// Marks the copy of `fingerprint` done: nodes may start. Counts every
    /// account's stored bytes first (the backlog quota is enforced on them; the
    /// copy inserted chunks and snapshots without adding them up).
    pub async fn finish_import(&self, fingerprint: String) -> Result<(), PgError> {
        self.run_write(move |s| async move {
            let client = s.pool.get().await?;
            client
                .execute(
                    "UPDATE account_heads h SET stored_bytes =
                        coalesce((SELECT sum(octet_length(c.body)) FROM audit_chunks c WHERE c.account = h.account), 0)
                      + coalesce((SELECT sum(octet_length(j.snapshot::text)) FROM jobs j WHERE j.account = h.account), 0)",
                    &[],
                )
                .await?;
            let n = client
                .execute(
                    "UPDATE sled_import SET state = 'done', finished_at = clock_timestamp()
                     WHERE source_fingerprint = $1",
                    &[&fingerprint],
                )
                .await?;
            if n != 1 {
                return Err(PgError::Differs(
                    "the copy's marker (sled_import changed while copying)".into(),
                ));
            }
            Ok(())
        })
        .await
    }

    /// Copies accounts (feature switch and limits), each unless already there.
    pub async fn import_accounts(
        &self,
        rows: Vec<(AccountId, Account)>,
    ) -> Result<Copied, PgError> {
        self.run_write(move |s| async move {
            let mut out = Copied::default();
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            for (id, a) in &rows {
                let (rate, burst, quota) = (
                    a.ingest_events_per_sec.map(to_i64),
                    a.ingest_burst.map(to_i64),
                    a.max_backlog_bytes.map(to_i64),
                );
                out.note(
                    insert_or_same(
                        &tx,
                        "INSERT INTO accounts (account, siem_enabled, updated_at,
                           ingest_events_per_sec, ingest_burst, max_backlog_bytes)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account) DO NOTHING",
                        "SELECT 1 FROM accounts WHERE account = $1 AND siem_enabled = $2
                           AND updated_at = $3 AND ingest_events_per_sec IS NOT DISTINCT FROM $4
                           AND ingest_burst IS NOT DISTINCT FROM $5
                           AND max_backlog_bytes IS NOT DISTINCT FROM $6",
                        &[
                            &id.as_str(),
                            &a.siem_enabled,
                            &a.updated_at,
                            &rate,
                            &burst,
                            &quota,
                        ],
                        || format!("account {id}"),
                    )
                    .await?,
                );
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// Copies account tokens (the hash of each secret, as stored).
    pub async fn import_tokens(
        &self,
        rows: Vec<(String, AccountToken)>,
    ) -> Result<Copied, PgError> {
        self.run_write(move |s| async move {
            let mut out = Copied::default();
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            for (hash, t) in &rows {
                out.note(
                    insert_or_same(
                        &tx,
                        "INSERT INTO account_tokens (id, hash, account, name, created_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        "SELECT 1 FROM account_tokens WHERE id = $1 AND hash = $2 AND account = $3
                           AND name IS NOT DISTINCT FROM $4 AND created_at = $5",
                        &[&t.id, hash, &t.account.as_str(), &t.name, &t.created_at],
                        || format!("account token {} of account {}", t.id, t.account),
                    )
                    .await?,
                );
            }
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// Copies one integration with its checkpoint, dead letters, replay, connection
    /// report and gaps, all or nothing.
    pub async fn import_integration(
        &self,
        copy: IntegrationCopy,
    ) -> Result<IntegrationCopied, PgError> {
        self.run_write(move |s| async move { s.import_integration(&copy).await })
            .await
    }

    /// Copies consecutive audit chunks of an account (in sequence order), byte for
    /// byte under their sequences, making the partitions of their storage times.
    pub async fn import_chunks(
        &self,
        account: &AccountId,
        chunks: Vec<RawChunk>,
    ) -> Result<Copied, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.import_chunks(&account, &chunks).await })
            .await
    }

    /// Copies the id hashes of an account's recent events (its dedup window).
    pub async fn import_ids(
        &self,
        account: &AccountId,
        ids: Vec<RawIds>,
    ) -> Result<Copied, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.import_ids(&account, &ids).await })
            .await
    }

    /// Copies an account's job snapshots under their change sequences, and the
    /// tombstones of its finished jobs that retention removed.
    pub async fn import_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<StoredJob>,
        tombstones: Vec<RawTombstone>,
    ) -> Result<Copied, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.import_jobs(&account, &jobs, &tombstones).await })
            .await
    }

    /// Sets an account's newest sequences and the storage time its next chunks
    /// must not precede — written before its events, so that nothing can give out a
    /// sequence the copy holds (nodes also refuse to start until the copy is done).
    pub async fn import_heads(
        &self,
        account: &AccountId,
        heads: Heads,
        audit_stored_at: Option<DateTime<Utc>>,
    ) -> Result<Copied, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move {
            let mut out = Copied::default();
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            out.note(
                insert_or_same(
                    &tx,
                    "INSERT INTO account_heads (account, audit_seq, job_seq, audit_stored_at)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account) DO NOTHING",
                    "SELECT 1 FROM account_heads WHERE account = $1 AND audit_seq = $2
                       AND job_seq = $3 AND audit_stored_at IS NOT DISTINCT FROM $4",
                    &[
                        &account.as_str(),
                        &to_i64(heads.audit),
                        &to_i64(heads.jobs),
                        &audit_stored_at,
                    ],
                    || {
                        format!(
                            "the newest sequences of account {account} (events were stored since)"
                        )
                    },
                )
                .await?,
            );
            tx.commit().await?;
            Ok(out)
        })
        .await
    }

    /// Makes dead letter ids given out from now on higher than `highest`, so the
    /// newest dead letter stays the highest.
    pub async fn raise_dead_letter_ids(&self, highest: u64) -> Result<(), PgError> {
        if highest == 0 {
            return Ok(());
        }
        self.run_write(move |s| async move {
            s.pool
                .get()
                .await?
                .execute(
                    "SELECT setval('dead_letter_ids',
                       greatest($1, (SELECT last_value FROM dead_letter_ids)))",
                    &[&to_i64(highest)],
                )
                .await?;
            Ok(())
        })
        .await
    }
}
