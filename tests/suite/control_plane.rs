//! The tenant-safe control plane: account tokens and the authorization matrix,
//! secrets at rest, the SSRF guard, siemsync's own audit events, and deletion.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer};
use std::time::Duration;

const TOK: &str = "abcdef01-2345-6789-abcd-ef0123456789";

async fn account_token(api: &Api, account: &str) -> String {
    let v = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/{account}/tokens"),
            Some(json!({"name": "ci"})),
        )
        .await;
    assert!(v["note"].as_str().unwrap().contains("only time"));
    v["token"].as_str().unwrap().to_owned()
}

/// Who calls: no token, a wrong one, a revoked account token, the ingest token,
/// account A's and account B's tokens, the admin token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Nobody,
    Wrong,
    Revoked,
    Ingest,
    A,
    B,
    Admin,
}

/// Whose resources the path names: A's, B's, or A's account with one of B's ids in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    OfA,
    OfB,
    Crossed,
}

/// Who a route is for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Rule {
    Anyone,
    AnyToken,
    Admin,
    Ingest,
    Account,
}

/// What the path names besides the account.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Res {
    /// A path of its own (`/healthz`).
    Fixed,
    /// `/api/v1/accounts/{account}` + suffix.
    Account,
    /// The account's long-lived integration + suffix.
    Integration,
    /// A new integration made for this one call (it is deleted or made to panic).
    FreshIntegration,
    /// A new account token made for this one call (it is revoked).
    FreshToken,
}

struct Route {
    method: &'static str,
    res: Res,
    path: &'static str,
    body: Option<Value>,
    rule: Rule,
    ok: u16,
}

/// The exact status `who` gets from `route` on `target`.
fn expected(route: &Route, who: Who, target: Target) -> u16 {
    use Who::*;
    let allowed = match (route.rule, who) {
        (Rule::Anyone, _) => true,
        (_, Nobody | Wrong | Revoked) => return 401,
        (Rule::AnyToken, _) => true,
        (Rule::Admin, Admin) => true,
        (Rule::Admin, _) => return 403,
        (Rule::Ingest, Admin | Ingest) => true,
        (Rule::Ingest, _) => return 403,
        (Rule::Account, Admin) => true,
        (Rule::Account, Ingest) => return 403,
        // Another account's resources answer exactly as if they did not exist.
        (Rule::Account, A) => target == Target::OfA || target == Target::Crossed,
        (Rule::Account, B) => target == Target::OfB,
    };
    match (allowed, target) {
        // An id is found only under its own account, whoever asks.
        (true, Target::Crossed) => 404,
        (true, _) => route.ok,
        (false, _) => 404,
    }
}

