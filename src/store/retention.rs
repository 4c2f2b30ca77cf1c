//! Retention: events are kept until every integration of the account that wants
//! them has delivered them, but no longer than the configured retention. What an
//! integration loses to retention is recorded as a gap, never skipped silently.

use super::jobs::StoredJob;
use super::{decode, encode, keys, SledStore as Store, StoreError};
use crate::model::{AccountId, Source};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError as Abort, TransactionalTree};
use sled::Transactional;
use std::collections::HashMap;
use uuid::Uuid;

/// Why events were dropped before an integration delivered them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// They outlived `retention_days`.
    #[default]
    Retention,
    /// The account's stored events were over its backlog quota (`max_backlog_bytes`):
    /// its oldest went, so that its newest get through.
    BacklogQuota,
}

impl GapReason {
    /// The reason's name in the API, the metrics and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::Retention => "retention",
            GapReason::BacklogQuota => "backlog_quota",
        }
    }
}

/// Events an integration never received because they outlived the retention, or
/// were dropped because the account was over its backlog quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gap {
    /// The source the events were lost from.
    pub source: Source,
    /// Why they were dropped (records written before quotas existed: retention).
    #[serde(default)]
    pub reason: GapReason,
    /// When the first of the lost events was stored.
    pub from: DateTime<Utc>,
    /// When the last of them was stored.
    pub to: DateTime<Utc>,
    /// How many events were lost.
    pub count: u64,
    /// When the sweep recorded the loss.
    pub recorded_at: DateTime<Utc>,
}

/// An integration's position in one source, for the sweep.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    /// The integration.
    pub integration: Uuid,
    /// The sequence up to which it delivered: the sweep keeps what follows.
    pub delivered_up_to: u64,
}

fn gap_key(id: &Uuid, source: Source, reason: GapReason) -> Vec<u8> {
    match reason {
        // The key gaps had before there was a second reason.
        GapReason::Retention => format!("gap/{id}/{}", source.as_str()).into_bytes(),
        GapReason::BacklogQuota => {
            format!("gap/{id}/{}/{}", source.as_str(), reason.as_str()).into_bytes()
        }
    }
}

/// What the backlog quota dropped of one account's audit events (whether or not an
/// integration was waiting for them): kept in the registry, shown on the account.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaDrops {
    /// How many events were dropped.
    pub events: u64,
    /// When the first of them was stored.
    pub from: DateTime<Utc>,
    /// When the last of them was stored.
    pub to: DateTime<Utc>,
    /// When the last drop happened.
    pub last_at: DateTime<Utc>,
}

impl QuotaDrops {
    fn merged(old: Option<QuotaDrops>, new: QuotaDrops) -> QuotaDrops {
        match old {
            None => new,
            Some(o) => QuotaDrops {
                events: o.events + new.events,
                from: o.from.min(new.from),
                to: o.to.max(new.to),
                last_at: new.last_at,
            },
        }
    }
}

/// What one audit sweep of an account did.
#[derive(Debug, Clone, Default)]
pub struct AuditSweep {
    /// Events removed, for any reason.
    pub deleted: u64,
    /// What the backlog quota dropped in this sweep.
    pub quota_drops: Option<QuotaDrops>,
    /// The losses recorded in this sweep, per integration.
    pub gaps: Vec<(Uuid, Gap)>,
}

impl AuditSweep {
    /// Adds one pass's losses: one entry per integration, source and reason however
    /// many passes the sweep took, so what is told of it stays small.
    fn merge_gaps(&mut self, gaps: Vec<(Uuid, Gap)>) {
        for (id, g) in gaps {
            let same = self
                .gaps
                .iter_mut()
                .find(|(i, o)| *i == id && o.source == g.source && o.reason == g.reason);
            match same {
                Some((_, o)) => {
                    o.count += g.count;
                    o.from = o.from.min(g.from);
                    o.to = o.to.max(g.to);
                    o.recorded_at = o.recorded_at.max(g.recorded_at);
                }
                None => self.gaps.push((id, g)),
            }
        }
    }
}

pub fn gaps_prefix(id: &Uuid) -> Vec<u8> {
    format!("gap/{id}/").into_bytes()
}

/// Events deleted per write.
const CHUNK: u64 = 10_000;

/// What one write of the audit sweep did.
struct Pass {
    deleted: u64,
    quota_drops: Option<QuotaDrops>,
    gaps: Vec<(Uuid, Gap)>,
    /// Whether it stopped at `CHUNK` events with more to look at.
    more: bool,
}

