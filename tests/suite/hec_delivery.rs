//! Delivery against everything Splunk answers: every HEC code and transport failure,
//! bad events, 413, busy mid-post, indexer acknowledgement, TLS, hanging endpoints,
//! and the connection test. Real binary, real sockets, the strict HEC test server.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{AckMode, Behaviour, HecServer, HecServerConfig};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const TOK: &str = "11111111-2222-3333-4444-555555555555";
/// The audit event siemsync writes to the account's own log when an integration is
/// created ("SIEM integration created"): it is delivered like the platform's.
const CREATED: u64 = 1;

fn fail(status: u16, code: Option<i64>, text: &str) -> Behaviour {
    Behaviour::Fail {
        status,
        code,
        text: text.into(),
    }
}

/// Each audit id exactly once, in order.
fn assert_once_in_order(hec: &HecServer, prefix: &str, n: usize, case: &str) {
    let want: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    assert_eq!(audit_ids(&hec.events()), want, "{case}");
}

struct Case {
    name: &'static str,
    hec: HecServer,
    /// Integration fields beyond token and URI.
    extra: Value,
    uri: String,
    http_status: Option<u16>,
    code: Option<i64>,
    advice: &'static str,
}

#[actix_rt::test]
async fn every_hec_answer_sets_state_and_advice_and_nothing_is_lost_after_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // Short, so that the hanging case fails (twice) within moments. On PostgreSQL an
    // actor's store calls block its arbiter for a round trip, and on a loaded machine
    // another actor then read Splunk's answer past 0.5 s: "did not answer in time"
    // instead of the HTTP status, or a post Splunk took re-sent after the recovery
    // (4 runs in 11 so, 4 copies of this test side by side beside 3 busy loops).
    // Longer there only: on sled the promise stays as tight as it was.
    let timeout = match BACKEND {
        Backend::Sled => "0.5",
        Backend::Postgres => "2",
    };
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_REQUEST_TIMEOUT_SECS", timeout)]);
    let api = svc.api();
    let case = |name, setup: &dyn Fn(&HecServer), http_status, code, advice| {
        let hec = HecServer::start(TOK);
        setup(&hec);
        let uri = hec.base_url();
        Case {
            name,
            hec,
            extra: json!({}),
            uri,
            http_status,
            code,
            advice,
        }
    };
    let mut cases = vec![
        case(
            "token disabled",
            &|h| h.configure(|c| c.disabled_tokens.push(TOK.into())),
            Some(403),
            Some(1),
            "disabled in Splunk",
        ),
        case(
            "token required",
            &|h| h.set_behaviour(fail(401, Some(2), "Token is required")),
            Some(401),
            Some(2),
            "did not accept the token",
        ),
        case(
            "invalid authorization",
            &|h| h.set_behaviour(fail(401, Some(3), "Invalid authorization")),
            Some(401),
            Some(3),
            "did not accept the token",
        ),
        case(
            "invalid token",
            &|h| h.configure(|c| c.tokens.clear()),
            Some(403),
            Some(4),
            "does not know this HEC token",
        ),
        case(
            "incorrect index",
            &|h| h.configure(|c| c.indexes = Some(vec!["main".into()])),
            Some(400),
            Some(7),
            "allowed indexes",
        ),
        case(
            "data channel missing",
            &|h| h.configure(|c| c.ack_tokens.push(TOK.into())),
            Some(400),
            Some(10),
            "turn on indexer acknowledgement in this integration",
        ),
        case(
            "internal server error",
            &|h| h.set_behaviour(fail(500, Some(8), "Internal server error")),
            Some(500),
            Some(8),
            "internal error",
        ),
        case(
            "server busy",
            &|h| h.set_behaviour(fail(503, Some(9), "Server is busy")),
            Some(503),
            Some(9),
            "queueSize",
        ),
        case(
            "bad gateway",
            &|h| h.set_behaviour(fail(502, None, "Bad Gateway")),
            Some(502),
            None,
            "temporarily unable",
        ),
        case(
            "gateway timeout",
            &|h| h.set_behaviour(fail(504, None, "Gateway Timeout")),
            Some(504),
            None,
            "temporarily unable",
        ),
        case(
            "request timeout",
            &|h| h.set_behaviour(fail(408, None, "Request Timeout")),
            Some(408),
            None,
            "temporarily unable",
        ),
        case(
            "too many requests",
            &|h| h.set_behaviour(fail(429, None, "Too Many Requests")),
            Some(429),
            None,
            "temporarily unable",
        ),
        case(
            "cloud maintenance 404",
            &|h| h.set_behaviour(fail(404, None, "Not Found")),
            Some(404),
            None,
            "maintenance",
        ),
        case(
            "hanging",
            &|h| h.set_behaviour(Behaviour::Hang),
            None,
            None,
            "did not answer in time",
        ),
    ];
    let mut wrong_path = case(
        "wrong path",
        &|_| {},
        Some(404),
        None,
        "Nothing answers at the HEC path",
    );
    wrong_path.uri = format!("{}/splunk/services/collector", wrong_path.hec.base_url());
    cases.push(wrong_path);
    cases
        .iter_mut()
        .find(|c| c.name == "incorrect index")
        .unwrap()
        .extra = json!({"index": "security"});
    let mut refused = case(
        "connection refused",
        &|_| {},
        None,
        None,
        "could not connect",
    );
    refused.uri = format!("http://127.0.0.1:{}", closed_port());
    cases.push(refused);

    let mut ids = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let account = format!("case-{i}");
        api.enable_account(&account).await;
        api.post_audit(&account, &audit_events("e", 0, 5)).await;
        let mut body = json!({"hec_token": TOK, "hec_uri": c.uri});
        for (k, v) in c.extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        ids.push((
            account.clone(),
            create_integration(&api, &account, body).await,
        ));
    }
    for (c, (account, id)) in cases.iter().zip(&ids) {
        let st = status_until(&api, account, id, c.name, |s| {
            s["state"] == "failing" && s["retries"].as_u64() >= Some(2)
        })
        .await;
        let err = &st["last_error"];
        assert_eq!(
            err["http_status"].as_u64(),
            c.http_status.map(u64::from),
            "{}: {st:#}",
            c.name
        );
        assert_eq!(err["code"].as_i64(), c.code, "{}: {st:#}", c.name);
        assert!(
            err["advice"].as_str().unwrap().contains(c.advice),
            "{}: {st:#}",
            c.name
        );
        assert_eq!(st["backlog"]["audit"], 5 + CREATED, "{}: data kept", c.name);
    }
    // Recovery: fix each the way a customer (or Splunk) would.
    for (c, (account, id)) in cases.iter().zip(&ids) {
        c.hec.set_behaviour(Behaviour::Normal);
        c.hec.configure(|cfg| {
            cfg.tokens = vec![TOK.into()];
            cfg.disabled_tokens.clear();
            cfg.indexes = None;
            cfg.ack_tokens.clear();
        });
        if c.name == "wrong path" || c.name == "connection refused" {
            let path = format!("/api/v1/accounts/{account}/integrations/{id}");
            // Another port is another destination: the token must come along.
            api.ok(
                "PATCH",
                &path,
                Some(json!({"hec_uri": c.hec.base_url(), "hec_token": TOK})),
            )
            .await;
        }
    }
    for (c, (account, id)) in cases.iter().zip(&ids) {
        status_until(&api, account, id, c.name, |s| {
            s["state"] == "healthy" && s["backlog"]["events"] == 0
        })
        .await;
        assert_once_in_order(&c.hec, "e", 5, c.name);
    }
}