fn routes(hec_uri: &str) -> Vec<Route> {
    let r = |method, res, path, body: Option<Value>, rule, ok| Route {
        method,
        res,
        path,
        body,
        rule,
        ok,
    };
    let window = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let mut all = vec![
        r("GET", Res::Fixed, "/healthz", None, Rule::Anyone, 200),
        r("GET", Res::Fixed, "/", None, Rule::Anyone, 200),
        r("GET", Res::Fixed, "/ui/app.js", None, Rule::Anyone, 200),
        r("GET", Res::Fixed, "/ui/app.css", None, Rule::Anyone, 200),
        r("GET", Res::Fixed, "/metrics", None, Rule::Admin, 200),
        r(
            "GET",
            Res::Fixed,
            "/api/v1/integrations",
            None,
            Rule::Admin,
            200,
        ),
        r(
            "GET",
            Res::Fixed,
            "/api/v1/accounts",
            None,
            Rule::Admin,
            200,
        ),
        r(
            "GET",
            Res::Fixed,
            "/api/v1/whoami",
            None,
            Rule::AnyToken,
            200,
        ),
        r(
            "PUT",
            Res::Account,
            "",
            Some(json!({"siem_enabled": true})),
            Rule::Admin,
            200,
        ),
        r("GET", Res::Account, "", None, Rule::Account, 200),
        r(
            "POST",
            Res::Account,
            "/tokens",
            Some(json!({"name": "m"})),
            Rule::Admin,
            201,
        ),
        r("GET", Res::Account, "/tokens", None, Rule::Admin, 200),
        r("DELETE", Res::FreshToken, "", None, Rule::Admin, 204),
        r(
            "POST",
            Res::Account,
            "/audit",
            Some(audit_events("m", 0, 1)),
            Rule::Ingest,
            200,
        ),
        r(
            "POST",
            Res::Account,
            "/jobs",
            Some(json!([{"job": "j", "type": "backup", "status": "scheduled"}])),
            Rule::Ingest,
            200,
        ),
        r(
            "GET",
            Res::Account,
            "/integrations",
            None,
            Rule::Account,
            200,
        ),
        r(
            "POST",
            Res::Account,
            "/integrations",
            Some(json!({"name": "n", "hec_token": TOK, "hec_uri": hec_uri, "sources": ["audit"]})),
            Rule::Account,
            201,
        ),
        r(
            "POST",
            Res::Account,
            "/integrations/test",
            Some(json!({"name": "n", "hec_token": TOK, "hec_uri": hec_uri, "sources": ["audit"]})),
            Rule::Account,
            200,
        ),
        r("GET", Res::Integration, "", None, Rule::Account, 200),
        r(
            "PUT",
            Res::Integration,
            "",
            Some(
                json!({"name": "m", "hec_uri": hec_uri, "sources": ["audit", "jobs"], "enabled": true}),
            ),
            Rule::Account,
            200,
        ),
        r(
            "PATCH",
            Res::Integration,
            "",
            Some(json!({"name": "renamed"})),
            Rule::Account,
            200,
        ),
        r("GET", Res::Integration, "/status", None, Rule::Account, 200),
        r("POST", Res::Integration, "/sync", None, Rule::Account, 202),
        r("POST", Res::Integration, "/test", None, Rule::Account, 200),
        r(
            "GET",
            Res::Integration,
            "/dead-letters",
            None,
            Rule::Account,
            200,
        ),
        r(
            "GET",
            Res::Integration,
            "/replay/preview?from=2026-11-25T09:00:00Z&to=2026-11-25T11:00:00Z",
            None,
            Rule::Account,
            200,
        ),
        r(
            "POST",
            Res::Integration,
            "/replay",
            Some(window),
            Rule::Account,
            202,
        ),
        r(
            "DELETE",
            Res::Integration,
            "/replay",
            None,
            Rule::Account,
            200,
        ),
        r(
            "DELETE",
            Res::FreshIntegration,
            "",
            None,
            Rule::Account,
            204,
        ),
    ];
    if cfg!(feature = "test-hooks") {
        all.push(r(
            "POST",
            Res::FreshIntegration,
            "/_panic",
            None,
            Rule::Admin,
            202,
        ));
    }
    all
}