/// The first and last storage time of lost events, and how many.
type Lost = (DateTime<Utc>, DateTime<Utc>, u64);

/// Per reader and reason: what it lost.
#[derive(Default)]
struct Losses(HashMap<(Uuid, GapReason), Lost>);

impl Losses {
    /// An event at `seq`, stored at `at`, is going: every reader not yet past it loses it.
    fn note(&mut self, readers: &[Reader], seq: u64, at: DateTime<Utc>, reason: GapReason) {
        for r in readers.iter().filter(|r| r.delivered_up_to < seq) {
            let g = self.0.entry((r.integration, reason)).or_insert((at, at, 0));
            g.0 = g.0.min(at);
            g.1 = g.1.max(at);
            g.2 += 1;
        }
    }

    /// Adds these losses to the integrations' gap records, in the transaction that
    /// removes the events: a crash between the two would lose or invent a gap.
    fn record(
        &self,
        registry: &TransactionalTree,
        account: &AccountId,
        source: Source,
        now: DateTime<Utc>,
    ) -> Result<(), Abort<StoreError>> {
        for ((id, reason), (from, to, count)) in &self.0 {
            let reason = *reason;
            // An integration deleted since the readers were listed keeps no record.
            if registry.get(keys::integration(account, id))?.is_none() {
                continue;
            }
            let key = gap_key(id, source, reason);
            let merged = match registry.get(&key)? {
                Some(v) => {
                    let old: Gap = decode(&key, &v).map_err(Abort::Abort)?;
                    Gap {
                        source,
                        reason,
                        from: old.from.min(*from),
                        to: old.to.max(*to),
                        count: old.count + count,
                        recorded_at: now,
                    }
                }
                None => Gap {
                    source,
                    reason,
                    from: *from,
                    to: *to,
                    count: *count,
                    recorded_at: now,
                },
            };
            registry.insert(key, encode(&merged))?;
        }
        Ok(())
    }

    fn log(&self, account: &AccountId, source: Source) {
        for ((id, reason), (_, _, count)) in &self.0 {
            let why = match reason {
                GapReason::Retention => "outlived the retention",
                GapReason::BacklogQuota => {
                    "were dropped because the account's backlog was over its quota (max_backlog_bytes)"
                }
            };
            log::warn!(
                "integration {id} (account {account}): {count} {} events {why} before it delivered them (gap recorded)",
                source.as_str()
            );
        }
    }

    /// The losses as gaps, for the caller to report.
    fn gaps(&self, source: Source, now: DateTime<Utc>) -> Vec<(Uuid, Gap)> {
        self.0
            .iter()
            .map(|((id, reason), (from, to, count))| {
                (
                    *id,
                    Gap {
                        source,
                        reason: *reason,
                        from: *from,
                        to: *to,
                        count: *count,
                        recorded_at: now,
                    },
                )
            })
            .collect()
    }
}

/// The posts integrations have in flight. Retention does not remove for age what is
/// being posted at that moment, and a post does not start with what retention has
/// removed: so an event is either delivered or counted in a gap, never both.
#[derive(Default)]
pub(super) struct InFlight {
    next: u64,
    claims: HashMap<u64, Claim>,
}

struct Claim {
    account: AccountId,
    source: Source,
    first: u64,
    last: u64,
}

impl InFlight {
    /// Whether a post in flight carries one of `account`'s `source` events numbered
    /// `first..=last` (audit sequences, or job change sequences).
    fn holds(&self, account: &AccountId, source: Source, first: u64, last: u64) -> bool {
        self.claims.values().any(|c| {
            c.source == source && c.account == *account && c.first <= last && first <= c.last
        })
    }
}

/// A post's claim on its events; dropping it (after the checkpoint moved, or the
/// post failed) lets retention remove them again.
pub struct PostClaim {
    store: Store,
    id: u64,
}

impl Drop for PostClaim {
    fn drop(&mut self) {
        self.store.in_flight().claims.remove(&self.id);
    }
}

/// What stops a swept finished job from reopening: when it was swept, and a hash of
/// its final snapshot (`swept_at ms i64 | hash u128`, big-endian).
pub(super) fn job_done_marker(swept_at: DateTime<Utc>, hash: u128) -> Vec<u8> {
    let mut v = Vec::with_capacity(24);
    v.extend_from_slice(&swept_at.timestamp_millis().to_be_bytes());
    v.extend_from_slice(&hash.to_be_bytes());
    v
}

