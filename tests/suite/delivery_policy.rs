//! The one delivery policy against the Splunks that differ (shared/HEC.md): Splunk
//! Cloud's oversized bodies, the per-event size limit, 429 and Retry-After, capacity
//! warnings, acknowledgement behind a sticky load balancer and from slow indexers,
//! replays that wait for acknowledgement, and a post size that grows back.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{AckMode, Behaviour, HecServer, LoadBalancer};
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const TOK: &str = "11111111-2222-3333-4444-555555555555";
/// siemsync's own "SIEM integration created" audit event, delivered like the platform's.
const CREATED: u64 = 1;
/// siemsync's own audit events when an integration is created, then enabled.
const CREATED_AND_ENABLED: u64 = 2;

fn ack_server(mode: AckMode) -> HecServer {
    let h = HecServer::start(TOK);
    h.configure(|c| {
        c.ack_tokens.push(TOK.into());
        c.ack_mode = mode;
    });
    h
}

async fn dead_letter_ids(api: &Api, account: &str, id: &str) -> Vec<String> {
    let dl = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/{account}/integrations/{id}/dead-letters"),
            None,
        )
        .await;
    dl["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"]["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates a disabled integration, waits for the connection test it runs on create
/// (so that test's post is not mistaken for delivery), and returns its id.
async fn create_quiet(api: &Api, account: &str, body: Value) -> String {
    let mut body = body;
    body["enabled"] = json!(false);
    let id = create_integration(api, account, body).await;
    status_until(
        api,
        account,
        &id,
        "the connection test made on create",
        |s| !s["connection_test"].is_null(),
    )
    .await;
    id
}

async fn enable(api: &Api, account: &str, id: &str) {
    api.ok(
        "PATCH",
        &format!("/api/v1/accounts/{account}/integrations/{id}"),
        Some(json!({"enabled": true})),
    )
    .await;
}

#[actix_rt::test]
async fn splunk_cloud_oversized_posts_are_split_and_only_the_bad_event_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    // Splunk Cloud answers a body over its cap (here 64 KiB, below siemsync's 1 MiB
    // posts) with 400 code 6 naming event 0.
    let hec = HecServer::start(TOK);
    hec.configure(|c| {
        c.cloud = true;
        c.max_content_length = 64 * 1024;
        c.reject_events_containing = vec!["event number 1234\"".into()];
    });
    api.enable_account("acme").await;
    let events = audit_events("e", 0, 3000);
    for chunk in events.as_array().unwrap().chunks(1000) {
        api.post_audit("acme", &json!(chunk)).await;
    }
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "gzip": false, "sources": ["audit"]}),
    )
    .await;
    let stopped = RefCell::new(None);
    let st = status_until(&api, "acme", &id, "the catch-up delivered", |s| {
        if s["last_error"]["kind"] == "configuration" {
            *stopped.borrow_mut() = Some(s.clone());
        }
        s["backlog"]["events"] == 0
    })
    .await;
    assert_eq!(stopped.into_inner(), None, "delivery never stopped");
    let want: Vec<String> = (0..3000)
        .filter(|i| *i != 1234)
        .map(|i| format!("e-{i}"))
        .collect();
    assert_eq!(audit_ids(&hec.events()), want, "2,999 once each, in order");
    assert_eq!(st["dead_letters"], 1, "{st:#}");
    assert_eq!(dead_letter_ids(&api, "acme", &id).await, vec!["e-1234"]);
    assert_eq!(st["delivered"]["audit"], 2999 + CREATED);
    // The size was learnt: after the first refusals every post fits the cap.
    let refused = hec.posts().iter().filter(|p| p.status == 400).count();
    assert!(refused < 30, "{refused} refused posts");
}

#[actix_rt::test]
async fn an_event_over_splunks_per_event_limit_is_dead_lettered_alone_and_the_rest_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| c.max_event_bytes = Some(2000));
    api.enable_account("acme").await;
    let mut events = audit_events("e", 0, 100);
    events[30]["metadata"] = json!({"blob": "x".repeat(3000)});
    api.post_audit("acme", &events).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "the backlog delivered", |s| {
        s["backlog"]["events"] == 0
    })
    .await;
    let want: Vec<String> = (0..100)
        .filter(|i| *i != 30)
        .map(|i| format!("e-{i}"))
        .collect();
    assert_eq!(audit_ids(&hec.events()), want);
    assert_eq!(st["dead_letters"], 1, "{st:#}");
    assert_eq!(dead_letter_ids(&api, "acme", &id).await, vec!["e-30"]);
}