#[actix_rt::test]
async fn every_route_answers_every_caller_on_every_target_exactly() {
    use Who::*;
    let dir = tempfile::tempdir().unwrap();
    // Splunk never answers posts, so that a replay stays running until cancelled;
    // the short request timeout keeps connection tests quick.
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_REQUEST_TIMEOUT_SECS", "0.3")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(siemsync::testkit::Behaviour::Hang);
    let accounts = ["acct-a", "acct-b"];
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    for a in accounts {
        api.enable_account(a).await;
        tokens.push(account_token(&api, a).await);
        ids.push(
            create_integration(
                &api,
                a,
                json!({"name": "m", "hec_token": TOK, "hec_uri": hec.base_url()}),
            )
            .await,
        );
        api.post_audit(a, &audit_events("w", 0, 3)).await;
    }
    for (a, id) in accounts.iter().zip(&ids) {
        status_until(&api, a, id, "running", |s| !s["started_at"].is_null()).await;
    }
    let revoked = account_token(&api, "acct-a").await;
    let revoked_id = api
        .call("GET", "/api/v1/whoami", Some(&revoked), None)
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok(
        "DELETE",
        &format!("/api/v1/accounts/acct-a/tokens/{revoked_id}"),
        None,
    )
    .await;
    let token = |w: Who| match w {
        Nobody => None,
        Wrong => Some("not-a-real-token-at-all".to_string()),
        Revoked => Some(revoked.clone()),
        Ingest => Some(INGEST.to_string()),
        A => Some(tokens[0].clone()),
        B => Some(tokens[1].clone()),
        Admin => Some(ADMIN.to_string()),
    };
    let mut checked = 0;
    for route in routes(&hec.base_url()) {
        let targets: &[Target] = match route.res {
            Res::Fixed => &[Target::OfA],
            Res::Account => &[Target::OfA, Target::OfB],
            _ => &[Target::OfA, Target::OfB, Target::Crossed],
        };
        for who in [Nobody, Wrong, Revoked, Ingest, A, B, Admin] {
            for &target in targets {
                let (in_path, owner) = match target {
                    Target::OfA => (0, 0),
                    Target::OfB => (1, 1),
                    Target::Crossed => (0, 1),
                };
                let account = format!("/api/v1/accounts/{}", accounts[in_path]);
                let path = match route.res {
                    Res::Fixed => route.path.to_owned(),
                    Res::Account => format!("{account}{}", route.path),
                    Res::Integration => {
                        format!("{account}/integrations/{}{}", ids[owner], route.path)
                    }
                    Res::FreshIntegration => {
                        let id = create_integration(
                            &api,
                            accounts[owner],
                            json!({"name": "fresh", "hec_token": TOK, "hec_uri": hec.base_url(), "enabled": false}),
                        )
                        .await;
                        format!("{account}/integrations/{id}{}", route.path)
                    }
                    Res::FreshToken => {
                        let t = api
                            .ok(
                                "POST",
                                &format!("/api/v1/accounts/{}/tokens", accounts[owner]),
                                None,
                            )
                            .await;
                        format!("{account}/tokens/{}", t["id"].as_str().unwrap())
                    }
                };
                let own_replay = format!(
                    "/api/v1/accounts/{}/integrations/{}/replay",
                    accounts[owner], ids[owner]
                );
                let cancelling = route.method == "DELETE" && route.path == "/replay";
                if cancelling {
                    let (s, v) = api
                        .admin(
                            "POST",
                            &own_replay,
                            Some(json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"})),
                        )
                        .await;
                    assert_eq!(s, 202, "starting a replay to cancel: {v}");
                }
                let (status, v) = api
                    .call(
                        route.method,
                        &path,
                        token(who).as_deref(),
                        route.body.clone(),
                    )
                    .await;
                let want = expected(&route, who, target);
                assert_eq!(
                    status, want,
                    "{who:?} {} {path} ({target:?}): {v}",
                    route.method
                );
                if !(200..300).contains(&status) {
                    assert!(
                        v["error"].is_string(),
                        "{who:?} {} {path}: {v}",
                        route.method
                    );
                }
                // A replay left running would make the next start answer 409.
                let started = route.path == "/replay" && route.method == "POST" && status == 202;
                if started || (cancelling && status != 200) {
                    let (s, v) = api.admin("DELETE", &own_replay, None).await;
                    assert_eq!(s, 200, "cancelling the replay: {v}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked} calls checked");

    // Nothing in an answer tells account B whether A's integration exists.
    let a_path = format!("/api/v1/accounts/acct-a/integrations/{}", ids[0]);
    let missing = "/api/v1/accounts/acct-a/integrations/00000000-0000-4000-8000-000000000000";
    let (s1, v1) = api.call("DELETE", &a_path, Some(&tokens[1]), None).await;
    let (s2, v2) = api.call("DELETE", missing, Some(&tokens[1]), None).await;
    assert_eq!((s1, &v1), (s2, &v2));
    // Secrets are never listed; a revoked token stops working at once.
    let listed = api.ok("GET", "/api/v1/accounts/acct-b/tokens", None).await;
    assert!(!listed.to_string().contains(&tokens[1]));
    let b_id = api
        .call("GET", "/api/v1/whoami", Some(&tokens[1]), None)
        .await
        .1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    api.ok(
        "DELETE",
        &format!("/api/v1/accounts/acct-b/tokens/{b_id}"),
        None,
    )
    .await;
    assert_eq!(
        api.call(
            "GET",
            "/api/v1/accounts/acct-b/integrations",
            Some(&tokens[1]),
            None
        )
        .await
        .0,
        401
    );
}
#[actix_rt::test]
async fn hec_tokens_never_appear_in_responses_logs_or_sealed_files() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: the sealed files are sled's (on PostgreSQL tokens are sealed in the integrations table)");
    }
    let dir = tempfile::tempdir().unwrap();
    let key = [(
        "SIEMSYNC_SECRET_KEY",
        "0123456789abcdef0123456789abcdef-test-key",
    )];
    let mut svc = Siemsync::spawn(dir.path(), &key);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    status_until(&api, "acme", &id, "delivery", |s| {
        s["delivered"]["audit"] == 6
    })
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let mut seen = String::new();
    for (m, p) in [
        ("GET", path.clone()),
        ("GET", format!("{path}/status")),
        ("POST", format!("{path}/test")),
        ("GET", "/api/v1/accounts/acme/integrations".into()),
    ] {
        seen.push_str(&api.ok(m, &p, None).await.to_string());
    }
    seen.push_str(
        &api.ok("PATCH", &path, Some(json!({"name": "x"})))
            .await
            .to_string(),
    );
    assert!(
        !seen.contains(TOK) && !seen.contains("abcdef01-2345"),
        "{seen}"
    );
    assert!(seen.contains("****6789"));
    svc.terminate();
    let log = svc.log_text();
    assert!(!log.contains(TOK), "token in the log");
    assert!(!log.contains("stored in clear"), "a key was set");
    assert!(dir.path().join("db").exists());
    assert_eq!(
        files_holding(dir.path(), TOK.as_bytes()),
        Vec::<String>::new(),
        "token in clear"
    );
    // Same key: everything works after a restart; no key: the service refuses to start blind.
    let svc = Siemsync::spawn(dir.path(), &key);
    api_after_restart(&svc, &id).await;
    drop(svc);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .args([
            "run",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/siemsync.toml"),
        ])
        .env("SIEMSYNC_LISTEN", "127.0.0.1:0")
        .env("SIEMSYNC_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SIEMSYNC_SECRET_KEY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn api_after_restart(svc: &Siemsync, id: &str) {
    let api = svc.api();
    api.post_audit("acme", &audit_events("e", 5, 5)).await;
    status_until(&api, "acme", id, "delivery after restart", |s| {
        s["delivered"]["audit"].as_u64() >= Some(12)
    })
    .await;
}

#[actix_rt::test]
async fn internal_destinations_are_refused_unless_the_operator_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", "false")],
    );
    let api = svc.api();
    api.enable_account("acme").await;
    for uri in [
        "https://127.0.0.1:8088",
        "https://10.1.2.3:8088",
        "https://169.254.169.254",
        "https://[::1]:8088",
        "https://localhost:8088",
        "https://[::ffff:192.168.0.1]:8088",
        "https://198.18.0.1:8088",                        // benchmarking
        "https://240.0.0.1:8088",                         // reserved
        "https://192.0.0.8:8088",                         // IETF protocol assignments
        "https://203.0.113.5:8088",                       // documentation
        "https://[64:ff9b::a00:1]:8088",                  // NAT64 of 10.0.0.1
        "https://[64:ff9b:1::8.8.8.8]:8088",              // local-use NAT64
        "https://[2002:a00:1::1]:8088",                   // 6to4 of 10.0.0.1
        "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]", // Teredo, client 10.0.0.1
        "https://[::127.0.0.1]:8088",                     // IPv4-compatible
        "https://[2001:db8::10]:8088",                    // documentation
        "https://[5f00::1]:8088",                         // SRv6 SIDs
    ] {
        let (s, v) = api
            .admin(
                "POST",
                "/api/v1/accounts/acme/integrations",
                Some(json!({"name": "x", "hec_token": TOK, "hec_uri": uri, "sources": ["audit"]})),
            )
            .await;
        assert_eq!(s, 400, "{uri}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("`hec_uri` is refused"),
            "{uri}: {v}"
        );
    }
    assert_eq!(
        api.ok("GET", "/api/v1/accounts/acme/integrations", None)
            .await,
        json!([])
    );
    drop(svc);
    // Allowed by the operator: the same URI is taken.
    let svc = Siemsync::start(dir.path(), &[]);
    let hec = HecServer::start(TOK);
    let id = create_integration(
        &svc.api(),
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    drop(svc);
    // Stored while allowed, then the operator turns the guard on: delivery stops at
    // connect time with the reason, nothing is posted.
    let svc = Siemsync::start(
        dir.path(),
        &[("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", "false")],
    );
    let api = svc.api();
    api.post_audit("acme", &audit_events("e", 0, 3)).await;
    let st = status_until(&api, "acme", &id, "the guard at connect time", |s| {
        s["state"] == "failing"
    })
    .await;
    assert!(
        st["last_error"]["advice"]
            .as_str()
            .unwrap()
            .contains("internal network address"),
        "{st:#}"
    );
    more_syncs(&api, "acme", &id, 3).await;
    assert!(audit_ids(&hec.events()).is_empty());
}

#[actix_rt::test]
async fn integration_changes_reach_splunk_as_audit_events_and_deletion_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.configure(|c| c.tokens.push("ffffffff-0000-0000-0000-000000000001".into()));
    api.enable_account("acme").await;
    let token_a = account_token(&api, "acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let (s, _) = api
        .call(
            "PATCH",
            &path,
            Some(&token_a),
            Some(json!({"hec_token": "ffffffff-0000-0000-0000-000000000001"})),
        )
        .await;
    assert_eq!(s, 200);
    api.ok("PATCH", &path, Some(json!({"index": "main"}))).await;
    // Delivery is at-least-once: the token change restarts the integration, which
    // may post the batch in flight again; a repeat has the same id.
    let own = |h: &HecServer| -> Vec<Value> {
        let mut seen = std::collections::HashSet::new();
        h.events()
            .into_iter()
            .filter(|e| e["event"]["acl"] == "siem-integration:manage")
            .map(|e| e["event"].clone())
            .filter(|e| seen.insert(e["id"].to_string()))
            .collect()
    };
    eventually(Duration::from_secs(30), "three own audit events", || {
        own(&hec).len() >= 3
    })
    .await;
    let events = own(&hec);
    let what: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        what,
        vec![
            "SIEM integration created",
            "SIEM integration token changed",
            "SIEM integration updated"
        ]
    );
    assert_eq!(events[0]["user"], "siemsync admin");
    assert_eq!(events[0]["method"], "POST");
    assert_eq!(events[0]["ip_address"], "127.0.0.1");
    assert!(
        events[1]["user"]
            .as_str()
            .unwrap()
            .starts_with("account token \"ci\""),
        "{}",
        events[1]
    );
    assert_eq!(events[1]["metadata"]["integration"], id.as_str());
    assert!(
        !hec.events().iter().any(|e| e.to_string().contains(TOK)),
        "the token itself is never in an event"
    );

    // Deleting removes the checkpoint, dead letters and token with it: a new
    // integration never inherits anything, and the id is gone everywhere.
    let (s, _) = api.admin("DELETE", &path, None).await;
    assert_eq!(s, 204);
    for sub in ["", "/status", "/dead-letters"] {
        assert_eq!(
            api.admin("GET", &format!("{path}{sub}"), None).await.0,
            404,
            "{sub}"
        );
    }
    drop(svc);
    let db = sled::open(dir.path()).unwrap();
    let registry = db.open_tree("registry").unwrap();
    for kv in registry.iter() {
        let (k, v) = kv.unwrap();
        let k = String::from_utf8_lossy(&k).into_owned();
        assert!(!k.contains(&id), "left behind: {k}");
        assert!(
            !String::from_utf8_lossy(&v).contains("ffffffff-0000-0000-0000-000000000001"),
            "token left behind in {k}"
        );
    }
}

#[actix_rt::test]
async fn an_integration_disabled_past_retention_shows_the_gap_with_counts() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: retention within seconds is the per-account sweep's (PostgreSQL drops day-wide partitions)");
    }
    let dir = tempfile::tempdir().unwrap();
    // About 3.5 s of retention (A must deliver within it, also with 8 tests on 2 cores), swept every tenth of a second.
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_RETENTION_DAYS", "0.00004"),
            ("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "0.1"),
        ],
    );
    let api = svc.api();
    let hec_a = HecServer::start(TOK);
    let hec_b = HecServer::start(TOK);
    api.enable_account("acme").await;
    // Before the first of the 22 events is stored: none can be past retention until
    // `retention` from here.
    let (first_stored, retention) = (
        std::time::Instant::now(),
        Duration::from_secs_f64(0.00004 * 86_400.0),
    );
    // B first: an event every existing integration delivered goes at the next sweep,
    // so with A alone its "created" event could be gone before B exists (seen once in
    // 20 runs). With B there from the start, everything is kept for it.
    let b = create_integration(&api, "acme", json!({"hec_token": TOK, "hec_uri": hec_b.base_url(), "sources": ["audit"], "enabled": false})).await;
    let a = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec_a.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("old", 0, 20)).await;
    // 20 events and the two "created" events.
    status_until(&api, "acme", &a, "A delivered", |s| {
        s["delivered"]["audit"] == 22
    })
    .await;
    let st = api.status("acme", &b).await;
    if first_stored.elapsed() < retention {
        assert_eq!(
            st["backlog"]["audit"], 22,
            "kept for B, which has not delivered them: {st:#}"
        );
        assert_eq!(st["gaps"], json!([]));
    } else {
        // A loaded machine took longer than the retention to get here (seen at a
        // load of 10 on 2 cores): the sweep may have begun, but every event is
        // still either kept for B or counted in its gap.
        let counted: u64 = st["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["count"].as_u64().unwrap())
            .sum();
        assert_eq!(
            st["backlog"]["audit"].as_u64().unwrap() + counted,
            22,
            "kept for B or counted: {st:#}"
        );
    }

    // The events were stored at slightly different moments, so the sweeps may take
    // them in more than one pass: the gap is complete once none is left for B.
    let st = status_until(&api, "acme", &b, "the gap", |s| {
        !s["gaps"].as_array().unwrap().is_empty() && s["backlog"]["audit"] == 0
    })
    .await;
    let gap = &st["gaps"][0];
    assert_eq!(gap["source"], "audit");
    assert_eq!(gap["count"], 22, "{st:#}");
    assert!(gap["from"].as_str().unwrap() <= gap["to"].as_str().unwrap());
    assert_eq!(st["backlog"]["audit"], 0, "{st:#}");
    assert_eq!(
        api.status("acme", &a).await["gaps"],
        json!([]),
        "A lost nothing"
    );

    // Re-enabled, B gets what came after, and the gap stays on record.
    api.ok(
        "PATCH",
        &format!("/api/v1/accounts/acme/integrations/{b}"),
        Some(json!({"enabled": true})),
    )
    .await;
    api.post_audit("acme", &audit_events("new", 0, 5)).await;
    eventually(Duration::from_secs(30), "B's new events", || {
        audit_ids(&hec_b.events()).len() == 5
    })
    .await;
    assert_eq!(
        audit_ids(&hec_b.events()),
        (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>()
    );
    assert_eq!(api.status("acme", &b).await["gaps"][0]["count"], 22);
}

#[actix_rt::test]
async fn a_replay_resends_a_retained_window_while_live_delivery_keeps_its_pace() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "65536")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let past = audit_events("past", 0, 10_000);
    for chunk in past.as_array().unwrap().chunks(2000) {
        api.post_audit("acme", &json!(chunk)).await;
    }
    status_until(&api, "acme", &id, "the past delivered live", |s| {
        s["delivered"]["audit"] == 10_001
    })
    .await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let window = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let (s, v) = api
        .admin("POST", &format!("{path}/replay"), Some(window.clone()))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["state"], "running");
    let (s, v) = api
        .admin("POST", &format!("{path}/replay"), Some(window.clone()))
        .await;
    assert_eq!(s, 409, "one replay at a time: {v}");

    // Live events keep arriving within the interval while the replay runs.
    for round in 0..8 {
        let now = chrono::Utc::now().to_rfc3339();
        let live = json!([{"id": format!("live-{round}"), "time": now, "event": "live"}]);
        let posted = std::time::Instant::now();
        api.post_audit("acme", &live).await;
        let want = format!("live-{round}");
        eventually(Duration::from_secs(10), "a live event", || {
            audit_ids(&hec.events()).contains(&want)
        })
        .await;
        // 60 intervals: room for 8 tests sharing 2 cores.
        assert!(
            posted.elapsed() < Duration::from_secs(6),
            "live event {round} took {:?}",
            posted.elapsed()
        );
    }
    let st = status_until(&api, "acme", &id, "the replay done", |s| {
        s["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["total"], 10_000, "{:#}", st["replay"]);
    assert_eq!(st["replay"]["sent"], 10_000);
    // The live checkpoint did not move for the replay: the past once, the live events,
    // and siemsync's own "created" and "replay requested" events.
    assert_eq!(st["delivered"]["audit"], 10_000 + 8 + 2, "{st:#}");
    let ids = audit_ids(&hec.events());
    for i in [0, 4_999, 9_999] {
        let id = format!("past-{i}");
        assert_eq!(
            ids.iter().filter(|x| **x == id).count(),
            2,
            "{id}: live and replayed"
        );
    }
    assert!(
        ids.iter().filter(|x| x.starts_with("live-")).all(|x| ids
            .iter()
            .filter(|y| *y == x)
            .count()
            == 1),
        "live events are outside the window"
    );

    // A replay can be cancelled.
    api.ok("POST", &format!("{path}/replay"), Some(window))
        .await;
    let cancelled = api.ok("DELETE", &format!("{path}/replay"), None).await;
    assert_eq!(cancelled["state"], "cancelled");
    let st = api.status("acme", &id).await;
    assert_eq!(st["replay"]["state"], "cancelled", "{:#}", st["replay"]);
    assert!(st["replay"]["sent"].as_u64().unwrap() < 10_000);
    let (s, _) = api.admin("DELETE", &format!("{path}/replay"), None).await;
    assert_eq!(s, 404, "nothing running any more");
    let (s, v) = api
        .admin(
            "POST",
            &format!("{path}/replay"),
            Some(json!({"from": "2026-11-25T12:00:00Z", "to": "2026-11-25T11:00:00Z"})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("`from` must not be after `to`"),
        "{v}"
    );
}

#[actix_rt::test]
async fn a_replay_interrupted_by_a_restart_resumes_where_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_MAX_BATCH_BYTES", "16384")];
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("past", 0, 3000)).await;
    status_until(&api, "acme", &id, "the past delivered live", |s| {
        s["delivered"]["audit"] == 3001
    })
    .await;
    // A slow Splunk, so that the restart comes in the middle of the replay.
    hec.set_behaviour(siemsync::testkit::Behaviour::Slow(Duration::from_millis(
        100,
    )));
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let window = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T11:00:00Z"});
    let started = api
        .ok("POST", &format!("{path}/replay"), Some(window.clone()))
        .await;
    let before = status_until(&api, "acme", &id, "the replay under way", |s| {
        s["replay"]["sent"].as_u64().unwrap_or(0) >= 400
    })
    .await;
    assert!(svc.terminate().success());

    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    hec.set_behaviour(siemsync::testkit::Behaviour::Normal);
    let after = status_until(&api, "acme", &id, "the replay resumed and done", |s| {
        s["replay"]["state"] == "done"
    })
    .await;
    let replay = &after["replay"];
    assert_eq!(
        replay["id"], started["id"],
        "the same replay went on: {replay:#}"
    );
    assert_eq!(replay["total"], 3000, "{replay:#}");
    assert_eq!(
        replay["sent"].as_u64().unwrap() + replay["skipped"].as_u64().unwrap(),
        3000,
        "{replay:#}"
    );
    assert!(
        svc.log_text().contains("resumes"),
        "the log says the replay resumed"
    );
    // Every event of the window arrived live and again replayed; the replay did not
    // start over (it re-sent at most the batch in flight at the restart).
    let ids = audit_ids(&hec.events());
    let past = ids.iter().filter(|i| i.starts_with("past-")).count();
    let mut copies = std::collections::HashMap::new();
    for id in &ids {
        *copies.entry(id.as_str()).or_insert(0) += 1;
    }
    for i in 0..3000 {
        let want = format!("past-{i}");
        assert!(
            copies.get(want.as_str()).copied().unwrap_or(0) >= 2,
            "{want} was not replayed"
        );
    }
    let sent_before = before["replay"]["sent"].as_u64().unwrap() as usize;
    assert!(
        past < 6000 + 200,
        "{past} copies: the replay started over instead of resuming after {sent_before}"
    );

    // A cancelled replay stays cancelled across a restart, and still shows.
    hec.set_behaviour(siemsync::testkit::Behaviour::Slow(Duration::from_millis(
        100,
    )));
    api.ok("POST", &format!("{path}/replay"), Some(window))
        .await;
    let cancelled = api.ok("DELETE", &format!("{path}/replay"), None).await;
    assert_eq!(cancelled["state"], "cancelled");
    assert!(svc.terminate().success());
    hec.set_behaviour(siemsync::testkit::Behaviour::Normal);
    let svc = Siemsync::spawn(dir.path(), &env);
    // Running again (with nothing to deliver it may stay "pending"): its replay, if
    // it were to resume, would have been started with it.
    let st = status_until(&svc.api(), "acme", &id, "the integration running", |s| {
        !s["started_at"].is_null()
    })
    .await;
    assert_eq!(st["replay"]["state"], "cancelled", "{:#}", st["replay"]);
    assert_eq!(st["replay"]["id"], cancelled["id"]);
    assert_eq!(
        svc.log_text().matches("resumes").count(),
        1,
        "only the interrupted replay resumed"
    );
}

#[actix_rt::test]
async fn a_failed_batch_held_past_retention_is_dropped_and_counted_exactly() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: retention within seconds is the per-account sweep's (PostgreSQL drops day-wide partitions)");
    }
    let dir = tempfile::tempdir().unwrap();
    // About 3.5 s of retention, swept every tenth of a second: the integration must
    // exist before the 300 events age out (with no reader, age alone counts), also
    // when 8 tests share 2 cores.
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_RETENTION_DAYS", "0.00004"),
            ("SIEMSYNC_TIMING_RETENTION_SWEEP_SECS", "0.1"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::busy());
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("old", 0, 300)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    // The 300 events (and the "created" event) are in the failed batch the actor holds.
    status_until(&api, "acme", &id, "a failed post", |s| {
        s["state"] == "failing"
    })
    .await;
    let st = status_until(&api, "acme", &id, "the whole backlog lost", |s| {
        s["backlog"]["audit"] == 0 && s["gaps"][0]["count"] == 301
    })
    .await;
    assert_eq!(st["gaps"].as_array().unwrap().len(), 1, "{st:#}");

    hec.set_behaviour(Behaviour::Normal);
    api.post_audit("acme", &audit_events("new", 0, 5)).await;
    eventually(Duration::from_secs(30), "the new events", || {
        audit_ids(&hec.events()).len() >= 5
    })
    .await;
    let st = status_until(&api, "acme", &id, "healthy", |s| s["state"] == "healthy").await;
    assert_eq!(
        audit_ids(&hec.events()),
        (0..5).map(|i| format!("new-{i}")).collect::<Vec<_>>(),
        "events counted as lost were not sent after all"
    );
    assert_eq!(hec.event_count(), 5, "nor was the \"created\" event");
    assert_eq!(st["gaps"][0]["count"], 301, "{st:#}");
    assert_eq!(st["delivered"]["audit"], 5, "{st:#}");
}

