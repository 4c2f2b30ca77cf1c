//! Retention: events are kept until every integration of the account that wants
//! them has delivered them, but no longer than the configured retention. What an
//! integration loses to retention is recorded as a gap, never skipped silently.

use super::jobs::StoredJob;
use super::{decode, encode, keys, SledStore as Store, StoreError};
use crate::model::{AccountId, AuditEvent, Source};
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

/// What the backlog quota dropped of one account (whether or not an integration was
/// waiting for it): kept in the registry, shown on the account.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuotaDrops {
    /// How many audit events were dropped.
    pub events: u64,
    /// How many job snapshots were dropped (records written before jobs counted: 0).
    #[serde(default)]
    pub jobs: u64,
    /// When the first of them was stored.
    pub from: DateTime<Utc>,
    /// When the last of them was stored.
    pub to: DateTime<Utc>,
    /// When the last drop happened.
    pub last_at: DateTime<Utc>,
}

impl QuotaDrops {
    pub(super) fn merged(old: Option<QuotaDrops>, new: QuotaDrops) -> QuotaDrops {
        match old {
            None => new,
            Some(o) => QuotaDrops {
                events: o.events + new.events,
                jobs: o.jobs + new.jobs,
                from: o.from.min(new.from),
                to: o.to.max(new.to),
                last_at: new.last_at,
            },
        }
    }

    /// One drop of `events` audit events and `jobs` job snapshots stored at `at`.
    fn one(events: u64, jobs: u64, at: DateTime<Utc>, now: DateTime<Utc>) -> QuotaDrops {
        QuotaDrops {
            events,
            jobs,
            from: at,
            to: at,
            last_at: now,
        }
    }
}

/// What one sweep of an account did.
#[derive(Debug, Clone, Default)]
pub struct AuditSweep {
    /// Audit events removed, for any reason.
    pub deleted: u64,
    /// Job snapshots the backlog quota removed.
    pub jobs_deleted: u64,
    /// What the backlog quota dropped in this sweep.
    pub quota_drops: Option<QuotaDrops>,
    /// The losses recorded in this sweep, per integration.
    pub gaps: Vec<(Uuid, Gap)>,
    /// Whether a post in flight kept back events the quota would have dropped: the
    /// sweep should look again once the post is over.
    pub held_back: bool,
    /// Whether `stop` ended it with more to do: the next sweep goes on with the rest.
    pub unfinished: bool,
}

impl AuditSweep {
    /// Adds one pass's losses: one entry per integration, source and reason however
    /// many passes the sweep took, so what is told of it stays small.
    fn merge_gaps(&mut self, gaps: Vec<(Uuid, Gap)>) {
        merge_gaps(&mut self.gaps, gaps)
    }
}

/// Adds `gaps` to `into`, one entry per integration, source and reason.
pub(super) fn merge_gaps(into: &mut Vec<(Uuid, Gap)>, gaps: Vec<(Uuid, Gap)>) {
    for (id, g) in gaps {
        let same = into
            .iter_mut()
            .find(|(i, o)| *i == id && o.source == g.source && o.reason == g.reason);
        match same {
            Some((_, o)) => {
                o.count += g.count;
                o.from = o.from.min(g.from);
                o.to = o.to.max(g.to);
                o.recorded_at = o.recorded_at.max(g.recorded_at);
            }
            None => into.push((id, g)),
        }
    }
}

/// What the backlog quota dropped that siemsync's own notice in the account's stream
/// has not told yet, and the notices written that are still stored. Updated in the
/// write that drops and in the write that appends a notice, so that a crash between
/// the two loses nothing and tells nothing twice, and a failed later pass of a sweep
/// cannot take back what an earlier one owes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PendingNotice {
    /// Dropped since the last notice (`None`: nothing to tell).
    pub drops: Option<QuotaDrops>,
    /// What each integration lost to the quota since the last notice.
    pub gaps: Vec<(Uuid, Gap)>,
    /// When the last notice was written.
    pub last_notice_at: Option<DateTime<Utc>>,
    /// The notices written and still stored, with what they told.
    pub told: Vec<Told>,
    /// Whether the quota dropped a notice before it was delivered: what it told is
    /// told again at once, not a period later (one notice stays in the stream).
    #[serde(default)]
    pub retell: bool,
}

/// A notice written into the account's stream, and what it told: should the quota
/// drop it before it was delivered, the next notice tells it again (the notice is not
/// counted as a lost event of the customer's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Told {
    /// Its audit sequence (a notice is a chunk of its own).
    pub seq: u64,
    /// What it told.
    pub drops: QuotaDrops,
    /// Per integration.
    pub gaps: Vec<(Uuid, Gap)>,
}

impl PendingNotice {
    pub(super) fn owe(&mut self, drops: QuotaDrops, gaps: Vec<(Uuid, Gap)>) {
        self.drops = Some(QuotaDrops::merged(self.drops, drops));
        merge_gaps(&mut self.gaps, gaps);
    }
}

fn pending_notice_in(tree: &sled::Tree, account: &AccountId) -> Result<PendingNotice, StoreError> {
    let key = keys::account_prefix(keys::QUOTA_NOTICE, account);
    match tree.get(&key)? {
        Some(v) => decode(&key, &v),
        None => Ok(PendingNotice::default()),
    }
}

/// The audit sequence below which the quota dropped events (0: none).
fn quota_floor_in(tree: &sled::Tree, account: &AccountId) -> Result<u64, StoreError> {
    let key = keys::account_prefix(keys::QUOTA_FLOOR, account);
    super::audit::u64_in(tree, &key, "a sequence")
}

pub fn gaps_prefix(id: &Uuid) -> Vec<u8> {
    format!("gap/{id}/").into_bytes()
}

/// Events deleted per write.
const CHUNK: u64 = 10_000;

/// What one write of the sweep did.
#[derive(Default)]
struct Pass {
    deleted: u64,
    jobs_deleted: u64,
    quota_drops: Option<QuotaDrops>,
    gaps: Vec<(Uuid, Gap)>,
    held_back: bool,
    /// Whether it stopped with more to look at: the next pass reads on.
    more: bool,
}

