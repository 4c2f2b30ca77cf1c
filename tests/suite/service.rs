//! End-to-end tests: the real binary, real sled, real HTTP, and the strict HEC test server.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer};
use std::collections::HashMap;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const TOKEN_A: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
const TOKEN_B: &str = "bbbbbbbb-0000-0000-0000-00000000000b";

fn count(events: &[Value], pred: impl Fn(&Value) -> bool) -> usize {
    events.iter().filter(|e| pred(e)).count()
}

fn jobs_of<'a>(events: &'a [Value], job: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["source"] == "siemsync:jobs" && e["event"]["job"] == job)
        .collect()
}

#[actix_rt::test]
async fn each_integration_receives_exactly_its_own_accounts_events_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (hec_a, hec_b) = (HecServer::start(TOKEN_A), HecServer::start(TOKEN_B));
    for a in ["acct-a", "acct-b"] {
        api.enable_account(a).await;
    }
    let id_a = api
        .add_integration("acct-a", TOKEN_A, &hec_a.base_url())
        .await;
    api.add_integration(
        "acct-b",
        TOKEN_B,
        &format!("{}/services/collector/event", hec_b.base_url()),
    )
    .await;

    let posted_a = audit_events("a", 0, 600);
    let posted_b = audit_events("b", 0, 400);
    for chunk in posted_a.as_array().unwrap().chunks(150) {
        api.post_audit("acct-a", &json!(chunk)).await;
    }
    api.post_audit("acct-b", &posted_b).await;
    let job = |acct: &str, i: usize, status: &str, progress: f64| {
        json!({"job": format!("{acct}-job-{i}"), "connector": "conn-9", "type": "backup", "status": status,
               "progress": progress, "description": format!("Backup of Exchange {i}"), "user": "ops@example.com",
               "scheduled": "2026-11-25T09:00:00Z", "planned_start": "2026-11-25T09:05:00Z",
               "start_time": "2026-11-25T09:06:00Z", "paused": null, "end_time": null})
    };
    for acct in ["acct-a", "acct-b"] {
        let jobs: Vec<Value> = (0..10)
            .map(|i| {
                if i == 0 {
                    job(acct, i, "in progress", 0.25)
                } else {
                    job(acct, i, "scheduled", 0.0)
                }
            })
            .collect();
        api.post_jobs(acct, &json!(jobs)).await;
    }

    eventually(T, "all audit events at both HECs", || {
        audit_ids(&hec_a.events()).len() >= 600 && audit_ids(&hec_b.events()).len() >= 400
    })
    .await;
    eventually(T, "all jobs at both HECs", || {
        count(&hec_a.events(), |e| e["source"] == "siemsync:jobs") >= 10
            && count(&hec_b.events(), |e| e["source"] == "siemsync:jobs") >= 10
    })
    .await;

    // Each integration got exactly its own account's events, each once, in order.
    let got_a = hec_a.events();
    let want_a: Vec<String> = (0..600).map(|i| format!("a-{i}")).collect();
    assert_eq!(audit_ids(&got_a), want_a);
    let want_b: Vec<String> = (0..400).map(|i| format!("b-{i}")).collect();
    assert_eq!(audit_ids(&hec_b.events()), want_b);
    assert!(got_a.iter().all(|e| e["event"]["account"] == "acct-a"));
    assert!(hec_b
        .events()
        .iter()
        .all(|e| e["event"]["account"] == "acct-b"));

    // Every field, with the value posted.
    let by_id: HashMap<&str, &Value> = got_a
        .iter()
        .filter(|e| e["source"] == "siemsync:audit")
        .map(|e| (e["event"]["id"].as_str().unwrap(), e))
        .collect();
    for p in posted_a.as_array().unwrap() {
        let e = by_id[p["id"].as_str().unwrap()];
        let ev = &e["event"];
        assert_eq!(e["sourcetype"], "_json");
        assert_eq!(e["host"], HOST);
        assert_eq!(ev["host"], HOST);
        let t = chrono::DateTime::parse_from_rfc3339(p["time"].as_str().unwrap()).unwrap();
        assert_eq!(
            ev["time"].as_str().unwrap(),
            t.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        assert!(
            (e["time"].as_f64().unwrap() - t.timestamp_millis() as f64 / 1000.0).abs() < 0.0005
        );
        assert!(chrono::DateTime::parse_from_rfc3339(ev["upload_time"].as_str().unwrap()).is_ok());
        assert_eq!(ev["connector"], p["connector"]);
        assert_eq!(ev["acl"], p["acl"]);
        assert_eq!(ev["method"], p["method"]);
        assert_eq!(ev["user"], p["user"]);
        assert_eq!(ev["ip_address"], p["ip"]);
        assert_eq!(ev["metadata"], p["metadata"]);
        assert_eq!(ev["event"], p["event"]);
        assert_eq!(ev.as_object().unwrap().len(), 12, "{ev}");
    }
    let j = jobs_of(&got_a, "acct-a-job-3")[0];
    assert_eq!(j["sourcetype"], "_json");
    let jev = &j["event"];
    assert_eq!(jev.as_object().unwrap().len(), 16, "{jev}");
    for (k, v) in [
        ("account", json!("acct-a")),
        ("connector", json!("conn-9")),
        ("job", json!("acct-a-job-3")),
        ("scheduled", json!("2026-11-25T09:00:00Z")),
        ("planned_start", json!("2026-11-25T09:05:00Z")),
        ("start_time", json!("2026-11-25T09:06:00Z")),
        ("description", json!("Backup of Exchange 3")),
        ("progress", json!(0.0)),
        ("paused", Value::Null),
        ("end_time", Value::Null),
        ("status", json!("scheduled")),
        ("type", json!("backup")),
        ("user", json!("ops@example.com")),
        ("host", json!(HOST)),
    ] {
        assert_eq!(jev[k], v, "job field {k}");
    }
    assert_eq!(jev["time"], jev["upload_time"]);
    let upload =
        chrono::DateTime::parse_from_rfc3339(jev["upload_time"].as_str().unwrap()).unwrap();
    assert!(
        (j["time"].as_f64().unwrap() - upload.timestamp_millis() as f64 / 1000.0).abs() < 0.0005
    );

    // The job in progress arrives again on every tick, with its current progress...
    let running = "acct-a-job-0";
    let before = jobs_of(&hec_a.events(), running).len();
    eventually(T, "the running job re-sent on later ticks", || {
        jobs_of(&hec_a.events(), running).len() >= before + 2
    })
    .await;
    api.post_jobs("acct-a", &json!([job("acct-a", 0, "in progress", 0.6)]))
        .await;
    eventually(T, "the new progress", || {
        jobs_of(&hec_a.events(), running)
            .iter()
            .any(|e| e["event"]["progress"] == 0.6)
    })
    .await;
    let n = jobs_of(&hec_a.events(), running).len();
    eventually(T, "progress 0.6 repeated on the next tick", || {
        jobs_of(&hec_a.events(), running).len() > n
    })
    .await;
    assert_eq!(
        jobs_of(&hec_a.events(), running).last().unwrap()["event"]["progress"],
        0.6
    );

    // ...and once finished, arrives once more with its end status, then no more.
    let mut done = job("acct-a", 0, "successful", 1.0);
    done["end_time"] = json!("2026-11-25T10:30:00Z");
    api.post_jobs("acct-a", &json!([done])).await;
    eventually(T, "the finished job", || {
        jobs_of(&hec_a.events(), running)
            .iter()
            .any(|e| e["event"]["status"] == "successful")
    })
    .await;
    let after_finish = jobs_of(&hec_a.events(), running).len();
    // Ticks that would have re-sent it, had it still been running.
    more_syncs(&api, "acct-a", &id_a, 5).await;
    let all = hec_a.events();
    let finals = jobs_of(&all, running);
    assert_eq!(
        finals.len(),
        after_finish,
        "a finished job must not be re-sent"
    );
    assert_eq!(
        finals
            .iter()
            .filter(|e| e["event"]["status"] == "successful")
            .count(),
        1
    );
    assert_eq!(
        finals.last().unwrap()["event"]["end_time"],
        "2026-11-25T10:30:00Z"
    );
    // Jobs that are merely scheduled are sent once, not on every tick.
    assert_eq!(jobs_of(&all, "acct-a-job-3").len(), 1);
}