/// The value of the series `name{node="node"}` in the metrics text.
fn node_series(text: &str, name: &str, node: &str) -> Option<f64> {
    let prefix = format!("{name}{{node=\"{node}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

#[actix_rt::test]
async fn the_nodes_view_shows_each_live_node_with_its_shards_integrations_and_renewal_to_the_admin_only(
) {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    for _ in 0..2 {
        api.add_integration("acme", TOK, "https://splunk.example.com:8088")
            .await;
    }
    let token = account_token(&api, "acme").await;
    for (who, want) in [
        (None, 401),
        (Some(INGEST), 403),
        (Some(token.as_str()), 403),
    ] {
        let (status, body) = api.call("GET", "/api/v1/nodes", who, None).await;
        assert_eq!(status, want, "{who:?}: {body}");
    }
    let (status, nodes) = api.admin("GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200, "{nodes}");
    let nodes = nodes.as_array().expect("an array of nodes").clone();
    assert_eq!(nodes.len(), 1, "one node runs: {nodes:?}");
    let me = &nodes[0];
    assert_eq!(me["this_node"], true, "{me}");
    assert_eq!(me["integrations"], 2, "{me}");
    assert_eq!(me["stopping"], false, "{me}");
    let name = me["name"].as_str().expect("a name").to_owned();
    assert!(!name.is_empty(), "{me}");
    match BACKEND {
        Backend::Sled => {
            assert_eq!(me["store"], "sled", "{me}");
            assert!(
                me["shards"].is_null() && me["last_renewal"].is_null(),
                "{me}"
            );
            let (_, metrics) = api.admin("GET", "/metrics", None).await;
            let metrics = metrics.as_str().unwrap_or_default().to_owned();
            assert!(!metrics.contains("siemsync_shards_held{"), "{metrics}");
        }
        Backend::Postgres => {
            assert_eq!(me["store"], "postgres", "{me}");
            // Alone on its database, it holds every shard.
            assert_eq!(me["shards"], 256, "{me}");
            let renewed = time(&me["last_renewal"]);
            assert!(time(&me["lease_expires_at"]) > renewed, "{me}");
            assert!(time(&me["started_at"]) <= renewed, "{me}");
            // The metrics show the same ownership, and this node's lease rounds
            // (every lease/3, 5 s by default) as they happen.
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let (_, metrics) = api.admin("GET", "/metrics", None).await;
                let metrics = metrics.as_str().unwrap_or_default().to_owned();
                let series = |n: &str| node_series(&metrics, n, &name);
                assert_eq!(series("siemsync_shards_held"), Some(256.0), "{metrics}");
                assert_eq!(
                    series("siemsync_integrations_owned"),
                    Some(2.0),
                    "{metrics}"
                );
                // Counted from the start (a round that fails on this busy
                // machine is no fault of the view): the renewals are asserted.
                assert!(
                    series("siemsync_lease_renewal_failures_total").is_some(),
                    "{metrics}"
                );
                let last = series("siemsync_last_lease_renewal_timestamp_seconds");
                if series("siemsync_lease_renewals_total").is_some_and(|n| n >= 1.0) {
                    assert!(last.is_some_and(|t| t > 0.0), "{metrics}");
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "no lease renewal counted: {metrics}"
                );
                actix_rt::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
