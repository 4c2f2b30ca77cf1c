//! Moving a single node from sled to PostgreSQL with `siemsync migrate`, run as the
//! binary, as an operator would: after the move nothing is lost or re-sent beyond
//! the post in flight, dead letters and a running replay come along, running it
//! again (or after it was killed half way) changes nothing, and it refuses to copy
//! into a database a node uses, with the wrong key, or from a directory in use.

use crate::common::*;
use serde_json::{json, Value};
use siemsync::testkit::postgres::PgCluster;
use siemsync::testkit::{Behaviour, HecServer};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const TOKEN: &str = "dddddddd-0000-0000-0000-00000000000d";
const KEY: &str = "the key sealing the HEC tokens, long enough for it";
const T: Duration = Duration::from_secs(30);

fn cluster() -> Option<&'static PgCluster> {
    siemsync::testkit::postgres::shared()
}

/// Runs `siemsync migrate` on `dir` into `url` with extra environment.
fn migrate(dir: &Path, url: &str, env: &[(&str, &str)]) -> Output {
    migrate_with(dir, &["--to-postgres", url], env)
}

/// Runs `siemsync migrate` on `dir` with `args` and extra environment.
fn migrate_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_siemsync"));
    cmd.args(["migrate", "--from-sled"])
        .arg(dir)
        .args(args)
        .env_remove("SIEMSYNC_SECRET_KEY")
        .env_remove("SIEMSYNC_POSTGRES_URL")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running siemsync migrate")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn migrated(dir: &Path, url: &str) -> String {
    let out = migrate(dir, url, &[("SIEMSYNC_SECRET_KEY", KEY)]);
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

/// Starts a node on `env` in this process; its start error, if it was refused
/// (a node that started is stopped, and `None` answered).
fn start_refusal(data_dir: &Path, env: &[(&str, &str)]) -> Option<String> {
    use siemsync::testkit::service;
    let c = service::config(&service::shipped_config(), &with_overrides(data_dir, env))
        .expect("test config");
    match service::InProcess::start(c) {
        Ok(mut node) => {
            node.stop();
            None
        }
        Err(e) => Some(format!("{e:#}")),
    }
}

fn psql(pg: &PgCluster, db: &str, q: &str) -> String {
    pg.psql(pg.primary_port(), db, q)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .trim()
        .to_owned()
}

fn pg_env<'a>(url: &'a str, name: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("SIEMSYNC_STORE", "postgres"),
        ("SIEMSYNC_POSTGRES_URL", url),
        ("SIEMSYNC_NODE_NAME", name),
        ("SIEMSYNC_SECRET_KEY", KEY),
    ]
}

fn failing() -> Behaviour {
    Behaviour::busy()
}

async fn dead_letter_ids(api: &Api, id: &str) -> (u64, Vec<String>) {
    let dl = api
        .ok(
            "GET",
            &format!("/api/v1/accounts/acme/integrations/{id}/dead-letters"),
            None,
        )
        .await;
    let ids = dl["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"]["event"]["id"].as_str().unwrap().to_owned())
        .collect();
    (dl["total"].as_u64().unwrap(), ids)
}