#[actix_rt::test]
async fn catch_up_delivers_everything_after_outage_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "16384")]);
    let api = svc.api();
    let hec = HecServer::start(TOKEN_A);
    api.enable_account("acme").await;
    let id = api.add_integration("acme", TOKEN_A, &hec.base_url()).await;
    api.post_audit("acme", &audit_events("e", 0, 100)).await;
    eventually(T, "first 100", || audit_ids(&hec.events()).len() == 100).await;

    hec.set_behaviour(Behaviour::busy());
    let failed_posts = |h: &HecServer| h.posts().iter().filter(|p| p.status == 503).count();
    // Ingest goes on through the outage: each part after another failed attempt.
    let before_first = std::time::Instant::now();
    let mut first_answered = None;
    for i in 0..5 {
        api.post_audit("acme", &audit_events("e", 100 + i * 100, 100))
            .await;
        first_answered.get_or_insert_with(std::time::Instant::now);
        let failed = failed_posts(&hec);
        eventually(T, "one more failed attempt", || failed_posts(&hec) > failed).await;
    }
    let stored_at_least = first_answered.unwrap().elapsed().as_secs_f64();
    let st = api.status("acme", &id).await;
    let stored_at_most = before_first.elapsed().as_secs_f64();
    assert_eq!(st["state"], "failing", "{st}");
    assert_eq!(st["last_error"]["code"], 9);
    assert_eq!(st["last_error"]["http_status"], 503);
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("queue"),
        "{st}"
    );
    assert_eq!(st["backlog"]["audit"], 500, "{st}");
    // The oldest undelivered event is the first one stored in the outage.
    let age = st["backlog"]["oldest_age_secs"].as_f64().unwrap();
    assert!(
        age > stored_at_least - 0.01 && age < stored_at_most + 0.01,
        "{age} s, not within [{stored_at_least}, {stored_at_most}]: {st}"
    );
    assert_eq!(audit_ids(&hec.events()).len(), 100);

    hec.set_behaviour(Behaviour::Normal);
    eventually(T, "the backlog delivered", || {
        audit_ids(&hec.events()).len() >= 600
    })
    .await;
    // Nothing more is sent on the next syncs.
    more_syncs(&api, "acme", &id, 3).await;
    let want: Vec<String> = (0..600).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        audit_ids(&hec.events()),
        want,
        "every event once, in sequence order"
    );
    let st = api.status("acme", &id).await;
    assert_eq!(st["state"], "healthy", "{st}");
    assert_eq!(st["backlog"]["events"], 0);
    assert_eq!(
        st["delivered"]["audit"], 601,
        "600 and the \"SIEM integration created\" event"
    );
    assert!(
        hec.posts().iter().filter(|p| p.status == 200).count() > 2,
        "the backlog went in several capped posts"
    );
}

