//! A first measurement of the PostgreSQL store's audit ingest (not yet through the
//! HTTP service): N audit events (every field set, every id new) appended in batches
//! of 1,000 by C concurrent writers, spread over A accounts, each append committed
//! (fsync on, synchronous_commit on) before the next. Prints events/s and the CPU
//! seconds per million events of this process (the store: validation excluded,
//! encoding and dedup included) and of PostgreSQL's processes; then reads everything
//! back, as catch-up would. Runs its own throwaway PostgreSQL.
//!
//! Run: `cargo bench --features test-hooks --bench pg_ingest`
//! (SIEMSYNC_BENCH_EVENTS, SIEMSYNC_BENCH_WRITERS, SIEMSYNC_BENCH_ACCOUNTS).

mod support;

use chrono::Utc;
use siemsync::model::audit_parts::EncodedAudit;
use siemsync::model::{AccountId, AuditEvent};
use siemsync::store::postgres::{PgOptions, PgStore};
use siemsync::testkit::postgres::{ClusterOptions, PgCluster};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

const PER_REQUEST: usize = 1_000;

fn main() {
    let n = support::env_or("SIEMSYNC_BENCH_EVENTS", 1_000_000);
    let writers = support::env_or("SIEMSYNC_BENCH_WRITERS", 8);
    let accounts = support::env_or("SIEMSYNC_BENCH_ACCOUNTS", 8);
    let Some(pg) = PgCluster::start_or_skip(ClusterOptions {
        durable: true,
        ..Default::default()
    }) else {
        return;
    };
    let db = pg.create_database().expect("database");
    let postmaster = pg.primary_pid().expect("postmaster pid");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut options = PgOptions::new(pg.url(&db), "bench");
    options.pool_size = writers.max(4);
    let store = rt.block_on(PgStore::connect(options)).expect("connect");
    // The requests are validated first, so the platform's JSON work is not timed.
    let now = Utc::now();
    type Batch = std::sync::Mutex<Option<Vec<EncodedAudit>>>;
    let batches: Arc<Vec<(AccountId, Batch)>> = Arc::new(
        (0..n)
            .step_by(PER_REQUEST)
            .enumerate()
            .map(|(b, from)| {
                let body = serde_json::to_vec(
                    &(from..(from + PER_REQUEST).min(n))
                        .map(support::audit_event)
                        .collect::<Vec<_>>(),
                )
                .expect("json");
                let account = AccountId::parse(&format!("acct-{}", b % accounts)).expect("id");
                let events = AuditEvent::read_body(&body, now).expect("valid");
                (account, std::sync::Mutex::new(Some(events)))
            })
            .collect(),
    );
    let me = std::process::id().to_string();
    let (cpu0, pg0) = (support::cpu_secs(&me), support::postgres_cpu(postmaster));
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let accepted: usize = rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|_| {
                let (store, batches, next) = (store.clone(), batches.clone(), next.clone());
                tokio::spawn(async move {
                    let mut accepted = 0;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((account, events)) = batches.get(i) else {
                            return accepted;
                        };
                        // Taken, not cloned: copying the events is not the store's work.
                        let events = events.lock().expect("batch").take().expect("once");
                        let out = store.append_audit(account, events).await.expect("append");
                        accepted += out.accepted;
                    }
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("writer");
        }
        total
    });
    let secs = t0.elapsed().as_secs_f64();
    let (cpu, pg_cpu) = (
        support::cpu_secs(&me) - cpu0,
        support::postgres_cpu(postmaster) - pg0,
    );
    assert_eq!(accepted, n, "every event is accepted once");
    let millions = n as f64 / 1e6;
    println!(
        "pg ingest: {n} events, {writers} writers, {accounts} accounts, batches of {PER_REQUEST}: {secs:.2} s = {:.0} events/s; CPU s per million events: siemsync {:.2}, postgres {:.2}",
        n as f64 / secs,
        cpu / millions,
        pg_cpu / millions,
    );
    // Reading it all back, a page of chunks at a time, as a catch-up would.
    let (cpu0, pg0) = (support::cpu_secs(&me), support::postgres_cpu(postmaster));
    let t0 = Instant::now();
    let read: u64 = rt.block_on(async {
        let tasks: Vec<_> = (0..accounts)
            .map(|a| {
                let store = store.clone();
                tokio::spawn(async move {
                    let account = AccountId::parse(&format!("acct-{a}")).expect("id");
                    let (mut count, mut bytes) = (0u64, 0usize);
                    store
                        .audit_after(&account, 0, |ev| {
                            count += 1;
                            bytes += ev.head.len() + ev.tail.len();
                            std::ops::ControlFlow::Continue(())
                        })
                        .await
                        .expect("read");
                    count
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("reader");
        }
        total
    });
    let secs = t0.elapsed().as_secs_f64();
    let (cpu, pg_cpu) = (
        support::cpu_secs(&me) - cpu0,
        support::postgres_cpu(postmaster) - pg0,
    );
    assert_eq!(read, n as u64);
    println!(
        "pg read-back: {read} events over {accounts} readers in {secs:.2} s = {:.0} events/s; CPU s per million events: siemsync {:.2}, postgres {:.2}",
        read as f64 / secs,
        cpu / millions,
        pg_cpu / millions,
    );
    drop(store);
    drop(rt);
}
