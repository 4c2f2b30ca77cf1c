//! The PostgreSQL store against a real PostgreSQL (Debian's server, started by the
//! test harness on loopback): ingest order and dedup with several nodes at once,
//! fenced checkpoint commits, shard leases, control notifications, concurrent
//! migrations, and a primary failover. One cluster per test binary, a fresh
//! database per test; the failover test has a cluster of its own.

use chrono::Utc;
use serde_json::json;
use siemsync::hec::response::{classify, FailureKind};
use siemsync::model::{
    AccountId, AuditEvent, Integration, IntegrationChange, IntegrationPolicy, JobSnapshot,
};
use siemsync::store::postgres::{
    schema, ControlAction, ControlSignal, Expected, Fence, PgError, PgOptions, PgStore,
};
use siemsync::store::{
    Account, Attempt, Checkpoint, IngestOutcome, PerSource, SyncError, SyncRecord, SyncResult,
    HISTORY_MAX_RECORDS,
};
use siemsync::testkit::postgres::PgCluster;
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// The cluster this test binary shares; `None` (the test is skipped) only where
/// PostgreSQL is not installed and `CI` is not set.
fn cluster() -> Option<&'static PgCluster> {
    siemsync::testkit::postgres::shared()
}

/// A fresh database on the shared cluster, as a URL.
fn fresh_database() -> Option<String> {
    let c = cluster()?;
    let db = c.create_database().expect("creating a test database");
    Some(c.url(&db))
}

async fn node(url: &str, name: &str, tune: impl FnOnce(&mut PgOptions)) -> PgStore {
    let mut options = PgOptions::new(url, name);
    options.op_timeout = Duration::from_secs(10);
    tune(&mut options);
    PgStore::connect(options)
        .await
        .expect("connecting to PostgreSQL")
}

fn audit(id: &str) -> AuditEvent {
    AuditEvent::from_json(
        &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x", "user": "ann"}),
        0,
        Utc::now(),
    )
    .unwrap()
}

