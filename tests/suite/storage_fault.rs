//! Storage faults: the data dir's disk fills up under the running service. Ingest
//! must answer 503 (so the platform retries) with the reason, `/healthz` and the
//! integration's status must say why, nothing stored before must be lost, and once
//! space is back the service must take writes again by itself — no restart.
//! Before it comes to that, the disk reserve (`min_free_disk_bytes`) refuses the
//! account with the largest backlog first, and the healthy accounts keep ingesting.
//!
//! The disk is a small tmpfs mounted for the test (root only); where mounting is
//! not allowed the test says so and passes without running.

use crate::common::*;
use serde_json::{json, Value};
use siemsync::testkit::HecServer;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TOK: &str = "5f0a9e00-0000-4000-8000-0000000000d1";

/// A tmpfs of `size`, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_owned()))
    }

    /// Mounts a tmpfs of `size` at `at` with an empty `data` directory on it for the
    /// service; `None`, after saying so, where this machine does not allow mounting.
    fn with_data_dir(at: &Path, size: &str) -> Option<(SmallDisk, PathBuf)> {
        let Some(disk) = SmallDisk::mount(at, size) else {
            eprintln!("skipped: this machine does not allow mounting a tmpfs (needs root)");
            return None;
        };
        let data = at.join("data");
        std::fs::create_dir(&data).unwrap();
        Some((disk, data))
    }

    /// Writes a file until the disk is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn healthz(api: &Api) -> (u16, Value) {
    api.call("GET", "/healthz", None, None).await
}

