//! Criterion micro-benchmarks of the hot paths, per event:
//! - `ingest/validate`: one platform audit event (JSON) → a validated `AuditEvent`;
//! - `ingest/read_body_1000`: a body of 1,000 such events → their stored forms (the
//!   path ingest takes);
//! - `encode/audit_stored_form`: → the parts stored in sled (done once, at ingest);
//! - `encode/audit_hec_bytes`: stored parts → the HEC bytes of one post (delivery);
//! - `encode/job`: a job snapshot → HEC bytes;
//! - `store/append_1000`: 1,000 events appended to sled (dedup window, chunks);
//! - `store/scan_1000`: 1,000 events read from a checkpoint and made HEC bytes.
//!
//! Run: `cargo bench --bench hot_paths` (figures per element in BENCHMARKS.md).

/// The service's allocator, so the figures are the service's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::{json, Value};
use siemsync::hec::encode::{self, AuditFrame, Envelope};
use siemsync::model::{AccountId, AuditEvent, JobSnapshot};
use siemsync::store::Store;
use std::hint::black_box;
use std::ops::ControlFlow;

fn platform_event(i: usize) -> Value {
    json!({"id": format!("evt-{i}"), "time": "2026-11-25T10:00:00.123Z", "connector": "m365-1",
           "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
           "metadata": {"target": "mailbox", "n": i}, "event": "Restore started"})
}

fn audit(i: usize) -> AuditEvent {
    AuditEvent::from_json(&platform_event(i), i, Utc::now()).expect("valid event")
}

fn envelope() -> Envelope {
    Envelope {
        host: "eu-1.backup.example.com".into(),
        index: Some("security".into()),
    }
}

fn ingest_and_encode(c: &mut Criterion) {
    let account = AccountId::parse("acme").expect("valid id");
    let now = Utc::now();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1));
    let body = serde_json::to_vec(&platform_event(7)).expect("json");
    g.bench_function("validate", |b| {
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&body)).expect("json");
            AuditEvent::from_json(&v, 0, now).expect("valid")
        })
    });
    g.finish();

    // The path ingest takes: a body of 1,000 platform events read straight into
    // their stored forms (freed on the same thread, as ingest now does).
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(1000));
    let body =
        serde_json::to_vec(&(0..1000).map(platform_event).collect::<Vec<_>>()).expect("json");
    g.bench_function("read_body_1000", |b| {
        b.iter(|| AuditEvent::read_body(black_box(&body), now).expect("valid"))
    });
    g.finish();

    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let ev = audit(7);
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    g.bench_function("audit_stored_form", |b| {
        b.iter(|| {
            head.clear();
            tail.clear();
            siemsync::model::audit_parts::audit_parts(
                &mut head,
                &mut tail,
                &account,
                black_box(&ev),
            );
        })
    });
    let frame = AuditFrame::new(&envelope(), &now);
    let time_ms = ev.time.timestamp_millis();
    let mut out = Vec::with_capacity(1 << 20);
    g.bench_function("audit_hec_bytes", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            frame.write(&mut out, time_ms, black_box(&head), black_box(&tail));
        })
    });
    let job = JobSnapshot::from_json(
        &json!({"job": "job-1", "type": "backup", "status": "in progress", "progress": 0.5,
                "description": "Backup of Microsoft 365", "start_time": "2026-11-25T09:00:00Z"}),
        0,
        now,
    )
    .expect("valid job");
    g.bench_function("job", |b| {
        b.iter(|| {
            if out.len() > 1 << 19 {
                out.clear();
            }
            encode::job(&mut out, &envelope(), &account, black_box(&job), &now);
        })
    });
    g.finish();
}

fn store(c: &mut Criterion) {
    let account = AccountId::parse("acme").expect("valid id");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store");
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(30);
    let mut next = 0;
    g.bench_function("append_1000", |b| {
        b.iter_batched(
            || {
                let batch: Vec<AuditEvent> = (next..next + 1000).map(audit).collect();
                next += 1000;
                batch
            },
            |batch| store.append_audit(&account, batch).expect("append"),
            BatchSize::PerIteration,
        )
    });
    let stored = store.heads(&account).expect("heads").audit;
    let frame = AuditFrame::new(&envelope(), &Utc::now());
    let mut out = Vec::with_capacity(1 << 20);
    let mut from = 0;
    g.bench_function("scan_1000", |b| {
        b.iter(|| {
            out.clear();
            let mut n = 0;
            store
                .audit_after(&account, from, |ev| {
                    frame.write(&mut out, ev.time_ms, ev.head, ev.tail);
                    n += 1;
                    if n == 1000 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("scan");
            from = (from + 1000) % stored.saturating_sub(1000).max(1);
        })
    });
    g.finish();
}

criterion_group!(benches, ingest_and_encode, store);
criterion_main!(benches);