#[actix_rt::test]
async fn ingest_refuses_an_event_larger_than_max_event_bytes_naming_it_and_storing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_MAX_EVENT_BYTES", "4096"),
            ("SIEMSYNC_MAX_BATCH_BYTES", "65536"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit", "jobs"]}),
    )
    .await;
    let mut events = audit_events("e", 0, 3);
    events[1]["metadata"] = json!({"blob": "x".repeat(5000)});
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/audit",
            Some(INGEST),
            Some(events),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("item 1") && msg.contains("max_event_bytes") && msg.contains("4096"),
        "{msg}"
    );
    let job = json!([{"job": "j-1", "type": "backup", "status": "in progress",
        "description": "d".repeat(5000)}]);
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/jobs",
            Some(INGEST),
            Some(job),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("item 0"), "{v}");
    // Nothing of either request was stored: only siemsync's own "created" event is due.
    let st = status_until(&api, "acme", &id, "the created event delivered", |s| {
        s["delivered"]["audit"] == CREATED
    })
    .await;
    assert_eq!(st["backlog"]["events"], 0, "{st:#}");
    api.post_audit("acme", &audit_events("e", 0, 3)).await;
    status_until(&api, "acme", &id, "the fixed request delivered", |s| {
        s["delivered"]["audit"] == 3 + CREATED
    })
    .await;
}

#[actix_rt::test]
async fn retry_after_on_429_delays_the_next_post_and_shows_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 10)).await;
    let id = create_quiet(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    hec.set_behaviour(Behaviour::FailTimes {
        status: 429,
        code: Some(26),
        text: "Queue at capacity".into(),
        retry_after: Some("2".into()),
        times: 1,
    });
    let before = hec.posts().len();
    enable(&api, "acme", &id).await;
    let st = status_until(&api, "acme", &id, "the 429 in the status", |s| {
        s["state"] == "failing"
    })
    .await;
    assert_eq!(st["last_error"]["http_status"], 429, "{st:#}");
    assert_eq!(st["last_error"]["code"], 26);
    assert_eq!(st["last_error"]["kind"], "transient");
    assert_eq!(st["last_error"]["retry_after_secs"], 2, "{st:#}");
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(st["next_sync"].clone()).unwrap();
    let wait = (next - chrono::Utc::now()).num_milliseconds();
    // Two seconds, not the 0.05 s back-off, less the time the status took to look.
    assert!((300..=2100).contains(&wait), "next sync in {wait} ms");
    status_until(&api, "acme", &id, "delivery after the wait", |s| {
        s["delivered"]["audit"] == 10 + CREATED_AND_ENABLED
    })
    .await;
    let posts = &hec.posts()[before..];
    assert_eq!(posts[0].status, 429, "{posts:?}");
    let waited = posts[1].at - posts[0].at;
    assert!(
        waited >= Duration::from_millis(1950) && waited < Duration::from_secs(5),
        "the next post came {waited:?} after the 429"
    );
}

#[actix_rt::test]
async fn a_retry_after_of_days_is_bounded_by_max_retry_after_secs() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_RETRY_AFTER_SECS", "1")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 10)).await;
    let id = create_quiet(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    hec.set_behaviour(Behaviour::FailTimes {
        status: 503,
        code: Some(9),
        text: "Server is busy".into(),
        retry_after: Some("864000".into()),
        times: 2,
    });
    let started = Instant::now();
    enable(&api, "acme", &id).await;
    let st = status_until(&api, "acme", &id, "the busy answer", |s| {
        s["state"] == "failing"
    })
    .await;
    assert_eq!(st["last_error"]["retry_after_secs"], 1, "{st:#}");
    status_until(&api, "acme", &id, "delivery within the bound", |s| {
        s["delivered"]["audit"] == 10 + CREATED_AND_ENABLED
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[actix_rt::test]
async fn capacity_warnings_deliver_and_slow_down_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "8192")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 60)).await;
    let id = create_quiet(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "gzip": false, "sources": ["audit"]}),
    )
    .await;
    hec.set_behaviour(Behaviour::NearCapacity(24));
    let before = hec.posts().len();
    enable(&api, "acme", &id).await;
    let slowed = RefCell::new(None);
    let st = status_until(&api, "acme", &id, "everything delivered", |s| {
        if !s["slow_down"].is_null() {
            *slowed.borrow_mut() = Some(s["slow_down"].clone());
        }
        s["delivered"]["audit"] == 60 + CREATED_AND_ENABLED
    })
    .await;
    assert_eq!(st["state"], "healthy", "{st:#}");
    assert_once(&hec, 60);
    let slowed = slowed
        .into_inner()
        .expect("the status showed the slow-down");
    assert_eq!(slowed["code"], 24, "{slowed:#}");
    let posts = &hec.posts()[before..];
    assert!(posts.len() >= 3, "{posts:?}");
    for pair in posts.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(150),
            "posts not spaced out: {posts:?}"
        );
    }
}

