//! What an operator sees: /metrics, `siemsync status`, `check-config`, and the
//! progress of a long catch-up.

use super::common::*;
use serde_json::json;
use siemsync::testkit::{Behaviour, HecServer};
use std::process::Command;
use std::time::Duration;

const TOK: &str = "feedface-0000-4000-8000-000000000001";

/// The value of one series, found by metric name and label fragments.
fn series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|f| l.contains(f)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[actix_rt::test]
async fn metrics_show_delivery_failures_backlog_and_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    for a in ["good", "bad"] {
        api.enable_account(a).await;
    }
    let good = create_integration(
        &api,
        "good",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let bad = create_integration(
        &api,
        "bad",
        json!({"hec_token": "00000000-0000-4000-8000-000000000000", "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("good", &audit_events("g", 0, 10)).await;
    api.post_audit("bad", &audit_events("b", 0, 4)).await;
    let (s, _) = api
        .call(
            "POST",
            "/api/v1/accounts/good/audit",
            Some(INGEST),
            Some(json!([{"event": "no time"}])),
        )
        .await;
    assert_eq!(s, 400);
    status_until(&api, "good", &good, "delivery", |s| {
        s["delivered"]["audit"] == 11
    })
    .await;
    status_until(&api, "bad", &bad, "a retried failure", |s| {
        s["state"] == "failing" && s["retries"].as_u64() >= Some(2)
    })
    .await;

    let (s, _) = api.call("GET", "/metrics", Some(INGEST), None).await;
    assert_eq!(s, 403, "metrics are for the admin");
    let g = format!("integration=\"{good}\"");
    let b = format!("integration=\"{bad}\"");
    // The delivery counters move once the commit is durable (after the flush),
    // the checkpoint the status reads a moment before: scrape until they caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let text = loop {
        let (s, body) = api.admin("GET", "/metrics", None).await;
        assert_eq!(s, 200);
        let text = body.as_str().unwrap().to_owned();
        let delivered = series(
            &text,
            "siemsync_events_delivered_total",
            &[&g, "source=\"audit\"", "account=\"good\""],
        );
        if delivered == Some(11.0) {
            break text;
        }
        assert!(
            delivered < Some(11.0) && std::time::Instant::now() < deadline,
            "11 audit events delivered to good: {text}"
        );
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(series(&text, "siemsync_bytes_delivered_total", &[&g]).unwrap() > 1000.0);
    assert!(
        series(
            &text,
            "siemsync_delivery_failures_total",
            &[&b, "code=\"4\""]
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert_eq!(
        series(&text, "siemsync_backlog_events", &[&b, "source=\"audit\""]),
        Some(5.0)
    );
    assert_eq!(
        series(&text, "siemsync_backlog_events", &[&g, "source=\"audit\""]),
        Some(0.0)
    );
    assert!(series(&text, "siemsync_backlog_oldest_age_seconds", &[&b]).unwrap() > 0.0);
    assert!(series(&text, "siemsync_last_success_timestamp_seconds", &[&g]).unwrap() > 1.7e9);
    assert!(series(&text, "siemsync_post_duration_seconds_count", &[&g]).unwrap() >= 1.0);
    assert!(series(&text, "siemsync_retries_total", &[&b]).unwrap() >= 1.0);
    assert_eq!(
        series(&text, "siemsync_ingest_events_total", &["source=\"audit\""]),
        Some(14.0 + 2.0 - 2.0)
    );
    assert_eq!(
        series(
            &text,
            "siemsync_ingest_rejections_total",
            &["reason=\"invalid\""]
        ),
        Some(1.0)
    );
    assert!(series(&text, "siemsync_store_size_bytes", &[]).unwrap() > 0.0);
    assert!(text.contains("# HELP siemsync_dead_letters"));
    assert!(
        !text.contains(TOK) && !text.contains("00000000-0000-4000-8000-000000000000"),
        "no tokens in metrics"
    );
}

#[actix_rt::test]
async fn siemsync_status_prints_every_integration_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    api.enable_account("beta").await;
    let a = create_integration(
        &api,
        "acme",
        json!({"name": "Main Splunk", "hec_token": TOK, "hec_uri": hec.base_url()}),
    )
    .await;
    let b = create_integration(
        &api,
        "beta",
        json!({"name": "Broken", "hec_token": "nope-nope-nope-nope", "hec_uri": hec.base_url()}),
    )
    .await;
    status_until(&api, "acme", &a, "healthy", |s| s["state"] == "healthy").await;
    status_until(&api, "beta", &b, "failing", |s| s["state"] == "failing").await;
    let run = |token: &str| {
        Command::new(env!("CARGO_BIN_EXE_siemsync"))
            .args(["status", "--url", &svc.url])
            .env("SIEMSYNC_ADMIN_TOKEN", token)
            .output()
            .unwrap()
    };
    let out = run(ADMIN);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ACCOUNT") && lines[0].contains("LAST ERROR"),
        "{table}"
    );
    let acme = lines
        .iter()
        .find(|l| l.starts_with("acme "))
        .expect("acme's row");
    assert!(
        acme.contains("Main Splunk") && acme.contains("healthy") && acme.contains("s ago"),
        "{acme}"
    );
    let beta = lines
        .iter()
        .find(|l| l.starts_with("beta "))
        .expect("beta's row");
    assert!(
        beta.contains("failing")
            && beta.contains("HEC code 4")
            && beta.contains("does not know this HEC token"),
        "{beta}"
    );
    let denied = run("wrong-token-wrong-token");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = concat!(env!("CARGO_MANIFEST_DIR"), "/config/siemsync.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .args(["check-config", good])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(good)
        .unwrap()
        .replace("sync_interval_secs = 300", "sync_interval_secs = -5");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sync_interval_secs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The service refuses to start on it too, naming the key.
    let out = Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sync_interval_secs"));
}

#[actix_rt::test]
async fn a_long_catch_up_reports_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(dir.path(), &[("SIEMSYNC_MAX_BATCH_BYTES", "4096")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    // About 40 posts of a dozen events, 25 ms each: long enough to watch it move.
    hec.set_behaviour(Behaviour::Slow(Duration::from_millis(25)));
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 500)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    let st = status_until(&api, "acme", &id, "progress under way", |s| {
        s["progress"]["done"].as_u64().is_some_and(|d| d > 100)
            && s["progress"]["rate_per_sec"]
                .as_f64()
                .is_some_and(|r| r > 0.0)
    })
    .await;
    let p = &st["progress"];
    // 500 events, and the "created" event when it was written before the first sync.
    assert!(p["total"] == 500 || p["total"] == 501, "{p}");
    assert!(p["done"].as_u64().unwrap() < 501);
    assert!(p["eta_secs"].as_f64().unwrap() >= 0.0, "{p}");
    let later = status_until(&api, "acme", &id, "more progress", |s| {
        s["progress"]["done"].as_u64() > p["done"].as_u64()
    })
    .await;
    assert!(later["progress"]["done"].as_u64() > p["done"].as_u64());
    status_until(&api, "acme", &id, "done", |s| {
        s["delivered"]["audit"] == 501 && s["progress"].is_null()
    })
    .await;
    assert!(
        svc.log_text().contains("catch-up integration="),
        "progress is logged too"
    );
}

/// The TCP connections process `pid` holds to `port` on loopback, in any state
/// (an idle kept-alive one, or one Splunk closed and we did not: CLOSE-WAIT).
fn connections_to(pid: u32, port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let port = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        })
        .filter(|f| f.len() > 9 && f[2].ends_with(&port) && inodes.contains(&f[9]))
        .count()
}

#[actix_rt::test]
async fn an_integration_holds_no_connection_to_its_splunk_between_syncs_minutes_apart() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(dir.path(), &[("SIEMSYNC_SYNC_INTERVAL_SECS", "300")]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    let port: u16 = hec.base_url().rsplit(':').next().unwrap().parse().unwrap();
    api.enable_account("acme").await;
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    // The 5 events (the integration's own "created" event may come a sync later:
    // it is stored after the actor starts, and the next sync is minutes away).
    status_until(&api, "acme", &id, "the first sync", |s| {
        s["delivered"]["audit"].as_u64() >= Some(5) && s["syncing"] == false
    })
    .await;
    // With the next sync five minutes away, the connection is closed at once: kept,
    // it would sit in CLOSE-WAIT once Splunk closes its end — one file descriptor
    // per integration, for the whole interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connections_to(svc.pid(), port) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "siemsync still holds {} connection(s) to the HEC after the sync",
            connections_to(svc.pid(), port)
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, body) = api.admin("GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = body.as_str().unwrap().to_owned();
    let open = series(&text, "siemsync_open_fds", &[]).expect("siemsync_open_fds");
    let max = series(&text, "siemsync_max_fds", &[]).expect("siemsync_max_fds");
    assert!(open >= 3.0 && max >= open, "open {open}, max {max}");
}

#[actix_rt::test]
async fn a_sync_at_a_hanging_splunk_gives_its_place_back_after_its_lease_as_metrics_show() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    let hec = HecServer::start(TOK);
    hec.set_behaviour(Behaviour::Hang);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("h", 0, 3)).await;
    status_until(&api, "acme", &id, "a sync under way", |s| {
        s["syncing"] == true && s["backlog"]["audit"].as_u64() >= Some(3)
    })
    .await;
    eventually(Duration::from_secs(30), "a post in flight", || {
        hec.posts_arrived() >= 1
    })
    .await;
    // The post hangs (for the 60 s request timeout); its place goes back after 1 s.
    let start = std::time::Instant::now();
    loop {
        let (s, body) = api.admin("GET", "/metrics", None).await;
        assert_eq!(s, 200);
        let text = body.as_str().unwrap().to_owned();
        let in_use = series(&text, "siemsync_sync_places_in_use ", &[]);
        let waiting = series(&text, "siemsync_syncs_waiting ", &[]);
        assert_eq!(waiting, Some(0.0), "{text}");
        if in_use == Some(0.0) {
            break;
        }
        assert!(in_use.is_some(), "no siemsync_sync_places_in_use in {text}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hanging sync kept its place: {text}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let st = api.status("acme", &id).await;
    assert_eq!(st["syncing"], true, "the sync still hangs: {st:#}");
    hec.set_behaviour(Behaviour::Normal);
}

/// mimalloc asked for transparent huge pages, and the kernel clearing 2 MiB at a time
/// took half of a catch-up's CPU: the service runs with them off.
#[actix_rt::test]
async fn the_service_runs_with_transparent_huge_pages_off() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::spawn(dir.path(), &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", svc.pid())).unwrap();
    let thp = status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .expect("the kernel reports THP_enabled in /proc/<pid>/status");
    assert_eq!(thp.trim(), "0", "THP_enabled of the running service");
}
