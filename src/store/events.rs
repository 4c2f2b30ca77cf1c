//! The two data sources: the append-only audit log and the latest job snapshots.

use super::dedup::{id_hash, IdSet};
use super::Checkpoint;
use super::{decode, encode, keys, Store, StoreError};
use crate::model::{AccountId, AuditEvent, Integration, JobSnapshot, Source};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// Undelivered events of one integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    pub audit: u64,
    pub jobs: u64,
    /// When the oldest undelivered event was stored.
    pub oldest: Option<DateTime<Utc>>,
}

impl Backlog {
    pub fn events(&self) -> u64 {
        self.audit + self.jobs
    }

    pub fn of(&self, source: Source) -> u64 {
        match source {
            Source::Audit => self.audit,
            Source::Jobs => self.jobs,
        }
    }
}

/// What one audit ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    pub accepted: usize,
    /// Events whose id the account already had (a platform retry): ignored.
    pub duplicates: usize,
}

/// A job snapshot with the change sequence it was stored under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    pub change_seq: u64,
    pub snapshot: JobSnapshot,
}

/// A job snapshot's hash, its storage time aside: what is kept of a finished job after
/// retention removed its record, to recognise a retry of its final snapshot. (A
/// change of `JobSnapshot`'s fields changes the hash: such a retry is then sent once
/// more, never lost.)
pub(super) fn final_hash(snap: &JobSnapshot) -> u128 {
    let plain = JobSnapshot {
        ingested_at: DateTime::UNIX_EPOCH,
        ..snap.clone()
    };
    id_hash(&serde_json::to_string(&plain).expect("serialising a job snapshot"))
}

/// The newest sequence numbers of an account: checkpoints are compared with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heads {
    pub audit: u64,
    pub jobs: u64,
}

impl Heads {
    fn from_bytes(b: &[u8]) -> Heads {
        Heads {
            audit: keys::seq_of(&b[..8.min(b.len())]),
            jobs: keys::seq_of(b),
        }
    }
    fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.audit.to_be_bytes());
        b[8..].copy_from_slice(&self.jobs.to_be_bytes());
        b
    }
}

/// How many events at most, and how many bytes about, one audit record holds: large
/// enough that sled keeps few keys (one key per event cost sled ~800 bytes of memory
/// each) and reads stream, small enough that a sled leaf (up to 16 records) stays
/// under the 128 KiB above which sled writes it as a blob file of its own — created
/// and fsynced on every change, which made ingest spend a third of its time in the
/// kernel with 24 KiB records.
pub(super) const CHUNK_EVENTS: usize = 64;
const CHUNK_BYTES: usize = 7 * 1024;
/// The first byte of an audit chunk: its format.
pub(super) const CHUNK_FORMAT: u8 = 1;

/// One stored audit event, borrowed from its chunk: the parts of its HEC bytes that
/// [`crate::hec::encode::AuditFrame`] completes.
#[derive(Debug, Clone, Copy)]
pub struct StoredAudit<'a> {
    pub seq: u64,
    /// When it happened (milliseconds since the epoch).
    pub time_ms: i64,
    /// When siemsync stored it.
    pub ingested_at: DateTime<Utc>,
    pub head: &'a [u8],
    pub tail: &'a [u8],
}

impl StoredAudit<'_> {
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.time_ms).unwrap_or_default()
    }

    /// The event object as Splunk receives it, minus the per-post `host` and
    /// `upload_time` (for tests and inspection).
    pub fn to_json(&self) -> serde_json::Value {
        let mut text = b"{".to_vec();
        text.extend_from_slice(self.head);
        text.push(b',');
        text.extend_from_slice(self.tail);
        text.push(b'}');
        serde_json::from_slice(&text).unwrap_or_default()
    }
}

/// A record of consecutive audit events, stored together in one ingest:
/// `format u8 | ingested_at ms i64 | count u32 | count × (time ms i64 | head len u32 |
/// tail len u32 | head | tail)`, integers big-endian.
pub(super) struct Chunk<'a> {
    pub first: u64,
    pub count: u64,
    pub ingested_at: DateTime<Utc>,
    key: &'a [u8],
    body: &'a [u8],
}

