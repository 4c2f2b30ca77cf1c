//! The PostgreSQL store: everything siemsync nodes share, so that several nodes can
//! run on one PostgreSQL (see docs/scale-out.md, "Storage on PostgreSQL").
//!
//! Same types and the same promises as the embedded store (`super::Store`), with
//! async methods, plus what several nodes need: integration versions with
//! compare-and-set, published delivery status, nodes with heartbeats, shard leases
//! and checkpoint commits fenced by them, and control notifications.
//!
//! Every operation runs on the store's own tokio runtime, whatever the caller's
//! (an actix arbiter, a test's runtime, or a plain thread through [`PgStore::block_on`]):
//! the connection pool spawns each connection's driver task where the connection is
//! made, and a driver must not die with the arbiter that happened to make it.

mod accounts;
mod audit;
mod connect;
mod error;
mod history;
mod import;
mod jobs;
mod leases;
mod nodes;
mod notify;
mod partitions;
mod quota;
mod registry;
pub mod schema;
pub mod tls;
mod tokens;

pub use audit::AuditChunk;
pub use error::PgError;
pub use import::{
    live_nodes_at, AccountHeads, Copied, ImportStart, IntegrationCopied, IntegrationCopy,
};
pub use leases::{lease_changes, CommitRecord, Fence, Holdings, NodeInfo, BALANCE_LOCK};
pub use nodes::NodeView;
pub use notify::{ControlAction, ControlEvent, ControlListener, ControlSignal, CONTROL_CHANNEL};
pub use partitions::SweepOutcome;
pub use registry::{
    Expected, IntegrationStamp, Posted, PublishedStatus, Versioned, RUNNING_REPLAYS_QUERY,
};

use super::dedup::RecentIds;
use super::secrets::TokenCipher;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// How a node opens the PostgreSQL store (from the config).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq URL; several hosts with `target_session_attrs=read-write` find the
    /// primary, also after a standby was promoted.
    pub url: String,
    /// This node's name in leases, heartbeats and the commit log (unique per node).
    pub node_name: String,
    /// The key sealing HEC tokens at rest; `None` stores them in clear.
    pub secret_key: Option<String>,
    /// Among how many of an account's latest audit events a repeated id is ignored.
    pub dedup_window: usize,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Threads of the store's runtime (they mostly wait on PostgreSQL).
    pub threads: usize,
    /// How long one operation may take before it counts as "PostgreSQL unavailable".
    pub op_timeout: Duration,
    /// The time span of one audit partition: retention drops whole partitions.
    pub partition_width: Duration,
    /// How many partitions beyond the current one exist ahead of time.
    pub partitions_ahead: u32,
    /// How long after its time span ended a partition may be dropped. An ingest
    /// that stalls for half of this between reading the clock and writing (a
    /// paused node) gives up instead of writing into a closed span.
    pub partition_grace: Duration,
    /// How long a shard lease lasts unless renewed.
    pub lease: Duration,
}

impl PgOptions {
    /// The defaults for everything but what has none.
    pub fn new(url: impl Into<String>, node_name: impl Into<String>) -> PgOptions {
        PgOptions {
            url: url.into(),
            node_name: node_name.into(),
            secret_key: None,
            dedup_window: super::DEFAULT_DEDUP_WINDOW,
            pool_size: 16,
            threads: 2,
            op_timeout: Duration::from_secs(30),
            partition_width: Duration::from_secs(86_400),
            partitions_ahead: 2,
            partition_grace: Duration::from_secs(300),
            lease: Duration::from_secs(15),
        }
    }
}

/// Cheap to clone: every clone is the same pool and runtime.
#[derive(Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
    runtime: Arc<Runtime>,
}

