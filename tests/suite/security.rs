//! What probing siemsync as an attacker turned up, each held shut: a stored HEC
//! token cannot be moved to another host, the SSRF guard knows every special-purpose
//! range and says nothing about internal names, secrets stay out of logs and off the
//! disk in clear, the shipped tokens never face a network, outside text cannot forge
//! log lines, API answers are not cached, IPv6 literals work, and a stalled body
//! does not hold a connection for ever.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{Behaviour, HecServer, HecServerConfig};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOK: &str = "5ec0e7a1-0000-4000-8000-00000000beef";
const SHIPPED_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/siemsync.toml");

async fn account_token(api: &Api, account: &str) -> String {
    let v = api
        .ok("POST", &format!("/api/v1/accounts/{account}/tokens"), None)
        .await;
    v["token"].as_str().unwrap().to_owned()
}

#[actix_rt::test]
async fn moving_an_integration_to_another_destination_needs_its_token_again() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let home = HecServer::start(TOK);
    // The attacker's server would take the token: had it been sent, it would show.
    let attacker = HecServer::start(TOK);
    api.enable_account("acme").await;
    let tenant = account_token(&api, "acme").await;
    let (s, created) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/integrations",
            Some(&tenant),
            Some(
                json!({"name": "Main", "hec_token": TOK, "hec_uri": home.base_url(),
                        "sources": ["audit"], "enabled": true}),
            ),
        )
        .await;
    assert_eq!(s, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let port = home.addr.port();
    let elsewhere = [
        attacker.base_url(),                 // another port
        format!("http://localhost:{port}"),  // another host
        format!("https://127.0.0.1:{port}"), // another scheme
    ];
    for who in [Some(tenant.as_str()), Some(ADMIN)] {
        for uri in &elsewhere {
            for (method, body) in [
                ("PATCH", json!({"hec_uri": uri})),
                (
                    "PUT",
                    json!({"name": "Main", "hec_uri": uri, "sources": ["audit"], "enabled": true}),
                ),
            ] {
                let (s, v) = api.call(method, &path, who, Some(body)).await;
                assert_eq!(s, 400, "{method} {uri}: {v}");
                let e = v["error"].as_str().unwrap();
                assert!(e.starts_with("`hec_token` is required"), "{e}");
            }
        }
    }
    let (_, stored) = api.call("GET", &path, Some(&tenant), None).await;
    assert_eq!(stored["hec_uri"], home.base_url(), "nothing was changed");

    // The same host written differently, or another path on it, keeps the token.
    for uri in [
        format!("HTTP://127.0.0.1:{port}/services/collector"),
        format!("{}/services/collector/event", home.base_url()),
    ] {
        let (s, v) = api
            .call("PATCH", &path, Some(&tenant), Some(json!({"hec_uri": uri})))
            .await;
        assert_eq!(s, 200, "{uri}: {v}");
    }
    api.post_audit("acme", &audit_events("home", 0, 3)).await;
    eventually(Duration::from_secs(30), "events at home", || {
        audit_ids(&home.events()).len() == 3
    })
    .await;
    assert!(
        attacker.posts().is_empty(),
        "the token was posted to another host"
    );

    // Given again, the token may go to the new destination.
    let (s, v) = api
        .call(
            "PATCH",
            &path,
            Some(&tenant),
            Some(json!({"hec_uri": attacker.base_url(), "hec_token": TOK})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    api.post_audit("acme", &audit_events("moved", 0, 2)).await;
    eventually(Duration::from_secs(30), "events at the new host", || {
        audit_ids(&attacker.events()).len() == 2
    })
    .await;
}

#[actix_rt::test]
async fn a_refused_destination_reveals_neither_its_address_nor_whether_it_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::spawn(
        dir.path(),
        &[("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", "false")],
    );
    let api = svc.api();
    api.enable_account("acme").await;
    let mut answers = Vec::new();
    for uri in [
        "https://localhost:8088",
        "https://no-such-host.invalid:8088",
    ] {
        let (s, v) = api
            .admin(
                "POST",
                "/api/v1/accounts/acme/integrations",
                Some(json!({"name": "x", "hec_token": TOK, "hec_uri": uri, "sources": ["audit"]})),
            )
            .await;
        answers.push((s, v));
    }
    let text = answers[0].1.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("::1"),
        "the address shows: {text}"
    );
    assert_eq!(
        answers[0], answers[1],
        "an internal name and a name that does not resolve get the same answer"
    );
    assert_eq!(answers[0].0, 400);
    svc.terminate();
    let log = svc.log_text();
    assert!(
        log.contains("localhost") && (log.contains("127.0.0.1") || log.contains("::1")),
        "the operator's log says where it led: {log}"
    );
}