#[actix_rt::test]
async fn after_moving_to_postgres_the_backlog_dead_letters_and_running_replay_carry_on_and_nothing_delivered_is_resent(
) {
    let Some(pg) = cluster() else { return };
    let url = pg.url(&pg.create_database().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    hec.configure(|c| c.reject_events_containing = vec!["event number 3\"".into()]);
    let mut svc = Siemsync::start(dir.path(), &[("SIEMSYNC_SECRET_KEY", KEY)]);
    let api = svc.api();
    api.enable_account("acme").await;
    let secret = api
        .ok(
            "POST",
            "/api/v1/accounts/acme/tokens",
            Some(json!({"name": "ops"})),
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = api.add_integration("acme", TOKEN, &hec.base_url()).await;
    api.post_audit("acme", &audit_events("e", 0, 10)).await;
    let before = status_until(&api, "acme", &id, "the first 10 delivered", |s| {
        s["backlog"]["events"] == 0 && s["dead_letters"] == 1
    })
    .await;
    // Splunk goes down: a backlog builds up, and a replay of the first ten starts and
    // cannot get through.
    hec.set_behaviour(failing());
    api.post_audit("acme", &audit_events("e", 10, 200)).await;
    let path = format!("/api/v1/accounts/acme/integrations/{id}");
    let window = json!({"from": "2026-11-25T10:00:00Z", "to": "2026-11-25T10:00:09.500Z"});
    let (s, v) = api
        .admin("POST", &format!("{path}/replay"), Some(window))
        .await;
    assert_eq!(s, 202, "{v}");
    status_until(&api, "acme", &id, "the replay tried and failed", |s| {
        s["replay"]["state"] == "running" && !s["replay"]["error"].is_null()
    })
    .await;
    svc.stop();
    let delivered_on_sled = audit_ids(&hec.events());
    let want_before: Vec<String> = (0..10)
        .filter(|i| *i != 3)
        .map(|i| format!("e-{i}"))
        .collect();
    assert_eq!(delivered_on_sled, want_before);
    let arrived_before = hec.events().len();

    let report = migrated(dir.path(), &url);
    assert!(
        report.contains("audit chunks") && report.contains("dead letters"),
        "{report}"
    );
    hec.configure(|c| c.reject_events_containing.clear());
    hec.set_behaviour(Behaviour::Normal);
    let node_dir = tempfile::tempdir().unwrap();
    let node = Siemsync::start(node_dir.path(), &pg_env(&url, "after-move"));
    let api = node.api();
    let st = status_until(&api, "acme", &id, "the backlog and the replay done", |s| {
        s["backlog"]["events"] == 0 && s["replay"]["state"] == "done"
    })
    .await;
    assert_eq!(st["replay"]["total"], 10, "{:#}", st["replay"]);
    assert_eq!(st["replay"]["sent"], 10, "{:#}", st["replay"]);
    // The checkpoint came along: its count goes on from where sled left it.
    assert_eq!(
        st["delivered"]["audit"].as_u64().unwrap(),
        // The backlog, and siemsync's own "replay requested" event.
        before["delivered"]["audit"].as_u64().unwrap() + 201,
        "{st:#}"
    );
    // The backlog once each, and the replay's window once: nothing else again.
    let after: Vec<String> = audit_ids(&hec.events()[arrived_before..]);
    let want: Vec<String> = (0..210).map(|i| format!("e-{i}")).collect();
    assert_eq!(by_number(after), want);
    assert_eq!(
        dead_letter_ids(&api, &id).await,
        (1, vec!["e-3".to_owned()]),
        "the dead letter came along"
    );
    // The account token works; ingest goes on after the copied sequences, and the
    // dedup window came along (e-209 is a retry).
    let (s, v) = api
        .call(
            "GET",
            "/api/v1/accounts/acme/integrations",
            Some(&secret),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut more = audit_events("e", 210, 5).as_array().unwrap().clone();
    more.push(audit_events("e", 209, 1)[0].clone());
    let v = api.post_audit("acme", &Value::Array(more)).await;
    assert_eq!(
        (v["accepted"].as_u64(), v["duplicates"].as_u64()),
        (Some(5), Some(1)),
        "{v}"
    );
    eventually(T, "the new events delivered", || {
        audit_ids(&hec.events()).contains(&"e-214".to_owned())
    })
    .await;
    let after: Vec<String> = audit_ids(&hec.events()[arrived_before..]);
    let want: Vec<String> = (0..215).map(|i| format!("e-{i}")).collect();
    assert_eq!(by_number(after), want);
}

/// Every table the copy writes, as text, in a fixed order (bodies as hashes).
fn dump(pg: &PgCluster, db: &str) -> String {
    let queries = [
        "SELECT account, siem_enabled, updated_at, ingest_events_per_sec, ingest_burst,
           max_backlog_bytes FROM accounts ORDER BY 1",
        "SELECT id, hash, account, name, created_at FROM account_tokens ORDER BY 1",
        "SELECT id, account, shard, version, created_at, doc FROM integrations ORDER BY 1",
        "SELECT * FROM checkpoints ORDER BY 1",
        "SELECT integration, id, doc FROM dead_letters ORDER BY 1, 2",
        "SELECT * FROM replays ORDER BY 1",
        "SELECT * FROM connection_reports ORDER BY 1",
        "SELECT * FROM gaps ORDER BY 1, 2",
        "SELECT account, first_seq, last_seq, stored_at, md5(body) FROM audit_chunks ORDER BY 1, 2",
        "SELECT account, first_seq, md5(hashes) FROM audit_ids ORDER BY 1, 2",
        "SELECT account, job, change_seq, running, finished, snapshot FROM jobs ORDER BY 1, 2",
        "SELECT * FROM job_tombstones ORDER BY 1, 2",
        "SELECT * FROM account_heads ORDER BY 1",
    ];
    queries
        .iter()
        .map(|q| {
            pg.psql(pg.primary_port(), db, q)
                .unwrap_or_else(|e| panic!("{q}: {e}"))
        })
        .collect::<Vec<_>>()
        .join("\n--\n")
}

/// A stopped sled service with a backlog over several chunks, jobs, a dead letter,
/// a connection report, account limits and an account token; and a second account
/// with events and a job of its own.
async fn sled_with_backlog(dir: &Path, hec: &HecServer) -> String {
    hec.configure(|c| c.reject_events_containing = vec!["event number 1\"".into()]);
    let mut svc = Siemsync::start(dir, &[("SIEMSYNC_SECRET_KEY", KEY)]);
    let api = svc.api();
    api.ok(
        "PUT",
        "/api/v1/accounts/acme",
        Some(
            json!({"siem_enabled": true, "ingest_events_per_sec": 5000, "ingest_burst": 9000,
                    "max_backlog_bytes": 1_000_000_000}),
        ),
    )
    .await;
    api.ok("POST", "/api/v1/accounts/acme/tokens", Some(json!({})))
        .await;
    let id = api.add_integration("acme", TOKEN, &hec.base_url()).await;
    api.ok(
        "POST",
        &format!("/api/v1/accounts/acme/integrations/{id}/test"),
        None,
    )
    .await;
    api.enable_account("beta").await;
    api.post_audit("beta", &audit_events("b", 0, 70)).await;
    api.post_jobs(
        "beta",
        &json!([{"job": "6f1c2a9e-0000-0000-0000-0000000000b1", "type": "backup", "status": "successful"}]),
    )
    .await;
    api.post_audit("acme", &audit_events("e", 0, 3)).await;
    status_until(&api, "acme", &id, "a dead letter", |s| {
        s["backlog"]["events"] == 0 && s["dead_letters"] == 1
    })
    .await;
    hec.set_behaviour(failing());
    for from in (3..300).step_by(99) {
        api.post_audit("acme", &audit_events("e", from, 99)).await;
    }
    api.post_jobs(
        "acme",
        &json!([{"job": "6f1c2a9e-0000-0000-0000-000000000001", "type": "backup", "status": "in progress", "progress": 0.5},
                {"job": "6f1c2a9e-0000-0000-0000-000000000002", "type": "restore", "status": "successful"}]),
    )
    .await;
    svc.stop();
    id
}

#[actix_rt::test]
async fn migrating_again_or_after_a_kill_half_way_ends_in_the_same_database_with_nothing_doubled() {
    let Some(pg) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    sled_with_backlog(dir.path(), &hec).await;

    let once = pg.create_database().unwrap();
    migrated(dir.path(), &pg.url(&once));
    let resumed = pg.create_database().unwrap();
    let resumed_url = pg.url(&resumed);
    // Writes: the marker, the heads of acme and beta, the dead letter numbering,
    // accounts, tokens, the integration, then per account its chunks, ids and jobs
    // (acme 8-10, beta 11-13), then the marker done. Killed after the heads (3),
    // in the middle of acme (8) and between the two accounts (10).
    for writes in ["3", "8", "10"] {
        let out = migrate(
            dir.path(),
            &resumed_url,
            &[
                ("SIEMSYNC_SECRET_KEY", KEY),
                ("SIEMSYNC_TEST_MIGRATE_EXIT_AFTER_WRITES", writes),
            ],
        );
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }
    assert_eq!(
        psql(pg, &resumed, "SELECT count(*) FROM account_heads"),
        "2",
        "the heads are written first"
    );
    assert_eq!(
        psql(pg, &resumed, "SELECT state FROM sled_import"),
        "copying"
    );
    assert_eq!(
        psql(
            pg,
            &resumed,
            "SELECT count(*) FROM audit_chunks WHERE account = 'beta'"
        ),
        "0",
        "killed before beta's events"
    );
    migrated(dir.path(), &resumed_url);
    let again = migrated(dir.path(), &resumed_url);
    assert_eq!(dump(pg, &once), dump(pg, &resumed));
    let chunks = pg
        .psql(
            pg.primary_port(),
            &resumed,
            "SELECT count(*) = count(DISTINCT (account, first_seq)) AND count(*) > 2 FROM audit_chunks",
        )
        .unwrap();
    assert_eq!(chunks.trim(), "t", "several chunks, none doubled");
    assert_eq!(psql(pg, &resumed, "SELECT state FROM sled_import"), "done");
    // Dead letters made from now on are numbered after the copied ones.
    assert_eq!(
        psql(
            pg,
            &resumed,
            "SELECT nextval('dead_letter_ids') > max(id) FROM dead_letters"
        ),
        "t"
    );
    assert_eq!(
        psql(pg, &resumed, "SELECT count(*) FROM connection_reports"),
        "1"
    );
    // The third run found everything there and added nothing.
    let table: Vec<&str> = again
        .lines()
        .skip_while(|l| !l.starts_with("KIND"))
        .skip(1)
        .take_while(|l| !l.starts_with("migrate:"))
        .collect();
    assert!(table.len() >= 8, "{again}");
    for line in table {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let n = cols.len();
        assert_eq!(cols[n - 2], "0", "nothing added again: {line}\n{again}");
    }

    // Once a node ran on the database, even without a change anyone can see, a
    // copy into it is refused, changes nothing, and the nodes still start: run
    // again, it could bring back what they deleted, or stop half-way on a
    // checkpoint they moved and leave the marker saying `copying`.
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&resumed_url, "user"));
    node.stop();
    let before = dump(pg, &resumed);
    let out = migrate(dir.path(), &resumed_url, &[("SIEMSYNC_SECRET_KEY", KEY)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("siemsync nodes have run on it since"),
        "{}",
        text(&out)
    );
    assert_eq!(dump(pg, &resumed), before);
    assert_eq!(psql(pg, &resumed, "SELECT state FROM sled_import"), "done");
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&resumed_url, "user"));
    node.api()
        .post_audit("acme", &audit_events("new", 0, 1))
        .await;
    node.stop();
}