#[actix_rt::test]
async fn a_retried_ingest_is_stored_once_and_each_event_delivered_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOKEN_A);
    api.enable_account("acme").await;
    let id = api.add_integration("acme", TOKEN_A, &hec.base_url()).await;
    let first = api.post_audit("acme", &audit_events("d", 0, 50)).await;
    assert_eq!(
        (first["accepted"].as_u64(), first["duplicates"].as_u64()),
        (Some(50), Some(0)),
        "{first}"
    );
    // The platform retries the whole request (its answer was lost), then sends one
    // that overlaps it: only the new ids are stored.
    let retry = api.post_audit("acme", &audit_events("d", 0, 50)).await;
    assert_eq!(
        (retry["accepted"].as_u64(), retry["duplicates"].as_u64()),
        (Some(0), Some(50)),
        "{retry}"
    );
    let overlap = api.post_audit("acme", &audit_events("d", 25, 50)).await;
    assert_eq!(
        (overlap["accepted"].as_u64(), overlap["duplicates"].as_u64()),
        (Some(25), Some(25)),
        "{overlap}"
    );
    eventually(T, "75 distinct events", || {
        audit_ids(&hec.events()).len() >= 75
    })
    .await;
    // Syncs that would have sent a stored repeat.
    more_syncs(&api, "acme", &id, 3).await;
    let want: Vec<String> = (0..75).map(|i| format!("d-{i}")).collect();
    assert_eq!(audit_ids(&hec.events()), want, "each event once, in order");
}

