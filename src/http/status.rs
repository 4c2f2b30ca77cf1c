//! An integration's status as the API answers it: the actor's observation joined
//! with what the store knows, as typed views so the contract is one struct per
//! object of the README's status.

use super::errors::ApiError;
use super::AppState;
use crate::actors::messages::{Observe, ObserveReplay, ObserveRestarts};
use crate::actors::observation::{
    Observation, Progress, ProgressView, Published, Restarts, SlowDownView, State, SyncReport,
};
use crate::actors::replay::{ReplayProgress, ReplayState};
use crate::control::PUBLISH_EVERY;
use crate::hec::check::ConnectionReport;
use crate::model::{AccountId, Failure, FailureKind, Integration};
use crate::store::postgres::PgStore;
use crate::store::StoreError;
use crate::store::{Backlog, Gap};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// What an integration is doing, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IntegrationStatus {
    /// The integration.
    pub id: Uuid,
    /// Its account.
    pub account: AccountId,
    /// Its name, as the customer gave it.
    pub name: String,
    /// What it is doing, in one word.
    pub state: StatusState,
    /// Its own Enable toggle (the account's feature is beside it).
    pub enabled: bool,
    /// Whether the account's SIEM feature is on: off, nothing is sent whatever `enabled` says.
    pub account_feature_enabled: bool,
    /// The stored version of its settings.
    pub version: u64,
    /// The version the running actor delivers with (`null`: no actor runs).
    pub config_version: Option<u64>,
    /// When the running actor started (`null`: none runs).
    pub started_at: Option<DateTime<Utc>>,
    /// Whether a sync is running now.
    pub syncing: bool,
    /// While a sync drains a backlog: how far, how fast, how long still.
    pub progress: Option<ProgressView>,
    /// When it last posted to Splunk.
    pub last_attempt: Option<DateTime<Utc>>,
    /// When Splunk last accepted a post (kept across restarts).
    pub last_success: Option<DateTime<Utc>>,
    /// Why the last post failed, and what to do.
    pub last_error: Option<ErrorView>,
    /// Splunk warned that a queue approaches its capacity (codes 24, 25): delivery
    /// goes on, pausing between posts.
    pub slow_down: Option<SlowDownView>,
    /// How the latest sync that ended went.
    pub last_sync: Option<SyncReport>,
    /// Failed attempts since the last success.
    pub retries: u32,
    /// The Supervisor's restarts of its delivery since the service started: how
    /// many, the latest one's reason (`panic`, `stuck`, `ended`) and time.
    pub restarts: Restarts,
    /// Events delivered since it was created.
    pub delivered: Delivered,
    /// Events not delivered yet.
    pub backlog: BacklogView,
    /// When the next tick starts a sync.
    pub next_sync: Option<DateTime<Utc>>,
    /// How many events are in the dead letters.
    pub dead_letters: usize,
    /// Events it never received because they outlived the retention.
    pub gaps: Vec<Gap>,
    /// Its latest replay, running or ended.
    pub replay: Option<ReplayView>,
    /// The latest connection test of its settings.
    pub connection_test: Option<ConnectionReport>,
    /// PostgreSQL: the node delivering it — this one while it runs here, else the
    /// node that published its live status (state, errors, progress, next sync,
    /// restarts) recently; `null` on sled, or when no node runs it.
    pub node: Option<String>,
}

/// The last failure, and whether it clears by itself or needs the customer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorView {
    #[serde(flatten)]
    /// Splunk's answer (or the transport error) and the advice.
    pub failure: Failure,
    /// Whether it clears by itself (`retrying`) or needs the customer.
    pub kind: Option<FailureKind>,
    /// How long Splunk asked to wait before the next attempt (`Retry-After` on 429
    /// or 503, bounded by `max_retry_after_secs`), when it did.
    pub retry_after_secs: Option<u64>,
}

/// Events delivered since the integration was created, per source.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Delivered {
    /// Audit events delivered.
    pub audit: u64,
    /// Job snapshots delivered.
    pub jobs: u64,
}

/// Events not delivered yet, and how long the oldest has waited.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BacklogView {
    /// All undelivered events.
    pub events: u64,
    /// Undelivered audit events.
    pub audit: u64,
    /// Undelivered job snapshots.
    pub jobs: u64,
    /// Seconds since the oldest undelivered event was stored (`null`: none).
    pub oldest_age_secs: Option<f64>,
}

/// The latest replay; a running one also says how far, how fast, how long still.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplayView {
    #[serde(flatten)]
    /// The replay as recorded.
    pub replay: ReplayProgress,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Only while it runs: how far, how fast, how long still.
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

