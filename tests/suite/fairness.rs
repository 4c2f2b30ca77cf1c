//! Fair shares between accounts: one account flooding ingest is held to its rate,
//! and the others are not slowed.

use crate::common::*;
use serde_json::{json, Value};

/// Posts audit events as the platform does, answering the status, `Retry-After`
/// and the body.
async fn post(svc: &Siemsync, account: &str, events: &Value) -> (u16, Option<u64>, Value) {
    let mut resp = awc::Client::new()
        .post(format!("{}/api/v1/accounts/{account}/audit", svc.url))
        .insert_header(("Authorization", format!("Bearer {INGEST}")))
        .send_json(events)
        .await
        .expect("ingest request");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = resp.json::<Value>().await.unwrap_or(Value::Null);
    (resp.status().as_u16(), retry_after, body)
}

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
