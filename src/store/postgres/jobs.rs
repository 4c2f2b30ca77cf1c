//! Job snapshots on PostgreSQL: the latest snapshot of each job with its change
//! sequence, written under the account's row lock like the audit log.

use super::audit::lock_heads;
use super::error::{corrupt, PgError};
use super::partitions::{readers, record_gap};
use super::{to_i64, to_u64, PgStore, Shared};
use crate::model::{AccountId, JobSnapshot, Source};
use crate::store::jobs::latest_per_job;
use crate::store::{GapReason, StoredJob};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::ops::ControlFlow;
use tokio_postgres::Client;

fn stored_job(row: &tokio_postgres::Row) -> Result<StoredJob, PgError> {
    let doc: serde_json::Value = row.get(1);
    Ok(StoredJob {
        change_seq: to_u64(row.get(0)),
        snapshot: serde_json::from_value(doc).map_err(|e| corrupt("a job snapshot", e))?,
    })
}

/// The stored snapshots of `jobs`, and those of them whose finished record the
/// sweep removed (their tombstone).
async fn stored_jobs(
    tx: &tokio_postgres::Transaction<'_>,
    account: &AccountId,
    jobs: &[String],
) -> Result<(HashMap<String, JobSnapshot>, Vec<String>), PgError> {
    let a = account.as_str();
    let stored = tx
        .query(
            "SELECT job, change_seq, snapshot FROM jobs WHERE account = $1 AND job = ANY($2)",
            &[&a, &jobs],
        )
        .await?;
    let mut old: HashMap<String, JobSnapshot> = HashMap::new();
    for row in &stored {
        let job: String = row.get(0);
        let doc: serde_json::Value = row.get(2);
        old.insert(
            job,
            serde_json::from_value(doc).map_err(|e| corrupt("a job snapshot", e))?,
        );
    }
    let swept: Vec<String> = tx
        .query(
            "SELECT job FROM job_tombstones WHERE account = $1 AND job = ANY($2)",
            &[&a, &jobs],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((old, swept))
}

impl Shared {
    async fn put_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<JobSnapshot>,
    ) -> Result<usize, PgError> {
        let count = jobs.len();
        let latest = latest_per_job(jobs);
        let order: Vec<String> = latest.iter().map(|j| j.job.clone()).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut head = lock_heads(&tx, account).await?.heads.jobs;
        let a = account.as_str();
        let (old, swept) = stored_jobs(&tx, account, &order).await?;
        let (mut names, mut seqs, mut running, mut finished, mut times, mut docs) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for snap in latest {
            let job = snap.job.clone();
            let same = old.get(&job).is_some_and(|o| {
                JobSnapshot {
                    ingested_at: o.ingested_at,
                    ..snap.clone()
                } == *o
            });
            // A late retry of an older snapshot must not reopen a finished job, nor
            // one whose finished snapshot retention removed.
            let was_finished =
                old.get(&job).is_some_and(JobSnapshot::is_finished) || swept.contains(&job);
            if same || (was_finished && !snap.is_finished()) {
                continue;
            }
            head += 1;
            seqs.push(to_i64(head));
            running.push(snap.in_progress());
            finished.push(snap.is_finished());
            times.push(snap.ingested_at);
            docs.push(serde_json::to_value(&snap).map_err(|e| corrupt(&job, e))?);
            names.push(job);
        }
        if !names.is_empty() {
            // The account's stored bytes change by the difference between the
            // replaced snapshots and the new ones (the quota is enforced on them).
            let before: i64 = tx
                .query_one(
                    "SELECT coalesce(sum(octet_length(snapshot::text)), 0)::int8 FROM jobs
                     WHERE account = $1 AND job = ANY($2)",
                    &[&a, &names],
                )
                .await?
                .get(0);
            tx.execute(
                "INSERT INTO jobs AS j (account, job, change_seq, running, finished, ingested_at, snapshot)
                 SELECT $1, n, s, r, f, t, d
                 FROM unnest($2::text[], $3::int8[], $4::bool[], $5::bool[], $6::timestamptz[], $7::jsonb[])
                   AS u (n, s, r, f, t, d)
                 ON CONFLICT (account, job) DO UPDATE SET change_seq = excluded.change_seq,
                   running = excluded.running, finished = excluded.finished,
                   ingested_at = excluded.ingested_at, snapshot = excluded.snapshot",
                &[&a, &names, &seqs, &running, &finished, &times, &docs],
            )
            .await?;
            tx.execute(
                "UPDATE account_heads SET job_seq = $2, stored_bytes = stored_bytes - $4
                   + (SELECT coalesce(sum(octet_length(snapshot::text)), 0)::int8 FROM jobs
                      WHERE account = $1 AND job = ANY($3))
                 WHERE account = $1",
                &[&a, &to_i64(head), &names, &before],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(count)
    }

    /// Removes finished jobs that every reader of their account delivered, or that
    /// were stored before `cutoff` (recording gaps for readers that had not
    /// delivered them); leaves a tombstone for each, so a late retry of an
    /// unfinished snapshot does not bring it back. Tombstones go after the retention.
    pub(super) async fn sweep_jobs(
        &self,
        client: &Client,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, PgError> {
        let (mut accounts, mut ids, mut delivered) = (vec![], vec![], vec![]);
        for (account, id, seq) in readers(client, Source::Jobs).await? {
            accounts.push(account);
            ids.push(id);
            delivered.push(seq);
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // The heads rows first, in one order, as an ingest of jobs takes its row
        // before the job's: the delete below lowers their stored bytes.
        tx.execute(
            "SELECT 1 FROM account_heads WHERE account IN (SELECT account FROM jobs WHERE finished)
             ORDER BY account FOR UPDATE",
            &[],
        )
        .await?;
        // One statement decides and deletes, so what is counted as lost is exactly
        // what went.
        let gone = tx
            .query(
                "WITH r AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::int8[]) AS r (account, integration, delivered)),
                      m AS (SELECT account, min(delivered) AS delivered FROM r GROUP BY account),
                      d AS (DELETE FROM jobs j USING (SELECT j2.account, j2.job FROM jobs j2
                              LEFT JOIN m ON m.account = j2.account
                              WHERE j2.finished AND (j2.change_seq <= m.delivered OR j2.ingested_at < $4)) x
                            WHERE j.account = x.account AND j.job = x.job
                            RETURNING j.account, j.job, j.change_seq, j.ingested_at,
                                      octet_length(j.snapshot::text) AS bytes),
                      t AS (INSERT INTO job_tombstones (account, job, swept_at)
                            SELECT account, job, now() FROM d
                            ON CONFLICT (account, job) DO UPDATE SET swept_at = excluded.swept_at),
                      b AS (UPDATE account_heads h SET stored_bytes = greatest(h.stored_bytes - x.bytes, 0)
                            FROM (SELECT account, sum(bytes)::int8 AS bytes FROM d GROUP BY account) x
                            WHERE h.account = x.account)
                 SELECT r.integration, d.ingested_at, (SELECT count(*) FROM d)
                 FROM d JOIN r ON r.account = d.account AND r.delivered < d.change_seq
                 UNION ALL SELECT NULL, NULL, (SELECT count(*) FROM d)",
                &[&accounts, &ids, &delivered, &cutoff],
            )
            .await?;
        let mut removed = 0;
        let mut losses: HashMap<uuid::Uuid, (DateTime<Utc>, DateTime<Utc>, u64)> = HashMap::new();
        for row in &gone {
            removed = to_u64(row.get(2));
            let (Some(id), Some(at)) = (
                row.get::<_, Option<uuid::Uuid>>(0),
                row.get::<_, Option<DateTime<Utc>>>(1),
            ) else {
                continue;
            };
            let g = losses.entry(id).or_insert((at, at, 0));
            g.0 = g.0.min(at);
            g.1 = g.1.max(at);
            g.2 += 1;
        }
        for (id, (from, to, count)) in losses {
            log::warn!(
                "integration {id}: {count} job snapshots outlived the retention before it delivered them (gap recorded)"
            );
            record_gap(&tx, id, Source::Jobs, GapReason::Retention, from, to, count).await?;
        }
        tx.execute("DELETE FROM job_tombstones WHERE swept_at < $1", &[&cutoff])
            .await?;
        tx.commit().await?;
        Ok(removed)
    }
}

impl PgStore {
    /// Stores job snapshots, each replacing the job's previous one, all or nothing,
    /// durable when it returns. A snapshot identical to the stored one (a platform
    /// retry) changes nothing; an unfinished one never reopens a finished job.
    pub async fn put_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<JobSnapshot>,
    ) -> Result<usize, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.put_jobs(&account, jobs).await })
            .await
    }

    /// Up to `limit` jobs whose snapshot changed after change sequence `after`, in change order.
    pub async fn jobs_changed(
        &self,
        account: &AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredJob>, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT change_seq, snapshot FROM jobs
                     WHERE account = $1 AND change_seq > $2 ORDER BY change_seq LIMIT $3",
                )
                .await?;
            client
                .query(&stmt, &[&account.as_str(), &to_i64(after), &(limit as i64)])
                .await?
                .iter()
                .map(stored_job)
                .collect()
        })
        .await
    }

    /// Visits jobs whose snapshot changed after `after`, in change order, until `visit` breaks.
    pub async fn jobs_changed_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), PgError> {
        const PAGE: usize = 1000;
        let mut cursor = after;
        loop {
            let page = self.jobs_changed(account, cursor, PAGE).await?;
            let full = page.len() == PAGE;
            for job in page {
                cursor = job.change_seq;
                if visit(job).is_break() {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Up to `limit` jobs still in progress, ordered by job id, after `after_job`.
    pub async fn running_jobs(
        &self,
        account: &AccountId,
        after_job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredJob>, PgError> {
        let account = account.clone();
        let after_job = after_job.map(str::to_owned);
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            client
                .query(
                    "SELECT change_seq, snapshot FROM jobs
                     WHERE account = $1 AND running AND ($2::text IS NULL OR job > $2)
                     ORDER BY job LIMIT $3",
                    &[&account.as_str(), &after_job, &(limit as i64)],
                )
                .await?
                .iter()
                .map(stored_job)
                .collect()
        })
        .await
    }

    /// Job snapshots changed after `after`: how many, and when the oldest of them arrived.
    pub async fn job_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let row = client
                .query_one(
                    "SELECT count(*), min(ingested_at) FROM jobs WHERE account = $1 AND change_seq > $2",
                    &[&account.as_str(), &to_i64(after)],
                )
                .await?;
            Ok((to_u64(row.get(0)), row.get(1)))
        })
        .await
    }
}