#[actix_rt::test]
async fn a_full_disk_answers_503_says_why_loses_nothing_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some((disk, data)) = SmallDisk::with_data_dir(dir.path(), "48m") else {
        return;
    };
    // The disk reserve off: this is the really full disk, which refuses everyone.
    let svc = Siemsync::spawn(
        &data,
        &[
            ("SIEMSYNC_CACHE_MB", "8"),
            ("SIEMSYNC_MIN_FREE_DISK_BYTES", "0"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    api.enable_account("acme").await;
    let id = create_integration(
        &api,
        "acme",
        json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
    )
    .await;
    api.post_audit("acme", &audit_events("before", 0, 200))
        .await;
    eventually(
        Duration::from_secs(20),
        "the first events delivered",
        || audit_ids(&hec.events()).len() == 200,
    )
    .await;

    // The disk fills. Batches keep coming until one is refused; those stored before
    // the refusal were answered 200 and must arrive.
    let filler = disk.fill();
    let mut stored = Vec::new();
    let mut refused = None;
    for batch in 0..400 {
        let events = audit_events(&format!("during{batch}"), 0, 500);
        let (status, body) = api
            .call(
                "POST",
                "/api/v1/accounts/acme/audit",
                Some(INGEST),
                Some(events.clone()),
            )
            .await;
        match status {
            200 => stored.push(events),
            503 => {
                refused = Some((events, body));
                break;
            }
            other => panic!("ingest on a full disk answered {other}: {body}"),
        }
    }
    let (refused, answer) = refused.expect("a full disk makes ingest answer 503");
    let message = answer["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.contains("No space left on device") || message.contains("storage"),
        "the 503 says why: {answer}"
    );
    let (status, health) = healthz(&api).await;
    assert_eq!(status, 503, "{health}");
    assert!(
        health["storage"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot write"),
        "{health}"
    );
    // The operator's `siemsync status` leads with it.
    let cli = Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .args(["status", "--url", &svc.url])
        .env("SIEMSYNC_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("siemsync status");
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        printed.starts_with("DEGRADED: siemsync cannot write to its store"),
        "{printed}"
    );
    // Until the disk has room, every ingest is refused, not half-stored.
    let (status, _) = api
        .call(
            "POST",
            "/api/v1/accounts/acme/audit",
            Some(INGEST),
            Some(refused.clone()),
        )
        .await;
    assert_eq!(status, 503);
    // The integration's status says why: the actor's failure naming the storage, or,
    // when sled cannot even read a page it had not flushed, the API's 503 naming it.
    let start = std::time::Instant::now();
    loop {
        let (code, st) = api
            .admin(
                "GET",
                &format!("/api/v1/accounts/acme/integrations/{id}/status"),
                None,
            )
            .await;
        let says_why = match code {
            200 => {
                st["state"] == "failing"
                    && st["last_error"]["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("storage"))
            }
            503 => st["error"].as_str().is_some_and(|t| t.contains("store")),
            _ => panic!("status during the fault: {code} {st}"),
        };
        if says_why {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the status never named the storage fault: {code} {st}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }

    // Space comes back: the service takes writes again by itself.
    std::fs::remove_file(filler).unwrap();
    let start = std::time::Instant::now();
    loop {
        if healthz(&api).await.0 == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the store did not recover; log:\n{}",
            svc.log_text()
        );
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // The platform retries what was refused.
    let retried = api.post_audit("acme", &refused).await;
    assert_eq!(
        retried["accepted"].as_u64().unwrap() + retried["duplicates"].as_u64().unwrap(),
        500
    );
    let mut expected: Vec<String> = audit_ids(
        audit_events("before", 0, 200)
            .as_array()
            .unwrap()
            .iter()
            .map(|e| json!({"source": "siemsync:audit", "event": e}))
            .collect::<Vec<_>>()
            .as_slice(),
    );
    for events in stored.iter().chain([&refused]) {
        expected.extend(
            events
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
    }
    eventually(
        Duration::from_secs(60),
        "every stored event delivered",
        || {
            let got: std::collections::HashSet<String> =
                audit_ids(&hec.events()).into_iter().collect();
            expected.iter().all(|id| got.contains(id))
        },
    )
    .await;
    status_until(&api, "acme", &id, "the integration healthy again", |s| {
        s["state"] == "healthy"
    })
    .await;
    eprintln!(
        "storage fault: {} batches stored before the disk was full, the next refused with 503, all {} events delivered after recovery",
        stored.len(),
        expected.len()
    );
    drop(svc);
}

/// Writes `bytes` of zeros to a new file at `path`.
fn filler(path: &Path, bytes: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("the filler fits");
        left -= n as u64;
    }
    f.sync_all().expect("filler synced");
}

#[actix_rt::test]
async fn below_the_disk_reserve_the_largest_backlog_is_refused_first_and_healthy_accounts_keep_ingesting(
) {
    const MIB: u64 = 1 << 20;
    const FLOOR: u64 = 16 * MIB;
    let dir = tempfile::tempdir().unwrap();
    let Some((_disk, data)) = SmallDisk::with_data_dir(dir.path(), "64m") else {
        return;
    };
    // The binary, for its log: the reserve says whom it refuses and when it stops.
    let svc = Siemsync::spawn(
        &data,
        &[
            ("SIEMSYNC_CACHE_MB", "8"),
            ("SIEMSYNC_MIN_FREE_DISK_BYTES", &FLOOR.to_string()),
            ("SIEMSYNC_TIMING_DISK_CHECK_SECS", "0.02"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOK);
    for account in ["down", "calm1", "calm2"] {
        api.enable_account(account).await;
    }
    // The one account whose Splunk is unreachable: everything it posts stays.
    create_integration(
        &api,
        "down",
        json!({"hec_token": TOK, "hec_uri": format!("http://127.0.0.1:{}", closed_port()),
               "sources": ["audit"]}),
    )
    .await;
    for account in ["calm1", "calm2"] {
        create_integration(
            &api,
            account,
            json!({"hec_token": TOK, "hec_uri": hec.base_url(), "sources": ["audit"]}),
        )
        .await;
    }
    // The disk is filled to 6 MiB above the floor: measured, as siemsync measures it.
    let free = siemsync::disk_reserve::free_bytes(&data).unwrap();
    assert!(free > FLOOR + 6 * MIB, "the tmpfs has {free} bytes free");
    let first_filler = dir.path().join("filler1");
    filler(&first_filler, free - FLOOR - 6 * MIB);

    // Each round the healthy accounts post a few events and `down` a large batch,
    // until `down` is refused: the healthy accounts are never refused before it.
    let mut calm_posted = 0;
    let mut down_stored = 0;
    let mut refusal = None;
    for round in 0..400 {
        for account in ["calm1", "calm2"] {
            let (s, _, body) = post(&svc, account, &audit_events(account, round * 20, 20)).await;
            assert_eq!(s, 200, "{account} refused before the one account: {body}");
        }
        calm_posted = (round + 1) * 20;
        let batch = audit_events("down", round * 1000, 1000);
        match post(&svc, "down", &batch).await {
            (200, _, _) => down_stored += 1,
            (503, retry_after, body) => {
                refusal = Some((batch, retry_after, body));
                break;
            }
            (s, _, body) => panic!("down's ingest answered {s}: {body}"),
        }
    }
    let (refused_batch, retry_after, body) =
        refusal.expect("the account with the largest backlog is refused below the floor");
    let free_at_refusal = siemsync::disk_reserve::free_bytes(&data).unwrap();
    assert!(
        (FLOOR / 2..FLOOR).contains(&free_at_refusal),
        "refused between the hard line and the floor: {free_at_refusal} bytes free"
    );
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("min_free_disk_bytes")
            && error.contains("largest backlog")
            && error.contains("account down")
            && error.contains("nothing of this request was stored"),
        "{body}"
    );
    assert_eq!(retry_after, Some(30), "{body}");

    // The healthy accounts keep ingesting below the floor, down stays refused.
    for round in 0..10 {
        for account in ["calm1", "calm2"] {
            let from = calm_posted + round * 20;
            let (s, _, body) = post(&svc, account, &audit_events(account, from, 20)).await;
            assert_eq!(s, 200, "{account} below the floor: {body}");
        }
    }
    calm_posted += 200;
    let (s, _, _) = post(&svc, "down", &refused_batch).await;
    assert_eq!(
        s, 503,
        "down stays refused while the disk is below the floor"
    );

    // Visible: the account, /healthz, /metrics.
    let down = api.ok("GET", "/api/v1/accounts/down", None).await;
    assert_eq!(down["disk_refused"], true, "{down}");
    assert!(down["disk_refused_requests"].as_u64() >= Some(2), "{down}");
    let calm = api.ok("GET", "/api/v1/accounts/calm1", None).await;
    assert_eq!(calm["disk_refused"], false, "{calm}");
    assert_eq!(calm["disk_refused_requests"], 0, "{calm}");
    let (status, health) = healthz(&api).await;
    assert_eq!(status, 200, "the store still takes writes: {health}");
    assert!(
        health["disk"]
            .as_str()
            .is_some_and(|d| d.contains("min_free_disk_bytes") && d.contains("down")),
        "{health}"
    );
    let (_, metrics) = api.admin("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains(&format!("siemsync_min_free_disk_bytes {FLOOR}"))
            && metrics.contains("siemsync_disk_free_bytes ")
            && metrics.contains("siemsync_account_disk_refused{account=\"down\"} 1")
            && metrics.contains("siemsync_account_disk_refused_requests{account=\"down\"}")
            && !metrics.contains("siemsync_account_disk_refused{account=\"calm1\"} 1"),
        "{metrics}"
    );

    // Below half the floor every account is refused.
    let second_filler = dir.path().join("filler2");
    let free = siemsync::disk_reserve::free_bytes(&data).unwrap();
    filler(&second_filler, free.saturating_sub(FLOOR / 2) + MIB);
    let start = std::time::Instant::now();
    let body = loop {
        let (s, _, body) = post(&svc, "calm1", &json!([])).await;
        if s == 503 {
            break body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "calm1 never refused below the hard line"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("every account")),
        "{body}"
    );
    assert_eq!(healthz(&api).await.0, 503, "no account can ingest");

    // Space comes back: everyone ingests again, and `down`'s refused batch is
    // taken whole — none of it had been stored.
    std::fs::remove_file(second_filler).unwrap();
    std::fs::remove_file(first_filler).unwrap();
    let start = std::time::Instant::now();
    let accepted = loop {
        let (s, _, body) = post(&svc, "down", &refused_batch).await;
        if s == 200 {
            break body;
        }
        assert_eq!(s, 503, "{body}");
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "down never ingests again"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(accepted, json!({"accepted": 1000, "duplicates": 0}));
    let log = svc.log_text();
    assert!(
        log.contains("ingest of account down (one of the largest backlogs")
            && log.contains("ingest of account down is no longer refused")
            && log.contains("refused with 503 for every account")
            && !log.contains("ingest of account calm1 ("),
        "the log says whom the reserve refused, and when it stopped:\n{log}"
    );
    let (status, health) = healthz(&api).await;
    assert_eq!((status, health.get("disk")), (200, None), "{health}");
    // The healthy accounts' events all reached their Splunk.
    eventually(
        Duration::from_secs(20),
        "every event of the healthy accounts delivered",
        || {
            // At least once: a repeat may come, every event must.
            let got: std::collections::HashSet<String> =
                audit_ids(&hec.events()).into_iter().collect();
            ["calm1", "calm2"]
                .iter()
                .all(|a| (0..calm_posted).all(|i| got.contains(&format!("{a}-{i}"))))
        },
    )
    .await;
    eprintln!(
        "disk reserve: {down_stored} batches of 1000 events stored for down before it was refused, at {:.1} MiB free (floor 16 MiB); the healthy accounts posted {calm_posted} events each, none refused above the hard line, all delivered",
        free_at_refusal as f64 / MIB as f64
    );
    drop(svc);
}
