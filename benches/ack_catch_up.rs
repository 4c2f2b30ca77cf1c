//! Catch-up against a Splunk that acknowledges slowly: N audit events already in the
//! store, one integration with indexer acknowledgement, and a loopback receiver that
//! confirms each post only once `SIEMSYNC_BENCH_ACK_MS` (default 200) have passed
//! since it arrived. Times from the service's start until the integration's
//! checkpoint says every event is delivered (acknowledged and committed), so the
//! figure is bound by how delivery overlaps acknowledgement waits.
//! Run: `cargo bench --bench ack_catch_up` (N from SIEMSYNC_BENCH_EVENTS, default 100,000).

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
    let env_num = |k: &str, default: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env_num("SIEMSYNC_BENCH_EVENTS", 100_000) as usize;
    let ack = Duration::from_millis(env_num("SIEMSYNC_BENCH_ACK_MS", 200));
    let dir = tempfile::tempdir().expect("temp dir");
    let account = AccountId::parse("acme").expect("id");
    let store = Store::open(dir.path()).expect("store");
    for from in (0..n).step_by(5000) {
        let events: Vec<AuditEvent> = (from..(from + 5000).min(n))
            .map(|i| AuditEvent::from_json(&support::audit_event(i), i, Utc::now()))
            .collect::<Result<_, _>>()
            .expect("valid");
        store.append_audit(&account, events).expect("append");
    }
    let counts = Arc::new(Counts::default());
    let port = support::ack_receiver(counts.clone(), ack);
    store
        .put_account(&account, &Account::enabled(Utc::now()))
        .expect("account");
    let it = IntegrationChange::from_json(&json!({"name": "bench",
        "hec_token": "00000000-0000-4000-8000-000000000000",
        "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true,
        "indexer_ack": true}))
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
    let t0 = Instant::now();
    actix_rt::System::new().block_on(async move {
        let svc = siemsync::start(config).expect("start");
        loop {
            let cp = svc.store.checkpoint(&it.id).expect("checkpoint");
            if cp.delivered_audit >= n as u64 {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
            assert!(t0.elapsed() < Duration::from_secs(1800), "catch-up did not finish");
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "ack catch-up: {n} events acknowledged after {} ms each, in {secs:.2} s = {:.0} events/s; {} posts, {} events received",
            ack.as_millis(),
            n as f64 / secs,
            counts.posts.load(std::sync::atomic::Ordering::Relaxed),
            counts.events(),
        );
    });
}