#[actix_rt::test]
async fn a_redirect_from_the_hec_endpoint_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let elsewhere = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::Redirect(format!(
        "{}/services/collector/event",
        elsewhere.base_url()
    )));
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("e", 0, 3)).await;
    let st = status_until(&api, "acme", &id, "a failing delivery", |s| {
        s["state"] == "failing" && s["retries"].as_u64() >= Some(2)
    })
    .await;
    assert_eq!(st["last_error"]["http_status"], 307, "{st:#}");
    assert!(hec.posts().len() >= 2);
    assert!(
        elsewhere.posts().is_empty(),
        "the redirect was followed, with the token"
    );
}

/// Runs `siemsync` with `args` and no SIEMSYNC_* variable but `env`; gives up
/// (killing it) after `limit` if it has not exited. Returns (exited, success, stderr).
fn run_binary(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (bool, bool, String) {
    let mut cmd = binary(args, env);
    cmd.stdout(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let reader = read_stderr(&mut child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().unwrap();
    (status.is_some(), status.is_some_and(|s| s.success()), err)
}

/// `siemsync` with `args`, no SIEMSYNC_* variable but `env`, and stderr piped.
fn binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siemsync"));
    cmd.args(args).stdin(Stdio::null()).stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SIEMSYNC_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    // The messages are the point: symbolizing a backtrace of the debug binary for each
    // refused start (when the caller's RUST_BACKTRACE asks for one) takes half a second.
    cmd.env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Collects a child's whole stderr on a thread of its own.
fn read_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    })
}

/// Runs `siemsync run` with `env` (as `run_binary`) until it says it listens, then
/// kills it. Returns (whether it came to listen, stderr): it ran, and did not just
/// fail later than a fixed wait would have noticed.
fn run_until_listening(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    use std::io::BufRead;
    let mut cmd = binary(args, env);
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let reader = read_stderr(&mut child);
    // Ends at the line, or at EOF when the process exited without listening.
    let listening = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("siemsync listening on "));
    let _ = child.kill();
    let _ = child.wait();
    (listening, reader.join().unwrap())
}

#[test]
fn config_errors_name_the_line_and_key_but_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(SHIPPED_CONFIG).unwrap();
    let broken = [
        // An unterminated string: the parser's own message would quote the line.
        shipped.replace(
            "admin_token = \"dev-admin-token-change-me\"",
            "admin_token = \"Sup3rSecretAdminValue-0123456789",
        ),
        format!(
            "{shipped}\n[[integrations]]\naccount = \"acme\"\nname = \"Main\"\nhec_token = \"Sup3rSecretAdminValue-0123456789\" trailing\n"
        ),
        // A value of the wrong type: serde's message would quote the value.
        shipped.replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"Sup3rSecretAdminValue-0123456789\"",
        ),
    ];
    for (i, text) in broken.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let data = dir.path().join(format!("data{i}"));
        for args in [vec!["check-config", p], vec!["run", "--config", p]] {
            let (exited, ok, err) = run_binary(
                &args,
                &[("SIEMSYNC_DATA_DIR", data.to_str().unwrap())],
                Duration::from_secs(20),
            );
            assert!(exited && !ok, "{args:?} {i}: {err}");
            assert!(!err.contains("Sup3rSecret"), "{args:?} {i}: {err}");
            assert!(err.contains("line "), "{args:?} {i}: {err}");
        }
    }
    let name_of = |i: usize| {
        let path = dir.path().join(format!("bad{i}.toml"));
        run_binary(
            &["check-config", path.to_str().unwrap()],
            &[],
            Duration::from_secs(20),
        )
        .2
    };
    assert!(name_of(0).contains("admin_token"), "{}", name_of(0));
    assert!(name_of(1).contains("hec_token"), "{}", name_of(1));
    assert!(name_of(2).contains("listen"), "{}", name_of(2));
}