#[actix_rt::test]
async fn a_bad_event_goes_to_dead_letters_and_every_other_event_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    // One server names the bad event (as Splunk does); the other does not, so siemsync must find it.
    let named = HecServer::start(TOK);
    let unnamed = HecServer::start(TOK);
    for (h, name) in [(&named, true), (&unnamed, false)] {
        h.configure(|c| {
            c.reject_events_containing =
                vec!["event number 37\"".into(), "event number 80\"".into()];
            c.name_invalid_event = name;
        });
    }
    let mut ids = Vec::new();
    for (acct, h) in [("named", &named), ("unnamed", &unnamed)] {
        api.enable_account(acct).await;
        api.post_audit(acct, &audit_events("e", 0, 100)).await;
        ids.push(
            create_integration(
                &api,
                acct,
                json!({"hec_token": TOK, "hec_uri": h.base_url(), "sources": ["audit"]}),
            )
            .await,
        );
    }
    for ((acct, h), id) in [("named", &named), ("unnamed", &unnamed)].iter().zip(&ids) {
        let st = status_until(&api, acct, id, "delivery around the bad events", |s| {
            s["backlog"]["events"] == 0
        })
        .await;
        assert_eq!(st["dead_letters"], 2, "{st:#}");
        assert_eq!(st["delivered"]["audit"], 98 + CREATED, "{st:#}");
        let want: Vec<String> = (0..100)
            .filter(|i| *i != 37 && *i != 80)
            .map(|i| format!("e-{i}"))
            .collect();
        assert_eq!(
            audit_ids(&h.events()),
            want,
            "{acct}: every good event exactly once, in order"
        );
        let dl = api
            .ok(
                "GET",
                &format!("/api/v1/accounts/{acct}/integrations/{id}/dead-letters"),
                None,
            )
            .await;
        assert_eq!(dl["total"], 2);
        let letters = dl["dead_letters"].as_array().unwrap();
        let ids: Vec<&str> = letters
            .iter()
            .map(|d| d["event"]["event"]["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec!["e-80", "e-37"],
            "newest first, the whole HEC event kept"
        );
        assert_eq!(letters[0]["reason"]["code"], 6);
        assert_eq!(letters[0]["source"], "audit");
        assert!(letters[0]["reason"]["advice"]
            .as_str()
            .unwrap()
            .contains("set aside"));
    }
    // Splunk's bad-data answer named the event: siemsync needed no extra posts to find it.
    assert!(named.posts().len() < unnamed.posts().len());
}