/// Drains a slow backlog, stops the service mid-way (`hard`: SIGKILL), restarts it on
/// the same data, and checks everything arrives with at most one batch repeated per stop.
async fn restart_mid_backlog(hard: bool) {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_MAX_BATCH_BYTES", "8192")];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOKEN_A);
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(100)));
    api.enable_account("acme").await;
    let id = api.add_integration("acme", TOKEN_A, &hec.base_url()).await;
    api.post_audit("acme", &audit_events("e", 0, 1500)).await;
    eventually(T, "part of the backlog", || {
        audit_ids(&hec.events()).len() >= 300
    })
    .await;
    // Answered just before the stop: must survive it.
    api.post_audit("acme", &audit_events("e", 1500, 50)).await;
    if hard {
        svc.kill();
    } else {
        assert!(
            svc.terminate().success(),
            "graceful stop exits 0; log:\n{}",
            svc.log_text()
        );
    }
    let delivered_before = audit_ids(&hec.events()).len();
    assert!(
        delivered_before < 1550,
        "stopped in the middle of the backlog"
    );

    // Slow only until the stop (so that it comes mid-backlog, a post in flight): the
    // rest drains at full speed.
    hec.set_behaviour(Behaviour::Normal);
    let svc = Siemsync::spawn(dir.path(), &env);
    eventually(T, "everything after restart", || {
        let ids: std::collections::HashSet<String> = audit_ids(&hec.events()).into_iter().collect();
        ids.len() == 1550
    })
    .await;
    // Syncs that would have re-sent more, had the checkpoint been left behind.
    more_syncs(&svc.api(), "acme", &id, 3).await;
    let ids = audit_ids(&hec.events());
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1550, "nothing lost");
    let duplicates = ids.len() - unique.len();
    // One 8 KiB batch holds fewer than 40 of these events.
    assert!(
        duplicates <= 40,
        "{duplicates} duplicates: more than the batch in flight"
    );
    // Order per source still holds after the restart (a repeat aside).
    let first_seen: Vec<usize> = first_arrivals(ids)
        .iter()
        .map(|id| id[2..].parse().unwrap())
        .collect();
    assert!(first_seen.windows(2).all(|w| w[0] < w[1]));
    drop(svc);
}

#[actix_rt::test]
async fn restart_after_graceful_stop_resumes_from_the_checkpoint() {
    restart_mid_backlog(false).await;
}

#[actix_rt::test]
async fn restart_after_sigkill_loses_nothing_that_was_acknowledged() {
    restart_mid_backlog(true).await;
}

