//! The service's configuration: one typed struct, read once from the TOML file,
//! then overridden by `SIEMSYNC_*` environment variables.

use crate::model::{AccountId, Integration, IntegrationChange, IntegrationPolicy};
use crate::timing::{Secs, Timing};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the configuration was refused; each names the file, variable or key to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not valid TOML for the settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The TOML parser's words, with the line.
        message: String,
    },
    /// An environment override does not parse.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// A setting is out of its range or contradicts another.
    #[error("config key `{key}`: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong, and what to set instead.
        message: String,
    },
}

/// Everything the operator can set. Every key has an environment override.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the API listens on (`SIEMSYNC_LISTEN`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where sled keeps its files (`SIEMSYNC_DATA_DIR`); relative to the working directory.
    pub data_dir: PathBuf,
    /// Which store holds the data (`SIEMSYNC_STORE`): the embedded sled store in
    /// `data_dir` (the default), or a PostgreSQL that several nodes share.
    #[serde(default)]
    pub store: StoreKind,
    /// The PostgreSQL of `store = "postgres"`, a libpq URL (`SIEMSYNC_POSTGRES_URL`);
    /// several hosts with `target_session_attrs=read-write` find the primary, also
    /// after a standby was promoted.
    #[serde(default)]
    pub postgres_url: Option<String>,
    /// This node's name in PostgreSQL's leases and commit log (`SIEMSYNC_NODE_NAME`);
    /// empty or unset: the host name. Unique per node. Read and checked only when
    /// `store = "postgres"`.
    #[serde(default)]
    pub node_name: String,
    /// Seconds between syncs of one integration (`SIEMSYNC_SYNC_INTERVAL_SECS`).
    pub sync_interval_secs: Secs,
    /// The environment's host name, sent as `host` to Splunk (`SIEMSYNC_HOST`).
    pub host: String,
    /// Bearer token with every right (`SIEMSYNC_ADMIN_TOKEN`).
    pub admin_token: String,
    /// Bearer token that may only post events (`SIEMSYNC_INGEST_TOKEN`).
    pub ingest_token: String,
    /// Largest HEC post, in bytes (`SIEMSYNC_MAX_BATCH_BYTES`).
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: usize,
    /// Largest event, as Splunk would receive it, in bytes (`SIEMSYNC_MAX_EVENT_BYTES`):
    /// ingest refuses a larger one, since no Splunk would take it. At most
    /// `max_batch_bytes`; unset, 1 MiB or `max_batch_bytes` if that is smaller
    /// (see [`Config::max_event_bytes`]).
    #[serde(default)]
    pub max_event_bytes: Option<usize>,
    /// Posts of one integration that may wait for indexer acknowledgement at once
    /// (`SIEMSYNC_POSTS_IN_FLIGHT`); the checkpoint still moves strictly in order.
    #[serde(default = "default_posts_in_flight")]
    pub posts_in_flight: usize,
    /// Threads the integration actors run on (`SIEMSYNC_DELIVERY_THREADS`), each
    /// integration on the one its id hashes to; unset, one per available core
    /// (see [`Config::delivery_threads`]).
    #[serde(default)]
    pub delivery_threads: Option<usize>,
    /// The longest a HEC `Retry-After` (429, 503) may delay an integration's next
    /// attempt, in seconds (`SIEMSYNC_MAX_RETRY_AFTER_SECS`).
    #[serde(default = "default_max_retry_after")]
    pub max_retry_after_secs: Secs,
    /// Seconds a post size learnt from Splunk's refusals (413, or Splunk Cloud's
    /// oversized-body answer) holds before larger posts are tried again
    /// (`SIEMSYNC_POST_SIZE_REGROW_SECS`).
    #[serde(default = "default_post_size_regrow")]
    pub post_size_regrow_secs: Secs,
    /// Events (audit events and job snapshots) one account may post per second,
    /// sustained (`SIEMSYNC_ACCOUNT_INGEST_EVENTS_PER_SEC`); over it, that account's
    /// ingest answers 429 with `Retry-After` and stores nothing of the request.
    /// Per account: `ingest_events_per_sec` in `PUT /api/v1/accounts/{account}`.
    #[serde(default = "default_account_ingest_rate")]
    pub account_ingest_events_per_sec: u64,
    /// Events one account may post at once after a quiet period
    /// (`SIEMSYNC_ACCOUNT_INGEST_BURST`); a request of more is refused outright.
    /// Per account: `ingest_burst`.
    #[serde(default = "default_account_ingest_burst")]
    pub account_ingest_burst: u64,
    /// The bytes of stored audit events one account may hold
    /// (`SIEMSYNC_ACCOUNT_MAX_BACKLOG_BYTES`); over it, its oldest undelivered events
    /// are dropped (a gap for each integration that had not delivered them). Per
    /// account: `max_backlog_bytes` in `PUT /api/v1/accounts/{account}`.
    #[serde(default = "default_account_max_backlog_bytes")]
    pub account_max_backlog_bytes: u64,
    /// The free bytes kept in reserve on the data directory's filesystem
    /// (`SIEMSYNC_MIN_FREE_DISK_BYTES`; 0: off). Below it, ingest is refused with 503
    /// for the accounts holding the largest backlogs; below half of it, for every
    /// account (see `disk_reserve`).
    #[serde(default = "default_min_free_disk_bytes")]
    pub min_free_disk_bytes: u64,
    /// Largest accepted API request body, in bytes (`SIEMSYNC_MAX_BODY_BYTES`).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive (`SIEMSYNC_BODY_TIMEOUT_SECS`); a
    /// client that stalls gets 408 and its connection is closed.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_secs: Secs,
    /// Seconds to wait for a TCP+TLS connection to Splunk (`SIEMSYNC_CONNECT_TIMEOUT_SECS`).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: Secs,
    /// Seconds for one whole HEC request (`SIEMSYNC_REQUEST_TIMEOUT_SECS`).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: Secs,
    /// Longest wait between two indexer-acknowledgement polls (`SIEMSYNC_ACK_POLL_INTERVAL_SECS`).
    #[serde(default = "default_ack_poll")]
    pub ack_poll_interval_secs: Secs,
    /// How long an acknowledgement may take before the batch is re-sent (`SIEMSYNC_ACK_TIMEOUT_SECS`).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_secs: Secs,
    /// Whether HEC URIs may lead to loopback, private, link-local or cloud-metadata
    /// addresses (`SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS`). Off: tenants cannot make
    /// siemsync post into the operator's own network.
    #[serde(default)]
    pub allow_private_destinations: bool,
    /// Megabytes of sled's page cache (`SIEMSYNC_CACHE_MB`): bounds memory however
    /// large the backlog grows.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u64,
    /// Days events are kept at most, delivered or not (`SIEMSYNC_RETENTION_DAYS`);
    /// fractions allowed. Delivered events go sooner: once every integration that
    /// wants them has them.
    #[serde(default = "default_retention")]
    pub retention_days: f64,
    /// How many of an account's latest audit events a repeated `id` is recognised
    /// among (`SIEMSYNC_DEDUP_WINDOW`): the platform's retries fall well inside it;
    /// an id repeated after that many newer events is stored and delivered again.
    #[serde(default = "default_dedup_window")]
    pub dedup_window: usize,
    /// Seals HEC tokens at rest (AES-256-GCM) when set (`SIEMSYNC_SECRET_KEY`); at
    /// least 32 characters. Better given through the environment than in this file.
    #[serde(default)]
    pub secret_key: Option<String>,
    /// Whether integrations may set `tls_verify = false` (`SIEMSYNC_ALLOW_INSECURE_TLS`).
    #[serde(default)]
    pub allow_insecure_tls: bool,
    /// Seconds the posts in flight get to finish at shutdown (SIGTERM, Ctrl-C)
    /// before they are abandoned (`SIEMSYNC_SHUTDOWN_GRACE_SECS`); an abandoned post's
    /// events are sent again after the restart.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: Secs,
    /// Seconds between two checks of every actor's heartbeat
    /// (`SIEMSYNC_HEARTBEAT_CHECK_SECS`).
    #[serde(default = "default_heartbeat_check")]
    pub heartbeat_check_secs: Secs,
    /// Seconds an actor may be past the longest a post may take (twice
    /// `request_timeout_secs`: the post and the health probe after its failure)
    /// without progress before it counts as stuck and is restarted
    /// (`SIEMSYNC_STUCK_MARGIN_SECS`).
    #[serde(default = "default_stuck_margin")]
    pub stuck_margin_secs: Secs,
    /// Integrations declared by the operator (`[[integrations]]`): read-only in the
    /// API, reloaded on SIGHUP or when the file changes.
    #[serde(default)]
    pub integrations: Vec<serde_json::Value>,
    /// The internal intervals (`[timing]`): back-off base, restart delay, progress
    /// log, watchers. Each has a `SIEMSYNC_TIMING_*` override.
    #[serde(default)]
    pub timing: Timing,
}

