//! Explicit shutdown and liveness by progress, with the real binary: SIGTERM lets a
//! post in flight finish within the grace (or abandons it, and the restart sends
//! it again), and an actor stuck in a post is found by its heartbeat and restarted.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const TOK: &str = "5d0e0000-0000-4000-8000-000000000001";

/// An integration of account `acme` delivering audit events to `hec`, once its own
/// `created` event has arrived; answers its id.
async fn delivering(api: &Api, hec: &HecServer) -> String {
    api.enable_account("acme").await;
    let id = create_integration(
        api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    status_until(api, "acme", &id, "the first delivery", |s| {
        s["delivered"]["audit"] == 1
    })
    .await;
    id
}

/// Posts `n` audit events and waits until a post of them is in flight: a sync
/// started posting after they were stored, and has not ended.
async fn post_in_flight(api: &Api, id: &str, n: usize) {
    let before = api.status("acme", id).await["last_attempt"].clone();
    api.post_audit("acme", &audit_events("e", 0, n)).await;
    status_until(api, "acme", id, "a post in flight", |s| {
        s["syncing"] == true && s["last_attempt"] != before
    })
    .await;
}

/// An integration delivering to `hec`, with a post of 5 events in flight that Splunk
/// never answers; answers its id.
async fn post_hanging(api: &Api, hec: &HecServer) -> String {
    let id = delivering(api, hec).await;
    hec.set_behaviour(Behaviour::Hang);
    post_in_flight(api, &id, 5).await;
    id
}

/// SIGTERM, and the wait for the exit: how long it took, and the log. The exit is clean.
fn sigterm(svc: &mut Siemsync) -> (Duration, String) {
    let t0 = Instant::now();
    svc.signal("TERM");
    let status = svc.terminate_wait();
    let took = t0.elapsed();
    let log = svc.log_text();
    assert!(status.success(), "exits 0: {status:?}; log:\n{log}");
    (took, log)
}

/// The line of a Prometheus text `metrics` answer naming every one of `parts`.
fn metric(metrics: &Value, parts: &[&str]) -> Option<String> {
    metrics
        .as_str()?
        .lines()
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_owned)
}

