//! Many tenants on one node: M accounts, each with one enabled integration and 10
//! new audit events, all pointing at one loopback receiver that only counts. The
//! release binary starts on that store; every integration's first tick delivers its
//! 10 events. Prints the time from start to all M × 10 delivered, the peak RSS, and
//! then — everything delivered, the integrations idle between ticks — the idle RSS
//! and CPU, and the open file descriptors; last the CPU over one whole sync
//! interval after that, its tick of every integration (nothing new to send)
//! included. Run: `cargo bench --bench fleet` (M from SIEMSYNC_BENCH_INTEGRATIONS,
//! default 10,000; several comma-separated values run one after the other; the
//! interval from SIEMSYNC_BENCH_INTERVAL_SECS, default 60; SIEMSYNC_BENCH_CA=1 gives
//! every integration the same private CA in `ca_pem`, as a TLS trust setting other
//! than the default).
//!
//! On PostgreSQL (`SIEMSYNC_BENCH_STORE=postgres`: its own throwaway PostgreSQL,
//! fsync and synchronous_commit on) SIEMSYNC_BENCH_NODES nodes (default 1) start
//! at once on the prepared store; the time to all delivered includes their
//! spreading the shards. Also printed: PostgreSQL's CPU, and its transactions
//! (`pg_stat_database`: commits and rollbacks) per second while idle — the lease
//! rounds, heartbeats and safety-net re-reads — and over the next interval. The
//! idle window is SIEMSYNC_BENCH_IDLE_SECS (default 10).

mod support;

use chrono::{DateTime, Utc};
use siemsync::model::{AccountId, AuditEvent, IntegrationChange, IntegrationPolicy};
use siemsync::store::{Account, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::backend::{nodes_cpu, Backend};
use support::Counts;

const EVENTS_PER_ACCOUNT: usize = 10;

/// A private CA's certificate, in PEM.
fn private_ca() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.self_signed(&key).expect("CA").pem()
}

/// The open file descriptors of process `pid`.
fn fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Open fds of all the nodes together.
fn all_fds(pids: &[String]) -> usize {
    pids.iter().map(|p| fds(p)).sum()
}

/// Transactions per second of the benchmark's database between two readings (none on sled).
fn per_sec(a: Option<(u64, u64)>, b: Option<(u64, u64)>, secs: f64) -> String {
    match (a, b) {
        (Some((c0, r0)), Some((c1, r1))) => format!(
            "; postgres: {:.1} commits/s, {:.1} rollbacks/s",
            (c1 - c0) as f64 / secs,
            (r1 - r0) as f64 / secs
        ),
        _ => String::new(),
    }
}