/// A few seconds: a post to a responsive Splunk takes well under one, and a
/// service manager waits longer before it kills (the shipped unit: 30 s).
fn default_shutdown_grace() -> Secs {
    Secs::from_secs(5)
}
fn default_heartbeat_check() -> Secs {
    Secs::from_secs(1)
}
/// Half a minute beyond the posts' own timeouts: a busy store or event reader is
/// slow, not stuck.
fn default_stuck_margin() -> Secs {
    Secs::from_secs(30)
}

fn default_max_batch_bytes() -> usize {
    1024 * 1024
}
/// The per-event limit when unset: below Splunk's own (about 5 MB), and within the
/// default post size.
const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;
fn default_posts_in_flight() -> usize {
    4
}
fn default_max_retry_after() -> Secs {
    Secs::from_secs(300)
}
fn default_post_size_regrow() -> Secs {
    Secs::from_secs(3600)
}
/// Far above what one account's platform side posts in normal running (the ingest
/// bench posts about 170,000 events/s for all accounts together): only a flood meets it.
fn default_account_ingest_rate() -> u64 {
    100_000
}
/// Twenty seconds at the default rate: a backfill of a million events goes at once.
/// 1 GiB: about five million typical audit events, weeks of a busy account's events.
fn default_account_max_backlog_bytes() -> u64 {
    1 << 30
}
/// 1 GiB: at the default ingest rate, minutes of a flood, and hours of any real
/// platform's events, for the operator to act in before the disk is full.
fn default_min_free_disk_bytes() -> u64 {
    1 << 30
}
fn default_account_ingest_burst() -> u64 {
    2_000_000
}
fn default_max_body_bytes() -> usize {
    16 * 1024 * 1024
}
fn default_body_timeout() -> Secs {
    Secs::from_secs(60)
}
fn default_connect_timeout() -> Secs {
    Secs::from_secs(10)
}
fn default_request_timeout() -> Secs {
    Secs::from_secs(60)
}
fn default_cache_mb() -> u64 {
    256
}
fn default_dedup_window() -> usize {
    crate::store::DEFAULT_DEDUP_WINDOW
}
fn default_retention() -> f64 {
    30.0
}
fn default_ack_poll() -> Secs {
    Secs::from_secs(10)
}
/// The most delivery threads: far more than any machine's cores, whose threads
/// would only take turns.
const MAX_DELIVERY_THREADS: usize = 1024;
/// The smallest disk reserve other than 0 (off): 1 MiB.
const MIN_FREE_DISK_FLOOR: u64 = 1 << 20;
/// The largest disk reserve: 1 PiB.
const MAX_FREE_DISK_FLOOR: u64 = 1 << 50;

/// Which store the service runs on (`store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded store in `data_dir`: nothing else to install.
    #[default]
    Sled,
    /// A PostgreSQL at `postgres_url`, which several nodes can share.
    Postgres,
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sled" => Ok(StoreKind::Sled),
            "postgres" => Ok(StoreKind::Postgres),
            other => Err(format!("must be \"sled\" or \"postgres\", not {other:?}")),
        }
    }
}

/// This machine's host name, the default `node_name`.
pub(crate) fn host_name() -> Result<String, String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

/// Whether `s` lies between `min` and `max` seconds.
fn within(s: Secs, min: f64, max: f64) -> bool {
    (min..=max).contains(&s.get().as_secs_f64())
}

/// A refusal of setting `key`, saying what is wrong with it.
fn bad(key: &'static str, message: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key,
        message: message.to_owned(),
    })
}

fn default_ack_timeout() -> Secs {
    Secs::from_secs(300)
}

/// The tokens config/siemsync.toml ships with, for local development only.
pub const DEV_ADMIN_TOKEN: &str = "dev-admin-token-change-me";
/// The ingest token config/siemsync.toml ships with (see `DEV_ADMIN_TOKEN`).
pub const DEV_INGEST_TOKEN: &str = "dev-ingest-token-change-me";

/// The default config file, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/siemsync.toml";

/// Reads one environment variable's value, naming the variable when it does not parse.
fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
        var,
        message: format!("{e} (got {v:?})"),
    })
}

