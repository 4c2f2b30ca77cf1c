//! Sync history: one record per sync of each integration, kept for the web page's
//! chart and table and for the operator's overview.
//!
//! A **sync** is one run of the integration's delivery cycle (`run_cycle`): the
//! failed batch first, then everything due. A retry is a sync of its own. Each is
//! recorded when it ends, beside a per-integration summary (the latest record, the
//! last sync without error) that the overview sorts without asking any actor or
//! counting any backlog. Records are pruned on write — older than
//! [`HISTORY_MAX_AGE_DAYS`] or beyond [`HISTORY_MAX_RECORDS`] — and deleted with
//! their integration.
//!
//! Writing one is a few small sled writes, never flushed by itself: it becomes
//! durable with the next checkpoint flush or sled's own periodic flush (every
//! 500 ms), so a crash loses at most the last few records.

use super::{decode, encode, keys, SledStore as Store, StoreError};
use crate::model::AccountId;
use crate::model::{Failure, FailureKind};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sled::IVec;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// Syncs older than this are removed when the next one is recorded.
pub const HISTORY_MAX_AGE_DAYS: i64 = 7;
/// At most this many syncs are kept per integration (7 days at the default 5 minutes
/// is 2,016).
pub const HISTORY_MAX_RECORDS: u64 = 2_000;

/// A count per data source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PerSource {
    /// From the audit log.
    pub audit: u64,
    /// From job updates.
    pub jobs: u64,
}

impl PerSource {
    /// Both sources together, as the overview and the chart show them.
    pub fn total(&self) -> u64 {
        self.audit + self.jobs
    }
}

/// How a sync ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncResult {
    /// Ended without an error after sending events (events Splunk refused as bad
    /// data went to the dead letters: `dead_lettered` counts them).
    Delivered,
    /// Sent some events, then failed: the rest is retried.
    Partial,
    /// Failed before Splunk took any event.
    Failed,
    /// Ended without an error with nothing to send.
    Skipped,
}

impl SyncResult {
    /// The result of a sync that handled (delivered or dead-lettered) `handled` events
    /// and ended with an error or not.
    pub fn of(handled: u64, failed: bool) -> SyncResult {
        match (failed, handled > 0) {
            (true, true) => SyncResult::Partial,
            (true, false) => SyncResult::Failed,
            (false, true) => SyncResult::Delivered,
            (false, false) => SyncResult::Skipped,
        }
    }

    fn code(self) -> u8 {
        match self {
            SyncResult::Delivered => 0,
            SyncResult::Partial => 1,
            SyncResult::Failed => 2,
            SyncResult::Skipped => 3,
        }
    }

    fn from_code(code: u8) -> Option<SyncResult> {
        Some(match code {
            0 => SyncResult::Delivered,
            1 => SyncResult::Partial,
            2 => SyncResult::Failed,
            3 => SyncResult::Skipped,
            _ => return None,
        })
    }
}

/// Why a sync failed: Splunk's answer (or the transport error), the advice, and
/// whether it clears by itself (`transient`) or needs the customer (`configuration`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncError {
    /// Splunk's answer or the transport error, with the advice.
    #[serde(flatten)]
    pub failure: Failure,
    /// Whether it clears by itself or needs the customer.
    pub kind: FailureKind,
}

/// One sync of one integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncRecord {
    /// Kept to the microsecond.
    pub started_at: DateTime<Utc>,
    /// How long the sync ran, in milliseconds.
    pub duration_ms: u64,
    /// How it ended.
    pub result: SyncResult,
    /// Events Splunk accepted, per source.
    pub events: PerSource,
    /// Uncompressed bytes of the accepted posts, per source.
    pub bytes: PerSource,
    /// Events Splunk refused as bad data, moved to the dead letters.
    pub dead_lettered: u64,
    /// Events still to deliver when the sync ended; `None` when they could not be counted.
    pub backlog_after: Option<u64>,
    /// Why it failed; `None` when it ended without an error.
    pub error: Option<SyncError>,
}

