//! The Supervisor restarts an integration actor that panics, from its sled state.
//! Needs the `test-hooks` feature (the README's test command turns it on).

use super::common::*;
use serde_json::json;
use siemsync::testkit::HecServer;
use std::time::Duration;

const TOK: &str = "dead0000-0000-4000-8000-000000000001";

#[actix_rt::test]
async fn a_panicking_integration_actor_is_restarted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(dir.path(), &[]);
    let api = svc.api();
    let (hec, other_hec) = (HecServer::start(TOK), HecServer::start(TOK));
    api.enable_account("acme").await;
    api.enable_account("other").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let other = create_integration(
        &api,
        "other",
        json!({"hec_token": TOK, "hec_uri": other_hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("a", 0, 50)).await;
    let before = status_until(&api, "acme", &id, "first delivery", |s| {
        s["delivered"]["audit"] == 51
    })
    .await;
    let other_started = api.status("other", &other).await["started_at"].clone();

    let v = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/acme/integrations/{id}/_panic"),
            None,
        )
        .await;
    assert_eq!(v["panic"], true);
    let after = status_until(&api, "acme", &id, "a restarted actor", |s| {
        s["started_at"].is_string() && s["started_at"] != before["started_at"]
    })
    .await;
    assert_eq!(
        after["delivered"]["audit"], 51,
        "the checkpoint came back from sled"
    );
    api.post_audit("acme", &audit_events("a", 50, 50)).await;
    status_until(&api, "acme", &id, "delivery after the restart", |s| {
        s["delivered"]["audit"] == 101
    })
    .await;
    assert_eq!(
        audit_ids(&hec.events()),
        (0..100).map(|i| format!("a-{i}")).collect::<Vec<_>>(),
        "nothing lost or repeated"
    );
    assert_eq!(
        api.status("other", &other).await["started_at"],
        other_started,
        "the neighbour was not touched"
    );
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    let line = metrics
        .as_str()
        .unwrap()
        .lines()
        .find(|l| l.starts_with("siemsync_actor_restarts_total") && l.contains(&id))
        .map(str::to_owned);
    assert!(
        line.is_some_and(|l| l.ends_with(" 1")),
        "the restart is counted"
    );
    // The log is written by another process: wait for the line, no fixed sleep.
    eventually(Duration::from_secs(30), "the restart in the log", || {
        svc.log_text().contains("ended unexpectedly")
    })
    .await;
}

#[actix_rt::test]
async fn a_crashed_actor_waits_out_its_back_off_whatever_is_re_read_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    // The back-off is an hour: the actor may come back only from a change of its
    // delivery config.
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_TIMING_RESTART_DELAY_SECS", "3600"),
            ("SIEMSYNC_TIMING_RESTART_FORGIVEN_AFTER_SECS", "3600"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    status_until(&api, "acme", &id, "the actor running", |s| {
        s["started_at"].is_string()
    })
    .await;
    let v = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/acme/integrations/{id}/_panic"),
            None,
        )
        .await;
    assert_eq!(v["panic"], true);
    status_until(&api, "acme", &id, "the crash counted", |s| {
        s["restarts"]["count"] == 1 && s["started_at"].is_null()
    })
    .await;
    // A Refresh of every integration of the account (the feature switched on
    // again) and a new name change nothing it delivers.
    api.enable_account("acme").await;
    api.ok(
        "PATCH",
        &format!("/api/v1/accounts/acme/integrations/{id}"),
        Some(json!({"name": "renamed"})),
    )
    .await;
    // The status is asked of the Supervisor after both: an actor started by
    // either would answer it.
    let s = api.status("acme", &id).await;
    assert!(
        s["started_at"].is_null(),
        "restarted during its back-off: {s}"
    );
    assert_eq!(s["restarts"]["count"], 1);
}
