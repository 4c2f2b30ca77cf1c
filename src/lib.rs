//! siemsync: forwards a backup platform's audit-log events and job updates to each
//! customer's Splunk HTTP Event Collector (README.md explains the product and its
//! HTTP contract).
//!
//! `start` wires config → store → actors → HTTP, and [`Service::shutdown`] takes
//! it all down again: the binary (`main.rs`) calls both inside an actix System, the
//! second on SIGTERM or Ctrl-C.
//!
//! How tests start it: the end-to-end tests are one binary (`tests/suite/main.rs`,
//! harness `tests/suite/common.rs`) built on the one launcher, `testkit::service`
//! (feature `test-hooks`). Most run the service in-process — `InProcess` calls
//! `start` on a thread of its own with its own actix System, on port 0 with a
//! temporary data directory and sub-second intervals — and stop it through
//! `Service::shutdown`. Only tests where a signal, SIGKILL, the log or the
//! process's `/proc` is the point run the real binary (`spawn_process`).
//! `tests/in_process_shutdown.rs` is a binary of its own, so the threads it counts
//! are its own. The end-to-end benchmarks run the binary through the same launcher
//! (`benches/support`); the unit tests next to the code open a store in a
//! temporary directory.

#![warn(missing_docs)]

pub mod actors;
pub mod background;
pub mod cli;
pub mod config;
pub mod control;
pub mod disk_reserve;
pub mod fd_limit;
#[cfg(test)]
mod footprint;
pub mod hec;
pub mod http;
pub mod huge_pages;
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
use actors::messages::{Reconcile, Shutdown};
use actors::shutdown::ShutdownReport;
use actors::{AuditCollector, DeliverySettings, JobCollector, Supervisor};
use background::Background;
use config::Config;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
    /// PostgreSQL (`store = "postgres"`) could not be used: unreachable, a schema
    /// newer than this build, or another node live on the database.
    #[error("cannot use PostgreSQL (postgres_url) as node {node}: {source}")]
    Postgres {
        /// This node's name.
        node: String,
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

/// Why the shutdown was not clean. Every step still ran: the actors were wound
/// down and the store flushed as far as it could be.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The HTTP server had failed, or its task panicked.
    #[error("the HTTP server failed: {0}")]
    Server(String),
    /// The Supervisor had already stopped, so no actor could be wound down.
    #[error("the Supervisor had already stopped: {0}")]
    Supervisor(actix::MailboxError),
    /// The store could not make the last writes durable.
    #[error("flushing the store at shutdown: {0}")]
    Store(store::StoreError),
}

/// A started service: the API's address, the handles tests and tools read, and what
/// [`Service::shutdown`] stops.
pub struct Service {
    /// Where the API listens (the real port when `listen` asked for port 0).
    pub addr: SocketAddr,
    /// The store, flushed last at shutdown.
    pub store: Store,
    /// The Supervisor of the delivery actors.
    pub supervisor: Addr<Supervisor>,
    /// The counters `/metrics` shows, readable without HTTP.
    pub metrics: Arc<metrics::Metrics>,
    /// The HTTP server, running on the System `start` was called in.
    server: actix_web::dev::ServerHandle,
    /// Its task: ends when it stops, or fails.
    serving: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
    /// The retention sweep's loop.
    retention: Background,
    /// The disk reserve's check.
    disk_check: Background,
    /// PostgreSQL only: the shard leases' renewal (and the clean hand-back at shutdown).
    leases: Background,
    /// PostgreSQL only: the control changes made through other nodes, applied here.
    control: Background,
    /// The config file's watcher, once started (`watch_config`).
    reload: Option<Background>,
    /// How often the watcher checks the file (`[timing] config_poll_secs`).
    config_poll: Duration,
    /// How long the posts in flight get to finish at shutdown.
    grace: Duration,
    /// The threads the integration actors run on, stopped after the actors.
    threads: actors::threads::DeliveryThreads,
}

