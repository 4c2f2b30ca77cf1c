//! Crash safety: SIGKILL the service at random moments while it drains a backlog
//! to the strict HEC test server and ingest goes on. After the last restart every
//! event whose ingest was answered has arrived at least once, and duplicates stay
//! within the batches in flight at each kill.
//!
//! The suite runs the short form; the full size is
//! `SIEMSYNC_CRASH_EVENTS=200000 SIEMSYNC_CRASH_KILLS=20 cargo test --release --test crash -- --nocapture`.

use super::common::*;
use serde_json::json;
use siemsync::testkit::{Behaviour, HecServer};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const TOK: &str = "c0ffee00-0000-4000-8000-000000000001";
const BATCH_BYTES: usize = 32 * 1024;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Posts until the service answers: a post cut by a kill is sent again (the ids make it idempotent).
async fn post_until_answered(url: &std::cell::RefCell<String>, events: &serde_json::Value) {
    loop {
        let attempt = awc::Client::builder()
            .timeout(Duration::from_secs(10))
            .finish()
            .post(format!("{}/api/v1/accounts/acme/audit", url.borrow()))
            .insert_header(("Authorization", format!("Bearer {INGEST}")))
            .send_json(events)
            .await;
        if let Ok(resp) = attempt {
            if resp.status().is_success() {
                return;
            }
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn sigkill_at_random_moments_loses_nothing_that_was_acknowledged() {
    let events = env_or("SIEMSYNC_CRASH_EVENTS", 20_000);
    // On PostgreSQL each restart waits out the killed process's heartbeat (the
    // tests' 2 s lease) before it may take its name again: fewer kills keep the
    // suite's time, each still at a random moment.
    let kills = env_or(
        "SIEMSYNC_CRASH_KILLS",
        match BACKEND {
            Backend::Sled => 20,
            Backend::Postgres => 5,
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let env = [("SIEMSYNC_MAX_BATCH_BYTES", "32768")];
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(5)));
    let mut svc = Siemsync::spawn(dir.path(), &env);
    let api = svc.api();
    api.enable_account("acme").await;
    // The backlog: most events before the integration exists.
    let first = events * 3 / 4;
    for start in (0..first).step_by(5000) {
        api.post_audit("acme", &audit_events("e", start, 5000.min(first - start)))
            .await;
    }
    create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;

    // Kill at pseudo-random moments (seeded, so a failure can be replayed), ingesting the rest between kills.
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let url = std::cell::RefCell::new(svc.url.clone());
    let rest: Vec<usize> = (first..events).collect();
    let chunk = rest.len().div_ceil(kills).max(1);
    let mut posted = first;
    let started = Instant::now();
    for k in 0..kills {
        let posts = hec.posts().len();
        if let Some(part) = rest.chunks(chunk).nth(k) {
            post_until_answered(&url, &audit_events("e", part[0], part.len())).await;
            posted += part.len();
        }
        // The kill comes while it drains: after it posted again since its start (each
        // round ingests more, so there is always something to post), at a random
        // moment within the next tenth of a second.
        eventually(Duration::from_secs(30), "a post since the restart", || {
            hec.posts().len() > posts
        })
        .await;
        actix_rt::time::sleep(Duration::from_millis(next() % 100)).await;
        svc.kill();
        svc = Siemsync::spawn(dir.path(), &env);
        *url.borrow_mut() = svc.url.clone();
    }
    assert_eq!(posted, events);
    let api = svc.api();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ids = audit_ids(&hec.events());
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        if unique.len() >= events {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {events} arrived",
            unique.len()
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    let ids = audit_ids(&hec.events());
    let mut count: HashMap<&String, usize> = HashMap::new();
    for id in &ids {
        *count.entry(id).or_default() += 1;
    }
    let lost = (0..events)
        .filter(|i| !count.contains_key(&format!("e-{i}")))
        .count();
    let duplicates = ids.len() - count.len();
    // One post in flight per kill, and a 32 KiB post holds fewer than 120 of these events.
    let bound = kills * (BATCH_BYTES / 280);
    println!(
        "crash test: events={events} kills={kills} lost={lost} duplicates={duplicates} (bound {bound}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0);
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates for {kills} kills"
    );
    drop(api);
}
