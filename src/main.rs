//! The `siemsync` command: `run` the service, `check-config` a file, `status` of a
//! running service, or `migrate` a sled data directory into PostgreSQL.

use anyhow::Context;
use clap::{Parser, Subcommand};
use siemsync::config::{Config, DEFAULT_PATH};
use std::io::Write;
use std::path::PathBuf;

/// Many small allocations per event (JSON bodies, batches): mimalloc serves them
/// faster than the system allocator and returns freed memory instead of fragmenting.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Forwards audit-log events and job updates to each customer's Splunk HEC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (API, web page and delivery) until SIGTERM or Ctrl-C.
    Run {
        /// Config file; SIEMSYNC_* environment variables override its keys.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Print a table of every integration of a running service: account, name, state,
    /// backlog, last success, last error. Authenticates with SIEMSYNC_ADMIN_TOKEN.
    Status {
        /// The service's base URL.
        #[arg(long, env = "SIEMSYNC_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Copy a stopped service's sled data directory into PostgreSQL (to run several nodes).
    ///
    /// Copies accounts, account tokens, integrations (HEC tokens stay sealed),
    /// checkpoints, dead letters, replays, gaps, undelivered audit events and job
    /// snapshots under their own ids and sequences, so every integration continues
    /// where it was. Safe to run again, also after an interruption. Refuses a directory
    /// a running service holds, a database a live node uses or that holds other data,
    /// and sealed HEC tokens without their key: SIEMSYNC_SECRET_KEY, or secret_key of
    /// --config. The sled directory is not changed; start the nodes (same secret_key)
    /// once it reports done.
    Migrate {
        /// The sled data directory (data_dir of the stopped service).
        #[arg(long, value_name = "DIR")]
        from_sled: PathBuf,
        /// The PostgreSQL database, as a libpq URL (postgres://user@host/db); a
        /// password is better given in SIEMSYNC_POSTGRES_URL (not seen in the
        /// process list) or as postgres_url in --config.
        #[arg(
            long,
            value_name = "URL",
            env = "SIEMSYNC_POSTGRES_URL",
            hide_env_values = true
        )]
        to_postgres: Option<String>,
        /// Take secret_key (and postgres_url, without --to-postgres) from this
        /// config file (the environment applied).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check a config file (with the environment applied) and say what is wrong.
    CheckConfig {
        #[arg(default_value = DEFAULT_PATH)]
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Status { url } => actix_web::rt::System::new().block_on(status(url)),
        Command::CheckConfig { path } => {
            Config::load(&path)?;
            println!("{}: ok", path.display());
            Ok(())
        }
        Command::Migrate {
            from_sled,
            to_postgres,
            config,
        } => migrate(from_sled, to_postgres, config),
        Command::Run { config: path } => {
            let config = Config::load(&path)?;
            actix_web::rt::System::new().block_on(run(config, path))
        }
    }
}