#[actix_rt::test]
async fn posts_too_large_are_split_and_an_event_too_large_alone_is_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| c.max_content_length = 4096);
    api.enable_account("acme").await;
    let mut events = audit_events("e", 0, 60);
    events[30]["metadata"] = json!({"blob": "x".repeat(6000)});
    api.post_audit("acme", &events).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "gzip": false, "sources": ["audit"]}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "the backlog delivered", |s| {
        s["backlog"]["events"] == 0
    })
    .await;
    let want: Vec<String> = (0..60)
        .filter(|i| *i != 30)
        .map(|i| format!("e-{i}"))
        .collect();
    assert_eq!(audit_ids(&hec.events()), want);
    assert_eq!(st["dead_letters"], 1);
    let dl = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/acme/integrations/{id}/dead-letters"),
            None,
        )
        .await;
    let reason = &dl["dead_letters"][0]["reason"];
    assert!(
        reason["advice"]
            .as_str()
            .unwrap()
            .contains("larger than Splunk accepts"),
        "{dl:#}"
    );
    assert_eq!(dl["dead_letters"][0]["event"]["event"]["id"], "e-30");
    // Once learnt, the size is kept: later posts fit the first time.
    let posts_before = hec.posts().len();
    api.post_audit("acme", &audit_events("e", 60, 40)).await;
    status_until(&api, "acme", &id, "the next events", |s| {
        s["delivered"]["audit"] == 99 + CREATED
    })
    .await;
    let later = &hec.posts()[posts_before..];
    assert!(
        later.iter().all(|p| p.status == 200 && p.bytes <= 4096),
        "{later:?}"
    );
}

#[actix_rt::test]
async fn busy_in_the_middle_of_a_post_keeps_what_splunk_took_and_resends_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::BusyAfter(7));
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 50)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    status_until(&api, "acme", &id, "all 50 through a busy Splunk", |s| {
        s["delivered"]["audit"] == 50 + CREATED
    })
    .await;
    assert_once_in_order(&hec, "e", 50, "busy after 7");
    assert!(hec.posts().iter().filter(|p| p.status == 503).count() >= 7);
}

#[actix_rt::test]
async fn bodies_are_gzipped_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (zipped, plain) = (HecServer::start(TOK), HecServer::start(TOK));
    for (acct, h, gzip) in [("z", &zipped, true), ("p", &plain, false)] {
        api.enable_account(acct).await;
        api.post_audit(acct, &audit_events("e", 0, 200)).await;
        create_integration(
            &api,
            acct,
            json!({"hec_token": TOK, "hec_uri": h.base_url(), "gzip": gzip}),
        )
        .await;
    }
    eventually(T, "both delivered", || {
        audit_ids(&zipped.events()).len() == 200 && audit_ids(&plain.events()).len() == 200
    })
    .await;
    let (z, p) = (zipped.posts(), plain.posts());
    assert!(z.iter().all(|p| p.gzip) && p.iter().all(|p| !p.gzip));
    let (zb, pb): (usize, usize) = (
        z.iter().map(|p| p.bytes).sum(),
        p.iter().map(|p| p.bytes).sum(),
    );
    assert!(zb * 4 < pb, "gzip made {zb} bytes of {pb}");
}