#[actix_rt::test]
async fn sigterm_during_a_slow_post_lets_it_finish_within_the_grace_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_SHUTDOWN_GRACE_SECS", "10")];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = delivering(&api, &hec).await;
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(1500)));
    post_in_flight(&api, &id, 5).await;
    let (took, log) = sigterm(&mut svc);
    assert!(took < Duration::from_secs(10), "within the grace: {took:?}");
    assert!(
        log.contains(&format!(
            "shutdown: integration {id} (account acme) finished its post in flight"
        )),
        "the log says the post finished; log:\n{log}"
    );
    assert!(
        log.contains("1 finished their posts in flight, 0 abandoned"),
        "{log}"
    );
    let want: Vec<String> = (0..5).map(|i| format!("e-{i}")).collect();
    assert_eq!(audit_ids(&hec.events()), want, "delivered before the exit");

    hec.set_behaviour(Behaviour::Normal);
    let svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let st = api.status("acme", &id).await;
    assert_eq!(
        st["delivered"]["audit"], 6,
        "the finished post moved the checkpoint before the exit: {st:#}"
    );
    api.post_audit("acme", &audit_events("e", 5, 1)).await;
    status_until(&api, "acme", &id, "delivery after the restart", |s| {
        s["delivered"]["audit"] == 7
    })
    .await;
    let mut got = audit_ids(&hec.events());
    got.dedup();
    assert_eq!(got, (0..6).map(|i| format!("e-{i}")).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn sigterm_during_a_post_longer_than_the_grace_abandons_it_and_the_restart_sends_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_SHUTDOWN_GRACE_SECS", "0.3")];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = post_hanging(&api, &hec).await;
    let (took, log) = sigterm(&mut svc);
    // The grace, the API's stop and the store's flush; never the post's own 60 s.
    assert!(
        took < Duration::from_secs(5),
        "bounded by the grace: {took:?}"
    );
    assert!(
        log.contains(&format!(
            "shutdown: integration {id} (account acme) abandoned its post in flight"
        )),
        "the log says the post was abandoned; log:\n{log}"
    );
    assert!(
        log.contains("0 finished their posts in flight, 1 abandoned"),
        "{log}"
    );
    assert!(audit_ids(&hec.events()).is_empty());

    // Splunk refuses until the checkpoint was read: the restart syncs at once, and a
    // Splunk taking posts could already have moved it again (seen under load).
    hec.set_behaviour(Behaviour::busy());
    let svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    assert_eq!(
        api.status("acme", &id).await["delivered"]["audit"],
        1,
        "the abandoned post did not move the checkpoint"
    );
    hec.set_behaviour(Behaviour::Normal);
    status_until(&api, "acme", &id, "the abandoned events sent again", |s| {
        s["delivered"]["audit"] == 6
    })
    .await;
    assert_eq!(
        audit_ids(&hec.events()),
        (0..5).map(|i| format!("e-{i}")).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn sigterm_during_a_replay_lets_its_post_finish_and_the_replay_resumes_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SIEMSYNC_SHUTDOWN_GRACE_SECS", "10"),
        ("SIEMSYNC_MAX_BATCH_BYTES", "4096"),
    ];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = delivering(&api, &hec).await;
    api.post_audit("acme", &audit_events("past", 0, 40)).await;
    status_until(&api, "acme", &id, "the past delivered live", |s| {
        s["delivered"]["audit"] == 41
    })
    .await;
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(1000)));
    let path = format!("/api/v1/accounts/acme/integrations/{id}/replay");
    let window = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let (s, v) = api.admin("POST", &path, Some(window)).await;
    assert_eq!(s, 202, "{v}");
    // Its first post (of several: 4 KiB each) is under way, answered in a second.
    status_until(&api, "acme", &id, "the replay counted", |s| {
        s["replay"]["total"] == 40
    })
    .await;
    let (_, log) = sigterm(&mut svc);
    assert!(
        log.contains(&format!(
            "shutdown: the replay of integration {id} (account acme) finished its post in flight"
        )),
        "the log says the replay's post finished; log:\n{log}"
    );
    let replayed = audit_ids(&hec.events()).len() - 40;
    assert!((1..40).contains(&replayed), "stopped part-way: {replayed}");

    hec.set_behaviour(Behaviour::Normal);
    let svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let st = status_until(&api, "acme", &id, "the replay resumed and done", |s| {
        s["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["sent"], 40, "{:#}", st["replay"]);
    let ids = audit_ids(&hec.events());
    for i in 0..40 {
        let past = format!("past-{i}");
        assert!(
            ids.iter().filter(|x| **x == past).count() >= 2,
            "{past}: delivered live and replayed"
        );
    }
}

/// The `_stall` hook makes the actor's posts outlive their client's timeout (as a
/// hung connection the timeout misses would); only the heartbeat can find that.
#[cfg(feature = "test-hooks")]
#[actix_rt::test]
async fn an_actor_stuck_in_a_post_past_its_timeout_is_restarted_and_delivery_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(
        dir.path(),
        &[
            ("SIEMSYNC_REQUEST_TIMEOUT_SECS", "0.3"),
            ("SIEMSYNC_HEARTBEAT_CHECK_SECS", "0.05"),
            ("SIEMSYNC_STUCK_MARGIN_SECS", "0.2"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = delivering(&api, &hec).await;
    let before = api.status("acme", &id).await;
    assert_eq!(
        before["restarts"],
        json!({"count": 0, "last_reason": null, "last_at": null})
    );
    hec.set_behaviour(Behaviour::Hang);
    let v = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/acme/integrations/{id}/_stall"),
            None,
        )
        .await;
    assert_eq!(v["stall"], true);
    post_in_flight(&api, &id, 5).await;
    let stuck_at = Instant::now();
    let st = status_until(&api, "acme", &id, "the stuck actor restarted", |s| {
        s["restarts"]["count"] == 1
    })
    .await;
    // Twice the 0.3 s request timeout and the 200 ms margin, checked every 50 ms.
    assert!(
        stuck_at.elapsed() < Duration::from_secs(5),
        "{:?}",
        stuck_at.elapsed()
    );
    assert_eq!(st["restarts"]["last_reason"], "stuck", "{st:#}");
    assert!(st["restarts"]["last_at"].is_string(), "{st:#}");
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    let stuck = [id.as_str(), "actor=\"integration\"", "reason=\"stuck\""];
    let restarted = metric(
        &metrics,
        &[&["siemsync_actor_restarts_total"], &stuck[..]].concat(),
    );
    assert!(restarted.is_some_and(|l| l.ends_with(" 1")), "{metrics}");
    let killed = metric(
        &metrics,
        &[&["siemsync_actor_kills_total"], &stuck[..]].concat(),
    );
    assert!(killed.is_some_and(|l| l.ends_with(" 1")), "{metrics}");

    hec.set_behaviour(Behaviour::Normal);
    status_until(&api, "acme", &id, "delivery after the restart", |s| {
        s["delivered"]["audit"] == 6 && s["started_at"] != before["started_at"]
    })
    .await;
    assert_eq!(
        audit_ids(&hec.events()),
        (0..5).map(|i| format!("e-{i}")).collect::<Vec<_>>(),
        "nothing lost"
    );
    eventually(T, "the log names the stuck actor", || {
        svc.log_text()
            .contains(&format!("integration {id} (account acme): no progress"))
    })
    .await;
}

/// A second SIGTERM (or Ctrl-C) while the shutdown waits for a post in flight ends
/// the process at once, as an operator who asks twice expects. What ingest
/// acknowledged is on disk already (it answers only after a flush); a post it
/// abandons is sent again after the restart.
#[actix_rt::test]
async fn a_second_sigterm_during_the_shutdown_ends_the_process_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_SHUTDOWN_GRACE_SECS", "10")];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let id = post_hanging(&api, &hec).await;
    svc.signal("TERM");
    eventually(T, "the shutdown under way", || {
        svc.log_text().contains("SIGTERM: shutting down")
    })
    .await;
    let t0 = Instant::now();
    svc.signal("TERM");
    let status = svc.terminate_wait();
    let took = t0.elapsed();
    let log = svc.log_text();
    assert!(
        took < Duration::from_secs(3),
        "the second SIGTERM ended it after {took:?}, not at once; log:\n{log}"
    );
    assert_eq!(status.code(), Some(143), "128 + SIGTERM: {status:?}");
    assert!(
        log.contains("second SIGTERM during the shutdown: exiting at once"),
        "the log says why; log:\n{log}"
    );

    // The ingested events were durable, and the abandoned post is sent again.
    hec.set_behaviour(Behaviour::Normal);
    let svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    status_until(&api, "acme", &id, "the events after the restart", |s| {
        s["delivered"]["audit"] == 6
    })
    .await;
}

/// A retention sweep of many batches does not hold the shutdown up: it stops
/// between two batches (each its own transaction: what it removed stays removed,
/// the rest waits for the next sweep), so the shutdown ends within its grace.
#[actix_rt::test]
async fn the_shutdown_stops_a_long_retention_sweep_between_batches() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: the slow sweep is the embedded store's test hook (set_pace); PostgreSQL's retention drops whole partitions");
    }
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(500);
    let mut svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_SHUTDOWN_GRACE_SECS", "0.5"),
            // 86 ms
            ("SIEMSYNC_RETENTION_DAYS", "0.000001"),
            ("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "0.05"),
        ],
    );
    // One stored chunk per batch, each taking 0.3 s: the 60 posts (ingest merges
    // some into one chunk) take seconds to sweep.
    svc.in_process().store().set_pace(siemsync::store::Pace {
        sweep_batch_events: Some(1),
        sweep_batch_pause: Duration::from_millis(300),
        ..Default::default()
    });
    let api = svc.api();
    for i in 0..60 {
        api.post_audit("acme", &audit_events("old", i, 1)).await;
    }
    let started = Instant::now();
    while svc.in_process().store().sweep_batches() < 2 {
        assert!(started.elapsed() < T, "no sweep started");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let t0 = Instant::now();
    svc.stop();
    let took = t0.elapsed();
    assert!(
        took < grace + Duration::from_secs(1),
        "the shutdown took {took:?} (grace {grace:?}): the sweep ran on"
    );
}

/// The launcher's stop has a deadline: a service whose shutdown hangs fails the
/// test with a message naming it, instead of hanging the suite.
#[actix_rt::test]
async fn stopping_a_hung_in_process_service_fails_by_a_deadline_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[]);
    let url = svc.url.clone();
    // The Supervisor handles nothing, the shutdown's request to wind down included.
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    let supervisor = svc.in_process().supervisor.clone();
    supervisor
        .send(siemsync::actors::supervisor::Hold(held))
        .await
        .unwrap();
    let t0 = Instant::now();
    let hung = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        svc.in_process().stop_within(Duration::from_millis(500))
    }));
    let took = t0.elapsed();
    let panic = hung.expect_err("stopping a hung service fails");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("did not stop within 500ms")
            && message.contains(url.trim_start_matches("http://"))
            && message.contains("Service::shutdown"),
        "{message}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    // Released, the service ends its shutdown on its own thread.
    drop(release);
}
