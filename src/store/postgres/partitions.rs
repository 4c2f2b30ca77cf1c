//! Audit partitions and retention. `audit_chunks` is partitioned by storage time;
//! partitions are made ahead of time and retention drops whole partitions instead
//! of deleting rows: a drop costs the same for a million events as for one.
//!
//! A partition goes when it is closed (its time span ended a while ago) and either
//! every event in it was delivered by every integration of its account that wants
//! audit events, or it outlived the retention — then each integration that had not
//! delivered some of its events gets a gap recorded, counted exactly per chunk.
//! An account with no such integration keeps its events for the whole retention,
//! as on the embedded store.

use super::super::{Gap, GapReason};
use super::error::PgError;
use super::{to_u64, PgStore, Shared};
use crate::model::Source;
use chrono::{DateTime, Duration as Span, Utc};
use std::collections::HashMap;
use tokio_postgres::Client;
use uuid::Uuid;

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepOutcome {
    /// Audit events removed.
    pub audit_events: u64,
    /// Audit partitions dropped whole.
    pub partitions_dropped: u64,
    /// Finished jobs removed.
    pub jobs: u64,
    /// Dedup ids removed past the window.
    pub ids_trimmed: u64,
    /// Commit log rows older than a day, removed.
    pub commits_pruned: u64,
}

/// Only one node sweeps at a time (a session advisory lock, "siemsync-sweep").
const SWEEP_LOCK: i64 = 0x7369_656d_7377_6570;

/// Partition names carry their span: `audit_chunks_<start>_<end>`, seconds since the epoch.
fn partition_name(start: i64, end: i64) -> String {
    format!("audit_chunks_{start}_{end}")
}

fn parse_partition(name: &str) -> Option<(i64, i64)> {
    let rest = name.strip_prefix("audit_chunks_")?;
    let (a, b) = rest.split_once('_')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Shared {
    fn width_secs(&self) -> i64 {
        (self.options.partition_width.as_secs() as i64).max(1)
    }

    /// Makes the partition holding `at` and the configured number after it.
    pub(super) async fn ensure_partitions(&self, at: DateTime<Utc>) -> Result<(), PgError> {
        let client = self.pool.get().await?;
        let width = self.width_secs();
        let first = at.timestamp().div_euclid(width) * width;
        for i in 0..=i64::from(self.options.partitions_ahead) {
            let start = first + i * width;
            if !self.known_partition(start) {
                self.create_partition_at(&client, start).await?;
            }
        }
        Ok(())
    }

    fn known_partition(&self, start: i64) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&start)
    }

    /// Makes the partition holding `at` (an ingest found none).
    pub(super) async fn create_partition(
        &self,
        client: &Client,
        at: DateTime<Utc>,
    ) -> Result<(), PgError> {
        let width = self.width_secs();
        self.create_partition_at(client, at.timestamp().div_euclid(width) * width)
            .await
    }

    /// Creates a partition as a table of its own and then attaches it: attaching
    /// takes a lock that readers and writers of `audit_chunks` do not wait for,
    /// where `CREATE TABLE … PARTITION OF` would stop them all for its duration.
    /// Nodes doing this at once serialise on an advisory lock; the loser finds the
    /// partition there.
    async fn create_partition_at(&self, client: &Client, start: i64) -> Result<(), PgError> {
        let end = start + self.width_secs();
        let name = partition_name(start, end);
        let from = DateTime::<Utc>::from_timestamp(start, 0).unwrap_or_default();
        let to = DateTime::<Utc>::from_timestamp(end, 0).unwrap_or_default();
        let (from, to) = (from.to_rfc3339(), to.to_rfc3339());
        let sql = format!(
            "DO $$
             BEGIN
               PERFORM pg_advisory_xact_lock({start});
               IF NOT EXISTS (SELECT 1 FROM pg_class WHERE relname = '{name}') THEN
                 CREATE TABLE {name} (LIKE audit_chunks INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
                   WITH (toast_tuple_target = 8160);
                 ALTER TABLE {name} ADD CONSTRAINT {name}_span
                   CHECK (stored_at >= '{from}' AND stored_at < '{to}');
                 ALTER TABLE audit_chunks ATTACH PARTITION {name}
                   FOR VALUES FROM ('{from}') TO ('{to}');
               END IF;
             END $$"
        );
        client.batch_execute(&sql).await?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(start);
        Ok(())
    }
}