#[actix_rt::test]
async fn a_hot_reload_of_a_broken_file_does_not_log_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("siemsync.toml");
    let shipped = std::fs::read_to_string(SHIPPED_CONFIG).unwrap();
    std::fs::write(&config, &shipped).unwrap();
    let svc = Siemsync::spawn_with(&config, &dir.path().join("data"), &[]);
    std::fs::write(
        &config,
        format!("{shipped}\n[[integrations]]\naccount = \"acme\"\nhec_token = \"Sup3rSecretHecToken-0123456789\n"),
    )
    .unwrap();
    // The change of the file is noticed (SIGHUP right after start could come
    // before the handler is in place).
    let start = Instant::now();
    while !svc.log_text().contains("rejected") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the reload was not rejected: {}",
            svc.log_text()
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let log = svc.log_text();
    assert!(!log.contains("Sup3rSecret"), "{log}");
    assert!(log.contains("hec_token") && log.contains("line "), "{log}");
}

#[actix_rt::test]
async fn sealing_an_existing_store_leaves_no_clear_copy_of_any_token() {
    if BACKEND != Backend::Sled {
        return eprintln!("sled only: it reads sled's files for a clear copy (on PostgreSQL tokens are sealed in the integrations table)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hec = HecServer::start(TOK);
    let mut svc = Siemsync::spawn(&data, &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("before", 0, 20)).await;
    status_until(&api, "acme", &id, "delivery", |s| {
        s["delivered"]["audit"] == 21
    })
    .await;
    // Rewritten a few times, as sled keeps the old copies until it reclaims space
    // (each change is an audit event too).
    for i in 0..3 {
        api.ok(
            "PATCH",
            &format!("/api/v1/accounts/acme/integrations/{id}"),
            Some(json!({"name": format!("Main {i}")})),
        )
        .await;
    }
    status_until(&api, "acme", &id, "delivery", |s| {
        s["delivered"]["audit"] == 24
    })
    .await;
    assert!(svc.terminate().success());
    assert!(
        !files_holding(&data, TOK.as_bytes()).is_empty(),
        "without a key the token is in clear (the premise of this test)"
    );

    let key = [(
        "SIEMSYNC_SECRET_KEY",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0-sealing-test",
    )];
    let mut svc = Siemsync::spawn(&data, &key);
    let api = svc.api();
    status_until(&api, "acme", &id, "running again", |s| {
        !s["started_at"].is_null()
    })
    .await;
    assert!(svc.terminate().success());
    assert_eq!(
        files_holding(&data, TOK.as_bytes()),
        Vec::<String>::new(),
        "a clear copy of the token is left in the data directory"
    );

    // Everything else came across: the checkpoint, the events, the integration.
    let svc = Siemsync::spawn(&data, &key);
    let api = svc.api();
    let st = api.status("acme", &id).await;
    assert_eq!(st["delivered"]["audit"], 24, "{st:#}");
    api.post_audit("acme", &audit_events("after", 0, 5)).await;
    api.post_audit("acme", &audit_events("before", 0, 20)).await;
    status_until(&api, "acme", &id, "delivery after sealing", |s| {
        s["delivered"]["audit"] == 29
    })
    .await;
    let ids = audit_ids(&hec.events());
    assert_eq!(ids.len(), 25, "the dedup window came across too: {ids:?}");
}

#[test]
fn the_shipped_tokens_work_only_on_a_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let run = ["run", "--config", SHIPPED_CONFIG];
    for (listen, env, key) in [
        ("0.0.0.0:0", vec![], "admin_token"),
        ("[::]:0", vec![], "admin_token"),
        (
            "0.0.0.0:0",
            vec![("SIEMSYNC_ADMIN_TOKEN", "an-admin-token-of-our-own")],
            "ingest_token",
        ),
    ] {
        let mut all = vec![("SIEMSYNC_LISTEN", listen), ("SIEMSYNC_DATA_DIR", data)];
        all.extend(env);
        let (exited, ok, err) = run_binary(&run, &all, Duration::from_secs(20));
        assert!(exited, "started on {listen} with a shipped token: {err}");
        assert!(
            !ok && err.contains(key) && err.contains("loopback"),
            "{err}"
        );
        let (_, ok, err) = run_binary(
            &["check-config", SHIPPED_CONFIG],
            &all,
            Duration::from_secs(20),
        );
        assert!(!ok && err.contains(key), "{err}");
    }
    // Own tokens: any address. The shipped ones on loopback: a warning.
    let (listening, err) = run_until_listening(
        &run,
        &[
            ("SIEMSYNC_LISTEN", "0.0.0.0:0"),
            ("SIEMSYNC_DATA_DIR", data),
            ("SIEMSYNC_ADMIN_TOKEN", "an-admin-token-of-our-own"),
            ("SIEMSYNC_INGEST_TOKEN", "an-ingest-token-of-our-own"),
        ],
    );
    assert!(listening, "it should run: {err}");
    let (listening, err) = run_until_listening(
        &run,
        &[
            ("SIEMSYNC_LISTEN", "127.0.0.1:0"),
            ("SIEMSYNC_DATA_DIR", data),
        ],
    );
    assert!(listening, "it should run: {err}");
    assert!(
        err.contains("WARN") && err.contains("admin_token") && err.contains("development"),
        "{err}"
    );
}

#[actix_rt::test]
async fn text_from_a_hostile_hec_endpoint_cannot_forge_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::spawn(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::Fail {
        status: 400,
        code: Some(6),
        text: "Invalid data format\r\nFORGED [ERROR] siemsync: all tokens leaked\nFORGED again\u{2028}FORGED3\u{1b}[2J".into(),
    });
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"name": "Main\nFORGED name", "hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("e", 0, 2)).await;
    status_until(&api, "acme", &id, "dead letters", |s| {
        s["dead_letters"].as_u64() >= Some(2)
    })
    .await;
    svc.terminate();
    let log = svc.log_text();
    assert!(log.contains("FORGED"), "Splunk's text is logged: {log}");
    // Every line is one of siemsync's own, led by env_logger's `[time LEVEL target]`.
    for line in log.split('\n').filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with("[20"),
            "a line siemsync did not write: {line:?}"
        );
        for c in ['\r', '\u{1b}', '\u{2028}'] {
            assert!(!line.contains(c), "raw {c:?} in {line:?}");
        }
    }
}