fn assert_once(hec: &HecServer, n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("e-{i}")).collect();
    assert_eq!(audit_ids(&hec.events()), want);
}

/// Each of `e-0`..`e-{n-1}` arrived exactly once, in any order: with indexer
/// acknowledgement up to `posts_in_flight` posts are out at once, and they may reach
/// Splunk in another order than they were sent (the checkpoint still moves in order).
fn assert_once_any_order(hec: &HecServer, n: usize) {
    let want: Vec<String> = (0..n).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        by_number(audit_ids(&hec.events())),
        want,
        "every event exactly once"
    );
}

#[actix_rt::test]
async fn code_28_from_splunk_cloud_asks_to_turn_on_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| {
        c.cloud = true;
        c.ack_tokens.push(TOK.into());
    });
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "the code 28 refusal", |s| {
        s["state"] == "failing"
    })
    .await;
    assert_eq!(st["last_error"]["code"], 28, "{st:#}");
    assert_eq!(st["last_error"]["kind"], "configuration");
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("turn on indexer acknowledgement in this integration"),
        "{st:#}"
    );
    api.ok(
        "PATCH",
        &format!("/api/v1/accounts/acme/integrations/{id}"),
        Some(json!({"indexer_ack": true})),
    )
    .await;
    status_until(&api, "acme", &id, "delivery with acknowledgement", |s| {
        s["delivered"]["audit"] == 5 + CREATED + 1
    })
    .await;
}

#[actix_rt::test]
async fn acks_behind_a_sticky_load_balancer_reach_the_indexer_that_took_the_post() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_MAX_BATCH_BYTES", "8192"),
            ("SIEMSYNC_ACK_TIMEOUT_SECS", "5"),
        ],
    );
    let api = svc.api();
    let hec = ack_server(AckMode::Immediate);
    hec.configure(|c| c.load_balancer = Some(LoadBalancer { indexers: 3 }));
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 300)).await;
    let id = create_quiet(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "indexer_ack": true, "sources": ["audit"]}),
    )
    .await;
    let before = hec.posts().len();
    enable(&api, "acme", &id).await;
    let st = status_until(&api, "acme", &id, "every batch acknowledged", |s| {
        s["delivered"]["audit"] == 300 + CREATED_AND_ENABLED
    })
    .await;
    assert_eq!(st["retries"], 0, "no ack timed out: {st:#}");
    assert_once_any_order(&hec, 300);
    assert_eq!(hec.misrouted_polls(), 0, "every poll reached its indexer");
    let posts = &hec.posts()[before..];
    assert!(posts.len() > 5, "{posts:?}");
    assert!(
        posts[1..]
            .iter()
            .all(|p| p.cookie.as_deref().is_some_and(|c| c.contains("AWSELB="))),
        "the balancer's cookie went back with every post: {posts:?}"
    );
}

#[actix_rt::test]
async fn acks_that_never_come_again_and_again_make_the_status_point_at_stickiness() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_ACK_POLL_INTERVAL_SECS", "0.1"),
            ("SIEMSYNC_ACK_TIMEOUT_SECS", "0.3"),
        ],
    );
    let api = svc.api();
    let hec = ack_server(AckMode::Never);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 10)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "indexer_ack": true, "sources": ["audit"]}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "repeated ack timeouts", |s| {
        s["retries"].as_u64() >= Some(2)
    })
    .await;
    let advice = st["last_error"]["advice"].as_str().unwrap();
    assert!(
        advice.contains("in a row") && advice.contains("sticky"),
        "{st:#}"
    );
    assert_eq!(st["delivered"]["audit"], 0);
    hec.configure(|c| c.ack_mode = AckMode::Immediate);
    status_until(&api, "acme", &id, "delivered once acks come", |s| {
        s["delivered"]["audit"] == 10 + CREATED && s["state"] == "healthy"
    })
    .await;
}