#[actix_rt::test]
async fn bad_input_is_refused_by_name_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BODY_BYTES", "65536")]);
    let api = svc.api();
    api.enable_account("acme").await;
    // A disabled integration: its status shows what the store holds, nothing is sent.
    let v = api
        .ok(
            "POST",
            "/api/v1/accounts/acme/integrations",
            Some(json!({"name": "x", "hec_token": TOKEN_A,
            "hec_uri": "https://splunk.example.com:8088", "sources": ["audit", "jobs"]})),
        )
        .await;
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["enabled"], false);
    api.post_audit("acme", &audit_events("ok", 0, 3)).await;
    api.post_jobs(
        "acme",
        &json!([{"job": "j1", "type": "backup", "status": "scheduled"}]),
    )
    .await;

    let good = |i: usize| audit_events("new", i, 1)[0].clone();
    let with = |k: &str, v: Value| {
        let mut e = good(9);
        e[k] = v;
        e
    };
    let without = |k: &str| {
        let mut e = good(9);
        e.as_object_mut().unwrap().remove(k);
        e
    };
    let audit_cases: Vec<(Value, &str)> = vec![
        (json!("RAW:[{\"time\": "), "not valid JSON"),
        (
            json!({"time": "2026-11-25T10:00:00Z", "event": "x"}),
            "must be a JSON array",
        ),
        (
            json!([good(1), without("time")]),
            "item 1: `time` is required",
        ),
        (
            json!([good(1), good(2), without("event")]),
            "item 2: `event` is required",
        ),
        (
            json!([with("time", json!("25/11/2026 10:00"))]),
            "item 0: `time` is not an RFC 3339 timestamp",
        ),
        (
            json!([good(1), with("time", json!("9999-12-31T23:30:00-01:00"))]),
            "item 1: `time` is after 9999-12-31T23:59:59Z in UTC",
        ),
        (
            json!([with("time", json!("0000-01-01T00:30:00+01:00"))]),
            "item 0: `time` is before 0000-01-01T00:00:00Z in UTC",
        ),
        (
            json!([with("time", json!("2026-11-25T10:00:60Z"))]),
            "item 0: `time` has a leap second (:60) that is not at 23:59:60 UTC",
        ),
        (
            json!([with("ip", json!("300.1.2.3"))]),
            "item 0: `ip` is not an IPv4 or IPv6 address",
        ),
        (
            json!([with("connector", json!("has spaces"))]),
            "item 0: `connector` is not a valid identifier",
        ),
    ];
    for (body, msg) in audit_cases {
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/accounts/acme/audit",
                Some(INGEST),
                Some(body),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(msg),
            "want {msg:?}, got {v}"
        );
    }
    let job = json!({"job": "j2", "type": "backup", "status": "successful"});
    let job_with = |k: &str, v: Value| {
        let mut j = job.clone();
        j[k] = v;
        json!([job.clone(), j])
    };
    let job_cases: Vec<(Value, &str)> = vec![
        (
            job_with("progress", json!(1.5)),
            "item 1: `progress` must be between 0 and 1",
        ),
        (
            job_with("status", json!("exploded")),
            "item 1: `status` must be one of",
        ),
        (
            job_with("job", json!("no/slashes")),
            "item 1: `job` is not a valid identifier",
        ),
        (
            job_with("end_time", json!("tomorrow")),
            "item 1: `end_time` is not an RFC 3339 timestamp",
        ),
        (
            job_with("start_time", json!("9999-12-31T23:30:00-01:00")),
            "item 1: `start_time` is after 9999-12-31T23:59:59Z in UTC",
        ),
        (
            json!([{"job": "j3", "status": "successful"}]),
            "item 0: `type` is required",
        ),
    ];
    for (body, msg) in job_cases {
        let (s, v) = api
            .call(
                "POST",
                "/api/v1/accounts/acme/jobs",
                Some(INGEST),
                Some(body),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(msg),
            "want {msg:?}, got {v}"
        );
    }
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/accounts/bad%20id/audit",
            Some(INGEST),
            Some(json!([good(1)])),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("`account`"), "{v}");
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/audit",
            Some(INGEST),
            Some(audit_events("big", 0, 1000)),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{v}"
    );
    let (s, _) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/audit",
            None,
            Some(json!([good(1)])),
        )
        .await;
    assert_eq!(s, 401);

    // Nothing of the refused requests was stored.
    let st = api.status("acme", &id).await;
    assert_eq!(st["backlog"]["audit"], 3 + 1, "{st}"); // and "SIEM integration created"
    assert_eq!(st["backlog"]["jobs"], 1, "{st}");
    assert_eq!(st["state"], "disabled");
    // Repeated ids are recognised.
    let v = api.post_audit("acme", &audit_events("ok", 2, 2)).await;
    assert_eq!(v, json!({"accepted": 1, "duplicates": 1}));
}