/// Reads a [`job_done_marker`]: (when it was swept, in ms, and the final snapshot's hash).
pub(super) fn read_job_done_marker(key: &[u8], v: &[u8]) -> Result<(i64, u128), StoreError> {
    match (v.get(..8), v.get(8..24)) {
        (Some(at), Some(hash)) if v.len() == 24 => Ok((
            i64::from_be_bytes(at.try_into().expect("8 bytes")),
            u128::from_be_bytes(hash.try_into().expect("16 bytes")),
        )),
        _ => Err(StoreError::Corrupt {
            key: String::from_utf8_lossy(key).replace('\0', "/"),
            reason: "not a finished-job record".into(),
        }),
    }
}

/// Lists an account's readers of one source (its integrations that want it, with
/// their checkpoints). Called by the sweep while no post can commit unseen.
pub type Readers<'a> = &'a dyn Fn() -> Result<Vec<Reader>, StoreError>;

impl Store {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.inner
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Before a post of `account`'s `source` events numbered `seqs` (audit sequences
    /// or job change sequences, ascending): which of them are no longer stored — the
    /// sweep removed them, and counted them in this integration's gap, or (jobs) a
    /// newer snapshot replaced them — and a claim that keeps retention from removing
    /// the others until it is dropped.
    pub fn claim_for_post(
        &self,
        account: &AccountId,
        source: Source,
        seqs: &[u64],
    ) -> Result<(Vec<bool>, PostClaim), StoreError> {
        let mut flight = self.in_flight();
        let tree = self.events()?;
        let gone = match source {
            Source::Audit => {
                // The sweep removes audit chunks oldest first: what is before the
                // first chunk left is gone.
                let first = match tree
                    .scan_prefix(keys::account_prefix(keys::AUDIT, account))
                    .next()
                {
                    Some(kv) => keys::seq_of(&kv?.0),
                    None => u64::MAX,
                };
                seqs.iter().map(|s| *s < first).collect()
            }
            Source::Jobs => seqs
                .iter()
                .map(|s| {
                    let key = keys::with_seq(keys::JOB_CHANGE, account, *s);
                    Ok(!tree.contains_key(key)?)
                })
                .collect::<Result<Vec<bool>, StoreError>>()?,
        };
        flight.next += 1;
        let id = flight.next;
        flight.claims.insert(
            id,
            Claim {
                account: account.clone(),
                source,
                first: seqs.first().copied().unwrap_or(0),
                last: seqs.last().copied().unwrap_or(0),
            },
        );
        Ok((
            gone,
            PostClaim {
                store: self.clone(),
                id,
            },
        ))
    }

