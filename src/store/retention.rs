//! Retention: events are kept until every integration of the account that wants
//! them has delivered them, but no longer than the configured retention. What an
//! integration loses to retention is recorded as a gap, never skipped silently.

use super::events::StoredJob;
use super::{decode, encode, keys, Store, StoreError};
use crate::model::{AccountId, Source};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Events an integration never received because they outlived the retention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    pub source: Source,
    /// When the first and the last of the lost events were stored.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub count: u64,
    pub recorded_at: DateTime<Utc>,
}

/// An integration's position in one source, for the sweep.
#[derive(Debug, Clone, Copy)]
pub struct Reader {
    pub integration: Uuid,
    pub delivered_up_to: u64,
}

fn gap_key(id: &Uuid, source: Source) -> Vec<u8> {
    format!("gap/{id}/{}", source.as_str()).into_bytes()
}

pub fn gaps_prefix(id: &Uuid) -> Vec<u8> {
    format!("gap/{id}/").into_bytes()
}

/// Events deleted per write.
const CHUNK: u64 = 10_000;

/// Per reader: the first and last storage time and the number of events it lost.
#[derive(Default)]
struct Losses(HashMap<Uuid, (DateTime<Utc>, DateTime<Utc>, u64)>);

impl Losses {
    /// An event at `seq`, stored at `at`, is going: every reader not yet past it loses it.
    fn note(&mut self, readers: &[Reader], seq: u64, at: DateTime<Utc>) {
        for r in readers.iter().filter(|r| r.delivered_up_to < seq) {
            let g = self.0.entry(r.integration).or_insert((at, at, 0));
            g.0 = g.0.min(at);
            g.1 = g.1.max(at);
            g.2 += 1;
        }
    }
}

impl Store {
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
    /// that were stored before `cutoff`; records a gap for each reader that had not
    /// delivered an event deleted for age. With no reader, only age counts. Returns
    /// how many events went.
    pub fn sweep_audit(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: &[Reader],
    ) -> Result<u64, StoreError> {
        let min_delivered = readers.iter().map(|r| r.delivered_up_to).min();
        let mut deleted = 0u64;
        let mut gaps = Losses::default();
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0;
            let mut more = false;
            // A chunk's events share one storage time, so it goes whole or stays.
            self.audit_chunks(account, 0, |chunk| {
                let delivered_by_all = min_delivered.is_some_and(|m| chunk.last() <= m);
                if !delivered_by_all && chunk.ingested_at >= cutoff {
                    return Ok(std::ops::ControlFlow::Break(()));
                }
                for seq in chunk.first..=chunk.last() {
                    gaps.note(readers, seq, chunk.ingested_at);
                }
                batch.remove(keys::with_seq(keys::AUDIT, account, chunk.first));
                batch.remove(keys::with_seq(keys::AUDIT_ID, account, chunk.first));
                n += chunk.count;
                if n >= CHUNK {
                    more = true;
                    return Ok(std::ops::ControlFlow::Break(()));
                }
                Ok(std::ops::ControlFlow::Continue(()))
            })?;
            if n > 0 {
                self.events()?.apply_batch(batch)?;
                self.forget_recent(account);
            }
            deleted += n;
            if !more {
                break;
            }
        }
        self.record_gaps(Source::Audit, gaps)?;
        Ok(deleted)
    }

    /// Deletes finished jobs whose latest snapshot every reader has delivered, or that
    /// were stored before `cutoff` (recording gaps); jobs still running are kept.
    pub fn sweep_jobs(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: &[Reader],
    ) -> Result<u64, StoreError> {
        let min_delivered = readers.iter().map(|r| r.delivered_up_to).min();
        let mut gaps = Losses::default();
        let mut batch = sled::Batch::default();
        let mut deleted = 0;
        let prefix = keys::account_prefix(keys::JOB, account);
        for kv in self.events()?.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let job: StoredJob = decode(&k, &v)?;
            let at = job.snapshot.ingested_at;
            let delivered_by_all = min_delivered.is_some_and(|m| job.change_seq <= m);
            if !job.snapshot.is_finished() || !(delivered_by_all || at < cutoff) {
                continue;
            }
            gaps.note(readers, job.change_seq, at);
            batch.remove(k);
            batch.remove(keys::with_seq(keys::JOB_CHANGE, account, job.change_seq));
            deleted += 1;
        }
        if deleted > 0 {
            self.events()?.apply_batch(batch)?;
        }
        self.record_gaps(Source::Jobs, gaps)?;
        Ok(deleted)
    }

    fn record_gaps(&self, source: Source, gaps: Losses) -> Result<(), StoreError> {
        for (id, (from, to, count)) in gaps.0 {
            let key = gap_key(&id, source);
            let merged = match self.registry()?.get(&key)? {
                Some(v) => {
                    let old: Gap = decode(&key, &v)?;
                    Gap {
                        source,
                        from: old.from.min(from),
                        to: old.to.max(to),
                        count: old.count + count,
                        recorded_at: Utc::now(),
                    }
                }
                None => Gap {
                    source,
                    from,
                    to,
                    count,
                    recorded_at: Utc::now(),
                },
            };
            log::warn!(
                "integration {id}: {count} {} events outlived the retention before it delivered them (gap recorded)",
                source.as_str()
            );
            self.registry()?.insert(key, encode(&merged))?;
        }
        Ok(())
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