/// One raw request: status, headers (lower-case names) and body.
async fn raw(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let client = awc::Client::default();
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.insert_header(("Authorization", format!("Bearer {t}")));
    }
    let mut resp = req.send().await.unwrap();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.body().await.unwrap().to_vec();
    (resp.status().as_u16(), headers, body)
}

#[actix_rt::test]
async fn api_answers_are_never_cached_or_sniffed_and_head_works_where_get_does() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let base = svc.url.as_str();
    for (method, path, token, want) in [
        ("POST", "/api/v1/accounts/acme/tokens", Some(ADMIN), 201),
        (
            "GET",
            "/api/v1/accounts/acme/integrations",
            Some(ADMIN),
            200,
        ),
        ("GET", "/api/v1/whoami", None, 401),
        ("GET", "/api/v1/accounts/acme", Some(INGEST), 403),
        ("GET", "/api/v1/nothing-here", Some(ADMIN), 404),
        ("GET", "/metrics", Some(ADMIN), 200),
        ("GET", "/healthz", None, 200),
    ] {
        let (status, headers, _) = raw(base, method, path, token).await;
        assert_eq!(status, want, "{method} {path}");
        assert_eq!(
            headers.get("cache-control").map(String::as_str),
            Some("no-store"),
            "{method} {path}: {headers:?}"
        );
        assert_eq!(
            headers.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{method} {path}: {headers:?}"
        );
    }
    for (path, token, want) in [
        ("/healthz", None, 200),
        ("/", None, 200),
        ("/ui/app.js", None, 200),
        ("/api/v1/whoami", Some(ADMIN), 200),
        ("/api/v1/accounts/acme/integrations", Some(ADMIN), 200),
        ("/api/v1/accounts/acme/integrations", None, 401),
        ("/api/v1/integrations", Some(INGEST), 403),
        ("/metrics", Some(ADMIN), 200),
    ] {
        let (get, get_headers, get_body) = raw(base, "GET", path, token).await;
        let (head, head_headers, head_body) = raw(base, "HEAD", path, token).await;
        assert_eq!((get, head), (want, want), "GET and HEAD {path}");
        assert!(head_body.is_empty(), "HEAD {path} has a body");
        assert_eq!(
            head_headers.get("content-type"),
            get_headers.get("content-type"),
            "HEAD {path}"
        );
        assert!(!get_body.is_empty(), "GET {path}");
    }
}