/// What the store's tasks use (never the runtime itself, which must not be dropped
/// from one of its own tasks).
struct Shared {
    pool: Pool,
    /// The lease rounds' own connections (see `connect`).
    lease_pool: Pool,
    /// The parsed URL with the lease rounds' connect timeout (`lease_config`), for
    /// the control listener's own connection.
    config: tokio_postgres::Config,
    /// The TLS settings of every connection (the pools' and the listener's).
    tls: tls::Tls,
    options: PgOptions,
    cipher: Option<TokenCipher>,
    /// Recently active accounts' dedup windows, brought up to date under the
    /// account's row lock with only what other nodes stored since.
    recent: Mutex<RecentIds>,
    /// Audit partitions known to exist (their start, in seconds since the epoch).
    partitions: Mutex<std::collections::BTreeSet<i64>>,
    /// How many shards integrations hash into (the rows of `shard_leases`).
    shards: i32,
    /// Why PostgreSQL cannot take writes right now, while it cannot.
    fault: Mutex<Option<String>>,
    /// Set once a shutdown began: the lease rounds claim nothing more.
    stopping: std::sync::atomic::AtomicBool,
    /// This node's last heartbeat before a lapse of its own that it came back
    /// from, and until when (a lease after its return) its lease rounds count the
    /// nodes live at that heartbeat (`leases.rs`, `RECENT_NODES`).
    back_from_lapse: Mutex<Option<(chrono::DateTime<chrono::Utc>, std::time::Instant)>>,
    /// This process's own id in its `nodes` row (random per connect): a second
    /// process under the same name is told apart from this one and refused.
    instance: Uuid,
}

/// The store's runtime, shut down without waiting when the last handle goes
/// (also from inside another runtime, where a plain drop would panic).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl PgStore {
    /// Connects, runs the schema migrations (safe when several nodes start at
    /// once) and makes sure the current audit partitions exist. Fails with
    /// `Unavailable` when no writable PostgreSQL answers.
    pub async fn connect(options: PgOptions) -> Result<PgStore, PgError> {
        let url = tls::PgUrl::parse(&options.url)?;
        let tls = url.tls()?;
        let mut config = url.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name(format!("siemsync {}", options.node_name));
        }
        // A silently vanished server (a partition, a dead VM) is noticed by the
        // kernel instead of hanging a query until the operation timeout.
        config.keepalives_idle(Duration::from_secs(10));
        config.tcp_user_timeout(Duration::from_secs(10));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.threads.max(1))
            .thread_name("siemsync-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Config(format!("cannot start the store's threads: {e}")))?;
        let pool = build_pool(&config, &tls, &options, options.pool_size.max(1))?;
        // The lease rounds, hand-backs and the leave have connections of their own:
        // a pool busy with delivery (or exhausted by a stall) must not hold up the
        // renewal that keeps this node's leases, and so its delivery, alive. Two:
        // a hand-back runs beside the next round. Their connect timeout per host
        // fits a round (`lease_config`); the control listener's too, so that after
        // a failover it finds the promoted standby as soon as the lease rounds do.
        let config = lease_config(&config, options.lease);
        let lease_pool = build_pool(&config, &tls, &options, 2)?;
        let cipher = options.secret_key.as_deref().map(TokenCipher::new);
        let recent = Mutex::new(RecentIds::new(options.dedup_window));
        let runtime = Runtime(Some(runtime));
        let handle = runtime.0.as_ref().expect("just built").handle().clone();
        let shared = handle
            .spawn(async move {
                let mut client = pool.get().await?;
                schema::migrate(&mut client, schema::MIGRATIONS).await?;
                let shards: i64 = client
                    .query_one("SELECT count(*) FROM shard_leases", &[])
                    .await?
                    .get(0);
                drop(client);
                let shared = Shared {
                    pool,
                    lease_pool,
                    config,
                    tls,
                    options,
                    cipher,
                    recent,
                    partitions: Mutex::new(Default::default()),
                    shards: i32::try_from(shards).unwrap_or(i32::MAX).max(1),
                    fault: Mutex::new(None),
                    stopping: Default::default(),
                    back_from_lapse: Mutex::new(None),
                    instance: Uuid::new_v4(),
                };
                shared.ensure_partitions(chrono::Utc::now()).await?;
                Ok::<_, PgError>(shared)
            })
            .await
            .map_err(|e| PgError::Db(format!("connecting failed: {e}")))??;
        Ok(PgStore {
            shared: Arc::new(shared),
            runtime: Arc::new(runtime),
        })
    }

    /// Runs `op` on the store's runtime with the operation timeout; an
    /// `Unavailable` outcome (no server reached, or none that takes writes) is noted
    /// as the store's fault and drops the idle connections, so the next operation
    /// connects afresh and finds the writable server. A success does not clear the
    /// fault: a read answered by a server that cannot write says nothing about
    /// writing (see [`PgStore::run_write`]). `Busy` (contention) is no fault.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        self.run_noting(op, false).await
    }

    /// [`PgStore::run`] for an operation that writes and commits: its success
    /// clears the fault (the lease round, every lease/3, is one, so a fault ends
    /// within moments of PostgreSQL taking writes again).
    async fn run_write<T, F, Fut>(&self, op: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        self.run_noting(op, true).await
    }

    async fn run_noting<T, F, Fut>(&self, op: F, wrote: bool) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let handle = self.handle();
        let task = handle.spawn(async move {
            let limit = shared.options.op_timeout;
            let result = match tokio::time::timeout(limit, op(shared.clone())).await {
                Ok(r) => r,
                Err(_) => Err(PgError::Unavailable(format!(
                    "PostgreSQL did not answer within {} s",
                    limit.as_secs_f64()
                ))),
            };
            shared.note(&result, wrote);
            result
        });
        task.await
            .map_err(|e| PgError::Db(format!("a store task failed: {e}")))?
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the store")
            .handle()
            .clone()
    }

    /// Runs a future of this store to completion from a thread outside any async
    /// runtime (the sync collectors). Panics when called from inside a runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle().block_on(f)
    }

    /// Runs a future of this store to completion from any thread, also one that
    /// runs another runtime's tasks (an actix arbiter, a blocking pool thread),
    /// where [`PgStore::block_on`] would panic: the thread waits parked, as it
    /// waits for sled's I/O, while the work runs on the store's own threads.
    pub fn wait<F: Future>(&self, f: F) -> F::Output {
        let _entered = self
            .runtime
            .0
            .as_ref()
            .expect("the runtime lives as long as the store")
            .enter();
        // Unconstrained: the thread may be inside a task of another runtime that
        // spent its cooperative budget (an actor making many store calls in one
        // turn); with the budget enforced, every poll of the store task's handle
        // would answer "not yet" and wake at once, and the thread would spin for ever.
        park_until_done(tokio::task::unconstrained(f))
    }

    /// Why PostgreSQL cannot take writes right now, if so (for `/healthz` and ingest).
    pub fn fault(&self) -> Option<String> {
        self.shared.fault()
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.options.node_name
    }

    /// The shard an integration belongs to: fixed by its id.
    pub fn shard_of(&self, id: &Uuid) -> i32 {
        self.shared.shard_of(id)
    }

    /// How long a shard lease lasts unless renewed.
    pub fn lease_time(&self) -> Duration {
        self.shared.options.lease
    }

    /// How many shards there are.
    pub fn shards(&self) -> i32 {
        self.shared.shards
    }

    /// Whether a writable PostgreSQL answers now: an UPDATE that changes no row
    /// still needs a server and a session that take writes (a standby, or a
    /// read-only session, refuses it); `pg_notify` did not on a read-only session.
    pub async fn probe(&self) -> Result<(), PgError> {
        self.run_write(|s| async move {
            let client = s.pool.get().await?;
            client
                .execute("UPDATE nodes SET info = info WHERE false", &[])
                .await?;
            Ok(())
        })
        .await
    }
}

