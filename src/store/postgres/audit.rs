//! The audit log on PostgreSQL: chunks of pre-encoded events (the embedded store's
//! exact record bytes), appended under the account's row lock so that several nodes
//! ingesting for one account keep its order and its dedup window.

use super::super::chunk::{Chunk, ChunkSink, ChunkWriter, CHUNK_EVENTS};
use super::super::{keys, IngestOutcome, StoredAudit};
use super::error::{corrupt, PgError};
use super::{to_i64, to_u64, PgStore, Shared};
use crate::model::audit_parts::EncodedAudit;
use crate::model::AccountId;
use crate::store::Heads;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use std::ops::ControlFlow;

/// Chunks in the first page `audit_after` reads: with the second (twice as many)
/// about what one post of 1 MiB takes, 64 events a chunk.
const FIRST_PAGE: usize = 16;
/// Chunks in a page at most.
const LAST_PAGE: usize = 256;

/// One stored chunk of audit events, owned (read from PostgreSQL).
#[derive(Debug, Clone)]
pub struct AuditChunk {
    /// The chunk's key in the embedded store's layout, so its reader is shared.
    key: Vec<u8>,
    record: Vec<u8>,
}

impl AuditChunk {
    fn new(account: &AccountId, first: u64, record: Vec<u8>) -> AuditChunk {
        AuditChunk {
            key: keys::with_seq(keys::AUDIT, account, first),
            record,
        }
    }

    /// Its events, borrowed from it, in sequence order.
    pub fn events(&self) -> Result<Vec<StoredAudit<'_>>, PgError> {
        Chunk::parse(&self.key, &self.record)
            .and_then(|c| c.events())
            .map_err(|e| corrupt("an audit chunk", e))
    }

    /// The sequence of its last event.
    pub fn last(&self) -> Result<u64, PgError> {
        Chunk::parse(&self.key, &self.record)
            .map(|c| c.last())
            .map_err(|e| corrupt("an audit chunk", e))
    }
}

/// The rows one ingest inserts: chunks and their id hashes.
#[derive(Default)]
pub(super) struct Rows {
    first: Vec<i64>,
    last: Vec<i64>,
    records: Vec<Vec<u8>>,
    ids: Vec<Vec<u8>>,
}

impl ChunkSink for Rows {
    fn chunk(&mut self, _: &AccountId, first: u64, record: &[u8], ids: &[u8]) {
        self.first.push(to_i64(first));
        self.last.push(to_i64(first + (ids.len() / 16) as u64 - 1));
        self.records.push(record.to_vec());
        self.ids.push(ids.to_vec());
    }
}

/// The heads row of an account, locked for the rest of the transaction (made when
/// missing), and the database's clock read after the lock was granted.
pub(super) struct LockedHeads {
    pub heads: Heads,
    pub audit_stored_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

pub(super) async fn lock_heads(
    tx: &Transaction<'_>,
    account: &AccountId,
) -> Result<LockedHeads, PgError> {
    // An upsert rather than SELECT … FOR UPDATE: it makes a missing row and locks an
    // existing one in one round trip, and RETURNING is evaluated after the lock is
    // granted, so `now` is not older than the wait for it.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO account_heads AS h (account) VALUES ($1)
             ON CONFLICT (account) DO UPDATE SET account = h.account
             RETURNING audit_seq, job_seq, audit_stored_at, clock_timestamp()",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&account.as_str()]).await?;
    Ok(LockedHeads {
        heads: Heads {
            audit: to_u64(row.get(0)),
            jobs: to_u64(row.get(1)),
        },
        audit_stored_at: row
            .get::<_, Option<DateTime<Utc>>>(2)
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        now: row.get(3),
    })
}

/// Whether an insert failed because no partition covers its storage time.
fn no_partition(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code().code() == "23514" && d.message().contains("no partition"))
}

impl Shared {
    /// The ids of the account's events after sequence `after`, oldest first.
    async fn ids_after(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        after: u64,
    ) -> Result<Vec<(u64, u128)>, PgError> {
        let stmt = tx
            .prepare_cached(
                "SELECT first_seq, hashes FROM audit_ids
                 WHERE account = $1 AND first_seq > $2 ORDER BY first_seq",
            )
            .await?;
        let rows = tx
            .query(&stmt, &[&account.as_str(), &to_i64(after)])
            .await?;
        let mut out = Vec::new();
        for row in rows {
            let first = to_u64(row.get(0));
            let hashes: &[u8] = row.get(1);
            for (i, h) in hashes.chunks_exact(16).enumerate() {
                let h = u128::from_be_bytes(h.try_into().expect("16 bytes"));
                out.push((first + i as u64, h));
            }
        }
        Ok(out)
    }

