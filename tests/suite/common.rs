//! Test support: run siemsync against a temp data dir (in this process through
//! `siemsync::testkit::service`, or the real binary where a process is the point),
//! talk to its API, and wait for conditions without fixed sleeps.
#![allow(dead_code)]

use serde_json::Value;
pub use siemsync::testkit::service::Backend;
use siemsync::testkit::service::{self, InProcess};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const ADMIN: &str = "test-admin-token-0123456789";
pub const INGEST: &str = "test-ingest-token-0123456789";
pub const HOST: &str = "eu-1.backup.example.com";

/// The settings every test service starts with (a test's own come after and win):
/// a sync every tenth of a second and short internal intervals, so that what the
/// product does every five minutes, or after a second's back-off, shows in
/// milliseconds.
fn test_env(data_dir: &Path) -> Vec<(String, String)> {
    [
        ("SIEMSYNC_LISTEN", "127.0.0.1:0"),
        ("SIEMSYNC_DATA_DIR", &data_dir.display().to_string()),
        ("SIEMSYNC_SYNC_INTERVAL_SECS", "0.1"),
        ("SIEMSYNC_HOST", HOST),
        ("SIEMSYNC_ADMIN_TOKEN", ADMIN),
        ("SIEMSYNC_INGEST_TOKEN", INGEST),
        ("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", "true"),
        ("SIEMSYNC_TIMING_RETRY_BACKOFF_BASE_SECS", "0.05"),
        ("SIEMSYNC_TIMING_RESTART_DELAY_SECS", "0.05"),
        ("SIEMSYNC_TIMING_SUPERVISOR_RETRY_SECS", "0.05"),
        ("SIEMSYNC_TIMING_STORE_WATCH_SECS", "0.05"),
        ("SIEMSYNC_TIMING_CONFIG_POLL_SECS", "0.1"),
        ("RUST_LOG", "info"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn with_overrides(data_dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all = test_env(data_dir);
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

enum Running {
    /// `siemsync::start` on a thread of this test process.
    InProcess(InProcess),
    /// The binary, as a child process.
    Process(Option<Child>),
    Stopped,
}

/// A siemsync under test: in this process (`start`), or the real binary as a
/// child process (`spawn`) where a signal, SIGKILL, the log or the process's own
/// resources are the point.
pub struct Siemsync {
    running: Running,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
}

fn shipped() -> PathBuf {
    siemsync::testkit::service::shipped_config()
}

impl Siemsync {
    /// Starts the service in this process on a free port with the test settings;
    /// `env` adds or overrides `SIEMSYNC_*` settings.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Siemsync {
        Self::start_with(&shipped(), data_dir, env)
    }

    /// Like `start`, with another config file.
    pub fn start_with(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Siemsync {
        let env = with_overrides(data_dir, env);
        let running = Self::launch(config, &env);
        let url = running.url();
        Siemsync {
            running: Running::InProcess(running),
            url,
            data_dir: data_dir.to_owned(),
            log: PathBuf::new(),
            config: config.to_owned(),
            env,
        }
    }

    fn launch(config: &Path, env: &[(String, String)]) -> InProcess {
        let c = service::config(config, env).expect("test config");
        InProcess::start(c).unwrap_or_else(|e| panic!("siemsync did not start: {e}"))
    }

    /// Runs the real binary as a child process, with the test settings and `env`.
    pub fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> Siemsync {
        Self::spawn_with(&shipped(), data_dir, env)
    }

    /// Like `spawn`, with another config file.
    pub fn spawn_with(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Siemsync {
        let log = data_dir.with_extension(format!("log{}", std::process::id()));
        let env = with_overrides(data_dir, env);
        let (child, url) = service::spawn_process(
            Path::new(env!("CARGO_BIN_EXE_siemsync")),
            config,
            &env,
            Some(&log),
        )
        .unwrap_or_else(|e| {
            panic!(
                "{e}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        Siemsync {
            running: Running::Process(Some(child)),
            url,
            data_dir: data_dir.to_owned(),
            log,
            config: config.to_owned(),
            env,
        }
    }

    /// Stops an in-process service (HTTP server, actors, store flushed) and starts
    /// it again on the same data directory and settings; its URL changes.
    pub fn restart(&mut self) {
        self.stop();
        let running = Self::launch(&self.config, &self.env);
        self.url = running.url();
        self.running = Running::InProcess(running);
    }

    /// Stops an in-process service and waits until it ended.
    pub fn stop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::InProcess(mut s) => s.stop(),
            Running::Process(_) => panic!("stop() is for in-process services: use terminate()"),
            Running::Stopped => {}
        }
    }

    /// The service started with `start`, running in this process: its Supervisor
    /// and store, for tests that order messages exactly or slow the store down.
    pub fn in_process(&mut self) -> &mut InProcess {
        match &mut self.running {
            Running::InProcess(s) => s,
            _ => panic!("only a service started with Siemsync::start runs in this process"),
        }
    }

    fn child(&mut self) -> &mut Option<Child> {
        match &mut self.running {
            Running::Process(c) => c,
            _ => panic!("only a service started with Siemsync::spawn is a process"),
        }
    }

    /// The process id: the child's, or this test process's for an in-process service.
    pub fn pid(&self) -> u32 {
        match &self.running {
            Running::Process(c) => c.as_ref().map(|c| c.id()).unwrap_or(0),
            _ => std::process::id(),
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`...) to the child process.
    pub fn signal(&self, name: &str) {
        let Running::Process(Some(c)) = &self.running else {
            panic!("only a running service started with Siemsync::spawn takes signals");
        };
        let pid = c.id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits for the process to exit by itself (after a signal sent with `signal`).
    pub fn terminate_wait(&mut self) -> std::process::ExitStatus {
        let mut c = self.child().take().expect("running");
        c.wait().expect("wait")
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child().take().expect("running");
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("kill -TERM");
        c.wait().expect("wait")
    }

    /// The child process's log (an in-process service's log is not captured).
    pub fn log_text(&self) -> String {
        assert!(
            matches!(self.running, Running::Process(_)) || self.log != PathBuf::new(),
            "only a service started with Siemsync::spawn has a log of its own"
        );
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Siemsync {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.running, Running::Stopped) {
            Running::InProcess(mut s) => s.stop(),
            Running::Process(Some(mut c)) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            _ => {}
        }
        if self.log != PathBuf::new() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// The store the tests of this module run on (`on_postgres`'s common says
/// `Postgres`): a promise only one store makes returns early on the other, saying so.
pub const BACKEND: Backend = Backend::Sled;

/// A [`Siemsync`] on PostgreSQL: what the modules of `on_postgres` (main.rs) see as
/// `Siemsync`, so the same promise tests run on both backends. Each service gets a
/// database of its own on the test binary's shared cluster (kept across `restart`);
/// everything else is the plain `Siemsync`, which it dereferences to.
pub struct PgSiemsync(Siemsync);

impl PgSiemsync {
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> PgSiemsync {
        Self::start_with(&shipped(), data_dir, env)
    }

    pub fn start_with(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> PgSiemsync {
        let env = on_postgres(data_dir, env);
        PgSiemsync(Siemsync::start_with(config, data_dir, &borrowed(&env)))
    }

    pub fn spawn(data_dir: &Path, env: &[(&str, &str)]) -> PgSiemsync {
        Self::spawn_with(&shipped(), data_dir, env)
    }

    pub fn spawn_with(config: &Path, data_dir: &Path, env: &[(&str, &str)]) -> PgSiemsync {
        let env = on_postgres(data_dir, env);
        PgSiemsync(Siemsync::spawn_with(config, data_dir, &borrowed(&env)))
    }
}

impl std::ops::Deref for PgSiemsync {
    type Target = Siemsync;
    fn deref(&self) -> &Siemsync {
        &self.0
    }
}

impl std::ops::DerefMut for PgSiemsync {
    fn deref_mut(&mut self) -> &mut Siemsync {
        &mut self.0
    }
}

/// The shard lease of the services the tests run on PostgreSQL (`on_postgres`):
/// short, so that a hand-over takes seconds.
pub const PG_LEASE: (&str, &str) = ("SIEMSYNC_TIMING_SHARD_LEASE_SECS", "2");

/// The PostgreSQL settings of `data_dir`, then the test's own, which win. A data
/// directory stands for its database, as it stands for sled's files: a service
/// started again on the same directory (a restart test) finds the same data.
fn on_postgres(data_dir: &Path, env: &[(&str, &str)]) -> Vec<(String, String)> {
    type Overrides = Vec<(String, String)>;
    static DATABASES: std::sync::Mutex<Vec<(PathBuf, Overrides)>> =
        std::sync::Mutex::new(Vec::new());
    let mut known = DATABASES.lock().unwrap_or_else(|p| p.into_inner());
    // A sync every quarter second, not every tenth: an idle sync is a few
    // PostgreSQL round trips (its history record is a transaction), where sled's
    // are microseconds, and fifty integrations syncing ten times a second would
    // take more than this 2-core machine has. A test's own interval still wins.
    //
    // A 2 s shard lease, not 15 s: what waits out a lease (a killed node's
    // hand-over, a restart under a killed process's name) waits seconds, not
    // quarter-minutes. Renewed every 0.67 s, it still outlasts a slow round.
    let mut all = vec![
        ("SIEMSYNC_SYNC_INTERVAL_SECS".to_owned(), "0.25".to_owned()),
        (PG_LEASE.0.to_owned(), PG_LEASE.1.to_owned()),
    ];
    all.extend(match known.iter().find(|(dir, _)| dir == data_dir) {
        Some((_, db)) => db.clone(),
        None => {
            let db = service::Backend::Postgres.env().unwrap_or_else(|| {
                panic!("this test runs on PostgreSQL, whose server binaries are not installed (install Debian's `postgresql` package, or set SIEMSYNC_PG_BINDIR)")
            });
            known.push((data_dir.to_owned(), db.clone()));
            db
        }
    });
    all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A small JSON client for the API.
#[derive(Clone)]
pub struct Api {
    base: String,
    client: awc::Client,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            // Pooled connections are dropped after 1 s idle, well before the server's
            // keep-alive (actix-web's 5 s) closes them: reusing one the server is just
            // closing fails the request with `Disconnected`.
            client: awc::Client::builder()
                .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(1)))
                .timeout(Duration::from_secs(30))
                .finish(),
        }
    }

    /// Sends a request; `body` is sent as raw bytes when it is a string starting with `RAW:`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.insert_header(("Authorization", format!("Bearer {t}")));
        }
        let resp = match body {
            Some(Value::String(s)) if s.starts_with("RAW:") => {
                req.content_type("application/json")
                    .send_body(s[4..].to_owned())
                    .await
            }
            Some(v) => req.send_json(&v).await,
            None => req.send().await,
        };
        let mut resp = resp.expect("API request");
        let status = resp.status().as_u16();
        let bytes = resp.body().limit(64 << 20).await.expect("API body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    pub async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.admin(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    pub async fn enable_account(&self, account: &str) {
        self.ok(
            "PUT",
            &format!("/api/v1/accounts/{account}"),
            Some(serde_json::json!({"siem_enabled": true})),
        )
        .await;
    }

    /// Creates an enabled integration for both sources; returns its id.
    pub async fn add_integration(&self, account: &str, token: &str, uri: &str) -> String {
        let v = self
            .ok(
                "POST",
                &format!("/api/v1/accounts/{account}/integrations"),
                Some(serde_json::json!({"name": format!("{account} splunk"), "hec_token": token, "hec_uri": uri,
                    "sources": ["audit", "jobs"], "enabled": true})),
            )
            .await;
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn post_audit(&self, account: &str, events: &Value) -> Value {
        let (s, v) = self.try_post_audit(account, events).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// One ingest request of audit `events` for `account`, whatever it answers:
    /// its status and body.
    pub async fn try_post_audit(&self, account: &str, events: &Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/v1/accounts/{account}/audit"),
            Some(INGEST),
            Some(events.clone()),
        )
        .await
    }

    pub async fn post_jobs(&self, account: &str, jobs: &Value) -> Value {
        let (s, v) = self
            .call(
                "POST",
                &format!("/api/v1/accounts/{account}/jobs"),
                Some(INGEST),
                Some(jobs.clone()),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    pub async fn status(&self, account: &str, id: &str) -> Value {
        self.ok(
            "GET",
            &format!("/api/v1/accounts/{account}/integrations/{id}/status"),
            None,
        )
        .await
    }
}

/// Posts audit events as the platform does, answering the status, `Retry-After`
/// and the body.
pub async fn post(svc: &Siemsync, account: &str, events: &Value) -> (u16, Option<u64>, Value) {
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

/// Polls `cond` every 50 ms until it holds, or panics with `what` after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` audit events with ids `{prefix}-{i}` and distinct times.
pub fn audit_events(prefix: &str, from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| {
                serde_json::json!({
                    "id": format!("{prefix}-{i}"),
                    "time": format!("2026-11-25T10:{:02}:{:02}.{:03}Z", (i / 60) % 60, i % 60, i % 1000),
                    "connector": "conn-1",
                    "acl": "admin",
                    "method": "POST",
                    "user": format!("user{i}@example.com"),
                    "ip": "192.0.2.7",
                    "metadata": {"n": i},
                    "event": format!("event number {i}"),
                })
            })
            .collect(),
    )
}

/// The audit ids of the platform's events a HEC server received, in arrival order
/// (siemsync's own audit events about integration changes left out).
pub fn audit_ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            e["source"] == "siemsync:audit" && e["event"]["acl"] != "siem-integration:manage"
        })
        .map(|e| e["event"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `ids` in the order each first arrived, repeats left out: at-least-once delivery
/// may send a post again, and what it keeps in order is the first arrival.
pub fn first_arrivals(ids: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.into_iter()
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

/// `ids` (`e-7`, …) sorted by their number, for posts that may arrive in any order
/// (several out at once): compared with `e-0..e-n`, each arrived exactly once.
pub fn by_number(mut ids: Vec<String>) -> Vec<String> {
    ids.sort_by_key(|id| {
        id.rsplit('-')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    ids
}

/// Polls an integration's status until `pred` holds; returns it, or panics with the last one seen.
pub async fn status_until(
    api: &Api,
    account: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let st = api.status(account, id).await;
        if pred(&st) {
            return st;
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!("timed out waiting for {what}; last status: {st:#}");
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates an integration from `body` (name and sources filled in when missing); returns its id.
pub async fn create_integration(api: &Api, account: &str, mut body: Value) -> String {
    let o = body.as_object_mut().expect("object");
    o.entry("name")
        .or_insert(serde_json::json!(format!("{account} splunk")));
    o.entry("sources")
        .or_insert(serde_json::json!(["audit", "jobs"]));
    o.entry("enabled").or_insert(serde_json::json!(true));
    let v = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/{account}/integrations"),
            Some(body),
        )
        .await;
    v["id"].as_str().unwrap().to_owned()
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A time in an API answer.
pub fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|| panic!("not a time: {v}"))
}

/// An integration's recorded syncs, newest first.
pub async fn history(api: &Api, account: &str, id: &str) -> Vec<Value> {
    let v = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/{account}/integrations/{id}/history"),
            None,
        )
        .await;
    v["syncs"].as_array().expect("syncs").clone()
}

/// Polls the history until `pred` holds; returns it, newest first.
pub async fn history_until(
    api: &Api,
    account: &str,
    id: &str,
    what: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let h = history(api, account, id).await;
        if pred(&h) {
            return h;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiting for {what}; history: {h:#?}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "Sync now", and the record of that sync once it ended.
pub async fn sync_now(api: &Api, account: &str, id: &str) -> Value {
    let asked = api
        .ok(
            "POST",
            &format!("/api/v1/accounts/{account}/integrations/{id}/sync"),
            None,
        )
        .await;
    let asked = time(&asked["requested_at"]);
    let h = history_until(api, account, id, "the sync asked for", |h| {
        h.iter().any(|r| time(&r["started_at"]) >= asked)
    })
    .await;
    h.into_iter()
        .rev()
        .find(|r| time(&r["started_at"]) >= asked)
        .expect("the sync asked for")
}

/// Every file under `dir` holding `needle` (a byte search of the data directory).
pub fn files_holding(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(p) = todo.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else if std::fs::read(e.path())
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

/// A test CA, and a server certificate it signed for `names` (host names or IP
/// addresses): (CA PEM, certificate PEM, key PEM).
pub fn test_pki(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "siemsync test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Waits until the integration recorded `n` more syncs than it had when called: for
/// "nothing more happens", counted in sync intervals instead of a wall-clock guess.
pub async fn more_syncs(api: &Api, account: &str, id: &str, n: usize) {
    let newest = history(api, account, id)
        .await
        .first()
        .map(|r| time(&r["started_at"]));
    history_until(api, account, id, &format!("{n} more syncs"), |h| {
        h.iter()
            .filter(|r| newest.is_none_or(|t| time(&r["started_at"]) > t))
            .count()
            >= n
    })
    .await;
}
