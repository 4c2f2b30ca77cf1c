//! Changes racing each other: whatever order the requests arrive in, the running
//! actor matches what is stored, and a deleted integration stays deleted.

use super::common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};
use siemsync::testkit::{HecServer, HecServerConfig};
use std::time::Duration;

const TOK: &str = "abcdef01-2345-6789-abcd-ef0123456789";
const T: Duration = Duration::from_secs(30);

/// Sends two requests at the same moment; answers both (status, body), in the order given.
async fn both(
    api: &Api,
    a: (&str, String, Option<Value>),
    b: (&str, String, Option<Value>),
) -> ((u16, Value), (u16, Value)) {
    let call = |(method, path, body): (&str, String, Option<Value>)| {
        let (api, method) = (api.clone(), method.to_owned());
        actix_rt::spawn(async move { api.admin(&method, &path, body).await })
    };
    let (a, b) = (call(a), call(b));
    (a.await.unwrap(), b.await.unwrap())
}

/// A finished job as a marker: the witness integration delivers it once; an actor
/// that should not exist would deliver it too.
async fn marker_reaches_only(api: &Api, account: &str, witness: &HecServer, job: &str) {
    api.post_jobs(
        account,
        &json!([{"job": job, "type": "backup", "status": "successful"}]),
    )
    .await;
    let has = |h: &HecServer| h.events().iter().any(|e| e["event"]["job"] == job);
    eventually(T, "the witness delivers the marker", || has(witness)).await;
}