    /// Brings this node's cached dedup window of the account to `head`: reads only
    /// the ids stored since the cached head (by other nodes, or lost to a failed
    /// answer), or the whole window when nothing usable is cached.
    async fn refresh_window(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        head: u64,
    ) -> Result<(), PgError> {
        let window = self.options.dedup_window as u64;
        let cached = self.recent().head(account);
        if cached == Some(head) {
            return Ok(());
        }
        if let Some(h) = cached.filter(|&h| h < head && head - h < window) {
            let delta: Vec<u128> = self
                .ids_after(tx, account, h)
                .await?
                .into_iter()
                .map(|(_, id)| id)
                .collect();
            let mut recent = self.recent();
            if recent.head(account) == Some(h) {
                recent.stored(account, &delta, head);
            }
            if recent.head(account) == Some(head) {
                return Ok(());
            }
        }
        // Chunks hold at most CHUNK_EVENTS events: the one holding the window's
        // oldest event starts less than that before it.
        let from = head.saturating_sub(window + CHUNK_EVENTS as u64);
        let ids: Vec<u128> = self
            .ids_after(tx, account, from)
            .await?
            .into_iter()
            .filter(|(seq, _)| *seq + window > head)
            .map(|(_, id)| id)
            .collect();
        let mut recent = self.recent();
        recent.forget(account);
        recent
            .window(account, head, || Ok::<_, PgError>(ids))
            .map(|_| ())
    }

    /// Skips the events whose id is in the account's window (or earlier in the
    /// request) and chunks the others after sequence `head`, stored at `stored_at`.
    /// `None` when the window of the account at `head` is not cached (any more).
    fn dedup_and_chunk(
        &self,
        account: &AccountId,
        head: u64,
        events: &mut [EncodedAudit],
        hashes: &[u128],
        stored_at: DateTime<Utc>,
    ) -> Option<(IngestOutcome, Vec<u128>, Rows)> {
        let mut recent = self.recent();
        if recent.head(account) != Some(head) {
            return None;
        }
        let window = recent
            .window(account, head, || Err::<Vec<u128>, ()>(()))
            .ok()?;
        let mut out = IngestOutcome::default();
        let mut accepted = Vec::with_capacity(hashes.len());
        let mut rows = Rows::default();
        let mut writer = ChunkWriter::new(account);
        let mut fresh = super::super::dedup::IdSet::default();
        let mut seq = head;
        for (ev, hash) in events.iter_mut().zip(hashes) {
            if window.contains(hash) || !fresh.insert(*hash) {
                out.duplicates += 1;
                continue;
            }
            seq += 1;
            ev.ingested_at_ms = stored_at.timestamp_millis();
            writer.push(&mut rows, seq, ev);
            accepted.push(*hash);
        }
        writer.finish_into(&mut rows);
        Some((out, accepted, rows))
    }

    async fn append_audit(
        &self,
        account: &AccountId,
        mut events: Vec<EncodedAudit>,
    ) -> Result<IngestOutcome, PgError> {
        let hashes: Vec<u128> = events.iter().map(|e| e.id_hash).collect();
        let mut client = self.pool.get().await?;
        // Once more after creating a missing partition.
        for attempt in 0..2 {
            let tx = client.transaction().await?;
            let locked = lock_heads(&tx, account).await?;
            let old_head = locked.heads.audit;
            self.refresh_window(&tx, account, old_head).await?;
            // The storage time never goes backwards within an account, so every
            // partition holds a contiguous run of each account's sequence.
            let stored_at = locked.now.max(locked.audit_stored_at);
            // Another account's ingest on this node may evict the window from the
            // bounded cache between the refresh and its use: then refresh again.
            let mut checked = None;
            for _ in 0..3 {
                checked = self.dedup_and_chunk(account, old_head, &mut events, &hashes, stored_at);
                if checked.is_some() {
                    break;
                }
                self.refresh_window(&tx, account, old_head).await?;
            }
            let Some((mut out, accepted, rows)) = checked else {
                return Err(PgError::Busy(
                    "the dedup cache is too contended to check this request; retry".into(),
                ));
            };
            out.accepted = accepted.len();
            if out.accepted == 0 {
                tx.commit().await?;
                return Ok(out);
            }
            let new_head = old_head + accepted.len() as u64;
            let inserted = self
                .insert_chunks(&tx, account, &rows, stored_at, new_head)
                .await?;
            if !inserted {
                drop(tx);
                if attempt == 0 {
                    self.create_partition(&client, stored_at).await?;
                }
                continue;
            }
            if let Err(e) = tx.commit().await {
                // Committed or not is unknown: the next ingest reads the head again.
                self.recent().forget(account);
                return Err(e.into());
            }
            let mut recent = self.recent();
            if recent.head(account) == Some(old_head) {
                recent.stored(account, &accepted, new_head);
            }
            return Ok(out);
        }
        Err(PgError::Db(
            "no audit partition covers the storage time, even after creating it".into(),
        ))
    }