/// An integration reading audit events, and how far it has delivered.
struct AuditReader {
    integration: Uuid,
    delivered: u64,
}

/// Per integration: the first and last storage time and the number of events lost.
#[derive(Default)]
struct Losses(HashMap<Uuid, (DateTime<Utc>, DateTime<Utc>, u64)>);

impl Losses {
    fn note(&mut self, id: Uuid, at: DateTime<Utc>, count: u64) {
        let g = self.0.entry(id).or_insert((at, at, 0));
        g.0 = g.0.min(at);
        g.1 = g.1.max(at);
        g.2 += count;
    }
}

impl PgStore {
    /// Makes the current audit partition and the ones ahead (every node calls this
    /// periodically; ingest also makes a missing one itself).
    pub async fn ensure_partitions(&self) -> Result<(), PgError> {
        self.run(|s| async move { s.ensure_partitions(Utc::now()).await })
            .await
    }

    /// One retention pass over the whole cluster: drops audit partitions that were
    /// delivered by all their readers or outlived `retention` (recording gaps),
    /// removes delivered or expired finished jobs, and trims the dedup ids to the
    /// window. Does nothing when another node is sweeping.
    pub async fn sweep(&self, retention: std::time::Duration) -> Result<SweepOutcome, PgError> {
        self.run(move |s| async move {
            // A connection of its own: the session lock lives as long as it does.
            let client = s.pool.get().await?;
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
                .await?
                .get(0);
            if !locked {
                return Ok(SweepOutcome::default());
            }
            let result = s.sweep(&client, retention).await;
            client
                .execute("SELECT pg_advisory_unlock($1)", &[&SWEEP_LOCK])
                .await?;
            result
        })
        .await
    }
}

