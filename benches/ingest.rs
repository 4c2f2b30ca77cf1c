//! End-to-end ingest: the release binary, and 1,000,000 audit events (every field
//! set, every id new) posted in batches of 1,000 over 4 keep-alive connections
//! (SIEMSYNC_BENCH_CONNECTIONS), as
//! the platform would. Each answer means the batch was validated, stored and made
//! durable. Prints events/s, the service's CPU seconds per million events and its
//! peak RSS. Run: `cargo bench --bench ingest` (N from SIEMSYNC_BENCH_EVENTS).
//!
//! On PostgreSQL (`SIEMSYNC_BENCH_STORE=postgres`: its own throwaway PostgreSQL,
//! fsync and synchronous_commit on) also PostgreSQL's CPU per million events;
//! SIEMSYNC_BENCH_NODES (default 1) nodes share it, and the batches go round-robin
//! through them (every client holds a connection to each node). The batches go to
//! SIEMSYNC_BENCH_ACCOUNTS accounts in turn (default 1).

mod support;

use std::sync::Arc;
use std::time::Instant;
use support::backend::{Backend, CpuMeter};

const PER_REQUEST: usize = 1_000;

fn main() {
    let connections = support::env_or("SIEMSYNC_BENCH_CONNECTIONS", 4);
    let n = support::env_or("SIEMSYNC_BENCH_EVENTS", 1_000_000);
    let nodes = support::env_or("SIEMSYNC_BENCH_NODES", 1);
    let accounts = support::env_or("SIEMSYNC_BENCH_ACCOUNTS", 1);
    let Some(backend) = Backend::from_env() else {
        return;
    };
    // The bodies are built first, so the client's JSON work is not timed.
    let bodies: Arc<Vec<(String, Vec<u8>)>> = Arc::new(
        (0..n)
            .step_by(PER_REQUEST)
            .enumerate()
            .map(|(b, from)| {
                let batch: Vec<_> = (from..(from + PER_REQUEST).min(n))
                    .map(support::audit_event)
                    .collect();
                let path = format!("/api/v1/accounts/acct-{}/audit", b % accounts);
                (path, serde_json::to_vec(&batch).expect("json"))
            })
            .collect(),
    );
    let mb = bodies.iter().map(|(_, b)| b.len()).sum::<usize>() as f64 / 1e6;
    // The store is made and let go of as a tool would, so the nodes find it ready.
    backend.done_preparing(backend.open());
    // One account may post everything: its ingest burst (2,000,000 by default) must
    // hold the whole run, or a larger N would meet the account's rate limit instead
    // of measuring the ingest path.
    let burst = n.max(2_000_000).to_string();
    let svcs = backend.spawn_nodes(nodes, &[("SIEMSYNC_ACCOUNT_INGEST_BURST", &burst)]);
    let authorities: Arc<Vec<String>> =
        Arc::new(svcs.iter().map(|s| s.authority().to_owned()).collect());
    let meter = CpuMeter::start(&backend, &svcs);
    let load_before = support::load_average();
    let t0 = Instant::now();
    let accepted = support::post_all(&bodies, &authorities, connections);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = meter.per_million(&backend, &svcs, n);
    assert_eq!(accepted, n as u64, "every event is accepted once");
    let peak = svcs
        .iter()
        .map(|s| support::mem_mib(&s.pid().to_string(), "VmHWM"))
        .fold(0.0, f64::max);
    println!(
        "ingest on {}: {n} events, {nodes} node(s), {accounts} account(s), over {connections} connections in {secs:.2} s = {:.0} events/s ({:.1} MB/s of request JSON); CPU s per million events: {cpu}; peak RSS {peak:.0} MiB (the largest node); load average {load_before} before, {} after",
        backend.name(),
        n as f64 / secs,
        mb / secs,
        support::load_average(),
    );
    for svc in svcs {
        svc.stop();
    }
}
