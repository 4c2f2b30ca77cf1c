//! The Supervisor's management of replays, in this process: a cancel wins over a
//! restart that races it, a stuck replay resumes after a growing back-off, a long
//! count is no sign of a stuck replay, and a replay that ends while the service
//! stops answers the shutdown at once.

use super::common::*;
use serde_json::{json, Value};
use siemsync::actors::messages::CancelReplay;
use siemsync::actors::replay::ReplayState;
use siemsync::actors::supervisor::{Fault, ForceFault, Hold};
use siemsync::model::AccountId;
use siemsync::store::Pace;
use siemsync::testkit::{AckMode, Behaviour, HecServer};
use std::time::{Duration, Instant};

const TOK: &str = "5d0e0000-0000-4000-8000-000000000003";
const WINDOW: (&str, &str) = ("2026-11-25T09:00:00Z", "2026-11-25T11:00:00Z");

fn window() -> Value {
    json!({"from": WINDOW.0, "to": WINDOW.1})
}

/// A new integration of account `acme` sending `sources` to `hec`; answers its id.
async fn integration(api: &Api, hec: &HecServer, sources: Value) -> String {
    api.enable_account("acme").await;
    create_integration(
        api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": sources}),
    )
    .await
}

/// A service whose actors are late after 0.25 s without progress in a post (twice
/// a 0.1 s request timeout, and a 0.05 s margin), checked every 0.02 s; `env` adds.
fn watched_closely(dir: &std::path::Path, env: &[(&str, &str)]) -> Siemsync {
    let mut all = vec![
        ("SIEMSYNC_REQUEST_TIMEOUT_SECS", "0.1"),
        ("SIEMSYNC_HEARTBEAT_CHECK_SECS", "0.02"),
        ("SIEMSYNC_STUCK_MARGIN_SECS", "0.05"),
    ];
    all.extend_from_slice(env);
    Siemsync::start(dir, &all)
}

/// The Supervisor's replay restarts of integration `id` for `reason`, from `/metrics`.
async fn replay_restarts(api: &Api, id: &str, reason: &str) -> u64 {
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    let reason = format!("reason=\"{reason}\"");
    let parts = [
        "siemsync_actor_restarts_total",
        id,
        "actor=\"replay\"",
        reason.as_str(),
    ];
    metrics
        .as_str()
        .unwrap_or_default()
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// The interleaving the review found: the cancel reaches the Supervisor, and before
/// the replay actor has handled it, a change restarts the integration — which
/// resumed the replay from its record (still "running"). The cancel was answered
/// 200 and the resumed replay ran on. The Supervisor is held so that both messages
/// are queued and handled in this order for sure.
#[actix_rt::test]
async fn a_replay_cancelled_while_a_change_restarts_its_integration_never_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "4096")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = integration(&api, &hec, json!(["audit"])).await;
    api.post_audit("acme", &audit_events("past", 0, 200)).await;
    status_until(&api, "acme", &id, "the past delivered live", |s| {
        s["delivered"]["audit"] == 201
    })
    .await;
    // Slow posts of 4 KiB: the replay runs for seconds.
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(50)));
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    api.ok("POST", &format!("{path}/replay"), Some(window()))
        .await;
    status_until(&api, "acme", &id, "the replay posting", |s| {
        s["replay"]["sent"].as_u64().unwrap_or(0) > 0
    })
    .await;

    let supervisor = svc.in_process().supervisor.clone();
    let (release, held) = tokio::sync::oneshot::channel();
    supervisor.send(Hold(held)).await.unwrap();
    // Queued in this order: the cancel, then the restart a change of delivery makes.
    let cancel = supervisor.send(CancelReplay {
        account: AccountId::parse("acme").unwrap(),
        id: id.parse().unwrap(),
    });
    let view = api.ok("GET", &path, None).await;
    let gzip = view["gzip"].as_bool().expect("gzip in the view");
    api.ok("PATCH", &path, Some(json!({ "gzip": !gzip }))).await;
    release.send(()).unwrap();
    let cancelled = cancel
        .await
        .unwrap()
        .unwrap()
        .expect("the running replay was cancelled");
    assert_eq!(cancelled.state, ReplayState::Cancelled);

    let st = api.status("acme", &id).await;
    assert_eq!(
        st["replay"]["state"], "cancelled",
        "the answered cancel won: {:#}",
        st["replay"]
    );
    // The integration runs again with its change, and the replay did not resume.
    hec.set_behaviour(Behaviour::Normal);
    api.post_audit("acme", &audit_events("live", 0, 1)).await;
    eventually(
        Duration::from_secs(30),
        "the live event after the change",
        || audit_ids(&hec.events()).contains(&"live-0".to_owned()),
    )
    .await;
    let st = api.status("acme", &id).await;
    assert_eq!(st["replay"]["state"], "cancelled", "{:#}", st["replay"]);
    assert_eq!(st["replay"]["sent"], cancelled.sent, "{:#}", st["replay"]);
    // Nor does it resume after a restart of the service.
    svc.restart();
    let api = svc.api();
    let st = status_until(&api, "acme", &id, "the integration running", |s| {
        !s["started_at"].is_null()
    })
    .await;
    assert_eq!(st["replay"]["state"], "cancelled", "{:#}", st["replay"]);
    assert_eq!(st["replay"]["id"], json!(cancelled.id));
}

