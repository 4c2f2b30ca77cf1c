//! `Service::shutdown` from inside an actix System that goes on: the in-process
//! harness starts and stops the service many times in one test process, so a
//! shutdown must leave no thread, actor, timer or open store behind. Alone in its
//! test binary, so that the process's thread count is this test's own.

use serde_json::json;
use siemsync::actors::messages::WindDown;
use siemsync::actors::shutdown::ActorKind;
use siemsync::config::Config;
use siemsync::store::{Store, StoreOptions};
use siemsync::testkit::HecServer;
use std::path::Path;
use std::time::{Duration, Instant};

const ADMIN: &str = "test-admin-token-0123456789";
const TOK: &str = "1a2b0000-0000-4000-8000-000000000001";

fn config(data_dir: &Path) -> Config {
    let shipped = include_str!("../config/siemsync.toml");
    let data = data_dir.display().to_string();
    Config::from_toml(shipped, Path::new("test"), |k| match k {
        "SIEMSYNC_LISTEN" => Some("127.0.0.1:0".into()),
        "SIEMSYNC_DATA_DIR" => Some(data.clone()),
        "SIEMSYNC_SYNC_INTERVAL_SECS" => Some("1".into()),
        "SIEMSYNC_ADMIN_TOKEN" => Some(ADMIN.into()),
        "SIEMSYNC_INGEST_TOKEN" => Some("test-ingest-token-0123456789".into()),
        "SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS" => Some("true".into()),
        _ => None,
    })
    .expect("config")
}

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .expect("/proc/self/task")
}

/// The names of this process's threads, to say which are left.
fn thread_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    names.sort();
    names
}

/// Waits for `cond` for up to ten seconds; panics with `what` otherwise.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "waiting for {what}; threads: {:?}",
            thread_names()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(base: &str, method: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    let client = awc::Client::default();
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    let mut resp = client
        .request(method, format!("{base}{path}"))
        .insert_header(("Authorization", format!("Bearer {ADMIN}")))
        .send_json(&body)
        .await
        .expect("API request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.expect("JSON answer")
}

#[actix_rt::test]
async fn shutdown_in_process_leaves_nothing_running_and_the_system_goes_on() {
    let (dir, scratch) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hec = HecServer::start(TOK);
    // What is not the service's: the test HEC server running (its accept thread starts
    // with its first poll), and sled's I/O pool, a static of sled's that its first
    // database starts and that stays for the process.
    let health = format!("{}/services/collector/health", hec.base_url());
    awc::Client::default()
        .get(health)
        .send()
        .await
        .expect("HEC up");
    drop(Store::open_with_options(scratch.path(), &StoreOptions::new()).expect("sled"));
    until("sled's I/O pool", || {
        thread_names().iter().any(|t| t.starts_with("sled-io"))
    })
    .await;
    let baseline = threads();
    let before = thread_names();
    let mut id = String::new();
    for round in 0..2 {
        let svc = siemsync::start(config(dir.path())).expect("start");
        let base = format!("http://{}", svc.addr);
        if round == 0 {
            call(
                &base,
                "PUT",
                "/api/v1/accounts/acme",
                json!({"siem_enabled": true}),
            )
            .await;
            let it = call(
                &base,
                "POST",
                "/api/v1/accounts/acme/integrations",
                json!({"name": "main", "hec_token": TOK, "hec_uri": hec.base_url(),
                    "sources": ["audit"], "enabled": true}),
            )
            .await;
            id = it["id"].as_str().unwrap().to_owned();
        }
        let (addr, supervisor, metrics) = (svc.addr, svc.supervisor.clone(), svc.metrics.clone());
        until("the integration's actor", || {
            metrics.integration_actors.get() == 1
        })
        .await;
        until("delivery", || !hec.events().is_empty()).await;
        let report = svc.shutdown().await.expect("a clean shutdown");
        let it = id.parse().unwrap();
        assert!(
            matches!(
                report.outcome(&it, ActorKind::Integration),
                Some(WindDown::Idle | WindDown::Finished)
            ),
            "{report:?}"
        );
        assert_eq!(metrics.integration_actors.get(), 0, "no actor left");
        assert!(
            !supervisor.connected(),
            "the Supervisor and its timers are gone"
        );
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the API no longer listens"
        );
        until(
            &format!("every thread of the service gone (before: {before:?})"),
            || threads() <= baseline,
        )
        .await;
        // The store is closed: sled's lock is free for whoever opens it next.
        let mut reopened = Store::open_with_options(dir.path(), &StoreOptions::new());
        let t0 = Instant::now();
        while reopened.is_err() && t0.elapsed() < Duration::from_secs(10) {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            reopened = Store::open_with_options(dir.path(), &StoreOptions::new());
        }
        drop(reopened.expect("the store can be opened again"));
        until("the test's store handle gone", || threads() <= baseline).await;
    }
    // The System goes on: its timers still fire.
    actix_rt::time::sleep(Duration::from_millis(1)).await;
}
