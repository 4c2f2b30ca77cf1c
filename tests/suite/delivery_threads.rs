//! Integration actors are spread over the delivery threads (`delivery_threads`),
//! not all run on the one thread of the Supervisor: a fleet's syncs use every core.

use super::common::*;
use serde_json::json;
use siemsync::actors::supervisor::SyncThread;
use siemsync::testkit::HecServer;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOK: &str = "7a1e0000-0000-4000-8000-000000000001";

/// Integrations to create: with two threads and ids assigned by hash, all of them
/// landing on one thread has a chance of 2 in 2^24.
const INTEGRATIONS: usize = 24;

#[actix_rt::test]
async fn integrations_sync_on_every_delivery_thread_and_not_on_the_supervisors() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[("SIEMSYNC_DELIVERY_THREADS", "2")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let mut ids = Vec::new();
    for i in 0..INTEGRATIONS {
        let body = json!({"name": format!("splunk {i}"), "hec_token": TOK,
            "hec_uri": hec.base_url(), "sources": ["audit"]});
        ids.push(create_integration(&api, "acme", body).await);
    }
    for id in &ids {
        status_until(&api, "acme", id, "a delivery", |s| {
            s["delivered"]["audit"].as_u64().is_some_and(|n| n >= 1)
        })
        .await;
    }
    let supervisor = svc.in_process().supervisor.clone();
    let mut threads = BTreeSet::new();
    for id in &ids {
        let id = id.parse().unwrap();
        let t0 = Instant::now();
        let thread = loop {
            match supervisor.send(SyncThread { id }).await.unwrap() {
                Some(t) => break t,
                None if t0.elapsed() < Duration::from_secs(10) => {
                    actix_rt::time::sleep(Duration::from_millis(20)).await
                }
                None => panic!("integration {id} has not synced"),
            }
        };
        threads.insert(thread);
    }
    // The in-process service's System, and so its Supervisor, runs on this thread.
    assert!(
        !threads.contains("siemsync-under-test"),
        "an integration synced on the Supervisor's thread: {threads:?}"
    );
    assert_eq!(threads.len(), 2, "two delivery threads: {threads:?}");
}