async fn audit_ids(s: &PgStore, a: &AccountId) -> Vec<(u64, String)> {
    let mut v = Vec::new();
    s.audit_after(a, 0, |e| {
        v.push((
            e.seq,
            e.to_json().unwrap()["id"].as_str().unwrap().to_owned(),
        ));
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    v
}

fn integration(account: &str) -> Integration {
    IntegrationChange::from_json(&json!({
        "name": "Main Splunk", "hec_token": "11111111-2222-3333-4444-555555556789",
        "hec_uri": "https://splunk.example.com:8088", "sources": ["audit", "jobs"], "enabled": true
    }))
    .unwrap()
    .create(
        AccountId::parse(account).unwrap(),
        Utc::now(),
        IntegrationPolicy::default(),
    )
    .unwrap()
}

/// A checkpoint that delivered the audit log up to `seq`.
fn audit_cp(seq: u64) -> Checkpoint {
    Checkpoint {
        audit_seq: seq,
        ..Checkpoint::default()
    }
}

/// Waits for `done` with a deadline, never a fixed sleep.
async fn wait_until<F, Fut>(what: &str, secs: u64, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_run_once_when_three_nodes_start_at_once() {
    let Some(url) = fresh_database() else { return };
    let mut clients = Vec::new();
    for _ in 0..3 {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        clients.push(client);
    }
    // All three begin together, so their transactions overlap.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(3));
    let runs: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                schema::migrate(&mut c, schema::MIGRATIONS)
                    .await
                    .map(|v| (v, c))
            })
        })
        .collect();
    let mut applied = Vec::new();
    let mut client = None;
    for r in runs {
        let (versions, c) = r.await.unwrap().expect("every migrator succeeds");
        applied.push(versions);
        client = Some(c);
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![
            vec![],
            vec![],
            schema::MIGRATIONS.iter().map(|m| m.version).collect()
        ],
        "exactly one node migrated"
    );
    let mut client = client.unwrap();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM siemsync_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, schema::MIGRATIONS.len() as i64);
    // A released migration that changed, or a schema newer than the build, stops the start.
    let changed: Vec<_> = schema::MIGRATIONS
        .iter()
        .map(|m| schema::Migration {
            version: m.version,
            name: m.name,
            sql: if m.version == 1 { "SELECT 1" } else { m.sql },
        })
        .collect();
    let e = schema::migrate(&mut client, &changed).await.unwrap_err();
    assert!(e.to_string().contains("must never change"), "{e}");
    let e = schema::migrate(&mut client, &[]).await.unwrap_err();
    assert!(e.to_string().contains("newer than this siemsync"), "{e}");
    // And whole stores starting at once on a fresh database.
    let Some(url) = fresh_database() else { return };
    let starts = (0..3).map(|i| {
        let url = url.clone();
        tokio::spawn(async move {
            PgStore::connect(PgOptions::new(url, format!("n{i}")))
                .await
                .map(|_| ())
        })
    });
    for s in starts {
        s.await.unwrap().expect("every node starts");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_audit_events_are_the_embedded_stores_bytes() {
    let Some(url) = fresh_database() else { return };
    let pg = node(&url, "n1", |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let sled = siemsync::store::Store::open(dir.path()).unwrap();
    let a = AccountId::parse("acme").unwrap();
    let events: Vec<AuditEvent> = (0..150)
        .map(|i| AuditEvent {
            metadata: Some(
                json!({"k": i, "text": "x".repeat(i * 13)})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
            ..audit(&format!("e-{i}"))
        })
        .collect();
    pg.append_audit(&a, events.clone()).await.unwrap();
    sled.append_audit(&a, events).unwrap();
    let mut from_sled = Vec::new();
    sled.audit_after(&a, 0, |e| {
        from_sled.push((e.seq, e.time_ms, e.head.to_vec(), e.tail.to_vec()));
        ControlFlow::Continue(())
    })
    .unwrap();
    let mut from_pg = Vec::new();
    pg.audit_after(&a, 0, |e| {
        from_pg.push((e.seq, e.time_ms, e.head.to_vec(), e.tail.to_vec()));
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(from_pg.len(), 150);
    assert_eq!(from_pg, from_sled);
    // Several chunks: a reader can start inside one.
    let after_77: Vec<u64> = audit_ids(&pg, &a)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| *s > 77)
        .collect();
    let mut seen = Vec::new();
    pg.audit_after(&a, 77, |e| {
        seen.push(e.seq);
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(seen, after_77);
    assert_eq!(pg.audit_backlog(&a, 77).await.unwrap().0, 73);
    assert_eq!(pg.heads(&a).await.unwrap().audit, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_id_is_ignored_within_the_window_also_on_a_fresh_node() {
    let Some(url) = fresh_database() else { return };
    let a = AccountId::parse("acme").unwrap();
    let outcome = |accepted, duplicates| IngestOutcome {
        accepted,
        duplicates,
    };
    let window = |o: &mut PgOptions| o.dedup_window = 3;
    let first = node(&url, "n1", window).await;
    first
        .append_audit(&a, vec![audit("1"), audit("2")])
        .await
        .unwrap();
    first
        .append_audit(&a, vec![audit("3"), audit("4")])
        .await
        .unwrap();
    // "1" left the window of the last 3 events; "3" is in it.
    assert_eq!(
        first
            .append_audit(&a, vec![audit("3"), audit("1")])
            .await
            .unwrap(),
        outcome(1, 1)
    );
    // Another node with nothing cached reads the window from PostgreSQL:
    // the last 3 are 3, 4 and the second 1.
    let second = node(&url, "n2", window).await;
    assert_eq!(
        second
            .append_audit(&a, vec![audit("4"), audit("1"), audit("2")])
            .await
            .unwrap(),
        outcome(1, 2)
    );
    // The first node's cache is behind by what the second stored: it catches up.
    assert_eq!(
        first
            .append_audit(&a, vec![audit("2"), audit("9")])
            .await
            .unwrap(),
        outcome(1, 1)
    );
    // The last 3 are 1, 2 and 9 when the next request comes: its own new ids do not
    // push 9 out before its turn, and an id earlier in it is a retry however many
    // came between.
    assert_eq!(
        first
            .append_audit(&a, ["5", "6", "7", "9", "8", "5"].map(audit).to_vec())
            .await
            .unwrap(),
        outcome(4, 2)
    );
    let ids: Vec<String> = audit_ids(&first, &a)
        .await
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    assert_eq!(ids, ["1", "2", "3", "4", "1", "2", "9", "5", "6", "7", "8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_ingesting_one_account_at_once_keep_its_order_and_dedup() {
    let Some(url) = fresh_database() else { return };
    let a = AccountId::parse("acme").unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&url, &format!("n{i}"), |o| o.dedup_window = 100_000).await);
    }
    // 3 nodes × 40 requests × 50 events; every request repeats 10 ids of another
    // node's requests (a platform retry that reached another node).
    const REQUESTS: usize = 40;
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(n, store)| {
            let (store, a) = (store.clone(), a.clone());
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for r in 0..REQUESTS {
                    let mut ids: Vec<String> = (0..50).map(|i| format!("n{n}-r{r}-e{i}")).collect();
                    let other = (n + 1) % 3;
                    ids.extend((0..10).map(|i| format!("n{other}-r{r}-e{i}")));
                    let events = ids.iter().map(|id| audit(id)).collect();
                    let out = store.append_audit(&a, events).await.unwrap();
                    sent.push((ids, out));
                }
                sent
            })
        })
        .collect();
    let mut requests = Vec::new();
    for t in tasks {
        requests.extend(t.await.unwrap());
    }
    let log = audit_ids(&nodes[0], &a).await;
    let unique: HashSet<&str> = requests
        .iter()
        .flat_map(|(ids, _)| ids.iter().map(String::as_str))
        .collect();
    assert_eq!(unique.len(), 3 * REQUESTS * 50);
    // Every id exactly once, sequences 1..=n without a hole.
    assert_eq!(log.len(), unique.len());
    assert!(log
        .iter()
        .enumerate()
        .all(|(i, (seq, _))| *seq == i as u64 + 1));
    let stored: HashSet<&str> = log.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(stored, unique);
    let accepted: usize = requests.iter().map(|(_, o)| o.accepted).sum();
    assert_eq!(
        accepted,
        unique.len(),
        "each id accepted by exactly one request"
    );
    // A request's events are stored together and in the order it sent them.
    let position: BTreeMap<&str, u64> = log.iter().map(|(s, id)| (id.as_str(), *s)).collect();
    for (ids, out) in &requests {
        let own: Vec<u64> = ids[..50].iter().map(|id| position[id.as_str()]).collect();
        assert!(
            own.windows(2).all(|w| w[1] > w[0]),
            "a request's events keep its order"
        );
        assert_eq!(out.accepted + out.duplicates, 60);
    }
    assert_eq!(nodes[2].heads(&a).await.unwrap().audit, unique.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_job_snapshot_replaces_the_older_and_a_late_retry_does_not_reopen_it() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let a = AccountId::parse("acc").unwrap();
    let job = |id: &str, status: &str, progress: f64| {
        JobSnapshot::from_json(
            &json!({"job": id, "type": "backup", "status": status, "progress": progress}),
            0,
            Utc::now(),
        )
        .unwrap()
    };
    s.put_jobs(
        &a,
        vec![job("j1", "in progress", 0.1), job("j2", "in progress", 0.2)],
    )
    .await
    .unwrap();
    s.put_jobs(&a, vec![job("j1", "successful", 1.0)])
        .await
        .unwrap();
    s.put_jobs(&a, vec![job("j1", "successful", 1.0)])
        .await
        .unwrap();
    s.put_jobs(&a, vec![job("j1", "in progress", 0.5)])
        .await
        .unwrap();
    let mut changed = Vec::new();
    s.jobs_changed_after(&a, 0, |j| {
        changed.push((j.change_seq, j.snapshot.job, j.snapshot.status));
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(
        changed,
        vec![
            (2, "j2".into(), "in progress".into()),
            (3, "j1".into(), "successful".into())
        ]
    );
    let running: Vec<String> = s
        .running_jobs(&a, None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.snapshot.job)
        .collect();
    assert_eq!(running, vec!["j2".to_string()]);
    assert_eq!(s.heads(&a).await.unwrap().jobs, 3);
    assert_eq!(s.job_backlog(&a, 2).await.unwrap().0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integration_changes_only_from_the_version_it_was_read_at_and_its_token_is_sealed() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |o| {
        o.secret_key = Some("a long secret key for the test".into())
    })
    .await;
    let it = integration("acme");
    assert_eq!(s.put_integration(&it, Expected::New).await.unwrap(), 1);
    assert!(matches!(
        s.put_integration(&it, Expected::New).await,
        Err(PgError::VersionConflict {
            actual: Some(1),
            ..
        })
    ));
    let renamed = Integration {
        name: "Other".into(),
        ..it.clone()
    };
    assert_eq!(
        s.put_integration(&renamed, Expected::Version(1))
            .await
            .unwrap(),
        2
    );
    // A writer that read version 1 lost the race.
    let stale = Integration {
        enabled: false,
        ..it.clone()
    };
    assert!(matches!(
        s.put_integration(&stale, Expected::Version(1)).await,
        Err(PgError::VersionConflict {
            expected: Some(1),
            actual: Some(2),
            ..
        })
    ));
    let read = s.integration(&it.account, &it.id).await.unwrap().unwrap();
    assert_eq!(
        (read.version, read.value.name.as_str(), read.value.enabled),
        (2, "Other", true)
    );
    assert_eq!(read.value.hec_token, it.hec_token, "opened for the caller");
    // At rest the token is sealed.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let raw: String = client
        .query_one("SELECT doc::text FROM integrations", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !raw.contains("11111111-2222") && raw.contains("enc:v1:"),
        "{raw}"
    );
    assert!(s.delete_integration(&it.account, &it.id).await.unwrap());
    assert!(matches!(
        s.put_integration(&it, Expected::Version(2)).await,
        Err(PgError::Gone)
    ));
}

/// The fence of integration `id`'s commits on `node` after one balancing round,
/// which must leave it holding the integration's shard.
async fn fence_of(node: &PgStore, id: &uuid::Uuid) -> Fence {
    round(node)
        .await
        .fence(node.node_name(), node.shard_of(id))
        .expect("this node holds the integration's shard")
}

/// One lease round of `node` that went through: a round given up under load
/// (`Busy`: past its own lock or idle time limit, a fraction of a short lease)
/// is tried again, as the node's lease loop does on its next tick.
async fn round(node: &PgStore) -> siemsync::store::postgres::Holdings {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.balance().await {
            Ok(h) => return h,
            Err(PgError::Busy(why)) if Instant::now() < deadline => {
                eprintln!("a lease round was given up ({why}); trying again");
            }
            Err(e) => panic!("a lease round failed: {e}"),
        }
    }
}

/// Runs `node`'s lease rounds until it holds `shard` (another node's lease on it
/// lapsed): its fence there.
async fn claimed(node: &PgStore, name: &str, shard: i32) -> Fence {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(f) = round(node).await.fence(name, shard) {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never claimed shard {shard}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_lease_can_never_commit_a_checkpoint_again() {
    let Some(url) = fresh_database() else { return };
    let short = |o: &mut PgOptions| o.lease = Duration::from_secs(1);
    let a = node(&url, "node-a", short).await;
    let b = node(&url, "node-b", short).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let shard = a.shard_of(&it.id);
    let held = round(&a).await;
    assert_eq!(held.held.len(), 256, "alone, node A holds every shard");
    let fence_a = held.fence("node-a", shard).unwrap();
    a.commit(&it.account, &it.id, &audit_cp(10), &[], &fence_a)
        .await
        .unwrap();
    // Node A stops renewing (paused); its lease expires and node B claims the shard.
    let fence_b = claimed(&b, "node-b", shard).await;
    assert!(fence_b.epoch > fence_a.epoch);
    // A wakes up and tries to commit what it posted meanwhile: refused.
    let e = a
        .commit(&it.account, &it.id, &audit_cp(20), &[], &fence_a)
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::LeaseLost { .. }), "{e}");
    assert_eq!(a.checkpoint(&it.id).await.unwrap().audit_seq, 10);
    b.commit(&it.account, &it.id, &audit_cp(30), &[], &fence_b)
        .await
        .unwrap();
    // Even when A's balance claims the shard back later, its old fence stays dead.
    let e = a
        .commit(&it.account, &it.id, &audit_cp(40), &[], &fence_a)
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::LeaseLost { .. }), "{e}");
    // The commit log: one owner per epoch, epochs only grow.
    let log = a.commit_log(&it.id).await.unwrap();
    let owners: Vec<(String, i64, i64)> = log
        .iter()
        .map(|r| (r.node.clone(), r.epoch, r.audit_seq))
        .collect();
    assert_eq!(
        owners,
        vec![
            ("node-a".into(), fence_a.epoch, 10),
            ("node-b".into(), fence_b.epoch, 30)
        ]
    );
    assert_eq!(a.checkpoint(&it.id).await.unwrap().audit_seq, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_expired_unclaimed_fences_too() {
    let Some(url) = fresh_database() else { return };
    let a = node(&url, "node-a", |o| o.lease = Duration::from_secs(1)).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&a, &it.id).await;
    wait_until("node A's leases to expire", 10, || async {
        a.nodes().await.unwrap().iter().all(|n| n.shards == 0)
    })
    .await;
    let e = a
        .commit(&it.account, &it.id, &audit_cp(5), &[], &fence)
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::LeaseLost { .. }), "{e}");
    // Renewing again takes a new epoch: the old fence stays refused.
    let again = fence_of(&a, &it.id).await;
    assert!(again.epoch > fence.epoch);
    let e = a
        .commit(&it.account, &it.id, &Checkpoint::default(), &[], &fence)
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::LeaseLost { .. }), "{e}");
    a.commit(&it.account, &it.id, &audit_cp(5), &[], &again)
        .await
        .unwrap();
}

/// The listener's next signal, within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_record_written_under_a_stale_fence_is_refused_and_the_new_holders_stays() {
    let Some(url) = fresh_database() else { return };
    let short = |o: &mut PgOptions| o.lease = Duration::from_secs(1);
    let a = node(&url, "node-a", short).await;
    let b = node(&url, "node-b", short).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let shard = a.shard_of(&it.id);
    let fence_a = round(&a).await.fence("node-a", shard).unwrap();
    a.put_replay_fenced(&it.account, &it.id, &json!({"after": 10}), &fence_a)
        .await
        .unwrap();
    // Node A stops renewing (paused); node B claims the shard and resumes the
    // replay from A's record, recording its own progress.
    let fence_b = claimed(&b, "node-b", shard).await;
    b.put_replay_fenced(&it.account, &it.id, &json!({"after": 50}), &fence_b)
        .await
        .unwrap();
    // A resumes and records the progress of the replay it ran: refused.
    let e = a
        .put_replay_fenced(&it.account, &it.id, &json!({"after": 20}), &fence_a)
        .await
        .unwrap_err();
    assert!(matches!(e, PgError::LeaseLost { .. }), "{e}");
    let kept: Option<serde_json::Value> = b.replay(&it.id).await.unwrap();
    assert_eq!(
        kept,
        Some(json!({"after": 50})),
        "the new holder's record stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replays_late_progress_never_undoes_its_end_a_cancel_or_a_replay_asked_for_elsewhere() {
    let Some(url) = fresh_database() else { return };
    let a = node(&url, "node-a", |_| {}).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&a, &it.id).await;
    fn doc(id: &str, state: &str, sent: u64) -> serde_json::Value {
        json!({"after": sent, "progress": {"id": id, "state": state, "sent": sent}})
    }
    let stored = || async { a.replay::<serde_json::Value>(&it.id).await.unwrap() };
    // Replay r1 runs here and records its progress.
    a.put_replay_fenced(&it.account, &it.id, &doc("r1", "running", 10), &fence)
        .await
        .unwrap();
    assert_eq!(stored().await, Some(doc("r1", "running", 10)));
    // Another node cancels it; r1's actor records once more before it hears of it.
    a.change_replay(&it.account, &it.id, |_| {
        (Some(doc("r1", "cancelled", 10)), ())
    })
    .await
    .unwrap();
    a.put_replay_fenced(&it.account, &it.id, &doc("r1", "running", 20), &fence)
        .await
        .unwrap();
    a.put_replay(&it.id, &doc("r1", "done", 30)).await.unwrap();
    assert_eq!(
        stored().await,
        Some(doc("r1", "cancelled", 10)),
        "a cancel is final"
    );
    // Another node asks for r2 (stored as running until this node picks it up);
    // r1's late progress must not overwrite the request.
    a.change_replay(&it.account, &it.id, |_| (Some(doc("r2", "running", 0)), ()))
        .await
        .unwrap();
    a.put_replay_fenced(&it.account, &it.id, &doc("r1", "running", 40), &fence)
        .await
        .unwrap();
    a.put_replay(&it.id, &doc("r1", "cancelled", 40))
        .await
        .unwrap();
    assert_eq!(
        stored().await,
        Some(doc("r2", "running", 0)),
        "the replay asked for elsewhere stays"
    );
    // r2 runs and ends; a new replay r3 may then replace its record.
    a.put_replay_fenced(&it.account, &it.id, &doc("r2", "done", 5), &fence)
        .await
        .unwrap();
    a.put_replay(&it.id, &doc("r3", "running", 0))
        .await
        .unwrap();
    assert_eq!(stored().await, Some(doc("r3", "running", 0)));
    // r3 ends; a late write of it as running (an actor that had not stopped yet)
    // does not bring it back.
    a.put_replay_fenced(&it.account, &it.id, &doc("r3", "done", 7), &fence)
        .await
        .unwrap();
    a.put_replay_fenced(&it.account, &it.id, &doc("r3", "running", 6), &fence)
        .await
        .unwrap();
    assert_eq!(
        stored().await,
        Some(doc("r3", "done", 7)),
        "an ended replay stays ended"
    );
}