/// A replay stuck in its posts every time (they outlive their timeout) is stopped
/// and resumed from its record, each time after a longer wait: `restart_delay_secs`,
/// doubling — not at once, in a loop that counts and posts again and again.
#[actix_rt::test]
async fn a_replay_stuck_every_time_resumes_after_a_growing_back_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = watched_closely(dir.path(), &[("SIEMSYNC_TIMING_RESTART_DELAY_SECS", "0.4")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = integration(&api, &hec, json!(["audit"])).await;
    api.post_audit("acme", &audit_events("past", 0, 20)).await;
    status_until(&api, "acme", &id, "the past delivered live", |s| {
        s["delivered"]["audit"] == 21
    })
    .await;
    let stall = ForceFault {
        id: id.parse().unwrap(),
        fault: Fault::StallReplays,
    };
    assert!(svc.in_process().supervisor.send(stall).await.unwrap());
    hec.set_behaviour(Behaviour::Hang);
    let path = format!("/api/v1/accounts/acme/integrations/{id}/replay");
    api.ok("POST", &path, Some(window())).await;

    // When each of the first three stuck replays was stopped, as seen from here.
    let mut stopped: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stopped.len() < 3 {
        assert!(Instant::now() < deadline, "stopped only {stopped:?}");
        let n = replay_restarts(&api, &id, "stuck").await as usize;
        while stopped.len() < n {
            stopped.push(Instant::now());
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    // Each resumption waits its back-off (0.4 s, then 0.8 s) before its posts can
    // even start to be late; at once, the next stop came within about 0.3 s.
    let (first, second) = (stopped[1] - stopped[0], stopped[2] - stopped[1]);
    assert!(
        first >= Duration::from_millis(400),
        "the first resumption waited {first:?}"
    );
    assert!(
        second >= Duration::from_millis(800),
        "the second resumption waited {second:?}: the back-off doubles"
    );
}

/// Counting the window reads the account's whole log on a collector shared by
/// every integration: slow for a large account, and no business of a post's
/// budget. A replay over an empty window that takes long to count is not stuck.
#[actix_rt::test]
async fn a_replay_whose_window_takes_long_to_count_is_not_stuck() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: the slow count is the embedded store's test hook (set_pace)");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut svc = watched_closely(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = integration(&api, &hec, json!(["audit"])).await;
    status_until(&api, "acme", &id, "the first delivery", |s| {
        s["delivered"]["audit"] == 1
    })
    .await;
    // Four times what a post may take before it is late.
    svc.in_process().store().set_pace(Pace {
        count_pause: Duration::from_millis(800),
        ..Pace::default()
    });
    let path = format!("/api/v1/accounts/acme/integrations/{id}/replay");
    let empty = json!({"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"});
    api.ok("POST", &path, Some(empty)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let restarts = replay_restarts(&api, &id, "stuck").await;
        assert_eq!(
            restarts, 0,
            "the replay was stopped as stuck while it counted"
        );
        let st = api.status("acme", &id).await;
        if st["replay"]["state"] == "done" {
            assert_eq!(st["replay"]["total"], 0, "{:#}", st["replay"]);
            break;
        }
        assert!(Instant::now() < deadline, "{:#}", st["replay"]);
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shutdown asks the replay to finish its post in flight; when that was its
/// last (it had read to the end of its window, and waits for Splunk's indexer
/// acknowledgement), the replay is done — and says so to the shutdown, which
/// otherwise waited out the whole grace for it and reported its post abandoned.
#[actix_rt::test]
async fn a_replay_that_finishes_its_last_post_while_the_service_stops_ends_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(4);
    let mut svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_SHUTDOWN_GRACE_SECS", "4"),
            ("SIEMSYNC_ACK_POLL_INTERVAL_SECS", "0.1"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| {
        c.ack_tokens.push(TOK.into());
        c.ack_mode = AckMode::AfterDelay(Duration::from_secs(1));
    });
    // Jobs only: siemsync's own audit events (the replay's request) post nothing
    // live, so the one post that arrives next is the replay's.
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["jobs"], "indexer_ack": true}),
    )
    .await;
    api.post_jobs(
        "acme",
        &json!([{"job": "j1", "type": "backup", "status": "successful"}]),
    )
    .await;
    status_until(&api, "acme", &id, "the job delivered live", |s| {
        s["delivered"]["jobs"] == 1
    })
    .await;
    let before = hec.posts_arrived();
    let now = chrono::Utc::now();
    let window = json!({
        "from": (now - chrono::Duration::hours(1)).to_rfc3339(),
        "to": (now + chrono::Duration::hours(1)).to_rfc3339(),
    });
    let path = format!("/api/v1/accounts/acme/integrations/{id}/replay");
    api.ok("POST", &path, Some(window)).await;
    // Its one post was answered; its acknowledgement comes a second later.
    eventually(Duration::from_secs(30), "the replay's post", || {
        hec.posts_arrived() > before
    })
    .await;
    let t0 = Instant::now();
    svc.stop();
    let took = t0.elapsed();
    assert!(
        took < grace - Duration::from_secs(1),
        "the shutdown waited {took:?} (grace {grace:?}) for a replay that had finished"
    );
    let jobs = hec
        .events()
        .iter()
        .filter(|e| e["source"] == "siemsync:jobs")
        .count();
    assert_eq!(jobs, 2, "live, then replayed");
}

