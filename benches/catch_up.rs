//! End-to-end catch-up: N audit events already in the store, one integration, a
//! loopback HEC receiver that only reads, un-gzips and counts (so it is not the
//! bottleneck). The real path throughout: collectors, encoding, batching, gzip,
//! awc, checkpoints made durable after every post.
//! Run: `cargo bench --bench catch_up` (N from SIEMSYNC_BENCH_EVENTS, default 1,000,000;
//! SIEMSYNC_POSTS_IN_FLIGHT is passed on to the service, to compare windows).
//! Afterwards it times gzip at each level of SIEMSYNC_BENCH_GZIP_LEVELS (default
//! "1,3,6") on the first post's real HEC bytes: the CPU gzip costs per million
//! events at that level, beside the whole catch-up's.

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
        "SIEMSYNC_POSTS_IN_FLIGHT" => std::env::var(k).ok(),
        _ => None,
    })
    .expect("config");
    let window = config.posts_in_flight;
    let cpu0 = support::cpu_secs("self");
    let t0 = Instant::now();
    let seen = counts.clone();
    let cpu_per_million = actix_rt::System::new().block_on(async move {
        let _svc = siemsync::start(config).expect("start");
        while counts.events() < n as u64 {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            assert!(t0.elapsed() < Duration::from_secs(1800), "catch-up did not finish");
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = support::cpu_secs("self") - cpu0;
        let mb = counts.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
        println!(
            "catch-up: {n} events in {secs:.2} s = {:.0} events/s, {:.1} MB/s of HEC JSON, {:.2} CPU s per million events (receiver included); {} posts, posts_in_flight {window}; load average {}",
            n as f64 / secs,
            mb / secs,
            cpu / (n as f64 / 1e6),
            counts.posts.load(std::sync::atomic::Ordering::Relaxed),
            support::load_average(),
        );
        cpu / (n as f64 / 1e6)
    });
    gzip_levels(&seen, cpu_per_million);
}

/// Times gzip at each level on the first post's HEC bytes, as the client compresses.
fn gzip_levels(counts: &Counts, catch_up_cpu: f64) {
    use std::io::Write;
    let levels = std::env::var("SIEMSYNC_BENCH_GZIP_LEVELS").unwrap_or_else(|_| "1,3,6".into());
    let Some(sample) = counts.sample.lock().ok().and_then(|s| s.clone()) else {
        println!("gzip: no post was sampled");
        return;
    };
    let events = sample.iter().filter(|b| **b == b'\n').count().max(1);
    for level in levels
        .split(',')
        .filter_map(|l| l.trim().parse::<u32>().ok())
    {
        let (mut rounds, mut zipped) = (0u32, 0usize);
        // This thread's CPU alone: the service's threads may still be winding down.
        let cpu0 = support::cpu_secs("thread-self");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(sample.len() / 4),
                flate2::Compression::new(level),
            );
            enc.write_all(&sample).expect("gzip");
            zipped = enc.finish().expect("gzip").len();
            rounds += 1;
        }
        let cpu = (support::cpu_secs("thread-self") - cpu0) / f64::from(rounds);
        let per_million = cpu / events as f64 * 1e6;
        println!(
            "gzip level {level}: {:.0} MB/s of HEC JSON, {:.1} % of the size, {per_million:.2} CPU s per million events ({:.0} % of this catch-up's {catch_up_cpu:.2}), {:.0} events/s on one core",
            sample.len() as f64 / cpu / 1e6,
            zipped as f64 * 100.0 / sample.len() as f64,
            per_million * 100.0 / catch_up_cpu,
            1e6 / per_million,
        );
    }
}