/// A record a sweep pass read as one that may go, decided again under the locks:
/// an audit chunk, or a job's latest snapshot.
#[derive(Debug, Clone)]
struct Candidate {
    /// The chunk's first sequence, or the job's change sequence.
    first: u64,
    /// The chunk's last sequence, or the job's change sequence.
    last: u64,
    /// Events in it.
    count: u64,
    /// What it counts in the account's stored bytes.
    bytes: u64,
    /// When it was stored.
    at: DateTime<Utc>,
    /// The job (jobs only).
    job: Option<String>,
}

/// What a sweep pass read without locks: per source, the records that may go, oldest
/// first, and the record that follows the list (audit: its first sequence and storage
/// time; jobs: its storage time), if any.
#[derive(Default)]
struct Plan {
    audit: Vec<Candidate>,
    audit_next: Option<(u64, DateTime<Utc>)>,
    jobs: Vec<Candidate>,
    jobs_next: Option<DateTime<Utc>>,
    /// The account's newest audit chunk and newest job change when read: the quota
    /// never drops them, so a quota below one request's size (or one large job
    /// snapshot) still lets the newest through, over the quota by that much.
    newest_audit: Option<u64>,
    newest_job: Option<u64>,
}

/// Makes siemsync's notice to an account from what the quota dropped, and per
/// integration what it lost.
pub type NoticeOf<'a> = &'a dyn Fn(&QuotaDrops, &[(Uuid, Gap)]) -> AuditEvent;

/// Lists an account's readers of a source (its integrations that want it, with their
/// checkpoints).
pub type SourceReaders<'a> = &'a dyn Fn(Source) -> Result<Vec<Reader>, StoreError>;

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

    /// The ranges `account`'s posts in flight carry now, per source.
    fn of(&self, account: &AccountId) -> Vec<(Source, u64, u64)> {
        self.claims
            .values()
            .filter(|c| c.account == *account)
            .map(|c| (c.source, c.first, c.last))
            .collect()
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

/// What one pass's write decided, as it goes.
#[derive(Default)]
struct Decision {
    audit_readers: Vec<Reader>,
    job_readers: Vec<Reader>,
    /// The account's stored bytes before the pass.
    stored: u64,
    /// Of those, what the pass removes.
    freed: u64,
    /// The quota floor, raised by what the quota drops.
    floor: u64,
    notice: PendingNotice,
    now: DateTime<Utc>,
    /// Audit chunks removed, by first sequence.
    chunks: Vec<u64>,
    /// Audit events in them.
    deleted: u64,
    /// Job snapshots removed: the job and its change sequence.
    jobs: Vec<(String, u64)>,
    audit_losses: Losses,
    job_losses: Losses,
    drops: Option<QuotaDrops>,
    /// Id records before this sequence have lost their chunk.
    kept_from: u64,
    held_back: bool,
    /// The bytes of the chunks posts hold that the quota would have dropped.
    held_bytes: u64,
    more: bool,
}

/// What a pass's write decides with: the account, and under the locks the posts in
/// flight and the events tree.
struct Under<'a> {
    account: &'a AccountId,
    flight: &'a InFlight,
    events: &'a sled::Tree,
}

impl Under<'_> {
    /// Whether the chunk is still stored (only a sweep removes chunks, and sweeps
    /// write under the ingest lock, which the caller holds).
    fn present(&self, c: &Candidate) -> Result<bool, StoreError> {
        Ok(self
            .events
            .contains_key(keys::with_seq(keys::AUDIT, self.account, c.first))?)
    }

    fn holds(&self, source: Source, c: &Candidate) -> bool {
        self.flight.holds(self.account, source, c.first, c.last)
    }
}

impl Decision {
    /// What every reader delivered, or what outlived the retention, goes first,
    /// whatever the quota (both are true of a prefix of the log). Returns how many
    /// of the listed chunks it looked at.
    fn retention_prefix(
        &mut self,
        at: &Under,
        plan: &Plan,
        cutoff: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let min_delivered = self.audit_readers.iter().map(|r| r.delivered_up_to).min();
        let mut ia = 0;
        while let Some(c) = plan.audit.get(ia) {
            let held = at.holds(Source::Audit, c);
            if !(min_delivered.is_some_and(|m| c.last <= m) || (c.at < cutoff && !held)) {
                break;
            }
            ia += 1;
            if at.present(c)? {
                self.retention_chunk(c);
            }
        }
        Ok(ia)
    }

    /// Then, while over the quota, the oldest of either source, from the listed chunk
    /// `ia` on; and where the id records of removed chunks end.
    fn over_quota(
        &mut self,
        at: &Under,
        plan: &Plan,
        mut ia: usize,
        quota: u64,
    ) -> Result<(), StoreError> {
        let (mut ij, mut audit_done, mut jobs_done) = (0, false, false);
        loop {
            let over = self.stored.saturating_sub(self.freed) > quota;
            let below_floor =
                !audit_done && plan.audit.get(ia).is_some_and(|c| c.last < self.floor);
            if !over && !below_floor {
                break;
            }
            let a_at = plan.audit.get(ia).map(|c| c.at);
            let a_at = a_at
                .or(plan.audit_next.map(|n| n.1))
                .filter(|_| !audit_done);
            let j_at = plan.jobs.get(ij).map(|c| c.at);
            let j_at = j_at.or(plan.jobs_next).filter(|_| !jobs_done);
            let audit_turn = match (a_at, j_at) {
                (None, None) => break,
                (Some(a), Some(j)) => a <= j || below_floor,
                (a, _) => a.is_some(),
            };
            // The turn of a record the read did not list: it may be older than the
            // other source's next, so the next pass reads on.
            let listed = if audit_turn {
                plan.audit.get(ia)
            } else {
                plan.jobs.get(ij)
            };
            let Some(c) = listed else {
                self.more = true;
                break;
            };
            if audit_turn {
                if plan.newest_audit.is_some_and(|n| c.first >= n) {
                    audit_done = true;
                    continue;
                }
                // A post may carry more than the quota (a large batch retried against
                // a failing Splunk): dropping what follows it then would leave little
                // but that post's old events. Half the quota stays for newer ones; past
                // that the sweep waits for the post to end, and goes on oldest first.
                if self.held_bytes > quota / 2 && c.last >= self.floor {
                    audit_done = true;
                    continue;
                }
                ia += 1;
                self.quota_audit(at, c)?;
            } else {
                if plan.newest_job.is_some_and(|n| c.first >= n) {
                    jobs_done = true;
                    continue;
                }
                ij += 1;
                self.quota_job_if_same(at, c)?;
            }
        }
        // Everything listed went, and the log goes on: the next pass reads on.
        if ia >= plan.audit.len() && plan.audit_next.is_some() && self.deleted > 0 {
            self.more = true;
        }
        for c in &plan.audit[ia..] {
            self.kept_from = self.kept_from.min(c.first);
        }
        if let Some((first, _)) = plan.audit_next {
            self.kept_from = self.kept_from.min(first);
        }
        Ok(())
    }