/// A reconcile applies what it read a chunk at a time, handling the Supervisor's
/// messages in between (at 100,000 integrations one go held the System thread for
/// seconds). A change handled between two chunks read the store after the reconcile
/// did: the later chunk must not start its integration again from the older read.
/// Queued in this order for sure: the reconcile (its first chunk), a hold during
/// which the last integration is disabled and its `Refresh` queued, then the rest.
/// A Sync now of an integration a later chunk would start is not refused meanwhile.
#[actix_rt::test]
async fn a_change_handled_between_the_chunks_of_a_reconcile_wins_over_its_older_read() {
    if BACKEND != Backend::Sled {
        // On PostgreSQL it passed with the later chunks' skip removed (it guards nothing
        // there), and its 1,002 actors' first syncs on a shared debug-build server held
        // the suite's other PostgreSQL tests up, and its own shutdown past 25 s.
        return eprintln!("sled only: the PostgreSQL twin guards nothing and overloads the suite");
    }
    use siemsync::actors::messages::{Observe, Reconcile, Refresh, SyncNow};
    use siemsync::actors::supervisor::RECONCILE_CHUNK;
    use siemsync::model::{IntegrationChange, IntegrationPolicy};
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[]);
    let hec = HecServer::start(TOK);
    let store = svc.in_process().store().clone();
    let supervisor = svc.in_process().supervisor.clone();
    // The start's own reconcile (of nothing) is handled before anything is stored.
    let nobody = uuid::Uuid::nil();
    assert!(supervisor
        .send(Observe { id: nobody })
        .await
        .unwrap()
        .is_none());
    let acme = AccountId::parse("acme").unwrap();
    let now = chrono::Utc::now();
    store
        .put_account(&acme, &siemsync::store::Account::enabled(now))
        .unwrap();
    // Stored behind the Supervisor's back (no `Refresh`): only a reconcile starts
    // them. One chunk and two more.
    for n in 0..RECONCILE_CHUNK + 2 {
        let it = IntegrationChange::from_json(&json!({"name": format!("n{n}"),
            "hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"], "enabled": true}))
        .and_then(|c| c.create(acme.clone(), now, IntegrationPolicy::default()))
        .unwrap();
        store.put_integration(&it, None).unwrap();
    }
    let all = store.all_integrations().unwrap();
    let (last, before_last) = (all[all.len() - 1].clone(), all[all.len() - 2].id);
    let (release, held) = tokio::sync::oneshot::channel();
    supervisor.do_send(Reconcile);
    supervisor.send(Hold(held)).await.unwrap();
    // Between the chunks: the last integration disabled, its refresh queued.
    let mut off = last.clone();
    off.enabled = false;
    store.put_integration(&off, Some(last.version)).unwrap();
    supervisor.do_send(Refresh {
        account: acme.clone(),
        id: last.id,
    });
    // A Sync now of one the later chunks would start: applied at once, not refused.
    let sync_now = supervisor.send(SyncNow { id: before_last });
    release.send(()).unwrap();
    assert!(
        sync_now.await.unwrap(),
        "a Sync now between the chunks was refused as not running"
    );
    let t0 = Instant::now();
    while supervisor
        .send(Observe { id: before_last })
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the reconcile's last chunk never ran"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        supervisor
            .send(Observe { id: last.id })
            .await
            .unwrap()
            .is_none(),
        "the disabled integration was started from the reconcile's older read"
    );
}
