//! An integration's status as the API answers it: the actor's observation joined
//! with what the store knows, as typed views so the contract is one struct per
//! object of the README's status.

use super::errors::ApiError;
use super::AppState;
use crate::actors::messages::{Observe, ObserveReplay};
use crate::actors::observation::{Observation, Progress, ProgressView, State, SyncReport};
use crate::actors::replay::{ReplayProgress, ReplayState};
use crate::hec::check::ConnectionReport;
use crate::model::{AccountId, Failure, FailureKind, Integration};
use crate::store::{Backlog, Gap};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// What an integration is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusState {
    /// Turned off, or its account's SIEM feature is.
    Disabled,
    /// Running, nothing attempted yet (or its actor is being restarted).
    Pending,
    /// The last post failed.
    Failing,
    /// The last post was accepted.
    Healthy,
}

/// `GET …/status`: one integration's status.
#[derive(Debug, Clone, Serialize)]
pub struct IntegrationStatus {
    pub id: Uuid,
    pub account: AccountId,
    pub name: String,
    pub state: StatusState,
    pub enabled: bool,
    pub account_feature_enabled: bool,
    pub version: u64,
    /// The version the running actor delivers with (`null`: no actor runs).
    pub config_version: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub syncing: bool,
    pub progress: Option<ProgressView>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<ErrorView>,
    pub last_sync: Option<SyncReport>,
    pub retries: u32,
    pub delivered: Delivered,
    pub backlog: BacklogView,
    pub next_sync: Option<DateTime<Utc>>,
    /// How many events are in the dead letters.
    pub dead_letters: usize,
    pub gaps: Vec<Gap>,
    pub replay: Option<ReplayView>,
    pub connection_test: Option<ConnectionReport>,
}

/// The last failure, and whether it clears by itself or needs the customer.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorView {
    #[serde(flatten)]
    pub failure: Failure,
    pub kind: Option<FailureKind>,
}

/// Events delivered since the integration was created, per source.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    pub audit: u64,
    pub jobs: u64,
}

/// Events not delivered yet, and how long the oldest has waited.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogView {
    pub events: u64,
    pub audit: u64,
    pub jobs: u64,
    pub oldest_age_secs: Option<f64>,
}

/// The latest replay; a running one also says how far, how fast, how long still.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayView {
    #[serde(flatten)]
    pub replay: ReplayProgress,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressView>,
}

impl BacklogView {
    fn at(backlog: &Backlog, now: DateTime<Utc>) -> BacklogView {
        BacklogView {
            events: backlog.events(),
            audit: backlog.audit,
            jobs: backlog.jobs,
            oldest_age_secs: backlog
                .oldest
                .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        }
    }
}

impl ReplayView {
    fn at(replay: ReplayProgress, now: DateTime<Utc>) -> ReplayView {
        let progress = (replay.state == ReplayState::Running).then(|| {
            Progress {
                done: replay.sent + replay.skipped,
                total: replay.total,
                started_at: replay.started_at,
            }
            .view(now)
        });
        ReplayView { replay, progress }
    }
}

fn state_of(active: bool, obs: Option<&Observation>) -> StatusState {
    if !active {
        return StatusState::Disabled;
    }
    match obs.map(|o| &o.state) {
        None | Some(State::Pending) => StatusState::Pending,
        Some(State::Failing) => StatusState::Failing,
        Some(State::Healthy) => StatusState::Healthy,
    }
}

/// An integration's status: the actor's observation joined with what the store knows.
pub async fn status_of(state: &AppState, it: &Integration) -> Result<IntegrationStatus, ApiError> {
    let cp = state.store.checkpoint(&it.id)?;
    let backlog = state.store.backlog(it, &cp)?;
    let obs = state.supervisor.send(Observe { id: it.id }).await?;
    let feature = state
        .store
        .account(&it.account)?
        .is_some_and(|a| a.siem_enabled);
    let active = state.store.is_active(it)?;
    let now = Utc::now();
    let replay = state
        .supervisor
        .send(ObserveReplay { id: it.id })
        .await?
        .map(|r| ReplayView::at(r, now));
    let obs = obs.as_ref();
    Ok(IntegrationStatus {
        id: it.id,
        account: it.account.clone(),
        name: it.name.clone(),
        state: state_of(active, obs),
        enabled: it.enabled,
        account_feature_enabled: feature,
        version: it.version,
        config_version: obs.map(|o| o.config_version),
        started_at: obs.map(|o| o.started_at),
        syncing: obs.is_some_and(|o| o.syncing),
        progress: obs.and_then(|o| o.progress.as_ref()).map(|p| p.view(now)),
        last_attempt: obs.and_then(|o| o.last_attempt),
        last_success: cp.last_success,
        last_error: obs.and_then(|o| {
            Some(ErrorView {
                failure: o.last_error.clone()?,
                kind: o.error_kind,
            })
        }),
        last_sync: obs.and_then(|o| o.last_sync.clone()),
        retries: obs.map_or(0, |o| o.retries),
        delivered: Delivered {
            audit: cp.delivered_audit,
            jobs: cp.delivered_jobs,
        },
        backlog: BacklogView::at(&backlog, now),
        next_sync: obs.and_then(|o| o.next_sync),
        dead_letters: state.store.dead_letters(&it.id, 0)?.0,
        gaps: state.store.gaps(&it.id)?,
        replay,
        connection_test: state.store.connection_report::<ConnectionReport>(&it.id)?,
    })
}