/// What an integration is doing, in one word. `last_post_ok`: whether its latest
/// post before the running actor started succeeded (see [`last_post_ok`]).
fn state_of(active: bool, obs: Option<&Observation>, last_post_ok: bool) -> StatusState {
    if !active {
        return StatusState::Disabled;
    }
    match obs.map(|o| &o.state) {
        // Nothing posted since the actor started: its latest post before says more.
        Some(State::Pending) if last_post_ok => StatusState::Healthy,
        None | Some(State::Pending) => StatusState::Pending,
        Some(State::Failing) => StatusState::Failing,
        Some(State::Healthy) => StatusState::Healthy,
    }
}

/// Whether the integration's latest sync that posted to Splunk (before a restart, say)
/// succeeded — with its current settings: a post made before the integration was
/// last changed (another token, another URI) proves nothing about it now.
fn last_post_ok(state: &AppState, it: &Integration) -> Result<bool, ApiError> {
    Ok(state
        .store
        .sync_summary(&it.id)?
        .and_then(|s| s.last_attempt)
        .is_some_and(|a| a.error.is_none() && a.at >= it.updated_at))
}

/// An integration's status: the actor's observation joined with what the store knows.
pub async fn status_of(state: &AppState, it: &Integration) -> Result<IntegrationStatus, ApiError> {
    // The observation first (the actor's, or the one another node published), the
    // checkpoint after: a sync the observation shows as ended has its commits in
    // the checkpoint read next, so `delivered` is never behind `last_sync` (read
    // the other way round, a sync ending between the two reads showed its events
    // in `last_sync` and one post's worth still in the backlog).
    let mut obs = state.supervisor.send(Observe { id: it.id }).await?;
    let mut restarts = state.supervisor.send(ObserveRestarts { id: it.id }).await?;
    let pg = state.store.postgres();
    let mut node = obs.as_ref().and(pg).map(|pg| pg.node_name().to_string());
    let feature = state
        .store
        .account(&it.account)?
        .is_some_and(|a| a.siem_enabled);
    let active = state.store.is_active(it)?;
    // PostgreSQL: an active integration this node does not run is shown as the
    // node running it published it.
    if let (None, Some(pg), true) = (&obs, pg, active) {
        let fresh_for = state.config.timing.control_reread_secs.get() * 2 + PUBLISH_EVERY;
        if let Some((by, published)) = published_elsewhere(pg, &it.id, fresh_for).await? {
            (obs, restarts, node) = (published.observation, published.restarts, Some(by));
        }
    }
    let cp = state.store.checkpoint(&it.id)?;
    let backlog = state.store.backlog(it, &cp)?;
    let now = Utc::now();
    let replay = state
        .supervisor
        .send(ObserveReplay { id: it.id })
        .await?
        .map(|r| ReplayView::at(r, now));
    let obs = obs.as_ref();
    // Read only where it decides the state: a pending actor of an active integration.
    let earlier_post_ok =
        active && matches!(obs.map(|o| &o.state), Some(State::Pending)) && last_post_ok(state, it)?;
    Ok(IntegrationStatus {
        id: it.id,
        account: it.account.clone(),
        name: it.name.clone(),
        state: state_of(active, obs, earlier_post_ok),
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
                retry_after_secs: o.retry_after_secs,
            })
        }),
        slow_down: obs.and_then(|o| o.slow_down.clone()),
        last_sync: obs.and_then(|o| o.last_sync.clone()),
        retries: obs.map_or(0, |o| o.retries),
        restarts,
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
        node,
    })
}

/// PostgreSQL: the live part of the status of integration `id`, which this node
/// does not run, as the node running it published it, with that node's name.
/// `None` when no other node published it within `fresh_for` (by PostgreSQL's
/// clock): a node publishes at least every re-read interval while it runs the
/// integration, so an older record is one a stopped node left behind. Nor when the
/// publishing node no longer holds the integration's shard under a live lease: it
/// lost the shard, and the new holder has not published yet. This node's own record
/// is not used either: it no longer runs the integration.
pub async fn published_elsewhere(
    pg: &PgStore,
    id: &Uuid,
    fresh_for: Duration,
) -> Result<Option<(String, Published)>, StoreError> {
    let Some(record) = pg.delivery_status(id).await? else {
        return Ok(None);
    };
    if record.node == pg.node_name()
        || !record.by_holder
        || record.age_secs > fresh_for.as_secs_f64()
    {
        return Ok(None);
    }
    match serde_json::from_value::<Published>(record.status) {
        Ok(published) => Ok(Some((record.node, published))),
        // A record this build cannot read (a newer node's, say): the status is
        // answered without the live part, as while an actor restarts.
        Err(e) => {
            log::warn!(
                "integration {id}: cannot read the status node {} published: {e}",
                record.node
            );
            Ok(None)
        }
    }
}
