//! How the process's memory follows the number of stored events (the backlog lives
//! in sled): appends audit events in batches of 8,000 with a 32 MiB page cache and
//! prints RSS every 40,000. Run: `cargo bench --bench store_memory`
//! (N from SIEMSYNC_BENCH_EVENTS, default 400,000).
//! Measured (2026-11-26, 2 cores, release): RSS rises while sled's cache fills, then
//! stays flat — between 150 and 175 MiB from 240,000 to 1,200,000 events.

/// The service's allocator, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::Utc;
use serde_json::json;
use siemsync::model::{AccountId, AuditEvent};
use siemsync::store::{Store, StoreOptions};
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}
fn main() {
    // One line per 40,000 events: how RSS grows with what the store holds.
    let n: usize = std::env::var("SIEMSYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_options(
        dir.path(),
        &StoreOptions {
            secret_key: None,
            cache_bytes: 32 << 20,
            dedup_window: siemsync::store::DEFAULT_DEDUP_WINDOW,
            ..Default::default()
        },
    )
    .unwrap();
    let a = AccountId::parse("acme").unwrap();
    for round in 0..n.div_ceil(8000) {
        let evs: Vec<AuditEvent> = (0..8000).map(|i| AuditEvent::from_json(&json!({"id": format!("e-{round}-{i}"), "time": "2026-11-25T10:00:00Z", "event": format!("event number {i}"), "user": "u@example.com", "metadata": {"n": i}}), i, Utc::now()).unwrap()).collect();
        store.append_audit(&a, evs).unwrap();
        store.flush_now().unwrap();
        if (round + 1) % 5 == 0 {
            println!("{} events: {} MiB", (round + 1) * 8000, rss() / 1024);
        }
    }
}
