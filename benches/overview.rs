//! The administrator's overview at fleet size: M integrations (one per account), each
//! with a short history whose latest post was healthy, needing action, retrying or
//! turned off, in the store before the release binary starts. Once every
//! integration's first tick is over and the service idles, it times the overview's
//! first page (each sort, and one state only) over one keep-alive connection, and, for
//! comparison, the full-status list `GET /api/v1/integrations` once.
//! Run: `cargo bench --bench overview` (M from SIEMSYNC_BENCH_INTEGRATIONS, default
//! 10,000; SIEMSYNC_BENCH_SYNCS syncs of history each, default 20).

mod support;

use chrono::{Duration as Span, Utc};
use siemsync::hec::response::{classify, FailureKind};
use siemsync::model::{AccountId, IntegrationChange, IntegrationPolicy};
use siemsync::store::{
    Account, PerSource, Store, SyncError, SyncRecord, SyncResult, HISTORY_MAX_RECORDS,
};
use std::time::{Duration, Instant};
use support::{Http, Service, ADMIN};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// M accounts with one integration each and `syncs` recorded syncs: every 10th needs
/// action, every 20th is retrying, every 20th (another) is turned off. Returns the
/// time spent recording syncs.
fn prepare(dir: &std::path::Path, m: usize, syncs: usize, port: u16) -> Duration {
    let store = Store::open(dir).expect("store");
    let now = Utc::now();
    let mut recording = Duration::ZERO;
    let config = classify(403, br#"{"text":"Invalid token","code":4}"#)
        .failure()
        .cloned()
        .expect("a failure");
    let busy = classify(503, br#"{"text":"Server is busy","code":9}"#)
        .failure()
        .cloned()
        .expect("a failure");
    for a in 0..m {
        let account = AccountId::parse(&format!("tenant-{a:05}")).expect("id");
        store
            .put_account(&account, &Account::enabled(now))
            .expect("account");
        let it = IntegrationChange::from_json(&serde_json::json!({
            "name": "splunk", "hec_token": "00000000-0000-4000-8000-000000000000",
            "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit", "jobs"],
            "enabled": a % 20 != 7}))
        .and_then(|c| c.create(account.clone(), now, IntegrationPolicy::default()))
        .expect("integration");
        store.put_integration(&it, None).expect("put");
        let error = match a {
            _ if a % 10 == 3 => Some((config.clone(), FailureKind::Configuration)),
            _ if a % 20 == 5 => Some((busy.clone(), FailureKind::Transient)),
            _ => None,
        };
        for s in 0..syncs {
            let last = s + 1 == syncs;
            let failed = last && error.is_some();
            let events = if failed {
                0
            } else {
                (a * 7 + s * 3) as u64 % 40
            };
            let record = SyncRecord {
                started_at: now - Span::minutes(5 * (syncs - s) as i64),
                duration_ms: 20 + events,
                result: SyncResult::of(events, failed),
                events: PerSource {
                    audit: events,
                    jobs: 0,
                },
                bytes: PerSource {
                    audit: events * 600,
                    jobs: 0,
                },
                dead_lettered: 0,
                backlog_after: Some(if failed { (a % 997) as u64 } else { 0 }),
                error: error
                    .clone()
                    .filter(|_| failed)
                    .map(|(failure, kind)| SyncError { failure, kind }),
            };
            let t0 = Instant::now();
            store
                .record_sync(&account, &it.id, &record)
                .expect("record");
            recording += t0.elapsed();
        }
    }
    store.flush_now().expect("flush");
    recording
}

/// Times `n` requests of `path`; returns (median, 90th percentile, slowest) in ms and
/// the body's size.
fn time(http: &mut Http, path: &str, n: usize) -> (f64, f64, f64, usize) {
    let mut ms = Vec::with_capacity(n);
    let mut size = 0;
    for _ in 0..n {
        let t0 = Instant::now();
        let (status, body) = http.request("GET", path, ADMIN, b"");
        ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        size = body.len();
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    (ms[n / 2], ms[n * 9 / 10], ms[n - 1], size)
}

fn main() {
    let m = env("SIEMSYNC_BENCH_INTEGRATIONS", 10_000);
    let syncs = env("SIEMSYNC_BENCH_SYNCS", 20).clamp(1, HISTORY_MAX_RECORDS as usize);
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens there: with no events stored, no sync posts anything.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let t0 = Instant::now();
    let recording = prepare(dir.path(), m, syncs, port);
    // The store's flush thread lets go of the database a moment after the last handle.
    while sled::Config::new().path(dir.path()).open().is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(1200),
            "the store stays locked"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let prepared = t0.elapsed();

    let svc = Service::spawn(dir.path(), &[("SIEMSYNC_SYNC_INTERVAL_SECS", "3600")]);
    let pid = svc.pid().to_string();
    // Every integration's first tick, then idle.
    let t0 = Instant::now();
    loop {
        let before = support::cpu_secs(&pid);
        std::thread::sleep(Duration::from_secs(1));
        if support::cpu_secs(&pid) - before < 0.05 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(600), "never idle");
    }
    let mut http = Http::connect(svc.authority());
    time(&mut http, "/api/v1/overview", 3);
    println!(
        "overview: {m} integrations, {syncs} syncs each (prepared in {:.1} s, store {:.0} MiB); recording one sync: {:.0} µs",
        prepared.as_secs_f64(),
        support::dir_mib(dir.path()),
        recording.as_secs_f64() * 1e6 / (m * syncs) as f64
    );
    println!("first page of 50 (or as asked):");
    for path in [
        "/api/v1/overview",
        "/api/v1/overview?sort=backlog",
        "/api/v1/overview?sort=last_success",
        "/api/v1/overview?sort=account&order=desc",
        "/api/v1/overview?state=needs_action",
        "/api/v1/overview?page=100&per_page=100",
    ] {
        let cpu = support::cpu_secs(&pid);
        let (median, p90, slowest, size) = time(&mut http, path, 50);
        let cpu = (support::cpu_secs(&pid) - cpu) * 1000.0 / 50.0;
        println!(
            "  {path:42} median {median:5.1} ms, 90% {p90:5.1} ms, slowest {slowest:5.1} ms; {cpu:4.0} CPU ms each ({size} bytes)"
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  (the machine's load average meanwhile: {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (one, _, _, size) = time(&mut http, "/api/v1/integrations", 1);
    println!(
        "  for comparison, GET /api/v1/integrations (every status): {one:.0} ms ({size} bytes)"
    );
    println!("  service RSS {:.0} MiB", support::mem_mib(&pid, "VmRSS"));
    svc.stop();
}