    /// The audit chunk `c`, over the quota or below its floor, goes unless a post
    /// holds it.
    fn quota_audit(&mut self, at: &Under, c: &Candidate) -> Result<(), StoreError> {
        if !at.present(c)? {
            return Ok(());
        }
        if at.holds(Source::Audit, c) {
            // A slow Splunk has a post out nearly all the time, on the oldest
            // events: stopping here would keep the account over its quota for
            // as long. Asking for a sweep when the claim goes would not help
            // either (the next post claims the next oldest at once). So what
            // follows goes instead, and this chunk, below the floor now, goes
            // once the post is over if it was not delivered. Exact either way:
            // the post's events are not counted (held), what follows is counted
            // for the readers that had not delivered it, under this lock, and
            // a post of it claimed later finds it gone (`audit_gone`).
            self.kept_from = self.kept_from.min(c.first);
            self.held_back = true;
            self.held_bytes += c.bytes;
            return Ok(());
        }
        self.quota_chunk(c);
        Ok(())
    }

    /// The job snapshot `c`, over the quota, goes unless a post holds it or a newer
    /// snapshot replaced it since the read (that one is newer).
    fn quota_job_if_same(&mut self, at: &Under, c: &Candidate) -> Result<(), StoreError> {
        let key = keys::with_name(keys::JOB, at.account, c.job.as_deref().unwrap_or(""));
        let Some(v) = at.events.get(&key)? else {
            return Ok(());
        };
        let job: StoredJob = decode(&key, &v)?;
        if job.change_seq != c.first {
            return Ok(());
        }
        if at.holds(Source::Jobs, c) {
            self.held_back = true;
            return Ok(());
        }
        self.quota_job(c, v.len() as u64);
        Ok(())
    }

    fn remove_chunk(&mut self, c: &Candidate) {
        self.chunks.push(c.first);
        self.deleted += c.count;
        self.freed += c.bytes;
    }

    /// A chunk every reader delivered, or that outlived the retention.
    fn retention_chunk(&mut self, c: &Candidate) {
        for seq in c.first..=c.last {
            self.audit_losses
                .note(&self.audit_readers, seq, c.at, GapReason::Retention);
        }
        // A notice of ours that went this way was delivered, or outlived the retention.
        self.notice.told.retain(|t| t.seq != c.first);
        self.remove_chunk(c);
    }

    /// A chunk dropped for the quota.
    fn quota_chunk(&mut self, c: &Candidate) {
        self.floor = self.floor.max(c.last + 1);
        self.remove_chunk(c);
        // One of our own notices: not a lost event of the customer's; what it told is
        // owed again, and the next notice tells it.
        if let Some(i) = self.notice.told.iter().position(|t| t.seq == c.first) {
            let told = self.notice.told.remove(i);
            self.notice.owe(told.drops, told.gaps);
            self.notice.retell = true;
            return;
        }
        for seq in c.first..=c.last {
            self.audit_losses
                .note(&self.audit_readers, seq, c.at, GapReason::BacklogQuota);
        }
        let d = QuotaDrops::one(c.count, 0, c.at, self.now);
        self.drops = Some(QuotaDrops::merged(self.drops, d));
    }

    /// A job snapshot dropped for the quota. A finished one leaves no record of its
    /// end behind (as retention's do): that record is outside the quota, and a flood
    /// of ever-new jobs must not grow it; a late retry of the job is stored anew.
    fn quota_job(&mut self, c: &Candidate, bytes: u64) {
        self.job_losses
            .note(&self.job_readers, c.first, c.at, GapReason::BacklogQuota);
        self.jobs.push((c.job.clone().unwrap_or_default(), c.first));
        self.freed += bytes;
        let d = QuotaDrops::one(0, 1, c.at, self.now);
        self.drops = Some(QuotaDrops::merged(self.drops, d));
    }
}

/// Lists an account's readers of one source (its integrations that want it, with
/// their checkpoints). Called by the sweep while no post can commit unseen.
pub type Readers<'a> = &'a dyn Fn() -> Result<Vec<Reader>, StoreError>;

