//! A primary failover under a running store: while no writable PostgreSQL answers,
//! writes fail as "unavailable" (503, never 500, never an acknowledgement that did
//! not commit); after the standby is promoted the same store, with a multi-host URL,
//! writes again without being re-created, and every acknowledged event is there.
//! Its own cluster (primary + synchronous streaming standby): the test kills it.

use chrono::Utc;
use serde_json::json;
use siemsync::model::{AccountId, AuditEvent};
use siemsync::store::postgres::{ControlSignal, PgOptions, PgStore};
use siemsync::testkit::postgres::{ClusterOptions, PgCluster};
use std::time::{Duration, Instant};

fn audit(id: &str) -> AuditEvent {
    AuditEvent::from_json(
        &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x"}),
        0,
        Utc::now(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_unavailable_while_the_primary_is_down_and_resume_on_the_promoted_standby() {
    let Some(pg) = PgCluster::start_or_skip(ClusterOptions {
        standby: true,
        ..Default::default()
    }) else {
        return;
    };
    let db = pg.create_database().unwrap();
    let mut options = PgOptions::new(pg.multi_host_url(&db), "n1");
    options.op_timeout = Duration::from_secs(5);
    let store = PgStore::connect(options).await.unwrap();
    let mut listener = store.listen();
    let signal = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
    assert_eq!(signal.unwrap(), Some(ControlSignal::Listening));
    let a = AccountId::parse("acme").unwrap();
    let mut acknowledged = 0u64;
    for i in 0..20 {
        let out = store
            .append_audit(&a, vec![audit(&format!("before-{i}"))])
            .await
            .unwrap();
        acknowledged += out.accepted as u64;
    }

    pg.kill_primary().unwrap();
    let e = store
        .append_audit(&a, vec![audit("during")])
        .await
        .expect_err("no writable PostgreSQL: the write must fail");
    assert!(
        e.is_unavailable(),
        "an outage is `Unavailable` (503), not {e:?}"
    );
    assert!(
        store.fault().is_some(),
        "the store reports the fault for /healthz"
    );

    pg.promote_standby().unwrap();
    // The same store finds the promoted standby by itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut retries = 0;
    loop {
        match store.append_audit(&a, vec![audit("after")]).await {
            Ok(out) => {
                acknowledged += out.accepted as u64;
                break;
            }
            Err(e) if e.is_unavailable() && Instant::now() < deadline => retries += 1,
            Err(e) => panic!("writes did not resume after {retries} tries: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        store.fault().is_none(),
        "the fault clears once a write succeeds"
    );
    // Every acknowledged event survived the failover (the standby was synchronous).
    assert_eq!(store.heads(&a).await.unwrap().audit, acknowledged);
    let mut ids = Vec::new();
    store
        .audit_after(&a, 0, |e| {
            ids.push(e.to_json().unwrap()["id"].as_str().unwrap().to_owned());
            std::ops::ControlFlow::Continue(())
        })
        .await
        .unwrap();
    assert_eq!(ids.len() as u64, acknowledged);
    assert_eq!(ids.last().map(String::as_str), Some("after"));
    // The control listener reconnected to the new primary by itself.
    let signal = tokio::time::timeout(Duration::from_secs(10), listener.recv()).await;
    assert_eq!(signal.unwrap(), Some(ControlSignal::Listening));
}