impl<'a> Chunk<'a> {
    pub(super) fn parse(key: &'a [u8], v: &'a [u8]) -> Result<Chunk<'a>, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).replace('\0', "/"),
            reason: reason.into(),
        };
        if v.len() < 13 || v[0] != CHUNK_FORMAT {
            return Err(corrupt("not an audit chunk of a known format"));
        }
        let ms = i64::from_be_bytes(v[1..9].try_into().expect("8 bytes"));
        Ok(Chunk {
            first: keys::seq_of(key),
            count: u64::from(u32::from_be_bytes(v[9..13].try_into().expect("4 bytes"))),
            ingested_at: DateTime::from_timestamp_millis(ms)
                .ok_or_else(|| corrupt("storage time out of range"))?,
            key,
            body: &v[13..],
        })
    }

    /// The sequence of its last event.
    pub fn last(&self) -> u64 {
        self.first + self.count.saturating_sub(1)
    }

    pub fn events(&self) -> Result<Vec<StoredAudit<'a>>, StoreError> {
        let corrupt = || StoreError::Corrupt {
            key: String::from_utf8_lossy(self.key).replace('\0', "/"),
            reason: "audit chunk is truncated".into(),
        };
        let mut out = Vec::with_capacity(self.count as usize);
        let mut rest = self.body;
        for seq in self.first..self.first + self.count {
            if rest.len() < 16 {
                return Err(corrupt());
            }
            let time_ms = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
            let head_len = u32::from_be_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
            let tail_len = u32::from_be_bytes(rest[12..16].try_into().expect("4 bytes")) as usize;
            rest = &rest[16..];
            if rest.len() < head_len + tail_len {
                return Err(corrupt());
            }
            let (head, after) = rest.split_at(head_len);
            let (tail, after) = after.split_at(tail_len);
            rest = after;
            out.push(StoredAudit {
                seq,
                time_ms,
                ingested_at: self.ingested_at,
                head,
                tail,
            });
        }
        Ok(out)
    }
}

/// Where finished audit chunks go: a sled batch, or the rows of a PostgreSQL insert.
pub(super) trait ChunkSink {
    /// A finished chunk: its first sequence, its record, and its events' id hashes.
    fn chunk(&mut self, account: &AccountId, first: u64, record: Vec<u8>, ids: Vec<u8>);
}

impl ChunkSink for sled::Batch {
    fn chunk(&mut self, account: &AccountId, first: u64, record: Vec<u8>, ids: Vec<u8>) {
        self.insert(keys::with_seq(keys::AUDIT, account, first), record);
        self.insert(keys::with_seq(keys::AUDIT_ID, account, first), ids);
    }
}

/// Builds audit chunks, and beside each the ids of its events for the dedup window.
#[derive(Default)]
pub(super) struct ChunkWriter {
    first: u64,
    count: u32,
    ingested_at: i64,
    body: Vec<u8>,
    ids: Vec<u8>,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl ChunkWriter {
    /// Adds an event; a chunk holds events of one storage time, up to its size.
    pub(super) fn push(
        &mut self,
        batch: &mut impl ChunkSink,
        seq: u64,
        account: &AccountId,
        ev: &AuditEvent,
        hash: u128,
    ) {
        if self.count > 0
            && (self.ingested_at != ev.ingested_at.timestamp_millis()
                || seq != self.first + u64::from(self.count))
        {
            self.finish_into(batch, account);
        }
        if self.count == 0 {
            self.first = seq;
            self.ingested_at = ev.ingested_at.timestamp_millis();
        }
        self.head.clear();
        self.tail.clear();
        crate::hec::encode::audit_parts(&mut self.head, &mut self.tail, account, ev);
        self.body
            .extend_from_slice(&ev.time.timestamp_millis().to_be_bytes());
        self.body
            .extend_from_slice(&(self.head.len() as u32).to_be_bytes());
        self.body
            .extend_from_slice(&(self.tail.len() as u32).to_be_bytes());
        self.body.extend_from_slice(&self.head);
        self.body.extend_from_slice(&self.tail);
        self.ids.extend_from_slice(&hash.to_be_bytes());
        self.count += 1;
        if self.count as usize >= CHUNK_EVENTS || self.body.len() >= CHUNK_BYTES {
            self.finish_into(batch, account);
        }
    }

    pub(super) fn finish_into(&mut self, batch: &mut impl ChunkSink, account: &AccountId) {
        if self.count == 0 {
            return;
        }
        let mut v = Vec::with_capacity(13 + self.body.len());
        v.push(CHUNK_FORMAT);
        v.extend_from_slice(&self.ingested_at.to_be_bytes());
        v.extend_from_slice(&self.count.to_be_bytes());
        v.extend_from_slice(&self.body);
        batch.chunk(account, self.first, v, std::mem::take(&mut self.ids));
        self.body.clear();
        self.count = 0;
    }
}

pub(super) fn heads_in(tree: &sled::Tree, account: &AccountId) -> Result<Heads, StoreError> {
    Ok(tree
        .get(keys::account_prefix(keys::HEADS, account))?
        .map(|b| Heads::from_bytes(&b))
        .unwrap_or_default())
}

impl Store {
    pub fn heads(&self, account: &AccountId) -> Result<Heads, StoreError> {
        heads_in(&*self.events()?, account)
    }

