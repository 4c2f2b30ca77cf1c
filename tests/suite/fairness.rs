//! Fair shares between accounts: one account flooding ingest is held to its rate,
//! one whose Splunk is down is held to its backlog quota, and the others are not
//! slowed.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer};
use std::time::{Duration, Instant};

const TOK: &str = "abcdef01-2345-6789-abcd-ef0123456789";

#[actix_rt::test]
async fn an_account_over_its_ingest_rate_gets_429_with_retry_after_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (s, flood) = api
        .admin(
            "PUT",
            "/api/v1/accounts/flood",
            Some(json!({"siem_enabled": true, "ingest_events_per_sec": 10, "ingest_burst": 200})),
        )
        .await;
    assert_eq!(s, 200, "{flood}");
    assert_eq!(
        flood["ingest_limit"],
        json!({"events_per_sec": 10, "burst": 200})
    );

    let (s, _, _) = post(&svc, "flood", &audit_events("f", 0, 150)).await;
    assert_eq!(s, 200);
    // 50 left: 200 more are over the rate for 15 s.
    let over = audit_events("f", 150, 200);
    let (s, retry_after, body) = post(&svc, "flood", &over).await;
    assert_eq!(s, 429, "{body}");
    // 150 more are needed at 10 a second: about 15 s (less if the test was slow).
    assert!(
        retry_after.is_some_and(|r| (1..=15).contains(&r)),
        "{retry_after:?}"
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("ingest rate") && error.contains("nothing") && error.contains("200 events"),
        "{error}"
    );
    // Another account is not held back by the flood.
    let (s, _, _) = post(&svc, "calm", &audit_events("c", 0, 1000)).await;
    assert_eq!(s, 200);

    // What is left of the allowance takes 40 of the refused events, as new ones:
    // the 429 stored none of them.
    let first_40 = Value::Array(over.as_array().unwrap()[..40].to_vec());
    let (s, _, body) = post(&svc, "flood", &first_40).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body, json!({"accepted": 40, "duplicates": 0}));

    // More events in one request than the burst can never pass: 413, not a 429 to
    // retry for ever.
    let (s, retry_after, body) = post(&svc, "flood", &audit_events("g", 0, 201)).await;
    assert_eq!((s, retry_after), (413, None), "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("ingest burst (200 events)"));

    let flood = api.ok("GET", "/api/v1/accounts/flood", None).await;
    assert!(
        flood["rate_limited_requests"].as_u64().unwrap() >= 1,
        "{flood}"
    );
    let calm = api.ok("GET", "/api/v1/accounts/calm", None).await;
    assert_eq!(calm["rate_limited_requests"], 0);
    assert_eq!(calm["ingest_events_per_sec"], Value::Null, "the default");
    assert_eq!(calm["ingest_limit"]["events_per_sec"], 100_000);
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l.starts_with("siemsync_ingest_rejections_total")
                && l.contains("reason=\"rate_limited\"")),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn account_ingest_limits_are_kept_across_a_feature_switch_reset_with_null_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_ACCOUNT_INGEST_BURST", "5000")]);
    let api = svc.api();
    api.ok(
        "PUT",
        "/api/v1/accounts/acme",
        Some(json!({"siem_enabled": true, "ingest_burst": 300})),
    )
    .await;
    // Switching the feature, as the platform does, leaves the operator's override.
    let a = api
        .ok(
            "PUT",
            "/api/v1/accounts/acme",
            Some(json!({"siem_enabled": false})),
        )
        .await;
    assert_eq!(a["ingest_burst"], 300);
    for (body, field) in [
        (
            json!({"siem_enabled": true, "ingest_burst": 0}),
            "ingest_burst",
        ),
        (
            json!({"siem_enabled": true, "ingest_events_per_sec": "fast"}),
            "ingest_events_per_sec",
        ),
    ] {
        let (s, e) = api.admin("PUT", "/api/v1/accounts/acme", Some(body)).await;
        assert_eq!(s, 400);
        assert!(e["error"].as_str().unwrap().contains(field), "{e}");
    }
    let a = api.ok("GET", "/api/v1/accounts/acme", None).await;
    assert_eq!(a["siem_enabled"], false, "a refused change changes nothing");
    assert_eq!(a["ingest_burst"], 300);
    let a = api
        .ok(
            "PUT",
            "/api/v1/accounts/acme",
            Some(json!({"siem_enabled": true, "ingest_burst": null})),
        )
        .await;
    assert_eq!(a["ingest_burst"], Value::Null);
    assert_eq!(
        a["ingest_limit"]["burst"], 5000,
        "the operator's default again"
    );
}