/// Which of `seqs` (ascending) no chunk of the account holds any more. The quota can
/// leave a hole after a chunk a post held (see `sweep_pass_write`), so each is
/// looked up: an event is either in a chunk, to be posted, or counted in the gap.
fn audit_gone(
    tree: &sled::Tree,
    account: &AccountId,
    seqs: &[u64],
) -> Result<Vec<bool>, StoreError> {
    let prefix = keys::account_prefix(keys::AUDIT, account);
    let mut held: Option<(u64, u64)> = None;
    let mut out = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        if !held.is_some_and(|(f, l)| f <= seq && seq <= l) {
            held = match tree
                .range(prefix.clone()..=keys::with_seq(keys::AUDIT, account, seq))
                .next_back()
            {
                Some(kv) => {
                    let (k, v) = kv?;
                    let c = super::chunk::Chunk::parse(&k, &v)?;
                    Some((c.first, c.last()))
                }
                None => None,
            };
        }
        out.push(!held.is_some_and(|(f, l)| f <= seq && seq <= l));
    }
    Ok(out)
}

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
            Source::Audit => audit_gone(&tree, account, seqs)?,
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
        let by_source = |source| match source {
            Source::Audit => readers(),
            Source::Jobs => Ok(Vec::new()),
        };
        Ok(self
            .sweep_within(account, cutoff, u64::MAX, &by_source, &|| false)?
            .deleted)
    }

    /// [`Store::sweep_audit`], and also: while the account's stored bytes (audit
    /// chunks and job snapshots) are over `quota`, its oldest records go, audit chunks
    /// and job snapshots in the order they were stored, each reader that had not
    /// delivered them getting a gap for the backlog quota. A record a post carries
    /// right now is skipped, and what follows it goes instead; a chunk so kept goes
    /// once the post is over (it is older than what the quota dropped).
    /// Stops between two batches once `stop` says so (the shutdown): each batch is a
    /// transaction of its own, so what it removed stays removed, and the next sweep
    /// goes on with the rest.
    pub fn sweep_within(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: SourceReaders,
        stop: &dyn Fn() -> bool,
    ) -> Result<AuditSweep, StoreError> {
        let mut out = AuditSweep::default();
        // Passes in a row that removed nothing: one such pass may ask for another
        // read (an ingest since its read took the account over), never a loop.
        let mut idle = 0;
        loop {
            // The heads when this pass read: an ingest since then explains an excess
            // the pass could not see, so no recount is needed (the ingest asked for a
            // sweep of its own).
            let heads_at_read = self.heads(account)?;
            let plan = self.sweep_pass_read(account, cutoff, quota, readers)?;
            self.before_sweep_write();
            let pass = self.sweep_pass_write(account, cutoff, quota, readers, plan)?;
            out.deleted += pass.deleted;
            out.jobs_deleted += pass.jobs_deleted;
            out.held_back |= pass.held_back;
            out.merge_gaps(pass.gaps);
            if let Some(q) = pass.quota_drops {
                out.quota_drops = Some(QuotaDrops::merged(out.quota_drops, q));
            }
            if pass.deleted + pass.jobs_deleted > 0 {
                self.sweep_batch_done();
                idle = 0;
            } else {
                idle += 1;
            }
            if !pass.more || idle > 1 {
                if out.deleted + out.jobs_deleted == 0 && !out.held_back && quota < u64::MAX {
                    self.recount_if_nothing_may_go(account, quota, heads_at_read)?;
                }
                return Ok(out);
            }
            if stop() {
                out.unfinished = true;
                return Ok(out);
            }
        }
    }

    /// The read of one pass of [`Store::sweep_within`], with no lock held, so that
    /// ingest (every account's) and posts go on meanwhile: the oldest records that
    /// may go as things stand now, up to `CHUNK` events per source. The write decides
    /// again under the locks.
    fn sweep_pass_read(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: SourceReaders,
    ) -> Result<Plan, StoreError> {
        let events = self.events()?;
        let claims = self.in_flight().of(account);
        let held = |source, first, last| {
            claims
                .iter()
                .any(|&(s, f, l)| s == source && f <= last && first <= l)
        };
        let min_delivered = readers(Source::Audit)?
            .iter()
            .map(|r| r.delivered_up_to)
            .min();
        let excess = super::audit::stored_bytes_in(&events, account)?.saturating_sub(quota);
        let floor = quota_floor_in(&events, account)?;
        let batch = self.sweep_batch_events(CHUNK);
        let newest = |kind| -> Result<Option<u64>, StoreError> {
            match events
                .scan_prefix(keys::account_prefix(kind, account))
                .next_back()
            {
                Some(kv) => Ok(Some(keys::seq_of(&kv?.0))),
                None => Ok(None),
            }
        };
        let mut plan = Plan {
            newest_audit: newest(keys::AUDIT)?,
            newest_job: newest(keys::JOB_CHANGE)?,
            ..Plan::default()
        };
        let (mut n, mut freed) = (0, 0u64);
        self.audit_chunks(account, 0, |chunk| {
            let goes = min_delivered.is_some_and(|m| chunk.last() <= m)
                || chunk.ingested_at < cutoff
                || chunk.last() < floor
                || freed < excess;
            if !goes || n >= batch {
                plan.audit_next = Some((chunk.first, chunk.ingested_at));
                return Ok(std::ops::ControlFlow::Break(()));
            }
            // Chunks posts hold do not count toward the batch: the write skips them,
            // and posts holding a batch's worth of the oldest would otherwise leave it
            // nothing to drop, pass after pass, over the quota.
            if !held(Source::Audit, chunk.first, chunk.last()) {
                freed += chunk.bytes();
                n += chunk.count;
            }
            plan.audit.push(Candidate {
                first: chunk.first,
                last: chunk.last(),
                count: chunk.count,
                bytes: chunk.bytes(),
                at: chunk.ingested_at,
                job: None,
            });
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        // Job snapshots, oldest change first, as many as the excess alone would take;
        // with no excess, none, but the oldest's storage time still: an ingest before
        // the write may take the account over, and then that snapshot may be older
        // than the next audit chunk (the write then leaves it to the next pass).
        let (mut freed, mut listed) = (0u64, 0u64);
        for kv in events.scan_prefix(keys::account_prefix(keys::JOB_CHANGE, account)) {
            let (k, name) = kv?;
            let name = String::from_utf8_lossy(&name).into_owned();
            let job_key = keys::with_name(keys::JOB, account, &name);
            let Some(v) = events.get(&job_key)? else {
                continue;
            };
            let job: StoredJob = decode(&job_key, &v)?;
            if job.change_seq != keys::seq_of(&k) {
                continue;
            }
            if freed >= excess || listed >= batch {
                plan.jobs_next = Some(job.snapshot.ingested_at);
                break;
            }
            // As for audit chunks: held snapshots do not count toward the batch.
            if !held(Source::Jobs, job.change_seq, job.change_seq) {
                freed += v.len() as u64;
                listed += 1;
            }
            plan.jobs.push(Candidate {
                first: job.change_seq,
                last: job.change_seq,
                count: 1,
                bytes: v.len() as u64,
                at: job.snapshot.ingested_at,
                job: Some(name),
            });
        }
        Ok(plan)
    }

    /// The write of one pass of [`Store::sweep_within`]: decides again, under the
    /// locks, which of what the read found goes, and removes it in one transaction
    /// with its gaps, the account's stored bytes and the notice it owes.
    fn sweep_pass_write(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: SourceReaders,
        plan: Plan,
    ) -> Result<Pass, StoreError> {
        // The ingest lock keeps the account's stored bytes from changing between the
        // read here and the write below (ingest adds to them under it), and keeps two
        // sweeps of one account (the periodic one, one an ingest asked for) apart:
        // only another sweep removes chunks, so what is found here stays until the
        // write. Taken before the in-flight lock, as `sweep_jobs` does, and only for
        // this decision and write, not for the read.
        let _writer = self.writer();
        // Held from reading the checkpoints to the write: a post that commits
        // meanwhile either committed before (its checkpoint is read) or still
        // holds its claim (its events stay).
        let flight = self.in_flight();
        let events = self.events()?;
        let mut d = Decision {
            audit_readers: readers(Source::Audit)?,
            job_readers: if plan.jobs.is_empty() {
                Vec::new()
            } else {
                readers(Source::Jobs)?
            },
            stored: super::audit::stored_bytes_in(&events, account)?,
            floor: quota_floor_in(&events, account)?,
            notice: pending_notice_in(&events, account)?,
            now: Utc::now(),
            kept_from: u64::MAX,
            ..Decision::default()
        };
        let (floor_before, notice_before) = (d.floor, d.notice.clone());
        let at = Under {
            account,
            flight: &flight,
            events: &events,
        };
        let ia = d.retention_prefix(&at, &plan, cutoff)?;
        d.over_quota(&at, &plan, ia, quota)?;
        let ids = self.expired_id_records(account, d.kept_from)?;
        if d.chunks.is_empty() && d.jobs.is_empty() && ids.is_empty() {
            // Nothing to remove, but the write may have found the account over its
            // quota by more than was listed (an ingest since the read): the next pass
            // reads on.
            return Ok(Pass {
                held_back: d.held_back,
                more: d.more,
                ..Pass::default()
            });
        }
        if let Some(q) = d.drops {
            let mut gaps = d.audit_losses.gaps(Source::Audit, d.now);
            gaps.extend(d.job_losses.gaps(Source::Jobs, d.now));
            d.notice.owe(q, gaps);
        }
        let changed = (d.floor != floor_before, d.notice != notice_before);
        self.write_pass(account, &events, &d, &ids, changed)?;
        drop(flight);
        d.audit_losses.log(account, Source::Audit);
        d.job_losses.log(account, Source::Jobs);
        if let Some(q) = d.drops {
            log::warn!(
                "account {account}: {} audit events and {} job snapshots stored {} to {} dropped, oldest first: its stored events were over its backlog quota of {quota} bytes",
                q.events,
                q.jobs,
                q.from.to_rfc3339(),
                q.to.to_rfc3339()
            );
        }
        let mut gaps = d.audit_losses.gaps(Source::Audit, d.now);
        gaps.extend(d.job_losses.gaps(Source::Jobs, d.now));
        Ok(Pass {
            deleted: d.deleted,
            jobs_deleted: d.jobs.len() as u64,
            quota_drops: d.drops,
            gaps,
            held_back: d.held_back,
            more: d.more,
        })
    }

    /// The transaction of one sweep pass: the records that go, the account's stored
    /// bytes, its quota floor and the notice it owes (when they changed), what the
    /// quota dropped, and the readers' gaps — all or nothing.
    fn write_pass(
        &self,
        account: &AccountId,
        events: &sled::Tree,
        d: &Decision,
        ids: &[Vec<u8>],
        (floor_changed, notice_changed): (bool, bool),
    ) -> Result<(), StoreError> {
        let registry = self.registry()?;
        (events, &*registry).transaction(|(e, r)| {
            for first in &d.chunks {
                e.remove(keys::with_seq(keys::AUDIT, account, *first))?;
            }
            for (job, seq) in &d.jobs {
                e.remove(keys::with_name(keys::JOB, account, job))?;
                e.remove(keys::with_seq(keys::JOB_CHANGE, account, *seq))?;
                e.remove(keys::with_name(keys::JOB_RUNNING, account, job))?;
            }
            for k in ids {
                e.remove(k.as_slice())?;
            }
            if d.freed > 0 {
                e.insert(
                    keys::account_prefix(keys::STORED_BYTES, account),
                    &d.stored.saturating_sub(d.freed).to_be_bytes(),
                )?;
            }
            if floor_changed {
                e.insert(
                    keys::account_prefix(keys::QUOTA_FLOOR, account),
                    &d.floor.to_be_bytes(),
                )?;
            }
            if notice_changed {
                e.insert(
                    keys::account_prefix(keys::QUOTA_NOTICE, account),
                    encode(&d.notice),
                )?;
            }
            if let Some(q) = d.drops {
                let key = keys::quota_drops(account);
                let old = match r.get(&key)? {
                    Some(v) => Some(decode(&key, &v).map_err(Abort::Abort)?),
                    None => None,
                };
                r.insert(key, encode(&QuotaDrops::merged(old, q)))?;
            }
            d.audit_losses.record(r, account, Source::Audit, d.now)?;
            d.job_losses.record(r, account, Source::Jobs, d.now)
        })?;
        Ok(())
    }

    /// Writes siemsync's own notice of what the backlog quota dropped into the
    /// account's stream, when something is owed and `due` (given when the last notice
    /// was written, unless the quota dropped that one undelivered) says so; `notice`
    /// makes the event from what is owed. The notice and the cleared debt are one
    /// write. Answers what it told.
    pub fn tell_quota_drops(
        &self,
        account: &AccountId,
        due: &dyn Fn(Option<DateTime<Utc>>) -> bool,
        notice: NoticeOf,
    ) -> Result<Option<QuotaDrops>, StoreError> {
        let _writer = self.writer();
        let mut pending = pending_notice_in(&*self.events()?, account)?;
        let Some(drops) = pending.drops else {
            return Ok(None);
        };
        if !due(pending.last_notice_at.filter(|_| !pending.retell)) {
            return Ok(None);
        }
        let event = notice(&drops, &pending.gaps);
        let gaps = std::mem::take(&mut pending.gaps);
        pending.drops = None;
        pending.retell = false;
        pending.last_notice_at = Some(Utc::now());
        let key = keys::account_prefix(keys::QUOTA_NOTICE, account);
        self.append_audit_locked(account, &[event.into()], |batch, seq| {
            pending.told.push(Told { seq, drops, gaps });
            batch.insert(key, encode(&pending));
            Ok(())
        })?;
        Ok(Some(drops))
    }

    /// Accounts the backlog quota dropped events of since they were last told.
    pub fn accounts_owed_a_notice(&self) -> Result<Vec<AccountId>, StoreError> {
        let events = self.events()?;
        let mut out = Vec::new();
        for kv in events.scan_prefix([keys::QUOTA_NOTICE]) {
            let (k, v) = kv?;
            let notice: PendingNotice = decode(&k, &v)?;
            let name = String::from_utf8_lossy(&k[1..k.len().saturating_sub(1)]).into_owned();
            if let (Some(_), Ok(a)) = (notice.drops, AccountId::parse(&name)) {
                out.push(a);
            }
        }
        Ok(out)
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
        let mut freed = 0u64;
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
                freed += v.len() as u64;
                gone.push((k, job));
            }
        }
        if gone.is_empty() && expired.is_empty() {
            return Ok(0);
        }
        let registry = self.registry()?;
        let now = Utc::now();
        let stored = super::audit::stored_bytes_in(&events, account)?;
        (&*events, &*registry).transaction(|(e, r)| {
            if freed > 0 {
                e.insert(
                    keys::account_prefix(keys::STORED_BYTES, account),
                    &stored.saturating_sub(freed).to_be_bytes(),
                )?;
            }
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

    /// The account's stored bytes less its newest audit chunk and newest job
    /// snapshot, which the quota never drops: what a quota sweep could still remove.
    /// Over the quota, a sweep has work left; else only the next ingest can give it some.
    pub fn quota_droppable_bytes(&self, account: &AccountId) -> Result<u64, StoreError> {
        let events = self.events()?;
        let stored = super::audit::stored_bytes_in(&events, account)?;
        let newest_chunk = match events
            .scan_prefix(keys::account_prefix(keys::AUDIT, account))
            .next_back()
        {
            Some(kv) => kv?.1.len() as u64,
            None => 0,
        };
        let newest_job = match events
            .scan_prefix(keys::account_prefix(keys::JOB_CHANGE, account))
            .next_back()
        {
            Some(kv) => {
                let name = String::from_utf8_lossy(&kv?.1).into_owned();
                match events.get(keys::with_name(keys::JOB, account, &name))? {
                    Some(v) => v.len() as u64,
                    None => 0,
                }
            }
            None => 0,
        };
        Ok(stored.saturating_sub(newest_chunk + newest_job))
    }

    /// After a sweep that dropped nothing and was held back by no post: if the
    /// account's count still says it holds more than its newest chunk and newest job
    /// snapshot over the quota, the count is wrong (the sweep found nothing that may
    /// go), and would have every later sweep look again for nothing. Counts the
    /// account's records (without the lock: a few, as nothing may go) and writes the
    /// count if no write changed the account meanwhile.
    ///
    /// "No write" is judged by the count *and* the heads: the scan is no snapshot,
    /// and writes whose sizes cancel out (a chunk added, a job snapshot shrunk by as
    /// much) leave the count as it was while the scan saw only one of them. Every
    /// ingest and job write moves a head; sweeps run on this thread. When the heads
    /// moved since the last pass read, an ingest explains the excess and asked for a
    /// sweep of its own, so there is nothing to recount.
    fn recount_if_nothing_may_go(
        &self,
        account: &AccountId,
        quota: u64,
        heads_at_read: super::Heads,
    ) -> Result<(), StoreError> {
        let events = self.events()?;
        let counted = super::audit::stored_bytes_in(&events, account)?;
        let heads = super::heads::heads_in(&events, account)?;
        if heads != heads_at_read || self.quota_droppable_bytes(account)? <= quota {
            return Ok(());
        }
        let mut scanned = 0u64;
        for kind in [keys::AUDIT, keys::JOB] {
            for v in events
                .scan_prefix(keys::account_prefix(kind, account))
                .values()
            {
                scanned += v?.len() as u64;
            }
        }
        let _writer = self.writer();
        if scanned == counted
            || super::audit::stored_bytes_in(&events, account)? != counted
            || super::heads::heads_in(&events, account)? != heads
        {
            return Ok(());
        }
        events.insert(
            keys::account_prefix(keys::STORED_BYTES, account),
            &scanned.to_be_bytes(),
        )?;
        log::warn!(
            "account {account}: its stored bytes were counted as {counted}, but its records take {scanned}: corrected (the backlog quota is enforced on this count)"
        );
        Ok(())
    }

    /// Asks the sweep to see to `account` now (see [`SweepDue::ask`]).
    pub fn ask_sweep(&self, account: &AccountId) {
        self.inner.sweep_due.ask(account)
    }

    /// The accounts the sweep was asked to see to since it last looked.
    pub fn take_sweep_due(&self) -> Vec<AccountId> {
        self.inner.sweep_due.take()
    }

    /// Resolves when [`Store::ask_sweep`] was called (at once if it was since the last wait).
    pub async fn sweep_asked(&self) {
        self.inner.sweep_due.asked().await
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
    use crate::store::testing::sized_audit as audit;

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
        s.sweep_within(&a, past, 50_000, &|_| Ok(vec![]), &|| false)
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
        let swept = s
            .sweep_within(&a, past, quota, &|_| readers(), &|| false)
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
            .sweep_within(&a, past, quota, &|_| readers(), &|| false)
            .unwrap();
        assert_eq!(again.deleted, 0);
        // The other account is untouched.
        assert_eq!(s.stored_bytes(&other).unwrap(), other_bytes);
        assert_eq!(s.quota_drops(&other).unwrap(), None);
    }
}

#[cfg(test)]
mod quota_fix_tests {
    use super::*;
    use crate::model::{Integration, JobSnapshot};
    use crate::store::testing::{integration, sized_audit as audit};
    use serde_json::json;
    use std::time::{Duration, Instant};

    fn running_jobs(tag: &str, n: usize, progress: f64) -> Vec<JobSnapshot> {
        (0..n)
            .map(|i| {
                JobSnapshot::from_json(
                    &json!({"job": format!("{tag}-{i}"), "type": "backup", "status": "in progress",
                            "progress": progress, "description": "d".repeat(200)}),
                    0,
                    Utc::now(),
                )
                .unwrap()
            })
            .collect()
    }

    fn kept_audit(s: &Store, a: &AccountId) -> Vec<u64> {
        let mut kept = Vec::new();
        s.audit_after(a, 0, |ev| {
            kept.push(ev.seq);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        kept
    }

    fn past() -> DateTime<Utc> {
        Utc::now() - chrono::Duration::days(1)
    }

    /// An account with an audit integration and 1,000 stored events (10 ingests of
    /// 100), and a quota of a third of what it stores.
    fn over_a_third_of_its_quota(dir: &std::path::Path) -> (Store, AccountId, Integration, u64) {
        let s = Store::open(dir).unwrap();
        let a = AccountId::parse("acme").unwrap();
        let it = integration(&s, &a, &["audit"]);
        for i in 0..10 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        let quota = s.stored_bytes(&a).unwrap() / 3;
        (s, a, it, quota)
    }

    /// The integration as the audit sweep's one reader, at its checkpoint.
    fn reader(s: &Store, id: Uuid) -> Result<Vec<Reader>, StoreError> {
        Ok(vec![Reader {
            integration: id,
            delivered_up_to: s.checkpoint(&id)?.audit_seq,
        }])
    }

    #[test]
    fn a_post_in_flight_on_the_oldest_events_does_not_keep_the_account_over_its_quota() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, it, quota) = over_a_third_of_its_quota(dir.path());
        let readers = || reader(&s, it.id);
        // A slow Splunk: the post of the oldest chunk is in flight.
        let (_, claim) = s.claim_for_post(&a, Source::Audit, &[1, 2]).unwrap();
        let swept = s
            .sweep_within(&a, past(), quota, &|_| readers(), &|| false)
            .unwrap();
        assert!(
            s.stored_bytes(&a).unwrap() <= quota,
            "still over its quota while a post is in flight"
        );
        let dropped = swept.quota_drops.unwrap().events;
        // The chunk in flight (1..=h) stays; the ones after it went, oldest first.
        let kept = kept_audit(&s, &a);
        let h = kept.iter().zip(1..).take_while(|(k, n)| **k == *n).count() as u64;
        assert!((2..100).contains(&h), "{kept:?}");
        assert_eq!(kept[h as usize], h + 1 + dropped);
        assert_eq!(kept.len() as u64 + dropped, 1000);
        assert_eq!(s.gaps(&it.id).unwrap()[0].count, dropped);
        // A batch still holding events of the hole finds them gone (they are in the gap).
        let hole = h + dropped;
        let (gone, other) = s
            .claim_for_post(&a, Source::Audit, &[h, h + 1, hole, hole + 1])
            .unwrap();
        assert_eq!(gone, vec![false, true, true, false]);
        drop(other);
        // The post failed: its chunk, older than what the quota dropped, goes next.
        drop(claim);
        let again = s
            .sweep_within(&a, past(), quota, &|_| readers(), &|| false)
            .unwrap();
        assert_eq!(again.quota_drops.unwrap().events, h);
        let kept = kept_audit(&s, &a);
        assert_eq!(kept, (hole + 1..=1000).collect::<Vec<_>>(), "no hole stays");
        let gaps = s.gaps(&it.id).unwrap();
        assert_eq!(gaps[0].count, dropped + h);
        assert_eq!(gaps[0].count + kept.len() as u64, 1000, "each event once");
    }

    #[test]
    fn a_post_carrying_more_than_half_the_quota_is_waited_for_not_dropped_around() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, it, quota) = over_a_third_of_its_quota(dir.path());
        let readers = || reader(&s, it.id);
        // A large batch retried against a failing Splunk: 600 events, over the quota.
        let seqs: Vec<u64> = (1..=600).collect();
        let (_, claim) = s.claim_for_post(&a, Source::Audit, &seqs).unwrap();
        let held = s
            .sweep_within(&a, past(), quota, &|_| readers(), &|| false)
            .unwrap();
        assert_eq!(held.deleted, 0, "the newest went for an old post");
        assert!(held.held_back);
        // The post failed: the oldest go first, the newest stay, with no hole.
        drop(claim);
        let swept = s
            .sweep_within(&a, past(), quota, &|_| readers(), &|| false)
            .unwrap();
        let dropped = swept.quota_drops.unwrap().events;
        assert_eq!(kept_audit(&s, &a), (dropped + 1..=1000).collect::<Vec<_>>());
        assert!(s.stored_bytes(&a).unwrap() <= quota);
    }

    #[test]
    fn a_quota_below_one_request_never_drops_the_newest_events() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        for i in 0..3 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        s.put_jobs(&a, running_jobs("j", 3, 0.5)).unwrap();
        s.sweep_within(&a, past(), 1000, &|_| Ok(vec![]), &|| false)
            .unwrap();
        let kept = kept_audit(&s, &a);
        assert_eq!(kept.last(), Some(&300), "the newest event was dropped");
        assert!(kept.len() < 100, "{kept:?}");
        let mut jobs = Vec::new();
        s.jobs_changed_after(&a, 0, |j| {
            jobs.push(j.snapshot.job);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            jobs,
            vec!["j-2".to_string()],
            "the newest job snapshot stays"
        );
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn another_accounts_ingest_goes_through_while_a_quota_sweep_reads() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (a, b) = (
            AccountId::parse("acme").unwrap(),
            AccountId::parse("other").unwrap(),
        );
        for i in 0..10 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        let quota = s.stored_bytes(&a).unwrap() / 3;
        s.hold_sweep_writes(true);
        let sweeper = {
            let (s, a) = (s.clone(), a.clone());
            std::thread::spawn(move || {
                s.sweep_within(&a, past(), quota, &|_| Ok(vec![]), &|| false)
                    .map(|swept| swept.deleted)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.sweep_writes_held() == 0 {
            assert!(Instant::now() < deadline, "the sweep never read");
            std::thread::sleep(Duration::from_millis(5));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (s, b) = (s.clone(), b.clone());
            std::thread::spawn(move || tx.send(s.append_audit(&b, audit("o", 10)).is_ok()));
        }
        let ingested = rx.recv_timeout(Duration::from_secs(5));
        s.hold_sweep_writes(false);
        assert_eq!(
            ingested,
            Ok(true),
            "B's ingest waited for A's sweep to finish reading"
        );
        assert!(sweeper.join().unwrap().unwrap() > 0);
        assert!(s.stored_bytes(&a).unwrap() <= quota);
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn posts_holding_a_whole_sweep_batch_of_the_oldest_events_do_not_keep_the_account_over_its_quota(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (s, a, it, quota) = over_a_third_of_its_quota(dir.path());
        s.set_pace(crate::store::Pace {
            sweep_batch_events: Some(50),
            ..Default::default()
        });
        // Posts in flight hold the oldest 100 events: two sweep batches (a tenth of
        // what is stored, under half the quota, so the sweep drops around them).
        let seqs: Vec<u64> = (1..=100).collect();
        let (_, claim) = s.claim_for_post(&a, Source::Audit, &seqs).unwrap();
        let swept = s
            .sweep_within(&a, past(), quota, &|_| reader(&s, it.id), &|| false)
            .unwrap();
        assert!(
            s.stored_bytes(&a).unwrap() <= quota,
            "still over its quota: {} > {quota}",
            s.stored_bytes(&a).unwrap()
        );
        assert!(swept.held_back);
        let kept = kept_audit(&s, &a);
        assert_eq!(kept[..100], seqs[..], "the events in flight stay");
        assert_eq!(kept.last(), Some(&1000));
        drop(claim);
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn an_ingest_between_the_read_and_the_write_drops_older_job_snapshots_before_newer_audit_events(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        s.put_jobs(&a, running_jobs("old", 200, 0.5)).unwrap();
        for i in 0..10 {
            s.append_audit(&a, audit(&format!("b{i}"), 100)).unwrap();
        }
        // Exactly at its quota when the sweep reads: nothing to drop yet.
        let quota = s.stored_bytes(&a).unwrap();
        s.hold_sweep_writes(true);
        let sweeper = {
            let (s, a) = (s.clone(), a.clone());
            std::thread::spawn(move || {
                s.sweep_within(&a, past(), quota, &|_| Ok(vec![]), &|| false)
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.sweep_writes_held() == 0 {
            assert!(Instant::now() < deadline, "the sweep never read");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Then an ingest takes it over, by less than the old jobs take.
        s.append_audit(&a, audit("late", 20)).unwrap();
        s.hold_sweep_writes(false);
        let swept = sweeper.join().unwrap().unwrap();
        assert!(s.stored_bytes(&a).unwrap() <= quota, "left over its quota");
        assert_eq!(
            swept.deleted, 0,
            "newer audit events went before older jobs"
        );
        assert!(swept.jobs_deleted > 0);
        assert_eq!(kept_audit(&s, &a), (1..=1020).collect::<Vec<_>>());
    }

    #[test]
    fn a_sweep_that_finds_nothing_to_drop_over_the_quota_counts_the_stored_bytes_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        s.append_audit(&a, audit("b", 10)).unwrap();
        // Its newest chunk and newest job snapshot: nothing the quota may drop.
        s.put_jobs(&a, running_jobs("j", 1, 0.5)).unwrap();
        let right = s.stored_bytes(&a).unwrap();
        // A count gone wrong (a bug, or a crash of an older version): far over.
        let key = keys::account_prefix(keys::STORED_BYTES, &a);
        s.events()
            .unwrap()
            .insert(&key, &(right + 1_000_000).to_be_bytes())
            .unwrap();
        let swept = s
            .sweep_within(&a, past(), 70_000, &|_| Ok(vec![]), &|| false)
            .unwrap();
        assert_eq!(swept.deleted + swept.jobs_deleted, 0, "nothing may go");
        assert_eq!(
            s.stored_bytes(&a).unwrap(),
            right,
            "the count was not corrected"
        );
        assert!(s.quota_droppable_bytes(&a).unwrap() <= 70_000);
    }

    #[test]
    fn job_snapshots_count_in_the_quota_and_the_oldest_undelivered_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        let it = integration(&s, &a, &["audit", "jobs"]);
        // A platform posting running snapshots under ever-new job ids.
        for i in 0..10 {
            s.put_jobs(&a, running_jobs(&format!("j{i}"), 20, 0.5))
                .unwrap();
        }
        // A newer snapshot of an old job replaces it: counted by its difference.
        s.put_jobs(&a, running_jobs("j0", 1, 0.75)).unwrap();
        let job_bytes = |s: &Store| -> u64 {
            s.events()
                .unwrap()
                .scan_prefix(keys::account_prefix(keys::JOB, &a))
                .values()
                .map(|v| v.unwrap().len() as u64)
                .sum()
        };
        assert!(job_bytes(&s) > 40_000);
        assert_eq!(
            s.stored_bytes(&a).unwrap(),
            job_bytes(&s),
            "job bytes are counted"
        );
        let quota = s.stored_bytes(&a).unwrap() / 3;
        let swept = s
            .sweep_within(
                &a,
                past(),
                quota,
                &|source| {
                    let cp = s.checkpoint(&it.id)?;
                    Ok(vec![Reader {
                        integration: it.id,
                        delivered_up_to: match source {
                            Source::Audit => cp.audit_seq,
                            Source::Jobs => cp.job_seq,
                        },
                    }])
                },
                &|| false,
            )
            .unwrap();
        assert!(s.stored_bytes(&a).unwrap() <= quota);
        assert_eq!(s.stored_bytes(&a).unwrap(), job_bytes(&s));
        let dropped = swept.quota_drops.unwrap().jobs;
        assert!(dropped > 100, "{dropped}");
        // The oldest changes went; the newest stayed (j0-0 changed last).
        let mut kept = Vec::new();
        s.jobs_changed_after(&a, 0, |j| {
            kept.push(j.change_seq);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(kept.len() as u64 + dropped, 200);
        assert_eq!(kept.last(), Some(&201));
        assert!(kept[0] > dropped, "{kept:?}");
        let gaps = s.gaps(&it.id).unwrap();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert_eq!((gaps[0].source, gaps[0].count), (Source::Jobs, dropped));
        assert_eq!(gaps[0].reason, GapReason::BacklogQuota);
        // A held batch of a dropped snapshot finds it gone.
        let (gone, _c) = s.claim_for_post(&a, Source::Jobs, &[2, 201]).unwrap();
        assert_eq!(gone, vec![true, false]);
    }
}

/// The accounts an ingest took over their backlog quota, for the quota sweep to see
/// to now rather than at its next period, and the wake-up of the sweep waiting for
/// them: one per store (sled's, or a PostgreSQL node's).
#[derive(Default)]
pub struct SweepDue {
    accounts: std::sync::Mutex<std::collections::BTreeSet<AccountId>>,
    wake: tokio::sync::Notify,
}

impl SweepDue {
    /// Asks for `account`; asking again before the sweep took it asks once.
    pub fn ask(&self, account: &AccountId) {
        let mut due = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if due.insert(account.clone()) {
            self.wake.notify_one();
        }
    }

    /// The accounts asked for since the last take, in name order.
    pub fn take(&self) -> Vec<AccountId> {
        let mut due = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *due).into_iter().collect()
    }

    /// Resolves when an account was asked for (at once if one was since the last wait).
    pub async fn asked(&self) {
        self.wake.notified().await
    }
}