#[actix_rt::test]
async fn migrate_refuses_a_directory_in_use_a_wrong_or_missing_key_and_a_database_a_node_uses() {
    let Some(pg) = cluster() else { return };
    let db = pg.create_database().unwrap();
    let url = pg.url(&db);
    let untouched = || {
        pg.psql(
            pg.primary_port(),
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'integrations'",
        )
        .unwrap()
        .trim()
        .to_owned()
    };
    let refusal = |out: Output, says: &str| {
        let t = text(&out);
        assert!(
            !out.status.success() && t.contains(says),
            "wanted {says:?}: {t}"
        );
    };
    let empty = tempfile::tempdir().unwrap();
    refusal(
        migrate(empty.path(), &url, &[]),
        "is not a siemsync data directory",
    );
    assert!(
        std::fs::read_dir(empty.path()).unwrap().next().is_none(),
        "no sled database was made in the empty directory"
    );

    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    let mut svc = Siemsync::start(dir.path(), &[("SIEMSYNC_SECRET_KEY", KEY)]);
    let api = svc.api();
    api.enable_account("acme").await;
    api.add_integration("acme", TOKEN, &hec.base_url()).await;
    refusal(
        migrate(dir.path(), &url, &[("SIEMSYNC_SECRET_KEY", KEY)]),
        "is in use by a running siemsync: stop it first",
    );
    svc.stop();
    refusal(
        migrate(
            dir.path(),
            &url,
            &[(
                "SIEMSYNC_SECRET_KEY",
                "another key, also long enough to be one",
            )],
        ),
        "SIEMSYNC_SECRET_KEY differs from the key it was stored with",
    );
    refusal(migrate(dir.path(), &url, &[]), "set SIEMSYNC_SECRET_KEY");
    assert_eq!(untouched(), "0", "nothing written, not even the schema");

    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "live-one"));
    refusal(
        migrate(dir.path(), &url, &[("SIEMSYNC_SECRET_KEY", KEY)]),
        "siemsync nodes are live on this PostgreSQL database (live-one)",
    );
    let accounts = pg
        .psql(pg.primary_port(), &db, "SELECT count(*) FROM accounts")
        .unwrap();
    assert_eq!(
        accounts.trim(),
        "0",
        "nothing copied into the live database"
    );
    node.stop();
}

