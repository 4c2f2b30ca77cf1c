//! Every message exchanged between the actors, each with who sends it and when.

pub use super::batch::{Batch, BatchKind};
use super::observation::Observation;
use super::replay::ReplayProgress;
use super::replays::RequestError;
use crate::hec::encode::Envelope;
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
    /// The integration's account: its key in the store.
    pub account: AccountId,
    /// The integration that changed.
    pub id: Uuid,
}

/// Start-up / config reload → Supervisor: read every stored integration; only actors
/// whose config changed are started, restarted or stopped, and those of integrations
/// no longer stored are stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reconcile;

/// Control re-read → Supervisor (PostgreSQL): every stored integration's version
/// and whether it should be delivering, read off the Supervisor's thread. Only
/// the integrations that differ from what runs here (another version, started or
/// stopped, gone) are read again (`Refresh`); those waiting out a restart back-off
/// are left to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Reread {
    /// What the store holds now.
    pub stamps: Vec<crate::store::postgres::IntegrationStamp>,
}

/// Lease loop → Supervisor (PostgreSQL, after a lease round changed what this node
/// holds): the actors of integrations whose shard it hands over finish their
/// posts in flight within `grace` (then are stopped); those of shards claimed
/// elsewhere meanwhile stop at once; the replays of both stop (their records
/// stay running and resume on the shard's next holder); and actors start for the
/// integrations of the shards `gained`, and of those alone. Answers once the
/// stopped ones are gone, so their shards can be released.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Rebalance {
    /// How long a post in flight may take to finish before it is abandoned (sent
    /// again by the shard's next holder: at-least-once).
    pub grace: std::time::Duration,
    /// The shards this node runs delivery for since the last `Rebalance`.
    pub gained: Vec<i32>,
    /// The shards this node held before and holds again under a new epoch (its
    /// lease lapsed meanwhile, and another node may have delivered them): their
    /// actors stop at once and start again from the stored checkpoints.
    pub reclaimed: Vec<i32>,
}

/// Supervisor → IntegrationActor: the stored integration changed in nothing delivery
/// uses (its name): the actor now runs this version of it, without a restart.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Adopt {
    /// The stored version, to run from now on.
    pub integration: Integration,
}

/// API → Supervisor → IntegrationActor: sync now instead of waiting for the next tick.
/// Answers false when the integration has no running actor (disabled or unknown).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct SyncNow {
    /// The integration to sync.
    pub id: Uuid,
}

/// API → Supervisor → IntegrationActor: what the actor is doing, for the status API.
#[derive(Message)]
#[rtype(result = "Option<Observation>")]
pub struct Observe {
    /// The integration whose actor is asked.
    pub id: Uuid,
}

/// API → Supervisor: what the Supervisor did to the integration's actor since the
/// service started (restarts after a panic, a stuck post or an unexpected end), for
/// the status API. Answered by the Supervisor itself: also while no actor runs.
#[derive(Message)]
#[rtype(result = "super::observation::Restarts")]
pub struct ObserveRestarts {
    /// The integration asked about.
    pub id: Uuid,
}

/// API → Supervisor: re-send the retained events of `sources` in `window` for this
/// integration, beside its live delivery. Refused while another replay of it runs.
#[derive(Message)]
#[rtype(result = "Result<ReplayProgress, RequestError>")]
pub struct StartReplay {
    /// The integration: the replay uses the configuration its running actor has.
    pub id: Uuid,
    /// The events to re-send: those whose time is in it.
    pub window: Window,
    /// The sources to re-send, in this order.
    pub sources: Vec<crate::model::Source>,
}

/// API → Supervisor: how many retained events of each source a replay window holds,
/// before anything is started. The Supervisor asks the collectors, as a replay does.
#[derive(Message)]
#[rtype(result = "Result<Vec<(crate::model::Source, u64)>, StoreError>")]
pub struct CountReplay {
    /// The account whose retained events are counted.
    pub account: AccountId,
    /// The window a replay would re-send.
    pub window: Window,
    /// The sources a replay would re-send.
    pub sources: Vec<crate::model::Source>,
}

/// API → Supervisor → ReplayActor: stop the integration's running replay; answers
/// its last progress (`None`: no replay of it is running), or the store's error
/// when it could not read or record the cancel of a replay that runs in no actor
/// here (nothing was cancelled: 503, never "none running").
#[derive(Message)]
#[rtype(result = "Result<Option<ReplayProgress>, crate::store::StoreError>")]
pub struct CancelReplay {
    /// The integration's account, to record the cancellation under.
    pub account: AccountId,
    /// The integration whose replay is cancelled.
    pub id: Uuid,
}

/// API → Supervisor → ReplayActor: the integration's latest replay, running or ended.
#[derive(Message)]
#[rtype(result = "Option<ReplayProgress>")]
pub struct ObserveReplay {
    /// The integration whose latest replay is asked for.
    pub id: Uuid,
}

/// Status publisher → Supervisor (PostgreSQL): what each integration running here
/// shows of itself, to publish for the other nodes — of those whose actor marked a
/// change since the last `ObserveAll` (`None` for the others: unchanged; a boxed
/// answer keeps an idle node's 100,000 `None`s small), or of every one with `all`.
#[derive(Message)]
#[rtype(result = "Vec<(Uuid, Option<Box<super::observation::Published>>)>")]
pub struct ObserveAll {
    /// Ask every actor, changed or not (the publisher's first look).
    pub all: bool,
    /// Ask also every actor not asked for this long, changed or not. It takes
    /// the actors' marks: only the status publisher sends it.
    pub refresh: std::time::Duration,
}

