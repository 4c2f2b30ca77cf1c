//! End-to-end catch-up: N audit events already in the store, one integration, a
//! loopback HEC receiver that only reads, un-gzips and counts (so it is not the
//! bottleneck). The real path throughout: collectors, encoding, batching, gzip,
//! awc, checkpoints made durable after every post.
//! Run: `cargo bench --bench catch_up` (N from SIEMSYNC_BENCH_EVENTS, default 1,000,000).

mod support;

/// The service's allocator, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::Utc;
use serde_json::json;
use siemsync::config::Config;
use siemsync::model::{AccountId, AuditEvent, IntegrationChange, IntegrationPolicy};
use siemsync::store::{Account, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Counts;

fn main() {
    let n: usize = std::env::var("SIEMSYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let account = AccountId::parse("acme").expect("id");
    let store = Store::open(dir.path()).expect("store");
    let start = Instant::now();
    for from in (0..n).step_by(5000) {
        let events: Vec<AuditEvent> = (from..(from + 5000).min(n))
            .map(|i| AuditEvent::from_json(&support::audit_event(i), i, Utc::now()))
            .collect::<Result<_, _>>()
            .expect("valid");
        store.append_audit(&account, events).expect("append");
    }
    store.flush_now().expect("flush");
    println!(
        "filled the store: {n} events in {:.1} s ({:.0} events/s, store only)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    let counts = Arc::new(Counts::default());
    let port = support::receiver(counts.clone());
    store
        .put_account(&account, &Account::enabled(Utc::now()))
        .expect("account");
    let it = IntegrationChange::from_json(
        &json!({"name": "bench", "hec_token": "00000000-0000-4000-8000-000000000000",
        "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true}),
    )
    .and_then(|c| c.create(account.clone(), Utc::now(), IntegrationPolicy::default()))
    .expect("integration");
    store.put_integration(&it, None).expect("put");
    store.flush_now().expect("flush");
    drop(store);
    // The store's flush thread lets go of the database a moment after the last handle.
    std::thread::sleep(Duration::from_secs(1));

    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/siemsync.toml"))
            .expect("config");
    let data = dir.path().display().to_string();
    let config = Config::from_toml(&shipped, Path::new("bench"), |k| match k {
        "SIEMSYNC_LISTEN" => Some("127.0.0.1:0".into()),
        "SIEMSYNC_DATA_DIR" => Some(data.clone()),
        "SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS" => Some("true".into()),
        _ => None,
    })
    .expect("config");
    let cpu0 = support::cpu_secs("self");
    let t0 = Instant::now();
    actix_rt::System::new().block_on(async move {
        let _svc = siemsync::start(config).expect("start");
        while counts.events() < n as u64 {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            assert!(t0.elapsed() < Duration::from_secs(1800), "catch-up did not finish");
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = support::cpu_secs("self") - cpu0;
        let mb = counts.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
        println!(
            "catch-up: {n} events in {secs:.2} s = {:.0} events/s, {:.1} MB/s of HEC JSON, {:.2} CPU s per million events (receiver included)",
            n as f64 / secs,
            mb / secs,
            cpu / (n as f64 / 1e6)
        );
    });
}
