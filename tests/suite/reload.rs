//! Hot reload of integrations declared in the config file.

use super::common::*;
use serde_json::{json, Value};
use siemsync::testkit::{HecServer, HecServerConfig};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

const N: usize = 50;

fn token(i: usize, generation: u32) -> String {
    format!("{i:08}-0000-4000-8000-{generation:012}")
}

fn write_config(path: &Path, uri: &str, tokens: &HashMap<usize, u32>, skip: Option<usize>) {
    let mut text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/siemsync.toml"))
            .unwrap();
    for i in (0..N).filter(|i| Some(*i) != skip) {
        text.push_str(&format!(
            "\n[[integrations]]\naccount = \"r{i}\"\nname = \"File {i}\"\nhec_token = \"{}\"\nhec_uri = \"{uri}\"\nsources = [\"audit\"]\nenabled = true\n",
            token(i, tokens.get(&i).copied().unwrap_or(0))
        ));
    }
    std::fs::write(path, text).unwrap();
}

async fn started_at(api: &Api) -> HashMap<usize, (String, String)> {
    let mut out = HashMap::new();
    for i in 0..N {
        let list = api
            .ok("GET", &format!("/api/v1/accounts/r{i}/integrations"), None)
            .await;
        if let Some(it) = list.as_array().unwrap().first() {
            let id = it["id"].as_str().unwrap().to_owned();
            let st = api.status(&format!("r{i}"), &id).await;
            out.insert(
                i,
                (id, st["started_at"].as_str().unwrap_or_default().to_owned()),
            );
        }
    }
    out
}

async fn post_round(api: &Api, round: usize, only: impl Fn(usize) -> bool) {
    for i in (0..N).filter(|i| only(*i)) {
        api.post_audit(
            &format!("r{i}"),
            &audit_events(&format!("r{i}-{round}"), 0, 1),
        )
        .await;
    }
}

fn delivered(hec: &HecServer, i: usize, round: usize) -> bool {
    let id = format!("r{i}-{round}-0");
    audit_ids(&hec.events()).contains(&id)
}

#[actix_rt::test]
async fn editing_the_config_file_restarts_only_what_changed_and_a_broken_file_changes_nothing() {
    let mut cfg = HecServerConfig::token(&token(0, 0));
    cfg.tokens = (0..N).flat_map(|i| [token(i, 0), token(i, 1)]).collect();
    let hec = HecServer::start_with(cfg);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("siemsync.toml");
    let mut gens = HashMap::new();
    write_config(&config, &hec.base_url(), &gens, None);
    let svc = Siemsync::spawn_with(&config, &dir.path().join("data"), &[]);
    let api = svc.api();

    post_round(&api, 0, |_| true).await;
    eventually(
        Duration::from_secs(30),
        "all 50 file integrations deliver",
        || (0..N).all(|i| delivered(&hec, i, 0)),
    )
    .await;
    let before = started_at(&api).await;
    assert_eq!(before.len(), N);
    let (id0, _) = &before[&0];
    let it = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/r0/integrations/{id0}"),
            None,
        )
        .await;
    assert_eq!(it["managed_by"], "config file");
    for (m, body) in [("PATCH", Some(json!({"name": "x"}))), ("DELETE", None)] {
        let (s, v) = api
            .admin(m, &format!("/api/v1/accounts/r0/integrations/{id0}"), body)
            .await;
        assert_eq!(s, 409, "{m}: {v}");
        assert!(v["error"].as_str().unwrap().contains("config file"));
    }

    // Edit one integration and send SIGHUP: only that one restarts.
    gens.insert(7, 1);
    write_config(&config, &hec.base_url(), &gens, None);
    svc.signal("HUP");
    let (id7, _) = &before[&7];
    status_until(&api, "r7", id7, "r7 restarted with its new token", |s| {
        s["started_at"].as_str() != Some(before[&7].1.as_str())
    })
    .await;
    post_round(&api, 1, |_| true).await;
    eventually(Duration::from_secs(30), "everyone's next events", || {
        (0..N).all(|i| delivered(&hec, i, 1))
    })
    .await;
    // A reload holds an unchanged integration's delivery up only by stopping or
    // restarting its actor (each actor syncs on its own timer and thread; neither
    // ingest nor delivery goes through the Supervisor or the reload), so that is
    // what is asserted: the same actors, started when they were. Not the round's
    // wall-clock time against the round before it: two rounds of 50 ingests (each
    // answered after a flush) seconds apart on a 2-core machine shared with
    // builds measure the disk and the scheduler, not the reload (5 s and 2x
    // failed at load 14-20 with nothing restarted but r7; 15 s or 3x at load 46).
    let after = started_at(&api).await;
    for i in (0..N).filter(|i| *i != 7) {
        assert_eq!(after[&i], before[&i], "r{i} must not restart");
    }

    // A broken file is rejected whole; the running set goes on untouched.
    std::fs::write(&config, "listen = [this is not toml").unwrap();
    svc.signal("HUP");
    // Rejected twice: for the signal, and when the file watcher notices the change.
    eventually(Duration::from_secs(10), "both rejections logged", || {
        let log = svc.log_text();
        log.contains("config reload (SIGHUP) rejected")
            && log.contains("config reload (file changed) rejected")
    })
    .await;
    post_round(&api, 2, |_| true).await;
    eventually(
        Duration::from_secs(30),
        "delivery after a broken file",
        || (0..N).all(|i| delivered(&hec, i, 2)),
    )
    .await;
    assert_eq!(
        started_at(&api).await,
        after,
        "nothing restarted or removed"
    );

    // A changed file is noticed without a signal; a removed entry is removed.
    gens.insert(8, 1);
    write_config(&config, &hec.base_url(), &gens, Some(49));
    let (id8, _) = &before[&8];
    status_until(&api, "r8", id8, "r8 restarted by the file change", |s| {
        s["started_at"].as_str() != Some(after[&8].1.as_str())
    })
    .await;
    let list: Value = api
        .ok("GET", "/api/v1/accounts/r49/integrations", None)
        .await;
    assert_eq!(list, json!([]));
    let last = started_at(&api).await;
    assert_eq!(last.len(), N - 1);
    for i in (0..N - 1).filter(|i| *i != 8 && *i != 7) {
        assert_eq!(last[&i], before[&i], "r{i}");
    }
}
