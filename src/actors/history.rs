//! What an integration actor records when a sync ends: its tally per source, how it
//! ended, and the backlog it left (see `store::history` for what a sync is).

use crate::hec::response::{Failure, FailureKind};
use crate::model::{Integration, Source};
use crate::store::{Checkpoint, PerSource, Store, StoreError, SyncError, SyncRecord, SyncResult};
use chrono::{DateTime, SubsecRound, Utc};
use std::time::Duration;

/// Events and bytes one sync handled, per source.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// Events Splunk accepted.
    pub events: PerSource,
    /// Uncompressed bytes of the accepted events.
    pub bytes: PerSource,
    /// Events Splunk refused as bad data, kept as dead letters.
    pub dead_lettered: u64,
}

impl Tally {
    /// `delivered` events of `source` accepted in `bytes`, and `dead` refused as bad data.
    pub fn add(&mut self, source: Source, delivered: u64, bytes: u64, dead: u64) {
        let (events, size) = match source {
            Source::Audit => (&mut self.events.audit, &mut self.bytes.audit),
            Source::Jobs => (&mut self.events.jobs, &mut self.bytes.jobs),
        };
        *events += delivered;
        *size += bytes;
        self.dead_lettered += dead;
    }

    /// Events delivered, all sources.
    pub fn events(&self) -> u64 {
        self.events.total()
    }

    /// Bytes delivered, all sources.
    pub fn bytes(&self) -> u64 {
        self.bytes.total()
    }
}

/// Records a sync that ended (`error` when it failed). A record that cannot be written
/// is logged and never changes delivery.
pub fn record(
    store: &Store,
    it: &Integration,
    checkpoint: &Checkpoint,
    tally: &Tally,
    started_at: DateTime<Utc>,
    took: Duration,
    error: Option<(&Failure, FailureKind)>,
) {
    let backlog_after = store.backlog(it, checkpoint).ok().map(|b| b.events());
    let record = SyncRecord {
        started_at: started_at.trunc_subsecs(6),
        duration_ms: took.as_millis().min(u64::MAX as u128) as u64,
        result: SyncResult::of(tally.events.total() + tally.dead_lettered, error.is_some()),
        events: tally.events,
        bytes: tally.bytes,
        dead_lettered: tally.dead_lettered,
        backlog_after,
        error: error.map(|(failure, kind)| SyncError {
            failure: failure.clone(),
            kind,
        }),
    };
    match store.record_sync(&it.account, &it.id, &record) {
        Ok(()) | Err(StoreError::Gone) => {}
        // The store's own fault is already in the status and the logs.
        Err(e) if store.fault().is_some() => {
            log::debug!("integration {}: sync not recorded: {e}", it.id)
        }
        Err(e) => log::warn!(
            "integration {}: sync not recorded in its history: {e}",
            it.id
        ),
    }
}