#[actix_rt::test]
async fn bad_integrations_are_refused_with_a_message_and_tokens_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let base = json!({"name": "Main", "hec_token": TOKEN_A, "hec_uri": "https://splunk.example.com:8088",
                      "sources": ["audit"], "enabled": true});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("hec_token", Value::Null, "`hec_token` is required"),
        (
            "hec_uri",
            json!("ftp://splunk.example.com"),
            "`hec_uri` must use https://",
        ),
        (
            "hec_uri",
            json!("https://splunk.example.com:8088/services/collector/raw"),
            "/raw endpoint",
        ),
        (
            "sources",
            json!(["audit", "metrics"]),
            "`sources` may hold only",
        ),
        ("name", json!(""), "`name` must not be empty"),
    ];
    for (field, value, msg) in cases {
        let mut body = base.clone();
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        let (s, v) = api
            .admin("POST", "/api/v1/accounts/acme/integrations", Some(body))
            .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(msg),
            "want {msg:?}, got {v}"
        );
    }
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/acme/integrations", None)
            .await,
        json!([])
    );

    let (s, created) = api
        .admin(
            "POST",
            "/api/v1/accounts/acme/integrations",
            Some(base.clone()),
        )
        .await;
    assert_eq!(s, 201);
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let (s, v) = api
        .admin("PATCH", &path, Some(json!({"hec_uri": "gopher://x"})))
        .await;
    assert_eq!(s, 400, "{v}");
    let got = api.ok("GET", &path, None).await;
    assert_eq!(
        got["hec_uri"], "https://splunk.example.com:8088",
        "a refused change changes nothing"
    );
    for v in [
        &created,
        &got,
        &api.ok("GET", "/api/v1/accounts/acme/integrations", None)
            .await,
    ] {
        assert!(!v.to_string().contains(TOKEN_A), "token leaked: {v}");
    }
    assert_eq!(got["hec_token"], "****000a");
    assert!(!svc.log_text().contains(TOKEN_A), "token in the log");
    // Only the admin (later: the account) manages integrations; the ingest token may not.
    let (s, _) = api
        .call(
            "GET",
            "/api/v1/accounts/acme/integrations",
            Some(INGEST),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api.admin("DELETE", &path, None).await;
    assert_eq!(s, 204);
    let (s, v) = api.admin("GET", &path, None).await;
    assert_eq!(s, 404, "{v}");
}

#[actix_rt::test]
async fn creating_an_integration_without_the_feature_says_contact_support() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let body = json!({"name": "Main", "hec_token": TOKEN_A, "hec_uri": "https://splunk.example.com:8088", "sources": ["audit"]});
    let (s, v) = api
        .admin(
            "POST",
            "/api/v1/accounts/newco/integrations",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("contact our support team"),
        "{v}"
    );
    api.ok(
        "PUT",
        "/api/v1/accounts/newco",
        Some(json!({"siem_enabled": false})),
    )
    .await;
    let (s, _) = api
        .admin(
            "POST",
            "/api/v1/accounts/newco/integrations",
            Some(body.clone()),
        )
        .await;
    assert_eq!(s, 403);
    api.enable_account("newco").await;
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/newco", None).await["siem_enabled"],
        true
    );
    let (s, _) = api
        .admin("POST", "/api/v1/accounts/newco/integrations", Some(body))
        .await;
    assert_eq!(s, 201);
}

