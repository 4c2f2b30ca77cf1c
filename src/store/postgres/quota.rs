//! The backlog quota per account on PostgreSQL: the same promises as the embedded
//! store's (`store/retention.rs`), for whichever node the ingest reaches and
//! whichever node delivers the account's integrations.
//!
//! One sweep of an account is one transaction under the account's heads row lock
//! (every ingest of the account takes it too): it reads the exact stored bytes,
//! deletes what every reader delivered first, uncounted (as retention would: here
//! only whole partitions go by retention, so delivered chunks stay long), then
//! the oldest audit chunks and job snapshots until the account is within its
//! quota (never the newest chunk nor the newest job snapshot), records the runs of
//! sequences it dropped (`quota_dropped`), each integration's loss as a
//! `backlog_quota` gap counted from its checkpoint (read under a share lock, so no
//! commit moves it meanwhile), the account's totals and what the notice owes.
//!
//! There are no claims of posts in flight across nodes: a post another node has in
//! flight may carry events the sweep dropped and counted. Its checkpoint commit
//! then takes the events it delivered out of the gap again (`Shared::commit`, with
//! `quota_dropped`): an event is either delivered or counted, never both.

use super::super::chunk::ChunkWriter;
use super::super::retention::{merge_gaps, PendingNotice, Told};
use super::super::{AuditSweep, Gap, GapReason, QuotaDrops};
use super::audit::lock_heads;
use super::error::{corrupt, PgError};
use super::partitions::record_gap;
use super::{to_i64, to_u64, PgStore, Shared};
use crate::model::{AccountId, AuditEvent, Source};
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use std::collections::HashMap;
use uuid::Uuid;

/// The accounts owed a notice: what the quota dropped was not told yet.
const OWED: &str = "pending -> 'drops' <> 'null'::jsonb";

/// Records one sweep transaction reads of each source at most: an account still over
/// its quota after that many is swept again at once (`AuditSweep::unfinished`), so
/// one transaction stays short.
const SWEEP_BATCH: i64 = 10_000;

/// An audit chunk or a job snapshot the sweep may drop.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// Audit: the chunk's last sequence; jobs: the snapshot's change sequence.
    seq: i64,
    at: DateTime<Utc>,
    bytes: i64,
}

/// A dropped audit chunk, as the delete returned it.
struct DroppedChunk {
    first: u64,
    last: u64,
    at: DateTime<Utc>,
}

/// What one sweep dropped, exactly as the deletes returned it.
#[derive(Default)]
struct Dropped {
    chunks: Vec<DroppedChunk>,
    /// Job snapshots: change sequence and storage time.
    jobs: Vec<(u64, DateTime<Utc>)>,
    bytes: i64,
}

/// An integration of the account and where it stands in each source it wants.
struct Reader {
    id: Uuid,
    audit: Option<u64>,
    jobs: Option<u64>,
}

/// Per integration and source: first and last storage time, count.
type Lost = HashMap<(Uuid, Source), (DateTime<Utc>, DateTime<Utc>, u64)>;

impl Shared {
    /// The account's exact stored bytes: its chunks' bodies and its snapshots' text.
    async fn exact_stored_bytes(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
    ) -> Result<i64, PgError> {
        Ok(tx
            .query_one(
                "SELECT coalesce((SELECT sum(octet_length(body)) FROM audit_chunks WHERE account = $1), 0)::int8
                      + coalesce((SELECT sum(octet_length(snapshot::text)) FROM jobs WHERE account = $1), 0)::int8",
                &[&account.as_str()],
            )
            .await?
            .get(0))
    }

    /// What the sweep may drop, oldest first: audit chunks ending before
    /// `audit_below` (at most the head: never the newest chunk), job snapshots up to
    /// change `jobs_upto` before the newest, at most `SWEEP_BATCH` of each.
    async fn candidates(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        audit_below: u64,
        jobs_upto: i64,
    ) -> Result<(Vec<Candidate>, Vec<Candidate>), PgError> {
        let a = account.as_str();
        let audit = tx
            .query(
                "SELECT last_seq, stored_at, octet_length(body)::int8 FROM audit_chunks
                 WHERE account = $1 AND last_seq < $2 ORDER BY last_seq LIMIT $3",
                &[&a, &to_i64(audit_below), &SWEEP_BATCH],
            )
            .await?;
        let jobs = tx
            .query(
                "SELECT change_seq, ingested_at, octet_length(snapshot::text)::int8 FROM jobs
                 WHERE account = $1 AND change_seq <= $3
                   AND change_seq < (SELECT max(change_seq) FROM jobs WHERE account = $1)
                 ORDER BY change_seq LIMIT $2",
                &[&a, &SWEEP_BATCH, &jobs_upto],
            )
            .await?;
        let of = |r: &tokio_postgres::Row| Candidate {
            seq: r.get(0),
            at: r.get(1),
            bytes: r.get(2),
        };
        Ok((
            audit.iter().map(of).collect(),
            jobs.iter().map(of).collect(),
        ))
    }