#[actix_rt::test]
async fn a_node_refuses_to_start_while_a_copy_is_unfinished_and_starts_once_it_is_run_again() {
    let Some(pg) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    sled_with_backlog(dir.path(), &hec).await;
    let db = pg.create_database().unwrap();
    let url = pg.url(&db);
    // Killed right after its first write (the marker): no data is there yet.
    let out = migrate(
        dir.path(),
        &url,
        &[
            ("SIEMSYNC_SECRET_KEY", KEY),
            ("SIEMSYNC_TEST_MIGRATE_EXIT_AFTER_WRITES", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let node_dir = tempfile::tempdir().unwrap();
    let refused = start_refusal(node_dir.path(), &pg_env(&url, "too-early"))
        .expect("a node started on a half-copied database");
    assert!(
        refused.contains(
            "a migrate from sled is under way or was interrupted: run it again to finish"
        ),
        "{refused}"
    );
    // Refused, the node left at once: the copy runs again without waiting for its
    // heartbeat to lapse. (The URL, with a password, from the environment: not
    // on the command line.)
    let out = migrate_with(
        dir.path(),
        &[],
        &[
            ("SIEMSYNC_SECRET_KEY", KEY),
            ("SIEMSYNC_POSTGRES_URL", &url),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    const NEWEST: &str = "SELECT max(last_seq) FROM audit_chunks WHERE account = 'acme'";
    let copied = psql(pg, &db, NEWEST);
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "in-time"));
    let v = node
        .api()
        .post_audit("acme", &audit_events("late", 0, 1))
        .await;
    assert_eq!(v["accepted"].as_u64(), Some(1), "{v}");
    node.stop();
    // The new event's sequence comes after every copied one.
    let next = copied.parse::<u64>().unwrap() + 1;
    assert_eq!(psql(pg, &db, NEWEST), next.to_string());
}

#[actix_rt::test]
async fn migrate_into_a_database_with_another_history_of_the_account_is_refused_before_anything_is_written(
) {
    let Some(pg) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    sled_with_backlog(dir.path(), &hec).await;
    // Another cluster used this database: account acme has a history of its own
    // there (its events are kept while its SIEM feature is off, so it has no
    // account row that would differ from the copy's).
    let db = pg.create_database().unwrap();
    let url = pg.url(&db);
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "other-cluster"));
    let v = node
        .api()
        .post_audit("acme", &audit_events("theirs", 0, 2))
        .await;
    assert_eq!(v["accepted"].as_u64(), Some(2), "{v}");
    node.stop();
    let before = dump(pg, &db);
    let out = migrate(dir.path(), &url, &[("SIEMSYNC_SECRET_KEY", KEY)]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out)
            .contains("already holds different data for the newest sequences of account acme"),
        "{}",
        text(&out)
    );
    assert_eq!(dump(pg, &db), before, "nothing was written");
    assert_eq!(psql(pg, &db, "SELECT count(*) FROM sled_import"), "0");
    // Nodes still start on it.
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "other-cluster"));
    node.stop();
}