impl SyncRecord {
    /// When it ended: the start plus the duration, so it need not be stored.
    pub fn finished_at(&self) -> DateTime<Utc> {
        self.started_at + Duration::milliseconds(self.duration_ms.min(i64::MAX as u64) as i64)
    }
}

/// The stored form of a record: a JSON array (about 50 bytes), since every
/// integration writes one per interval and keeps up to 2,000.
#[derive(Serialize, Deserialize)]
struct Stored(
    i64,
    u64,
    u8,
    [u64; 2],
    [u64; 2],
    u64,
    Option<u64>,
    Option<SyncError>,
);

impl Stored {
    fn of(r: &SyncRecord) -> Stored {
        Stored(
            r.started_at.timestamp_micros(),
            r.duration_ms,
            r.result.code(),
            [r.events.audit, r.events.jobs],
            [r.bytes.audit, r.bytes.jobs],
            r.dead_lettered,
            r.backlog_after,
            r.error.clone(),
        )
    }

    fn record(self, key: &[u8]) -> Result<SyncRecord, StoreError> {
        let corrupt = |reason: &str| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: reason.into(),
        };
        Ok(SyncRecord {
            started_at: time_of(key, self.0)?,
            duration_ms: self.1,
            result: SyncResult::from_code(self.2).ok_or_else(|| corrupt("unknown result"))?,
            events: PerSource {
                audit: self.3[0],
                jobs: self.3[1],
            },
            bytes: PerSource {
                audit: self.4[0],
                jobs: self.4[1],
            },
            dead_lettered: self.5,
            backlog_after: self.6,
            error: self.7,
        })
    }
}

/// What the overview needs of an integration's syncs, kept beside its history.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSummary {
    /// Sequence numbers of the oldest record kept and of the next one: the records
    /// in between are contiguous, so counting them needs no scan.
    first: u64,
    next: u64,
    /// The latest sync.
    pub last: SyncRecord,
    /// When the latest sync that ended without an error ended.
    pub last_success: Option<DateTime<Utc>>,
    /// How the latest sync that posted to Splunk ended (a skipped one proves nothing
    /// about the connection); `None` while every sync had nothing to send.
    pub last_attempt: Option<Attempt>,
}

/// A sync that posted to Splunk: when it ended, and its error if it failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the sync ended.
    pub at: DateTime<Utc>,
    /// Why it failed; `None` when Splunk took what was posted.
    pub error: Option<SyncError>,
}

/// The stored form of a summary, compact like a record's: the overview reads one per
/// integration on every request.
#[derive(Serialize, Deserialize)]
struct StoredSummary(
    u64,
    u64,
    Stored,
    Option<i64>,
    Option<(i64, Option<SyncError>)>,
);

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time_of(key: &[u8], micros: i64) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_micros(micros)
        .single()
        .ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: "a time out of range".into(),
        })
}

impl SyncSummary {
    /// The summary once `record` was recorded after `before`, with records `first` to
    /// `next` (exclusive) kept: both backends keep it the same way.
    pub(super) fn following(
        before: Option<SyncSummary>,
        record: &SyncRecord,
        first: u64,
        next: u64,
    ) -> SyncSummary {
        let last_success = match record.error {
            None => Some(record.finished_at()),
            Some(_) => before.as_ref().and_then(|s| s.last_success),
        };
        let last_attempt = match record.result {
            SyncResult::Skipped => before.and_then(|s| s.last_attempt),
            _ => Some(Attempt {
                at: record.finished_at(),
                error: record.error.clone(),
            }),
        };
        SyncSummary {
            first,
            next,
            last: record.clone(),
            last_success,
            last_attempt,
        }
    }

    /// A summary as stored by another backend.
    pub(super) fn stored(
        first: u64,
        next: u64,
        last: SyncRecord,
        last_success: Option<DateTime<Utc>>,
        last_attempt: Option<Attempt>,
    ) -> SyncSummary {
        SyncSummary {
            first,
            next,
            last,
            last_success,
            last_attempt,
        }
    }

    /// The sequence numbers of the oldest record kept and of the next one.
    pub(super) fn seqs(&self) -> (u64, u64) {
        (self.first, self.next)
    }