impl Service {
    /// Reloads the config file's integrations on SIGHUP or when `path` changes,
    /// until the shutdown.
    pub fn watch_config(&mut self, path: PathBuf) {
        self.reload = Some(reload::watch(
            path,
            self.config_poll,
            self.store.clone(),
            self.supervisor.clone(),
        ));
    }

    /// Resolves if the HTTP server stops by itself (it failed): the service cannot
    /// go on and should be shut down. Pending for ever after that has been seen.
    pub async fn failed(&mut self) -> ShutdownError {
        let Some(serving) = self.serving.as_mut() else {
            return std::future::pending().await;
        };
        let ended = serving.await;
        self.serving = None;
        match ended {
            Ok(Ok(())) => ShutdownError::Server("it stopped by itself".into()),
            Ok(Err(e)) => ShutdownError::Server(e.to_string()),
            Err(e) => ShutdownError::Server(e.to_string()),
        }
    }

    /// Stops everything `start` started, in order: the HTTP server (requests in
    /// flight finish), the config watcher, the actors (each finishes its posts in
    /// flight within `shutdown_grace_secs` or abandons them, as the report and the log
    /// say) and their delivery threads, the retention sweep and the disk reserve's check; then flushes the store.
    /// Nothing of the service runs afterwards, and the actix System it ran on goes on.
    /// A retention sweep under way is asked to stop first, and ends after its current
    /// batch meanwhile.
    pub async fn shutdown(mut self) -> Result<ShutdownReport, ShutdownError> {
        self.retention.ask_stop();
        // PostgreSQL: claims nothing more while the actors wind down (a shard
        // claimed now would only be handed back at once, its actors never run).
        // Not waited for longer than a lease round: the rounds write it too.
        if let Some(pg) = self.store.postgres() {
            let marked = actix_rt::time::timeout(pg.round_limit(), pg.begin_stopping()).await;
            if !matches!(marked, Ok(Ok(()))) {
                log::warn!("shutting down: this node could not be marked as stopping in PostgreSQL now; it claims nothing more, and its next lease round marks it");
            }
        }
        self.server.stop(true).await;
        let server = match self.serving.take() {
            Some(serving) => match serving.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(ShutdownError::Server(e.to_string())),
                Err(e) => Err(ShutdownError::Server(e.to_string())),
            },
            None => Ok(()),
        };
        if let Some(reload) = self.reload.take() {
            reload.stop().await;
        }
        // Like the watcher: nothing tells the Supervisor of a change any more.
        self.control.stop().await;
        let report = self.supervisor.send(Shutdown { grace: self.grace }).await;
        // The actors are gone (or were left behind, said so): their threads end now.
        // A second of its own, so that a grace of 0 still lets an idle thread end.
        self.threads.stop(self.grace + Duration::from_secs(1)).await;
        self.retention.stop().await;
        self.disk_check.stop().await;
        self.leases.stop().await;
        if let Err(e) = self.store.leave() {
            // The leases then lapse by themselves after their time.
            log::warn!("shutting down: the shard leases could not be handed back: {e}");
        }
        log::info!("shutting down: flushing the store");
        let flushed = self.store.flush_now();
        server?;
        let report = report.map_err(ShutdownError::Supervisor)?;
        flushed.map_err(ShutdownError::Store)?;
        Ok(report)
    }
}

