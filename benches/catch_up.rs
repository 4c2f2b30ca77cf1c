//! End-to-end catch-up: N audit events already in the store, one integration, a
//! loopback HEC receiver that only reads, un-gzips and counts (so it is not the
//! bottleneck). The real path throughout: collectors, encoding, batching, gzip,
//! awc, checkpoints made durable after every post.
//! Run: `cargo bench --bench catch_up` (N from SIEMSYNC_BENCH_EVENTS, default 1,000,000).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use chrono::Utc;
use serde_json::json;
use siemsync::config::Config;
use siemsync::model::{AccountId, AuditEvent, IntegrationChange, IntegrationPolicy};
use siemsync::store::{Account, Store};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Counts {
    events: AtomicU64,
    bytes: AtomicU64,
}

async fn receive(req: HttpRequest, body: web::Bytes, counts: web::Data<Counts>) -> HttpResponse {
    let mut plain = Vec::new();
    let events = if req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v == "gzip")
    {
        let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain);
        plain.iter().filter(|b| **b == b'\n').count()
    } else {
        body.iter().filter(|b| **b == b'\n').count()
    };
    counts.events.fetch_add(events as u64, Ordering::Relaxed);
    counts
        .bytes
        .fetch_add(plain.len().max(body.len()) as u64, Ordering::Relaxed);
    HttpResponse::Ok().json(json!({"text": "Success", "code": 0}))
}

fn receiver(counts: Arc<Counts>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let data = web::Data::from(counts);
            let srv = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .app_data(web::PayloadConfig::new(64 << 20))
                    .default_service(web::to(receive))
            })
            .workers(1)
            .disable_signals()
            .bind(("127.0.0.1", 0))
            .expect("bind");
            tx.send(srv.addrs()[0].port()).expect("port");
            actix_rt::spawn(srv.run());
        });
        sys.run().ok();
    });
    rx.recv().expect("receiver port")
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

fn main() {
    let n: usize = std::env::var("SIEMSYNC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let account = AccountId::parse("acme").expect("id");
    let store = Store::open(dir.path()).expect("store");
    let start = Instant::now();
    for from in (0..n).step_by(5000) {
        let events: Vec<AuditEvent> = (from..(from + 5000).min(n))
            .map(|i| {
                AuditEvent::from_json(
                    &json!({"id": format!("evt-{i}"), "time": "2026-11-25T10:00:00.123Z", "connector": "m365-1",
                            "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
                            "metadata": {"target": "mailbox", "n": i}, "event": "Restore started"}),
                    i,
                    Utc::now(),
                )
                .expect("valid")
            })
            .collect();
        store.append_audit(&account, events).expect("append");
    }
    store.flush_now().expect("flush");
    println!(
        "filled the store: {n} events in {:.1} s ({:.0} events/s, store only)",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64()
    );
    let counts = Arc::new(Counts::default());
    let port = receiver(counts.clone());
    store
        .put_account(
            &account,
            &Account {
                siem_enabled: true,
                updated_at: Utc::now(),
            },
        )
        .expect("account");
    let it = IntegrationChange::from_json(
        &json!({"name": "bench", "hec_token": "00000000-0000-4000-8000-000000000000",
        "hec_uri": format!("http://127.0.0.1:{port}"), "sources": ["audit"], "enabled": true}),
    )
    .and_then(|c| c.create(account.clone(), Utc::now(), IntegrationPolicy::default()))
    .expect("integration");
    store.put_integration(&it).expect("put");
    store.flush_now().expect("flush");
    drop(store);
    // The store's flush thread lets go of the database a moment after the last handle.
    std::thread::sleep(Duration::from_secs(1));

    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/siemsync.toml"))
            .expect("config");
    let data = dir.path().display().to_string();
    let config = Config::from_toml(&shipped, Path::new("bench"), |k| match k {
        "SIEMSYNC_LISTEN" => Some("127.0.0.1:0".into()),
        "SIEMSYNC_DATA_DIR" => Some(data.clone()),
        "SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS" => Some("true".into()),
        _ => None,
    })
    .expect("config");
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    actix_rt::System::new().block_on(async move {
        let _svc = siemsync::start(config).expect("start");
        while counts.events.load(Ordering::Relaxed) < n as u64 {
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            assert!(t0.elapsed() < Duration::from_secs(1800), "catch-up did not finish");
        }
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu0;
        let mb = counts.bytes.load(Ordering::Relaxed) as f64 / 1e6;
        println!(
            "catch-up: {n} events in {secs:.2} s = {:.0} events/s, {:.1} MB/s of HEC JSON, {:.2} CPU s per million events (receiver included)",
            n as f64 / secs,
            mb / secs,
            cpu / (n as f64 / 1e6)
        );
    });
}