/// How many integration actors are alive, as they count themselves.
async fn actors_alive(api: &Api) -> u64 {
    let (status, text) = api.admin("GET", "/metrics", None).await;
    assert_eq!(status, 200);
    let text = text.as_str().unwrap_or_default().to_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("siemsync_integration_actors "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no siemsync_integration_actors in {text}"))
}

/// Waits until `n` integration actors are alive (a stopped one is dropped a moment
/// after the answer that stopped it).
async fn until_actors(api: &Api, n: u64) {
    let start = std::time::Instant::now();
    loop {
        let alive = actors_alive(api).await;
        if alive == n {
            return;
        }
        assert!(
            start.elapsed() < T,
            "{alive} integration actors alive, {n} expected"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn jobs_named(hec: &HecServer, job: &str) -> usize {
    hec.events()
        .iter()
        .filter(|e| e["event"]["job"] == job)
        .count()
}

#[actix_rt::test]
async fn a_patch_racing_a_delete_never_brings_the_integration_back() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let (victim, witness) = (HecServer::start(TOK), HecServer::start(TOK));
    api.enable_account("acme").await;
    create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": witness.base_url(), "sources": ["jobs"]}),
    )
    .await;
    let base = "/api/v1/accounts/acme/integrations";
    for round in 0..100 {
        let id = create_integration(
            &api,
            "acme",
            json!({"hec_token": TOK, "hec_uri": victim.base_url(), "sources": ["jobs"]}),
        )
        .await;
        let path = format!("{base}/{id}");
        let delete = ("DELETE", path.clone(), None);
        let patch = (
            "PATCH",
            path.clone(),
            Some(json!({"name": format!("renamed {round}")})),
        );
        let ((deleted, _), (patched, v)) = if round % 2 == 0 {
            both(&api, delete, patch).await
        } else {
            let (p, d) = both(&api, patch, delete).await;
            (d, p)
        };
        assert_eq!(deleted, 204, "round {round}");
        assert!(
            matches!(patched, 200 | 404),
            "round {round}: PATCH answered {patched} {v}"
        );
        let (s, v) = api.admin("GET", &path, None).await;
        assert_eq!(
            s, 404,
            "round {round}: the deleted integration is back: {v}"
        );
    }
    let listed = api.ok("GET", base, None).await;
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the witness: {listed}"
    );
    until_actors(&api, 1).await;
    // No actor of a deleted integration runs: a job posted now reaches the witness only.
    marker_reaches_only(&api, "acme", &witness, "marker-1").await;
    marker_reaches_only(&api, "acme", &witness, "marker-2").await;
    assert_eq!(jobs_named(&victim, "marker-1"), 0, "a deleted actor runs");
    assert_eq!(jobs_named(&victim, "marker-2"), 0, "a deleted actor runs");
}

#[actix_rt::test]
async fn enable_and_disable_at_the_same_moment_leave_the_actor_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["jobs"]}),
    )
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let mut mismatches = Vec::new();
    for round in 0..100 {
        let on = ("PATCH", path.clone(), Some(json!({"enabled": true})));
        let off = ("PATCH", path.clone(), Some(json!({"enabled": false})));
        let ((a, _), (b, _)) = if round % 2 == 0 {
            both(&api, on, off).await
        } else {
            both(&api, off, on).await
        };
        assert_eq!((a, b), (200, 200), "round {round}");
        let st = api.status("acme", &id).await;
        let stored = api.ok("GET", &path, None).await["enabled"] == true;
        let running = !st["started_at"].is_null();
        if stored != running {
            mismatches.push(format!(
                "round {round}: stored enabled={stored}, actor running={running}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    // A disabled integration sends nothing posted after it was disabled.
    api.ok("PATCH", &path, Some(json!({"enabled": false})))
        .await;
    let witness = HecServer::start(TOK);
    create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": witness.base_url(), "sources": ["jobs"]}),
    )
    .await;
    marker_reaches_only(&api, "acme", &witness, "after-off-1").await;
    marker_reaches_only(&api, "acme", &witness, "after-off-2").await;
    assert_eq!(jobs_named(&hec, "after-off-1"), 0);
    assert_eq!(jobs_named(&hec, "after-off-2"), 0);
    until_actors(&api, 1).await;
}

const TOKENS: [&str; 2] = [
    "abcdef01-2345-6789-abcd-ef0123456789",
    "abcdef01-2345-6789-abcd-ef0123456780",
];

/// One request of a customer (or support) changing an integration.
#[derive(Debug, Clone)]
enum Op {
    Create {
        enabled: bool,
        hec: usize,
        token: usize,
    },
    Patch(Value),
    Put {
        enabled: bool,
        hec: usize,
        token: usize,
    },
    Enable,
    Disable,
    Delete,
    /// The account's feature switch.
    Feature(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let destination = (any::<bool>(), 0..2usize, 0..2usize);
    let patch = prop_oneof![
        // A new destination needs its token in the same request (the token goes only
        // where it was entered for).
        (0..2usize, 0..2usize).prop_map(|(h, t)| json!({"hec_uri": h, "hec_token": t})),
        (0..2usize).prop_map(|t| json!({"hec_token": t})),
        Just(json!({"sources": ["audit"]})),
        Just(json!({"sources": ["jobs", "audit"]})),
        (0..5u8).prop_map(|n| json!({"name": format!("name {n}")})),
        Just(json!({"index": "main"})),
        Just(json!({"index": null})),
        (0..2usize, 0..2usize, any::<bool>())
            .prop_map(|(h, t, e)| json!({"hec_uri": h, "hec_token": t, "enabled": e})),
    ];
    prop_oneof![
        1 => destination.clone().prop_map(|(enabled, hec, token)| Op::Create { enabled, hec, token }),
        4 => patch.prop_map(Op::Patch),
        1 => destination.prop_map(|(enabled, hec, token)| Op::Put { enabled, hec, token }),
        3 => Just(Op::Enable),
        3 => Just(Op::Disable),
        1 => Just(Op::Delete),
        1 => any::<bool>().prop_map(Op::Feature),
    ]
}

/// The request for `op`, on integration `id` of `account`.
fn request(
    op: &Op,
    account: &str,
    id: &str,
    hecs: &[String],
) -> (&'static str, String, Option<Value>) {
    let one = format!("/api/v1/accounts/{account}/integrations/{id}");
    let body = |enabled: bool, hec: usize, token: usize| {
        json!({"name": "prop", "hec_token": TOKENS[token], "hec_uri": hecs[hec],
               "sources": ["audit", "jobs"], "enabled": enabled})
    };
    match op {
        Op::Create {
            enabled,
            hec,
            token,
        } => (
            "POST",
            format!("/api/v1/accounts/{account}/integrations"),
            Some(body(*enabled, *hec, *token)),
        ),
        Op::Patch(p) => {
            let mut p = p.clone();
            if let Some(h) = p["hec_uri"].as_u64() {
                p["hec_uri"] = json!(hecs[h as usize]);
            }
            if let Some(t) = p["hec_token"].as_u64() {
                p["hec_token"] = json!(TOKENS[t as usize]);
            }
            ("PATCH", one, Some(p))
        }
        Op::Put {
            enabled,
            hec,
            token,
        } => ("PUT", one, Some(body(*enabled, *hec, *token))),
        Op::Enable => ("PATCH", one, Some(json!({"enabled": true}))),
        Op::Disable => ("PATCH", one, Some(json!({"enabled": false}))),
        Op::Delete => ("DELETE", one, None),
        Op::Feature(on) => (
            "PUT",
            format!("/api/v1/accounts/{account}"),
            Some(json!({"siem_enabled": on})),
        ),
    }
}

/// What differs between the stored integrations of `account` and their actors: each
/// stored integration that should run has an actor running exactly its stored
/// version, one that should not has none, and a deleted one stays deleted.
async fn mismatches(api: &Api, account: &str, ids: &[String]) -> Vec<String> {
    let feature = api
        .ok("GET", &format!("/api/v1/accounts/{account}"), None)
        .await["siem_enabled"]
        == true;
    let mut out = Vec::new();
    for id in ids {
        let path = format!("/api/v1/accounts/{account}/integrations/{id}");
        let (s, stored) = api.admin("GET", &path, None).await;
        if s == 404 {
            continue;
        }
        assert_eq!(s, 200, "{stored}");
        let st = api.status(account, id).await;
        let want = (feature && stored["enabled"] == true).then(|| stored["version"].clone());
        let running = (!st["config_version"].is_null()).then(|| st["config_version"].clone());
        if want != running || st["version"] != stored["version"] {
            out.push(format!(
                "{id}: stored version {} (enabled {}, feature {feature}), actor runs {:?}",
                stored["version"], stored["enabled"], running
            ));
        }
    }
    out
}

/// Any interleaving of create, patch, replace, enable, disable, delete and the
/// account's feature switch, sent a few at a time at the same moment, ends with every
/// actor running exactly the stored version of its integration, and no actor for an
/// integration that is deleted, disabled or on an account with the feature off.
#[actix_rt::test]
async fn any_interleaving_of_changes_leaves_each_actor_running_the_stored_version() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let config = || {
        let mut c = HecServerConfig::token(TOKENS[0]);
        c.tokens.push(TOKENS[1].into());
        c
    };
    let servers = [
        HecServer::start_with(config()),
        HecServer::start_with(config()),
    ];
    let hecs: Vec<String> = servers.iter().map(HecServer::base_url).collect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    // Groups of requests sent at the same moment, one group after another.
    let cases = prop::collection::vec(prop::collection::vec(op(), 1..4), 6..14);
    let mut should_run = 0;
    for case in 0..16 {
        let account = format!("prop-{case}");
        api.enable_account(&account).await;
        let first = Op::Create {
            enabled: true,
            hec: 0,
            token: 0,
        };
        let groups: Vec<Vec<Op>> = std::iter::once(vec![first])
            .chain(cases.new_tree(&mut runner).unwrap().current())
            .collect();
        let mut ids: Vec<String> = Vec::new();
        for group in &groups {
            // Each request of a group is on the latest integration created before it.
            let current = ids.last().cloned().unwrap_or_default();
            let calls: Vec<_> = group
                .iter()
                .map(|op| {
                    let (method, path, body) = request(op, &account, &current, &hecs);
                    let api = api.clone();
                    actix_rt::spawn(async move { api.admin(method, &path, body).await })
                })
                .collect();
            for (op, call) in group.iter().zip(calls) {
                let (status, v) = call.await.unwrap();
                // 403: a create while the account's feature is off.
                let creating = matches!(op, Op::Create { .. });
                assert!(
                    matches!(status, 200 | 201 | 204 | 404) || (creating && status == 403),
                    "case {case} {op:?}: {status} {v}"
                );
                if status == 201 {
                    ids.push(v["id"].as_str().unwrap().to_owned());
                }
            }
        }
        let start = std::time::Instant::now();
        loop {
            let wrong = mismatches(&api, &account, &ids).await;
            if wrong.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < T,
                "case {case} after {groups:?}:\n{wrong:#?}"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let all = api.ok("GET", "/api/v1/integrations", None).await;
        should_run = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|st| !st["config_version"].is_null())
            .count() as u64;
        until_actors(&api, should_run).await;
    }
    assert!(should_run > 0, "some integrations were left running");
}
