//! End-to-end catch-up: N audit events already in the store, one integration, a
//! loopback HEC receiver that only reads, un-gzips and counts (so it is not the
//! bottleneck). The real path throughout: the release binary, collectors, encoding,
//! batching, gzip, awc, checkpoints made durable after every post.
//! Run: `cargo bench --bench catch_up` (N from SIEMSYNC_BENCH_EVENTS, default 1,000,000;
//! SIEMSYNC_POSTS_IN_FLIGHT is passed on to the service, to compare windows).
//! Afterwards it times gzip at each level of SIEMSYNC_BENCH_GZIP_LEVELS (default
//! "1,3,6") on the first batch's real HEC bytes: the CPU gzip costs per million
//! events at that level, beside the whole catch-up's.
//!
//! On PostgreSQL (`SIEMSYNC_BENCH_STORE=postgres`: its own throwaway PostgreSQL,
//! fsync and synchronous_commit on) also PostgreSQL's CPU per million events;
//! SIEMSYNC_BENCH_NODES (default 1) nodes share it. The backlog is spread over
//! SIEMSYNC_BENCH_ACCOUNTS accounts (default 1 on one node, 10 per node otherwise),
//! one integration each, so their shards spread over the nodes. The integrations
//! are created through the API once the nodes run (and, on PostgreSQL, once the
//! shards are spread), so the clock measures the catch-up, not the start.

mod support;

use chrono::Utc;
use serde_json::json;
use siemsync::model::{AccountId, AuditEvent};
use siemsync::store::Account;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::backend::{Backend, CpuMeter};
use support::{Counts, Http, ADMIN};

fn main() {
    let n = support::env_or("SIEMSYNC_BENCH_EVENTS", 1_000_000);
    let nodes = support::env_or("SIEMSYNC_BENCH_NODES", 1);
    let accounts = support::env_or(
        "SIEMSYNC_BENCH_ACCOUNTS",
        if nodes == 1 { 1 } else { 10 * nodes },
    );
    let Some(backend) = Backend::from_env() else {
        return;
    };
    let store = backend.open();
    let start = Instant::now();
    for a in 0..accounts {
        let account = AccountId::parse(&format!("acct-{a}")).expect("id");
        store
            .put_account(&account, &Account::enabled(Utc::now()))
            .expect("account");
        // Account a holds events a, a + accounts, a + 2 × accounts, …
        let mine: Vec<usize> = (a..n).step_by(accounts).collect();
        for chunk in mine.chunks(5000) {
            let events: Vec<AuditEvent> = chunk
                .iter()
                .map(|&i| AuditEvent::from_json(&support::audit_event(i), i, Utc::now()))
                .collect::<Result<_, _>>()
                .expect("valid");
            store.append_audit(&account, events).expect("append");
        }
    }
    backend.done_preparing(store);
    println!(
        "filled the {} store: {n} events in {accounts} account(s) in {:.1} s ({:.0} events/s, store only)",
        backend.name(),
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    let counts = Arc::new(Counts::default());
    let port = support::receiver(counts.clone());
    let svcs = backend.spawn_nodes(nodes, &[]);
    let meter = CpuMeter::start(&backend, &svcs);
    let load_before = support::load_average();
    let t0 = Instant::now();
    for a in 0..accounts {
        // Any node takes the change; the one holding the integration's shard runs it.
        let mut http = Http::connect(svcs[a % nodes].authority());
        let body = json!({"name": "bench", "hec_token": "00000000-0000-4000-8000-000000000000",
            "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true});
        let (status, answer) = http.request(
            "POST",
            &format!("/api/v1/accounts/acct-{a}/integrations"),
            ADMIN,
            &serde_json::to_vec(&body).expect("json"),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    }
    counts.wait_for(n as u64, Duration::from_secs(1800));
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.per_million(&backend, &svcs, n);
    // The first node's peak: memory stays flat while a backlog is delivered (issue 18).
    let peak = support::mem_mib(&svcs[0].pid().to_string(), "VmHWM");
    let mb = counts.bytes.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e6;
    println!(
        "catch-up on {}: {n} events, {nodes} node(s), {accounts} integration(s), in {secs:.2} s = {:.0} events/s, {:.1} MB/s of HEC JSON; CPU s per million events: {cpu}; peak RSS {peak:.0} MiB; {} posts, posts_in_flight {}; load average {load_before} before, {} after",
        backend.name(),
        n as f64 / secs,
        mb / secs,
        counts.posts.load(std::sync::atomic::Ordering::Relaxed),
        std::env::var("SIEMSYNC_POSTS_IN_FLIGHT").unwrap_or_else(|_| "as shipped".into()),
        support::load_average(),
    );
    for svc in svcs {
        svc.stop();
    }
    gzip_levels(&counts, cpu.siemsync);
}

/// Times gzip at each level on the first batch's HEC bytes, as the client compresses.
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
        // This thread's CPU alone.
        let cpu0 = support::cpu_secs("thread-self");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            // As the client gzips: raw deflate, then the trailer's CRC-32 by crc32fast
            // (flate2's own gzip writer computes it several times slower).
            let mut enc = flate2::write::DeflateEncoder::new(
                Vec::with_capacity(sample.len() / 4),
                flate2::Compression::new(level),
            );
            enc.write_all(&sample).expect("gzip");
            std::hint::black_box(crc32fast::hash(&sample));
            // 10 bytes of header, 8 of trailer (CRC-32 and length).
            zipped = enc.finish().expect("gzip").len() + 18;
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
