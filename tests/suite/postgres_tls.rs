//! TLS to PostgreSQL, against a real server that requires it: the harness's TLS
//! cluster admits TCP clients over TLS only (`hostssl`), so every connection a
//! node makes that gets in (its pool, its lease connections, its control
//! listener) used TLS. libpq's `sslmode` values mean what they mean there; a
//! certificate that fails verification stops the start, never falls back to
//! plaintext. One TLS cluster is shared by these tests (a database each).

use crate::common::*;
use siemsync::store::postgres::{PgOptions, PgStore};
use siemsync::testkit::postgres::{shared_tls, PgCluster};
use siemsync::testkit::service::{self, InProcess};
use siemsync::testkit::HecServer;
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "dddddddd-0000-0000-0000-00000000000d";
const T: Duration = Duration::from_secs(30);

/// The shared TLS cluster and a new database on it.
fn tls_db() -> Option<(&'static PgCluster, String)> {
    let pg = shared_tls()?;
    let db = pg.create_database().unwrap();
    Some((pg, db))
}

/// Why a node with `url` does not start (it must not).
fn start_error(data_dir: &Path, url: &str) -> String {
    let env = with_overrides(
        data_dir,
        &[
            ("SIEMSYNC_STORE", "postgres"),
            ("SIEMSYNC_POSTGRES_URL", url),
            ("SIEMSYNC_NODE_NAME", "tls"),
        ],
    );
    let started = service::config(&service::shipped_config(), &env).and_then(InProcess::start);
    match started {
        Ok(_) => panic!("a node started on {url}"),
        Err(e) => {
            // What an operator reads (visible with --nocapture).
            eprintln!("refused: {e}");
            e.to_string()
        }
    }
}

/// Another CA's certificate, as a PEM file in `dir`: it signed nothing the
/// server presents.
fn stranger_ca(dir: &Path) -> std::path::PathBuf {
    let (ca, _, _) = test_pki(&["127.0.0.1"]);
    let path = dir.join("stranger-ca.pem");
    std::fs::write(&path, ca).unwrap();
    path
}

#[actix_rt::test]
async fn a_node_on_verify_full_with_the_servers_ca_ingests_and_delivers_over_tls() {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    let ca = pg.ca_file().unwrap();
    // Two hosts, the first one down, asking for the writable one: the multi-host
    // failover keeps working with TLS (each host's certificate is checked against
    // its own name).
    let url = format!(
        "postgresql://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&connect_timeout=2&sslmode=verify-full&sslrootcert={}",
        closed_port(),
        pg.primary_port(),
        ca.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let svc = Siemsync::start(
        dir.path(),
        &[
            ("SIEMSYNC_STORE", "postgres"),
            ("SIEMSYNC_POSTGRES_URL", &url),
            ("SIEMSYNC_NODE_NAME", "tls-node"),
        ],
    );
    let api = svc.api();
    let hec = HecServer::start(TOKEN);
    api.enable_account("acme").await;
    api.add_integration("acme", TOKEN, &hec.base_url()).await;
    let (status, body) = api.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
    api.post_audit("acme", &audit_events("tls", 0, 50)).await;
    eventually(T, "the 50 events delivered", || {
        first_arrivals(audit_ids(&hec.events())).len() >= 50
    })
    .await;
    let want: Vec<String> = (0..50).map(|i| format!("tls-{i}")).collect();
    assert_eq!(first_arrivals(audit_ids(&hec.events())), want);
    // Every session of the node on this database is encrypted (a plaintext one
    // could not have got in; this says the server agrees).
    let sessions = pg
        .psql(
            pg.primary_port(),
            "postgres",
            &format!(
                "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
                 FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.datname = '{db}'"
            ),
        )
        .unwrap();
    let (tls, plain) = sessions.trim().split_once('|').unwrap();
    assert!(tls.parse::<u32>().unwrap() > 0, "{sessions}");
    assert_eq!(plain, "0", "{sessions}");
}

#[test]
fn sslmode_disable_against_a_server_requiring_tls_is_refused_with_the_servers_reason() {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let e = start_error(dir.path(), &pg.tls_url(&db, "disable", None));
    assert!(
        e.contains("pg_hba.conf") && e.contains("no encryption"),
        "the server's refusal of a plaintext connection: {e}"
    );
}

#[test]
fn verify_full_with_a_ca_that_did_not_sign_the_servers_certificate_is_refused_naming_the_certificate(
) {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let stranger = stranger_ca(dir.path());
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = start_error(dir.path(), &pg.tls_url(&db, mode, Some(&stranger)));
        assert!(
            e.contains("certificate") && e.contains("TLS"),
            "{mode}: the refusal names TLS and the certificate: {e}"
        );
    }
}

#[test]
fn verify_ca_checks_the_chain_and_verify_full_also_the_host_name() {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    let ca = pg.ca_file().unwrap();
    // Reached at the right address under a name the certificate does not hold.
    let url = |mode: &str| {
        format!(
            "postgresql://postgres@db.example.invalid:{}/{db}?hostaddr=127.0.0.1&connect_timeout=2&sslmode={mode}&sslrootcert={}",
            pg.primary_port(),
            ca.display()
        )
    };
    let store = siemsync::store::postgres::park_until_done(PgStore::connect(PgOptions::new(
        url("verify-ca"),
        "verify-ca",
    )))
    .unwrap_or_else(|e| panic!("verify-ca does not check the name: {e}"));
    store.wait(store.probe()).unwrap();
    drop(store);
    let dir = tempfile::tempdir().unwrap();
    let e = start_error(dir.path(), &url("verify-full"));
    assert!(
        e.contains("certificate") && e.contains("TLS"),
        "verify-full checks the name: {e}"
    );
}

#[test]
fn require_and_prefer_without_a_root_certificate_connect_over_tls() {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    for mode in ["require", "prefer"] {
        let store = siemsync::store::postgres::park_until_done(PgStore::connect(PgOptions::new(
            pg.tls_url(&db, mode, None),
            mode,
        )))
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        store.wait(store.probe()).unwrap();
    }
}

#[actix_rt::test]
async fn migrate_copies_a_sled_directory_into_a_database_over_verified_tls() {
    let Some((pg, db)) = tls_db() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut svc = Siemsync::start(dir.path(), &[]);
    svc.api().enable_account("acme").await;
    svc.stop();
    let url = pg.tls_url(&db, "verify-full", pg.ca_file());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siemsync"))
        .args(["migrate", "--from-sled"])
        .arg(dir.path())
        .args(["--to-postgres", &url])
        .env_remove("SIEMSYNC_SECRET_KEY")
        .env_remove("SIEMSYNC_POSTGRES_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let accounts = pg
        .psql(pg.primary_port(), &db, "SELECT account FROM accounts")
        .unwrap();
    assert_eq!(accounts.trim(), "acme");
}