    /// Deletes the oldest records, audit chunks and job snapshots in the order they
    /// were stored, until `excess` bytes went or nothing more may go.
    async fn drop_oldest(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        audit: &[Candidate],
        jobs: &[Candidate],
        excess: i64,
    ) -> Result<Dropped, PgError> {
        let (mut i, mut j, mut freed) = (0, 0, 0i64);
        let mut job_seqs = Vec::new();
        while freed < excess && (i < audit.len() || j < jobs.len()) {
            let take_audit = match (audit.get(i), jobs.get(j)) {
                (Some(a), Some(b)) => a.at <= b.at,
                (Some(_), None) => true,
                _ => false,
            };
            if take_audit {
                freed += audit[i].bytes;
                i += 1;
            } else {
                freed += jobs[j].bytes;
                job_seqs.push(jobs[j].seq);
                j += 1;
            }
        }
        let a = account.as_str();
        let mut out = Dropped::default();
        if let Some(cut) = i.checked_sub(1).map(|k| audit[k].seq) {
            // What the delete returns is what went: a partition retention dropped
            // meanwhile is not counted here as well.
            for r in tx
                .query(
                    "DELETE FROM audit_chunks WHERE account = $1 AND last_seq <= $2
                     RETURNING first_seq, last_seq, stored_at, octet_length(body)::int8",
                    &[&a, &cut],
                )
                .await?
            {
                out.chunks.push(DroppedChunk {
                    first: to_u64(r.get(0)),
                    last: to_u64(r.get(1)),
                    at: r.get(2),
                });
                out.bytes += r.get::<_, i64>(3);
            }
            out.chunks.sort_by_key(|c| c.first);
        }
        if !job_seqs.is_empty() {
            // Forgotten, without a tombstone: a later snapshot of the job is new.
            for r in tx
                .query(
                    "DELETE FROM jobs WHERE account = $1 AND change_seq = ANY($2)
                     RETURNING change_seq, ingested_at, octet_length(snapshot::text)::int8",
                    &[&a, &job_seqs],
                )
                .await?
            {
                out.jobs.push((to_u64(r.get(0)), r.get(1)));
                out.bytes += r.get::<_, i64>(2);
            }
            out.jobs.sort_by_key(|j| j.0);
        }
        Ok(out)
    }

    /// The account's integrations with their checkpoints, share-locked until the
    /// sweep commits: a checkpoint commit waits, so a post's commit either comes
    /// first (the sweep counts from the moved checkpoint) or sees what the sweep
    /// dropped (and takes what it delivered out of the gap).
    ///
    /// Locks in the order a deletion of an integration does (its row, then through
    /// the cascade its checkpoint): the integrations rows first, key-share (which
    /// the gap inserts' foreign key checks take anyway), so a concurrent delete
    /// either goes first (the integration is no reader) or waits for the sweep.
    /// An integration that never committed gets its checkpoint row (nothing
    /// delivered) here, so there is a row to lock: its first commit then waits for
    /// the sweep as any other does (see `uncount_delivered`).
    async fn quota_readers(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
    ) -> Result<Vec<Reader>, PgError> {
        let its = tx
            .query(
                "SELECT id, doc -> 'sources' ? 'audit', doc -> 'sources' ? 'jobs'
                 FROM integrations WHERE account = $1 ORDER BY id FOR KEY SHARE",
                &[&account.as_str()],
            )
            .await?;
        let ids: Vec<Uuid> = its.iter().map(|r| r.get(0)).collect();
        tx.execute(
            "INSERT INTO checkpoints (integration, audit_seq, job_seq, delivered_audit, delivered_jobs)
             SELECT i, 0, 0, 0, 0 FROM unnest($1::uuid[]) AS i ORDER BY i
             ON CONFLICT (integration) DO NOTHING",
            &[&ids],
        )
        .await?;
        let cps: HashMap<Uuid, (i64, i64)> = tx
            .query(
                "SELECT integration, audit_seq, job_seq FROM checkpoints
                 WHERE integration = ANY($1) ORDER BY integration FOR SHARE",
                &[&ids],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        Ok(its
            .iter()
            .map(|r| {
                let id: Uuid = r.get(0);
                let (audit, jobs) = cps.get(&id).copied().unwrap_or_default();
                Reader {
                    id,
                    audit: r.get::<_, bool>(1).then_some(to_u64(audit)),
                    jobs: r.get::<_, bool>(2).then_some(to_u64(jobs)),
                }
            })
            .collect())
    }

    /// The account's quota record: its totals and what the notice owes.
    async fn quota_record(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
    ) -> Result<(Option<QuotaDrops>, PendingNotice), PgError> {
        let row = tx
            .query_opt(
                "SELECT drops, pending FROM account_quota WHERE account = $1 FOR UPDATE",
                &[&account.as_str()],
            )
            .await?;
        let Some(row) = row else {
            return Ok((None, PendingNotice::default()));
        };
        let what = || format!("the backlog quota record of account {account}");
        let drops = row
            .get::<_, Option<serde_json::Value>>(0)
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| corrupt(what(), e))?;
        let pending = serde_json::from_value(row.get(1)).map_err(|e| corrupt(what(), e))?;
        Ok((drops, pending))
    }

