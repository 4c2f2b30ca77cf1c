//! The `siemsync` command: `run` the service, or `check-config` a file.

use anyhow::Context;
use clap::{Parser, Subcommand};
use siemsync::config::{Config, DEFAULT_PATH};
use std::io::Write;
use std::path::PathBuf;

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
    /// Check a config file (with the environment applied) and say what is wrong.
    CheckConfig {
        #[arg(default_value = DEFAULT_PATH)]
        path: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::CheckConfig { path } => {
            Config::load(&path)?;
            println!("{}: ok", path.display());
            Ok(())
        }
        Command::Run { config: path } => {
            let config = Config::load(&path)?;
            actix_web::rt::System::new().block_on(run(config, path))
        }
    }
}

async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let service = siemsync::start(config).context("siemsync could not start")?;
    siemsync::reload::watch(path, service.store.clone(), service.supervisor.clone());
    println!("siemsync listening on http://{}", service.addr);
    let _ = std::io::stdout().flush();
    // Returns on SIGTERM / SIGINT once in-flight requests finished (actix-web's graceful stop).
    service.server.await.context("the HTTP server failed")?;
    log::info!("shutting down: flushing the store");
    service
        .store
        .flush_now()
        .context("flushing the store at shutdown")?;
    Ok(())
}
