//! Helpers for the store's unit tests.

use super::{SledStore as Store, StoreOptions};
use crate::model::{AccountId, AuditEvent, JobSnapshot};
use chrono::Utc;
use serde_json::json;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// Opens `dir` again once the store closed a moment ago has let go of sled's file
/// lock (its threads drop their handles just after it is dropped).
pub fn reopen(dir: &Path, options: &StoreOptions) -> Store {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Store::open_with_options(dir, options) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("reopening the store: {e}"),
        }
    }
}

pub fn audit(id: &str) -> AuditEvent {
    AuditEvent::from_json(
        &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x"}),
        0,
        Utc::now(),
    )
    .unwrap()
}

pub fn job(id: &str, status: &str, progress: f64) -> JobSnapshot {
    JobSnapshot::from_json(
        &json!({"job": id, "type": "backup", "status": status, "progress": progress}),
        0,
        Utc::now(),
    )
    .unwrap()
}

pub fn audit_ids(s: &Store, a: &AccountId, after: u64) -> Vec<(u64, String)> {
    let mut v = Vec::new();
    s.audit_after(a, after, |e| {
        v.push((
            e.seq,
            e.to_json().unwrap()["id"].as_str().unwrap().to_owned(),
        ));
        ControlFlow::Continue(())
    })
    .unwrap();
    v
}

/// `n` audit events of about 300 bytes each, ids `{tag}-{i}`, stored at one moment:
/// for the quota's tests, which count bytes.
pub fn sized_audit(tag: &str, n: usize) -> Vec<AuditEvent> {
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

/// An integration of `account` sending `sources`, stored.
pub fn integration(s: &Store, account: &AccountId, sources: &[&str]) -> crate::model::Integration {
    let it = crate::model::IntegrationChange::from_json(&json!({"name": "n",
        "hec_token": "t-0123456789abcdef", "hec_uri": "https://splunk.example.com",
        "sources": sources}))
    .and_then(|c| {
        c.create(
            account.clone(),
            Utc::now(),
            crate::model::IntegrationPolicy::default(),
        )
    })
    .unwrap();
    s.put_integration(&it, None).unwrap()
}