/// Opens the store (sealing tokens stored in clear first when a key is set) and
/// stores the integrations the config file declares.
fn open_store(config: &Config) -> Result<Store, StartError> {
    if config.store == config::StoreKind::Postgres {
        return open_postgres(config);
    }
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

/// Connects to PostgreSQL (`store = "postgres"`): migrates its schema, registers
/// this node and takes its shard leases, then stores the config file's integrations.
fn open_postgres(config: &Config) -> Result<Store, StartError> {
    let store_error = |source| StartError::Postgres {
        node: config.node_name.clone(),
        source,
    };
    let url = config.postgres_url.clone().ok_or_else(|| {
        store_error(store::StoreError::Unsupported(
            "store = \"postgres\" without postgres_url".into(),
        ))
    })?;
    let mut options = store::postgres::PgOptions::new(url, config.node_name.clone());
    options.secret_key = config.secret_key.clone();
    options.dedup_window = config.dedup_window;
    options.lease = config.timing.shard_lease_secs.get();
    let store = Store::connect_postgres(options).map_err(store_error)?;
    if config.secret_key.is_none() {
        log::warn!("SIEMSYNC_SECRET_KEY is not set: customers' HEC tokens are stored in clear in PostgreSQL");
    }
    store.all_integrations().map_err(store_error)?;
    let declared = config.file_integrations().map_err(StartError::Config)?;
    reload::store_file_integrations(&store, &declared).map_err(store_error)?;
    Ok(store)
}

/// PostgreSQL only: renews this node's shard leases every third of their time, so
/// its checkpoint commits stay fenced by a live lease (and, while PostgreSQL cannot
/// be reached, its fault shows in `/healthz` until a round succeeds again). When a
/// round changes the shards it holds, the Supervisor stops the actors of the
/// shards lost or handed over (posts in flight of a hand-over get `grace`) and
/// starts those of the shards gained; then the surplus is released for the node
/// short of shards.
///
/// The rounds run on a thread of their own, on a fixed tick (the first at once:
/// the start-up's work since the first round may have taken a while), each within
/// a time limit below the tick, on the store's own lease connections: nothing the
/// Supervisor, the actix thread, the blocking pool or the busy connection pool do
/// can make a renewal late. The hand-over runs beside the rounds.
fn spawn_leases(
    store: &Store,
    supervisor: Addr<Supervisor>,
    grace: Duration,
    metrics: Arc<metrics::Metrics>,
) -> Background {
    let mut job = Background::new("the shard leases");
    let Some(pg) = store.postgres() else {
        return job;
    };
    let node = metrics::NodeLabels {
        node: pg.node_name().to_owned(),
    };
    let renewals = LeaseCounters {
        // This node's series exist from the start: a node that never renewed shows 0.
        renewed: metrics.lease_renewals.get_or_create(&node).clone(),
        failed: metrics.lease_renewal_failures.get_or_create(&node).clone(),
        last: metrics.last_lease_renewal.get_or_create(&node).clone(),
    };
    // A hand-over no longer holds up a renewal, but the node short of shards
    // waits for it: a post in flight gets at most a lease to finish.
    let grace = grace.min(pg.lease_time());
    let store = store.clone();
    job.spawn(move |stop| async move {
        let (ended, done) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("siemsync-leases".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => {
                        let local = tokio::task::LocalSet::new();
                        rt.block_on(local.run_until(renew_leases(
                            store, supervisor, grace, renewals, stop,
                        )));
                    }
                    Err(e) => log::error!(
                        "postgres: the shard leases' thread cannot run ({e}): this node's leases lapse and it delivers nothing"
                    ),
                }
                let _ = ended.send(());
            });
        match thread {
            // Ends once the loop saw its stop signal.
            Ok(_) => {
                let _ = done.await;
            }
            Err(e) => log::error!(
                "postgres: the shard leases' thread cannot start ({e}): this node's leases lapse and it delivers nothing"
            ),
        }
    });
    job
}

/// The lease rounds' counters in `/metrics`.
struct LeaseCounters {
    renewed: prometheus_client::metrics::counter::Counter,
    failed: prometheus_client::metrics::counter::Counter,
    last: metrics::FloatGauge,
}

