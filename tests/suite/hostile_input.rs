//! Hostile input, property-based: every body the API reads and every answer the
//! HEC client parses. No panic; bad input gets a 4xx naming the problem; nothing
//! of a refused request is stored.

use super::common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use siemsync::hec::response::classify;
use siemsync::hec::uri::HecUri;
use siemsync::model::audit_parts::EncodedAudit;
use siemsync::model::{AuditEvent, IntegrationChange, JobSnapshot};

/// Objects shaped like audit events: the known fields (sometimes an unknown one),
/// with valid values often and anything else sometimes.
fn audit_like() -> impl Strategy<Value = Value> {
    let field = prop::sample::select(vec![
        "id",
        "time",
        "connector",
        "acl",
        "method",
        "user",
        "ip",
        "metadata",
        "event",
        "extra",
    ]);
    let value = prop_oneof![
        3 => prop::sample::select(vec![
            json!("2026-11-25T10:00:00Z"),
            json!("2026-11-25T10:00:00.123+02:00"),
            json!("evt-1"),
            json!("conn-1"),
            json!("POST"),
            json!("192.0.2.7"),
            json!("fe80::1"),
            json!({"k": 1}),
            json!({}),
            json!("login"),
            json!(""),
            json!("a\"b\\c\u{e9}"),
            Value::Null,
        ]),
        1 => any_json(),
    ];
    prop::collection::btree_map(field.prop_map(String::from), value, 0..10)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
        .prop_map(|mut v| {
            // Mostly complete events, so the rules past the types are reached too.
            v.as_object_mut()
                .unwrap()
                .entry("time")
                .or_insert(json!("2026-11-25T10:00:00Z"));
            v.as_object_mut()
                .unwrap()
                .entry("event")
                .or_insert(json!("x"));
            v
        })
}

/// Any JSON value, biased towards the shapes and field names the API knows.
fn any_json() -> impl Strategy<Value = Value> {
    let names = prop::sample::select(vec![
        "id",
        "time",
        "event",
        "ip",
        "connector",
        "metadata",
        "job",
        "type",
        "status",
        "progress",
        "end_time",
        "name",
        "hec_token",
        "hec_uri",
        "sources",
        "enabled",
        "index",
        "ca_pem",
        "tls_verify",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "2026-11-25T10:00:00Z",
            "in progress",
            "successful",
            "audit",
            "jobs",
            "::1",
            "10.0.0.1",
            "https://splunk.example.com:8088",
            "ftp://x",
            "",
            " ",
            "\u{0}",
            "😀",
        ])
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(names.clone().prop_map(String::from), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn model_readers_never_panic_and_name_what_they_refuse(v in any_json()) {
        let now = chrono::Utc::now();
        for r in [
            AuditEvent::from_json(&v, 3, now).err().map(|e| e.to_string()),
            JobSnapshot::from_json(&v, 3, now).err().map(|e| e.to_string()),
            IntegrationChange::from_json(&v).err().map(|e| e.to_string()),
        ]
        .into_iter()
        .flatten()
        {
            prop_assert!(!r.is_empty());
        }
    }

    #[test]
    fn the_fast_audit_body_reader_agrees_with_the_field_reader(items in prop::collection::vec(prop_oneof![
        4 => audit_like(),
        // The fields in order, as an array: serde would take it for the struct.
        1 => prop::collection::vec(prop_oneof![Just(json!("2026-11-25T10:00:00Z")), Just(json!("x")), Just(Value::Null), any_json()], 0..10).prop_map(Value::Array),
        1 => any_json(),
    ], 0..4)) {
        // The ingest path reads audit bodies without a JSON tree when it can; it must
        // accept and refuse exactly what the field-by-field reader does, in its words.
        let body = serde_json::to_vec(&Value::Array(items.clone())).unwrap();
        let now = chrono::Utc::now();
        let fast = AuditEvent::read_body(&body, now);
        let slow = siemsync::model::fields::read_array(&body, now, |v, i, now| {
            AuditEvent::from_json(v, i, now).map(EncodedAudit::from)
        });
        match (fast, slow) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.len(), b.len());
                for ((x, y), item) in a.into_iter().zip(b).zip(&items) {
                    // The same stored bytes, but for a missing id, made up differently
                    // each time (`"id":"` and 36 characters, then the rest).
                    if item.get("id").is_some_and(Value::is_string) {
                        prop_assert_eq!(x, y);
                    } else {
                        prop_assert_eq!(&x.head()[43..], &y.head()[43..]);
                        prop_assert_eq!(x.rest(), y.rest());
                        prop_assert_eq!((x.time_ms, x.ingested_at_ms), (y.time_ms, y.ingested_at_ms));
                    }
                }
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (fast, slow) => prop_assert!(false, "the readers disagree: {:?} / {:?}", fast.map(|v| v.len()), slow.map(|v| v.len())),
        }
    }

    #[test]
    fn hec_answers_of_any_shape_are_classified(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..200), v in any_json()) {
        let _ = classify(status, &body);
        let _ = classify(status, v.to_string().as_bytes());
    }

    #[test]
    fn any_uri_is_parsed_or_refused_with_a_reason(s in ".{0,80}") {
        if let Err(e) = HecUri::parse(&s) {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// The real service, fed random bodies over HTTP: always 200 or a 4xx with an error,
/// and a refused request stores nothing.
#[actix_rt::test]
async fn random_bodies_over_http_get_a_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BODY_BYTES", "8192")]);
    let api = svc.api();
    api.enable_account("acme").await;
    let id = create_integration(&api, "acme", json!({"hec_token": "t-0000000000000000", "hec_uri": "https://splunk.example.com", "enabled": false})).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let bodies = prop::collection::vec(any_json(), 1..4);
    for case in 0..150 {
        let items = bodies.new_tree(&mut runner).unwrap().current();
        let counts = |st: Value| {
            (
                st["backlog"]["audit"].clone(),
                st["backlog"]["jobs"].clone(),
            )
        };
        let before = counts(api.status("acme", &id).await);
        let path = match case % 4 {
            0 => "/api/v1/accounts/acme/audit",
            1 => "/api/v1/accounts/acme/jobs",
            2 => "/api/v1/accounts/acme/integrations",
            _ => "/api/v1/accounts/acme",
        };
        let method = if case % 4 == 3 { "PUT" } else { "POST" };
        let body = if case % 8 == 7 {
            json!(format!(
                "RAW:{}",
                &Value::Array(items.clone()).to_string()[1..]
            ))
        } else if case % 4 >= 2 {
            items[0].clone()
        } else {
            Value::Array(items)
        };
        let (status, v) = api
            .call(method, path, Some(ADMIN), Some(body.clone()))
            .await;
        assert!(
            matches!(status, 200 | 201 | 400 | 413),
            "{method} {path} {body}: {status} {v}"
        );
        if status >= 400 {
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
            assert_eq!(
                counts(api.status("acme", &id).await),
                before,
                "a refused request stored something: {body}"
            );
        }
    }
    let (s, _) = api.admin("GET", "/healthz", None).await;
    assert_eq!(s, 200, "still serving");
}