    async fn put_quota_record(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        drops: Option<&QuotaDrops>,
        pending: &PendingNotice,
    ) -> Result<(), PgError> {
        let what = || format!("the backlog quota record of account {account}");
        let drops = drops
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| corrupt(what(), e))?;
        let pending = serde_json::to_value(pending).map_err(|e| corrupt(what(), e))?;
        tx.execute(
            "INSERT INTO account_quota (account, drops, pending) VALUES ($1, $2, $3)
             ON CONFLICT (account) DO UPDATE SET drops = excluded.drops, pending = excluded.pending",
            &[&account.as_str(), &drops, &pending],
        )
        .await?;
        Ok(())
    }

    /// One sweep of the account against `quota` (see the module's note).
    async fn quota_sweep(&self, account: &AccountId, quota: u64) -> Result<AuditSweep, PgError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let heads = lock_heads(&tx, account).await?.heads;
        let a = account.as_str();
        let stored = self.exact_stored_bytes(&tx, account).await?;
        let excess = stored - to_i64(quota);
        if excess <= 0 {
            tx.execute(
                "UPDATE account_heads SET stored_bytes = $2 WHERE account = $1",
                &[&a, &stored],
            )
            .await?;
            tx.commit().await?;
            return Ok(AuditSweep::default());
        }
        // The readers first, locked (see `quota_readers`): what every reader of a
        // source delivered goes before anything counts as dropped, as retention
        // would take it (on PostgreSQL only whole partitions go by retention):
        // it frees bytes and is no loss — no gap, no drop count, no notice. With
        // no reader of a source none of it counts as delivered, as on the
        // embedded store.
        let readers = self.quota_readers(&tx, account).await?;
        let slowest_audit = readers.iter().filter_map(|r| r.audit).min();
        let slowest_jobs = readers.iter().filter_map(|r| r.jobs).min();
        let (audit, jobs) = self
            .candidates(
                &tx,
                account,
                slowest_audit.map_or(0, |m| heads.audit.min(m.saturating_add(1))),
                slowest_jobs.map_or(-1, to_i64),
            )
            .await?;
        let delivered = self
            .drop_oldest(&tx, account, &audit, &jobs, excess)
            .await?;
        // A full batch of delivered records and still over: the next sweep (at
        // once) goes on with them, before it counts anything undelivered.
        let mut more = (audit.len() as i64 == SWEEP_BATCH || jobs.len() as i64 == SWEEP_BATCH)
            && delivered.bytes < excess;
        let rest = excess - delivered.bytes;
        let (total, mut pending) = self.quota_record(&tx, account).await?;
        // A notice every reader delivered is told: never owed again, whatever
        // happens to its chunk later.
        let told = pending.told.len();
        if let Some(m) = slowest_audit {
            pending.told.retain(|t| t.seq > m);
        }
        let pruned = pending.told.len() != told;
        let mut dropped = Dropped::default();
        if rest > 0 && !more {
            let (audit, jobs) = self.candidates(&tx, account, heads.audit, i64::MAX).await?;
            dropped = self.drop_oldest(&tx, account, &audit, &jobs, rest).await?;
            more = (audit.len() as i64 == SWEEP_BATCH || jobs.len() as i64 == SWEEP_BATCH)
                && dropped.bytes < rest;
        }
        tx.execute(
            "UPDATE account_heads SET stored_bytes = $2 WHERE account = $1",
            &[&a, &(stored - delivered.bytes - dropped.bytes)],
        )
        .await?;
        let delivered_events: u64 = delivered.chunks.iter().map(|c| c.last - c.first + 1).sum();
        if dropped.chunks.is_empty() && dropped.jobs.is_empty() {
            if pruned {
                self.put_quota_record(&tx, account, total.as_ref(), &pending)
                    .await?;
            }
            tx.commit().await?;
            return Ok(AuditSweep {
                deleted: delivered_events,
                jobs_deleted: delivered.jobs.len() as u64,
                unfinished: more,
                ..AuditSweep::default()
            });
        }
        // A notice the quota drops before it was delivered is no lost event of the
        // customer's: what it told is owed again, at once.
        let mut notices = Vec::new();
        pending.told.retain(|t| {
            let gone = dropped
                .chunks
                .iter()
                .any(|c| (c.first..=c.last).contains(&t.seq));
            if gone {
                notices.push(t.clone());
            }
            !gone
        });
        let runs = runs_without(&dropped.chunks, &notices);
        let lost = losses(&readers, &dropped, &runs);
        let now: DateTime<Utc> = tx.query_one("SELECT now()", &[]).await?.get(0);
        let mut gaps = Vec::new();
        for (&(id, source), &(from, to, count)) in &lost {
            record_gap(&tx, id, source, GapReason::BacklogQuota, from, to, count).await?;
            gaps.push((
                id,
                Gap {
                    source,
                    reason: GapReason::BacklogQuota,
                    from,
                    to,
                    count,
                    recorded_at: now,
                },
            ));
        }
        let mut sorted = Vec::new();
        merge_gaps(&mut sorted, gaps);
        self.note_runs(&tx, account, &runs, &dropped.jobs).await?;
        let events: u64 = runs.iter().map(|(f, l)| l - f + 1).sum();
        let times = dropped
            .chunks
            .iter()
            .map(|c| c.at)
            .chain(dropped.jobs.iter().map(|j| j.1));
        let (from, to) = (times.clone().min(), times.max());
        let drops = from.zip(to).map(|(from, to)| QuotaDrops {
            events,
            jobs: dropped.jobs.len() as u64,
            from,
            to,
            last_at: now,
        });
        for t in notices {
            pending.owe(t.drops, t.gaps);
            pending.retell = true;
        }
        let total = match drops {
            Some(d) if d.events + d.jobs > 0 => {
                pending.owe(d, sorted.clone());
                Some(QuotaDrops::merged(total, d))
            }
            _ => total,
        };
        self.put_quota_record(&tx, account, total.as_ref(), &pending)
            .await?;
        tx.commit().await?;
        let deleted: u64 = dropped.chunks.iter().map(|c| c.last - c.first + 1).sum();
        log::warn!(
            "account {account}: over its backlog quota of {quota} bytes ({stored} stored): dropped its oldest {deleted} audit events and {} job snapshots ({} bytes) undelivered, after {delivered_events} audit events and {} job snapshots ({} bytes) every reader had delivered",
            dropped.jobs.len(),
            dropped.bytes,
            delivered.jobs.len(),
            delivered.bytes
        );
        Ok(AuditSweep {
            deleted: deleted + delivered_events,
            jobs_deleted: (dropped.jobs.len() + delivered.jobs.len()) as u64,
            quota_drops: drops.filter(|d| d.events + d.jobs > 0),
            gaps: sorted,
            held_back: false,
            unfinished: more,
        })
    }

    /// Records the dropped runs of audit sequences and job changes, for the commits
    /// of posts that were in flight (see the module's note).
    async fn note_runs(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        runs: &[(u64, u64)],
        jobs: &[(u64, DateTime<Utc>)],
    ) -> Result<(), PgError> {
        let (mut sources, mut firsts, mut lasts) = (vec![], vec![], vec![]);
        for (f, l) in runs {
            sources.push(Source::Audit.as_str());
            firsts.push(to_i64(*f));
            lasts.push(to_i64(*l));
        }
        for (seq, _) in jobs {
            sources.push(Source::Jobs.as_str());
            firsts.push(to_i64(*seq));
            lasts.push(to_i64(*seq));
        }
        tx.execute(
            "INSERT INTO quota_dropped (account, source, first_seq, last_seq)
             SELECT $1, s, f, l FROM unnest($2::text[], $3::int8[], $4::int8[]) AS u (s, f, l)
             ON CONFLICT (account, source, first_seq) DO UPDATE SET last_seq = excluded.last_seq",
            &[&account.as_str(), &sources, &firsts, &lasts],
        )
        .await?;
        Ok(())
    }

    /// Writes siemsync's notice into the account's stream, as its own chunk, and
    /// clears the debt in the same transaction, unless what is owed changed since
    /// `expected` was read (a sweep came in between: the next sweep tells it).
    async fn write_notice(
        &self,
        account: &AccountId,
        mut event: AuditEvent,
        expected: PendingNotice,
    ) -> Result<Option<QuotaDrops>, PgError> {
        self.ensure_partitions(Utc::now()).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let locked = lock_heads(&tx, account).await?;
        let (_, mut pending) = self.quota_record(&tx, account).await?;
        let Some(drops) = pending.drops.filter(|_| pending == expected) else {
            return Ok(None);
        };
        let seq = locked.heads.audit + 1;
        let stored_at = locked.now.max(locked.audit_stored_at);
        event.ingested_at = stored_at;
        let mut rows = super::audit::Rows::default();
        let mut writer = ChunkWriter::new(account);
        writer.push(&mut rows, seq, &event.into());
        writer.finish_into(&mut rows);
        if !self
            .insert_chunks(&tx, account, &rows, stored_at, seq)
            .await?
        {
            return Err(PgError::Db(format!(
                "no audit partition covers {stored_at} for account {account}'s backlog quota notice; it is written at the next sweep"
            )));
        }
        let gaps = std::mem::take(&mut pending.gaps);
        pending.drops = None;
        pending.retell = false;
        pending.last_notice_at = Some(locked.now);
        pending.told.push(Told { seq, drops, gaps });
        let (total, _) = self.quota_record(&tx, account).await?;
        self.put_quota_record(&tx, account, total.as_ref(), &pending)
            .await?;
        let committed = tx.commit().await;
        // This node's cached dedup window does not know the notice's id: read again.
        self.recent().forget(account);
        committed?;
        Ok(Some(drops))
    }
}