/// The lease loop of [`spawn_leases`], on its own thread until `stop`.
async fn renew_leases(
    store: Store,
    supervisor: Addr<Supervisor>,
    grace: Duration,
    counters: LeaseCounters,
    mut stop: background::StopSignal,
) {
    let Some(pg) = store.postgres().cloned() else {
        return;
    };
    let limit = pg.round_limit();
    // A fixed tick, not a sleep after each round's work: a slow round does not
    // push the next one later. The first tick is at once.
    let mut tick = tokio::time::interval(pg.lease_time() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The shards the Supervisor's actors run for: those of the first round, which
    // the start's reconcile read.
    let mut running = store.kept_leases();
    let mut handing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = stop.stopped() => break,
            _ = tick.tick() => {}
        }
        let round = match tokio::time::timeout(limit, store.renew_leases()).await {
            Ok(round) => round,
            Err(_) => Err(store::StoreError::Unavailable(format!(
                "the round did not end within {} s",
                limit.as_secs_f64()
            ))),
        };
        if round.is_ok() {
            counters.renewed.inc();
            counters
                .last
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        } else {
            counters.failed.inc();
        }
        let holdings = match round {
            Ok(Some(h)) => h,
            Ok(None) => break,
            // Another process took this node's name while its heartbeat had
            // lapsed: this one stops delivering (`Store::may_post`) as its
            // last renewal ages; the operator must stop one of the two.
            Err(e @ store::StoreError::Postgres(store::postgres::PgError::NameInUse { .. })) => {
                log::error!("postgres: renewing the shard leases refused: {e}; this process delivers nothing until it is the only one under its name");
                continue;
            }
            Err(e) => {
                log::warn!("postgres: renewing the shard leases failed: {e}; retrying");
                continue;
            }
        };
        // One hand-over at a time: the next round after it ends takes up what
        // changed meanwhile.
        if handing.as_ref().is_some_and(|h| !h.is_finished()) {
            continue;
        }
        let kept = holdings.kept_leases();
        let (gained, reclaimed) =
            store::postgres::lease_changes(&running, &kept, &store.stale_shards());
        let changed =
            !running.keys().eq(kept.keys()) || !gained.is_empty() || !reclaimed.is_empty();
        running = kept;
        if !changed && holdings.surplus.is_empty() {
            continue;
        }
        let (store, supervisor, surplus) = (store.clone(), supervisor.clone(), holdings.surplus);
        handing = Some(tokio::task::spawn_local(async move {
            if changed
                && supervisor
                    .send(actors::messages::Rebalance {
                        grace,
                        gained,
                        reclaimed,
                    })
                    .await
                    .is_err()
            {
                // Shutting down: its actors are stopped already.
                log::debug!("postgres: the Supervisor has stopped; handing over without it");
            }
            if surplus.is_empty() {
                return;
            }
            // Only once the actors of the surplus shards stopped (the answer above).
            match store.release_shards(&surplus).await {
                Ok(released) if !released.is_empty() => log::info!(
                    "postgres: handed {} shards over to the nodes short of their share",
                    released.len()
                ),
                Ok(_) => {}
                // Renewed by the next round, and handed over again then.
                Err(e) => log::warn!(
                    "postgres: releasing the surplus shards failed: {e}; retrying next round"
                ),
            }
        }));
    }
    // The shutdown hands every shard back (`Store::leave`) once this has ended.
    if let Some(h) = handing {
        h.abort();
    }
}

/// PostgreSQL only: retention drops whole audit partitions (see docs/scale-out.md)
/// every `every`, instead of the embedded store's per-account sweep; added to `job`,
/// the quota sweep's (which runs on both stores).
fn spawn_pg_retention(
    job: &mut Background,
    pg: store::postgres::PgStore,
    retention: Duration,
    every: Duration,
) {
    job.spawn(move |mut stop| async move {
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep(every) => {}
            }
            match pg.sweep(retention).await {
                Ok(outcome) => log::debug!("retention: {outcome:?}"),
                Err(e) => {
                    log::warn!("retention: the partition sweep failed: {e}; retrying next period")
                }
            }
        }
    });
}

