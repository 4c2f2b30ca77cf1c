//! Durable forwarding end to end (issue 18, item 1): N audit events (every field
//! set, every id new) posted over HTTP — 10,000 per request over 4 keep-alive
//! connections (SIEMSYNC_BENCH_PER_REQUEST, SIEMSYNC_BENCH_CONNECTIONS), the bodies
//! built before the clock — while one integration delivers them to the loopback
//! counting receiver. Each ingest answer means the batch was stored durably; the
//! clock stops when the receiver has every event. Prints events/s, the service's
//! CPU seconds per million events (and PostgreSQL's, on PostgreSQL) and its peak
//! RSS. The integration syncs every SIEMSYNC_BENCH_INTERVAL_SECS (default 0.1 s):
//! a pass goes on while there is more, so the interval only matters when delivery
//! has caught up with ingest.
//! Run: `cargo bench --bench forward` (N from SIEMSYNC_BENCH_EVENTS, default
//! 1,000,000; `SIEMSYNC_BENCH_STORE=postgres` with `--features test-hooks` on its
//! own throwaway PostgreSQL).

mod support;

use chrono::Utc;
use serde_json::json;
use siemsync::model::AccountId;
use siemsync::store::Account;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::backend::{Backend, CpuMeter};
use support::{Counts, Http, ADMIN};

fn main() {
    let n = support::env_or("SIEMSYNC_BENCH_EVENTS", 1_000_000);
    let per_request = support::env_or("SIEMSYNC_BENCH_PER_REQUEST", 10_000);
    let connections = support::env_or("SIEMSYNC_BENCH_CONNECTIONS", 4);
    let interval = std::env::var("SIEMSYNC_BENCH_INTERVAL_SECS").unwrap_or_else(|_| "0.1".into());
    let Some(backend) = Backend::from_env() else {
        return;
    };
    // The bodies are built first, so the client's JSON work is not timed.
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..n)
            .step_by(per_request)
            .map(|from| {
                let batch: Vec<_> = (from..(from + per_request).min(n))
                    .map(support::audit_event)
                    .collect();
                let path = "/api/v1/accounts/acct-0/audit".to_owned();
                (path, serde_json::to_vec(&batch).expect("json"))
            })
            .collect(),
    );
    let mb = bodies.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / 1e6;
    let store = backend.open();
    let account = AccountId::parse("acct-0").expect("id");
    store
        .put_account(&account, &Account::enabled(Utc::now()))
        .expect("account");
    backend.done_preparing(store);
    let counts = Arc::new(Counts::default());
    let port = support::receiver(counts.clone());
    // One account posts everything: its ingest burst must hold the whole run, or
    // the account's rate limit would be measured instead of the path.
    let burst = n.max(2_000_000).to_string();
    let svcs = backend.spawn_nodes(
        1,
        &[
            ("SIEMSYNC_ACCOUNT_INGEST_BURST", &burst),
            ("SIEMSYNC_SYNC_INTERVAL_SECS", &interval),
        ],
    );
    let authority = svcs[0].authority().to_owned();
    let mut http = Http::connect(&authority);
    let body = json!({"name": "bench", "hec_token": "00000000-0000-4000-8000-000000000000",
        "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true});
    let (status, answer) = http.request(
        "POST",
        "/api/v1/accounts/acct-0/integrations",
        ADMIN,
        &serde_json::to_vec(&body).expect("json"),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    // What the integration posts of its own first (its connection check, siemsync's
    // audit event of its creation) is not part of the run: wait until it is quiet.
    let baseline = settled(&counts, Duration::from_secs(1), Duration::from_secs(30));
    let meter = CpuMeter::start(&backend, &svcs);
    let load_before = support::load_average();
    let t0 = Instant::now();
    let accepted = support::post_all(&bodies, &Arc::new(vec![authority]), connections);
    let ingested = t0.elapsed().as_secs_f64();
    assert_eq!(accepted, n as u64, "every event is accepted once");
    counts.wait_for(baseline + n as u64, Duration::from_secs(1800));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.per_million(&backend, &svcs, n);
    let peak = support::mem_mib(&svcs[0].pid().to_string(), "VmHWM");
    println!(
        "forward on {}: {n} events posted ({per_request} per request, {connections} connections, {mb:.0} MB of JSON) and delivered in {secs:.2} s = {:.0} events/s (all ingested after {ingested:.2} s); CPU s per million events: {cpu}; {} posts to the receiver; peak RSS {peak:.0} MiB; sync interval {interval} s; load average {load_before} before, {} after",
        backend.name(),
        n as f64 / secs,
        counts.posts.load(Ordering::Relaxed),
        support::load_average(),
    );
    for svc in svcs {
        svc.stop();
    }
}

/// The receiver's event count once it has not moved for `quiet` (at most `limit`).
fn settled(counts: &Counts, quiet: Duration, limit: Duration) -> u64 {
    let start = Instant::now();
    let (mut last, mut since) = (counts.events(), Instant::now());
    while since.elapsed() < quiet && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
        let now = counts.events();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}
