//! End-to-end ingest: the release binary, and 1,000,000 audit events (every field
//! set, every id new) posted in batches of 1,000 over 4 keep-alive connections
//! (SIEMSYNC_BENCH_CONNECTIONS), as
//! the platform would. Each answer means the batch was validated, stored and made
//! durable. Prints events/s, the service's CPU seconds per million events and its
//! peak RSS. Run: `cargo bench --bench ingest` (N from SIEMSYNC_BENCH_EVENTS).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use support::{Http, Service, INGEST};

const PER_REQUEST: usize = 1_000;

fn main() {
    let connections: usize = std::env::var("SIEMSYNC_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let n: usize = std::env::var("SIEMSYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    // The bodies are built first, so the client's JSON work is not timed.
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..n)
            .step_by(PER_REQUEST)
            .map(|from| {
                let batch: Vec<_> = (from..(from + PER_REQUEST).min(n))
                    .map(support::audit_event)
                    .collect();
                serde_json::to_vec(&batch).expect("json")
            })
            .collect(),
    );
    let mb = bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let dir = tempfile::tempdir().expect("temp dir");
    // One account posts everything: its ingest burst (2,000,000 by default) must
    // hold the whole run, or a larger N would meet the account's rate limit instead
    // of measuring the ingest path.
    let burst = n.max(2_000_000).to_string();
    let svc = Service::spawn(dir.path(), &[("SIEMSYNC_ACCOUNT_INGEST_BURST", &burst)]);
    let pid = svc.pid().to_string();
    let cpu0 = support::cpu_secs(&pid);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let (bodies, next) = (bodies.clone(), next.clone());
            let authority = svc.authority().to_owned();
            std::thread::spawn(move || {
                let mut http = Http::connect(&authority);
                let mut accepted = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let (status, answer) =
                        http.request("POST", "/api/v1/accounts/acme/audit", INGEST, body);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
                    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
                    accepted += v["accepted"].as_u64().expect("accepted");
                }
                accepted
            })
        })
        .collect();
    let accepted: u64 = clients.into_iter().map(|c| c.join().expect("client")).sum();
    let secs = t0.elapsed().as_secs_f64();
    let cpu = support::cpu_secs(&pid) - cpu0;
    assert_eq!(accepted, n as u64, "every event is accepted once");
    println!(
        "ingest: {n} events over {connections} connections in {secs:.2} s = {:.0} events/s ({:.1} MB/s of request JSON), {:.2} service CPU s per million events, peak RSS {:.0} MiB",
        n as f64 / secs,
        mb / secs,
        cpu / (n as f64 / 1e6),
        support::mem_mib(&pid, "VmHWM")
    );
    svc.stop();
}
