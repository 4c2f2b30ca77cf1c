//! Storage faults: the data dir's disk fills up under the running service. Ingest
//! must answer 503 (so the platform retries) with the reason, `/healthz` and the
//! integration's status must say why, nothing stored before must be lost, and once
//! space is back the service must take writes again by itself — no restart.
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
    let Some(disk) = SmallDisk::mount(dir.path(), "48m") else {
        eprintln!("skipped: this machine does not allow mounting a tmpfs (needs root)");
        return;
    };
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let svc = Siemsync::spawn(&data, &[("SIEMSYNC_CACHE_MB", "8")]);
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
