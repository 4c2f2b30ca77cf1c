//! Noisy neighbours: 200 integrations on one service, of which 20 endpoints accept
//! connections and never answer, 20 answer 503, and one has a large backlog. The
//! other 159 must still get each event within 10 s (p99), far below the hanging
//! Splunk's 60 s request timeout that would hold them up were they not isolated.
//!
//! Short form in the suite; full size:
//! `SIEMSYNC_ISOLATION_BACKLOG=1000000 cargo test --release --test isolation -- --nocapture`.

use crate::common::*;
use serde_json::json;
use siemsync::testkit::{Behaviour, HecServer, HecServerConfig};
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn token(i: usize) -> String {
    format!("{i:08}-0000-4000-8000-000000000000")
}

#[actix_rt::test]
async fn broken_and_busy_neighbours_do_not_delay_the_others() {
    let backlog: usize = std::env::var("SIEMSYNC_ISOLATION_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[("SIEMSYNC_REQUEST_TIMEOUT_SECS", "60")]);
    let api = svc.api();
    let all_tokens = HecServerConfig {
        tokens: (0..200).map(token).collect(),
        ..HecServerConfig::token("x")
    };
    let hanging = HecServer::start_with(all_tokens.clone());
    hanging.set_behaviour(Behaviour::Hang);
    let busy = HecServer::start_with(all_tokens.clone());
    busy.set_behaviour(Behaviour::Fail {
        status: 503,
        code: Some(9),
        text: "Server is busy".into(),
    });
    let heavy = HecServer::start_with(all_tokens.clone());
    let normal = HecServer::start_with(all_tokens);
    // Accounts 0–19 hang, 20–39 are busy, 40 has the backlog, 41–199 are the neighbours to protect.
    let server = |i: usize| match i {
        0..=19 => &hanging,
        20..=39 => &busy,
        40 => &heavy,
        _ => &normal,
    };
    for chunk in audit_events("h", 0, backlog)
        .as_array()
        .unwrap()
        .chunks(10_000)
    {
        // The backlog is there before its integration starts.
        api.enable_account("n40").await;
        api.post_audit("n40", &json!(chunk)).await;
    }
    for i in 0..200 {
        let account = format!("n{i}");
        api.enable_account(&account).await;
        create_integration(
            &api,
            &account,
            json!({"hec_token": token(i), "hec_uri": server(i).base_url(), "sources": ["audit"]}),
        )
        .await;
    }
    // Let the first syncs (and every connection test) start, then measure.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let rounds = 5;
    let mut posted: HashMap<String, Instant> = HashMap::new();
    for round in 0..rounds {
        let started = Instant::now();
        for i in 41..200 {
            let id = format!("n{i}-r{round}");
            let event =
                json!([{"id": id, "time": chrono::Utc::now().to_rfc3339(), "event": "neighbour"}]);
            posted.insert(id, Instant::now());
            api.post_audit(&format!("n{i}"), &event).await;
        }
        if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
            actix_rt::time::sleep(rest).await;
        }
    }
    eventually(Duration::from_secs(60), "every neighbour event", || {
        let got: std::collections::HashSet<String> =
            audit_ids(&normal.events()).into_iter().collect();
        posted.keys().all(|id| got.contains(id))
    })
    .await;
    let arrived: HashMap<String, Instant> = normal
        .events_with_arrival()
        .into_iter()
        .filter_map(|(e, at)| Some((e["event"]["id"].as_str()?.to_owned(), at)))
        .collect();
    let mut latencies: Vec<Duration> = posted
        .iter()
        .map(|(id, at)| arrived[id].saturating_duration_since(*at))
        .collect();
    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let heavy_done = audit_ids(&heavy.events()).len();
    println!(
        "isolation: {} events to 159 neighbours; latency p50 {:?} p99 {:?} max {:?}; heavy backlog {backlog} ({heavy_done} delivered meanwhile); hanging {} busy {}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies.last().unwrap(),
        hanging.event_count(),
        busy.event_count()
    );
    // A neighbour held up by a hanging Splunk would wait out its 60 s request
    // timeout; 10 s leaves room for 8 tests sharing 2 cores and still tells them apart.
    assert!(
        pct(0.99) <= Duration::from_secs(10),
        "p99 {:?}: a neighbour waited on a broken Splunk",
        pct(0.99)
    );
    assert_eq!(hanging.event_count() + busy.event_count(), 0);
}