#[actix_rt::test]
async fn ipv6_literal_hec_uris_deliver_over_http_and_https() {
    let loopback6: std::net::IpAddr = "::1".parse().unwrap();
    if std::net::TcpListener::bind((loopback6, 0)).is_err() {
        panic!("this machine has no IPv6 loopback (::1), which this test needs");
    }
    let (ca, cert, key) = test_pki(&["::1"]);
    let plain = HecServer::start_on(loopback6, HecServerConfig::token(TOK), None);
    let tls = HecServer::start_on(loopback6, HecServerConfig::token(TOK), Some((&cert, &key)));
    assert!(plain.base_url().starts_with("http://[::1]:"));
    assert!(tls.base_url().starts_with("https://[::1]:"));
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    let a = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": plain.base_url(), "sources": ["audit"]}),
    )
    .await;
    let b = create_integration(
        &api,
        "acme",
        json!({"name": "tls", "hec_token": TOK, "hec_uri": tls.base_url(), "ca_pem": ca, "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    for (id, hec) in [(&a, &plain), (&b, &tls)] {
        let st = status_until(&api, "acme", id, "delivery to [::1]", |s| {
            s["delivered"]["audit"] == 7 || s["state"] == "failing"
        })
        .await;
        assert_eq!(st["state"], "healthy", "{st:#}");
        assert_eq!(audit_ids(&hec.events()).len(), 5);
        let report = api
            .ok(
                "POST",
                &format!("/api/v1/accounts/acme/integrations/{id}/test"),
                None,
            )
            .await;
        assert_eq!(report["ok"], true, "{report:#}");
    }
}

/// Sends an ingest request's headers, declaring `length` bytes of body, and then
/// only `start` of it, on a connection of its own that waits `wait` for answers.
fn ingest_head(svc: &Siemsync, length: usize, start: &str, wait: Duration) -> std::net::TcpStream {
    let addr = svc.url.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(wait)).unwrap();
    write!(
        conn,
        "POST /api/v1/accounts/acme/audit HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {INGEST}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n{start}"
    )
    .unwrap();
    conn.flush().unwrap();
    conn
}

/// A body declared larger than `max_body_bytes` is refused on its headers: 413 at
/// once, not after waiting for bytes that would be refused anyway (and no memory set
/// aside for them).
#[test]
fn a_body_declared_over_the_limit_is_answered_413_before_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_MAX_BODY_BYTES", "65536"),
            ("SIEMSYNC_BODY_TIMEOUT_SECS", "20"),
        ],
    );
    let started = Instant::now();
    let mut conn = ingest_head(&svc, 100_000_000, "", Duration::from_secs(10));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("larger than") {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer after {:?}: {e}", started.elapsed()),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("larger than 65536 bytes"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_stalled_request_body_is_answered_408_and_its_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_BODY_TIMEOUT_SECS", "0.2")]);
    let started = Instant::now();
    let mut conn = ingest_head(&svc, 1000, "[{\"id\": \"stuck\"", Duration::from_secs(20));
    let mut answer = Vec::new();
    let read = conn.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "the connection was still open after {:?}: {read:?} {text}",
        started.elapsed()
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("SIEMSYNC_BODY_TIMEOUT_SECS") || text.contains("body_timeout_secs"));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The service is still fine for everyone else.
    let v: Value = actix_rt::System::new().block_on(async {
        svc.api()
            .ok("GET", "/api/v1/accounts/acme/integrations", None)
            .await
    });
    assert_eq!(v, json!([]));
}