    fn encode(&self) -> Vec<u8> {
        encode(&StoredSummary(
            self.first,
            self.next,
            Stored::of(&self.last),
            self.last_success.map(micros),
            self.last_attempt
                .as_ref()
                .map(|a| (micros(a.at), a.error.clone())),
        ))
    }

    fn decode(key: &[u8], bytes: &[u8]) -> Result<SyncSummary, StoreError> {
        let StoredSummary(first, next, last, success, attempt) = decode(key, bytes)?;
        Ok(SyncSummary {
            first,
            next,
            last: last.record(key)?,
            last_success: success.map(|t| time_of(key, t)).transpose()?,
            last_attempt: match attempt {
                Some((at, error)) => Some(Attempt {
                    at: time_of(key, at)?,
                    error,
                }),
                None => None,
            },
        })
    }
}

/// One integration as the overview lists it, read without opening its HEC token.
#[derive(Debug, Clone, PartialEq)]
pub struct OverviewRow {
    /// The integration's id.
    pub id: Uuid,
    /// The account it belongs to.
    pub account: AccountId,
    /// Its name, as the customer gave it.
    pub name: String,
    /// Whether the customer left it switched on.
    pub enabled: bool,
    /// Enabled, and declared in the config file or on an account with the feature on.
    pub active: bool,
    /// Its latest syncs; `None` before its first one.
    pub summary: Option<Arc<SyncSummary>>,
}

/// An account's feature switch (its time is skipped unread).
#[derive(Deserialize)]
struct Switch {
    siem_enabled: bool,
}

/// The fields of a stored integration the overview shows (the rest is skipped unread).
#[derive(Deserialize)]
struct Head {
    id: Uuid,
    account: AccountId,
    name: String,
    enabled: bool,
    #[serde(default)]
    file_managed: bool,
}

/// Syncs that started before this are removed when the next one is recorded.
pub(super) fn history_cutoff() -> DateTime<Utc> {
    Utc::now() - Duration::days(HISTORY_MAX_AGE_DAYS)
}

fn history_prefix(id: &Uuid) -> Vec<u8> {
    format!("hist/{id}/").into_bytes()
}