impl Shared {
    async fn sweep(
        &self,
        client: &Client,
        retention: std::time::Duration,
    ) -> Result<SweepOutcome, PgError> {
        let now: DateTime<Utc> = client.query_one("SELECT now()", &[]).await?.get(0);
        let cutoff = now - Span::from_std(retention).unwrap_or(Span::MAX);
        let mut out = SweepOutcome::default();
        let readers = self.audit_readers(client).await?;
        let parts = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                 WHERE i.inhparent = 'audit_chunks'::regclass",
                &[],
            )
            .await?;
        let mut spans: Vec<(i64, i64, String)> = parts
            .iter()
            .filter_map(|r| {
                let name: String = r.get(0);
                parse_partition(&name).map(|(a, b)| (a, b, name))
            })
            .collect();
        spans.sort();
        for (_, end, name) in spans {
            // Closed: no ingest can still write into it (one that stalled longer
            // gives up, see `audit`).
            if end > now.timestamp() - self.options.partition_grace.as_secs() as i64 {
                break;
            }
            let expired = end <= cutoff.timestamp();
            let Some(events) = self
                .retire_partition(client, &name, expired, &readers)
                .await?
            else {
                continue;
            };
            out.audit_events += events;
            out.partitions_dropped += 1;
        }
        out.jobs = self.sweep_jobs(client, cutoff).await?;
        out.ids_trimmed = self.trim_ids(client).await?;
        prune_quota_dropped(client).await?;
        out.commits_pruned = prune_commit_log(client).await?;
        Ok(out)
    }

    /// Every integration that wants audit events, per account, with its checkpoint.
    async fn audit_readers(
        &self,
        client: &Client,
    ) -> Result<HashMap<String, Vec<AuditReader>>, PgError> {
        let mut out: HashMap<String, Vec<AuditReader>> = HashMap::new();
        for (account, integration, delivered) in readers(client, Source::Audit).await? {
            out.entry(account).or_default().push(AuditReader {
                integration,
                delivered: to_u64(delivered),
            });
        }
        Ok(out)
    }

    /// Drops one closed partition if it may go; returns how many events it held.
    /// Reads only the partition's index (account, sequences, time), never the events.
    async fn retire_partition(
        &self,
        client: &Client,
        name: &str,
        expired: bool,
        readers: &HashMap<String, Vec<AuditReader>>,
    ) -> Result<Option<u64>, PgError> {
        let per_account_sql = format!(
            "SELECT account, max(last_seq), sum(last_seq - first_seq + 1)::int8,
                    sum(octet_length(body))::int8 FROM {name} GROUP BY account ORDER BY account"
        );
        let per_account = client.query(&per_account_sql, &[]).await?;
        for row in &per_account {
            let account: &str = row.get(0);
            let last = to_u64(row.get(1));
            let readers = readers.get(account).map(Vec::as_slice).unwrap_or_default();
            let delivered_by_all =
                !readers.is_empty() && readers.iter().all(|r| r.delivered >= last);
            if !expired && !delivered_by_all {
                return Ok(None);
            }
        }
        // Gaps and the drop in one transaction: a crash leaves both or neither.
        // Dropping a partition locks `audit_chunks` for a moment; a short lock
        // timeout keeps ingest from queueing behind a long read for it (the next
        // pass tries again).
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL lock_timeout = '2s'").await?;
        // The accounts' heads rows first, in order (as the quota sweep takes an
        // account's heads row before it deletes anything): no sweep deletes from
        // the partition meanwhile, and what is read below, after the lock, is what
        // the drop takes — no gap counted twice, no bytes subtracted twice.
        let names: Vec<&str> = per_account.iter().map(|r| r.get::<_, &str>(0)).collect();
        tx.query(
            "SELECT 1 FROM account_heads WHERE account = ANY($1) ORDER BY account FOR UPDATE",
            &[&names],
        )
        .await?;
        let per_account = tx.query(&per_account_sql, &[]).await?;
        let events: u64 = per_account.iter().map(|r| to_u64(r.get(2))).sum();
        let mut losses = Losses::default();
        if expired {
            let (mut accounts, mut ids, mut delivered) = (Vec::new(), Vec::new(), Vec::new());
            for (account, list) in readers {
                for r in list {
                    accounts.push(account.as_str());
                    ids.push(r.integration);
                    delivered.push(super::to_i64(r.delivered));
                }
            }
            // Exactly the events each reader had not delivered, chunk by chunk.
            let lost = tx
                .query(
                    &format!(
                        "SELECT r.integration, min(c.stored_at), max(c.stored_at),
                                sum(c.last_seq - greatest(c.first_seq, r.delivered + 1) + 1)::int8
                         FROM {name} c
                         JOIN unnest($1::text[], $2::uuid[], $3::int8[]) AS r (account, integration, delivered)
                           ON r.account = c.account
                         WHERE c.last_seq > r.delivered
                         GROUP BY r.integration"
                    ),
                    &[&accounts, &ids, &delivered],
                )
                .await?;
            for row in lost {
                losses.note(row.get(0), row.get(1), to_u64(row.get(3)));
                losses.note(row.get(0), row.get(2), 0);
            }
        }
        for (id, (from, to, count)) in losses.0 {
            log::warn!(
                "integration {id}: {count} audit events outlived the retention before it delivered them (gap recorded)"
            );
            record_gap(
                &tx,
                id,
                Source::Audit,
                GapReason::Retention,
                from,
                to,
                count,
            )
            .await?;
        }
        // The accounts' stored bytes (what the backlog quota is enforced on) lose
        // the partition's chunks in the same transaction.
        let (mut accounts, mut bytes) = (Vec::new(), Vec::new());
        for row in &per_account {
            accounts.push(row.get::<_, &str>(0));
            bytes.push(row.get::<_, i64>(3));
        }
        tx.execute(
            "UPDATE account_heads h SET stored_bytes = greatest(h.stored_bytes - u.b, 0)
             FROM unnest($1::text[], $2::int8[]) AS u (a, b) WHERE h.account = u.a",
            &[&accounts, &bytes],
        )
        .await?;
        tx.batch_execute(&format!("DROP TABLE {name}")).await?;
        tx.commit().await?;
        self.partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|s| parse_partition(name).is_none_or(|(start, _)| start != *s));
        Ok(Some(events))
    }

    /// Deletes the dedup id records that left every window (small rows, one per
    /// chunk: a delete is cheap here, unlike for the chunks themselves).
    async fn trim_ids(&self, client: &Client) -> Result<u64, PgError> {
        let window = self.options.dedup_window as i64;
        let mut total = 0;
        loop {
            let n = client
                .execute(
                    "DELETE FROM audit_ids WHERE ctid = ANY (ARRAY(
                       SELECT a.ctid FROM audit_ids a JOIN account_heads h USING (account)
                       WHERE a.first_seq + length(a.hashes) / 16 - 1 <= h.audit_seq - $1
                       LIMIT 10000))",
                    &[&window],
                )
                .await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }
}

