//! A long Splunk outage with steady ingest: afterwards every event is delivered, in
//! sequence order. Prints the service's RSS against the backlog's size.
//!
//! Short form in the suite; longer: `SIEMSYNC_OUTAGE_SECS=120 SIEMSYNC_OUTAGE_RATE=5000 cargo test --release --test outage -- --nocapture`.

use super::common::*;
use serde_json::json;
use siemsync::testkit::{Behaviour, HecServer};

const TOK: &str = "0u7a9e00-0000-4000-8000-000000000001";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")?
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[actix_rt::test]
async fn a_long_outage_delivers_everything_in_order_once_splunk_is_back() {
    // 8 s' worth in the suite (32,000 events): the backlog still grows fourfold
    // past the first memory sample (asserted below) and takes many posts to drain.
    let secs: u64 = std::env::var("SIEMSYNC_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let rate: usize = std::env::var("SIEMSYNC_OUTAGE_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let dir = tempfile::tempdir().unwrap();
    // Syncs every half second: each failed one re-sends a full post, and at the test
    // default of a tenth of a second those re-sends would take the CPU the ingest needs.
    let svc = Siemsync::spawn(
        dir.path(),
        &[
            ("SIEMSYNC_CACHE_MB", "32"),
            ("SIEMSYNC_SYNC_INTERVAL_SECS", "0.5"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::busy());
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    // Steady ingest while Splunk is down: `secs` seconds' worth at `rate` events a
    // second, in posts of a quarter second's worth. A fixed number of posts, not a
    // fixed time: the outage builds the same backlog however fast they go in, and
    // what makes it long is the failed syncs counted below, not the wall clock.
    let mut next = 0;
    let mut samples = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..secs * 4 {
        let n = rate / 4;
        api.post_audit("acme", &audit_events("e", next, n)).await;
        next += n;
        if next % (rate * 2) < n {
            samples.push((next, rss_kib(svc.pid())));
        }
    }
    samples.push((next, rss_kib(svc.pid())));
    let ingested = started.elapsed();
    // Splunk stays down for many sync attempts.
    history_until(&api, "acme", &id, "many failed syncs", |h| {
        h.iter().filter(|r| r["result"] == "failed").count() >= 5
    })
    .await;
    let st = api.status("acme", &id).await;
    assert_eq!(st["state"], "failing");
    assert_eq!(
        st["backlog"]["audit"].as_u64(),
        Some(next as u64 + 1),
        "{st:#}"
    );
    println!("outage: backlog events → service RSS");
    for (backlog, rss) in &samples {
        println!("  {backlog:>9} → {:>7.1} MiB", *rss as f64 / 1024.0);
    }
    hec.set_behaviour(Behaviour::Normal);
    let back = std::time::Instant::now();
    status_until(&api, "acme", &id, "the backlog drained", |s| {
        s["backlog"]["events"] == 0
    })
    .await;
    let peak_after = rss_kib(svc.pid());
    println!(
        "  ingest {:.1} s, outage {:.1} s, delivery {:.1} s",
        ingested.as_secs_f64(),
        (back - started - ingested).as_secs_f64(),
        back.elapsed().as_secs_f64()
    );
    println!("  after delivery: {:.1} MiB", peak_after as f64 / 1024.0);
    let want: Vec<String> = (0..next).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        audit_ids(&hec.events()),
        want,
        "every event once, in sequence order"
    );
    // Memory against backlog is printed, not asserted: with sled 0.34 it grows by
    // about 0.7 KiB per stored event (see RELIABILITY.md and benches/store_memory.rs).
    let (first_backlog, first_rss) = samples[0];
    let (last_backlog, last_rss) = *samples.last().unwrap();
    println!(
        "  backlog {first_backlog} → {last_backlog} events, RSS {:.1} → {:.1} MiB",
        first_rss as f64 / 1024.0,
        last_rss as f64 / 1024.0
    );
    assert!(
        last_backlog >= 4 * first_backlog,
        "the outage built a real backlog"
    );
}