/// The runs of dropped audit sequences, siemsync's dropped notices left out.
fn runs_without(chunks: &[DroppedChunk], notices: &[Told]) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for c in chunks {
        match runs.last_mut() {
            Some(r) if r.1 + 1 == c.first => r.1 = c.last,
            _ => runs.push((c.first, c.last)),
        }
    }
    for t in notices {
        runs = runs
            .into_iter()
            .flat_map(|(f, l)| {
                if !(f..=l).contains(&t.seq) {
                    return vec![(f, l)];
                }
                let mut parts = Vec::new();
                if t.seq > f {
                    parts.push((f, t.seq - 1));
                }
                if t.seq < l {
                    parts.push((t.seq + 1, l));
                }
                parts
            })
            .collect();
    }
    runs
}

/// What each reader lost: the dropped events after its checkpoint.
fn losses(readers: &[Reader], dropped: &Dropped, runs: &[(u64, u64)]) -> Lost {
    let mut lost = Lost::new();
    for r in readers {
        if let Some(cp) = r.audit {
            let count: u64 = runs
                .iter()
                .filter(|(_, l)| *l > cp)
                .map(|(f, l)| l - (*f).max(cp + 1) + 1)
                .sum();
            let times = dropped.chunks.iter().filter(|c| c.last > cp).map(|c| c.at);
            if let (true, Some(from), Some(to)) = (count > 0, times.clone().min(), times.max()) {
                lost.insert((r.id, Source::Audit), (from, to, count));
            }
        }
        if let Some(cp) = r.jobs {
            let after: Vec<DateTime<Utc>> = dropped
                .jobs
                .iter()
                .filter(|(seq, _)| *seq > cp)
                .map(|j| j.1)
                .collect();
            if let (Some(from), Some(to)) = (after.iter().min(), after.iter().max()) {
                lost.insert((r.id, Source::Jobs), (*from, *to, after.len() as u64));
            }
        }
    }
    lost
}