#[actix_rt::test]
async fn migrate_refuses_a_live_node_before_changing_the_schema() {
    let Some(pg) = cluster() else { return };
    let db = pg.create_database().unwrap();
    let url = pg.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    sled_with_backlog(dir.path(), &hec).await;
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "older-one"));
    // As if the live node were of an older version, that did not apply the newest
    // migration (its objects stay: running it again would fail, as a changed
    // schema would): the copy must leave the schema alone.
    let newest = siemsync::store::postgres::schema::MIGRATIONS
        .last()
        .unwrap()
        .version;
    psql(
        pg,
        &db,
        &format!("DELETE FROM siemsync_migrations WHERE version = {newest}"),
    );
    let out = migrate(dir.path(), &url, &[("SIEMSYNC_SECRET_KEY", KEY)]);
    assert!(
        !out.status.success()
            && text(&out)
                .contains("siemsync nodes are live on this PostgreSQL database (older-one)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        psql(
            pg,
            &db,
            &format!("SELECT count(*) FROM siemsync_migrations WHERE version = {newest}")
        ),
        "0",
        "the schema was not migrated"
    );
    node.stop();
}

#[actix_rt::test]
async fn migrate_refuses_a_directory_with_an_interrupted_token_reseal_and_leaves_it_as_it_was() {
    let Some(pg) = cluster() else { return };
    let db = pg.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[]);
    svc.api().enable_account("acme").await;
    svc.stop();
    // What a rewrite sealing the tokens leaves when killed after the swap: the
    // service's next start finishes it; a copy must not.
    let aside = dir.path().join(".reseal-old");
    std::fs::create_dir(&aside).unwrap();
    std::fs::write(aside.join("db"), b"the old files").unwrap();
    let out = migrate(dir.path(), &pg.url(&db), &[]);
    assert!(
        !out.status.success()
            && text(&out).contains("start and stop the service once with this version first"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(aside.join("db")).unwrap(),
        b"the old files",
        "the directory was left as it was"
    );
    assert_eq!(
        psql(
            pg,
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "0",
        "nothing written"
    );
}

#[actix_rt::test]
async fn clear_hec_tokens_are_sealed_by_a_copy_given_a_key_and_the_copy_runs_again() {
    let Some(pg) = cluster() else { return };
    let db = pg.create_database().unwrap();
    let url = pg.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let hec = HecServer::start(TOKEN);
    // The sled service ran without a key: its HEC token is stored in clear.
    let mut svc = Siemsync::start(dir.path(), &[]);
    let api = svc.api();
    api.enable_account("acme").await;
    api.add_integration("acme", TOKEN, &hec.base_url()).await;
    svc.stop();
    assert!(!files_holding(dir.path(), TOKEN.as_bytes()).is_empty());
    let warned = migrate(dir.path(), &pg.url(&pg.create_database().unwrap()), &[]);
    assert!(
        warned.status.success()
            && text(&warned).contains("warning: 1 HEC tokens are stored in clear"),
        "{}",
        text(&warned)
    );
    migrated(dir.path(), &url);
    // Sealed with a fresh nonce each run: the second run still finds it identical.
    migrated(dir.path(), &url);
    let stored = psql(pg, &db, "SELECT doc->>'hec_token' FROM integrations");
    assert!(
        stored.starts_with("enc:v1:") && !stored.contains(TOKEN),
        "{stored}"
    );
    let node_dir = tempfile::tempdir().unwrap();
    let mut node = Siemsync::start(node_dir.path(), &pg_env(&url, "sealed"));
    node.api()
        .post_audit("acme", &audit_events("s", 0, 3))
        .await;
    eventually(T, "delivered with the opened token", || {
        audit_ids(&hec.events()).contains(&"s-2".to_owned())
    })
    .await;
    assert!(hec.events().len() >= 3);
    node.stop();
}