    /// Accounts that have events stored.
    pub fn accounts_with_events(&self) -> Result<Vec<AccountId>, StoreError> {
        let mut out = Vec::new();
        for k in self.events()?.scan_prefix([keys::HEADS]).keys() {
            let k = k?;
            let name = String::from_utf8_lossy(&k[1..k.len().saturating_sub(1)]).into_owned();
            if let Ok(a) = AccountId::parse(&name) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Deletes the account's oldest audit events that every reader has delivered, or
    /// that were stored before `cutoff` (unless a post carries them right now);
    /// records a gap for each reader that had not delivered an event deleted for age.
    /// With no reader, only age counts. The id records of deleted events stay while
    /// they are among the account's last `dedup_window`, so a retry is still known.
    /// Returns how many events went.
    pub fn sweep_audit(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: Readers,
    ) -> Result<u64, StoreError> {
        Ok(self
            .sweep_audit_within(account, cutoff, u64::MAX, readers, &|| false)?
            .deleted)
    }

    /// [`Store::sweep_audit`], and also: while the account's stored audit bytes are
    /// over `quota`, its oldest chunks go (unless a post carries them right now), each
    /// reader that had not delivered them getting a gap for the backlog quota.
    /// Stops between two batches once `stop` says so (the shutdown): each batch is a
    /// transaction of its own, so what it removed stays removed, and the next sweep
    /// goes on with the rest.
    pub fn sweep_audit_within(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: Readers,
        stop: &dyn Fn() -> bool,
    ) -> Result<AuditSweep, StoreError> {
        let mut out = AuditSweep::default();
        loop {
            let pass = self.sweep_audit_pass(account, cutoff, quota, readers)?;
            out.deleted += pass.deleted;
            out.merge_gaps(pass.gaps);
            if let Some(q) = pass.quota_drops {
                out.quota_drops = Some(QuotaDrops::merged(out.quota_drops, q));
            }
            if pass.deleted > 0 {
                self.sweep_batch_done();
            }
            if !pass.more || stop() {
                return Ok(out);
            }
        }
    }

    /// One write of [`Store::sweep_audit_within`]: up to `CHUNK` events.
    fn sweep_audit_pass(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: Readers,
    ) -> Result<Pass, StoreError> {
        // The ingest lock keeps the account's stored bytes from changing between the
        // read here and the write below (ingest adds to them under it), and keeps two
        // sweeps of one account (the periodic one, one an ingest asked for) apart.
        // Taken before the in-flight lock, as `sweep_jobs` does.
        let _writer = self.writer();
        // Held from reading the checkpoints to the write: a post that commits
        // meanwhile either committed before (its checkpoint is read) or still
        // holds its claim (its events stay).
        let flight = self.in_flight();
        let readers = readers()?;
        let min_delivered = readers.iter().map(|r| r.delivered_up_to).min();
        let stored = self.stored_bytes(account)?;
        let mut gaps = Losses::default();
        let mut chunks = Vec::new();
        let (mut n, mut freed) = (0, 0u64);
        let mut dropped: Option<QuotaDrops> = None;
        let mut more = false;
        // Id records before this sequence have lost their chunk.
        let mut kept_from = u64::MAX;
        let now = Utc::now();
        let batch = self.sweep_batch_events(CHUNK);
        // A chunk's events share one storage time, so it goes whole or stays.
        self.audit_chunks(account, 0, |chunk| {
            let held = flight.holds(account, Source::Audit, chunk.first, chunk.last());
            let delivered_by_all = min_delivered.is_some_and(|m| chunk.last() <= m);
            let aged = chunk.ingested_at < cutoff && !held;
            let over_quota = stored.saturating_sub(freed) > quota && !held;
            let reason = if delivered_by_all || aged {
                GapReason::Retention
            } else if over_quota {
                let d = QuotaDrops {
                    events: chunk.count,
                    from: chunk.ingested_at,
                    to: chunk.ingested_at,
                    last_at: now,
                };
                dropped = Some(QuotaDrops::merged(dropped, d));
                GapReason::BacklogQuota
            } else {
                kept_from = chunk.first;
                return Ok(std::ops::ControlFlow::Break(()));
            };
            for seq in chunk.first..=chunk.last() {
                gaps.note(&readers, seq, chunk.ingested_at, reason);
            }
            chunks.push(chunk.first);
            kept_from = chunk.first + 1;
            n += chunk.count;
            freed += chunk.bytes();
            if n >= batch {
                more = true;
                return Ok(std::ops::ControlFlow::Break(()));
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let ids = self.expired_id_records(account, kept_from)?;
        if !chunks.is_empty() || !ids.is_empty() {
            let (events, registry) = (self.events()?, self.registry()?);
            (&*events, &*registry).transaction(|(e, r)| {
                for first in &chunks {
                    e.remove(keys::with_seq(keys::AUDIT, account, *first))?;
                }
                for k in &ids {
                    e.remove(k.as_slice())?;
                }
                if freed > 0 {
                    e.insert(
                        keys::account_prefix(keys::STORED_BYTES, account),
                        &stored.saturating_sub(freed).to_be_bytes(),
                    )?;
                }
                if let Some(d) = dropped {
                    let key = keys::quota_drops(account);
                    let old = match r.get(&key)? {
                        Some(v) => Some(decode(&key, &v).map_err(Abort::Abort)?),
                        None => None,
                    };
                    r.insert(key, encode(&QuotaDrops::merged(old, d)))?;
                }
                gaps.record(r, account, Source::Audit, now)
            })?;
        }
        drop(flight);
        gaps.log(account, Source::Audit);
        if let Some(d) = dropped {
            log::warn!(
                "account {account}: {} audit events stored {} to {} dropped, oldest first: its stored events were over its backlog quota of {quota} bytes",
                d.events,
                d.from.to_rfc3339(),
                d.to.to_rfc3339()
            );
        }
        Ok(Pass {
            deleted: n,
            quota_drops: dropped,
            gaps: gaps.gaps(Source::Audit, now),
            more,
        })
    }

    /// What the backlog quota has dropped of the account's audit events, if anything.
    pub fn quota_drops(&self, account: &AccountId) -> Result<Option<QuotaDrops>, StoreError> {
        let key = keys::quota_drops(account);
        match self.registry()?.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The id records of the account that have lost their chunk (they start before
    /// `kept_from`) and left the dedup window.
    fn expired_id_records(
        &self,
        account: &AccountId,
        kept_from: u64,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let tree = self.events()?;
        let head = super::heads::heads_in(&tree, account)?.audit;
        let window_starts = head.saturating_sub(self.inner.dedup_window as u64);
        let mut out = Vec::new();
        for kv in tree.scan_prefix(keys::account_prefix(keys::AUDIT_ID, account)) {
            let (k, v) = kv?;
            let first = keys::seq_of(&k);
            let last = first + (v.len() / 16).saturating_sub(1) as u64;
            if first >= kept_from || last > window_starts {
                break;
            }
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// Deletes finished jobs whose latest snapshot every reader has delivered, or that
    /// were stored before `cutoff` (unless a post carries them right now), recording
    /// gaps; jobs still running are kept. Each deleted job leaves a small record of its
    /// end for one more retention period, so a late retry does not reopen it.
    pub fn sweep_jobs(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: Readers,
    ) -> Result<u64, StoreError> {
        let events = self.events()?;
        // Candidates, read without locks: finished jobs old enough, or delivered by
        // every reader as far as the checkpoints read now say (they only move on).
        let earliest = readers()?.iter().map(|r| r.delivered_up_to).min();
        let mut candidates = Vec::new();
        for kv in events.scan_prefix(keys::account_prefix(keys::JOB, account)) {
            let (k, v) = kv?;
            let job: StoredJob = decode(&k, &v)?;
            let due =
                job.snapshot.ingested_at < cutoff || earliest.is_some_and(|m| job.change_seq <= m);
            if job.snapshot.is_finished() && due {
                candidates.push(k.to_vec());
            }
        }
        let mut expired = Vec::new();
        for kv in events.scan_prefix(keys::account_prefix(keys::JOB_DONE, account)) {
            let (k, v) = kv?;
            if read_job_done_marker(&k, &v)?.0 < cutoff.timestamp_millis() {
                expired.push(k.to_vec());
            }
        }
        // Decided with no ingest meanwhile (a job that got a newer snapshot stays) and,
        // as in `sweep_audit`, no post committing unseen.
        let _writer = self.writer();
        let flight = self.in_flight();
        let readers = readers()?;
        let min_delivered = readers.iter().map(|r| r.delivered_up_to).min();
        let mut gaps = Losses::default();
        let mut gone = Vec::new();
        for k in candidates {
            let Some(v) = events.get(&k)? else {
                continue;
            };
            let job: StoredJob = decode(&k, &v)?;
            let seq = job.change_seq;
            let delivered_by_all = min_delivered.is_some_and(|m| seq <= m);
            let aged =
                job.snapshot.ingested_at < cutoff && !flight.holds(account, Source::Jobs, seq, seq);
            if job.snapshot.is_finished() && (delivered_by_all || aged) {
                gaps.note(
                    &readers,
                    seq,
                    job.snapshot.ingested_at,
                    GapReason::Retention,
                );
                gone.push((k, job));
            }
        }
        if gone.is_empty() && expired.is_empty() {
            return Ok(0);
        }
        let registry = self.registry()?;
        let now = Utc::now();
        (&*events, &*registry).transaction(|(e, r)| {
            for (k, job) in &gone {
                e.remove(k.as_slice())?;
                e.remove(keys::with_seq(keys::JOB_CHANGE, account, job.change_seq))?;
                e.insert(
                    keys::with_name(keys::JOB_DONE, account, &job.snapshot.job),
                    job_done_marker(now, super::jobs::final_hash(&job.snapshot)),
                )?;
            }
            for k in &expired {
                e.remove(k.as_slice())?;
            }
            gaps.record(r, account, Source::Jobs, now)
        })?;
        drop(flight);
        gaps.log(account, Source::Jobs);
        Ok(gone.len() as u64)
    }

    /// Asks the sweep to see to `account` now (an ingest took it over its backlog
    /// quota), not only at its next period. Asking again before it ran asks once.
    pub fn ask_sweep(&self, account: &AccountId) {
        let mut due = self
            .inner
            .sweep_due
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if due.insert(account.clone()) {
            self.inner.sweep_wake.notify_one();
        }
    }

    /// The accounts the sweep was asked to see to since it last looked.
    pub fn take_sweep_due(&self) -> Vec<AccountId> {
        let mut due = self
            .inner
            .sweep_due
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        due.drain().collect()
    }

    /// Resolves when [`Store::ask_sweep`] was called (at once if it was since the last wait).
    pub async fn sweep_asked(&self) {
        self.inner.sweep_wake.notified().await
    }

    /// The gaps retention left in an integration's delivery.
    pub fn gaps(&self, id: &Uuid) -> Result<Vec<Gap>, StoreError> {
        let mut out = Vec::new();
        for kv in self.registry()?.scan_prefix(gaps_prefix(id)) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuditEvent, Integration, IntegrationChange, IntegrationPolicy};
    use crate::store::Checkpoint;
    use serde_json::json;

    fn audit(n: usize) -> Vec<AuditEvent> {
        let now = Utc::now();
        (0..n)
            .map(|i| {
                AuditEvent::from_json(
                    &json!({"id": format!("e{i}-{now}"), "time": "2026-11-25T10:00:00Z", "event": "x"}),
                    0,
                    now,
                )
                .unwrap()
            })
            .collect()
    }

    pub(super) fn integration(s: &Store, account: &AccountId) -> Integration {
        let it =
            IntegrationChange::from_json(&json!({"name": "n", "hec_token": "t-0123456789abcdef",
            "hec_uri": "https://splunk.example.com", "sources": ["audit"]}))
            .and_then(|c| c.create(account.clone(), Utc::now(), IntegrationPolicy::default()))
            .unwrap();
        s.put_integration(&it, None).unwrap()
    }

    #[test]
    fn an_event_is_either_posted_or_counted_in_the_gap_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        let it = integration(&s, &a);
        s.append_audit(&a, audit(3)).unwrap();
        s.append_audit(&a, audit(2)).unwrap();
        let seqs = [1, 2, 3];
        let readers = || {
            Ok(vec![Reader {
                integration: it.id,
                delivered_up_to: s.checkpoint(&it.id)?.audit_seq,
            }])
        };
        let all_aged = Utc::now() + chrono::Duration::seconds(1);
        // A post of 1..=3 in flight: the sweep leaves them (and what follows) alone.
        let (gone, claim) = s.claim_for_post(&a, Source::Audit, &seqs).unwrap();
        assert_eq!(gone, vec![false; 3]);
        assert_eq!(s.sweep_audit(&a, all_aged, &readers).unwrap(), 0);
        assert_eq!(s.gaps(&it.id).unwrap(), vec![]);
        // Delivered: the checkpoint moves before the claim goes; nothing was lost.
        let cp = Checkpoint {
            audit_seq: 3,
            ..Default::default()
        };
        s.commit(&a, &it.id, &cp, &[]).unwrap();
        drop(claim);
        assert_eq!(s.sweep_audit(&a, all_aged, &readers).unwrap(), 5);
        let gaps = s.gaps(&it.id).unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].count, 2, "only 4 and 5 were never delivered");
        // A batch still holding 4 and 5 finds them gone: counted, so never posted.
        let (gone, _claim) = s.claim_for_post(&a, Source::Audit, &[4, 5]).unwrap();
        assert_eq!(gone, vec![true, true]);
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn gap(reason: GapReason, count: u64, from_secs: i64, to_secs: i64) -> Gap {
        let at = |s| DateTime::<Utc>::from_timestamp(s, 0).unwrap();
        Gap {
            source: Source::Audit,
            reason,
            from: at(from_secs),
            to: at(to_secs),
            count,
            recorded_at: at(to_secs),
        }
    }

    #[test]
    fn a_sweep_of_many_passes_tells_one_gap_per_integration_and_reason() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut sweep = AuditSweep::default();
        for pass in 0..300 {
            sweep.merge_gaps(vec![
                (
                    a,
                    gap(GapReason::BacklogQuota, 64, pass * 10, pass * 10 + 5),
                ),
                (
                    b,
                    gap(GapReason::BacklogQuota, 64, pass * 10, pass * 10 + 5),
                ),
            ]);
        }
        sweep.merge_gaps(vec![(a, gap(GapReason::Retention, 3, 1, 2))]);
        assert_eq!(sweep.gaps.len(), 3, "{:?}", sweep.gaps);
        let quota_a = &sweep.gaps[0];
        assert_eq!(quota_a.0, a);
        assert_eq!(quota_a.1.count, 64 * 300);
        assert_eq!(quota_a.1.from.timestamp(), 0);
        assert_eq!(quota_a.1.to.timestamp(), 2995);
        assert_eq!(sweep.gaps[2].1.count, 3);
    }
}

#[cfg(test)]
mod quota_tests {
    use super::tests::integration;
    use super::*;
    use crate::model::AuditEvent;
    use serde_json::json;

    fn audit(tag: &str, n: usize) -> Vec<AuditEvent> {
        let now = Utc::now();
        (0..n)
            .map(|i| {
                AuditEvent::from_json(
                    &json!({"id": format!("{tag}-{i}"), "time": "2026-11-25T10:00:00Z",
                            "event": "x".repeat(200)}),
                    0,
                    now,
                )
                .unwrap()
            })
            .collect()
    }

    /// The bytes of the account's chunks, counted the slow way.
    fn scanned_bytes(s: &Store, a: &AccountId) -> u64 {
        s.events()
            .unwrap()
            .scan_prefix(keys::account_prefix(keys::AUDIT, a))
            .values()
            .map(|v| v.unwrap().len() as u64)
            .sum()
    }

    #[test]
    fn stored_bytes_follow_ingest_and_the_sweep_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        for i in 0..5 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        assert!(s.stored_bytes(&a).unwrap() > 100_000);
        assert_eq!(s.stored_bytes(&a).unwrap(), scanned_bytes(&s, &a));
        let past = Utc::now() - chrono::Duration::days(1);
        s.sweep_audit_within(&a, past, 50_000, &|| Ok(vec![]), &|| false)
            .unwrap();
        assert_eq!(s.stored_bytes(&a).unwrap(), scanned_bytes(&s, &a));
        assert!(s.stored_bytes(&a).unwrap() <= 50_000);
    }

    #[test]
    fn over_its_quota_an_account_loses_its_oldest_events_counted_in_the_gap() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, other) = (
            AccountId::parse("acme").unwrap(),
            AccountId::parse("other").unwrap(),
        );
        let it = integration(&s, &a);
        for i in 0..10 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        s.append_audit(&other, audit("o", 300)).unwrap();
        let other_bytes = s.stored_bytes(&other).unwrap();
        let readers = || {
            Ok(vec![Reader {
                integration: it.id,
                delivered_up_to: s.checkpoint(&it.id)?.audit_seq,
            }])
        };
        let quota = s.stored_bytes(&a).unwrap() / 3;
        let past = Utc::now() - chrono::Duration::days(1);
        // A post of the oldest events in flight: nothing of them, nor after them, goes.
        let (_, claim) = s.claim_for_post(&a, Source::Audit, &[1, 2]).unwrap();
        let held = s
            .sweep_audit_within(&a, past, quota, &readers, &|| false)
            .unwrap();
        assert_eq!(held.deleted, 0);
        drop(claim);

        let swept = s
            .sweep_audit_within(&a, past, quota, &readers, &|| false)
            .unwrap();
        assert!(s.stored_bytes(&a).unwrap() <= quota);
        let dropped = swept.quota_drops.unwrap().events;
        assert_eq!(swept.deleted, dropped);
        // The oldest went, the newest stayed, with no hole between.
        let mut kept = Vec::new();
        s.audit_after(&a, 0, |ev| {
            kept.push(ev.seq);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(kept.first(), Some(&(dropped + 1)));
        assert_eq!(kept.last(), Some(&1000));
        assert_eq!(kept.len() as u64, 1000 - dropped);
        // The gap says exactly what the integration lost, and why.
        let gaps = s.gaps(&it.id).unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].reason, GapReason::BacklogQuota);
        assert_eq!(gaps[0].count, dropped);
        assert_eq!(s.quota_drops(&a).unwrap().unwrap().events, dropped);
        // What is left is within the quota: a second sweep drops nothing more.
        let again = s
            .sweep_audit_within(&a, past, quota, &readers, &|| false)
            .unwrap();
        assert_eq!(again.deleted, 0);
        // The other account is untouched.
        assert_eq!(s.stored_bytes(&other).unwrap(), other_bytes);
        assert_eq!(s.quota_drops(&other).unwrap(), None);
    }
}
