//! Every message exchanged between the actors, each with who sends it and when.

pub use super::batch::{Batch, BatchKind};
use crate::hec::encode::Envelope;
use crate::hec::response::Failure;
use crate::model::{AccountId, Integration};
use crate::store::StoreError;
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// API → Supervisor, right after a write: integration `id` (or its account's feature
/// switch) changed in the store, or the integration was deleted. The Supervisor reads
/// it back and makes its actor match what is stored now — it never applies a copy
/// carried by a message, since two changes' messages can arrive in either order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Refresh {
    pub account: AccountId,
    pub id: Uuid,
}

/// Start-up / config reload → Supervisor: read every stored integration; only actors
/// whose config changed are started, restarted or stopped, and those of integrations
/// no longer stored are stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile;

/// Supervisor → IntegrationActor: the stored integration changed in nothing delivery
/// uses (its name): the actor now runs this version of it, without a restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt {
    pub integration: Integration,
}

/// API → Supervisor → IntegrationActor: sync now instead of waiting for the next tick.
/// Answers false when the integration has no running actor (disabled or unknown).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct SyncNow {
    pub id: Uuid,
}

/// API → Supervisor → IntegrationActor: what the actor is doing, for the status API.
#[derive(Message)]
#[rtype(result = "Option<Observation>")]
pub struct Observe {
    pub id: Uuid,
}

/// API → Supervisor: re-send the retained events of `sources` in `window` for this
/// integration, beside its live delivery. Refused while another replay of it runs.
#[derive(Message)]
#[rtype(result = "Result<super::replay::ReplayProgress, String>")]
pub struct StartReplay {
    /// The integration: the replay uses the configuration its running actor has.
    pub id: Uuid,
    pub window: Window,
    pub sources: Vec<crate::model::Source>,
}

/// API → Supervisor: how many retained events of each source a replay window holds,
/// before anything is started. The Supervisor asks the collectors, as a replay does.
#[derive(Message)]
#[rtype(result = "Result<Vec<(crate::model::Source, u64)>, StoreError>")]
pub struct CountReplay {
    pub account: AccountId,
    pub window: Window,
    pub sources: Vec<crate::model::Source>,
}

/// API → Supervisor: stop the integration's running replay; answers its last progress.
#[derive(Message)]
#[rtype(result = "Option<super::replay::ReplayProgress>")]
pub struct CancelReplay {
    pub account: AccountId,
    pub id: Uuid,
}

/// API → Supervisor: the integration's latest replay, running or ended.
#[derive(Message)]
#[rtype(result = "Option<super::replay::ReplayProgress>")]
pub struct ObserveReplay {
    pub id: Uuid,
}

/// Supervisor → IntegrationActor: stop now; a post in flight is abandoned without moving the checkpoint.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// IntegrationActor → Supervisor, from `stopped()`: an actor ended. The supervisor restarts
/// it from its sled state unless it was stopped on purpose.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stopped {
    pub id: Uuid,
    pub generation: u64,
}

/// The state an integration actor publishes; the status API reads it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Running, nothing attempted yet.
    Pending,
    /// The last post was accepted.
    Healthy,
    /// The last post failed; `last_error` says why.
    Failing,
}

/// One actor's observable state (quickwit-style): tests and the status API assert on it.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub state: State,
    pub started_at: DateTime<Utc>,
    /// The version of the integration the actor runs (see `Integration::version`).
    pub config_version: u64,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<Failure>,
    /// Failed attempts since the last success.
    pub retries: u32,
    pub syncing: bool,
    pub next_sync: Option<DateTime<Utc>>,
    /// While a sync drains a backlog: how far it is.
    pub progress: Option<Progress>,
    /// Whether `last_error` clears by itself or needs the customer.
    pub error_kind: Option<crate::hec::response::FailureKind>,
    /// How long Splunk asked to wait before the next attempt (`Retry-After` on 429
    /// or 503, bounded by `max_retry_after_secs`), when it did.
    pub retry_after_secs: Option<u64>,
    /// Splunk warned that a queue approaches its capacity (codes 24, 25): delivery
    /// goes on, pausing between posts.
    pub slow_down: Option<SlowDownView>,
    /// When the sync now running started.
    pub sync_started_at: Option<DateTime<Utc>>,
    /// How the latest sync that ended went, so that "sync now" can show its result.
    pub last_sync: Option<SyncReport>,
}

/// Splunk asked to slow down, as the status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowDownView {
    /// HEC's code (24: HEC queue, 25: acknowledgement queue) and text.
    pub code: Option<i64>,
    pub text: String,
    pub advice: String,
    /// The pause before each post now.
    pub pause_ms: u64,
    /// Since when Splunk has been warning.
    pub since: DateTime<Utc>,
}

/// One sync that ended: when, how many events it delivered, and whether it succeeded
/// (the status's `last_error` says why not).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncReport {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub events: u64,
    pub ok: bool,
}

/// Progress of long work (a catch-up or a replay): done of total since `started_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub started_at: DateTime<Utc>,
}

impl Progress {
    /// Events per second so far, and the seconds left at that rate (when there is one).
    pub fn rate_and_eta(&self) -> (f64, Option<f64>) {
        let secs = (Utc::now() - self.started_at).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = self.done as f64 / secs;
        let eta = (rate > 0.0).then(|| self.total.saturating_sub(self.done) as f64 / rate);
        (rate, eta)
    }

    /// The status API's view, with rate and time left.
    pub fn to_view(&self) -> serde_json::Value {
        let (rate, eta) = self.rate_and_eta();
        serde_json::json!({
            "done": self.done,
            "total": self.total,
            "started_at": self.started_at,
            "rate_per_sec": (rate * 10.0).round() / 10.0,
            "eta_secs": eta.map(|e| e.round()),
        })
    }
}

/// What a batch request asks for; the collectors fill at most `max_bytes`.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    pub account: AccountId,
    pub envelope: Envelope,
    pub upload_time: DateTime<Utc>,
    pub max_bytes: usize,
}

/// A replay's window: events whose time (audit) or snapshot time (jobs) is in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl Window {
    pub fn contains(&self, t: &DateTime<Utc>) -> bool {
        self.from <= *t && *t <= self.to
    }
}

/// IntegrationActor / ReplayActor → AuditCollector: audit events after sequence
/// `after`, only those in `window` when one is given.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectAudit {
    pub request: BatchRequest,
    pub after: u64,
    pub window: Option<Window>,
}

/// ReplayActor → a collector: how many retained events of `source` are in the window.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct CountWindow {
    pub account: AccountId,
    pub window: Window,
}

/// IntegrationActor / ReplayActor → JobCollector: jobs changed after change sequence
/// `after`, only those whose snapshot time is in `window` when one is given.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectChangedJobs {
    pub request: BatchRequest,
    pub after: u64,
    pub window: Option<Window>,
}

/// IntegrationActor → JobCollector: jobs in progress whose snapshot is at or before
/// `up_to` (newer ones were just sent as changed), continuing after job `after_job`.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectRunningJobs {
    pub request: BatchRequest,
    pub up_to: u64,
    pub after_job: Option<String>,
}