    /// The ingest's three writes, pipelined on one connection (one round trip).
    /// False when no partition covers `stored_at` (nothing was written). The
    /// account's stored bytes grow by the chunks' (the quota is enforced on them).
    pub(super) async fn insert_chunks(
        &self,
        tx: &Transaction<'_>,
        account: &AccountId,
        rows: &Rows,
        stored_at: DateTime<Utc>,
        new_head: u64,
    ) -> Result<bool, PgError> {
        let chunks = tx
            .prepare_cached(
                "INSERT INTO audit_chunks (account, first_seq, last_seq, stored_at, body)
                 SELECT $1, f, l, $2, b FROM unnest($3::int8[], $4::int8[], $5::bytea[]) AS u (f, l, b)
                 WHERE clock_timestamp() < $2::timestamptz + make_interval(secs => $6)",
            )
            .await?;
        let ids = tx
            .prepare_cached(
                "INSERT INTO audit_ids (account, first_seq, hashes)
                 SELECT $1, f, h FROM unnest($2::int8[], $3::bytea[]) AS u (f, h)",
            )
            .await?;
        let head = tx
            .prepare_cached(
                "UPDATE account_heads SET audit_seq = $2, audit_stored_at = $3,
                   stored_bytes = stored_bytes + $4 WHERE account = $1",
            )
            .await?;
        let a = account.as_str();
        let new_head = to_i64(new_head);
        // How far behind the database's clock the storage time may be when the
        // chunks are inserted: a node paused in between (SIGSTOP, a long GC) must
        // not write into a time span that retention may have closed meanwhile.
        let stale_after = self.options.partition_grace.as_secs_f64() / 2.0;
        let chunk_params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &a,
            &stored_at,
            &rows.first,
            &rows.last,
            &rows.records,
            &stale_after,
        ];
        let id_params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
            [&a, &rows.first, &rows.ids];
        let bytes: i64 = rows.records.iter().map(|r| r.len() as i64).sum();
        let head_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&a, &new_head, &stored_at, &bytes];
        // All three run; the first statement's error is the cause (the others then
        // only report the aborted transaction), whichever answer is looked at first.
        let (chunks, ids, head) = tokio::join!(
            tx.execute(&chunks, &chunk_params),
            tx.execute(&ids, &id_params),
            tx.execute(&head, &head_params),
        );
        match (chunks, ids, head) {
            (Err(e), _, _) if no_partition(&e) => Ok(false),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.into()),
            (Ok(inserted), _, _) if inserted != rows.first.len() as u64 => {
                // The node stalled between reading the clock and writing: this
                // transaction is given up (rolled back on drop); the platform retries.
                Err(PgError::Unavailable(format!(
                    "this node stalled for more than {stale_after} s in the middle of an ingest; retry"
                )))
            }
            _ => Ok(true),
        }
    }
}

impl PgStore {
    /// Appends audit events in order, all or nothing, durable when it returns (the
    /// transaction committed). An id the account already had among its last
    /// `dedup_window` events (or earlier in the same call) is a platform retry and
    /// is skipped — also when another node stored it.
    pub async fn append_audit<E: Into<EncodedAudit>>(
        &self,
        account: &AccountId,
        events: Vec<E>,
    ) -> Result<IngestOutcome, PgError> {
        // Already encoded when they come from ingest (then this collects in place).
        let events: Vec<EncodedAudit> = events.into_iter().map(Into::into).collect();
        let account = account.clone();
        self.run_write(move |s| async move { s.append_audit(&account, events).await })
            .await
    }

