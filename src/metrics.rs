//! Prometheus metrics (prometheus-client): per integration, labelled by account and
//! integration id — never by token — and for ingest. Counters count since the
//! process started; gauges that describe stored state (backlog, dead letters,
//! last success, store size) are read from the store when `/metrics` is scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The labels of a per-integration metric: account and integration id, never the token.
/// The values are shared (`Arc<str>`): an actor builds them once, and all its series
/// (several families, and each source) point at the same two strings — at 100,000
/// integrations a copy per series was tens of MiB.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabels {
    /// The integration's account.
    pub account: Arc<str>,
    /// The integration's id.
    pub integration: Arc<str>,
}

/// The labels of a per-integration, per-source metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// The integration's account.
    pub account: Arc<str>,
    /// The integration's id.
    pub integration: Arc<str>,
    /// `audit` or `jobs`.
    pub source: &'static str,
}

/// The labels of a delivery failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// The integration's account.
    pub account: Arc<str>,
    /// The integration's id.
    pub integration: Arc<str>,
    /// HEC's code, else `http_<status>`, else `transport`.
    pub code: String,
}

/// The labels of what the Supervisor did to an actor (a restart, a kill).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActorLabels {
    /// The integration's account.
    pub account: String,
    /// The integration's id.
    pub integration: String,
    /// `integration` (its delivery) or `replay`.
    pub actor: String,
    /// Restarts: `panic`, `stuck` or `ended`; kills: `stuck` or `shutdown`.
    pub reason: String,
}

impl ActorLabels {
    /// The labels of `actor` (`integration` or `replay`) of integration `it`, for `reason`.
    pub fn of(it: &crate::model::Integration, actor: &str, reason: &str) -> ActorLabels {
        ActorLabels {
            account: it.account.to_string(),
            integration: it.id.to_string(),
            actor: actor.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// The labels of a per-account metric: one series per account with stored events,
/// fewer than the per-integration series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// The account.
    pub account: String,
}

/// The labels of a gap: events an integration never received.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GapLabels {
    /// The integration's account.
    pub account: Arc<str>,
    /// The integration's id.
    pub integration: Arc<str>,
    /// `audit` or `jobs`.
    pub source: String,
    /// `retention` or `backlog_quota`.
    pub reason: String,
}

/// The labels of an ingest metric.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    /// `audit` or `jobs`.
    pub source: String,
}

/// The labels of a refused ingest request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// `audit` or `jobs`.
    pub source: String,
    /// `invalid`, `too_large`, `unauthorized`, `rate_limited`, `disk_reserve` or
    /// `unavailable`.
    pub reason: String,
}

/// The label of a per-node metric (PostgreSQL).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabels {
    /// The node's name (`node_name`).
    pub node: String,
}