#[actix_rt::test]
async fn patching_one_integrations_token_restarts_only_that_integration() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (hec_a, hec_b) = (HecServer::start(TOKEN_A), HecServer::start(TOKEN_B));
    hec_a.configure(|c| c.tokens.push("aaaaaaaa-1111-1111-1111-11111111111a".into()));
    api.enable_account("acme").await;
    let a = api
        .add_integration("acme", TOKEN_A, &hec_a.base_url())
        .await;
    let b = api
        .add_integration("acme", TOKEN_B, &hec_b.base_url())
        .await;
    api.post_audit("acme", &audit_events("w", 0, 1)).await;
    eventually(T, "both deliver", || {
        hec_a.event_count() >= 1 && hec_b.event_count() >= 1
    })
    .await;
    let started = |st: &Value| st["started_at"].as_str().unwrap().to_owned();
    let (a0, b0) = (
        started(&api.status("acme", &a).await),
        started(&api.status("acme", &b).await),
    );

    // Steady ingest while A's token changes.
    let mut next = 1;
    for round in 0..16 {
        api.post_audit("acme", &audit_events("w", next, 5)).await;
        next += 5;
        if round == 6 {
            let v = api
                .ok(
                    "PATCH",
                    &format!("/api/v1/accounts/acme/integrations/{a}"),
                    Some(json!({"hec_token": "aaaaaaaa-1111-1111-1111-11111111111a"})),
                )
                .await;
            assert_eq!(v["hec_token"], "****111a");
        }
        // Each round's events go out before the next round: ingest spread over many syncs.
        eventually(T, "the round at B", || {
            audit_ids(&hec_b.events()).len() >= next
        })
        .await;
    }
    let (a1, b1) = (
        started(&api.status("acme", &a).await),
        started(&api.status("acme", &b).await),
    );
    assert_ne!(a0, a1, "A restarted with its new token");
    assert_eq!(b0, b1, "B was not touched");
    // Counted without A's re-sends: a duplicate must not stand in for an event
    // still on its way.
    eventually(T, "all events at both", || {
        first_arrivals(audit_ids(&hec_a.events())).len() >= next
            && audit_ids(&hec_b.events()).len() >= next
    })
    .await;
    let want: Vec<String> = (0..next).map(|i| format!("w-{i}")).collect();
    assert_eq!(
        audit_ids(&hec_b.events()),
        want,
        "B lost or repeated nothing"
    );
    // A may get a post twice: the PATCH can restart it while a post is in flight, and
    // that post is sent again (at-least-once). Every event arrives, first in order.
    assert_eq!(
        first_arrivals(audit_ids(&hec_a.events())),
        want,
        "A lost or reordered an event"
    );
    // B kept its rhythm: no gap between its posts longer than the interval plus slack.
    let posts = hec_b.posts();
    let gaps: Vec<Duration> = posts.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(2500)),
        "B's posts paused: {gaps:?}"
    );
}

#[actix_rt::test]
async fn ctrl_c_stops_cleanly_and_the_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::spawn(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOKEN_A);
    api.enable_account("acme").await;
    api.add_integration("acme", TOKEN_A, &hec.base_url()).await;
    api.post_audit("acme", &audit_events("e", 0, 20)).await;
    eventually(T, "delivery", || audit_ids(&hec.events()).len() == 20).await;
    svc.signal("INT");
    let status = svc.terminate_wait();
    assert!(status.success(), "Ctrl-C exits cleanly: {status:?}");
    assert!(svc.log_text().contains("flushing the store"));
    let svc = Siemsync::spawn(dir.path(), &[]);
    svc.api()
        .post_audit("acme", &audit_events("e", 20, 5))
        .await;
    eventually(T, "delivery after the restart", || {
        audit_ids(&hec.events()).len() == 25
    })
    .await;
    assert_eq!(
        audit_ids(&hec.events()),
        (0..25).map(|i| format!("e-{i}")).collect::<Vec<_>>()
    );
}