/// Opens the store, starts the collectors, the Supervisor (which starts one actor per
/// active integration) and the HTTP server. Must run inside an actix System, which
/// runs all of it until [`Service::shutdown`].
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
    match huge_pages::disable() {
        Ok(true) => log::info!("transparent huge pages turned off for this process"),
        Ok(false) => {}
        Err(e) => log::warn!("transparent huge pages could not be turned off: {e}"),
    }
    // One process-wide TLS provider; ours is the only one compiled in.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = open_store(&config)?;
    let s = store.clone();
    let audit = SyncArbiter::start(2, move || AuditCollector::new(s.clone()));
    let s = store.clone();
    let jobs = SyncArbiter::start(2, move || JobCollector::new(s.clone()));
    let metrics = Arc::new(metrics::Metrics::new());
    let settings = DeliverySettings::of(&config, metrics.clone());
    let threads = actors::threads::DeliveryThreads::start(
        config.delivery_threads(),
        &actors::gate::GateGauges {
            in_use: metrics.sync_places_in_use.clone(),
            waiting: metrics.syncs_waiting.clone(),
        },
    );
    log::info!(
        "integrations run on {} delivery threads",
        threads.placement().len()
    );
    let supervisor = Supervisor::new(
        store.clone(),
        audit,
        jobs,
        settings,
        config.supervision(),
        threads.placement(),
    )
    .start();
    supervisor.do_send(Reconcile);

    // The reserve guards the disk sled writes to (off, 0, on PostgreSQL, whose disk
    // is PostgreSQL's to watch).
    let on_sled = store.postgres().is_none();
    let disk_reserve = Arc::new(disk_reserve::DiskReserve::new(
        &config.data_dir,
        if on_sled {
            config.min_free_disk_bytes
        } else {
            0
        },
    ));
    // The first reading before the first request; a failure is logged and nobody is
    // refused until a reading succeeds.
    if on_sled {
        let _ = disk_reserve.check(&store, config.account_max_backlog_bytes);
    }
    let state = actix_web::web::Data::new(http::AppState {
        store: store.clone(),
        supervisor: supervisor.clone(),
        config: Arc::new(config.clone()),
        metrics: metrics.clone(),
        ingest_limits: Arc::default(),
        disk_reserve: disk_reserve.clone(),
    });
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .wrap(http::security_headers())
            .app_data(state.clone())
            .configure(http::configure)
    })
    .shutdown_timeout(5)
    // The binary stops on SIGTERM / Ctrl-C through `Service::shutdown`; a service
    // started in a test must not take the process's signals.
    .disable_signals()
    .bind(config.listen)
    .map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    let sweep_every = config.timing.retention_sweep(config.retention());
    // The backlog quota on both stores; on sled also retention, which PostgreSQL
    // does by dropping partitions.
    let mut retention = retention::spawn(
        store.clone(),
        retention::Policy {
            retention: config.retention(),
            default_quota: config.account_max_backlog_bytes,
            notice_every: config.timing.retention_sweep(config.retention()),
        },
        sweep_every,
    );
    if let Some(pg) = store.postgres() {
        spawn_pg_retention(&mut retention, pg.clone(), config.retention(), sweep_every);
    }
    Ok(Service {
        addr,
        leases: spawn_leases(
            &store,
            supervisor.clone(),
            config.shutdown_grace(),
            metrics.clone(),
        ),
        control: control::spawn(
            &store,
            supervisor.clone(),
            config.timing.control_reread_secs.get(),
        ),
        retention,
        disk_check: if on_sled {
            disk_reserve::spawn(
                disk_reserve,
                store.clone(),
                config.account_max_backlog_bytes,
                config.timing.disk_check_secs.get(),
            )
        } else {
            Background::new("the disk reserve's check")
        },
        config_poll: config.timing.config_poll_secs.get(),
        store,
        supervisor,
        metrics,
        server: handle,
        serving: Some(actix_rt::spawn(server)),
        reload: None,
        grace: config.shutdown_grace(),
        threads,
    })
}