    /// Appends audit events in order, all or nothing. An id the account already had
    /// among its last `dedup_window` events (or earlier in the same call) is a platform
    /// retry and is skipped. Events are stored already encoded the way HEC receives
    /// them, a chunk of them per record. Not durable until `flush` resolves.
    pub fn append_audit(
        &self,
        account: &AccountId,
        events: Vec<AuditEvent>,
    ) -> Result<IngestOutcome, StoreError> {
        let _writer = self
            .inner
            .ingest_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // One database for the whole write, even if the store is reopened meanwhile.
        let tree = self.events()?;
        let mut heads = heads_in(&tree, account)?;
        let hashes: Vec<u128> = events.iter().map(|e| id_hash(&e.id)).collect();
        let mut recent = self.recent();
        let window = recent.window(account, heads.audit, || self.recent_ids(&tree, account))?;
        let mut fresh = IdSet::with_capacity_and_hasher(hashes.len(), Default::default());
        let mut out = IngestOutcome::default();
        let mut accepted = Vec::with_capacity(hashes.len());
        let mut batch = sled::Batch::default();
        let mut chunk = ChunkWriter::default();
        for (ev, hash) in events.iter().zip(&hashes) {
            if window.contains_key(hash) || !fresh.insert(*hash) {
                out.duplicates += 1;
                continue;
            }
            heads.audit += 1;
            chunk.push(&mut batch, heads.audit, account, ev, *hash);
            accepted.push(*hash);
        }
        out.accepted = accepted.len();
        chunk.finish_into(&mut batch, account);
        if out.accepted > 0 {
            batch.insert(
                keys::account_prefix(keys::HEADS, account),
                &heads.to_bytes(),
            );
            if let Err(e) = tree.apply_batch(batch) {
                recent.forget(account);
                return Err(e.into());
            }
            recent.stored(account, &accepted, heads.audit);
        }
        Ok(out)
    }

    /// The account's last `dedup_window` stored event ids, oldest first.
    fn recent_ids(&self, tree: &sled::Tree, account: &AccountId) -> Result<Vec<u128>, StoreError> {
        let mut records = Vec::new();
        let mut seen = 0;
        let prefix = keys::account_prefix(keys::AUDIT_ID, account);
        for kv in tree.scan_prefix(&prefix).rev() {
            if seen >= self.inner.dedup_window {
                break;
            }
            let (_, v) = kv?;
            seen += v.len() / 16;
            records.push(v);
        }
        let mut ids: Vec<u128> = records
            .iter()
            .rev()
            .flat_map(|v| v.chunks_exact(16))
            .map(|h| u128::from_be_bytes(h.try_into().expect("16 bytes")))
            .collect();
        let extra = ids.len().saturating_sub(self.inner.dedup_window);
        ids.drain(..extra);
        Ok(ids)
    }

