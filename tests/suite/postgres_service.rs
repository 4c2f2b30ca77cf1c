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
    hec.set_behaviour(Behaviour::busy());
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
async fn a_second_node_takes_its_share_and_a_clean_stop_hands_the_shards_back_at_once() {
    let Some(first_env) = siemsync::testkit::service::Backend::Postgres.env() else {
        return;
    };
    let mut env = borrowed(&first_env);
    env.push(PG_LEASE);
    let first_dir = tempfile::tempdir().unwrap();
    let mut first = Siemsync::start(first_dir.path(), &env);
    let first_name = env_value(&first_env, "SIEMSYNC_NODE_NAME");
    let second_dir = tempfile::tempdir().unwrap();
    let mut second_env = env.clone();
    second_env.push(("SIEMSYNC_NODE_NAME", "second"));
    let mut second = Siemsync::start(second_dir.path(), &second_env);
    assert_eq!(health(&second.api()).await.0, 200);
    assert_eq!(health(&first.api()).await.0, 200);

    // The first node hands the second its share; the two hold every shard.
    let url = env_value(&first_env, "SIEMSYNC_POSTGRES_URL");
    let observer = PgStore::connect(PgOptions::new(&url, "observer"))
        .await
        .unwrap();
    let all = i64::from(observer.shards());
    let shards_of = |nodes: &[siemsync::store::postgres::NodeInfo], name: &str| {
        nodes
            .iter()
            .find(|n| n.name == name)
            .map_or(0, |n| n.shards)
    };
    let deadline = Instant::now() + T;
    loop {
        let nodes = observer.nodes().await.unwrap();
        let (a, b) = (shards_of(&nodes, &first_name), shards_of(&nodes, "second"));
        if a == all / 2 && b == all / 2 {
            break;
        }
        assert!(Instant::now() < deadline, "never an even spread: {nodes:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // A clean stop hands everything back at once (its leases have not lapsed),
    // and the second node claims it all on its next round.
    first.stop();
    let nodes = observer.nodes().await.unwrap();
    let gone = nodes.iter().find(|n| n.name == first_name).unwrap();
    assert!(gone.stopping && gone.shards == 0, "{nodes:?}");
    let deadline = Instant::now() + T;
    while shards_of(&observer.nodes().await.unwrap(), "second") != all {
        assert!(
            Instant::now() < deadline,
            "the second node never took every shard"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop();
}

/// The value of `key` in the PostgreSQL backend's environment.
fn env_value(env: &[(String, String)], key: &str) -> String {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{key} is in the PostgreSQL backend's environment"))
}

/// The environment as `Siemsync::start` takes it.
fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A node on a database of its own, syncing every 0.25 s, whose one integration
/// delivered its first 5 events.
struct DeliveringNode {
    url: String,
    api: Api,
    hec: HecServer,
    id: String,
    // Stopped before its data directory goes (fields drop in this order).
    _svc: Siemsync,
    _dir: tempfile::TempDir,
}

/// [`DeliveringNode`] with a shard lease of `lease_secs`, or `None` where
/// PostgreSQL's binaries are missing.
async fn a_delivering_node(lease_secs: &str) -> Option<DeliveringNode> {
    let pg_env = siemsync::testkit::service::Backend::Postgres.env()?;
    let mut env = borrowed(&pg_env);
    env.push(("SIEMSYNC_SYNC_INTERVAL_SECS", "0.25"));
    env.push((PG_LEASE.0, lease_secs));
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(dir.path(), &env);
    let api = svc.api();
    let hec = HecServer::start(TOKEN);
    api.enable_account("acme").await;
    let id = api.add_integration("acme", TOKEN, &hec.base_url()).await;
    api.post_audit("acme", &audit_events("e", 0, 5)).await;
    eventually(T, "the first 5 delivered", || {
        audit_ids(&hec.events()).len() >= 5
    })
    .await;
    Some(DeliveringNode {
        url: env_value(&pg_env, "SIEMSYNC_POSTGRES_URL"),
        api,
        hec,
        id,
        _svc: svc,
        _dir: dir,
    })
}

#[actix_rt::test]
async fn a_node_whose_shards_another_node_took_posts_nothing_more() {
    let Some(node) = a_delivering_node(PG_LEASE.1).await else {
        return;
    };
    let DeliveringNode {
        url, api, hec, id, ..
    } = &node;

    // Another node takes every shard, as one that found this node's leases lapsed
    // would: this node must stop sending, for only the holder's commits count.
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(conn);
    client
        .batch_execute(
            "INSERT INTO nodes (name, started_at, heartbeat_at, expires_at)
               VALUES ('thief', now(), now(), now() + interval '1 hour');
             UPDATE shard_leases SET owner = 'thief', epoch = epoch + 1,
               expires_at = now() + interval '1 hour';",
        )
        .await
        .unwrap();
    api.post_audit("acme", &audit_events("e", 5, 5)).await;
    // Once the node's lease round saw the loss, it stops the integration's actor:
    // the shard is another node's to deliver.
    status_until(
        api,
        "acme",
        id,
        "the node to stop the lost shard's actor",
        |s| s["state"] == "pending" && s["started_at"].is_null(),
    )
    .await;
    let posts = hec.posts_arrived();
    // Three more lease rounds (heartbeats), each a chance to start it again, and
    // a dozen sync intervals: nothing more is posted.
    let observer = PgStore::connect(PgOptions::new(url, "observer"))
        .await
        .unwrap();
    let node_name =
        |n: &siemsync::store::postgres::NodeInfo| n.name != "thief" && n.name != "observer";
    let heartbeat = || async {
        observer
            .nodes()
            .await
            .unwrap()
            .into_iter()
            .find(node_name)
            .map(|n| n.heartbeat_at)
            .unwrap()
    };
    let mut seen = heartbeat().await;
    for _ in 0..3 {
        let deadline = Instant::now() + T;
        loop {
            let now = heartbeat().await;
            if now != seen {
                seen = now;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the node's heartbeat stood still"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        hec.posts_arrived(),
        posts,
        "a node without the lease posted again"
    );
    let st = api.status("acme", id).await;
    assert_eq!(st["state"], "pending", "{st:#}");
}

#[actix_rt::test]
async fn a_node_that_cannot_renew_its_leases_stops_posting_before_they_lapse() {
    // 4 s, not the tests' 2 s: the node gives up after three quarters of it (3 s),
    // and the status poll that sees so must still come in before the lease lapses.
    let lease = Duration::from_secs(4);
    let Some(node) = a_delivering_node(&lease.as_secs().to_string()).await else {
        return;
    };
    let DeliveringNode {
        url, api, hec, id, ..
    } = &node;

    // The lease round blocks behind this lock (as behind a partition that lets the
    // delivery's own connections through): the node cannot renew, and must stop
    // sending before its leases lapse and another node may take them over.
    let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    actix_rt::spawn(conn);
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE nodes IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let locked = Instant::now();
    // Splunk is refusing, so the node keeps trying to post what it has.
    hec.set_behaviour(Behaviour::busy());
    api.post_audit("acme", &audit_events("e", 5, 5)).await;
    let st = status_until(api, "acme", id, "the node to give up its lease", |s| {
        s["last_error"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("could not renew"))
    })
    .await;
    // The lease was last renewed before the lock: it had not lapsed yet.
    assert!(locked.elapsed() < lease, "{st:#}");
    let posts = hec.posts_arrived();
    let retries = st["retries"].as_u64().unwrap();
    status_until(api, "acme", id, "three more attempts", |s| {
        s["retries"].as_u64().unwrap() >= retries + 3
    })
    .await;
    assert_eq!(
        hec.posts_arrived(),
        posts,
        "a node whose lease may have lapsed posted again"
    );

    // Renewals go through again: the node delivers everything.
    tx.rollback().await.unwrap();
    hec.set_behaviour(Behaviour::Normal);
    eventually(T, "everything delivered after the renewal", || {
        first_arrivals(audit_ids(&hec.events())).len() >= 10
    })
    .await;
}

/// A node running under the name of the PostgreSQL backend's environment, and the
/// config of a second process under the same name (its own data directory and
/// port): what a copied config or a second unit on the host would start.
struct SameName {
    first: Siemsync,
    second: siemsync::config::Config,
    name: String,
    url: String,
    _dirs: [tempfile::TempDir; 2],
}

/// [`SameName`], or `None` where PostgreSQL's binaries are missing.
fn a_live_node_and_a_second_under_its_name() -> Option<SameName> {
    let mut pg_env = siemsync::testkit::service::Backend::Postgres.env()?;
    // The refused start waits out the lease (and a third) first, in case the
    // live row is a killed process's: seconds with the tests' short lease.
    pg_env.push((PG_LEASE.0.into(), PG_LEASE.1.into()));
    let env = borrowed(&pg_env);
    let first_dir = tempfile::tempdir().unwrap();
    let first = Siemsync::start(first_dir.path(), &env);
    let second_dir = tempfile::tempdir().unwrap();
    let mut second_env: Vec<(String, String)> = pg_env.clone();
    second_env.push((
        "SIEMSYNC_DATA_DIR".into(),
        second_dir.path().display().to_string(),
    ));
    second_env.push(("SIEMSYNC_LISTEN".into(), "127.0.0.1:0".into()));
    let second = siemsync::testkit::service::config(
        &siemsync::testkit::service::shipped_config(),
        &second_env,
    )
    .unwrap();
    Some(SameName {
        first,
        second,
        name: env_value(&pg_env, "SIEMSYNC_NODE_NAME"),
        url: env_value(&pg_env, "SIEMSYNC_POSTGRES_URL"),
        _dirs: [first_dir, second_dir],
    })
}

/// Why an in-process start under `config` was refused; panics if it started.
fn refused_start(config: siemsync::config::Config) -> String {
    siemsync::testkit::service::InProcess::start(config)
        .err()
        .expect("a second process under a live node's name must be refused")
        .to_string()
}

#[actix_rt::test]
async fn a_second_process_under_a_live_nodes_name_is_refused() {
    let Some(SameName {
        mut first,
        second: config,
        name,
        url,
        _dirs,
    }) = a_live_node_and_a_second_under_its_name()
    else {
        return;
    };
    // The same name: it would share the first one's leases and both would deliver
    // and commit everything.
    let refused = refused_start(config.clone());
    assert!(
        refused.contains(&name) && refused.contains("another process"),
        "{refused}"
    );
    // The first node was not disturbed: it still holds every shard.
    let api = first.api();
    api.enable_account("acme").await;
    assert_eq!(health(&api).await.0, 200);
    let observer = PgStore::connect(PgOptions::new(&url, "observer"))
        .await
        .unwrap();
    let nodes = observer.nodes().await.unwrap();
    let me = nodes.iter().find(|n| n.name == name).expect("registered");
    assert!(me.alive && !me.stopping, "{nodes:?}");
    assert_eq!(me.shards, i64::from(observer.shards()), "{nodes:?}");

    // Once the first stopped cleanly, the name is free again at once.
    first.stop();
    let mut again = siemsync::testkit::service::InProcess::start(config)
        .unwrap_or_else(|e| panic!("after the first process stopped: {e}"));
    let (status, body) = health(&Api::new(&again.url())).await;
    assert_eq!(status, 200, "{body}");
    again.stop();
}

/// Runs `sql` in a transaction of its own connection to `url`, on a thread of its
/// own, and ends that transaction `hold` later: the locks `sql` takes are held
/// meanwhile, as by a slow lease round of another node (or of this one, cut off by
/// its time limit but still running in PostgreSQL). Returns once they are taken.
fn hold_locks(url: &str, sql: String, hold: Duration) -> std::thread::JoinHandle<()> {
    let url = url.to_owned();
    let (taken, is_taken) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let tx = client.transaction().await.unwrap();
            tx.batch_execute(&sql).await.unwrap();
            taken.send(()).unwrap();
            tokio::time::sleep(hold).await;
            tx.rollback().await.unwrap();
        });
    });
    is_taken.recv().expect("the locks taken");
    thread
}

/// Longer than a lease round waits for a lock (a ninth of the tests' 2 s lease),
/// twice over; shorter than a start waits for a live name's heartbeat to lapse.
const SLOW_ROUND: Duration = Duration::from_millis(600);

#[actix_rt::test]
async fn a_second_process_whose_first_round_waits_for_another_nodes_round_is_still_refused_for_the_name(
) {
    // The first node runs until the end (a field left to `..` would be dropped,
    // and the node stopped, at once).
    let Some(SameName {
        first: _first,
        second: config,
        name,
        url,
        _dirs,
    }) = a_live_node_and_a_second_under_its_name()
    else {
        return;
    };
    // Another node's round holds the balancing lock for longer than a round waits
    // for it (as a loaded machine slows one down): the start waits its turn, and is
    // refused for what it is, a second process under a live name.
    let lock = siemsync::store::postgres::BALANCE_LOCK;
    let holder = hold_locks(
        &url,
        format!("SELECT pg_advisory_xact_lock({lock})"),
        SLOW_ROUND,
    );
    let refused = refused_start(config);
    holder.join().unwrap();
    assert!(
        refused.contains(&name) && refused.contains("another process"),
        "{refused}"
    );
}

#[actix_rt::test]
async fn a_node_starting_while_another_nodes_round_holds_the_balancing_lock_starts_once_it_is_free()
{
    let Some(mut pg_env) = siemsync::testkit::service::Backend::Postgres.env() else {
        return;
    };
    pg_env.push((PG_LEASE.0.into(), PG_LEASE.1.into()));
    let url = env_value(&pg_env, "SIEMSYNC_POSTGRES_URL");
    // The schema first (a node's start migrates it), so that the lock below is
    // all the start waits for.
    PgStore::connect(PgOptions::new(&url, "observer"))
        .await
        .unwrap();
    let lock = siemsync::store::postgres::BALANCE_LOCK;
    let holder = hold_locks(
        &url,
        format!("SELECT pg_advisory_xact_lock({lock})"),
        SLOW_ROUND,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(dir.path(), &borrowed(&pg_env));
    holder.join().unwrap();
    assert_eq!(health(&node.api()).await.0, 200);
    node.stop();
}

#[actix_rt::test]
async fn a_clean_stop_hands_the_shards_back_also_while_a_transaction_of_its_own_still_holds_them() {
    let Some(mut pg_env) = siemsync::testkit::service::Backend::Postgres.env() else {
        return;
    };
    pg_env.push((PG_LEASE.0.into(), PG_LEASE.1.into()));
    let (url, name) = (
        env_value(&pg_env, "SIEMSYNC_POSTGRES_URL"),
        env_value(&pg_env, "SIEMSYNC_NODE_NAME"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(dir.path(), &borrowed(&pg_env));
    // A lease round the lease loop stopped waiting for at its time limit, or a
    // hand-back of surplus shards the shutdown cut short, still runs in PostgreSQL
    // and holds the node's lease rows a moment longer: the hand-back at the stop
    // waits for them instead of giving up after one lock wait.
    let holder = hold_locks(
        &url,
        format!("SELECT 1 FROM shard_leases WHERE owner = '{name}' FOR NO KEY UPDATE"),
        SLOW_ROUND,
    );
    node.stop();
    holder.join().unwrap();
    let observer = PgStore::connect(PgOptions::new(&url, "observer"))
        .await
        .unwrap();
    let nodes = observer.nodes().await.unwrap();
    let gone = nodes.iter().find(|n| n.name == name).expect("registered");
    assert!(gone.stopping && gone.shards == 0, "{nodes:?}");
}