fn migrate(from: PathBuf, to: Option<String>, config: Option<PathBuf>) -> anyhow::Result<()> {
    use siemsync::store::to_postgres::{copy_sled_to_postgres, MoveOptions};
    let (secret_key, file_url) = match config {
        Some(path) => {
            let c = Config::load(&path)?;
            (c.secret_key, c.postgres_url)
        }
        None => (
            std::env::var("SIEMSYNC_SECRET_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            None,
        ),
    };
    let to = to.filter(|u| !u.is_empty()).or(file_url).context(
        "migrate: no PostgreSQL database given: --to-postgres URL, SIEMSYNC_POSTGRES_URL, or postgres_url in the --config file",
    )?;
    // Test builds: stop after N writes, as a kill would (the resume tests).
    #[cfg(feature = "test-hooks")]
    let exit_after_writes = std::env::var("SIEMSYNC_TEST_MIGRATE_EXIT_AFTER_WRITES")
        .ok()
        .and_then(|v| v.parse().ok());
    #[cfg(not(feature = "test-hooks"))]
    let exit_after_writes = None;
    let options = MoveOptions {
        from,
        to,
        secret_key,
        exit_after_writes,
    };
    let summary = copy_sled_to_postgres(&options, &mut |line| {
        println!("{line}");
        let _ = std::io::stdout().flush();
    })
    .context("migrate: the copy did not finish")?;
    print!("{}", summary.table());
    println!(
        "migrate: done; {} left unchanged. Start the nodes on PostgreSQL (same secret_key); keep the sled directory until they deliver",
        options.from.display()
    );
    Ok(())
}

async fn status(url: String) -> anyhow::Result<()> {
    let token = std::env::var("SIEMSYNC_ADMIN_TOKEN")
        .context("set SIEMSYNC_ADMIN_TOKEN to the service's admin token")?;
    let client = awc::Client::default();
    // A store that cannot write is the first thing an operator must know.
    let health = format!("{}/healthz", url.trim_end_matches('/'));
    if let Ok(mut resp) = client.get(&health).send().await {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !resp.status().is_success() {
            println!(
                "DEGRADED: {}",
                body["storage"]
                    .as_str()
                    .or(body["disk"].as_str())
                    .unwrap_or("the service is not healthy")
            );
        } else if let Some(disk) = body["disk"].as_str() {
            // Below the disk reserve: some accounts' ingest is refused.
            println!("DISK RESERVE: {disk}");
        }
    }
    let list = get_list(&client, &url, &token, "integrations").await?;
    print!("{}", siemsync::cli::status_table(&list, chrono::Utc::now()));
    let accounts = get_list(&client, &url, &token, "accounts").await?;
    print!("{}", siemsync::cli::top_accounts(&accounts, 10));
    // A server older than the nodes view answers 404: the rest is still worth showing.
    match get_list_if_served(&client, &url, &token, "nodes").await? {
        Some(nodes) => print!("{}", siemsync::cli::nodes_table(&nodes, chrono::Utc::now())),
        None => print!("{}", siemsync::cli::nodes_not_served()),
    }
    Ok(())
}

/// `GET /api/v1/{what}` as a list of JSON values.
async fn get_list(
    client: &awc::Client,
    url: &str,
    token: &str,
    what: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    get_list_if_served(client, url, token, what)
        .await?
        .with_context(|| {
            format!(
                "{}/api/v1/{what} answered 404: is this a siemsync service?",
                url.trim_end_matches('/')
            )
        })
}

/// `GET /api/v1/{what}` as a list of JSON values; `None` when the server answers
/// 404 (it has no such endpoint).
async fn get_list_if_served(
    client: &awc::Client,
    url: &str,
    token: &str,
    what: &str,
) -> anyhow::Result<Option<Vec<serde_json::Value>>> {
    let endpoint = format!("{}/api/v1/{what}", url.trim_end_matches('/'));
    let mut resp = client
        .get(&endpoint)
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {endpoint}: {e}"))?;
    let body = resp
        .body()
        .limit(64 << 20)
        .await
        .context("reading the answer")?;
    if resp.status() == awc::http::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !resp.status().is_success() {
        anyhow::bail!(
            "{endpoint} answered {}: {}",
            resp.status(),
            String::from_utf8_lossy(&body)
        );
    }
    serde_json::from_slice(&body)
        .map(Some)
        .with_context(|| format!("the answer is not a list of {what}"))
}

/// A second SIGTERM or SIGINT while the shutdown runs: the operator (or the
/// service manager) will not wait, so the process exits now with 128 + the signal's
/// number, as a process killed by it would. Nothing acknowledged is lost: ingest
/// answers only after its events are flushed to disk. A post abandoned in flight,
/// and a checkpoint moved since the last flush, mean events sent again after the
/// restart (at-least-once), never events lost.
fn exit_at_once(signal: &str, number: i32) -> ! {
    log::warn!(
        "second {signal} during the shutdown: exiting at once; posts in flight are abandoned and sent again after the restart (everything ingest acknowledged is already on disk)"
    );
    std::process::exit(128 + number)
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Taken before the service says it listens: a signal right after is not missed.
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut service = siemsync::start(config).context("siemsync could not start")?;
    service.watch_config(path);
    println!("siemsync listening on http://{}", service.addr);
    let _ = std::io::stdout().flush();
    let failed = tokio::select! {
        _ = term.recv() => { log::info!("SIGTERM: shutting down"); None }
        _ = int.recv() => { log::info!("SIGINT: shutting down"); None }
        e = service.failed() => { log::error!("{e}; shutting down"); Some(e) }
    };
    // The actors finish (or abandon) their posts in flight, then the store is flushed.
    // A second signal meanwhile ends the process at once (`exit_at_once`).
    let shutdown = service.shutdown();
    tokio::pin!(shutdown);
    let shut = tokio::select! {
        shut = &mut shutdown => shut,
        _ = term.recv() => exit_at_once("SIGTERM", 15),
        _ = int.recv() => exit_at_once("SIGINT", 2),
    };
    shut.context("shutting down")?;
    match failed {
        Some(e) => Err(e).context("siemsync stopped"),
        None => Ok(()),
    }
}