    /// Stores job snapshots, each replacing the job's previous one, all or nothing.
    /// A snapshot identical to the stored one (a platform retry) changes nothing.
    pub fn put_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<JobSnapshot>,
    ) -> Result<usize, StoreError> {
        let _writer = self
            .inner
            .ingest_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // One database for the whole write, even if the store is reopened meanwhile.
        let tree = &self.events()?;
        let mut heads = heads_in(tree, account)?;
        let count = jobs.len();
        // Within one request the last snapshot of a job wins.
        let mut latest: HashMap<String, JobSnapshot> = HashMap::new();
        let mut order = Vec::new();
        for j in jobs {
            if latest.insert(j.job.clone(), j.clone()).is_none() {
                order.push(j.job);
            }
        }
        let mut batch = sled::Batch::default();
        let mut changed = false;
        for job in order {
            let snap = latest.remove(&job).expect("collected above");
            let job_key = keys::with_name(keys::JOB, account, &job);
            if let Some(old) = tree.get(&job_key)? {
                let old: StoredJob = decode(&job_key, &old)?;
                let same = JobSnapshot {
                    ingested_at: old.snapshot.ingested_at,
                    ..snap.clone()
                } == old.snapshot;
                // A late retry of an older snapshot must not reopen a finished job
                // (it would then be re-sent as running on every tick).
                let reopens = old.snapshot.is_finished() && !snap.is_finished();
                if same || reopens {
                    continue;
                }
                batch.remove(keys::with_seq(keys::JOB_CHANGE, account, old.change_seq));
            } else {
                // The job ended and retention removed its record: the same guards,
                // from what the sweep kept of it.
                let done_key = keys::with_name(keys::JOB_DONE, account, &job);
                if let Some(v) = tree.get(&done_key)? {
                    let (_, hash) = super::retention::read_job_done_marker(&done_key, &v)?;
                    if !snap.is_finished() || final_hash(&snap) == hash {
                        continue;
                    }
                    batch.remove(done_key);
                }
            }
            heads.jobs += 1;
            let running_key = keys::with_name(keys::JOB_RUNNING, account, &job);
            if snap.in_progress() {
                batch.insert(running_key, &heads.jobs.to_be_bytes());
            } else {
                batch.remove(running_key);
            }
            batch.insert(
                keys::with_seq(keys::JOB_CHANGE, account, heads.jobs),
                job.as_bytes(),
            );
            batch.insert(
                job_key,
                encode(&StoredJob {
                    change_seq: heads.jobs,
                    snapshot: snap,
                }),
            );
            changed = true;
        }
        if changed {
            batch.insert(
                keys::account_prefix(keys::HEADS, account),
                &heads.to_bytes(),
            );
            tree.apply_batch(batch)?;
        }
        Ok(count)
    }