#[actix_rt::test]
async fn several_posts_wait_for_acknowledgement_at_once_and_commit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "8192")]);
    let api = svc.api();
    let hec = ack_server(AckMode::AfterDelay(Duration::from_millis(100)));
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 800)).await;
    let id = create_quiet(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "indexer_ack": true, "gzip": false, "sources": ["audit"]}),
    )
    .await;
    let before = hec.posts().len();
    enable(&api, "acme", &id).await;
    // The checkpoint only ever moves over a prefix of what Splunk acknowledged.
    let last = Cell::new(0);
    let st = status_until(&api, "acme", &id, "everything acknowledged", |s| {
        let done = s["delivered"]["audit"].as_u64().unwrap();
        assert!(done >= last.get(), "the checkpoint went back: {s:#}");
        last.set(done);
        s["delivered"]["audit"] == 800 + CREATED_AND_ENABLED
    })
    .await;
    assert_eq!(st["retries"], 0, "{st:#}");
    // What commits in order is the checkpoint, checked above.
    assert_once_any_order(&hec, 800);
    let posts = hec.posts().len() - before;
    assert!(posts >= 30, "{posts} posts");
    assert_eq!(
        hec.max_unconfirmed(),
        4,
        "four posts (the default posts_in_flight) waited for their acks at once"
    );
}

#[actix_rt::test]
async fn a_replay_waits_for_acknowledgement_and_resends_after_an_ack_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_ACK_POLL_INTERVAL_SECS", "0.1"),
            ("SIEMSYNC_ACK_TIMEOUT_SECS", "0.3"),
        ],
    );
    let api = svc.api();
    let hec = ack_server(AckMode::Immediate);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 50)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "indexer_ack": true, "sources": ["audit"]}),
    )
    .await;
    status_until(&api, "acme", &id, "live delivery", |s| {
        s["delivered"]["audit"] == 50 + CREATED
    })
    .await;
    hec.configure(|c| c.ack_mode = AckMode::Never);
    let before = hec.posts().len();
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let window = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let (s, v) = api
        .admin("POST", &format!("{path}/replay"), Some(window))
        .await;
    assert_eq!(s, 202, "{v}");
    // Splunk took the posts but confirms none: the replay counts nothing as sent
    // and posts the same events again after each ack timeout.
    eventually(
        Duration::from_secs(20),
        "the replay's batch posted again",
        || {
            hec.posts()[before..]
                .iter()
                .filter(|p| p.status == 200 && p.accepted == 50)
                .count()
                >= 2
        },
    )
    .await;
    let st = api.status("acme", &id).await;
    assert_eq!(st["replay"]["state"], "running", "{:#}", st["replay"]);
    assert_eq!(st["replay"]["sent"], 0, "{:#}", st["replay"]);
    hec.configure(|c| c.ack_mode = AckMode::Immediate);
    let st = status_until(&api, "acme", &id, "the replay done", |s| {
        s["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["sent"], 50, "{:#}", st["replay"]);
    let got: HashSet<String> = audit_ids(&hec.events()).into_iter().collect();
    assert_eq!(got.len(), 50);
}

#[actix_rt::test]
async fn the_post_size_learnt_from_a_413_grows_back_after_a_quiet_period() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_POST_SIZE_REGROW_SECS", "0.3")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| c.max_content_length = 4096);
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 60)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "gzip": false, "sources": ["audit"]}),
    )
    .await;
    status_until(&api, "acme", &id, "delivered in small posts", |s| {
        s["delivered"]["audit"] == 60 + CREATED
    })
    .await;
    assert!(hec.posts().iter().any(|p| p.status == 413));
    // Splunk's limit is raised; after a quiet period siemsync tries larger posts again.
    hec.configure(|c| c.max_content_length = 1 << 20);
    for round in 0..30 {
        api.post_audit("acme", &audit_events("e", 60 + round * 40, 40))
            .await;
        let want = 60 + (round + 1) * 40;
        status_until(&api, "acme", &id, "the next events", |s| {
            s["delivered"]["audit"] == want as u64 + CREATED
        })
        .await;
        if hec
            .posts()
            .iter()
            .any(|p| p.status == 200 && p.bytes > 4096)
        {
            assert_once(&hec, want);
            return;
        }
    }
    panic!("posts never grew back: {:?}", hec.posts());
}
