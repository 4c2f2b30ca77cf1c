//! What the web page needs from the API, and API callers get too: the administrator's
//! account list, a replay window counted before it starts, settings tested before they
//! are saved, the warning about a duplicate integration, advice that tells an https URI
//! on a plain-HTTP HEC from an untrusted certificate, and a status that says whether a
//! failure needs the customer and how a "sync now" ended.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer};

const TOK: &str = "abcdef01-2345-6789-abcd-ef0123456789";
const OTHER_TOK: &str = "99999999-2345-6789-abcd-ef0123456789";

fn integrations(account: &str) -> String {
    format!("/api/v1/accounts/{account}/integrations")
}

#[actix_rt::test]
async fn the_admin_lists_every_known_account_and_a_missing_one_is_not_feature_off() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "enabled": false}),
    )
    .await;
    // Known without the feature: a token made, events posted, or switched off.
    let newco = api.ok("POST", "/api/v1/accounts/newco/tokens", None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post_audit("quiet", &audit_events("q", 0, 2)).await;
    api.ok(
        "PUT",
        "/api/v1/accounts/paused",
        Some(json!({"siem_enabled": false})),
    )
    .await;

    let list = api.ok("GET", "/api/v1/accounts", None).await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["acme", "newco", "paused", "quiet"], "{list}");
    assert_eq!(list[0]["siem_enabled"], true);
    assert_eq!(list[0]["integrations"], 2);
    for a in &list.as_array().unwrap()[1..] {
        assert_eq!(a["siem_enabled"], false, "{a}");
        assert_eq!(a["integrations"], 0, "{a}");
    }
    // Only the admin sees every account.
    for token in [newco.as_str(), INGEST] {
        assert_eq!(
            api.call("GET", "/api/v1/accounts", Some(token), None)
                .await
                .0,
            403
        );
    }

    // A known account with the feature off answers as such; an unknown one is 404.
    let (s, v) = api.admin("GET", "/api/v1/accounts/newco", None).await;
    assert_eq!((s, &v["siem_enabled"]), (200, &json!(false)), "{v}");
    let (s, v) = api
        .call("GET", "/api/v1/accounts/newco", Some(&newco), None)
        .await;
    assert_eq!((s, &v["siem_enabled"]), (200, &json!(false)), "{v}");
    let (s, v) = api.admin("GET", "/api/v1/accounts/acm", None).await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("no account \"acm\""),
        "{v}"
    );
}

