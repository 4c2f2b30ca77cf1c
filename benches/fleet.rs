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

mod support;

use chrono::Utc;
use siemsync::model::{AccountId, AuditEvent, IntegrationChange, IntegrationPolicy};
use siemsync::store::{Account, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Counts, Service};

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

fn run(m: usize, interval: u64, ca: Option<&str>) {
    let counts = Arc::new(Counts::default());
    let port = support::receiver(counts.clone());
    let dir = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    {
        let store = Store::open(dir.path()).expect("store");
        let now = Utc::now();
        for a in 0..m {
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
        store.flush_now().expect("flush");
    }
    // The store's flush thread lets go of the database a moment after the last handle.
    std::thread::sleep(Duration::from_secs(1));
    let prepared = t0.elapsed();

    let total = (m * EVENTS_PER_ACCOUNT) as u64;
    let t0 = Instant::now();
    let every = interval.to_string();
    let svc = Service::spawn(dir.path(), &[("SIEMSYNC_SYNC_INTERVAL_SECS", &every)]);
    let pid = svc.pid().to_string();
    let listening = t0.elapsed();
    // The most descriptors open at once during the first tick, sampled every 10 ms.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak_fds = std::thread::spawn({
        let (pid, stop) = (pid.clone(), stop.clone());
        move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(fds(&pid));
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        }
    });
    counts.wait_for(total, Duration::from_secs(600));
    let delivered = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_fds = peak_fds.join().expect("fd sampler");
    let peak = support::mem_mib(&pid, "VmHWM");
    let cpu_busy = support::cpu_secs(&pid);
    // Idle: everything delivered, no tick due for a while.
    std::thread::sleep(Duration::from_secs(5));
    let cpu0 = support::cpu_secs(&pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (support::cpu_secs(&pid) - cpu0) / 10.0;
    let idle_rss = support::mem_mib(&pid, "VmRSS");
    let idle_fds = fds(&pid);
    assert_eq!(counts.events(), total, "nothing is delivered twice");
    println!(
        "fleet: {m} integrations × {EVENTS_PER_ACCOUNT} events{} (store prepared in {:.1} s): all {total} delivered {:.2} s after start \
         (listening after {:.2} s), {:.1} CPU s, peak RSS {peak:.0} MiB, at most {peak_fds} open fds; idle: RSS {idle_rss:.0} MiB, CPU {:.1} %, {idle_fds} open fds",
        if ca.is_some() { " (all with one private CA)" } else { "" },
        prepared.as_secs_f64(),
        delivered.as_secs_f64(),
        listening.as_secs_f64(),
        cpu_busy,
        idle_cpu * 100.0
    );
    // One whole interval from here: every integration's second tick falls in it
    // (each comes an interval after its first ended, all of which had by `delivered`).
    let from = Instant::now();
    let cpu0 = support::cpu_secs(&pid);
    let until = t0 + delivered + Duration::from_secs(interval + 5);
    std::thread::sleep(until.saturating_duration_since(from));
    let window = from.elapsed().as_secs_f64();
    let tick_cpu = support::cpu_secs(&pid) - cpu0;
    println!(
        "fleet: {m} integrations, the next {window:.0} s with every integration's tick of nothing new: {tick_cpu:.1} CPU s ({:.1} % of a core), \
         RSS {:.0} MiB, {} open fds",
        tick_cpu / window * 100.0,
        support::mem_mib(&pid, "VmRSS"),
        fds(&pid)
    );
    svc.stop();
}

fn main() {
    let ms = std::env::var("SIEMSYNC_BENCH_INTEGRATIONS").unwrap_or_else(|_| "10000".into());
    let interval = std::env::var("SIEMSYNC_BENCH_INTERVAL_SECS").map_or(60, |v| {
        v.parse()
            .expect("SIEMSYNC_BENCH_INTERVAL_SECS: whole seconds")
    });
    let ca = std::env::var("SIEMSYNC_BENCH_CA")
        .is_ok_and(|v| v == "1")
        .then(private_ca);
    for m in ms.split(',') {
        run(
            m.trim().parse().expect("a number of integrations"),
            interval,
            ca.as_deref(),
        );
    }
}
