//! Many tenants on one node: M accounts, each with one enabled integration and 10
//! new audit events, all pointing at one loopback receiver that only counts. The
//! release binary starts on that store; every integration's first tick delivers its
//! 10 events. Prints the time from start to all M × 10 delivered, the peak RSS, and
//! then — everything delivered, the integrations idle between ticks — the idle RSS
//! and CPU. Run: `cargo bench --bench fleet` (M from SIEMSYNC_BENCH_INTEGRATIONS,
//! default 10,000; several comma-separated values run one after the other).

mod support;

use chrono::Utc;
use siemsync::model::{AccountId, AuditEvent, IntegrationChange, IntegrationPolicy};
use siemsync::store::{Account, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Counts, Service};

const EVENTS_PER_ACCOUNT: usize = 10;

fn run(m: usize) {
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
            let it = IntegrationChange::from_json(&serde_json::json!({
                "name": "splunk", "hec_token": "00000000-0000-4000-8000-000000000000",
                "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true}))
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
    let svc = Service::spawn(dir.path(), &[("SIEMSYNC_SYNC_INTERVAL_SECS", "60")]);
    let pid = svc.pid().to_string();
    let listening = t0.elapsed();
    counts.wait_for(total, Duration::from_secs(600));
    let delivered = t0.elapsed();
    let peak = support::mem_mib(&pid, "VmHWM");
    let cpu_busy = support::cpu_secs(&pid);
    // Idle: everything delivered, no tick due for a while.
    std::thread::sleep(Duration::from_secs(5));
    let cpu0 = support::cpu_secs(&pid);
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (support::cpu_secs(&pid) - cpu0) / 10.0;
    let idle_rss = support::mem_mib(&pid, "VmRSS");
    assert_eq!(counts.events(), total, "nothing is delivered twice");
    println!(
        "fleet: {m} integrations × {EVENTS_PER_ACCOUNT} events (store prepared in {:.1} s): all {total} delivered {:.2} s after start \
         (listening after {:.2} s), {:.1} CPU s, peak RSS {peak:.0} MiB; idle: RSS {idle_rss:.0} MiB, CPU {:.1} %",
        prepared.as_secs_f64(),
        delivered.as_secs_f64(),
        listening.as_secs_f64(),
        cpu_busy,
        idle_cpu * 100.0
    );
    svc.stop();
}

fn main() {
    let ms = std::env::var("SIEMSYNC_BENCH_INTEGRATIONS").unwrap_or_else(|_| "10000".into());
    for m in ms.split(',') {
        run(m.trim().parse().expect("a number of integrations"));
    }
}
