//! siemsync: forwards a backup platform's audit-log events and job updates to each
//! customer's Splunk HTTP Event Collector (README.md explains the product and its
//! HTTP contract).
//!
//! `start` wires config → store → actors → HTTP. The binary (`main.rs`) calls it
//! inside an actix System. The end-to-end tests do not call it directly: they run
//! the real binary as a child process on port 0 with a temporary data directory
//! (`tests/common/mod.rs`), as the end-to-end benchmarks do (`benches/support`);
//! the unit tests next to the code open a store in a temporary directory.

pub mod actors;
pub mod cli;
pub mod config;
pub mod fd_limit;
pub mod hec;
pub mod http;
pub mod ingest_limit;
pub mod logsafe;
pub mod metrics;
pub mod model;
pub mod reload;
pub mod retention;
pub mod store;
/// The Splunk stand-in, the service launcher and a throwaway PostgreSQL, shared by
/// the tests and the benchmarks; not in a build without the `test-hooks` feature.
#[cfg(feature = "test-hooks")]
pub mod testkit;
pub mod timing;

use actix::prelude::*;
use actors::messages::Reconcile;
use actors::{AuditCollector, DeliverySettings, JobCollector, Supervisor};
use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use store::{Store, StoreOptions};

/// Why the service did not start; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory could not be opened (or its tokens sealed).
    #[error("cannot open the data directory {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// What the store said.
        source: store::StoreError,
    },
    /// The config file's integrations are invalid.
    #[error(transparent)]
    Config(config::ConfigError),
    /// The API's address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The `listen` address.
        addr: SocketAddr,
        /// Why it could not be bound.
        source: std::io::Error,
    },
}

/// A started service: the API's address, and the handles to stop it.
pub struct Service {
    /// Where the API listens (the real port when `listen` asked for port 0).
    pub addr: SocketAddr,
    /// The running HTTP server: awaiting it runs the service until it stops.
    pub server: actix_web::dev::Server,
    /// The store, to flush at shutdown.
    pub store: Store,
    /// The Supervisor of the delivery actors.
    pub supervisor: Addr<Supervisor>,
}

/// Opens the store (sealing tokens stored in clear first when a key is set) and
/// stores the integrations the config file declares.
fn open_store(config: &Config) -> Result<Store, StartError> {
    let store_error = |source| StartError::Store {
        dir: config.data_dir.display().to_string(),
        source,
    };
    if let Some(key) = &config.secret_key {
        // Tokens stored before the key was set are sealed by rewriting the whole
        // store, so that no clear copy stays behind in sled's files.
        store::seal_tokens_at_rest(&config.data_dir, &store::secrets::TokenCipher::new(key))
            .map_err(store_error)?;
    }
    let store = Store::open_with_options(
        &config.data_dir,
        &StoreOptions {
            secret_key: config.secret_key.clone(),
            cache_bytes: config.cache_mb << 20,
            dedup_window: config.dedup_window,
            watch_every: config.timing.store_watch_secs.get(),
            ..Default::default()
        },
    )
    .map_err(store_error)?;
    if config.secret_key.is_none() {
        log::warn!(
            "SIEMSYNC_SECRET_KEY is not set: customers' HEC tokens are stored in clear in {}",
            config.data_dir.display()
        );
    }
    store.all_integrations().map_err(store_error)?;
    let declared = config.file_integrations().map_err(StartError::Config)?;
    reload::store_file_integrations(&store, &declared).map_err(store_error)?;
    Ok(store)
}

/// Opens the store, starts the collectors, the Supervisor (which starts one actor per
/// active integration) and the HTTP server. Must run inside an actix System.
pub fn start(config: Config) -> Result<Service, StartError> {
    for key in config.development_tokens() {
        log::warn!(
            "`{key}` is the development token shipped in config/siemsync.toml: anyone who has read that file can use it. Set SIEMSYNC_{} before anyone but you can reach {}",
            key.to_ascii_uppercase(),
            config.listen
        );
    }
    match fd_limit::raise() {
        Ok((before, after)) if after > before => {
            log::info!("open files limit raised from {before} to {after} (the hard limit)")
        }
        Ok(_) => {}
        Err(e) => log::warn!("the open files limit could not be raised: {e}"),
    }
    // One process-wide TLS provider; ours is the only one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config)?;
    let s = store.clone();
    let audit = SyncArbiter::start(2, move || AuditCollector::new(s.clone()));
    let s = store.clone();
    let jobs = SyncArbiter::start(2, move || JobCollector::new(s.clone()));
    let metrics = Arc::new(metrics::Metrics::new());
    let settings = DeliverySettings {
        metrics: metrics.clone(),
        host: config.host.clone(),
        max_batch_bytes: config.max_batch_bytes,
        interval: config.sync_interval(),
        client: config.client_settings(),
        posts_in_flight: config.posts_in_flight,
        max_retry_after: config.max_retry_after_secs.get(),
        post_size_regrow: config.post_size_regrow_secs.get(),
        timing: config.timing.clone(),
    };
    let supervisor = Supervisor::new(store.clone(), audit, jobs, settings).start();
    supervisor.do_send(Reconcile);

    let state = actix_web::web::Data::new(http::AppState {
        store: store.clone(),
        supervisor: supervisor.clone(),
        config: Arc::new(config.clone()),
        metrics,
        ingest_limits: Arc::default(),
    });
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(http::security_headers())
            .app_data(state.clone())
            .configure(http::configure)
    })
    .shutdown_timeout(5)
    .bind(config.listen)
    .map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    retention::spawn(
        store.clone(),
        config.retention(),
        config.timing.retention_sweep(config.retention()),
    );
    let addr = server.addrs()[0];
    let server = server.run();
    Ok(Service {
        addr,
        server,
        store,
        supervisor,
    })
}