/// Forgets the runs of sequences the backlog quota dropped that every reader of
/// the account has passed (or that no integration reads): no post carrying them
/// can be committed any more.
async fn prune_quota_dropped(client: &Client) -> Result<u64, PgError> {
    Ok(client
        .execute(
            "DELETE FROM quota_dropped q WHERE NOT EXISTS (
               SELECT 1 FROM integrations i LEFT JOIN checkpoints c ON c.integration = i.id
               WHERE i.account = q.account AND i.doc -> 'sources' ? q.source
                 AND coalesce(CASE q.source WHEN 'audit' THEN c.audit_seq ELSE c.job_seq END, 0)
                     < q.last_seq)",
            &[],
        )
        .await?)
}

/// Removes commit log rows older than a day, in batches: the log is there to check
/// recent ownership (and for tests), and one row per commit adds up.
async fn prune_commit_log(client: &Client) -> Result<u64, PgError> {
    let mut total = 0;
    loop {
        let n = client
            .execute(
                "DELETE FROM checkpoint_commits WHERE id = ANY (ARRAY(
                   SELECT id FROM checkpoint_commits
                   WHERE committed_at < now() - interval '1 day' LIMIT 10000))",
                &[],
            )
            .await?;
        total += n;
        if n < 10_000 {
            return Ok(total);
        }
    }
}

/// Every integration that wants `source`: its account, id and how far it delivered.
pub(super) async fn readers(
    client: &Client,
    source: Source,
) -> Result<Vec<(String, Uuid, i64)>, PgError> {
    let column = match source {
        Source::Audit => "audit_seq",
        Source::Jobs => "job_seq",
    };
    let rows = client
        .query(
            &format!(
                "SELECT i.account, i.id, coalesce(c.{column}, 0)
                 FROM integrations i LEFT JOIN checkpoints c ON c.integration = i.id
                 WHERE i.doc -> 'sources' ? $1"
            ),
            &[&source.as_str()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Adds lost events to an integration's gap for `source` and `reason` (made when
/// missing), unless the integration is gone.
pub(super) async fn record_gap(
    tx: &deadpool_postgres::Transaction<'_>,
    id: Uuid,
    source: Source,
    reason: GapReason,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    count: u64,
) -> Result<(), PgError> {
    tx.execute(
        "INSERT INTO gaps (integration, source, first_at, last_at, count, recorded_at, reason)
         SELECT $1, $2, $3, $4, $5, now(), $6 WHERE EXISTS (SELECT 1 FROM integrations WHERE id = $1)
         ON CONFLICT (integration, source, reason) DO UPDATE SET
           first_at = least(gaps.first_at, excluded.first_at),
           last_at = greatest(gaps.last_at, excluded.last_at),
           count = gaps.count + excluded.count,
           recorded_at = excluded.recorded_at",
        &[
            &id,
            &source.as_str(),
            &from,
            &to,
            &(count as i64),
            &reason.as_str(),
        ],
    )
    .await?;
    Ok(())
}

/// Reads the gaps of an integration (source, first_at, last_at, count, recorded_at,
/// reason).
pub(super) fn gap_of(row: &tokio_postgres::Row) -> Result<Gap, PgError> {
    let source = match row.get::<_, &str>(0) {
        "audit" => Source::Audit,
        "jobs" => Source::Jobs,
        other => {
            return Err(super::error::corrupt(
                "a gap",
                format!("unknown source {other:?}"),
            ))
        }
    };
    let reason = match row.get::<_, &str>(5) {
        "retention" => GapReason::Retention,
        "backlog_quota" => GapReason::BacklogQuota,
        other => {
            return Err(super::error::corrupt(
                "a gap",
                format!("unknown reason {other:?}"),
            ))
        }
    };
    Ok(Gap {
        source,
        reason,
        from: row.get(1),
        to: row.get(2),
        count: to_u64(row.get(3)),
        recorded_at: row.get(4),
    })
}