#[actix_rt::test]
async fn indexer_acknowledgement_moves_the_checkpoint_only_for_confirmed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_MAX_BATCH_BYTES", "8192"),
            ("SIEMSYNC_ACK_POLL_INTERVAL_SECS", "1"),
            ("SIEMSYNC_ACK_TIMEOUT_SECS", "2"),
        ],
    );
    let api = svc.api();
    let with_ack = |mode| {
        let h = HecServer::start(TOK);
        h.configure(|c| {
            c.ack_tokens.push(TOK.into());
            c.ack_mode = mode;
        });
        h
    };
    let delayed = with_ack(AckMode::AfterPolls(3));
    let lost = with_ack(AckMode::Never);
    let disabled = HecServer::start(TOK);
    let mut ids = Vec::new();
    for (acct, h) in [
        ("delayed", &delayed),
        ("lost", &lost),
        ("disabled", &disabled),
    ] {
        api.enable_account(acct).await;
        api.post_audit(acct, &audit_events("e", 0, 100)).await;
        ids.push(create_integration(&api, acct, json!({"hec_token": TOK, "hec_uri": h.base_url(), "indexer_ack": true, "sources": ["audit"]})).await);
    }

    // Delayed acks: everything arrives once, and only confirmed batches count as delivered.
    let st = status_until(&api, "delayed", &ids[0], "delayed acks confirmed", |s| {
        s["delivered"]["audit"] == 100 + CREATED
    })
    .await;
    assert_eq!(st["state"], "healthy");
    assert_once_in_order(&delayed, "e", 100, "delayed acks");
    let (confirmed, polls) = delayed.acks();
    // Every batch was confirmed; the one other post is the connection test made on create.
    assert_eq!(confirmed + 1, delayed.posts().len());
    // The server confirms an id only once asked about it three times; one poll asks
    // about every post waiting at once, so it took at least three polls in all and
    // no more than three per post.
    assert!(
        (3..=3 * confirmed).contains(&polls),
        "{polls} polls for {confirmed} acks"
    );

    // Lost acks: the batch is re-sent after the timeout and the checkpoint does not move.
    let st = status_until(&api, "lost", &ids[1], "an ack timeout", |s| {
        s["retries"].as_u64() >= Some(1)
    })
    .await;
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("did not confirm"),
        "{st:#}"
    );
    assert_eq!(st["delivered"]["audit"], 0);
    assert_eq!(st["backlog"]["audit"], 100 + CREATED);
    eventually(T, "the same batch posted again", || lost.posts().len() >= 2).await;
    lost.configure(|c| c.ack_mode = AckMode::Immediate);
    status_until(&api, "lost", &ids[1], "delivered once acks come", |s| {
        s["delivered"]["audit"] == 100 + CREATED
    })
    .await;
    let got: HashSet<String> = audit_ids(&lost.events()).into_iter().collect();
    assert_eq!(got.len(), 100, "every event at least once");

    // Ack off on the token: events still arrive, and the status says what to change.
    let st = status_until(&api, "disabled", &ids[2], "the ack advice", |s| {
        s["state"] == "failing"
    })
    .await;
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("acknowledgement is off on this token"),
        "{st:#}"
    );
    status_until(&api, "disabled", &ids[2], "delivery anyway", |s| {
        s["delivered"]["audit"] == 100 + CREATED
    })
    .await;
    // Up to `posts_in_flight` posts were out at once when Splunk said ack is off:
    // each arrives once, but not necessarily in the order they were sent.
    let want: Vec<String> = (0..100).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        by_number(audit_ids(&disabled.events())),
        want,
        "ack disabled: every event once"
    );
}