/// The 99th percentile of `v` (the largest for fewer than 100 samples).
fn p99(v: &mut [Duration]) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// C posts `n` requests of 50 events from index `from`; returns each request's latency.
async fn post_timed(svc: &Siemsync, account: &str, prefix: &str, from: usize) -> Duration {
    let started = Instant::now();
    let (s, _, body) = post(svc, account, &audit_events(prefix, from, 50)).await;
    assert_eq!(s, 200, "{body}");
    started.elapsed()
}

/// Account A's usage once its stored bytes are within `bytes`, which they must be
/// within 5 s of `since`; `(quota, after)` say which quota and since what, `over`
/// what it means when A is still over.
async fn a_within_quota(
    api: &Api,
    bytes: u64,
    since: Instant,
    (quota, after): (&str, &str),
    over: &str,
) -> Value {
    let deadline = since + Duration::from_secs(5);
    loop {
        let account = api.ok("GET", "/api/v1/accounts/a", None).await;
        if account["usage"]["stored_bytes"].as_u64().unwrap() <= bytes {
            eprintln!("A within {quota} {:?} {after}", since.elapsed());
            return account["usage"].clone();
        }
        assert!(Instant::now() < deadline, "{over}: {account:#}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Account A's quota drops and the status of integration `id`, read when the drops
/// did not move around the status read. A chunk a post in flight held goes once that
/// post is over (it is older than what the quota dropped), adding to the drops and
/// the gap in one write: both only grow and move together, so a gap read between two
/// equal drop counts must equal them — reading each once, at two moments, can see a
/// drop between them (seen at load 14–19).
async fn settled_drops(api: &Api, id: &str) -> (u64, Value) {
    let drops = || async {
        api.ok("GET", "/api/v1/accounts/a", None).await["usage"]["quota_drops"]["events"]
            .as_u64()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let before = drops().await;
        let st = api.status("a", id).await;
        if drops().await == before {
            return (before, st);
        }
        assert!(Instant::now() < deadline, "A's quota drops kept moving");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn an_account_over_its_quota_gets_under_it_while_a_slow_splunk_always_has_a_post_in_flight() {
    const QUOTA: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    // Small posts, one at a time, each answered after a second: the oldest undelivered
    // events are nearly always in a post in flight. The periodic sweep is far away.
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "60"),
            ("SIEMSYNC_MAX_BATCH_BYTES", "4096"),
            ("SIEMSYNC_POSTS_IN_FLIGHT", "1"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.ok(
        "PUT",
        "/api/v1/accounts/a",
        Some(json!({"siem_enabled": true, "max_backlog_bytes": QUOTA})),
    )
    .await;
    let body = json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]});
    let id = create_integration(&api, "a", body).await;
    // siemsync's own event about the new integration is delivered first, so that the
    // gap counts the platform's events only.
    eventually(
        Duration::from_secs(10),
        "the integration's first event",
        || {
            hec.events()
                .iter()
                .any(|e| e["event"]["acl"] == "siem-integration:manage")
        },
    )
    .await;
    hec.set_behaviour(Behaviour::Slow(Duration::from_secs(1)));
    for i in 0..20 {
        let (s, _, body) = post(&svc, "a", &audit_events("a", i * 100, 100)).await;
        assert_eq!(s, 200, "{body}");
    }
    let last_post = Instant::now();
    let usage = a_within_quota(
        &api,
        QUOTA,
        last_post,
        ("its quota", "after its last post"),
        "A still over its quota while its slow Splunk has a post in flight",
    )
    .await;
    assert!(
        usage["quota_drops"]["events"].as_u64().unwrap() > 1000,
        "{usage}"
    );
    // Exact: Splunk gets every event the gap does not count. (The chunk a post held
    // may still go once that post is over, so the gap is read at the end.)
    hec.set_behaviour(Behaviour::Normal);
    let gap = || async {
        let st = api.status("a", &id).await;
        assert_eq!(st["gaps"].as_array().unwrap().len(), 1, "{st:#}");
        assert_eq!(st["gaps"][0]["reason"], "backlog_quota", "{st:#}");
        st["gaps"][0]["count"].as_u64().unwrap() as usize
    };
    status_until(&api, "a", &id, "A's backlog delivered", |st| {
        st["backlog"]["audit"] == 0
    })
    .await;
    let wanted = 2000 - gap().await;
    eventually(Duration::from_secs(20), "the events not dropped", || {
        let got: std::collections::BTreeSet<String> = audit_ids(&hec.events())
            .into_iter()
            .filter(|id| id.starts_with("a-"))
            .collect();
        got.len() >= wanted
    })
    .await;
    let got: std::collections::BTreeSet<String> = audit_ids(&hec.events())
        .into_iter()
        .filter(|id| id.starts_with("a-"))
        .collect();
    assert_eq!(
        got.len(),
        wanted,
        "delivered or counted in the gap, never both"
    );
    assert!(got.contains("a-1999"));
}

#[actix_rt::test]
async fn one_account_over_its_backlog_quota_and_one_over_its_rate_leave_the_third_unaffected() {
    const QUOTA: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    // The periodic sweep is far away: only the sweep an ingest asks for can drop A's
    // oldest events within the test.
    let svc = Siemsync::start(
        dir.path(),
        &[("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "60")],
    );
    let api = svc.api();
    let (hec_a, hec_b, hec_c) = (
        HecServer::start(TOK),
        HecServer::start(TOK),
        HecServer::start(TOK),
    );
    hec_a.set_behaviour(Behaviour::busy());
    api.ok(
        "PUT",
        "/api/v1/accounts/a",
        Some(json!({"siem_enabled": true, "max_backlog_bytes": QUOTA})),
    )
    .await;
    api.ok(
        "PUT",
        "/api/v1/accounts/b",
        Some(json!({"siem_enabled": true, "ingest_events_per_sec": 10, "ingest_burst": 100})),
    )
    .await;
    api.enable_account("c").await;
    let mut ids = Vec::new();
    for (account, hec) in [("a", &hec_a), ("b", &hec_b), ("c", &hec_c)] {
        let body = json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]});
        ids.push(create_integration(&api, account, body).await);
    }

    // C alone, for comparison.
    let mut alone = Vec::new();
    for i in 0..20 {
        alone.push(post_timed(&svc, "c", "c", i * 50).await);
    }
    // A floods past its quota while its Splunk is down, B past its rate; C goes on.
    let (mut beside, mut b_accepted, mut b_refused) = (Vec::new(), Vec::new(), 0);
    for i in 0..20 {
        let (s, _, body) = post(&svc, "a", &audit_events("a", i * 100, 100)).await;
        assert_eq!(
            s, 200,
            "A's ingest is never refused for its backlog: {body}"
        );
        let events = audit_events("b", i * 50, 50);
        match post(&svc, "b", &events).await {
            (200, _, _) => b_accepted.extend(
                events
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["id"].as_str().unwrap().to_owned()),
            ),
            (429, Some(retry_after), body) => {
                assert!(retry_after >= 1, "{body}");
                b_refused += 1;
            }
            other => panic!("B: {other:?}"),
        }
        beside.push(post_timed(&svc, "c", "c", 1000 + i * 50).await);
    }
    let (alone, beside) = (p99(&mut alone), p99(&mut beside));
    eprintln!("C's ingest p99: {alone:?} alone, {beside:?} beside A and B");
    assert!(
        beside < alone * 10 + Duration::from_millis(250),
        "C slowed: {alone:?} alone, {beside:?} beside A and B"
    );
    assert_eq!(b_accepted.len(), 100, "B's burst, then its rate");
    assert!(b_refused >= 17, "{b_refused}");

    // C's events all arrive; B's accepted ones do, and nothing of a refused request.
    eventually(Duration::from_secs(10), "C's 2000 events", || {
        audit_ids(&hec_c.events()).len() >= 2000
    })
    .await;
    let c: std::collections::BTreeSet<String> = audit_ids(&hec_c.events()).into_iter().collect();
    assert_eq!(c.len(), 2000);
    eventually(Duration::from_secs(10), "B's accepted events", || {
        audit_ids(&hec_b.events()).len() >= 100
    })
    .await;
    let b: std::collections::BTreeSet<String> = audit_ids(&hec_b.events()).into_iter().collect();
    assert_eq!(b, b_accepted.into_iter().collect());
    // Neither lost anything.
    for (account, id) in [("b", &ids[1]), ("c", &ids[2])] {
        assert_eq!(api.status(account, id).await["gaps"], json!([]));
        let other = api
            .ok("GET", &format!("/api/v1/accounts/{account}"), None)
            .await;
        assert_eq!(other["usage"]["quota_drops"], Value::Null, "{other}");
    }

    // A's oldest went for the quota, at once (not at the next sweep period)...
    let deadline = Instant::now() + Duration::from_secs(10);
    let account = loop {
        let account = api.ok("GET", "/api/v1/accounts/a", None).await;
        if account["usage"]["backlog_bytes"].as_u64().unwrap() <= QUOTA {
            break account;
        }
        assert!(
            Instant::now() < deadline,
            "A still over its quota: {account:#}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    let usage = &account["usage"];
    assert_eq!(usage["max_backlog_bytes"], QUOTA);
    // ...and the integration's gap counts exactly those, with their time range.
    let (dropped, st) = settled_drops(&api, &ids[0]).await;
    assert!(dropped > 1000, "{usage}");
    assert_eq!(st["gaps"].as_array().unwrap().len(), 1, "{st:#}");
    let gap = &st["gaps"][0];
    assert_eq!(gap["reason"], "backlog_quota", "{st:#}");
    assert_eq!(gap["count"], dropped, "{st:#}");
    assert!(time(&gap["from"]) <= time(&gap["to"]));

    // A's Splunk is back: its newest events arrive, a contiguous run up to the last,
    // with siemsync's own event saying what was dropped.
    hec_a.set_behaviour(Behaviour::Normal);
    eventually(Duration::from_secs(10), "A's newest event", || {
        audit_ids(&hec_a.events()).contains(&"a-1999".to_owned())
    })
    .await;
    let got: std::collections::BTreeSet<usize> = audit_ids(&hec_a.events())
        .iter()
        .filter_map(|id| id.strip_prefix("a-")?.parse().ok())
        .collect();
    let first = *got.first().unwrap();
    assert!(first > 0, "the oldest were dropped");
    assert!(
        got.range(1900..).copied().eq(1900..2000),
        "the newest all arrived"
    );
    // Each event delivered or counted in the gap, never both. (A post in flight keeps
    // its events while what follows goes: the delivered ones need not be one run.)
    // The stream also holds siemsync's event about the integration's creation.
    let st = api.status("a", &ids[0]).await;
    let delivered = hec_a
        .events()
        .iter()
        .filter(|e| {
            e["source"] == "siemsync:audit" && e["event"]["acl"] != "siem-integration:backlog-quota"
        })
        .map(|e| e["event"]["id"].to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    assert_eq!(
        delivered + st["gaps"][0]["count"].as_u64().unwrap(),
        2001,
        "{st:#}"
    );
    let notes: Vec<Value> = hec_a
        .events()
        .into_iter()
        .filter(|e| e["event"]["acl"] == "siem-integration:backlog-quota")
        .collect();
    assert!(!notes.is_empty(), "siemsync's own event about the drop");
    assert!(notes[0]["event"]["event"]
        .as_str()
        .unwrap()
        .contains("over its quota"));
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("siemsync_account_quota_dropped_events{account=\"a\"}")
            && l.ends_with(&format!(" {dropped}"))),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(
            |l| l.starts_with("siemsync_gap_events{") && l.contains("reason=\"backlog_quota\"")
        ),
        "{metrics}"
    );
}

/// A quota lowered by `PUT /api/v1/accounts/{account}` applies at once, not at the
/// next sweep period: the account is dropped down to it oldest first, and its
/// integration's gap counts exactly what the quota dropped (on PostgreSQL by the
/// node the request reached).
#[actix_rt::test]
async fn a_quota_lowered_by_put_drops_the_account_down_to_it_within_moments() {
    const QUOTA: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "60")],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::busy());
    api.enable_account("a").await;
    let body = json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]});
    let id = create_integration(&api, "a", body).await;
    for i in 0..20 {
        let (s, _, body) = post(&svc, "a", &audit_events("a", i * 100, 100)).await;
        assert_eq!(s, 200, "{body}");
    }
    let account = api.ok("GET", "/api/v1/accounts/a", None).await;
    assert!(
        account["usage"]["stored_bytes"].as_u64().unwrap() > QUOTA,
        "{account:#}"
    );
    assert_eq!(account["usage"]["quota_drops"], Value::Null, "{account:#}");
    let lowered = Instant::now();
    api.ok(
        "PUT",
        "/api/v1/accounts/a",
        Some(json!({"siem_enabled": true, "max_backlog_bytes": QUOTA})),
    )
    .await;
    let usage = a_within_quota(
        &api,
        QUOTA,
        lowered,
        ("its lowered quota", "after the PUT"),
        "A still over its lowered quota",
    )
    .await;
    let (dropped, st) = settled_drops(&api, &id).await;
    assert!(dropped > 1000, "{usage}");
    assert_eq!(st["gaps"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(st["gaps"][0]["reason"], "backlog_quota", "{st:#}");
    assert_eq!(st["gaps"][0]["count"], dropped, "{st:#}");
}