    /// Visits the stored audit events after sequence `after`, in order, until `visit` breaks.
    pub fn audit_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(&StoredAudit<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        self.audit_chunks(account, after.saturating_add(1), |chunk| {
            for ev in chunk.events()? {
                if ev.seq > after && visit(&ev).is_break() {
                    return Ok(ControlFlow::Break(()));
                }
            }
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Visits the audit chunks from the one holding sequence `from`, in order.
    pub(super) fn audit_chunks(
        &self,
        account: &AccountId,
        from: u64,
        mut visit: impl FnMut(&Chunk<'_>) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        let tree = self.events()?;
        let prefix = keys::account_prefix(keys::AUDIT, account);
        let at = keys::with_seq(keys::AUDIT, account, from);
        // The chunk holding `from` starts at or before it.
        let start = match tree.range(prefix.clone()..=at.clone()).next_back() {
            Some(kv) => kv?.0.to_vec(),
            None => at,
        };
        for kv in tree.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if visit(&Chunk::parse(&k, &v)?)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits jobs whose snapshot changed after change sequence `after`, in change order.
    pub fn jobs_changed_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let prefix = keys::account_prefix(keys::JOB_CHANGE, account);
        let start = keys::with_seq(keys::JOB_CHANGE, account, after.saturating_add(1));
        let tree = self.events()?;
        for kv in tree.range(start..) {
            let (k, job) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let job_key = keys::with_name(keys::JOB, account, &String::from_utf8_lossy(&job));
            let Some(v) = tree.get(&job_key)? else {
                continue;
            };
            let job: StoredJob = decode(&job_key, &v)?;
            // The job changed again while we read: its newer change key comes later
            // in this scan (or the next), so this stale key must not carry it now,
            // or the cursor would jump past jobs between the two keys.
            if job.change_seq != keys::seq_of(&k) {
                continue;
            }
            if visit(job).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits the jobs still in progress, ordered by job id, starting after `after_job`.
    pub fn running_jobs(
        &self,
        account: &AccountId,
        after_job: Option<&str>,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let prefix = keys::account_prefix(keys::JOB_RUNNING, account);
        let mut start = match after_job {
            Some(j) => keys::with_name(keys::JOB_RUNNING, account, j),
            None => prefix.clone(),
        };
        if after_job.is_some() {
            start.push(0);
        }
        let tree = self.events()?;
        for kv in tree.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let job = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let job_key = keys::with_name(keys::JOB, account, &job);
            let Some(v) = tree.get(&job_key)? else {
                continue;
            };
            if visit(decode(&job_key, &v)?).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// What an integration has not delivered yet, per source it wants: the one place
    /// the status, the metrics and catch-up progress read a backlog from.
    pub fn backlog(&self, it: &Integration, cp: &Checkpoint) -> Result<Backlog, StoreError> {
        let mut b = Backlog::default();
        if it.wants(Source::Audit) {
            let (n, oldest) = self.audit_backlog(&it.account, cp.audit_seq)?;
            b.audit = n;
            b.oldest = oldest;
        }
        if it.wants(Source::Jobs) {
            let (n, oldest) = self.job_backlog(&it.account, cp.job_seq)?;
            b.jobs = n;
            b.oldest = b.oldest.into_iter().chain(oldest).min();
        }
        Ok(b)
    }

    /// Audit events after `after` not yet delivered: how many, and when the oldest arrived.
    pub fn audit_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let heads = self.heads(account)?;
        let mut first = None;
        self.audit_after(account, after, |ev| {
            first = Some((ev.seq, ev.ingested_at));
            ControlFlow::Break(())
        })?;
        // Sequences are contiguous from the oldest event still kept (older ones may
        // have gone to retention), so the count needs no scan.
        Ok(match first {
            Some((seq, at)) => ((heads.audit + 1).saturating_sub(seq), Some(at)),
            None => (0, None),
        })
    }

    /// Job snapshots changed after `after`: how many, and when the oldest of them arrived.
    pub fn job_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        let mut count = 0;
        let mut oldest: Option<DateTime<Utc>> = None;
        self.jobs_changed_after(account, after, |j| {
            count += 1;
            oldest = Some(oldest.map_or(j.snapshot.ingested_at, |o| o.min(j.snapshot.ingested_at)));
            ControlFlow::Continue(())
        })?;
        Ok((count, oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        (dir, s)
    }

    fn audit(id: &str) -> AuditEvent {
        AuditEvent::from_json(
            &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x"}),
            0,
            Utc::now(),
        )
        .unwrap()
    }

    fn job(id: &str, status: &str, progress: f64) -> JobSnapshot {
        JobSnapshot::from_json(
            &json!({"job": id, "type": "backup", "status": status, "progress": progress}),
            0,
            Utc::now(),
        )
        .unwrap()
    }

    fn audit_ids(s: &Store, a: &AccountId, after: u64) -> Vec<(u64, String)> {
        let mut v = Vec::new();
        s.audit_after(a, after, |e| {
            v.push((e.seq, e.to_json()["id"].as_str().unwrap().to_owned()));
            ControlFlow::Continue(())
        })
        .unwrap();
        v
    }

    #[test]
    fn audit_log_is_sequenced_per_account_and_ignores_repeated_ids() {
        let (_d, s) = store();
        let a = AccountId::parse("a").unwrap();
        let b = AccountId::parse("a-b").unwrap();
        let out = s
            .append_audit(&a, vec![audit("1"), audit("2"), audit("1")])
            .unwrap();
        assert_eq!(
            out,
            IngestOutcome {
                accepted: 2,
                duplicates: 1
            }
        );
        let out = s.append_audit(&a, vec![audit("2"), audit("3")]).unwrap();
        assert_eq!(
            out,
            IngestOutcome {
                accepted: 1,
                duplicates: 1
            }
        );
        s.append_audit(&b, vec![audit("x")]).unwrap();
        assert_eq!(
            audit_ids(&s, &a, 0),
            vec![(1, "1".into()), (2, "2".into()), (3, "3".into())]
        );
        assert_eq!(audit_ids(&s, &a, 2), vec![(3, "3".into())]);
        assert_eq!(audit_ids(&s, &b, 0), vec![(1, "x".into())]);
        assert_eq!(s.audit_backlog(&a, 1).unwrap().0, 2);
    }

    #[test]
    fn a_repeated_id_is_ignored_within_the_window_also_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            secret_key: None,
            cache_bytes: 8 << 20,
            dedup_window: 3,
        };
        let a = AccountId::parse("acme").unwrap();
        let outcome = |accepted, duplicates| IngestOutcome {
            accepted,
            duplicates,
        };
        {
            let s = Store::open_with_options(dir.path(), &options).unwrap();
            s.append_audit(&a, vec![audit("1"), audit("2")]).unwrap();
            s.append_audit(&a, vec![audit("3"), audit("4")]).unwrap();
            // "1" left the window of the last 3 events; "3" is in it.
            assert_eq!(
                s.append_audit(&a, vec![audit("3"), audit("1")]).unwrap(),
                outcome(1, 1)
            );
            s.flush_now().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(1200));
        // Read back from sled, not from memory: the last 3 are 3, 4 and the second 1.
        let s = Store::open_with_options(dir.path(), &options).unwrap();
        assert_eq!(
            s.append_audit(&a, vec![audit("4"), audit("1"), audit("2")])
                .unwrap(),
            outcome(1, 2)
        );
        assert_eq!(
            audit_ids(&s, &a, 0)
                .into_iter()
                .map(|(_, id)| id)
                .collect::<Vec<_>>(),
            ["1", "2", "3", "4", "1", "2"]
        );
    }

    fn running(s: &Store, a: &AccountId) -> Vec<String> {
        let mut v = Vec::new();
        s.running_jobs(a, None, |j| {
            v.push(j.snapshot.job);
            ControlFlow::Continue(())
        })
        .unwrap();
        v
    }

    fn changed_after(s: &Store, a: &AccountId, after: u64) -> Vec<(String, String)> {
        let mut v = Vec::new();
        s.jobs_changed_after(a, after, |j| {
            v.push((j.snapshot.job, j.snapshot.status));
            ControlFlow::Continue(())
        })
        .unwrap();
        v
    }

    #[test]
    fn a_finished_job_stays_finished_after_its_record_is_swept() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        let reader = |seq| crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: seq,
        };
        let retention = Utc::now() - chrono::Duration::days(30);
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        // Delivered by the account's only reader: the sweep removes the record.
        assert_eq!(
            s.sweep_jobs(&a, retention, &|| Ok(vec![reader(2)]))
                .unwrap(),
            1
        );
        assert_eq!(changed_after(&s, &a, 0), vec![]);
        // The platform's late retries, of the running and of the final snapshot.
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        assert_eq!(running(&s, &a), Vec::<String>::new(), "the job reopened");
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        assert_eq!(changed_after(&s, &a, 2), vec![], "a retry was taken as new");
        // Later sweeps within the retention keep what the guard needs.
        s.sweep_jobs(&a, retention, &|| Ok(vec![reader(2)]))
            .unwrap();
        s.put_jobs(&a, vec![job("j1", "in progress", 0.7)]).unwrap();
        assert_eq!(running(&s, &a), Vec::<String>::new(), "the job reopened");
        // A different final state is news, and is sent.
        s.put_jobs(&a, vec![job("j1", "unsuccessful", 1.0)])
            .unwrap();
        assert_eq!(
            changed_after(&s, &a, 2),
            vec![("j1".to_string(), "unsuccessful".to_string())]
        );
    }

    #[test]
    fn what_stops_a_finished_job_reopening_goes_after_the_retention() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        let reader = crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: 1,
        };
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        let retention = Utc::now() - chrono::Duration::days(30);
        assert_eq!(
            s.sweep_jobs(&a, retention, &|| Ok(vec![reader])).unwrap(),
            1
        );
        let guards = |s: &Store| {
            s.events()
                .unwrap()
                .scan_prefix(keys::account_prefix(keys::JOB_DONE, &a))
                .count()
        };
        assert_eq!(guards(&s), 1);
        // A sweep with everything older than its cutoff: the guard has outlived it.
        s.sweep_jobs(&a, Utc::now() + chrono::Duration::seconds(1), &|| {
            Ok(vec![reader])
        })
        .unwrap();
        assert_eq!(guards(&s), 0);
    }

    #[test]
    fn a_retry_after_its_event_was_swept_is_still_a_duplicate_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let options = crate::store::StoreOptions {
            secret_key: None,
            cache_bytes: 8 << 20,
            dedup_window: 3,
        };
        let a = AccountId::parse("acme").unwrap();
        let reader = |seq| crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: seq,
        };
        let retention = Utc::now() - chrono::Duration::days(30);
        let outcome = |accepted, duplicates| IngestOutcome {
            accepted,
            duplicates,
        };
        let id_records = |s: &Store| {
            s.events()
                .unwrap()
                .scan_prefix(keys::account_prefix(keys::AUDIT_ID, &a))
                .count()
        };
        {
            let s = Store::open_with_options(dir.path(), &options).unwrap();
            s.append_audit(&a, vec![audit("1")]).unwrap();
            s.append_audit(&a, vec![audit("2")]).unwrap();
            // Delivered: the next sweep removes the events.
            assert_eq!(
                s.sweep_audit(&a, retention, &|| Ok(vec![reader(2)]))
                    .unwrap(),
                2
            );
            assert_eq!(audit_ids(&s, &a, 0), vec![]);
            assert_eq!(s.append_audit(&a, vec![audit("1")]).unwrap(), outcome(0, 1));
            s.flush_now().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(1200));
        // Read back from sled, not from memory.
        let s = Store::open_with_options(dir.path(), &options).unwrap();
        assert_eq!(s.append_audit(&a, vec![audit("2")]).unwrap(), outcome(0, 1));
        // Once they left the window of 3, their records go with the next sweep.
        let now = Utc::now();
        let together = ["3", "4"].map(|id| {
            AuditEvent::from_json(
                &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x"}),
                0,
                now,
            )
            .unwrap()
        });
        // Stored at one moment: one chunk, one id record.
        s.append_audit(&a, together.to_vec()).unwrap();
        s.append_audit(&a, vec![audit("5")]).unwrap();
        s.sweep_audit(&a, retention, &|| Ok(vec![reader(5)]))
            .unwrap();
        assert_eq!(id_records(&s), 2, "the records of 3+4 and 5 remain");
        assert_eq!(
            s.append_audit(&a, vec![audit("1"), audit("4")]).unwrap(),
            outcome(1, 1)
        );
    }

    #[test]
    fn a_newer_job_snapshot_replaces_the_older_and_moves_to_the_end() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        s.put_jobs(
            &a,
            vec![job("j1", "in progress", 0.1), job("j2", "in progress", 0.2)],
        )
        .unwrap();
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        // A retry of the same snapshot is not a change, nor is a late older one.
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        let mut changed = Vec::new();
        s.jobs_changed_after(&a, 0, |j| {
            changed.push((j.change_seq, j.snapshot.job, j.snapshot.status));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            changed,
            vec![
                (2, "j2".into(), "in progress".into()),
                (3, "j1".into(), "successful".into())
            ]
        );
        let mut running = Vec::new();
        s.running_jobs(&a, None, |j| {
            running.push(j.snapshot.job);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(running, vec!["j2".to_string()]);
        assert_eq!(s.heads(&a).unwrap(), Heads { audit: 0, jobs: 3 });
    }
}