/// Control listener → Supervisor (PostgreSQL): integration `id`'s replay record was
/// changed on another node (a replay asked for, or cancelled, there). Where the
/// integration runs, a replay the record says runs is started, and one the record
/// says ended is stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayChanged {
    /// The integration whose replay record changed.
    pub id: Uuid,
}

/// Control listener → Supervisor (PostgreSQL), at every re-read: the integrations
/// whose replay record says running. Those that run here and run no replay start
/// it, and a replay running here whose record no longer says so stops: the net
/// under a lost `ReplayChanged`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RereadReplays {
    /// The integrations whose stored replay is running.
    pub running: Vec<Uuid>,
}

/// ReplayActor → Supervisor: replay `replay` of integration `id` ended by itself
/// (done or failed), so another may start. The actor stays, to answer `ObserveReplay`
/// with how it ended, until its integration stops or another replay replaces it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayEnded {
    /// The integration the replay belonged to.
    pub id: Uuid,
    /// Which replay ended (`ReplayProgress::id`): a late word from an older one changes nothing.
    pub replay: Uuid,
}

/// Supervisor → IntegrationActor: stop now; a post in flight is abandoned without moving the checkpoint.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Supervisor → IntegrationActor / ReplayActor, at shutdown (after asking on the
/// actor's heartbeat): finish the posts in flight, start no other, then stop.
/// Answers whether there was a post to finish.
#[derive(Message)]
#[rtype(result = "WindDown")]
pub struct Drain;

/// How an actor ended at shutdown: what explains a batch sent again after the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindDown {
    /// Nothing was in flight: it stopped at once.
    Idle,
    /// Its posts in flight were answered within the grace (committed when Splunk took them).
    Finished,
    /// A post was still in flight when the grace ran out: it was dropped unanswered,
    /// the checkpoint did not move, and the restart sends those events again.
    Abandoned,
}

/// Service → Supervisor, at shutdown: wind every actor down within `grace`, then
/// stop; answers what each actor did. Nothing is started or restarted afterwards.
#[derive(Message)]
#[rtype(result = "super::shutdown::ShutdownReport")]
pub struct Shutdown {
    /// How long the posts in flight may take to finish before they are abandoned.
    pub grace: std::time::Duration,
}

/// IntegrationActor → Supervisor, from `stopped()`: an actor ended. The supervisor restarts
/// it from its sled state unless it was stopped on purpose.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stopped {
    /// The integration whose actor ended.
    pub id: Uuid,
    /// Which start of it ended: an actor replaced meanwhile is not restarted.
    pub generation: u64,
}

/// What a batch request asks for; the collectors fill at most `max_bytes`.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// The account whose events are read.
    pub account: AccountId,
    /// The HEC envelope fields every event of the batch carries.
    pub envelope: Envelope,
    /// The `upload_time` stamped on every event of the batch.
    pub upload_time: DateTime<Utc>,
    /// The most bytes the batch's body may hold.
    pub max_bytes: usize,
}

/// A replay's window: events whose time (audit) or snapshot time (jobs) is in it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The first instant in the window.
    pub from: DateTime<Utc>,
    /// The last instant in the window (included).
    pub to: DateTime<Utc>,
}

impl Window {
    /// Whether `t` is in the window, both ends included.
    pub fn contains(&self, t: &DateTime<Utc>) -> bool {
        self.from <= *t && *t <= self.to
    }
}

/// IntegrationActor / ReplayActor → AuditCollector: audit events after sequence
/// `after`, only those in `window` when one is given.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectAudit {
    /// What the batch is for and how large it may be.
    pub request: BatchRequest,
    /// The audit sequence already delivered: the batch starts after it.
    pub after: u64,
    /// A replay's window; `None` for live delivery.
    pub window: Option<Window>,
}

/// ReplayActor → a collector: how many retained events of `source` are in the window.
#[derive(Message)]
#[rtype(result = "Result<u64, StoreError>")]
pub struct CountWindow {
    /// The account whose retained events are counted.
    pub account: AccountId,
    /// The window to count.
    pub window: Window,
}

/// IntegrationActor / ReplayActor → JobCollector: jobs changed after change sequence
/// `after`, only those whose snapshot time is in `window` when one is given.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectChangedJobs {
    /// What the batch is for and how large it may be.
    pub request: BatchRequest,
    /// The job change sequence already delivered: the batch starts after it.
    pub after: u64,
    /// A replay's window; `None` for live delivery.
    pub window: Option<Window>,
}

/// IntegrationActor → JobCollector: jobs in progress whose snapshot is at or before
/// `up_to` (newer ones were just sent as changed), continuing after job `after_job`.
#[derive(Message)]
#[rtype(result = "Result<Batch, StoreError>")]
pub struct CollectRunningJobs {
    /// What the batch is for and how large it may be.
    pub request: BatchRequest,
    /// The change sequence the batch runs up to: newer snapshots were just sent as changed.
    pub up_to: u64,
    /// The job the previous batch ended with; `None` to start from the first.
    pub after_job: Option<String>,
}