impl PgStore {
    /// Drops the account's oldest records while it is over `quota` (one
    /// transaction; see the module's note). Any node may run it, at once: sweeps of
    /// one account wait for each other on its heads row.
    pub async fn quota_sweep(
        &self,
        account: &AccountId,
        quota: u64,
    ) -> Result<AuditSweep, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.quota_sweep(&account, quota).await })
            .await
    }

    /// What the account's notice owes now.
    pub async fn pending_notice(&self, account: &AccountId) -> Result<PendingNotice, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let mut client = s.pool.get().await?;
            let tx = client.transaction().await?;
            let (_, pending) = s.quota_record(&tx, &account).await?;
            tx.commit().await?;
            Ok(pending)
        })
        .await
    }

    /// Writes the notice `event` of what `expected` owes (see `Shared::write_notice`).
    pub async fn write_notice(
        &self,
        account: &AccountId,
        event: AuditEvent,
        expected: PendingNotice,
    ) -> Result<Option<QuotaDrops>, PgError> {
        let account = account.clone();
        self.run_write(move |s| async move { s.write_notice(&account, event, expected).await })
            .await
    }

    /// What the quota dropped of the account in all, if anything.
    pub async fn quota_drops(&self, account: &AccountId) -> Result<Option<QuotaDrops>, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let row = s
                .pool
                .get()
                .await?
                .query_opt(
                    "SELECT drops FROM account_quota WHERE account = $1",
                    &[&account.as_str()],
                )
                .await?;
            row.and_then(|r| r.get::<_, Option<serde_json::Value>>(0))
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| corrupt(format!("the backlog quota record of account {account}"), e))
        })
        .await
    }

    /// The accounts a notice of dropped events is owed to.
    pub async fn accounts_owed_a_notice(&self) -> Result<Vec<AccountId>, PgError> {
        self.accounts_where(format!("SELECT account FROM account_quota WHERE {OWED}"), 0)
            .await
    }

    /// The accounts the periodic sweep sees to: those over their quota (their own,
    /// else `default_quota`) by their stored bytes, and those owed a notice.
    pub async fn accounts_to_sweep(&self, default_quota: u64) -> Result<Vec<AccountId>, PgError> {
        let sql = format!(
            "SELECT h.account FROM account_heads h LEFT JOIN accounts a USING (account)
             WHERE h.stored_bytes > coalesce(a.max_backlog_bytes, $1)
             UNION SELECT account FROM account_quota WHERE {OWED} ORDER BY 1"
        );
        self.accounts_where(sql, to_i64(default_quota)).await
    }

    /// The accounts `sql` lists (its `$1`, if any, is `param`); a name that is no
    /// account name is a corrupt record, said rather than skipped.
    async fn accounts_where(&self, sql: String, param: i64) -> Result<Vec<AccountId>, PgError> {
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let rows = if sql.contains("$1") {
                client.query(&sql, &[&param]).await?
            } else {
                client.query(&sql, &[]).await?
            };
            rows.iter()
                .map(|r| {
                    let name: &str = r.get(0);
                    AccountId::parse(name)
                        .map_err(|e| corrupt(format!("the backlog quota of account {name:?}"), e))
                })
                .collect()
        })
        .await
    }

    /// The account's stored bytes (audit chunks and job snapshots), as its heads
    /// row keeps them: one row read, whatever the account holds.
    pub async fn stored_bytes(&self, account: &AccountId) -> Result<u64, PgError> {
        self.account_bytes(
            "SELECT stored_bytes FROM account_heads WHERE account = $1",
            account,
        )
        .await
    }

    /// What the quota could still drop of the account: its stored bytes less its
    /// newest audit chunk and its newest job snapshot.
    pub async fn quota_droppable_bytes(&self, account: &AccountId) -> Result<u64, PgError> {
        self.account_bytes(
            "SELECT coalesce((SELECT stored_bytes FROM account_heads WHERE account = $1), 0)
                  - coalesce((SELECT octet_length(body) FROM audit_chunks WHERE account = $1
                              ORDER BY last_seq DESC LIMIT 1), 0)
                  - coalesce((SELECT octet_length(snapshot::text) FROM jobs WHERE account = $1
                              ORDER BY change_seq DESC LIMIT 1), 0)",
            account,
        )
        .await
    }

    /// The byte count `sql` reads of `account` (its `$1`); 0 without a row.
    async fn account_bytes(&self, sql: &'static str, account: &AccountId) -> Result<u64, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let row = s
                .pool
                .get()
                .await?
                .query_opt(sql, &[&account.as_str()])
                .await?;
            Ok(row.map_or(0, |r| to_u64(r.get(0))))
        })
        .await
    }
}