#[actix_rt::test]
async fn tls_with_a_private_ca_works_and_an_untrusted_certificate_is_explained() {
    let (ca, cert, key) = test_pki(&["127.0.0.1", "localhost"]);
    let hec = HecServer::start_tls(HecServerConfig::token(TOK), &cert, &key);
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    for a in ["trusted", "untrusted"] {
        api.enable_account(a).await;
        api.post_audit(a, &audit_events("e", 0, 10)).await;
    }
    let trusted = create_integration(
        &api,
        "trusted",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "ca_pem": ca}),
    )
    .await;
    let untrusted = create_integration(
        &api,
        "untrusted",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    status_until(&api, "trusted", &trusted, "delivery over TLS", |s| {
        s["delivered"]["audit"] == 10 + CREATED
    })
    .await;
    let st = status_until(&api, "untrusted", &untrusted, "a TLS failure", |s| {
        s["state"] == "failing"
    })
    .await;
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{st:#}"
    );
    assert_eq!(st["last_error"]["http_status"], Value::Null);
    assert_eq!(
        audit_ids(&hec.events()).len(),
        10,
        "only the trusted integration delivered"
    );

    // Turning verification off is the operator's call, not the customer's.
    let (s, v) = api
        .admin(
            "PATCH",
            &format!("/api/v1/accounts/untrusted/integrations/{untrusted}"),
            Some(json!({"tls_verify": false})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`tls_verify` cannot be false"),
        "{v}"
    );
    drop(svc);
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_ALLOW_INSECURE_TLS", "true")]);
    let api = svc.api();
    api.ok(
        "PATCH",
        &format!("/api/v1/accounts/untrusted/integrations/{untrusted}"),
        Some(json!({"tls_verify": false})),
    )
    .await;
    status_until(
        &api,
        "untrusted",
        &untrusted,
        "delivery without verification",
        |s| s["delivered"]["audit"] == 10 + CREATED + 1,
    )
    .await;
}

#[actix_rt::test]
async fn a_hanging_splunk_does_not_delay_another_integration() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_REQUEST_TIMEOUT_SECS", "60")]);
    let api = svc.api();
    let (hanging, fine) = (HecServer::start(TOK), HecServer::start(TOK));
    hanging.set_behaviour(Behaviour::Hang);
    for (a, h) in [("hangs", &hanging), ("fine", &fine)] {
        api.enable_account(a).await;
        create_integration(&api, a, json!({"hec_token": TOK, "hec_uri": h.base_url()})).await;
    }
    for round in 0..5 {
        api.post_audit("hangs", &audit_events("h", round * 10, 10))
            .await;
        let posted = Instant::now();
        api.post_audit("fine", &audit_events("f", round * 10, 10))
            .await;
        eventually(T, "the healthy integration's events", || {
            audit_ids(&fine.events()).len() == (round + 1) * 10
        })
        .await;
        // Within one interval (1 s) plus slack, while the other post hangs for a minute.
        assert!(
            posted.elapsed() < Duration::from_millis(2500),
            "round {round}: {:?}",
            posted.elapsed()
        );
    }
    assert_eq!(hanging.event_count(), 0);
}

#[actix_rt::test]
async fn test_connection_tells_each_problem_apart() {
    let (_, cert, key) = test_pki(&["127.0.0.1", "localhost"]);
    let tls = HecServer::start_tls(HecServerConfig::token(TOK), &cert, &key);
    let good = HecServer::start(TOK);
    let disabled = HecServer::start(TOK);
    disabled.configure(|c| c.disabled_tokens.push(TOK.into()));
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let cases: Vec<(&str, String, &str, bool, &str)> = vec![
        (
            "healthy",
            good.base_url(),
            TOK,
            true,
            "The connection works",
        ),
        (
            "unreachable",
            format!("http://127.0.0.1:{}", closed_port()),
            TOK,
            false,
            "could not connect",
        ),
        ("tls", tls.base_url(), TOK, false, "certificate"),
        (
            "wrong path",
            format!("{}/nothing/services/collector", good.base_url()),
            TOK,
            false,
            "no HTTP Event Collector at this address",
        ),
        (
            "invalid token",
            good.base_url(),
            "99999999-0000-0000-0000-000000000000",
            false,
            "does not know this HEC token",
        ),
        (
            "disabled token",
            disabled.base_url(),
            TOK,
            false,
            "token is disabled",
        ),
    ];
    for (name, uri, token, ok, says) in cases {
        let id = create_integration(
            &api,
            "acme",
            json!({"name": name, "hec_token": token, "hec_uri": uri, "enabled": false}),
        )
        .await;
        let path = format!("/api/v1/accounts/acme/integrations/{id}");
        let report = api.ok("POST", &format!("{path}/test"), None).await;
        assert_eq!(report["ok"], ok, "{name}: {report:#}");
        assert!(
            report["summary"].as_str().unwrap().contains(says),
            "{name}: {report:#}"
        );
        // The check made on create is in the status too.
        let st = status_until(
            &api,
            "acme",
            &id,
            "the connection test in the status",
            |s| !s["connection_test"].is_null(),
        )
        .await;
        assert_eq!(st["connection_test"]["ok"], ok, "{name}");
    }
    let test_events: Vec<Value> = good
        .events()
        .into_iter()
        .filter(|e| e["source"] == "siemsync:test")
        .collect();
    assert!(!test_events.is_empty());
    assert!(test_events[0]["event"]["message"]
        .as_str()
        .unwrap()
        .contains("connection test"));
}