impl Config {
    /// Reads `path`, applies the environment, and validates the result.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, |k| std::env::var(k).ok())
    }

    /// Parses TOML text, then applies overrides from `env` (a lookup, so tests need not touch the process environment).
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        c.apply_env(env)?;
        c.validate()?;
        Ok(c)
    }

    /// The environment's overrides (`SIEMSYNC_*`) of the file's settings; a value
    /// that does not parse is refused with the variable's name.
    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("SIEMSYNC_LISTEN") {
            self.listen = parse("SIEMSYNC_LISTEN", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = env("SIEMSYNC_STORE") {
            self.store = parse("SIEMSYNC_STORE", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_POSTGRES_URL") {
            self.postgres_url = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = env("SIEMSYNC_NODE_NAME") {
            self.node_name = v;
        }
        // Only PostgreSQL names nodes: a sled node must not fail on its host name.
        if self.store == StoreKind::Postgres && self.node_name.is_empty() {
            self.node_name = host_name().map_err(|e| ConfigError::Invalid {
                key: "node_name",
                message: format!("unset, and the host name it defaults to cannot be read ({e}): set SIEMSYNC_NODE_NAME"),
            })?;
        }
        if let Some(v) = env("SIEMSYNC_SYNC_INTERVAL_SECS") {
            self.sync_interval_secs = parse("SIEMSYNC_SYNC_INTERVAL_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_HOST") {
            self.host = v;
        }
        if let Some(v) = env("SIEMSYNC_ADMIN_TOKEN") {
            self.admin_token = v;
        }
        if let Some(v) = env("SIEMSYNC_INGEST_TOKEN") {
            self.ingest_token = v;
        }
        if let Some(v) = env("SIEMSYNC_MAX_BATCH_BYTES") {
            self.max_batch_bytes = parse("SIEMSYNC_MAX_BATCH_BYTES", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_MAX_EVENT_BYTES") {
            self.max_event_bytes = Some(parse("SIEMSYNC_MAX_EVENT_BYTES", &v)?);
        }
        self.apply_delivery_env(&env)?;
        self.apply_supervision_env(&env)?;
        if let Some(v) = env("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS") {
            self.allow_private_destinations = parse("SIEMSYNC_ALLOW_PRIVATE_DESTINATIONS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_CACHE_MB") {
            self.cache_mb = parse("SIEMSYNC_CACHE_MB", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_RETENTION_DAYS") {
            self.retention_days = parse("SIEMSYNC_RETENTION_DAYS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_DEDUP_WINDOW") {
            self.dedup_window = parse("SIEMSYNC_DEDUP_WINDOW", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_SECRET_KEY") {
            self.secret_key = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = env("SIEMSYNC_ALLOW_INSECURE_TLS") {
            self.allow_insecure_tls = parse("SIEMSYNC_ALLOW_INSECURE_TLS", &v)?;
        }
        for (var, key) in Timing::env_keys() {
            if let Some(v) = env(var) {
                self.timing.set(key, parse(var, &v)?);
            }
        }
        Ok(())
    }

    /// The environment's overrides of how delivery posts and what ingest takes:
    /// posts in flight, Splunk's waits, the account ingest rate, body and timeout limits.
    fn apply_delivery_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("SIEMSYNC_DELIVERY_THREADS") {
            self.delivery_threads = Some(parse("SIEMSYNC_DELIVERY_THREADS", &v)?);
        }
        if let Some(v) = env("SIEMSYNC_POSTS_IN_FLIGHT") {
            self.posts_in_flight = parse("SIEMSYNC_POSTS_IN_FLIGHT", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_MAX_RETRY_AFTER_SECS") {
            self.max_retry_after_secs = parse("SIEMSYNC_MAX_RETRY_AFTER_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_POST_SIZE_REGROW_SECS") {
            self.post_size_regrow_secs = parse("SIEMSYNC_POST_SIZE_REGROW_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_ACCOUNT_INGEST_EVENTS_PER_SEC") {
            self.account_ingest_events_per_sec =
                parse("SIEMSYNC_ACCOUNT_INGEST_EVENTS_PER_SEC", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_ACCOUNT_INGEST_BURST") {
            self.account_ingest_burst = parse("SIEMSYNC_ACCOUNT_INGEST_BURST", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_ACCOUNT_MAX_BACKLOG_BYTES") {
            self.account_max_backlog_bytes = parse("SIEMSYNC_ACCOUNT_MAX_BACKLOG_BYTES", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_MIN_FREE_DISK_BYTES") {
            self.min_free_disk_bytes = parse("SIEMSYNC_MIN_FREE_DISK_BYTES", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_MAX_BODY_BYTES") {
            self.max_body_bytes = parse("SIEMSYNC_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_BODY_TIMEOUT_SECS") {
            self.body_timeout_secs = parse("SIEMSYNC_BODY_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_CONNECT_TIMEOUT_SECS") {
            self.connect_timeout_secs = parse("SIEMSYNC_CONNECT_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_REQUEST_TIMEOUT_SECS") {
            self.request_timeout_secs = parse("SIEMSYNC_REQUEST_TIMEOUT_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_ACK_POLL_INTERVAL_SECS") {
            self.ack_poll_interval_secs = parse("SIEMSYNC_ACK_POLL_INTERVAL_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_ACK_TIMEOUT_SECS") {
            self.ack_timeout_secs = parse("SIEMSYNC_ACK_TIMEOUT_SECS", &v)?;
        }
        Ok(())
    }

    /// The environment's overrides of how actors are watched and stopped.
    fn apply_supervision_env(
        &mut self,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = env("SIEMSYNC_SHUTDOWN_GRACE_SECS") {
            self.shutdown_grace_secs = parse("SIEMSYNC_SHUTDOWN_GRACE_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_HEARTBEAT_CHECK_SECS") {
            self.heartbeat_check_secs = parse("SIEMSYNC_HEARTBEAT_CHECK_SECS", &v)?;
        }
        if let Some(v) = env("SIEMSYNC_STUCK_MARGIN_SECS") {
            self.stuck_margin_secs = parse("SIEMSYNC_STUCK_MARGIN_SECS", &v)?;
        }
        Ok(())
    }

    /// How actors are watched and stopped: the bounds of the shutdown grace, the
    /// heartbeat check and the stuck margin.
    fn validate_supervision(&self) -> Result<(), ConfigError> {
        if !within(self.shutdown_grace_secs, 0.0, 600.0) {
            return bad(
                "shutdown_grace_secs",
                "must be at most 600 seconds (ten minutes); keep it below your service manager's stop timeout",
            );
        }
        if !within(self.heartbeat_check_secs, 0.01, 60.0) {
            return bad(
                "heartbeat_check_secs",
                "must be between 0.01 and 60 seconds",
            );
        }
        if !within(self.stuck_margin_secs, 0.0, 86_400.0) {
            return bad(
                "stuck_margin_secs",
                "must be at most 86400 seconds (one day)",
            );
        }
        // Under one check's period, a post that ends by its own timeout a moment late
        // (the scheduler) would be killed as stuck instead of backing off.
        if self.stuck_margin_secs < self.heartbeat_check_secs {
            return bad("stuck_margin_secs", "must be at least heartbeat_check_secs");
        }
        if self.timing.restart_forgiven_after_secs < self.timing.restart_delay_secs {
            return bad(
                "restart_forgiven_after_secs",
                "[timing]: must be at least restart_delay_secs, or the restart back-off never grows",
            );
        }
        Ok(())
    }

    /// The settings that say who may call and what the service calls itself: the
    /// sync interval, the host, and the two tokens (never the shipped ones on a
    /// reachable address).
    fn validate_access(&self) -> Result<(), ConfigError> {
        if !within(self.sync_interval_secs, 0.01, 86_400.0) {
            return bad(
                "sync_interval_secs",
                "must be between 0.01 and 86400 seconds (one day)",
            );
        }
        if self.host.trim().is_empty() {
            return bad(
                "host",
                "must name the environment's host, e.g. \"eu-1.backup.example.com\"",
            );
        }
        for (key, token) in [
            ("admin_token", &self.admin_token),
            ("ingest_token", &self.ingest_token),
        ] {
            if token.len() < 16 {
                return bad(key, "must be at least 16 characters");
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(key, "must not contain spaces or control characters");
            }
        }
        if self.admin_token == self.ingest_token {
            return bad("ingest_token", "must differ from admin_token");
        }
        // Anyone can read the shipped tokens in config/siemsync.toml.
        if !self.listen.ip().is_loopback() {
            if let Some(key) = self.development_tokens().first() {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "is the development token shipped in config/siemsync.toml, which works only while `listen` is a loopback address (127.0.0.1 or ::1), not {}: set SIEMSYNC_{} to a secret of your own (e.g. `openssl rand -hex 32`)",
                        self.listen.ip(),
                        key.to_ascii_uppercase()
                    ),
                });
            }
        }
        Ok(())
    }

    /// The settings of how delivery posts and how fast an account may ingest.
    fn validate_delivery(&self) -> Result<(), ConfigError> {
        if !(1..=64).contains(&self.posts_in_flight) {
            return bad("posts_in_flight", "must be between 1 and 64");
        }
        if self
            .delivery_threads
            .is_some_and(|n| !(1..=MAX_DELIVERY_THREADS).contains(&n))
        {
            return bad(
                "delivery_threads",
                "must be between 1 and 1024; leave it unset for one per core",
            );
        }
        if !within(self.max_retry_after_secs, 0.01, 86_400.0) {
            return bad(
                "max_retry_after_secs",
                "must be between 0.01 and 86400 seconds (one day)",
            );
        }
        if !within(self.post_size_regrow_secs, 0.01, 604_800.0) {
            return bad(
                "post_size_regrow_secs",
                "must be between 0.01 and 604800 seconds (one week)",
            );
        }
        if !(1..=crate::model::account::MAX_INGEST_RATE)
            .contains(&self.account_ingest_events_per_sec)
        {
            return bad(
                "account_ingest_events_per_sec",
                "must be between 1 and 1000000000 events per second",
            );
        }
        if !(crate::model::account::MIN_BACKLOG_BYTES..=crate::model::account::MAX_BACKLOG_BYTES)
            .contains(&self.account_max_backlog_bytes)
        {
            return bad(
                "account_max_backlog_bytes",
                "must be between 65536 (64 KiB) and 1125899906842624 bytes (1 PiB)",
            );
        }
        // Under 1 MiB a reserve is less than one write of sled's and guards nothing.
        if self.min_free_disk_bytes != 0
            && !(MIN_FREE_DISK_FLOOR..=MAX_FREE_DISK_FLOOR).contains(&self.min_free_disk_bytes)
        {
            return bad(
                "min_free_disk_bytes",
                "must be 0 (off) or between 1048576 (1 MiB) and 1125899906842624 bytes (1 PiB)",
            );
        }
        if !(1..=crate::model::account::MAX_INGEST_BURST).contains(&self.account_ingest_burst) {
            return bad(
                "account_ingest_burst",
                "must be between 1 and 1000000000000 events",
            );
        }
        Ok(())
    }

    /// Every setting's bounds, so a bad file or variable is refused before anything starts.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_access()?;
        if self.max_batch_bytes < 1024 {
            return bad("max_batch_bytes", "must be at least 1024");
        }
        if self
            .max_event_bytes
            .is_some_and(|m| !(1024..=self.max_batch_bytes).contains(&m))
        {
            return bad(
                "max_event_bytes",
                "must be at least 1024 and at most max_batch_bytes (an event larger than a post could never be sent)",
            );
        }
        self.validate_delivery()?;
        self.validate_supervision()?;
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        if !within(self.body_timeout_secs, 0.01, 3600.0) {
            return bad("body_timeout_secs", "must be between 0.01 and 3600 seconds");
        }
        for (key, t) in [
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
        ] {
            if !within(t, 0.01, 86_400.0) {
                return bad(key, "must be between 0.01 and 86400 seconds");
            }
        }
        if self
            .secret_key
            .as_ref()
            .is_some_and(|k| k.chars().count() < 32)
        {
            return bad(
                "secret_key",
                "must be at least 32 characters (e.g. `openssl rand -hex 32`)",
            );
        }
        if !(8..=1_048_576).contains(&self.cache_mb) {
            return bad("cache_mb", "must be between 8 and 1048576");
        }
        if !(self.retention_days > 0.0 && self.retention_days <= 3650.0) {
            return bad("retention_days", "must be more than 0 and at most 3650");
        }
        if !(1..=10_000_000).contains(&self.dedup_window) {
            return bad("dedup_window", "must be between 1 and 10000000 events");
        }
        for (key, t) in [
            ("ack_poll_interval_secs", self.ack_poll_interval_secs),
            ("ack_timeout_secs", self.ack_timeout_secs),
        ] {
            if !within(t, 0.01, 86_400.0) {
                return bad(key, "must be between 0.01 and 86400 seconds");
            }
        }
        if let Some(key) = self.timing.zero_keys() {
            return Err(ConfigError::Invalid {
                key,
                message: "[timing]: must be more than 0 seconds".to_owned(),
            });
        }
        if self.timing.shard_lease_secs.get() < Timing::MIN_SHARD_LEASE {
            return bad(
                "shard_lease_secs",
                "[timing]: must be at least 1 second: the lease is renewed every third of it, and a shorter one lapses behind a slow renewal while its node is alive",
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty");
        }
        self.validate_store()?;
        self.file_integrations()?;
        Ok(())
    }

    /// `store`, `postgres_url` and `node_name` agree. The URL itself is never
    /// repeated in a message: it may hold a password.
    fn validate_store(&self) -> Result<(), ConfigError> {
        match (self.store, &self.postgres_url) {
            (StoreKind::Postgres, None) => {
                return bad(
                    "postgres_url",
                    "store = \"postgres\" needs postgres_url (SIEMSYNC_POSTGRES_URL), a libpq URL such as postgresql://siemsync@db1,db2/siemsync?target_session_attrs=read-write",
                )
            }
            (StoreKind::Sled, Some(_)) => {
                return bad(
                    "postgres_url",
                    "is set, but store is \"sled\", which does not use it: set store = \"postgres\" (SIEMSYNC_STORE) to run on PostgreSQL, or remove postgres_url",
                )
            }
            (StoreKind::Postgres, Some(url)) => {
                // Parsed as the store will (sslmode and sslrootcert taken out
                // for the TLS settings), and the root certificate file read: a
                // URL or file that cannot work is refused now, not at every
                // connect. The store reads the file again when it connects.
                use crate::store::postgres::{tls::PgUrl, PgError};
                if let Err(e) = PgUrl::parse(url).and_then(|u| u.tls().map(drop)) {
                    return Err(ConfigError::Invalid {
                        key: "postgres_url",
                        message: match e {
                            PgError::Config(m) => m,
                            other => other.to_string(),
                        },
                    });
                }
            }
            // A sled node has no use for its name, so none is refused.
            (StoreKind::Sled, None) => return Ok(()),
        }
        if self.node_name.chars().count() > 63
            || !self
                .node_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(
                "node_name",
                "must be at most 63 letters, digits, '-', '_' or '.' (it names this node in PostgreSQL's leases and log)",
            );
        }
        Ok(())
    }

    /// The `[[integrations]]` of the file, validated like API bodies. Each gets an id
    /// made from its account and name, so a reload recognises it.
    pub fn file_integrations(&self) -> Result<Vec<Integration>, ConfigError> {
        let policy = IntegrationPolicy {
            allow_insecure_tls: self.allow_insecure_tls,
        };
        let mut out: Vec<Integration> = Vec::new();
        for (i, entry) in self.integrations.iter().enumerate() {
            let invalid = |message: String| ConfigError::Invalid {
                key: "integrations",
                message: format!("[{i}]: {message}"),
            };
            let mut body = entry.clone();
            let account = match body.as_object_mut().and_then(|o| o.remove("account")) {
                Some(serde_json::Value::String(a)) => AccountId::parse(&a)
                    .map_err(|e| invalid(format!("`account` is not a valid identifier: {e}")))?,
                _ => {
                    return Err(invalid(
                        "`account` is required (the account whose events it forwards)".into(),
                    ))
                }
            };
            let now = chrono::Utc::now();
            let mut it = IntegrationChange::from_json(&body)
                .and_then(|c| c.create(account, now, policy))
                .map_err(|e| invalid(e.to_string()))?;
            it.id = file_integration_id(&it.account, &it.name);
            it.file_managed = true;
            if out.iter().any(|o| o.id == it.id) {
                return Err(invalid(format!(
                    "account {:?} already has an integration named {:?}",
                    it.account.as_str(),
                    it.name
                )));
            }
            out.push(it);
        }
        Ok(out)
    }

    /// The token settings still holding the development values shipped in
    /// config/siemsync.toml: refused off loopback, warned about on it.
    pub fn development_tokens(&self) -> Vec<&'static str> {
        [
            ("admin_token", &self.admin_token, DEV_ADMIN_TOKEN),
            ("ingest_token", &self.ingest_token, DEV_INGEST_TOKEN),
        ]
        .into_iter()
        .filter(|(_, token, dev)| token.as_str() == *dev)
        .map(|(key, ..)| key)
        .collect()
    }

    /// The largest event ingest takes: `max_event_bytes`, or when unset 1 MiB or
    /// `max_batch_bytes` if that is smaller — an event must fit in a post.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
            .unwrap_or(DEFAULT_MAX_EVENT_BYTES.min(self.max_batch_bytes))
    }

    /// The longest time an event is kept, delivered or not (`retention_days`).
    pub fn retention(&self) -> Duration {
        Duration::from_secs_f64(self.retention_days * 86_400.0)
    }

    /// The time between two syncs of one integration.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval_secs.get()
    }

    /// How long the posts in flight get to finish at shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace_secs.get()
    }

    /// The threads the integration actors are spread over: `delivery_threads`, or
    /// one per core the process may use (1 if that cannot be read).
    pub fn delivery_threads(&self) -> usize {
        self.delivery_threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(MAX_DELIVERY_THREADS)
        })
    }

    /// How the Supervisor watches its actors.
    pub fn supervision(&self) -> crate::actors::Supervision {
        crate::actors::Supervision {
            heartbeat_check: self.heartbeat_check_secs.get(),
            stuck_margin: self.stuck_margin_secs.get(),
        }
    }

    /// How the HEC client connects, times out and polls acknowledgements.
    pub fn client_settings(&self) -> crate::hec::client::ClientSettings {
        crate::hec::client::ClientSettings {
            connect: self.connect_timeout_secs.get(),
            request: self.request_timeout_secs.get(),
            ack_poll: self.ack_poll_interval_secs.get(),
            ack_timeout: self.ack_timeout_secs.get(),
            keep_alive: self.timing.connection_keep_alive_secs.get(),
            allow_internal: self.allow_private_destinations,
        }
    }
}

/// A TOML error as the operator reads it at start, on reload and from
/// `check-config`: the line, the key and what is wrong. Never the line itself
/// (the parser's own message quotes it, and it may be `admin_token = "…"` or a
/// `hec_token`), nor a value the parser quoted in its message.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut message = e.message().trim().replace('\n', " ");
    // serde's "invalid type: string \"…\", expected u64": keep the kind, drop the value.
    for lead in ["invalid type: ", "invalid value: "] {
        if let (Some(rest), Some(end)) = (message.strip_prefix(lead), message.find(", expected")) {
            let kind = rest.split([' ', ',']).next().unwrap_or("value");
            message = format!("{lead}{kind}{}", &message[end..]);
        }
    }
    let Some(start) = e.span().map(|s| s.start) else {
        return message;
    };
    let before = text.get(..start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let mut place = format!("line {line_no}");
    if let Some((key, value)) = line.split_once('=') {
        let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            place.push_str(&format!(", key `{key}`"));
            let table = before
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| l.starts_with('['));
            if let Some(table) = table {
                place.push_str(&format!(" in {table}"));
            }
        }
        // Whatever else the parser quoted from the value goes too.
        let value = value.trim();
        for v in [value, value.trim_matches(|c| c == '"' || c == '\'')] {
            if v.chars().count() >= 4 {
                message = message.replace(v, "…");
            }
        }
    }
    format!("{place}: {message}")
}

/// A file integration's id: the same account and name give the same id on every load.
fn file_integration_id(account: &AccountId, name: &str) -> uuid::Uuid {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("siemsync-file\0{account}\0{name}").as_bytes(),
    );
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Uuid::new_v8(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../config/siemsync.toml");

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_toml(text, Path::new("test.toml"), |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn the_shipped_config_is_the_documented_default() {
        let c = load(SHIPPED, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.sync_interval_secs, Secs::from_secs(300));
        assert_eq!(c.max_batch_bytes, 1024 * 1024);
        assert_eq!(c.max_event_bytes(), 1024 * 1024);
        assert_eq!(c.posts_in_flight, 4);
        assert_eq!(c.delivery_threads, None, "one per core");
        assert!(c.delivery_threads() >= 1);
        assert_eq!(c.max_retry_after_secs, Secs::from_secs(300));
        assert_eq!(c.post_size_regrow_secs, Secs::from_secs(3600));
        assert_eq!(c.body_timeout_secs, default_body_timeout());
        assert_eq!(c.account_ingest_events_per_sec, 100_000);
        assert_eq!(c.account_ingest_burst, 2_000_000);
        assert_eq!(c.account_max_backlog_bytes, 1 << 30);
        assert_eq!(c.min_free_disk_bytes, 1 << 30);
        assert_eq!(c.timing.disk_check_secs, Secs::from_secs(1));
        assert_eq!(c.timing.shard_lease_secs, Secs::from_secs(15));
        assert!(!c.allow_insecure_tls);
        assert!(!c.allow_private_destinations);
        assert_eq!(c.shutdown_grace_secs, default_shutdown_grace());
        assert_eq!(c.heartbeat_check_secs, default_heartbeat_check());
        assert_eq!(c.stuck_margin_secs, default_stuck_margin());
    }

    #[test]
    fn supervision_settings_are_read_from_the_environment_and_checked() {
        let c = load(
            SHIPPED,
            &[
                ("SIEMSYNC_SHUTDOWN_GRACE_SECS", "0.25"),
                ("SIEMSYNC_HEARTBEAT_CHECK_SECS", "0.05"),
                ("SIEMSYNC_STUCK_MARGIN_SECS", "0.05"),
            ],
        )
        .unwrap();
        assert_eq!(c.shutdown_grace(), Duration::from_millis(250));
        assert_eq!(c.supervision().heartbeat_check, Duration::from_millis(50));
        assert_eq!(c.supervision().stuck_margin, Duration::from_millis(50));
        for (var, value, key) in [
            (
                "SIEMSYNC_SHUTDOWN_GRACE_SECS",
                "600.001",
                "`shutdown_grace_secs`",
            ),
            (
                "SIEMSYNC_HEARTBEAT_CHECK_SECS",
                "0",
                "`heartbeat_check_secs`",
            ),
            (
                "SIEMSYNC_HEARTBEAT_CHECK_SECS",
                "60.001",
                "`heartbeat_check_secs`",
            ),
            (
                "SIEMSYNC_STUCK_MARGIN_SECS",
                "86400.001",
                "`stuck_margin_secs`",
            ),
            ("SIEMSYNC_STUCK_MARGIN_SECS", "0.5", "`stuck_margin_secs`"),
            (
                "SIEMSYNC_TIMING_RESTART_FORGIVEN_AFTER_SECS",
                "0.5",
                "`restart_forgiven_after_secs`",
            ),
            (
                "SIEMSYNC_TIMING_CONNECTION_KEEP_ALIVE_SECS",
                "0",
                "`connection_keep_alive_secs`",
            ),
        ] {
            let e = load(SHIPPED, &[(var, value)]).unwrap_err();
            assert!(e.contains(key), "{var}={value}: {e}");
        }
        let e = load(SHIPPED, &[("SIEMSYNC_SHUTDOWN_GRACE_SECS", "soon")]).unwrap_err();
        assert!(e.contains("SIEMSYNC_SHUTDOWN_GRACE_SECS"), "{e}");
    }

    #[test]
    fn environment_variables_override_the_file() {
        let c = load(
            SHIPPED,
            &[
                ("SIEMSYNC_LISTEN", "127.0.0.1:0"),
                ("SIEMSYNC_SYNC_INTERVAL_SECS", "1"),
                ("SIEMSYNC_HOST", "eu-1"),
                ("SIEMSYNC_MAX_BATCH_BYTES", "4096"),
                ("SIEMSYNC_DATA_DIR", "/tmp/x"),
            ],
        )
        .unwrap();
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.sync_interval_secs, Secs::from_secs(1));
        assert_eq!(c.host, "eu-1");
        assert_eq!(c.max_batch_bytes, 4096);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn integrations_declared_in_the_file_are_validated_and_keep_their_id() {
        let entry = |name: &str, uri: &str| {
            format!("\n[[integrations]]\naccount = \"acme\"\nname = \"{name}\"\nhec_token = \"12345678-1234-1234-1234-123456789012\"\nhec_uri = \"{uri}\"\nsources = [\"audit\"]\nenabled = true\n")
        };
        let text = format!(
            "{SHIPPED}{}{}",
            entry("Main", "https://splunk.example.com:8088"),
            entry("Backup", "https://b.example.com")
        );
        let a = load(&text, &[]).unwrap().file_integrations().unwrap();
        let b = load(&text, &[]).unwrap().file_integrations().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].id, b[0].id);
        assert_ne!(a[0].id, a[1].id);
        assert!(a.iter().all(|i| i.file_managed && i.enabled));
        let e = load(&format!("{SHIPPED}{}", entry("Main", "ftp://x")), &[]).unwrap_err();
        assert!(
            e.contains("integrations") && e.contains("[0]") && e.contains("`hec_uri`"),
            "{e}"
        );
        let e = load(
            &format!(
                "{SHIPPED}{}{}",
                entry("Main", "https://a.example.com"),
                entry("Main", "https://b.example.com")
            ),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("already has an integration named"), "{e}");
    }

    #[test]
    fn every_interval_is_a_setting_in_fractions_of_seconds() {
        let c = load(
            SHIPPED,
            &[
                ("SIEMSYNC_SYNC_INTERVAL_SECS", "0.05"),
                ("SIEMSYNC_TIMING_PROGRESS_LOG_SECS", "0.2"),
            ],
        )
        .unwrap();
        assert_eq!(c.sync_interval(), Duration::from_millis(50));
        assert_eq!(c.timing.progress_log_secs.get(), Duration::from_millis(200));
        assert_eq!(c.timing.restart_delay_secs, Secs::from_secs(1));
        let e = load(SHIPPED, &[("SIEMSYNC_TIMING_STORE_WATCH_SECS", "0")]).unwrap_err();
        assert!(e.contains("`store_watch_secs`"), "{e}");
        let e = load(SHIPPED, &[("SIEMSYNC_TIMING_CONFIG_POLL_SECS", "later")]).unwrap_err();
        assert!(e.contains("SIEMSYNC_TIMING_CONFIG_POLL_SECS"), "{e}");
        let e = load(&format!("{SHIPPED}\nnap_secs = 1\n"), &[]).unwrap_err();
        assert!(e.contains("nap_secs"), "{e}");
        let e = load(SHIPPED, &[("SIEMSYNC_SYNC_INTERVAL_SECS", "0.001")]).unwrap_err();
        assert!(e.contains("`sync_interval_secs`"), "{e}");
    }

    #[test]
    fn a_bad_config_names_the_key() {
        let e = load(
            &SHIPPED.replace("sync_interval_secs = 300", "sync_interval_secs = \"often\""),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("sync_interval_secs"), "{e}");
        let e = load(&format!("{SHIPPED}\ncolour = 1\n"), &[]).unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = load(
            &SHIPPED.replace("sync_interval_secs = 300", "sync_interval_secs = 0"),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("`sync_interval_secs`"), "{e}");
        let e = load(SHIPPED, &[("SIEMSYNC_SYNC_INTERVAL_SECS", "soon")]).unwrap_err();
        assert!(e.contains("SIEMSYNC_SYNC_INTERVAL_SECS"), "{e}");
        let e = load(
            &SHIPPED.replace("listen = \"127.0.0.1:8080\"", "listen = \"nowhere\""),
            &[],
        )
        .unwrap_err();
        assert!(e.contains("listen"), "{e}");
    }

    #[test]
    fn a_toml_error_names_the_line_and_key_but_never_the_value() {
        let secret = "Sup3rSecret-value-0123456789";
        for (text, key, line) in [
            (
                SHIPPED.replace(
                    "admin_token = \"dev-admin-token-change-me\"",
                    &format!("admin_token = \"{secret}"),
                ),
                "admin_token",
                SHIPPED
                    .lines()
                    .position(|l| l.starts_with("admin_token"))
                    .unwrap()
                    + 1,
            ),
            (
                format!("{SHIPPED}\n[[integrations]]\nhec_token = '{secret}' x\n"),
                "hec_token",
                SHIPPED.lines().count() + 3,
            ),
            (
                SHIPPED.replace("host = \"localhost\"", &format!("host = {secret}")),
                "host",
                SHIPPED
                    .lines()
                    .position(|l| l.starts_with("host ="))
                    .unwrap()
                    + 1,
            ),
            (
                SHIPPED.replace(
                    "sync_interval_secs = 300",
                    &format!("sync_interval_secs = \"{secret}\""),
                ),
                "sync_interval_secs",
                SHIPPED
                    .lines()
                    .position(|l| l.starts_with("sync_interval_secs"))
                    .unwrap()
                    + 1,
            ),
        ] {
            let e = load(&text, &[]).unwrap_err();
            assert!(!e.contains("Sup3rSecret"), "{e}");
            assert!(e.contains(&format!("line {line}")), "{e}");
            assert!(e.contains(&format!("`{key}`")), "{e}");
        }
    }

    #[test]
    fn delivery_limits_are_checked_against_each_other() {
        let c = load(SHIPPED, &[("SIEMSYNC_MAX_BATCH_BYTES", "65536")]).unwrap();
        assert_eq!(
            c.max_event_bytes(),
            65536,
            "unset, it follows a smaller post size"
        );
        let e = load(
            SHIPPED,
            &[
                ("SIEMSYNC_MAX_BATCH_BYTES", "65536"),
                ("SIEMSYNC_MAX_EVENT_BYTES", "65537"),
            ],
        )
        .unwrap_err();
        assert!(
            e.contains("`max_event_bytes`") && e.contains("at most max_batch_bytes"),
            "{e}"
        );
        let c = load(SHIPPED, &[("SIEMSYNC_MAX_EVENT_BYTES", "4096")]).unwrap();
        assert_eq!(c.max_event_bytes(), 4096);
        let c = load(SHIPPED, &[("SIEMSYNC_DELIVERY_THREADS", "3")]).unwrap();
        assert_eq!(c.delivery_threads(), 3);
        for (var, value, key) in [
            ("SIEMSYNC_POSTS_IN_FLIGHT", "0", "`posts_in_flight`"),
            ("SIEMSYNC_DELIVERY_THREADS", "0", "`delivery_threads`"),
            ("SIEMSYNC_DELIVERY_THREADS", "1025", "`delivery_threads`"),
            (
                "SIEMSYNC_MAX_RETRY_AFTER_SECS",
                "0",
                "`max_retry_after_secs`",
            ),
            (
                "SIEMSYNC_MAX_RETRY_AFTER_SECS",
                "86401",
                "`max_retry_after_secs`",
            ),
            (
                "SIEMSYNC_POST_SIZE_REGROW_SECS",
                "0",
                "`post_size_regrow_secs`",
            ),
            (
                "SIEMSYNC_ACCOUNT_INGEST_EVENTS_PER_SEC",
                "0",
                "`account_ingest_events_per_sec`",
            ),
            (
                "SIEMSYNC_ACCOUNT_MAX_BACKLOG_BYTES",
                "0",
                "`account_max_backlog_bytes`",
            ),
            (
                "SIEMSYNC_ACCOUNT_INGEST_BURST",
                "0",
                "`account_ingest_burst`",
            ),
        ] {
            let e = load(SHIPPED, &[(var, value)]).unwrap_err();
            assert!(e.contains(key), "{var}={value}: {e}");
        }
    }

    #[test]
    fn the_disk_reserve_is_validated_naming_its_key() {
        for (var, value, key, says) in [
            (
                "SIEMSYNC_MIN_FREE_DISK_BYTES",
                "100",
                "config key `min_free_disk_bytes`",
                "0 (off) or between 1048576",
            ),
            (
                "SIEMSYNC_MIN_FREE_DISK_BYTES",
                "2000000000000000000",
                "config key `min_free_disk_bytes`",
                "0 (off) or between 1048576",
            ),
            (
                "SIEMSYNC_MIN_FREE_DISK_BYTES",
                "1 GiB",
                "SIEMSYNC_MIN_FREE_DISK_BYTES",
                "invalid digit",
            ),
            (
                "SIEMSYNC_TIMING_DISK_CHECK_SECS",
                "0",
                "config key `disk_check_secs`",
                "more than 0",
            ),
        ] {
            let e = load(SHIPPED, &[(var, value)]).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{var}={value}: {e}");
        }
        let text = SHIPPED.replace(
            "min_free_disk_bytes = 1073741824",
            "min_free_disk_bytes = 4096",
        );
        let e = load(&text, &[]).unwrap_err();
        assert!(
            e.contains("`min_free_disk_bytes`") && e.contains("0 (off)"),
            "{e}"
        );
        // 0 turns it off; a floor in whole bytes is taken.
        load(SHIPPED, &[("SIEMSYNC_MIN_FREE_DISK_BYTES", "0")]).unwrap();
        load(SHIPPED, &[("SIEMSYNC_MIN_FREE_DISK_BYTES", "1048576")]).unwrap();
    }

    #[test]
    fn the_shard_lease_is_a_timing_setting_of_at_least_a_second() {
        let c = load(SHIPPED, &[("SIEMSYNC_TIMING_SHARD_LEASE_SECS", "2.5")]).unwrap();
        assert_eq!(c.timing.shard_lease_secs.get(), Duration::from_millis(2500));
        let c = load(SHIPPED, &[("SIEMSYNC_TIMING_SHARD_LEASE_SECS", "1")]).unwrap();
        assert_eq!(c.timing.shard_lease_secs, Secs::from_secs(1));
        for value in ["0.5", "0"] {
            let e = load(SHIPPED, &[("SIEMSYNC_TIMING_SHARD_LEASE_SECS", value)]).unwrap_err();
            assert!(
                e.contains("`shard_lease_secs`") && e.contains("more than 0")
                    || e.contains("at least 1 second"),
                "{value}: {e}"
            );
        }
        let text = SHIPPED.replace("shard_lease_secs = 15", "shard_lease_secs = 0.9");
        let e = load(&text, &[]).unwrap_err();
        assert!(
            e.contains("`shard_lease_secs`") && e.contains("at least 1 second"),
            "{e}"
        );
    }

    #[test]
    fn the_shipped_tokens_are_refused_off_loopback() {
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
            let e = load(SHIPPED, &[("SIEMSYNC_LISTEN", listen)]).unwrap_err();
            assert!(e.starts_with("config key `admin_token`"), "{e}");
            assert!(
                e.contains("loopback") && e.contains("SIEMSYNC_ADMIN_TOKEN"),
                "{e}"
            );
            let e = load(
                SHIPPED,
                &[
                    ("SIEMSYNC_LISTEN", listen),
                    ("SIEMSYNC_ADMIN_TOKEN", "own-admin-token-0123"),
                ],
            )
            .unwrap_err();
            assert!(e.starts_with("config key `ingest_token`"), "{e}");
            load(
                SHIPPED,
                &[
                    ("SIEMSYNC_LISTEN", listen),
                    ("SIEMSYNC_ADMIN_TOKEN", "own-admin-token-0123"),
                    ("SIEMSYNC_INGEST_TOKEN", "own-ingest-token-0123"),
                ],
            )
            .unwrap();
        }
        for listen in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            let c = load(SHIPPED, &[("SIEMSYNC_LISTEN", listen)]).unwrap();
            assert_eq!(c.development_tokens(), vec!["admin_token", "ingest_token"]);
        }
    }

    #[test]
    fn the_store_is_sled_unless_postgres_is_chosen_with_a_url() {
        let c = load(SHIPPED, &[]).unwrap();
        assert_eq!(c.store, StoreKind::Sled);
        assert_eq!(c.postgres_url, None);
        let url =
            "postgresql://siemsync@db1:5432,db2:5433/siemsync?target_session_attrs=read-write";
        let c = load(
            SHIPPED,
            &[
                ("SIEMSYNC_STORE", "postgres"),
                ("SIEMSYNC_POSTGRES_URL", url),
                ("SIEMSYNC_NODE_NAME", "node-a"),
            ],
        )
        .unwrap();
        assert_eq!(c.store, StoreKind::Postgres);
        assert_eq!(c.postgres_url.as_deref(), Some(url));
        assert_eq!(c.node_name, "node-a");
        let c = load(
            SHIPPED,
            &[
                ("SIEMSYNC_STORE", "postgres"),
                ("SIEMSYNC_POSTGRES_URL", url),
            ],
        )
        .unwrap();
        assert!(
            !c.node_name.is_empty(),
            "the host name is the default node name"
        );
        let file = SHIPPED.replacen(
            "store = \"sled\"",
            &format!("store = \"postgres\"\npostgres_url = \"{url}\""),
            1,
        );
        assert_eq!(load(&file, &[]).unwrap().store, StoreKind::Postgres);
    }

    #[test]
    fn a_sled_node_neither_reads_nor_checks_a_node_name() {
        // The host name is PostgreSQL's business only: a sled node must start on a
        // host whose name is too long for a lease, or cannot be read at all.
        let c = load(SHIPPED, &[]).unwrap();
        assert_eq!(c.node_name, "", "a sled node read the host name");
        let long = "n".repeat(64);
        for name in [long.as_str(), "node a; drop"] {
            let c = load(SHIPPED, &[("SIEMSYNC_NODE_NAME", name)]).unwrap();
            assert_eq!(c.store, StoreKind::Sled);
        }
        let e = load(
            SHIPPED,
            &[
                ("SIEMSYNC_STORE", "postgres"),
                ("SIEMSYNC_POSTGRES_URL", "postgresql://db/x"),
                ("SIEMSYNC_NODE_NAME", &long),
            ],
        )
        .unwrap_err();
        assert!(e.contains("`node_name`"), "{e}");
    }

    #[test]
    fn a_postgres_url_with_any_libpq_sslmode_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();
        for url in [
            "postgresql://db/x?sslmode=disable".to_owned(),
            "postgresql://db/x?sslmode=prefer".to_owned(),
            "postgresql://u:hunter2@db/x?sslmode=require".to_owned(),
            "postgresql://u:hunter2@db1,db2/x?target_session_attrs=read-write&sslmode=verify-full"
                .to_owned(),
            format!(
                "postgresql://db/x?sslmode=verify-full&sslrootcert={}",
                ca.display()
            ),
            format!(
                "host=db dbname=x sslmode=verify-ca sslrootcert='{}' password=hunter2",
                ca.display()
            ),
        ] {
            load(
                SHIPPED,
                &[
                    ("SIEMSYNC_STORE", "postgres"),
                    ("SIEMSYNC_POSTGRES_URL", &url),
                    ("SIEMSYNC_NODE_NAME", "node-a"),
                ],
            )
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }

    #[test]
    fn a_bad_sslmode_or_sslrootcert_is_refused_naming_it_never_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let junk = dir.path().join("junk-ca.pem");
        std::fs::write(&junk, "-----BEGIN NOTHING-----").unwrap();
        for (url, names) in [
            (
                "postgresql://u:hunter2@db/x?sslmode=verify-everything".to_owned(),
                "verify-everything",
            ),
            (
                format!(
                    "postgresql://u:hunter2@db/x?sslmode=verify-full&sslrootcert={}",
                    missing.display()
                ),
                "missing-ca.pem",
            ),
            (
                format!(
                    "host=db password=hunter2 sslmode=require sslrootcert={}",
                    junk.display()
                ),
                "junk-ca.pem",
            ),
        ] {
            let e = load(
                SHIPPED,
                &[
                    ("SIEMSYNC_STORE", "postgres"),
                    ("SIEMSYNC_POSTGRES_URL", &url),
                    ("SIEMSYNC_NODE_NAME", "node-a"),
                ],
            )
            .unwrap_err();
            assert!(
                e.contains("`postgres_url`") && e.contains(names),
                "{url}: {e}"
            );
            assert!(!e.contains("hunter2"), "the password was repeated: {e}");
        }
    }

    #[test]
    fn a_bad_store_choice_is_refused_with_what_to_set() {
        let secret_url = "postgresql://u:hunter2@db:notaport/x";
        for (env, names) in [
            (vec![("SIEMSYNC_STORE", "mysql")], "SIEMSYNC_STORE"),
            (vec![("SIEMSYNC_STORE", "postgres")], "`postgres_url`"),
            (
                vec![("SIEMSYNC_POSTGRES_URL", "postgresql://db/x")],
                "`postgres_url`",
            ),
            (
                vec![
                    ("SIEMSYNC_STORE", "postgres"),
                    ("SIEMSYNC_POSTGRES_URL", secret_url),
                ],
                "`postgres_url`",
            ),
            (
                vec![
                    ("SIEMSYNC_STORE", "postgres"),
                    ("SIEMSYNC_POSTGRES_URL", "postgresql://db/x"),
                    ("SIEMSYNC_NODE_NAME", "node a; drop"),
                ],
                "`node_name`",
            ),
        ] {
            let e = load(SHIPPED, &env).unwrap_err();
            assert!(e.contains(names), "{env:?}: {e}");
            assert!(
                !e.contains("hunter2"),
                "the URL's password was repeated: {e}"
            );
        }
    }
}