fn history_key(id: &Uuid, seq: u64) -> Vec<u8> {
    let mut k = history_prefix(id);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

const SUMMARIES: &[u8] = b"lastsync/";

fn summary_key(id: &Uuid) -> Vec<u8> {
    format!("lastsync/{id}").into_bytes()
}

/// Every record under `prefix`, as stored.
fn values(registry: &sled::Tree, prefix: &[u8]) -> Result<Vec<(IVec, IVec)>, StoreError> {
    registry
        .scan_prefix(prefix)
        .map(|kv| kv.map_err(StoreError::from))
        .collect()
}

/// Records as last decoded, by key, with the bytes they were decoded from.
pub(super) struct Decoded<T>(HashMap<IVec, (IVec, T)>);

impl<T> Default for Decoded<T> {
    fn default() -> Self {
        Decoded(HashMap::new())
    }
}

impl<T: Clone> Decoded<T> {
    /// The records read now, decoded: again only where their bytes changed. Records no
    /// longer stored are forgotten.
    fn refresh(
        &mut self,
        read: Vec<(IVec, IVec)>,
        decode: impl Fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<(IVec, T)>, StoreError> {
        let mut now = HashMap::with_capacity(read.len());
        let mut out = Vec::with_capacity(read.len());
        for (k, v) in read {
            let value = match self.0.remove(&k) {
                Some((bytes, value)) if bytes == v => value,
                _ => decode(&k, &v)?,
            };
            out.push((k.clone(), value.clone()));
            now.insert(k, (v, value));
        }
        self.0 = now;
        Ok(out)
    }
}

/// What the overview decoded at its last request.
#[derive(Default)]
pub(super) struct OverviewMemo {
    switches: Decoded<bool>,
    summaries: Decoded<Arc<SyncSummary>>,
    heads: Decoded<Arc<Head>>,
}

impl Store {
    /// Records a sync that ended, pruning what is too old or too many, only while the
    /// integration exists (an actor ending after a delete leaves nothing behind).
    ///
    /// Plain writes, not a sled transaction: only the integration's actor records its
    /// syncs, and a transaction cost four times the time and twice the disk per record.
    /// The record goes first and the summary after it, so a crash in between loses at
    /// most that record (the next one takes its place).
    pub fn record_sync(
        &self,
        account: &AccountId,
        id: &Uuid,
        record: &SyncRecord,
    ) -> Result<(), StoreError> {
        let registry = self.registry()?;
        let ikey = keys::integration(account, id);
        // Whether the integration still exists is read once, after the writes (a
        // delete may come at any point before them): one read of the registry less
        // per sync, at the price of writing a record the check then takes back in
        // the rare sync that ends after its integration's deletion.
        let skey = summary_key(id);
        let before = match registry.get(&skey)? {
            Some(v) => Some(SyncSummary::decode(&skey, &v)?),
            None => None,
        };
        let (mut first, seq) = before.as_ref().map_or((0, 0), |s| (s.first, s.next));
        registry.insert(history_key(id, seq), encode(&Stored::of(record)))?;
        let next = seq + 1;
        // The oldest go first: beyond the count, older than the age limit, or unreadable.
        let cutoff = history_cutoff().timestamp_micros();
        while first < seq {
            let key = history_key(id, first);
            let expired = next - first > HISTORY_MAX_RECORDS
                || match registry.get(&key)? {
                    Some(v) => decode::<Stored>(&key, &v).map_or(true, |s| s.0 < cutoff),
                    None => true,
                };
            if !expired {
                break;
            }
            registry.remove(key)?;
            first += 1;
        }
        let summary = SyncSummary::following(before, record, first, next);
        registry.insert(skey, summary.encode())?;
        // Deleted meanwhile: the delete may have removed the history before these writes.
        if registry.get(&ikey)?.is_none() {
            self.delete_history(id)?;
            return Err(StoreError::Gone);
        }
        Ok(())
    }

    /// An integration's syncs that started at or after `since`, newest first, at most `limit`.
    pub fn history(
        &self,
        id: &Uuid,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        let mut out = Vec::new();
        for kv in self.registry()?.scan_prefix(history_prefix(id)).rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            let record = decode::<Stored>(&k, &v)?.record(&k)?;
            // Filtered rather than cut at the first older one: a clock set back must
            // not hide the syncs recorded before it.
            if record.started_at >= since {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// The integration's summary: its latest sync and last sync without an error.
    pub fn sync_summary(&self, id: &Uuid) -> Result<Option<SyncSummary>, StoreError> {
        let key = summary_key(id);
        self.registry()?
            .get(&key)?
            .map(|v| SyncSummary::decode(&key, &v))
            .transpose()
    }

    /// Every integration of every account with its summary, for the overview: three
    /// prefix scans, no actor asked, no backlog counted, no token opened.
    pub fn overview_rows(&self) -> Result<Vec<OverviewRow>, StoreError> {
        let registry = self.registry()?;
        // Reading sled is most of the time: the summaries are read beside the accounts
        // and integrations, on another thread.
        let (summaries, accounts, integrations) = std::thread::scope(|scope| {
            let summaries = scope.spawn(|| values(&registry, SUMMARIES));
            let accounts = values(&registry, keys::ACCOUNTS);
            let integrations = values(&registry, keys::INTEGRATIONS);
            let summaries = summaries.join().unwrap_or_else(|_| {
                Err(StoreError::Unavailable(
                    "reading the sync summaries failed".into(),
                ))
            });
            (summaries, accounts, integrations)
        });
        let mut memo = self
            .inner
            .overview
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let switches = memo.switches.refresh(accounts?, |k, v| {
            decode::<Switch>(k, v).map(|s| s.siem_enabled)
        })?;
        let summaries = memo
            .summaries
            .refresh(summaries?, |k, v| SyncSummary::decode(k, v).map(Arc::new))?;
        let heads = memo
            .heads
            .refresh(integrations?, |k, v| decode::<Head>(k, v).map(Arc::new))?;
        let mut by_id: HashMap<Uuid, Arc<SyncSummary>> = summaries
            .into_iter()
            .filter_map(|(k, s)| {
                let id = std::str::from_utf8(&k[SUMMARIES.len()..]).ok()?;
                Some((Uuid::parse_str(id).ok()?, s))
            })
            .collect();
        let feature: HashMap<&[u8], bool> = switches
            .iter()
            .map(|(k, on)| (&k[keys::ACCOUNTS.len()..], *on))
            .collect();
        Ok(heads
            .into_iter()
            .map(|(_, h)| {
                let on = feature.get(h.account.as_str().as_bytes()).copied();
                OverviewRow {
                    summary: by_id.remove(&h.id),
                    active: h.enabled && (h.file_managed || on.unwrap_or(false)),
                    id: h.id,
                    account: h.account.clone(),
                    name: h.name.clone(),
                    enabled: h.enabled,
                }
            })
            .collect())
    }

    /// Removes an integration's history and summary (with the integration).
    pub(super) fn delete_history(&self, id: &Uuid) -> Result<(), StoreError> {
        let registry = self.registry()?;
        let mut batch = sled::Batch::default();
        batch.remove(summary_key(id));
        for k in registry.scan_prefix(history_prefix(id)).keys() {
            batch.remove(k?);
        }
        registry.apply_batch(batch)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Integration, IntegrationChange, IntegrationPolicy};
    use serde_json::json;

    fn store_with_integration() -> (tempfile::TempDir, Store, Integration) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let it = IntegrationChange::from_json(&json!({
            "name": "Main Splunk", "hec_token": "00000000-0000-4000-8000-000000000000",
            "hec_uri": "https://splunk.example.com:8088", "sources": ["audit", "jobs"], "enabled": true}))
        .and_then(|c| {
            c.create(
                AccountId::parse("acme").unwrap(),
                Utc::now(),
                IntegrationPolicy::default(),
            )
        })
        .unwrap();
        let it = store.put_integration(&it, None).unwrap();
        (dir, store, it)
    }

    /// Times are kept to the microsecond.
    fn record(started_at: DateTime<Utc>, events: u64) -> SyncRecord {
        SyncRecord {
            started_at: chrono::SubsecRound::trunc_subsecs(started_at, 6),
            duration_ms: 12,
            result: SyncResult::of(events, false),
            events: PerSource {
                audit: events,
                jobs: 1,
            },
            bytes: PerSource {
                audit: events * 300,
                jobs: 250,
            },
            dead_lettered: 0,
            backlog_after: Some(0),
            error: None,
        }
    }

    #[test]
    fn a_record_reads_back_as_written_newest_first() {
        let (_d, store, it) = store_with_integration();
        let t0 = chrono::SubsecRound::trunc_subsecs(Utc::now() - Duration::minutes(10), 6);
        let failed = SyncRecord {
            result: SyncResult::Failed,
            error: Some(SyncError {
                failure: Failure {
                    http_status: Some(403),
                    code: Some(4),
                    text: "Invalid token".into(),
                    advice: "Check the token.".into(),
                },
                kind: FailureKind::Configuration,
            }),
            backlog_after: Some(7),
            ..record(t0 + Duration::minutes(5), 0)
        };
        store
            .record_sync(&it.account, &it.id, &record(t0, 3))
            .unwrap();
        store.record_sync(&it.account, &it.id, &failed).unwrap();
        let got = store.history(&it.id, t0, 100).unwrap();
        assert_eq!(got, vec![failed.clone(), record(t0, 3)]);
        assert_eq!(
            store
                .history(&it.id, t0 + Duration::minutes(1), 100)
                .unwrap(),
            vec![failed.clone()]
        );
        assert_eq!(store.history(&it.id, t0, 1).unwrap(), vec![failed.clone()]);
        let s = store.sync_summary(&it.id).unwrap().unwrap();
        assert_eq!(s.last, failed);
        assert_eq!(s.last_success, Some(record(t0, 3).finished_at()));
        let attempt = Some(Attempt {
            at: failed.finished_at(),
            error: failed.error.clone(),
        });
        assert_eq!(s.last_attempt, attempt);
        // Nothing to send proves nothing about the connection: the failed post still counts.
        let skipped = SyncRecord {
            events: PerSource::default(),
            ..record(t0 + Duration::minutes(6), 0)
        };
        assert_eq!(skipped.result, SyncResult::Skipped);
        store.record_sync(&it.account, &it.id, &skipped).unwrap();
        let s = store.sync_summary(&it.id).unwrap().unwrap();
        assert_eq!((s.last, s.last_attempt), (skipped.clone(), attempt));
        assert_eq!(s.last_success, Some(skipped.finished_at()));
    }

    #[test]
    fn at_most_2000_syncs_are_kept_per_integration() {
        let (_d, store, it) = store_with_integration();
        let t0 = Utc::now() - Duration::hours(1);
        for i in 0..HISTORY_MAX_RECORDS + 25 {
            let r = record(t0 + Duration::milliseconds(i as i64), i);
            store.record_sync(&it.account, &it.id, &r).unwrap();
        }
        let kept = store.history(&it.id, t0, usize::MAX).unwrap();
        assert_eq!(kept.len() as u64, HISTORY_MAX_RECORDS);
        assert_eq!(kept[0].events.audit, HISTORY_MAX_RECORDS + 24, "the newest");
        assert_eq!(kept.last().unwrap().events.audit, 25, "the oldest 25 went");
    }

    #[test]
    fn syncs_older_than_7_days_go_when_the_next_is_recorded() {
        let (_d, store, it) = store_with_integration();
        let old = Utc::now() - Duration::days(8);
        for i in 0..5 {
            let r = record(old + Duration::minutes(i), 1);
            store.record_sync(&it.account, &it.id, &r).unwrap();
        }
        let recent = record(Utc::now() - Duration::days(6), 2);
        store.record_sync(&it.account, &it.id, &recent).unwrap();
        let epoch = Utc.timestamp_millis_opt(0).unwrap();
        assert_eq!(store.history(&it.id, epoch, 100).unwrap(), vec![recent]);
    }

    #[test]
    fn history_goes_with_its_integration_and_is_not_recorded_after() {
        let (_d, store, it) = store_with_integration();
        store
            .record_sync(&it.account, &it.id, &record(Utc::now(), 1))
            .unwrap();
        assert!(store
            .delete_integration(&it.account, &it.id)
            .unwrap()
            .is_some());
        let epoch = Utc.timestamp_millis_opt(0).unwrap();
        assert!(store.history(&it.id, epoch, 100).unwrap().is_empty());
        assert_eq!(store.sync_summary(&it.id).unwrap(), None);
        // An actor that ends its sync after the delete leaves nothing behind.
        assert!(matches!(
            store.record_sync(&it.account, &it.id, &record(Utc::now(), 1)),
            Err(StoreError::Gone)
        ));
        assert!(store.history(&it.id, epoch, 100).unwrap().is_empty());
        assert!(store.overview_rows().unwrap().is_empty());
    }

    #[test]
    fn the_overview_reads_every_integration_with_its_summary() {
        let (_d, store, it) = store_with_integration();
        let rows = store.overview_rows().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].summary, None);
        assert!(!rows[0].active, "the account's feature is off");
        store
            .put_account(&it.account, &super::super::Account::enabled(Utc::now()))
            .unwrap();
        store
            .record_sync(&it.account, &it.id, &record(Utc::now(), 4))
            .unwrap();
        let rows = store.overview_rows().unwrap();
        assert!(rows[0].active);
        assert_eq!(rows[0].name, "Main Splunk");
        assert_eq!(rows[0].summary.as_ref().unwrap().last.events.audit, 4);
        // What was decoded before is decoded again once it changed.
        let renamed = Integration {
            name: "Splunk Cloud".into(),
            enabled: false,
            ..it.clone()
        };
        store.put_integration(&renamed, Some(it.version)).unwrap();
        store
            .record_sync(&it.account, &it.id, &record(Utc::now(), 9))
            .unwrap();
        let rows = store.overview_rows().unwrap();
        assert_eq!(
            (rows[0].name.as_str(), rows[0].active),
            ("Splunk Cloud", false)
        );
        assert_eq!(rows[0].summary.as_ref().unwrap().last.events.audit, 9);
    }
}