#[actix_rt::test]
async fn a_replay_window_is_counted_per_source_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    // Audit events at 10:00:00 .. 10:00:09 on 2026-11-25.
    api.post_audit("acme", &audit_events("e", 0, 10)).await;
    api.post_jobs(
        "acme",
        &json!([{"job": "j1", "type": "backup", "status": "in progress"},
                {"job": "j2", "type": "backup", "status": "successful"}]),
    )
    .await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    let audit_only = create_integration(
        &api,
        "acme",
        json!({"hec_token": OTHER_TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let preview = |id: &str, query: &str| {
        let api = api.clone();
        let path = format!("{}/{id}/replay/preview?{query}", integrations("acme"));
        async move { api.admin("GET", &path, None).await }
    };

    let (s, v) = preview(&id, "from=2026-11-25T10:00:02Z&to=2026-11-25T10:00:05.500Z").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["counts"], json!({"audit": 4, "jobs": 0}), "{v}");
    assert_eq!(v["total"], 4);
    assert_eq!(v["from"], "2026-11-25T10:00:02Z");
    // Jobs count by the time their snapshot was stored: now.
    let now = chrono::Utc::now();
    let around_now = format!(
        "from={}&to={}",
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    let (s, v) = preview(&id, &format!("{around_now}&sources=jobs")).await;
    assert_eq!((s, &v["counts"]), (200, &json!({"jobs": 2})), "{v}");
    // Sources default to the integration's own.
    let (_, v) = preview(
        &audit_only,
        "from=2026-11-25T00:00:00Z&to=2026-11-26T00:00:00Z",
    )
    .await;
    assert_eq!(v["counts"], json!({"audit": 10}), "{v}");

    // Mistakes name the parameter; nothing is started.
    for (query, field) in [
        ("to=2026-11-25T10:00:05Z", "`from`"),
        ("from=yesterday&to=2026-11-25T10:00:05Z", "`from`"),
        (
            "from=2026-11-25T11:00:00Z&to=2026-11-25T10:00:00Z",
            "`from`",
        ),
        (
            "from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z&sources=logs",
            "`sources`",
        ),
    ] {
        let (s, v) = preview(&id, query).await;
        assert_eq!(s, 400, "{query}: {v}");
        assert!(v["error"].as_str().unwrap().contains(field), "{query}: {v}");
    }
    let (s, v) = preview(
        &audit_only,
        "from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z&sources=jobs",
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`sources`"), "{v}");
    assert_eq!(api.status("acme", &id).await["replay"], Value::Null);
}

#[actix_rt::test]
async fn settings_are_tested_before_they_are_saved_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let elsewhere = HecServer::start(TOK);
    api.enable_account("acme").await;
    let test = format!("{}/test", integrations("acme"));
    let body = json!({"name": "Main Splunk", "hec_token": TOK, "hec_uri": hec.base_url(),
                      "sources": ["audit", "jobs"], "enabled": true});

    let v = api.ok("POST", &test, Some(body.clone())).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["steps"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["warnings"], json!([]));
    assert!(hec.events().iter().any(|e| e["source"] == "siemsync:test"));
    assert_eq!(api.ok("GET", &integrations("acme"), None).await, json!([]));

    let mut wrong = body.clone();
    wrong["hec_token"] = json!(OTHER_TOK);
    let v = api.ok("POST", &test, Some(wrong)).await;
    assert_eq!(v["ok"], false, "{v}");
    assert!(v["summary"].as_str().unwrap().contains("token"), "{v}");

    let mut bad = body.clone();
    bad["hec_uri"] = json!("ftp://splunk.example.com");
    let (s, v) = api.admin("POST", &test, Some(bad)).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().starts_with("`hec_uri`"), "{v}");

    // A saved integration's changes are tested with its stored token, but the
    // stored token goes to no other host: a new destination needs the token again.
    let id = create_integration(&api, "acme", body.clone()).await;
    let v = api
        .ok("POST", &test, Some(json!({"id": id, "name": "Renamed"})))
        .await;
    assert_eq!(v["ok"], true, "{v}");
    let before = elsewhere.events().len();
    let (s, v) = api
        .admin(
            "POST",
            &test,
            Some(json!({"id": id, "hec_uri": elsewhere.base_url()})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("`hec_token`"), "{v}");
    assert_eq!(elsewhere.events().len(), before, "nothing was sent there");
    let v = api
        .ok(
            "POST",
            &test,
            Some(json!({"id": id, "hec_uri": elsewhere.base_url(), "hec_token": TOK})),
        )
        .await;
    assert_eq!(v["ok"], true, "{v}");
    let (s, _) = api
        .admin(
            "POST",
            &test,
            Some(json!({"id": "00000000-0000-4000-8000-000000000000", "name": "x"})),
        )
        .await;
    assert_eq!(s, 404);

    // The same URI and token as a saved integration: warned about, by name.
    let v = api.ok("POST", &test, Some(body.clone())).await;
    let w = &v["warnings"][0];
    assert_eq!(w["kind"], "duplicate", "{v}");
    assert_eq!(w["integrations"][0]["id"], json!(id));
    assert!(
        w["message"].as_str().unwrap().contains("Main Splunk"),
        "{w}"
    );
    assert_eq!(
        api.ok("GET", &integrations("acme"), None)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // An account token of another account cannot test here.
    let other = api.ok("POST", "/api/v1/accounts/other/tokens", None).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        api.call("POST", &test, Some(&other), Some(body.clone()))
            .await
            .0,
        404
    );
    // Without the feature, new settings are not tested either.
    let (s, v) = api
        .call(
            "POST",
            &format!("{}/test", integrations("other")),
            Some(&other),
            Some(body),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("support"), "{v}");
}

#[actix_rt::test]
async fn an_integration_with_the_same_uri_and_token_as_another_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    api.enable_account("beta").await;
    let body = json!({"name": "First", "hec_token": TOK, "hec_uri": hec.base_url(),
                      "sources": ["audit"], "enabled": true});
    let first = api
        .ok("POST", &integrations("acme"), Some(body.clone()))
        .await;
    assert_eq!(first["warnings"], json!([]));
    // Another account's integration to the same place is no duplicate of this one.
    api.ok("POST", &integrations("beta"), Some(body.clone()))
        .await;
    let mut again = body.clone();
    again["name"] = json!("Second");
    // The same collector written another way is the same destination.
    again["hec_uri"] = json!(format!("{}/services/collector/event", hec.base_url()));
    let second = api.ok("POST", &integrations("acme"), Some(again)).await;
    let w = &second["warnings"][0];
    assert_eq!(w["kind"], "duplicate", "{second}");
    assert_eq!(
        w["integrations"],
        json!([{"id": first["id"], "name": "First"}])
    );
    assert!(w["message"].as_str().unwrap().contains("twice"), "{second}");
    let list = api.ok("GET", &integrations("acme"), None).await;
    assert_eq!(list[0]["warnings"][0]["integrations"][0]["name"], "Second");
    assert_eq!(list[1]["warnings"][0]["integrations"][0]["name"], "First");

    let path = format!(
        "{}/{}",
        integrations("acme"),
        second["id"].as_str().unwrap()
    );
    let changed = api
        .ok("PATCH", &path, Some(json!({"hec_token": OTHER_TOK})))
        .await;
    assert_eq!(changed["warnings"], json!([]));
    let list = api.ok("GET", &integrations("acme"), None).await;
    assert_eq!(list[0]["warnings"], json!([]));
    assert_eq!(api.ok("GET", &path, None).await["warnings"], json!([]));
}

#[actix_rt::test]
async fn an_https_uri_on_a_plain_http_hec_is_told_to_use_http_not_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let uri = format!("https://{}", hec.addr);
    let id = create_integration(&api, "acme", json!({"hec_token": TOK, "hec_uri": uri})).await;
    let report = api
        .ok("POST", &format!("{}/{id}/test", integrations("acme")), None)
        .await;
    assert_eq!(report["ok"], false);
    let summary = report["summary"].as_str().unwrap();
    assert!(summary.contains("http://"), "{report}");
    assert!(
        !summary.contains("ca_pem") && !summary.contains("not trusted"),
        "{report}"
    );
    let st = status_until(&api, "acme", &id, "the delivery error", |s| {
        s["last_error"].is_object()
    })
    .await;
    let advice = st["last_error"]["advice"].as_str().unwrap();
    assert!(advice.contains("http://"), "{st}");
    assert!(!advice.contains("ca_pem"), "{st}");
    assert_eq!(st["last_error"]["kind"], "configuration");
}

