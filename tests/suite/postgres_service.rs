//! The service on PostgreSQL where only PostgreSQL can show it: the primary dies
//! under a running node. Meanwhile `/healthz` says why with 503 and ingest answers
//! 503 (retry) — never 500, never a 200 that did not commit; after the standby is
//! promoted the node finds it by itself (multi-host URL) and every event answered
//! 200 reaches Splunk, in order. Its own cluster (primary + synchronous standby):
//! the test kills it. The promises that hold on either store run on PostgreSQL in
//! `on_postgres` (main.rs).

use crate::common::*;
use serde_json::Value;
use siemsync::store::postgres::{PgOptions, PgStore};
use siemsync::testkit::postgres::{ClusterOptions, PgCluster};
use siemsync::testkit::{Behaviour, HecServer};
use std::time::{Duration, Instant};

const TOKEN: &str = "cccccccc-0000-0000-0000-00000000000c";
const T: Duration = Duration::from_secs(30);

async fn health(api: &Api) -> (u16, Value) {
    api.call("GET", "/healthz", None, None).await
}

#[actix_rt::test]
async fn while_postgres_is_down_healthz_and_ingest_answer_503_and_nothing_acknowledged_is_lost() {
    let Some(pg) = PgCluster::start_or_skip(ClusterOptions {
        standby: true,
        ..Default::default()
    }) else {
        return;
    };
    let db = pg.create_database().unwrap();
    let url = pg.multi_host_url(&db);
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_STORE", "postgres"),
            ("SIEMSYNC_POSTGRES_URL", &url),
            ("SIEMSYNC_NODE_NAME", "solo"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOKEN);
    api.enable_account("acme").await;
    let id = api.add_integration("acme", TOKEN, &hec.base_url()).await;
    assert_eq!(health(&api).await.0, 200);
    api.post_audit("acme", &audit_events("e", 0, 100)).await;
    eventually(T, "the first 100 delivered", || {
        audit_ids(&hec.events()).len() >= 100
    })
    .await;
    // Splunk is down too, so that what was acknowledged is still undelivered when
    // PostgreSQL goes: it must survive the failover.
    hec.set_behaviour(Behaviour::Fail {
        status: 503,
        code: Some(9),
        text: "Server is busy".into(),
    });
    api.post_audit("acme", &audit_events("e", 100, 100)).await;
    let mut acknowledged = 200;

    pg.kill_primary().unwrap();
    let deadline = Instant::now() + T;
    let reason = loop {
        let (status, body) = health(&api).await;
        if status == 503 {
            break body["storage"].as_str().unwrap_or_default().to_owned();
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "/healthz never said 503");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reason.contains("PostgreSQL"),
        "the reason names PostgreSQL: {reason}"
    );
    for i in 0..3 {
        let (status, _, body) = post(&svc, "acme", &audit_events("down", i, 1)).await;
        assert_eq!(status, 503, "ingest while PostgreSQL is down: {body}");
    }

    pg.promote_standby().unwrap();
    let deadline = Instant::now() + T;
    loop {
        let (status, _, body) = post(&svc, "acme", &audit_events("e", acknowledged, 10)).await;
        match status {
            200 => {
                acknowledged += 10;
                break;
            }
            503 if Instant::now() < deadline => {}
            _ => panic!("ingest after the promotion: {status} {body}"),
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // The write that succeeded cleared the fault.
    let (status, body) = health(&api).await;
    assert_eq!(status, 200, "{body}");

    hec.set_behaviour(Behaviour::Normal);
    eventually(T, "everything acknowledged delivered", || {
        first_arrivals(audit_ids(&hec.events())).len() >= acknowledged
    })
    .await;
    let want: Vec<String> = (0..acknowledged).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        first_arrivals(audit_ids(&hec.events())),
        want,
        "every acknowledged event, first arrivals in order; none of the refused ones"
    );

    // The node alone holds every shard, and each checkpoint move went through its
    // lease: the commit log names it, under the epoch it held, up to the last event.
    let observer = PgStore::connect(PgOptions::new(&url, "observer"))
        .await
        .unwrap();
    let nodes = observer.nodes().await.unwrap();
    let solo = nodes.iter().find(|n| n.name == "solo").expect("registered");
    assert_eq!(solo.shards, i64::from(observer.shards()), "{nodes:?}");
    let id: uuid::Uuid = id.parse().unwrap();
    let commits = observer.commit_log(&id).await.unwrap();
    assert!(!commits.is_empty());
    assert!(
        commits
            .iter()
            .all(|c| c.node == "solo" && c.shard == observer.shard_of(&id)),
        "{commits:?}"
    );
    let last = commits.iter().map(|c| c.audit_seq).max().unwrap();
    assert!(
        last >= acknowledged as i64,
        "{last} < {acknowledged}: {commits:?}"
    );
}

#[actix_rt::test]
async fn a_second_node_on_one_database_is_refused_and_starts_once_the_first_stopped() {
    let Some(first_env) = siemsync::testkit::service::Backend::Postgres.env() else {
        return;
    };
    let env: Vec<(&str, &str)> = first_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let first_dir = tempfile::tempdir().unwrap();
    let mut first = Siemsync::start(first_dir.path(), &env);
    let first_name = &first_env
        .iter()
        .find(|(k, _)| k == "SIEMSYNC_NODE_NAME")
        .unwrap()
        .1;
    let second_dir = tempfile::tempdir().unwrap();
    let mut second_env = env.clone();
    second_env.push(("SIEMSYNC_NODE_NAME", "second"));
    let second_dir_text = second_dir.path().display().to_string();
    second_env.push(("SIEMSYNC_DATA_DIR", &second_dir_text));
    second_env.push(("SIEMSYNC_LISTEN", "127.0.0.1:0"));
    let config = |env: &[(&str, &str)]| {
        let owned: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        siemsync::testkit::service::config(&siemsync::testkit::service::shipped_config(), &owned)
            .unwrap()
    };
    let refused = siemsync::testkit::service::InProcess::start(config(&second_env))
        .err()
        .expect("a second node on the same database must be refused")
        .to_string();
    assert!(
        refused.contains(first_name.as_str()) && refused.contains("one node per database"),
        "{refused}"
    );
    // The first node was not disturbed by the refused one.
    let api = first.api();
    api.enable_account("acme").await;
    assert_eq!(health(&api).await.0, 200);

    // A clean stop hands everything back at once: the second node starts now.
    first.stop();
    let mut second = siemsync::testkit::service::InProcess::start(config(&second_env))
        .unwrap_or_else(|e| panic!("after the first node stopped: {e}"));
    let (status, body) = health(&Api::new(&second.url())).await;
    assert_eq!(status, 200, "{body}");
    second.stop();
}