impl Shared {
    fn fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes an operation's outcome: `Unavailable` sets the fault; only a write
    /// that succeeded (`wrote`) clears it.
    fn note<T>(&self, result: &Result<T, PgError>, wrote: bool) {
        let reason = match result {
            Err(PgError::Unavailable(why)) => Some(why.clone()),
            Ok(_) if wrote => None,
            _ => return,
        };
        if reason.is_some() {
            // Idle connections may point at a server that is gone or read-only now.
            self.pool.retain(|_, _| false);
            self.lease_pool.retain(|_, _| false);
        }
        let mut fault = self.fault.lock().unwrap_or_else(|p| p.into_inner());
        match (&*fault, &reason) {
            (None, Some(r)) => log::error!(
                "postgres: no writable PostgreSQL: {r}; ingest answers 503 and delivery pauses until one answers"
            ),
            (Some(_), None) => log::warn!("postgres: writable again; ingest and delivery resume"),
            _ => {}
        }
        *fault = reason;
    }

    fn shard_of(&self, id: &Uuid) -> i32 {
        (u128::from_be_bytes(*id.as_bytes()) % self.shards as u128) as i32
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The connection settings of the lease rounds: `config` with a connect timeout per
/// host short enough that one round, cut after `leases::round_limit`, tries every
/// host of a multi-host URL and still has time to run. A first host that died
/// (its machine gone, or a network that drops packets instead of refusing them)
/// makes each connection attempt wait the whole connect timeout before the next
/// host is tried: with the pools' 5 s, a round cut at a quarter of the lease
/// (3.75 s at the default 15 s) would never reach a promoted standby listed
/// second, and no node would hold a lease. A share of the round per host (one
/// share kept for the round's own work), at least 250 ms (a loopback or LAN
/// handshake takes far less), at most the URL's `connect_timeout` (5 s unset).
/// A host name resolving to several addresses waits this long per address.
fn lease_config(config: &tokio_postgres::Config, lease: Duration) -> tokio_postgres::Config {
    let hosts = config
        .get_hosts()
        .len()
        .max(config.get_hostaddrs().len())
        .max(1);
    let share = leases::round_limit(lease) / u32::try_from(hosts + 1).unwrap_or(u32::MAX);
    let most = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(5));
    let mut config = config.clone();
    config.connect_timeout(share.max(Duration::from_millis(250)).min(most));
    config
}

/// A pool of at most `size` connections to `config`, each set up as every session
/// of this store must be.
fn build_pool(
    config: &tokio_postgres::Config,
    tls: &tls::Tls,
    options: &PgOptions,
    size: usize,
) -> Result<Pool, PgError> {
    // Host by host, each within the connect timeout (`connect`): a host that
    // accepts and never answers does not keep the next one from being tried.
    let manager = Manager::from_connect(
        config.clone(),
        connect::HostByHost(tls.clone()),
        ManagerConfig {
            // A connection that lost its server is closed; that is all a pooled
            // connection needs to be checked for (a read-only server never
            // keeps a connection made to a writable one).
            recycling_method: RecyclingMethod::Fast,
        },
    );
    // A transaction this node leaves idle (the process paused by SIGSTOP or a
    // stall between two statements, its connection alive) would keep its locks for
    // as long as the pause: a lease row key-share-locked by a commit, which the
    // other nodes' claims skip, or the balancing lock, which their rounds wait for.
    // PostgreSQL ends such a session after a lease (at least 5 s, well above any
    // pause between a live node's statements), so a paused node holds up the
    // hand-over of its shards by that much at most. Set with `SET` once the
    // session is made, not as a startup option, which connection poolers refuse.
    let idle = options.lease.max(Duration::from_secs(5)).as_millis();
    let timeout = Some(options.op_timeout);
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(timeout)
        .post_create(deadpool_postgres::Hook::async_fn(move |client, _| {
            Box::pin(async move {
                client
                    .batch_execute(&format!("SET idle_in_transaction_session_timeout = {idle}"))
                    .await
                    .map_err(deadpool_postgres::HookError::Backend)
            })
        }))
        .build()
        .map_err(|e| PgError::Config(e.to_string()))
}

/// Polls `f` on this thread, parked between wake-ups: for futures whose work runs
/// on another runtime (the store's), awaited from code that must not start one.
pub fn park_until_done<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark()
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark()
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Database sequences are `bigint`; ours are `u64` far below its limit.
fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease_timeout(url: &str, lease_secs: u64) -> Duration {
        let config: tokio_postgres::Config = url.parse().unwrap();
        *lease_config(&config, Duration::from_secs(lease_secs))
            .get_connect_timeout()
            .unwrap()
    }

    #[test]
    fn a_lease_round_has_time_to_try_every_host_and_still_run() {
        // A quarter of the 15 s lease over two hosts and the round's own work.
        assert_eq!(
            lease_timeout("postgresql://u@db1,db2/d", 15),
            Duration::from_millis(1250)
        );
        // Never below 250 ms, however many hosts or short the lease.
        assert_eq!(
            lease_timeout("postgresql://u@db1,db2,db3/d", 2),
            Duration::from_millis(250)
        );
        // Never above the URL's own connect_timeout, nor 5 s without one.
        assert_eq!(
            lease_timeout("postgresql://u@db1/d?connect_timeout=1", 15),
            Duration::from_secs(1)
        );
        assert_eq!(
            lease_timeout("postgresql://u@db1/d", 3600),
            Duration::from_secs(5)
        );
    }
}