/// A status as a node publishes it (no live observation: only who published it matters).
fn published_doc() -> serde_json::Value {
    serde_json::to_value(siemsync::actors::observation::Published {
        observation: None,
        restarts: Default::default(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_a_shard_publishes_no_status_for_it_and_its_old_record_is_no_answer() {
    use siemsync::http::status::published_elsewhere;
    let Some(url) = fresh_database() else { return };
    let a = node(&url, "node-a", |o| o.lease = Duration::from_secs(2)).await;
    let b = node(&url, "node-b", |o| o.lease = Duration::from_secs(30)).await;
    let reader = node(&url, "node-c", |_| {}).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let shard = a.shard_of(&it.id);
    let fresh = Duration::from_secs(600);
    let answer = |by: Option<&str>| {
        by.map(|n| {
            (
                n.to_string(),
                serde_json::from_value(published_doc()).unwrap(),
            )
        })
    };
    // Node A holds the shard and publishes: any other node answers with it.
    fence_of(&a, &it.id).await;
    a.publish_statuses(vec![(it.id, published_doc())])
        .await
        .unwrap();
    assert_eq!(
        published_elsewhere(&reader, &it.id, fresh).await.unwrap(),
        answer(Some("node-a"))
    );
    // A stops renewing (paused); B claims the shard. A's record is no answer any
    // more, although it is fresh: A no longer delivers the integration.
    claimed(&b, "node-b", shard).await;
    assert_eq!(
        published_elsewhere(&reader, &it.id, fresh).await.unwrap(),
        None,
        "the record of a node that lost the shard answered"
    );
    b.publish_statuses(vec![(it.id, published_doc())])
        .await
        .unwrap();
    assert_eq!(
        published_elsewhere(&reader, &it.id, fresh).await.unwrap(),
        answer(Some("node-b"))
    );
    // A resumes and publishes what it still observes: nothing is written, the
    // holder's record stays.
    a.publish_statuses(vec![(it.id, published_doc())])
        .await
        .unwrap();
    assert!(
        !a.publish_status(&it.id, &published_doc()).await.unwrap(),
        "a node without the shard published"
    );
    assert_eq!(
        reader
            .delivery_status(&it.id)
            .await
            .unwrap()
            .map(|p| p.node),
        Some("node-b".to_string()),
        "a node that lost the shard overwrote its holder's status"
    );
    assert_eq!(
        published_elsewhere(&reader, &it.id, fresh).await.unwrap(),
        answer(Some("node-b"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_replays_look_up_reads_an_index_of_the_running_ones_only() {
    let Some(url) = fresh_database() else { return };
    // Connecting migrates the database.
    let _node = node(&url, "n1", |_| {}).await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    // An empty table is read whole whatever the indexes: only whether the query
    // can use an index is asked.
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(
            &format!(
                "EXPLAIN {}",
                siemsync::store::postgres::RUNNING_REPLAYS_QUERY
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("replays_running"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "{plan}");
    drop(client);
    let _ = driver.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transaction_holding_the_balancing_lock_fails_a_round_within_a_fraction_of_the_lease(
) {
    let Some(url) = fresh_database() else { return };
    let lease = Duration::from_secs(3);
    let a = node(&url, "node-a", |o| o.lease = lease).await;
    round(&a).await;
    // Another node's round stalled mid-transaction (paused, its connection alive),
    // holding the lock every round takes first ("siemleas").
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(8316289707560755571)")
        .await
        .unwrap();
    let started = Instant::now();
    let e = a.balance().await.unwrap_err();
    let took = started.elapsed();
    eprintln!("the round gave up after {took:?}: {e}");
    assert!(matches!(e, PgError::Busy(_)), "{e}");
    assert!(
        took < lease / 3,
        "the round waited {took:?}, not less than the renewal period {:?}",
        lease / 3
    );
    // Its leases held meanwhile; the next round after the stall ends renews them.
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(round(&a).await.held.len(), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_claims_nothing_more_and_the_others_share_without_it() {
    let Some(url) = fresh_database() else { return };
    let short = |o: &mut PgOptions| o.lease = Duration::from_secs(2);
    let a = node(&url, "node-a", short).await;
    let b = node(&url, "node-b", short).await;
    // B alone takes every shard; A joins and B hands half over.
    assert_eq!(round(&b).await.held.len(), 256);
    assert_eq!(round(&a).await.held.len(), 0);
    let surplus = round(&b).await.surplus;
    assert_eq!(surplus.len(), 128);
    b.release(&surplus).await.unwrap();
    assert_eq!(round(&a).await.held.len(), 128);
    // A begins to shut down: its rounds keep what it holds (its actors still wind
    // down) but claim nothing, and it is not among the live nodes any more.
    a.begin_stopping().await.unwrap();
    let held_b = round(&b).await;
    assert_eq!(held_b.live_nodes, vec!["node-b".to_owned()]);
    assert_eq!(held_b.target, 256);
    assert_eq!(held_b.held.len(), 128, "A's shards are A's until it leaves");
    let held_a = round(&a).await;
    assert_eq!(held_a.held.len(), 128, "its own renewed");
    assert!(
        held_a.surplus.is_empty(),
        "nothing handed over while stopping"
    );
    let node_a = a
        .nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.name == "node-a")
        .unwrap();
    assert!(node_a.stopping, "{node_a:?}");
    a.leave().await.unwrap();
    assert_eq!(round(&b).await.held.len(), 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stops_posting_a_margin_before_its_lease_lapses_and_no_claim_comes_before_that() {
    let Some(url) = fresh_database() else { return };
    // A margin of a second: far above the scheduling delays of a loaded machine.
    let lease = Duration::from_secs(4);
    let a = node(&url, "node-a", |o| o.lease = lease).await;
    let b = node(&url, "node-b", |o| o.lease = lease).await;
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let shard = a.shard_of(&it.id);
    let fence_a = round(&a).await.fence("node-a", shard).unwrap();
    a.lease_lasts(&fence_a).await.unwrap();
    // A stops renewing (paused): PostgreSQL refuses its posts a margin before
    // the lease lapses...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match a.lease_lasts(&fence_a).await {
            Ok(()) => {}
            Err(PgError::LeaseLost { .. }) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(Instant::now() < deadline, "A's posts were never refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ... and no other node claims the shard until a margin after it lapsed: a
    // post A started just before the refusal has twice the margin to end.
    wait_until("A's lease to lapse", 10, || async {
        a.nodes()
            .await
            .unwrap()
            .iter()
            .any(|n| n.name == "node-a" && n.shards == 0)
    })
    .await;
    assert!(
        round(&b).await.fence("node-b", shard).is_none(),
        "node B claimed the shard as soon as it lapsed"
    );
    let fence_b = claimed(&b, "node-b", shard).await;
    b.lease_lasts(&fence_b).await.unwrap();
    assert!(a.lease_lasts(&fence_a).await.is_err());
}

/// Runs `node`'s lease rounds as its lease loop does (lib.rs `renew_leases`): one
/// every third of the lease, each cut after the round limit. The number of the
/// first round that went through holding shards, if one of the first `most` did.
async fn rounds_until_holding(node: &PgStore, most: u32) -> Option<u32> {
    let mut tick = tokio::time::interval(node.lease_time() / 3);
    for i in 1..=most {
        tick.tick().await;
        match tokio::time::timeout(node.round_limit(), node.balance()).await {
            Ok(Ok(h)) if !h.held.is_empty() => return Some(i),
            Ok(Ok(_)) => eprintln!("round {i}: nothing held"),
            Ok(Err(e)) => eprintln!("round {i} failed: {e}"),
            Err(_) => eprintln!("round {i} cut after {:?}", node.round_limit()),
        }
    }
    None
}

/// Node A (lease 2 s) on a new database whose URL lists first a port bound now,
/// listening later — the test makes it misbehave then — and the real server
/// second. Not listening yet, the first host refuses connections, so the node's
/// start goes on to the real server at once. No connect_timeout in the URL: the
/// default, 5 s per host.
async fn node_behind_a_bad_first_host(c: &PgCluster) -> (PgStore, tokio::net::TcpSocket) {
    let db = c.create_database().expect("creating a test database");
    let first = tokio::net::TcpSocket::new_v4().unwrap();
    first.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url = format!(
        "postgresql://postgres@{},127.0.0.1:{}/{db}?target_session_attrs=read-write",
        first.local_addr().unwrap(),
        c.primary_port()
    );
    let a = node(&url, "node-a", |o| o.lease = Duration::from_secs(2)).await;
    (a, first)
}

/// Node A's lease rounds get through within three rounds, and its control
/// listener within 2 s, past a first host that never lets a connection finish.
async fn reaches_the_second_host(a: &PgStore) {
    let first = rounds_until_holding(a, 3).await;
    assert!(
        first.is_some(),
        "no lease round within the first three reached the second host"
    );
    // The listener's attempts are never cut, but each one should not wait out
    // the 5 s on the first host.
    let mut listener = a.listen();
    let signal = tokio::time::timeout(Duration::from_secs(2), listener.recv()).await;
    assert_eq!(
        signal.expect("the listener listening within 2 s"),
        Some(ControlSignal::Listening)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rounds_and_the_listener_reach_the_second_host_when_the_first_drops_every_packet() {
    let Some(c) = cluster() else { return };
    let (a, hole) = node_behind_a_bad_first_host(c).await;
    // Listening with a full accept queue that is never accepted, the kernel drops
    // every further SYN, as for a primary whose machine died: a connect there
    // hangs until its timeout.
    let hole_addr = hole.local_addr().unwrap();
    let hole = hole.listen(0).unwrap();
    let mut queued = Vec::new();
    loop {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(hole_addr),
        )
        .await
        {
            Ok(Ok(s)) => queued.push(s),
            Ok(Err(e)) => panic!("the first host refused instead of dropping: {e}"),
            Err(_) => break,
        }
        assert!(queued.len() < 16, "the accept queue never filled");
    }
    // Before the fix every round's connection attempt waited 5 s on the first
    // host and was cut after half a second: none reached the second.
    reaches_the_second_host(&a).await;
    drop(hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_rounds_and_the_listener_reach_the_second_host_when_the_first_accepts_and_never_answers(
) {
    let Some(c) = cluster() else { return };
    let (a, mute) = node_behind_a_bad_first_host(c).await;
    // It accepts every connection and never says a word, as a hung server process
    // or a proxy in front of a dead one does.
    let mute = mute.listen(64).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = mute.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    // Before the fix the TCP handshake succeeded at once and the startup waited
    // for an answer until the round was cut: none reached the second host.
    reaches_the_second_host(&a).await;
    assert!(
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the first host was not tried by both"
    );
    holder.abort();
}

/// Waits until no lease on the database `url` lasts, nor lapsed less than
/// `margin` ago: every shard is claimable.
async fn every_lease_lapsed(url: &str, margin: Duration) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    wait_until("every lease to lapse a margin ago", 20, || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM shard_leases
                 WHERE expires_at > clock_timestamp() - make_interval(secs => $1)",
                &[&margin.as_secs_f64()],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) == 0
    })
    .await;
    drop(client);
    let _ = driver.await;
}

/// Three nodes on `url` with `lease`, settled: the nodes and what each holds then.
async fn three_settled_nodes(
    url: &str,
    lease: Duration,
) -> ([PgStore; 3], Vec<siemsync::store::postgres::Holdings>) {
    let a = node(url, "node-a", |o| o.lease = lease).await;
    let b = node(url, "node-b", |o| o.lease = lease).await;
    let c = node(url, "node-c", |o| o.lease = lease).await;
    settle(&[&a, &b, &c]).await;
    let mut held = Vec::new();
    for n in [&a, &b, &c] {
        held.push(round(n).await);
    }
    ([a, b, c], held)
}

/// Asserts that a node's round back after a lapse got exactly `own`, the shards
/// it held before, and has nothing to hand over.
fn assert_own_shards_back(h: &siemsync::store::postgres::Holdings, own: &[i32], what: &str) {
    let held: Vec<i32> = h.held.keys().copied().collect();
    assert_eq!(held, own, "{what}: its own shards back, no more");
    assert!(h.surplus.is_empty(), "{what}: nothing to hand over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_lease_lapsed_each_node_back_claims_only_its_share_and_one_left_alone_gets_all()
{
    let Some(url) = fresh_database() else { return };
    let lease = Duration::from_secs(2);
    let ([a, b, c], held) = three_settled_nodes(&url, lease).await;
    let leases: Vec<_> = held.iter().map(|h| h.kept_leases()).collect();
    let before: Vec<Vec<i32>> = held
        .iter()
        .map(|h| h.held.keys().copied().collect())
        .collect();
    // PostgreSQL unreachable for everyone (no node renews) past the lease and its
    // claim margin: every lease lapsed, every node's heartbeat too.
    every_lease_lapsed(&url, lease / 2).await;
    // The first node back takes its share among the nodes live just before the
    // lapse (its own shards), not all 256 to hand most back as the others return;
    // each of the others gets its own back.
    for (i, n) in [&a, &b, &c].into_iter().enumerate() {
        let h = round(n).await;
        assert_own_shards_back(&h, &before[i], n.node_name());
        // Claimed back with nobody in between: one epoch up, which is what tells
        // the node its actors of them are not stale and go on (a shard another
        // node held meanwhile would be two or more up, and restarted).
        let up: BTreeMap<i32, i64> = leases[i].iter().map(|(&s, &e)| (s, e + 1)).collect();
        assert_eq!(
            h.kept_leases(),
            up,
            "{}: each shard one epoch up",
            n.node_name()
        );
    }
    // Lapsed again, and only A comes back: the others stop counting once A's
    // heartbeat is newer than their lapse, and A takes every shard.
    every_lease_lapsed(&url, lease / 2).await;
    assert_eq!(round(&a).await.held.len(), before[0].len());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = round(&a).await.held.len();
        if held == 256 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A alone holds {held} shards, not every one"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_lease_lapsed_a_node_back_rounds_after_the_first_still_gets_its_own_shards() {
    let Some(url) = fresh_database() else { return };
    let lease = Duration::from_secs(2);
    let ([a, b, c], held) = three_settled_nodes(&url, lease).await;
    let before: Vec<Vec<i32>> = held
        .iter()
        .map(|h| h.held.keys().copied().collect())
        .collect();
    every_lease_lapsed(&url, lease / 2).await;
    // A is back first and runs three rounds (its connections found the promoted
    // server first) before B's first round back, then C's: all within a lease of
    // A's return, so A keeps counting B and C and leaves them their shards.
    let back = Instant::now();
    for i in 1..=3 {
        assert_own_shards_back(&round(&a).await, &before[0], &format!("A's round {i} back"));
    }
    assert_own_shards_back(
        &round(&b).await,
        &before[1],
        "B, back after A's third round",
    );
    assert_own_shards_back(&round(&c).await, &before[2], "C, back after B");
    assert_own_shards_back(&round(&a).await, &before[0], "A's round after B's and C's");
    // What the window guarantees holds only if all of that came within it.
    assert!(
        back.elapsed() < lease,
        "the rounds took {:?}, longer than the lease: the test proves nothing",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_lapse_of_its_own_is_not_held_back_by_a_node_that_died_meanwhile() {
    let Some(url) = fresh_database() else { return };
    let lease = Duration::from_secs(2);
    let ([a, b, c], _) = three_settled_nodes(&url, lease).await;
    // C dies and A stalls, both just after their last rounds; B renews on time.
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut b_round = Instant::now();
    loop {
        let nodes = b.nodes().await.unwrap();
        if nodes.iter().any(|n| n.name == "node-a" && !n.alive) {
            break;
        }
        assert!(Instant::now() < deadline, "A's heartbeat never lapsed");
        if b_round.elapsed() >= lease / 3 {
            round(&b).await;
            b_round = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A is back (within the claim margin: B could not take its shards). Its
    // lapse was its own, B stayed live: C, live at A's last heartbeat, is not
    // counted, and A takes its share of A and B as soon as C's shards are
    // claimable, not a lease later.
    let back = Instant::now();
    loop {
        let h = round(&a).await;
        if h.held.len() == 128 {
            break;
        }
        assert!(
            back.elapsed() < lease * 3 / 4,
            "A was held back at {} shards of its share of 128",
            h.held.len()
        );
        round(&b).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn next(l: &mut siemsync::store::postgres::ControlListener) -> ControlSignal {
    tokio::time::timeout(Duration::from_secs(1), l.recv())
        .await
        .expect("a signal within a second")
        .expect("listening")
}

/// Runs balancing rounds (releasing surplus as a node would after stopping its
/// actors) until every node holds its share; returns the shares.
async fn settle(nodes: &[&PgStore]) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut shares = Vec::new();
        let mut stable = true;
        for n in nodes {
            let h = n.balance().await.unwrap();
            if !h.surplus.is_empty() {
                n.release(&h.surplus).await.unwrap();
            }
            stable &= h.held.len() == h.target && h.surplus.is_empty();
            shares.push(h.held.len());
        }
        if stable {
            return shares;
        }
        assert!(
            Instant::now() < deadline,
            "shares did not settle: {shares:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_spread_evenly_over_the_live_nodes_and_a_leaving_node_hands_them_back_at_once() {
    let Some(url) = fresh_database() else { return };
    let lease = |o: &mut PgOptions| o.lease = Duration::from_secs(30);
    let n1 = node(&url, "n1", lease).await;
    let n2 = node(&url, "n2", lease).await;
    let n3 = node(&url, "n3", lease).await;
    assert_eq!(settle(&[&n1]).await, vec![256]);
    assert_eq!(settle(&[&n1, &n2]).await, vec![128, 128]);
    let mut shares = settle(&[&n1, &n2, &n3]).await;
    shares.sort();
    assert_eq!(shares, vec![85, 85, 86]);
    let nodes = n1.nodes().await.unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.shards).sum::<i64>(),
        256,
        "no shard held twice or lost"
    );
    // A clean stop hands its shards back at once, long before its 30 s lease ends.
    n3.leave().await.unwrap();
    assert_eq!(settle(&[&n1, &n2]).await, vec![128, 128]);
    let nodes = n1.nodes().await.unwrap();
    assert!(nodes
        .iter()
        .any(|n| n.name == "n3" && n.stopping && n.shards == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_change_on_one_node_reaches_a_listening_node_within_a_second() {
    let Some(url) = fresh_database() else { return };
    let a = node(&url, "n1", |_| {}).await;
    let b = node(&url, "n2", |_| {}).await;
    let mut listener = b.listen();
    assert_eq!(next(&mut listener).await, ControlSignal::Listening);
    let it = integration("acme");
    a.put_integration(&it, Expected::New).await.unwrap();
    let ControlSignal::Event(e) = next(&mut listener).await else {
        panic!("an event")
    };
    assert_eq!(
        (e.integration, e.action.clone()),
        (it.id, ControlAction::Changed { version: 1 })
    );
    assert_eq!(e.shard, b.shard_of(&it.id));
    let sync_now = siemsync::store::postgres::ControlEvent {
        action: ControlAction::SyncNow,
        ..e
    };
    a.notify(&sync_now).await.unwrap();
    assert_eq!(next(&mut listener).await, ControlSignal::Event(sync_now));
    // A change that does not commit announces nothing.
    assert!(a.put_integration(&it, Expected::New).await.is_err());
    a.delete_integration(&it.account, &it.id).await.unwrap();
    let ControlSignal::Event(e) = next(&mut listener).await else {
        panic!("an event")
    };
    assert_eq!(e.action, ControlAction::Deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_delivered_partitions_records_exact_gaps_and_keeps_the_dedup_ids() {
    let Some(url) = fresh_database() else { return };
    let tune = |o: &mut PgOptions| {
        o.partition_width = Duration::from_secs(1);
        o.partition_grace = Duration::from_secs(1);
        o.dedup_window = 1000;
        o.lease = Duration::from_secs(30);
    };
    let s = node(&url, "n1", tune).await;
    let (acme, other) = (
        AccountId::parse("acme").unwrap(),
        AccountId::parse("other").unwrap(),
    );
    let reader = integration("acme");
    s.put_integration(&reader, Expected::New).await.unwrap();
    let fence = fence_of(&s, &reader.id).await;
    let ids = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| audit(&format!("e{i}")))
            .collect::<Vec<_>>()
    };
    s.append_audit(&acme, ids(0, 100)).await.unwrap();
    s.append_audit(&other, ids(0, 10)).await.unwrap();
    // The reader delivered 40 of acme's 100.
    s.commit(&acme, &reader.id, &audit_cp(40), &[], &fence)
        .await
        .unwrap();
    // Once the partitions closed, a long retention drops nothing undelivered: acme's
    // reader is behind, and `other` has no reader at all.
    let long = Duration::from_secs(3600);
    wait_until("the first partitions to close", 10, || async {
        s.sweep(long).await.unwrap();
        s.audit_backlog(&acme, 0).await.unwrap().0 == 100
    })
    .await;
    assert_eq!(audit_ids(&s, &other).await.len(), 10);
    // Past the retention everything goes, and the reader's gap is exactly the 60
    // events it had not delivered.
    let mut dropped = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(audit_ids(&s, &acme).await.is_empty() && audit_ids(&s, &other).await.is_empty()) {
        assert!(
            Instant::now() < deadline,
            "retention did not drop the old partitions"
        );
        dropped += s
            .sweep(Duration::from_millis(1))
            .await
            .unwrap()
            .audit_events;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped, 110);
    let gaps = s.gaps(&reader.id).await.unwrap();
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].count, 60);
    // The ids stay checkable for the whole window after their events went.
    let out = s.append_audit(&acme, ids(95, 10)).await.unwrap();
    assert_eq!((out.accepted, out.duplicates), (5, 5));
    assert_eq!(s.heads(&acme).await.unwrap().audit, 105);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fully_delivered_partition_goes_before_the_retention() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |o| {
        o.partition_width = Duration::from_secs(1);
        o.partition_grace = Duration::from_secs(1);
    })
    .await;
    let acme = AccountId::parse("acme").unwrap();
    let reader = integration("acme");
    s.put_integration(&reader, Expected::New).await.unwrap();
    let fence = fence_of(&s, &reader.id).await;
    s.append_audit(&acme, (0..20).map(|i| audit(&format!("e{i}"))).collect())
        .await
        .unwrap();
    s.commit(&acme, &reader.id, &audit_cp(20), &[], &fence)
        .await
        .unwrap();
    wait_until("the delivered partition to go", 10, || async {
        s.sweep(Duration::from_secs(3600)).await.unwrap();
        audit_ids(&s, &acme).await.is_empty()
    })
    .await;
    assert!(
        s.gaps(&reader.id).await.unwrap().is_empty(),
        "nothing undelivered was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrations_records_are_kept_while_it_exists_and_go_with_it() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let it = integration("acme");
    s.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&s, &it.id).await;
    let dead = siemsync::store::DeadLetter {
        id: s.next_id().await.unwrap(),
        at: Utc::now(),
        source: siemsync::model::Source::Audit,
        seq: 7,
        reason: Default::default(),
        event: json!({"event": "refused"}),
    };
    s.commit(
        &it.account,
        &it.id,
        &audit_cp(7),
        std::slice::from_ref(&dead),
        &fence,
    )
    .await
    .unwrap();
    assert!(s.next_id().await.unwrap() > dead.id, "dead letter ids grow");
    assert_eq!(s.dead_letters(&it.id, 10).await.unwrap(), (1, vec![dead]));
    let report = siemsync::hec::check::ConnectionReport {
        ok: true,
        checked_at: Utc::now(),
        summary: "works".into(),
        steps: vec![],
    };
    s.put_connection_report(&it.id, &report).await.unwrap();
    assert_eq!(
        s.connection_report(&it.id).await.unwrap(),
        Some(report.clone())
    );
    s.put_replay(&it.id, &json!({"state": "running"}))
        .await
        .unwrap();
    let replay: Option<serde_json::Value> = s.replay(&it.id).await.unwrap();
    assert_eq!(replay, Some(json!({"state": "running"})));
    assert!(s
        .publish_status(&it.id, &json!({"state": "delivering", "backlog": 3}))
        .await
        .unwrap());
    // Any node answers with what the delivering node published.
    let other = node(&url, "n2", |_| {}).await;
    let published = other.delivery_status(&it.id).await.unwrap().unwrap();
    assert_eq!(published.node, "n1");
    assert_eq!(published.status["backlog"], 3);
    assert!(s.delete_integration(&it.account, &it.id).await.unwrap());
    assert_eq!(s.dead_letters(&it.id, 10).await.unwrap().0, 0);
    assert_eq!(
        s.connection_report::<siemsync::hec::check::ConnectionReport>(&it.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.replay::<serde_json::Value>(&it.id).await.unwrap(), None);
    assert_eq!(s.delivery_status(&it.id).await.unwrap(), None);
    assert_eq!(s.checkpoint(&it.id).await.unwrap(), Checkpoint::default());
    // Nothing can be recorded for an integration that is gone.
    assert!(matches!(
        s.put_connection_report(&it.id, &report).await,
        Err(PgError::Gone)
    ));
    assert!(matches!(
        s.publish_status(&it.id, &json!({})).await,
        Err(PgError::Gone)
    ));
    assert!(matches!(
        s.commit(&it.account, &it.id, &audit_cp(9), &[], &fence)
            .await,
        Err(PgError::Gone)
    ));
}

/// A sync record as the integration actor writes one (times to the microsecond, as stored).
fn sync(started_at: chrono::DateTime<Utc>, events: u64) -> SyncRecord {
    SyncRecord {
        started_at: chrono::SubsecRound::trunc_subsecs(started_at, 6),
        duration_ms: 40,
        result: SyncResult::of(events, false),
        events: PerSource {
            audit: events,
            jobs: 2,
        },
        bytes: PerSource {
            audit: events * 500,
            jobs: 900,
        },
        dead_lettered: 0,
        backlog_after: Some(0),
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_integrations_sync_history_moves_between_nodes_is_bounded_and_goes_with_it() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let it = integration("acme");
    s.put_integration(&it, Expected::New).await.unwrap();
    s.put_account(&it.account, &Account::enabled(Utc::now()))
        .await
        .unwrap();
    let t0 = chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::Duration::hours(1), 6);
    let failed = SyncRecord {
        result: SyncResult::Failed,
        events: PerSource::default(),
        bytes: PerSource::default(),
        backlog_after: Some(12),
        error: Some(SyncError {
            failure: classify(403, br#"{"text":"Invalid token","code":4}"#)
                .failure()
                .cloned()
                .unwrap(),
            kind: FailureKind::Configuration,
        }),
        ..sync(t0 + chrono::Duration::minutes(5), 0)
    };
    s.record_sync(&it.account, &it.id, &sync(t0, 3))
        .await
        .unwrap();
    s.record_sync(&it.account, &it.id, &failed).await.unwrap();
    // Another node (the one the integration's shard moves to) reads the same history.
    let other = node(&url, "n2", |_| {}).await;
    assert_eq!(
        other.history(&it.id, t0, 100).await.unwrap(),
        vec![failed.clone(), sync(t0, 3)],
        "newest first, as written"
    );
    assert_eq!(
        other
            .history(&it.id, t0 + chrono::Duration::minutes(1), 100)
            .await
            .unwrap(),
        vec![failed.clone()]
    );
    assert_eq!(
        other.history(&it.id, t0, 1).await.unwrap(),
        vec![failed.clone()]
    );
    let summary = other.sync_summary(&it.id).await.unwrap().unwrap();
    assert_eq!(summary.last, failed);
    assert_eq!(summary.last_success, Some(sync(t0, 3).finished_at()));
    let attempt = Some(Attempt {
        at: failed.finished_at(),
        error: failed.error.clone(),
    });
    assert_eq!(summary.last_attempt, attempt);
    // Nothing to send proves nothing about the connection: the failed post still counts.
    let skipped = SyncRecord {
        events: PerSource::default(),
        ..sync(t0 + chrono::Duration::minutes(10), 0)
    };
    assert_eq!(skipped.result, SyncResult::Skipped);
    other
        .record_sync(&it.account, &it.id, &skipped)
        .await
        .unwrap();
    let summary = s.sync_summary(&it.id).await.unwrap().unwrap();
    assert_eq!((&summary.last, &summary.last_attempt), (&skipped, &attempt));
    assert_eq!(summary.last_success, Some(skipped.finished_at()));
    let rows = other.overview_rows().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].id,
            rows[0].name.as_str(),
            rows[0].enabled,
            rows[0].active
        ),
        (it.id, "Main Splunk", true, true)
    );
    assert_eq!(rows[0].summary.as_deref(), Some(&summary));

    // Bounded: older than 7 days goes when the next is recorded, and at most 2,000 stay.
    let epoch = chrono::DateTime::<Utc>::UNIX_EPOCH;
    let recent = sync(Utc::now() - chrono::Duration::days(6), 4);
    s.record_sync(
        &it.account,
        &it.id,
        &sync(Utc::now() - chrono::Duration::days(8), 1),
    )
    .await
    .unwrap();
    s.record_sync(&it.account, &it.id, &recent).await.unwrap();
    let kept = s.history(&it.id, epoch, usize::MAX).await.unwrap();
    assert_eq!(kept.len(), 4, "the 8-day-old sync went: {kept:#?}");
    assert_eq!(kept[0], recent);
    let start = Utc::now() - chrono::Duration::minutes(30);
    for i in 0..HISTORY_MAX_RECORDS + 5 {
        let r = sync(start + chrono::Duration::milliseconds(i as i64), i);
        s.record_sync(&it.account, &it.id, &r).await.unwrap();
    }
    let kept = s.history(&it.id, epoch, usize::MAX).await.unwrap();
    assert_eq!(kept.len() as u64, HISTORY_MAX_RECORDS);
    assert_eq!(kept[0].events.audit, HISTORY_MAX_RECORDS + 4, "the newest");
    assert_eq!(
        kept.last().unwrap().events.audit,
        5,
        "the oldest went first"
    );

    // Deleting the integration deletes its history, and nothing is recorded after.
    assert!(s.delete_integration(&it.account, &it.id).await.unwrap());
    assert!(s.history(&it.id, epoch, 100).await.unwrap().is_empty());
    assert_eq!(s.sync_summary(&it.id).await.unwrap(), None);
    assert!(matches!(
        other
            .record_sync(&it.account, &it.id, &sync(Utc::now(), 1))
            .await,
        Err(PgError::Gone)
    ));
    assert!(other.history(&it.id, epoch, 100).await.unwrap().is_empty());
    assert!(other.overview_rows().await.unwrap().is_empty());
    let client = {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c
    };
    for table in ["sync_history", "sync_summaries"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{table} is empty after the delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_token_is_found_by_its_secret_and_revoked_by_its_id() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let a = AccountId::parse("acme").unwrap();
    let (t, secret) = s.create_token(&a, Some("ci".into())).await.unwrap();
    assert!(secret.starts_with("ssa_") && secret.len() == 68);
    assert_eq!(s.token_for_secret(&secret).await.unwrap(), Some(t.clone()));
    assert_eq!(s.token_for_secret("ssa_nope").await.unwrap(), None);
    assert_eq!(s.tokens_of(&a).await.unwrap(), vec![t.clone()]);
    let other = AccountId::parse("other").unwrap();
    assert!(!s.delete_token(&other, &t.id).await.unwrap());
    assert!(s.delete_token(&a, &t.id).await.unwrap());
    assert_eq!(s.token_for_secret(&secret).await.unwrap(), None);
    // Only the hash is kept.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    s.create_token(&a, None).await.unwrap();
    let stored: String = client
        .query_one("SELECT row_to_json(t)::text FROM account_tokens t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains("ssa_"), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_own_ingest_limits_are_kept_and_read_on_another_node() {
    let Some(url) = fresh_database() else { return };
    let (n1, n2) = (
        node(&url, "n1", |_| {}).await,
        node(&url, "n2", |_| {}).await,
    );
    let a = AccountId::parse("acme").unwrap();
    let mut account = Account::enabled(Utc::now());
    n1.put_account(&a, &account).await.unwrap();
    assert_eq!(n2.account(&a).await.unwrap().unwrap().ingest_burst, None);
    account.ingest_events_per_sec = Some(10);
    account.ingest_burst = Some(300);
    account.max_backlog_bytes = Some(400_000);
    n1.put_account(&a, &account).await.unwrap();
    let read = n2.account(&a).await.unwrap().unwrap();
    assert_eq!(
        (
            read.ingest_events_per_sec,
            read.ingest_burst,
            read.max_backlog_bytes
        ),
        (Some(10), Some(300), Some(400_000))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_finished_job_is_swept_and_a_late_retry_does_not_bring_it_back() {
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let a = AccountId::parse("acme").unwrap();
    let it = integration("acme");
    s.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&s, &it.id).await;
    let job = |id: &str, status: &str| {
        JobSnapshot::from_json(
            &json!({"job": id, "type": "backup", "status": status}),
            0,
            Utc::now(),
        )
        .unwrap()
    };
    s.put_jobs(
        &a,
        vec![job("done", "successful"), job("busy", "in progress")],
    )
    .await
    .unwrap();
    let cp = Checkpoint {
        job_seq: 2,
        ..Checkpoint::default()
    };
    s.commit(&a, &it.id, &cp, &[], &fence).await.unwrap();
    let out = s.sweep(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        out.jobs, 1,
        "the finished, delivered job goes; the running one stays"
    );
    s.put_jobs(&a, vec![job("done", "in progress")])
        .await
        .unwrap();
    assert!(s.jobs_changed(&a, 2, 10).await.unwrap().is_empty());
    let running: Vec<String> = s
        .running_jobs(&a, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.snapshot.job)
        .collect();
    assert_eq!(running, vec!["busy".to_string()]);
    assert!(s.gaps(&it.id).await.unwrap().is_empty());
}

#[test]
fn a_thread_outside_any_runtime_uses_the_store_through_block_on() {
    let Some(url) = fresh_database() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s = rt.block_on(node(&url, "n1", |_| {}));
    let a = AccountId::parse("acme").unwrap();
    // As a sync collector thread would: no runtime of its own.
    let heads = std::thread::spawn(move || {
        s.block_on(s.append_audit(&a, vec![audit("1")])).unwrap();
        s.block_on(s.heads(&a)).unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(heads.audit, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_does_not_clear_the_fault_only_a_write_does() {
    let Some(url) = fresh_database() else { return };
    let store = node(&url, "reader", |_| {}).await;
    let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let db: String = admin
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    // The database takes reads but no writes (as a standby would): the store's
    // connections are cut, and the new ones are read-only.
    let cut = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE application_name = 'siemsync reader'";
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" SET default_transaction_read_only = on; {cut}"
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.fault().is_none() {
        assert!(store.probe().await.is_err(), "a write went through");
        assert!(Instant::now() < deadline, "the failed write set no fault");
    }
    // A read succeeds, yet nothing can be written: the fault stays.
    store.nodes().await.expect("a read");
    assert!(store.fault().is_some(), "a read cleared the fault");

    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{db}\" RESET default_transaction_read_only; {cut}"
        ))
        .await
        .unwrap();
    while store.probe().await.is_err() {
        assert!(Instant::now() < deadline, "the probe never succeeded again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.fault(), None, "a successful write clears the fault");
}

/// A node's lease rounds as its service runs them (`Store`, which fences commits
/// and posts by what its last round left it holding), on `url`.
fn service_node(url: &str, name: &str, lease: Duration) -> siemsync::store::Store {
    let mut options = PgOptions::new(url, name);
    options.op_timeout = Duration::from_secs(10);
    options.lease = lease;
    siemsync::store::Store::connect_postgres(options).expect("connecting to PostgreSQL")
}

/// A round of a service node's leases that went through (a `Busy` one is tried
/// again, as its lease loop does).
fn service_round(node: &siemsync::store::Store) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match node.balance_leases() {
            Ok(_) => return,
            Err(e) if Instant::now() < deadline => eprintln!("a lease round failed ({e}); again"),
            Err(e) => panic!("a lease round failed: {e}"),
        }
    }
}

#[test]
fn a_shard_held_again_after_another_node_delivered_it_commits_nothing_until_its_actors_restarted() {
    let Some(url) = fresh_database() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let lease = Duration::from_secs(2);
    let a = service_node(&url, "node-a", lease);
    let a_pg = a.postgres().unwrap().clone();
    let it = integration("acme");
    rt.block_on(a_pg.put_integration(&it, Expected::New))
        .unwrap();
    let shard = a_pg.shard_of(&it.id);
    let cp = |seq: u64| Checkpoint {
        audit_seq: seq,
        ..Default::default()
    };
    a.commit(&it.account, &it.id, &cp(1), &[]).unwrap();

    // A pauses past its lease; B claims the shard, delivers and commits, and
    // hands it back; A's next round holds it again, two epochs on.
    rt.block_on(every_lease_lapsed(&url, lease / 2));
    let b = rt.block_on(node(&url, "node-b", |o| o.lease = lease));
    let fence = rt.block_on(fence_of(&b, &it.id));
    rt.block_on(b.commit(&it.account, &it.id, &cp(5), &[], &fence))
        .unwrap();
    rt.block_on(b.leave()).unwrap();
    service_round(&a);
    assert!(a.holds(&it.id), "A holds the shard again");
    assert!(a.stale_shards().contains(&shard), "{:?}", a.stale_shards());
    // Its actors' positions are from before B's commit: neither a post nor a
    // commit goes through until they were restarted from the stored state.
    let refused = a.commit(&it.account, &it.id, &cp(2), &[]).unwrap_err();
    assert!(
        refused.to_string().contains("delivered by another node"),
        "{refused}"
    );
    assert!(a.may_post(&it.id).is_err());
    a.restarted(&[shard]);
    a.may_post(&it.id).unwrap();
    assert_eq!(
        a.commit(&it.account, &it.id, &cp(6), &[])
            .unwrap()
            .audit_seq,
        6
    );

    // A's own lease lapses and A claims it back with nobody in between (one
    // epoch on): its actors are not stale, and go on.
    rt.block_on(every_lease_lapsed(&url, lease / 2));
    service_round(&a);
    assert!(!a.stale_shards().contains(&shard), "{:?}", a.stale_shards());
    assert_eq!(
        a.commit(&it.account, &it.id, &cp(7), &[])
            .unwrap()
            .audit_seq,
        7
    );
}

/// Issue 16: node 1 sweeps an account over its backlog quota while node 2 runs the
/// account's integration and has a post in flight carrying the oldest events. Every
/// event ends up either delivered (committed by node 2) or counted in the gap, never
/// both and never neither — also when the post's commit is made twice (a restarted
/// actor's predecessor finishing the same post).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_sweep_on_one_node_while_the_owner_has_a_post_in_flight_counts_each_event_once() {
    use siemsync::model::Source;
    use siemsync::store::GapReason;
    let Some(url) = fresh_database() else { return };
    let n1 = node(&url, "n1", |_| {}).await;
    let n2 = node(&url, "n2", |_| {}).await;
    let acme = AccountId::parse("acme").unwrap();
    let it = integration("acme");
    n2.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&n2, &it.id).await;
    for r in 0..20 {
        let events = (r * 50..r * 50 + 50)
            .map(|i| audit(&format!("e{i}")))
            .collect();
        n1.append_audit(&acme, events).await.unwrap();
    }
    let all: Vec<u64> = audit_ids(&n2, &acme).await.iter().map(|e| e.0).collect();
    assert_eq!(all, (1..=1000).collect::<Vec<_>>());
    let stored = n1.stored_bytes(&acme).await.unwrap();
    assert!(stored > 0);
    // Node 2 read the oldest 100 events and posts them (in flight).
    let in_flight: Vec<u64> = (1..=100).collect();
    // Meanwhile node 1's sweep halves the account.
    let quota = stored / 2;
    let swept = n1.quota_sweep(&acme, quota).await.unwrap();
    let dropped = swept.quota_drops.expect("the sweep dropped events").events;
    assert!(dropped > 100 && dropped < 1000, "{dropped}");
    assert!(n1.stored_bytes(&acme).await.unwrap() <= quota);
    assert_eq!(
        n1.quota_drops(&acme).await.unwrap().map(|d| d.events),
        Some(dropped)
    );
    let gap = |gaps: Vec<siemsync::store::Gap>| -> u64 {
        gaps.iter()
            .filter(|g| g.reason == GapReason::BacklogQuota && g.source == Source::Audit)
            .map(|g| g.count)
            .sum()
    };
    assert_eq!(
        gap(n2.gaps(&it.id).await.unwrap()),
        dropped,
        "counted at the drop"
    );
    // The post was answered: node 2 commits it, under its lease.
    for _ in 0..2 {
        n2.commit_posted(
            &acme,
            &it.id,
            &audit_cp(100),
            &[],
            &fence,
            Some((Source::Audit, in_flight.clone())),
        )
        .await
        .unwrap();
        assert_eq!(
            gap(n2.gaps(&it.id).await.unwrap()),
            dropped - 100,
            "what the post delivered is no longer counted, once"
        );
    }
    // Node 2 reads on from its checkpoint and delivers the rest.
    let rest: Vec<u64> = audit_ids(&n2, &acme)
        .await
        .iter()
        .map(|e| e.0)
        .filter(|s| *s > 100)
        .collect();
    assert_eq!(rest.first(), Some(&(dropped + 1)), "the oldest went");
    n2.commit_posted(
        &acme,
        &it.id,
        &audit_cp(1000),
        &[],
        &fence,
        Some((Source::Audit, rest.clone())),
    )
    .await
    .unwrap();
    let counted = gap(n2.gaps(&it.id).await.unwrap());
    let delivered: std::collections::BTreeSet<u64> =
        in_flight.iter().chain(rest.iter()).copied().collect();
    // Counted: the dropped events after the post, 101..=dropped.
    assert_eq!(counted, dropped - 100);
    assert!(
        delivered.iter().all(|s| *s <= 100 || *s > dropped),
        "none both"
    );
    assert_eq!(delivered.len() as u64 + counted, 1000, "none neither");
    // Once every reader passed them, the periodic sweep forgets the dropped runs.
    n1.sweep(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(gap(n2.gaps(&it.id).await.unwrap()), dropped - 100);
}

/// The account's stored bytes, summed from the tables themselves.
async fn summed_stored_bytes(url: &str, account: &str) -> u64 {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one(
            "SELECT coalesce((SELECT sum(octet_length(body)) FROM audit_chunks WHERE account = $1), 0)::int8
                  + coalesce((SELECT sum(octet_length(snapshot::text)) FROM jobs WHERE account = $1), 0)::int8",
            &[&account],
        )
        .await
        .unwrap()
        .get(0);
    n as u64
}

/// Issue 16: on PostgreSQL job snapshots count in the quota and go oldest first
/// with audit chunks (each reader's jobs gap counted), the stored bytes follow every
/// write exactly, and siemsync's own notice, should the quota drop it undelivered,
/// is neither counted as a lost event nor forgotten: what it said is owed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_job_snapshots_count_in_the_quota_and_a_dropped_notice_is_told_again() {
    use siemsync::model::Source;
    use siemsync::store::GapReason;
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let acme = AccountId::parse("acme").unwrap();
    let it = integration("acme");
    s.put_integration(&it, Expected::New).await.unwrap();
    let job = |id: String, progress: f64| {
        JobSnapshot::from_json(
            &json!({"job": id, "type": "backup", "status": "in progress", "progress": progress}),
            0,
            Utc::now(),
        )
        .unwrap()
    };
    for j in 0..10 {
        s.put_jobs(&acme, vec![job(format!("j{j}"), 0.1)])
            .await
            .unwrap();
    }
    // A newer snapshot of a job counts by the difference.
    s.put_jobs(&acme, vec![job("j9".into(), 0.123456)])
        .await
        .unwrap();
    for r in 0..2 {
        let events = (r * 50..r * 50 + 50)
            .map(|i| audit(&format!("e{i}")))
            .collect();
        s.append_audit(&acme, events).await.unwrap();
    }
    let exact = || summed_stored_bytes(&url, "acme");
    let stored = s.stored_bytes(&acme).await.unwrap();
    assert_eq!(stored, exact().await, "the kept count is the exact sum");
    // One byte over: the oldest record goes, the first job's snapshot.
    let swept = s.quota_sweep(&acme, stored - 1).await.unwrap();
    let d = swept.quota_drops.unwrap();
    assert_eq!((d.events, d.jobs), (0, 1));
    assert_eq!(s.stored_bytes(&acme).await.unwrap(), exact().await);
    let gaps = s.gaps(&it.id).await.unwrap();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        (gaps[0].source, gaps[0].reason, gaps[0].count),
        (Source::Jobs, GapReason::BacklogQuota, 1)
    );
    // The notice of it is written into the stream, and then the account floods on.
    let pending = s.pending_notice(&acme).await.unwrap();
    assert_eq!(pending.drops.map(|d| d.jobs), Some(1));
    let told = s
        .write_notice(&acme, audit("siemsync-notice"), pending)
        .await
        .unwrap();
    assert_eq!(told.map(|d| d.jobs), Some(1));
    let events = (100..150).map(|i| audit(&format!("e{i}"))).collect();
    s.append_audit(&acme, events).await.unwrap();
    assert_eq!(s.stored_bytes(&acme).await.unwrap(), exact().await);
    // A quota of one byte keeps only the newest chunk (the last events of the last
    // request) and the newest snapshot: the 150 events before them and the notice
    // among them go, and 8 jobs.
    let swept = s.quota_sweep(&acme, 1).await.unwrap();
    assert_eq!(s.stored_bytes(&acme).await.unwrap(), exact().await);
    let kept: Vec<String> = audit_ids(&s, &acme)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(!kept.is_empty() && kept.len() < 50, "{kept:?}");
    assert_eq!(kept.last().map(String::as_str), Some("e149"));
    let lost = 150 - kept.len() as u64;
    let d = swept.quota_drops.unwrap();
    assert_eq!(
        (d.events, d.jobs),
        (lost, 8),
        "the notice is not a lost event"
    );
    let total = s.quota_drops(&acme).await.unwrap().unwrap();
    assert_eq!((total.events, total.jobs), (lost, 9));
    let now = s.gaps(&it.id).await.unwrap();
    let count = |source: Source| -> u64 {
        now.iter()
            .filter(|g| g.source == source && g.reason == GapReason::BacklogQuota)
            .map(|g| g.count)
            .sum()
    };
    assert_eq!((count(Source::Audit), count(Source::Jobs)), (lost, 9));
    // What the dropped notice told (one job) is owed again, at once, with the rest.
    let pending = s.pending_notice(&acme).await.unwrap();
    assert!(pending.retell);
    assert!(pending.told.is_empty());
    assert_eq!(pending.drops.map(|d| (d.events, d.jobs)), Some((lost, 9)));
    assert!(s.accounts_owed_a_notice().await.unwrap().contains(&acme));
}

/// Issue 16 (review finding 1): on PostgreSQL delivered chunks stay until their
/// whole partition goes, so a caught-up account can hold more delivered data than
/// its quota. The quota sweep takes what every reader delivered first, as retention
/// would: no drop counted, no gap, no notice; and a notice every reader delivered is
/// never owed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caught_up_account_over_its_quota_loses_nothing_and_is_owed_no_notice() {
    use siemsync::model::Source;
    let Some(url) = fresh_database() else { return };
    let s = node(&url, "n1", |_| {}).await;
    let acme = AccountId::parse("acme").unwrap();
    let it = integration("acme");
    s.put_integration(&it, Expected::New).await.unwrap();
    let fence = fence_of(&s, &it.id).await;
    let flood = |rounds: std::ops::Range<usize>| {
        let (s, acme) = (&s, &acme);
        async move {
            for r in rounds {
                let events = (r * 50..r * 50 + 50)
                    .map(|i| audit(&format!("e{i}")))
                    .collect();
                s.append_audit(acme, events).await.unwrap();
            }
        }
    };
    flood(0..20).await;
    // Undelivered, the quota drops and counts, and the notice of it is written.
    let stored = s.stored_bytes(&acme).await.unwrap();
    let swept = s.quota_sweep(&acme, stored / 2).await.unwrap();
    let dropped = swept.quota_drops.expect("the sweep dropped events").events;
    let pending = s.pending_notice(&acme).await.unwrap();
    s.write_notice(&acme, audit("siemsync-notice"), pending)
        .await
        .unwrap()
        .expect("the notice is written");
    // The Splunk catches up on everything, the notice included.
    flood(20..40).await;
    let head = audit_ids(&s, &acme).await.last().unwrap().0;
    s.commit_posted(&acme, &it.id, &audit_cp(head), &[], &fence, None)
        .await
        .unwrap();
    let counted = |gaps: Vec<siemsync::store::Gap>| -> u64 {
        gaps.iter()
            .filter(|g| g.source == Source::Audit)
            .map(|g| g.count)
            .sum()
    };
    let gap = counted(s.gaps(&it.id).await.unwrap());
    assert_eq!(gap, dropped);
    // Over the quota with delivered data only: it goes, and nothing is counted.
    let stored = s.stored_bytes(&acme).await.unwrap();
    let quota = stored / 2;
    let swept = s.quota_sweep(&acme, quota).await.unwrap();
    assert!(swept.deleted > 0, "the delivered events went");
    assert_eq!(swept.quota_drops, None, "nothing undelivered was dropped");
    assert!(swept.gaps.is_empty(), "{:?}", swept.gaps);
    assert!(s.stored_bytes(&acme).await.unwrap() <= quota);
    assert_eq!(
        s.stored_bytes(&acme).await.unwrap(),
        summed_stored_bytes(&url, "acme").await
    );
    assert_eq!(
        s.quota_drops(&acme).await.unwrap().map(|d| d.events),
        Some(dropped),
        "the account's total did not grow"
    );
    assert_eq!(counted(s.gaps(&it.id).await.unwrap()), gap, "no new gap");
    let pending = s.pending_notice(&acme).await.unwrap();
    assert!(pending.drops.is_none(), "{pending:?}");
    assert!(!pending.retell, "{pending:?}");
    assert!(pending.told.is_empty(), "the delivered notice is told");
    assert!(!s.accounts_owed_a_notice().await.unwrap().contains(&acme));
    // Past its last delivered events the account is swept as before: the quota
    // counts only what no reader has.
    flood(40..60).await;
    let swept = s.quota_sweep(&acme, 1).await.unwrap();
    let d = swept.quota_drops.expect("undelivered events dropped");
    let kept = audit_ids(&s, &acme).await.len() as u64;
    assert_eq!(
        d.events + kept,
        1000,
        "the undelivered events went but the newest"
    );
    assert_eq!(
        counted(s.gaps(&it.id).await.unwrap()),
        gap + d.events,
        "each undelivered event counted once"
    );
}
