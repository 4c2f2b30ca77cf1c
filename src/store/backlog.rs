//! What an integration has not delivered yet: the one place the status, the
//! metrics and catch-up progress read a backlog from.

use super::jobs::StoredJob;
use super::{decode, keys, Checkpoint, SledStore as Store, StoreError};
use crate::model::{AccountId, Integration, Source};
use chrono::{DateTime, Utc};
use std::ops::ControlFlow;

/// Undelivered events of one integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Undelivered audit events (0 when the integration does not send them).
    pub audit: u64,
    /// Undelivered job snapshots (0 when the integration does not send them).
    pub jobs: u64,
    /// When the oldest undelivered event was stored.
    pub oldest: Option<DateTime<Utc>>,
}

impl Backlog {
    /// All undelivered events.
    pub fn events(&self) -> u64 {
        self.audit + self.jobs
    }

    /// Undelivered events of `source`.
    pub fn of(&self, source: Source) -> u64 {
        match source {
            Source::Audit => self.audit,
            Source::Jobs => self.jobs,
        }
    }
}

impl Store {
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
        if heads.audit <= after {
            // Caught up (every sync's `backlog_after` that delivered all, every empty
            // tick's progress count): no chunk to read and decode — the count below
            // would be 0 anyway.
            return Ok((0, None));
        }
        let mut first = None;
        self.audit_after(account, after, |ev| {
            first = Some((ev.seq, ev.ingested_at));
            ControlFlow::Break(())
        })?;
        // Sequences are contiguous from the oldest event still kept (older ones may
        // have gone to retention), so the count needs no scan. (While a post holds the
        // oldest chunk, the quota may have dropped what follows it: until that post
        // ends and its chunk goes, the count includes that hole.)
        Ok(match first {
            Some((seq, at)) => ((heads.audit + 1).saturating_sub(seq), Some(at)),
            None => (0, None),
        })
    }

    /// The account's stored bytes less what its readers furthest behind have passed:
    /// the audit chunks up to `min_audit` and the job records whose latest change is
    /// at most `min_jobs` (each the checkpoint of the source's slowest reader; `None`:
    /// the source has no reader, so nothing of it stored was delivered). A running
    /// job's record stays stored after it was delivered, until the job ends, so it
    /// is no backlog. Only the chunks delivered by every reader and not yet swept are
    /// read (a few between two sweeps), and the delivered jobs' records.
    pub fn backlog_bytes(
        &self,
        account: &AccountId,
        min_audit: Option<u64>,
        min_jobs: Option<u64>,
    ) -> Result<u64, StoreError> {
        let stored = self.stored_bytes(account)?;
        let mut delivered = 0;
        if let Some(m) = min_audit {
            self.audit_chunks(account, 0, |c| {
                if c.last() > m {
                    return Ok(ControlFlow::Break(()));
                }
                delivered += c.bytes();
                Ok(ControlFlow::Continue(()))
            })?;
        }
        if let Some(m) = min_jobs {
            delivered += self.delivered_job_bytes(account, m)?;
        }
        Ok(stored.saturating_sub(delivered))
    }

    /// The bytes of the account's job records whose latest change is at most `up_to`.
    fn delivered_job_bytes(&self, account: &AccountId, up_to: u64) -> Result<u64, StoreError> {
        let events = self.events()?;
        let mut bytes = 0;
        let from = keys::account_prefix(keys::JOB_CHANGE, account);
        let to = keys::with_seq(keys::JOB_CHANGE, account, up_to);
        for kv in events.range(from..=to) {
            let (k, name) = kv?;
            let job_key = keys::with_name(keys::JOB, account, &String::from_utf8_lossy(&name));
            let Some(v) = events.get(&job_key)? else {
                continue;
            };
            // An index entry of a change a newer snapshot replaced is not the record's.
            let job: StoredJob = decode(&job_key, &v)?;
            if job.change_seq == keys::seq_of(&k) {
                bytes += v.len() as u64;
            }
        }
        Ok(bytes)
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