/// Account `a`: enabled, one integration to the receiver, 10 new audit events.
fn prepare_account(store: &Store, a: usize, port: u16, ca: Option<&str>, now: DateTime<Utc>) {
    let account = AccountId::parse(&format!("tenant-{a}")).expect("id");
    store
        .put_account(&account, &Account::enabled(now))
        .expect("account");
    let mut body = serde_json::json!({
        "name": "splunk", "hec_token": "00000000-0000-4000-8000-000000000000",
        "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true});
    if let Some(pem) = ca {
        body["ca_pem"] = pem.into();
    }
    let it = IntegrationChange::from_json(&body)
        .and_then(|c| c.create(account.clone(), now, IntegrationPolicy::default()))
        .expect("integration");
    store.put_integration(&it, None).expect("put");
    let events = (0..EVENTS_PER_ACCOUNT)
        .map(|i| AuditEvent::from_json(&support::audit_event(a * 100 + i), i, now))
        .collect::<Result<Vec<_>, _>>()
        .expect("valid");
    store.append_audit(&account, events).expect("append");
}

fn run(m: usize, nodes: usize, interval: u64, idle: u64, ca: Option<&str>) {
    let Some(backend) = Backend::from_env() else {
        return;
    };
    let counts = Arc::new(Counts::default());
    let port = support::receiver(counts.clone());
    let t0 = Instant::now();
    let store = backend.open();
    let now = Utc::now();
    // Four writers: on PostgreSQL each write is a committed transaction (a round
    // trip and an fsync), and one writer would take minutes for 10,000 accounts.
    std::thread::scope(|s| {
        for w in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                for a in (w..m).step_by(4) {
                    prepare_account(&store, a, port, ca, now);
                }
            });
        }
    });
    backend.done_preparing(store);
    let prepared = t0.elapsed();

    let total = (m * EVENTS_PER_ACCOUNT) as u64;
    let t0 = Instant::now();
    let every = interval.to_string();
    let svcs = backend.spawn_nodes(nodes, &[("SIEMSYNC_SYNC_INTERVAL_SECS", &every)]);
    let pids: Vec<String> = svcs.iter().map(|s| s.pid().to_string()).collect();
    let listening = t0.elapsed();
    // The most descriptors open at once during the first tick, sampled every 10 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak_fds = std::thread::spawn({
        let (pids, stop) = (pids.clone(), stop.clone());
        move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(all_fds(&pids));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        }
    });
    counts.wait_for(total, Duration::from_secs(600));
    let delivered = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_fds = peak_fds.join().expect("fd sampler");
    let mib = |field: &str| -> String {
        pids.iter()
            .map(|p| format!("{:.0}", support::mem_mib(p, field)))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let cpu_of = |cpus: Vec<f64>| cpus.iter().sum::<f64>();
    let peak = mib("VmHWM");
    let cpu_busy = cpu_of(nodes_cpu(&svcs));
    let pg_busy = backend.postgres_cpu();
    // Idle: everything delivered, no tick due for a while.
    std::thread::sleep(Duration::from_secs(5));
    let (cpu0, pg0, tx0) = (
        cpu_of(nodes_cpu(&svcs)),
        backend.postgres_cpu(),
        backend.transactions(),
    );
    std::thread::sleep(Duration::from_secs(idle));
    let idle_secs = idle as f64;
    let idle_cpu = (cpu_of(nodes_cpu(&svcs)) - cpu0) / idle_secs;
    let idle_pg = (backend.postgres_cpu() - pg0) / idle_secs;
    let idle_tx = per_sec(tx0, backend.transactions(), idle_secs);
    let idle_rss = mib("VmRSS");
    let idle_fds = all_fds(&pids);
    assert_eq!(counts.events(), total, "nothing is delivered twice");
    println!(
        "fleet on {}: {m} integrations × {EVENTS_PER_ACCOUNT} events{}, {nodes} node(s) (store prepared in {:.1} s): all {total} delivered {:.2} s after start \
         (listening{} after {:.2} s), {:.1} CPU s (postgres {pg_busy:.1}), peak RSS {peak} MiB, at most {peak_fds} open fds; \
         idle over {idle} s: RSS {idle_rss} MiB, CPU {:.1} % (postgres {:.1} %), {idle_fds} open fds{idle_tx}; load average {}",
        backend.name(),
        if ca.is_some() { " (all with one private CA)" } else { "" },
        prepared.as_secs_f64(),
        delivered.as_secs_f64(),
        if nodes > 1 { ", the shards spread," } else { "" },
        listening.as_secs_f64(),
        cpu_busy,
        idle_cpu * 100.0,
        idle_pg * 100.0,
        support::load_average(),
    );
    // One whole interval from here: every integration's second tick falls in it
    // (each comes an interval after its first ended, all of which had by `delivered`).
    let from = Instant::now();
    let (cpu0, pg0, tx0) = (
        cpu_of(nodes_cpu(&svcs)),
        backend.postgres_cpu(),
        backend.transactions(),
    );
    let until = t0 + delivered + Duration::from_secs(interval + 5);
    std::thread::sleep(until.saturating_duration_since(from));
    let window = from.elapsed().as_secs_f64();
    let tick_cpu = cpu_of(nodes_cpu(&svcs)) - cpu0;
    let tick_pg = backend.postgres_cpu() - pg0;
    println!(
        "fleet on {}: {m} integrations, the next {window:.0} s with every integration's tick of nothing new: {tick_cpu:.1} CPU s ({:.1} % of a core; postgres {tick_pg:.1} s), \
         RSS {} MiB, {} open fds{}; load average {}",
        backend.name(),
        tick_cpu / window * 100.0,
        mib("VmRSS"),
        all_fds(&pids),
        per_sec(tx0, backend.transactions(), window),
        support::load_average(),
    );
    for svc in svcs {
        svc.stop();
    }
}

fn main() {
    let ms = std::env::var("SIEMSYNC_BENCH_INTEGRATIONS").unwrap_or_else(|_| "10000".into());
    let interval = std::env::var("SIEMSYNC_BENCH_INTERVAL_SECS").map_or(60, |v| {
        v.parse()
            .expect("SIEMSYNC_BENCH_INTERVAL_SECS: whole seconds")
    });
    let nodes = support::env_or("SIEMSYNC_BENCH_NODES", 1);
    let idle = support::env_or("SIEMSYNC_BENCH_IDLE_SECS", 10) as u64;
    let ca = std::env::var("SIEMSYNC_BENCH_CA")
        .is_ok_and(|v| v == "1")
        .then(private_ca);
    for m in ms.split(',') {
        run(
            m.trim().parse().expect("a number of integrations"),
            nodes,
            interval,
            idle,
            ca.as_deref(),
        );
    }
}