/// A gauge of seconds (or any fraction).
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric of the process, and the registry `/metrics` encodes.
pub struct Metrics {
    registry: Registry,
    /// Events Splunk accepted.
    pub events_delivered: Family<SourceLabels, Counter>,
    /// Uncompressed bytes of accepted posts.
    pub bytes_delivered: Family<SourceLabels, Counter>,
    /// Failed delivery attempts, by cause.
    pub failures: Family<FailureLabels, Counter>,
    /// Retries after a failure.
    pub retries: Family<IntegrationLabels, Counter>,
    /// Time of one post, acknowledgement included.
    pub post_seconds: Family<IntegrationLabels, Histogram>,
    /// Events moved to the dead letters.
    pub dead_lettered: Family<IntegrationLabels, Counter>,
    /// Actors the Supervisor restarted, by why.
    pub actor_restarts: Family<ActorLabels, Counter>,
    /// Actors the Supervisor stopped while they were still working, by why.
    pub actor_kills: Family<ActorLabels, Counter>,
    /// Undelivered events (set when scraped).
    pub backlog_events: Family<SourceLabels, Gauge>,
    /// Age of the oldest undelivered event (set when scraped).
    pub backlog_oldest_seconds: Family<IntegrationLabels, FloatGauge>,
    /// Time of the last accepted post (set when scraped).
    pub last_success: Family<IntegrationLabels, FloatGauge>,
    /// Events in the dead letters (set when scraped).
    pub dead_letters: Family<IntegrationLabels, Gauge>,
    /// Events an integration lost to retention or the backlog quota (set when scraped).
    pub gap_events: Family<GapLabels, Gauge>,
    /// Bytes of an account's stored audit events (set when scraped).
    pub account_stored_bytes: Family<AccountLabels, Gauge>,
    /// Of those, the bytes not yet delivered by all its integrations (set when scraped).
    pub account_backlog_bytes: Family<AccountLabels, Gauge>,
    /// The account's backlog quota (set when scraped).
    pub account_max_backlog_bytes: Family<AccountLabels, Gauge>,
    /// Audit events the backlog quota dropped, ever (set when scraped).
    pub account_quota_dropped: Family<AccountLabels, Gauge>,
    /// Ingest requests refused for the account's rate since start (set when scraped).
    pub account_rate_limited: Family<AccountLabels, Gauge>,
    /// Ingest requests refused for the disk reserve since start (set when scraped).
    pub account_disk_refused_requests: Family<AccountLabels, Gauge>,
    /// 1 while the disk reserve refuses the account's ingest (set when scraped).
    pub account_disk_refused: Family<AccountLabels, Gauge>,
    /// Free bytes of the data directory's filesystem at the last reading (set when scraped).
    pub disk_free_bytes: Gauge,
    /// `min_free_disk_bytes` (set when scraped).
    pub min_free_disk_bytes: Gauge,
    /// Ingest requests received.
    pub ingest_requests: Family<IngestLabels, Counter>,
    /// Events ingest accepted.
    pub ingest_events: Family<IngestLabels, Counter>,
    /// Ingest requests refused.
    pub ingest_rejections: Family<RejectLabels, Counter>,
    /// The store's size on disk (set when scraped).
    pub store_bytes: Gauge,
    /// 1 while the store takes writes.
    pub store_writable: Gauge,
    /// File descriptors the process holds (about one connection per integration syncing).
    pub open_fds: Gauge,
    /// The process's limit of open files (raised to the hard limit at start).
    pub max_fds: Gauge,
    /// Integration actors alive: counted by the actors themselves, so it shows what
    /// runs, not what the Supervisor meant to run.
    pub integration_actors: Gauge,
    /// Places of the sync gates held (kept by the gates).
    pub sync_places_in_use: Gauge,
    /// Syncs waiting for a place (kept by the gates).
    pub syncs_waiting: Gauge,
    /// PostgreSQL: shards each live node holds (set when scraped).
    pub shards_held: Family<NodeLabels, Gauge>,
    /// PostgreSQL: integrations of each live node's shards (set when scraped).
    pub integrations_owned: Family<NodeLabels, Gauge>,
    /// PostgreSQL: this node's successful lease rounds (heartbeat and renewal).
    pub lease_renewals: Family<NodeLabels, Counter>,
    /// PostgreSQL: this node's lease rounds that failed.
    pub lease_renewal_failures: Family<NodeLabels, Counter>,
    /// PostgreSQL: Unix time of this node's last successful lease round.
    pub last_lease_renewal: Family<NodeLabels, FloatGauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `siemsync` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("siemsync");
        let m = Metrics {
            events_delivered: Family::default(),
            bytes_delivered: Family::default(),
            failures: Family::default(),
            retries: Family::default(),
            post_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 14))
            }),
            dead_lettered: Family::default(),
            actor_restarts: Family::default(),
            actor_kills: Family::default(),
            backlog_events: Family::default(),
            backlog_oldest_seconds: Family::default(),
            last_success: Family::default(),
            dead_letters: Family::default(),
            gap_events: Family::default(),
            account_stored_bytes: Family::default(),
            account_backlog_bytes: Family::default(),
            account_max_backlog_bytes: Family::default(),
            account_quota_dropped: Family::default(),
            account_rate_limited: Family::default(),
            account_disk_refused_requests: Family::default(),
            account_disk_refused: Family::default(),
            disk_free_bytes: Gauge::default(),
            min_free_disk_bytes: Gauge::default(),
            ingest_requests: Family::default(),
            ingest_events: Family::default(),
            ingest_rejections: Family::default(),
            store_bytes: Gauge::default(),
            store_writable: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            integration_actors: Gauge::default(),
            sync_places_in_use: Gauge::default(),
            syncs_waiting: Gauge::default(),
            shards_held: Family::default(),
            integrations_owned: Family::default(),
            lease_renewals: Family::default(),
            lease_renewal_failures: Family::default(),
            last_lease_renewal: Family::default(),
            registry: Registry::default(),
        };
        m.register_delivery(&mut registry);
        m.register_stored(&mut registry);
        m.register_ingest(&mut registry);
        m.register_process(&mut registry);
        m.register_nodes(&mut registry);
        Metrics { registry, ..m }
    }

    /// What the actors count as they deliver.
    fn register_delivery(&self, registry: &mut Registry) {
        registry.register(
            "events_delivered",
            "Events Splunk accepted, per integration and source",
            self.events_delivered.clone(),
        );
        registry.register(
            "bytes_delivered",
            "Uncompressed bytes of accepted posts, per integration and source",
            self.bytes_delivered.clone(),
        );
        registry.register(
            "delivery_failures",
            "Failed delivery attempts, by HEC code (or HTTP status, or transport)",
            self.failures.clone(),
        );
        registry.register(
            "retries",
            "Delivery retries after a failure",
            self.retries.clone(),
        );
        registry.register(
            "post_duration_seconds",
            "Time of one HEC post, including indexer acknowledgement",
            self.post_seconds.clone(),
        );
        registry.register(
            "dead_lettered",
            "Events Splunk refused as bad data, moved to dead letters",
            self.dead_lettered.clone(),
        );
        registry.register(
            "actor_restarts",
            "Actors (integration delivery, replay) restarted by the Supervisor, by reason: panic, stuck, ended",
            self.actor_restarts.clone(),
        );
        registry.register(
            "actor_kills",
            "Actors stopped by the Supervisor while still working, by reason: stuck (no progress past the longest post), shutdown (a post still in flight when the grace ran out)",
            self.actor_kills.clone(),
        );
    }

    /// Per-integration gauges of stored state, read from the store when scraped.
    fn register_stored(&self, registry: &mut Registry) {
        registry.register(
            "backlog_events",
            "Events stored and not yet delivered, per integration and source",
            self.backlog_events.clone(),
        );
        registry.register(
            "backlog_oldest_age_seconds",
            "Age of the oldest undelivered event",
            self.backlog_oldest_seconds.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the integration's last accepted post",
            self.last_success.clone(),
        );
        registry.register(
            "dead_letters",
            "Events in the integration's dead letters",
            self.dead_letters.clone(),
        );
        registry.register(
            "gap_events",
            "Events the integration never received: dropped for age (reason retention) or because the account was over its backlog quota (reason backlog_quota)",
            self.gap_events.clone(),
        );
        self.register_accounts(registry);
    }

    /// Per-account gauges: each account's share of the store and of ingest.
    fn register_accounts(&self, registry: &mut Registry) {
        registry.register(
            "account_stored_bytes",
            "Bytes of the account's stored audit events",
            self.account_stored_bytes.clone(),
        );
        registry.register(
            "account_backlog_bytes",
            "Bytes of the account's stored audit events some integration of it has not delivered",
            self.account_backlog_bytes.clone(),
        );
        registry.register(
            "account_max_backlog_bytes",
            "The account's backlog quota: past it, its oldest undelivered events are dropped",
            self.account_max_backlog_bytes.clone(),
        );
        registry.register(
            "account_quota_dropped_events",
            "Audit events of the account dropped because it was over its backlog quota",
            self.account_quota_dropped.clone(),
        );
        registry.register(
            "account_rate_limited_requests",
            "Ingest requests of the account refused for its ingest rate since siemsync started",
            self.account_rate_limited.clone(),
        );
        registry.register(
            "account_disk_refused_requests",
            "Ingest requests of the account refused for the disk reserve (free space under min_free_disk_bytes) since siemsync started",
            self.account_disk_refused_requests.clone(),
        );
        registry.register(
            "account_disk_refused",
            "1 while the account's ingest is refused for the disk reserve",
            self.account_disk_refused.clone(),
        );
    }

    /// What ingest counts.
    fn register_ingest(&self, registry: &mut Registry) {
        registry.register(
            "ingest_requests",
            "Ingest requests received, per source",
            self.ingest_requests.clone(),
        );
        registry.register(
            "ingest_events",
            "Events accepted by ingest (repeats of known ids not counted)",
            self.ingest_events.clone(),
        );
        registry.register(
            "ingest_rejections",
            "Ingest requests refused, by reason",
            self.ingest_rejections.clone(),
        );
    }

    /// PostgreSQL: who holds what, and this node's lease rounds.
    fn register_nodes(&self, registry: &mut Registry) {
        registry.register(
            "shards_held",
            "Shards whose lease each live node holds (PostgreSQL)",
            self.shards_held.clone(),
        );
        registry.register(
            "integrations_owned",
            "Stored integrations of the shards each live node holds: what it delivers (PostgreSQL)",
            self.integrations_owned.clone(),
        );
        registry.register(
            "lease_renewals",
            "This node's successful lease rounds: heartbeat, renewal and claims (PostgreSQL)",
            self.lease_renewals.clone(),
        );
        registry.register(
            "lease_renewal_failures",
            "This node's lease rounds that failed: past its lease without one, it stops posting (PostgreSQL)",
            self.lease_renewal_failures.clone(),
        );
        registry.register(
            "last_lease_renewal_timestamp_seconds",
            "Unix time of this node's last successful lease round (PostgreSQL)",
            self.last_lease_renewal.clone(),
        );
    }

    /// The store and the actors of this process.
    fn register_process(&self, registry: &mut Registry) {
        registry.register(
            "store_size_bytes",
            "Size of the sled store on disk",
            self.store_bytes.clone(),
        );
        registry.register(
            "store_writable",
            "1 while the store takes writes; 0 while its disk is full or read-only (ingest answers 503)",
            self.store_writable.clone(),
        );
        registry.register(
            "disk_free_bytes",
            "Free bytes of the data directory's filesystem at the disk reserve's last reading (-1: not read)",
            self.disk_free_bytes.clone(),
        );
        registry.register(
            "min_free_disk_bytes",
            "The disk reserve: below it the accounts with the largest backlogs are refused, below half of it every account (0: off)",
            self.min_free_disk_bytes.clone(),
        );
        registry.register(
            "open_fds",
            "File descriptors the process holds (about one connection per integration syncing)",
            self.open_fds.clone(),
        );
        registry.register(
            "max_fds",
            "The process's limit of open files (RLIMIT_NOFILE, raised to the hard limit at start)",
            self.max_fds.clone(),
        );
        registry.register(
            "integration_actors",
            "Integration actors alive: one per integration that is enabled (on an account with the feature on)",
            self.integration_actors.clone(),
        );
        registry.register(
            "sync_places_in_use",
            "Places of the sync gates held: syncs started less than a lease ago and not ended",
            self.sync_places_in_use.clone(),
        );
        registry.register(
            "syncs_waiting",
            "Syncs waiting for a place to start",
            self.syncs_waiting.clone(),
        );
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl IntegrationLabels {
    /// The labels of integration `it`.
    pub fn of(it: &crate::model::Integration) -> IntegrationLabels {
        IntegrationLabels {
            account: it.account.as_str().into(),
            integration: it.id.to_string().into(),
        }
    }

    /// These labels with `source` added.
    pub fn with_source(&self, source: crate::model::Source) -> SourceLabels {
        SourceLabels {
            account: self.account.clone(),
            integration: self.integration.clone(),
            source: source.as_str(),
        }
    }
}
