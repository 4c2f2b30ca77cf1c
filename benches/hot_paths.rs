//! Hot-path figures, printed: audit event → HEC bytes, job snapshot → HEC bytes,
//! store append, and store scan from a checkpoint. Run with `cargo bench --bench hot_paths`.
//! (Issue 7 replaces this with criterion benches and end-to-end programs.)

use chrono::Utc;
use serde_json::json;
use siemsync::hec::encode::{self, Envelope};
use siemsync::model::{AccountId, AuditEvent, JobSnapshot};
use siemsync::store::Store;
use std::ops::ControlFlow;
use std::time::Instant;

fn audit(i: usize) -> AuditEvent {
    AuditEvent::from_json(
        &json!({"id": format!("evt-{i}"), "time": "2026-11-25T10:00:00.123Z", "connector": "m365-1",
                "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
                "metadata": {"target": "mailbox", "n": i}, "event": "Restore started"}),
        i,
        Utc::now(),
    )
    .expect("valid event")
}

fn report(what: &str, n: usize, bytes: usize, start: Instant) {
    let s = start.elapsed().as_secs_f64();
    println!(
        "{what:<28} {n:>9} in {s:>7.3} s  {:>12.0} events/s  {:>8.1} MB/s",
        n as f64 / s,
        bytes as f64 / s / 1e6
    );
}

fn main() {
    let n = 200_000;
    let account = AccountId::parse("acme").expect("valid id");
    let env = Envelope {
        host: "eu-1.backup.example.com".into(),
        index: None,
    };
    let now = Utc::now();
    let events: Vec<AuditEvent> = (0..n).map(audit).collect();

    let start = Instant::now();
    let mut out = Vec::with_capacity(1 << 20);
    let mut total = 0;
    for ev in &events {
        encode::audit(&mut out, &env, &account, ev, &now);
        if out.len() > 1 << 20 {
            total += out.len();
            out.clear();
        }
    }
    report("encode audit", n, total + out.len(), start);

    let job = JobSnapshot::from_json(
        &json!({"job": "job-1", "type": "backup", "status": "in progress", "progress": 0.5,
                "description": "Backup of Microsoft 365", "start_time": "2026-11-25T09:00:00Z"}),
        0,
        now,
    )
    .expect("valid job");
    let start = Instant::now();
    out.clear();
    let mut total = 0;
    for _ in 0..n {
        encode::job(&mut out, &env, &account, &job, &now);
        if out.len() > 1 << 20 {
            total += out.len();
            out.clear();
        }
    }
    report("encode job", n, total + out.len(), start);

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let start = Instant::now();
    for chunk in events.chunks(1000) {
        store
            .append_audit(&account, chunk.to_vec())
            .expect("append");
    }
    store.flush_now().expect("flush");
    report("store append (1000/batch)", n, 0, start);

    // Delivery's read path: scan from a checkpoint and complete each stored event
    // into its HEC bytes.
    let start = Instant::now();
    let mut seen = 0;
    let frame = encode::AuditFrame::new(&env, &now);
    out.clear();
    let mut total = 0;
    store
        .audit_after(&account, (n / 2) as u64, |ev| {
            frame.write(&mut out, ev.time_ms, ev.head, ev.tail);
            if out.len() > 1 << 20 {
                total += out.len();
                out.clear();
            }
            seen += 1;
            ControlFlow::Continue(())
        })
        .expect("scan");
    report("store scan → HEC bytes", seen, total + out.len(), start);
}