    /// The account's newest sequences.
    pub async fn heads(&self, account: &AccountId) -> Result<Heads, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let row = client
                .query_opt(
                    "SELECT audit_seq, job_seq FROM account_heads WHERE account = $1",
                    &[&account.as_str()],
                )
                .await?;
            Ok(row.map_or(Heads::default(), |r| Heads {
                audit: to_u64(r.get(0)),
                jobs: to_u64(r.get(1)),
            }))
        })
        .await
    }

    /// Up to `limit` chunks holding the account's events after sequence `after`,
    /// in order (the first may also hold events up to `after`).
    pub async fn audit_chunks(
        &self,
        account: &AccountId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditChunk>, PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT first_seq, body FROM audit_chunks
                     WHERE account = $1 AND last_seq > $2 ORDER BY last_seq LIMIT $3",
                )
                .await?;
            let rows = client
                .query(&stmt, &[&account.as_str(), &to_i64(after), &(limit as i64)])
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| AuditChunk::new(&account, to_u64(r.get(0)), r.get(1)))
                .collect())
        })
        .await
    }

    /// Visits the stored audit events after sequence `after`, in order, until
    /// `visit` breaks; reads a page of chunks at a time, each page twice the last
    /// (from [`FIRST_PAGE`] to [`LAST_PAGE`] chunks).
    ///
    /// Why pages grow: a delivery's read stops at its post's size (1 MiB, about 40
    /// chunks), and a first page of 256 chunks (about 1.8 MB) sent PostgreSQL's
    /// and this node's time on six times the chunks that were used — the largest
    /// part of a catch-up's reads. Whole-log scans (counting a replay's window,
    /// the backlog) still reach pages of 256 chunks after five round trips.
    pub async fn audit_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(&StoredAudit<'_>) -> ControlFlow<()>,
    ) -> Result<(), PgError> {
        let mut cursor = after;
        let mut size = FIRST_PAGE;
        loop {
            let page = self.audit_chunks(account, cursor, size).await?;
            for chunk in &page {
                for ev in chunk.events()? {
                    if ev.seq > after && visit(&ev).is_break() {
                        return Ok(());
                    }
                }
            }
            match page.last() {
                Some(last) if page.len() == size => cursor = last.last()?,
                _ => return Ok(()),
            }
            size = (size * 2).min(LAST_PAGE);
        }
    }

    /// Audit events after `after` not yet delivered: how many, and when the oldest
    /// was stored. Sequences are contiguous from the oldest event still kept.
    pub async fn audit_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), PgError> {
        let account = account.clone();
        self.run(move |s| async move {
            let client = s.pool.get().await?;
            let first = client
                .query_opt(
                    "SELECT first_seq, stored_at FROM audit_chunks
                     WHERE account = $1 AND last_seq > $2 ORDER BY last_seq LIMIT 1",
                    &[&account.as_str(), &to_i64(after)],
                )
                .await?;
            let Some(first) = first else {
                return Ok((0, None));
            };
            let head: i64 = client
                .query_one(
                    "SELECT audit_seq FROM account_heads WHERE account = $1",
                    &[&account.as_str()],
                )
                .await?
                .get(0);
            let from = to_u64(first.get(0)).max(after + 1);
            Ok(((to_u64(head) + 1).saturating_sub(from), Some(first.get(1))))
        })
        .await
    }
}

impl PgStore {
    /// What an integration has not delivered yet, per source it wants: the one place
    /// the status, the metrics and catch-up progress read a backlog from.
    pub async fn backlog(
        &self,
        it: &crate::model::Integration,
        cp: &crate::store::Checkpoint,
    ) -> Result<crate::store::Backlog, PgError> {
        use crate::model::Source;
        let mut b = crate::store::Backlog::default();
        if it.wants(Source::Audit) {
            let (n, oldest) = self.audit_backlog(&it.account, cp.audit_seq).await?;
            b.audit = n;
            b.oldest = oldest;
        }
        if it.wants(Source::Jobs) {
            let (n, oldest) = self.job_backlog(&it.account, cp.job_seq).await?;
            b.jobs = n;
            b.oldest = b.oldest.into_iter().chain(oldest).min();
        }
        Ok(b)
    }

    /// The database's size on disk, in bytes (for the metrics).
    pub async fn size_on_disk(&self) -> Result<u64, PgError> {
        self.run(|s| async move {
            let bytes: i64 = s
                .pool
                .get()
                .await?
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?
                .get(0);
            Ok(to_u64(bytes))
        })
        .await
    }
}
