//! What an integration actor publishes about itself (quickwit's "observable
//! state"): the status API and the tests read it; the Supervisor adds what it did
//! to the actor (restarts, kills).

use crate::model::{Failure, FailureKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The state an integration actor publishes; the status API reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// In one word: nothing tried yet, last post accepted, or last post failed.
    pub state: State,
    /// When this actor started: a restart shows as a newer time.
    pub started_at: DateTime<Utc>,
    /// The version of the integration the actor runs (see `Integration::version`).
    pub config_version: u64,
    /// When the actor last posted to Splunk.
    pub last_attempt: Option<DateTime<Utc>>,
    /// Why the last post failed; cleared by the next success.
    pub last_error: Option<Failure>,
    /// Failed attempts since the last success.
    pub retries: u32,
    /// Whether a sync is running now.
    pub syncing: bool,
    /// When the next tick starts a sync.
    pub next_sync: Option<DateTime<Utc>>,
    /// While a sync drains a backlog: how far it is.
    pub progress: Option<Progress>,
    /// Whether `last_error` clears by itself or needs the customer.
    pub error_kind: Option<FailureKind>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlowDownView {
    /// HEC's code (24: HEC queue, 25: acknowledgement queue).
    pub code: Option<i64>,
    /// Splunk's own text.
    pub text: String,
    /// What it means and what to do, in the customer's words.
    pub advice: String,
    /// The pause before each post now.
    pub pause_ms: u64,
    /// Since when Splunk has been warning.
    pub since: DateTime<Utc>,
}

/// One sync that ended: when, how many events it delivered, and whether it succeeded
/// (the status's `last_error` says why not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SyncReport {
    /// When the sync started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Events it delivered.
    pub events: u64,
    /// Whether it ended without a failure.
    pub ok: bool,
}

/// Progress of long work (a catch-up or a replay): done of total since `started_at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Events done so far.
    pub done: u64,
    /// Events to do in all, as counted when the work started.
    pub total: u64,
    /// When the work started: the rate is counted from then.
    pub started_at: DateTime<Utc>,
}

impl Progress {
    /// Events per second so far, and the seconds left at that rate (when there is one).
    pub fn rate_and_eta(&self) -> (f64, Option<f64>) {
        self.rate_and_eta_at(Utc::now())
    }

    /// Like `rate_and_eta`, at the moment `now` (of the service's clock).
    pub fn rate_and_eta_at(&self, now: DateTime<Utc>) -> (f64, Option<f64>) {
        let secs = (now - self.started_at).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = self.done as f64 / secs;
        let eta = (rate > 0.0).then(|| self.total.saturating_sub(self.done) as f64 / rate);
        (rate, eta)
    }

    /// The status API's view at `now`, with rate and time left.
    pub fn view(&self, now: DateTime<Utc>) -> ProgressView {
        let (rate, eta) = self.rate_and_eta_at(now);
        ProgressView {
            done: self.done,
            total: self.total,
            started_at: self.started_at,
            rate_per_sec: (rate * 10.0).round() / 10.0,
            eta_secs: eta.map(|e| e.round()),
        }
    }
}

/// Progress as the status API shows it: how far, how fast, how long still.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProgressView {
    /// Events done so far.
    pub done: u64,
    /// Events to do in all.
    pub total: u64,
    /// When the work started.
    pub started_at: DateTime<Utc>,
    /// Events per second so far, to one decimal.
    pub rate_per_sec: f64,
    /// Seconds left at that rate; `null` before anything was done.
    pub eta_secs: Option<f64>,
}

/// Why the Supervisor restarted an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestartReason {
    /// It panicked (a bug): it vanished without ending.
    Panic,
    /// It made no progress past the longest a post may take (and the margin): stopped
    /// by the Supervisor.
    Stuck,
    /// It ended by itself without being asked (it could not read its checkpoint).
    Ended,
}

impl RestartReason {
    /// The word the status and the metrics' `reason` label use.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Panic => "panic",
            RestartReason::Stuck => "stuck",
            RestartReason::Ended => "ended",
        }
    }
}

/// What the Supervisor did to an integration's actor since the service started: the
/// status's `restarts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Restarts {
    /// Restarts since the service started.
    pub count: u64,
    /// Why the latest one happened (`null`: none yet).
    pub last_reason: Option<RestartReason>,
    /// When the latest one was decided.
    pub last_at: Option<DateTime<Utc>>,
}

/// What the node delivering an integration publishes about it (PostgreSQL), so that
/// any node can show its live status: its actor's observation and its restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// The actor's observation (`None`: it just died, and is being restarted).
    pub observation: Option<Observation>,
    /// What the Supervisor did to it.
    pub restarts: Restarts,
}