#[actix_rt::test]
async fn status_tells_retrying_from_needs_action_and_how_a_sync_ended() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::busy());
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 3)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "a busy Splunk", |s| {
        s["last_error"]["code"] == 9
    })
    .await;
    assert_eq!(st["last_error"]["kind"], "transient", "{st}");
    assert!(st["retries"].as_u64().unwrap() >= 1);
    assert_eq!(st["last_sync"]["ok"], false, "{st}");

    hec.set_behaviour(Behaviour::Normal);
    let sync = api
        .ok("POST", &format!("{}/{id}/sync", integrations("acme")), None)
        .await;
    let asked = sync["requested_at"]
        .as_str()
        .expect("requested_at")
        .to_owned();
    let asked = chrono::DateTime::parse_from_rfc3339(&asked).unwrap();
    let st = status_until(&api, "acme", &id, "the sync asked for", |s| {
        s["last_sync"]["started_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t >= asked)
    })
    .await;
    assert_eq!(st["last_sync"]["ok"], true, "{st}");
    assert_eq!(st["last_error"], Value::Null);
    assert!(st["last_sync"]["finished_at"].is_string());
    assert_eq!(
        st["delivered"]["audit"].as_u64().unwrap() + st["delivered"]["jobs"].as_u64().unwrap(),
        3 + 1,
        "the platform's events and siemsync's own creation event: {st}"
    );

    // A token Splunk does not know needs the customer.
    let bad = create_integration(
        &api,
        "acme",
        json!({"hec_token": OTHER_TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    let st = status_until(&api, "acme", &bad, "the token error", |s| {
        s["last_error"].is_object()
    })
    .await;
    assert_eq!(st["last_error"]["kind"], "configuration", "{st}");
}
