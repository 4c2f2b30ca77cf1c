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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabels {
    pub account: String,
    pub integration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub account: String,
    pub integration: String,
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub account: String,
    pub integration: String,
    /// HEC's code, else `http_<status>`, else `transport`.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngestLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub source: String,
    /// `invalid`, `too_large`, `unauthorized` or `unavailable`.
    pub reason: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    pub events_delivered: Family<SourceLabels, Counter>,
    pub bytes_delivered: Family<SourceLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub retries: Family<IntegrationLabels, Counter>,
    pub post_seconds: Family<IntegrationLabels, Histogram>,
    pub dead_lettered: Family<IntegrationLabels, Counter>,
    pub actor_restarts: Family<IntegrationLabels, Counter>,
    pub backlog_events: Family<SourceLabels, Gauge>,
    pub backlog_oldest_seconds: Family<IntegrationLabels, FloatGauge>,
    pub last_success: Family<IntegrationLabels, FloatGauge>,
    pub dead_letters: Family<IntegrationLabels, Gauge>,
    pub ingest_requests: Family<IngestLabels, Counter>,
    pub ingest_events: Family<IngestLabels, Counter>,
    pub ingest_rejections: Family<RejectLabels, Counter>,
    pub store_bytes: Gauge,
    pub store_writable: Gauge,
    pub open_fds: Gauge,
    pub max_fds: Gauge,
    /// Integration actors alive: counted by the actors themselves, so it shows what
    /// runs, not what the Supervisor meant to run.
    pub integration_actors: Gauge,
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
            backlog_events: Family::default(),
            backlog_oldest_seconds: Family::default(),
            last_success: Family::default(),
            dead_letters: Family::default(),
            ingest_requests: Family::default(),
            ingest_events: Family::default(),
            ingest_rejections: Family::default(),
            store_bytes: Gauge::default(),
            store_writable: Gauge::default(),
            open_fds: Gauge::default(),
            max_fds: Gauge::default(),
            integration_actors: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_delivered",
            "Events Splunk accepted, per integration and source",
            m.events_delivered.clone(),
        );
        registry.register(
            "bytes_delivered",
            "Uncompressed bytes of accepted posts, per integration and source",
            m.bytes_delivered.clone(),
        );
        registry.register(
            "delivery_failures",
            "Failed delivery attempts, by HEC code (or HTTP status, or transport)",
            m.failures.clone(),
        );
        registry.register(
            "retries",
            "Delivery retries after a failure",
            m.retries.clone(),
        );
        registry.register(
            "post_duration_seconds",
            "Time of one HEC post, including indexer acknowledgement",
            m.post_seconds.clone(),
        );
        registry.register(
            "dead_lettered",
            "Events Splunk refused as bad data, moved to dead letters",
            m.dead_lettered.clone(),
        );
        registry.register(
            "actor_restarts",
            "Integration actors restarted after ending unexpectedly",
            m.actor_restarts.clone(),
        );
        registry.register(
            "backlog_events",
            "Events stored and not yet delivered, per integration and source",
            m.backlog_events.clone(),
        );
        registry.register(
            "backlog_oldest_age_seconds",
            "Age of the oldest undelivered event",
            m.backlog_oldest_seconds.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the integration's last accepted post",
            m.last_success.clone(),
        );
        registry.register(
            "dead_letters",
            "Events in the integration's dead letters",
            m.dead_letters.clone(),
        );
        registry.register(
            "ingest_requests",
            "Ingest requests received, per source",
            m.ingest_requests.clone(),
        );
        registry.register(
            "ingest_events",
            "Events accepted by ingest (repeats of known ids not counted)",
            m.ingest_events.clone(),
        );
        registry.register(
            "ingest_rejections",
            "Ingest requests refused, by reason",
            m.ingest_rejections.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Size of the sled store on disk",
            m.store_bytes.clone(),
        );
        registry.register(
            "store_writable",
            "1 while the store takes writes; 0 while its disk is full or read-only (ingest answers 503)",
            m.store_writable.clone(),
        );
        registry.register(
            "open_fds",
            "File descriptors the process holds (about one connection per integration syncing)",
            m.open_fds.clone(),
        );
        registry.register(
            "max_fds",
            "The process's limit of open files (RLIMIT_NOFILE, raised to the hard limit at start)",
            m.max_fds.clone(),
        );
        registry.register(
            "integration_actors",
            "Integration actors alive: one per integration that is enabled (on an account with the feature on)",
            m.integration_actors.clone(),
        );
        Metrics { registry, ..m }
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
    pub fn of(it: &crate::model::Integration) -> IntegrationLabels {
        IntegrationLabels {
            account: it.account.to_string(),
            integration: it.id.to_string(),
        }
    }

    pub fn with_source(&self, source: crate::model::Source) -> SourceLabels {
        SourceLabels {
            account: self.account.clone(),
            integration: self.integration.clone(),
            source: source.as_str().to_owned(),
        }
    }
}
