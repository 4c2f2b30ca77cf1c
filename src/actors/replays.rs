//! The Supervisor's replay management: it starts one ReplayActor per integration,
//! resumes a replay recorded as running when its integration starts again, and
//! forwards questions and cancellations to the actor as messages. The progress
//! itself lives in the replay actor; the Supervisor keeps only its address and
//! whether it still runs.

use super::heartbeat::{self, Heartbeat};
use super::messages::*;
use super::observation::RestartReason;
use super::replay::{ReplayActor, ReplayDeps, ReplayProgress, ReplayState, StoredReplay};
use super::supervisor::Supervisor;
use crate::metrics::ActorLabels;
use crate::model::{AccountId, Integration, Source};
use crate::store::postgres::{PgError, PgStore};
use crate::store::{Store, StoreError};
use actix::prelude::*;
use std::collections::HashMap;
use uuid::Uuid;

/// Why a replay was not started: each says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayRefused {
    /// Another replay of the integration has not ended.
    #[error("a replay of this integration is running: cancel it first, or wait for it to end")]
    Running,
    /// A replay uses the running actor's configuration; there is none.
    #[error("the integration is not running: turn on its Enable toggle (and the account's SIEM feature) first")]
    NotRunning,
}

/// The latest replay actor of one integration.
pub(super) struct Handle {
    pub(super) addr: Addr<ReplayActor>,
    /// The replay it runs (`ReplayProgress::id`).
    replay: Uuid,
    /// False once it ended by itself or was cancelled.
    running: bool,
    /// Its progress, and whether it is still there.
    pub(super) heartbeat: Heartbeat,
}

/// The latest replay of each integration whose actor runs, running or ended.
#[derive(Default)]
pub(super) struct Replays {
    latest: HashMap<Uuid, Handle>,
    /// Integrations whose replay is being cancelled (how many cancels are under
    /// way): until the cancel is recorded, the record still says running, and a
    /// restart of the integration meanwhile would resume the replay from it.
    cancelling: HashMap<Uuid, u32>,
}

impl Replays {
    /// Whether integration `id` has a replay going on, or one being cancelled. An
    /// actor that died (a panic) runs nothing, whatever its last word was.
    fn running(&self, id: &Uuid) -> bool {
        self.cancelling.contains_key(id)
            || self
                .latest
                .get(id)
                .is_some_and(|h| h.running && h.heartbeat.alive())
    }

    fn cancel_started(&mut self, id: Uuid) {
        *self.cancelling.entry(id).or_insert(0) += 1;
    }

    fn cancel_ended(&mut self, id: &Uuid) {
        if let Some(n) = self.cancelling.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                self.cancelling.remove(id);
            }
        }
    }

    fn insert(&mut self, id: Uuid, replay: Uuid, addr: Addr<ReplayActor>, heartbeat: Heartbeat) {
        let old = self.latest.insert(
            id,
            Handle {
                addr,
                replay,
                running: true,
                heartbeat,
            },
        );
        // An ended replay's actor only stayed to say how it ended.
        if let Some(old) = old {
            old.addr.do_send(Stop);
        }
    }

    /// Replay `replay` of integration `id` runs no more.
    fn ended(&mut self, id: &Uuid, replay: Uuid) {
        if let Some(h) = self.latest.get_mut(id) {
            if h.replay == replay {
                h.running = false;
            }
        }
    }

    /// Stops the replay of integration `id`, if any. A running one keeps its record
    /// running, so it resumes when the integration starts again.
    pub(super) fn stop(&mut self, id: &Uuid) {
        if let Some(h) = self.latest.remove(id) {
            h.addr.do_send(Stop);
        }
    }

    /// The integrations with a replay actor.
    pub(super) fn ids(&self) -> Vec<Uuid> {
        self.latest.keys().copied().collect()
    }

    /// Every replay actor, handed over to be wound down (shutdown).
    pub(super) fn take_all(&mut self) -> Vec<(Uuid, Handle)> {
        self.latest.drain().collect()
    }

    /// The running replays that vanished (a panic) or are stuck: past their promised
    /// progress by more than `margin`.
    fn failed(&self, margin: std::time::Duration) -> Vec<(Uuid, RestartReason)> {
        let now = std::time::Instant::now();
        self.latest
            .iter()
            .filter(|(_, h)| h.running)
            .filter_map(|(id, h)| {
                if h.heartbeat.vanished() {
                    Some((*id, RestartReason::Panic))
                } else if h.heartbeat.overdue(now).is_some_and(|late| late > margin) {
                    Some((*id, RestartReason::Stuck))
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The replay recorded for integration `id` (`Ok(None)`: none is). A record that
/// cannot be read (PostgreSQL unavailable for a moment, say) is an error, logged
/// here, never "no replay": the callers keep what runs and try again later.
fn stored_replay(store: &Store, id: &Uuid) -> Result<Option<StoredReplay>, StoreError> {
    store.replay::<StoredReplay>(id).inspect_err(|e| {
        log::warn!("integration {id}: cannot read its replay record: {e}");
    })
}

/// Cancels, in its record, a replay that runs in no actor here (its integration is
/// disabled, or, on PostgreSQL, runs on another node), so that it does not resume
/// when the integration is enabled. On PostgreSQL the cancel is made under a lock
/// and announced, so that the node running the replay stops it. `Ok(None)`: no
/// replay is recorded as running. A record that cannot be read or written is an
/// error (503 and retry), never "no replay running" (404).
async fn cancel_stored(
    store: &Store,
    account: &AccountId,
    id: &Uuid,
) -> Result<Option<ReplayProgress>, StoreError> {
    if let Some(pg) = store.postgres() {
        return cancel_elsewhere(pg, account, id).await.map_err(|e| {
            log::warn!("integration {id}: cannot cancel its stored replay: {e}");
            e.into()
        });
    }
    let Some(stored) = stored_replay(store, id)? else {
        return Ok(None);
    };
    let mut stored = stored.progress;
    if stored.state != ReplayState::Running {
        return Ok(None);
    }
    stored.state = ReplayState::Cancelled;
    stored.finished_at = Some(chrono::Utc::now());
    match store.put_replay(account, id, &StoredReplay::ended(stored.clone())) {
        Ok(()) => Ok(Some(stored)),
        // Deleted meanwhile: its replay went with it.
        Err(StoreError::Gone) => Ok(None),
        Err(e) => {
            log::warn!("integration {id}: cannot record its replay's cancel: {e}");
            Err(e)
        }
    }
}

/// Why a replay was not started here, or asked for on a node that does not run
/// its integration.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Refused: a replay runs already, or the integration does not run here.
    #[error(transparent)]
    Refused(#[from] ReplayRefused),
    /// The store did not take the request (the integration is gone, the stored
    /// replay is unreadable, the store is unavailable): nothing was started.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PgError> for RequestError {
    fn from(e: PgError) -> Self {
        RequestError::Store(e.into())
    }
}

/// PostgreSQL: a replay asked for on a node that does not run the integration. It
/// is stored as a running replay with nothing sent yet, under a lock and with a
/// NOTIFY, and the node running the integration starts it from the record within a
/// second (or at its next re-read, if the NOTIFY is lost), as it resumes a replay.
pub async fn request_elsewhere(
    pg: &PgStore,
    account: &AccountId,
    id: &Uuid,
    window: Window,
    sources: Vec<Source>,
) -> Result<ReplayProgress, RequestError> {
    store_request(pg, account, id, StoredReplay::new(window, sources)).await
}

/// PostgreSQL: stores replay `new` as integration `id`'s replay record under a
/// lock on the integration, unless the record says a replay runs (`Running`), and
/// announces it; answers its progress as stored.
async fn store_request(
    pg: &PgStore,
    account: &AccountId,
    id: &Uuid,
    new: StoredReplay,
) -> Result<ReplayProgress, RequestError> {
    let doc = serde_json::to_value(&new)
        .map_err(|e| PgError::Db(format!("cannot encode a replay: {e}")))?;
    let key = format!("the replay of integration {id}");
    pg.change_replay(account, id, move |stored| {
        match stored.map(decode(&key)).transpose() {
            Err(e) => (None, Err(e.into())),
            Ok(Some(s)) if s.progress.state == ReplayState::Running => {
                (None, Err(ReplayRefused::Running.into()))
            }
            Ok(_) => (Some(doc), Ok(new.progress)),
        }
    })
    .await?
}

/// Records replay `new` of integration `it`, about to start here, and answers
/// whether the store took it: the replay starts only if it did. On PostgreSQL
/// under a lock on the integration, so that a replay asked for on another node
/// meanwhile (running in its record, not picked up here yet) refuses this one
/// instead of being overwritten, or of refusing the write unseen. On sled, where
/// this Supervisor makes every change, the record is read and written here.
fn record_new(store: &Store, it: &Integration, new: &StoredReplay) -> Result<(), RequestError> {
    if let Some(pg) = store.postgres() {
        pg.wait(store_request(pg, &it.account, &it.id, new.clone()))?;
        return Ok(());
    }
    if stored_replay(store, &it.id)?.is_some_and(|s| s.progress.state == ReplayState::Running) {
        return Err(ReplayRefused::Running.into());
    }
    store.put_replay(&it.account, &it.id, new)?;
    Ok(())
}

/// PostgreSQL: cancels, under a lock and with a NOTIFY, the stored replay of an
/// integration that may run on another node; that node stops it within a second
/// (or at its next re-read), and the cancelled record is final (`put_replay`
/// refuses to record the replay's progress over it). `None`: no replay runs.
pub async fn cancel_elsewhere(
    pg: &PgStore,
    account: &AccountId,
    id: &Uuid,
) -> Result<Option<ReplayProgress>, PgError> {
    let key = format!("the replay of integration {id}");
    pg.change_replay(account, id, move |stored| {
        match stored.map(decode(&key)).transpose() {
            Err(e) => (None, Err(e)),
            Ok(Some(s)) if s.progress.state == ReplayState::Running => {
                let mut progress = s.progress;
                progress.state = ReplayState::Cancelled;
                progress.finished_at = Some(chrono::Utc::now());
                let ended = StoredReplay::ended(progress.clone());
                match serde_json::to_value(&ended) {
                    Ok(doc) => (Some(doc), Ok(Some(progress))),
                    Err(e) => (
                        None,
                        Err(PgError::Db(format!("cannot encode a replay: {e}"))),
                    ),
                }
            }
            Ok(_) => (None, Ok(None)),
        }
    })
    .await?
}

/// Decodes a stored replay, naming it when it cannot be read.
fn decode(key: &str) -> impl Fn(serde_json::Value) -> Result<StoredReplay, PgError> + '_ {
    move |doc| {
        serde_json::from_value(doc).map_err(|e| PgError::Corrupt {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }
}

impl Supervisor {
    /// Integration `id`'s replay record changed elsewhere: where the integration
    /// runs, the replay in memory is made to match it.
    fn replay_changed(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let Some(it) = self.running.get(&id).map(|r| r.config.clone()) else {
            return;
        };
        if self.replays.cancelling.contains_key(&id) {
            return;
        }
        // A record that cannot be read says nothing: the replay running here goes
        // on, and the next change or re-read looks again.
        let Ok(stored) = stored_replay(&self.store, &id) else {
            return;
        };
        if let Some(h) = self.replays.latest.get(&id) {
            let still = stored.as_ref().is_some_and(|s| {
                s.progress.id == h.replay && s.progress.state == ReplayState::Running
            });
            if h.running && !still {
                log::info!(
                    "replay {} of integration {id}: cancelled on another node; stopping it",
                    h.replay
                );
                self.replays.stop(&id);
            }
        }
        self.resume_replay(&it, ctx);
    }

    fn start_replay(&mut self, it: Integration, stored: StoredReplay, ctx: &mut Context<Self>) {
        let (id, replay) = (it.id, stored.progress.id);
        let (heartbeat, pulse) = heartbeat::pair(self.settings.longest_step());
        let deps = ReplayDeps {
            store: self.store.clone(),
            audit: self.audit.clone(),
            jobs: self.jobs.clone(),
            settings: (*self.settings).clone(),
            ended: ctx.address().recipient(),
            pulse,
            #[cfg(feature = "test-hooks")]
            stall: self.stalled_replays.contains(&id),
        };
        let addr = ReplayActor::new(it, stored, deps).start();
        self.replays.insert(id, replay, addr, heartbeat);
    }

    /// A running replay that vanished or is stuck is stopped and resumed from its
    /// record (its cursor moved only over what Splunk took).
    pub(super) fn check_replays(&mut self, ctx: &mut Context<Self>) {
        for (id, reason) in self.replays.failed(self.supervision.stuck_margin) {
            let Some(it) = self.running.get(&id).map(|r| r.config.clone()) else {
                self.replays.stop(&id);
                continue;
            };
            let metrics = &self.settings.metrics;
            if reason == RestartReason::Stuck {
                log::warn!("replay of integration {id}: no progress past the longest a post may take; stopping it");
                metrics
                    .actor_kills
                    .get_or_create(&ActorLabels::of(&it, "replay", "stuck"))
                    .inc();
            }
            metrics
                .actor_restarts
                .get_or_create(&ActorLabels::of(&it, "replay", reason.as_str()))
                .inc();
            self.replays.stop(&id);
            // Resumed after a back-off, as an actor is restarted: a replay that fails
            // the same way every time does not restart on every check.
            let crashes = self.replay_crashes.entry(id).or_insert(0);
            *crashes += 1;
            let delay = self.settings.timing.restart_delay(*crashes);
            ctx.run_later(delay, move |act, ctx| {
                if let Some(it) = act.running.get(&id).map(|r| r.config.clone()) {
                    act.resume_replay(&it, ctx);
                }
            });
        }
    }

    /// A replay recorded as running when its integration (re)starts: it goes on from
    /// where it was.
    pub(super) fn resume_replay(&mut self, it: &Integration, ctx: &mut Context<Self>) {
        if self.shutting_down || self.replays.running(&it.id) {
            return;
        }
        // A record that cannot be read resumes nothing now: on PostgreSQL the
        // periodic re-read of the running replays tries again.
        match stored_replay(&self.store, &it.id) {
            Ok(Some(stored)) if stored.progress.state == ReplayState::Running => {
                log::info!(
                    "replay {} for integration {} resumes ({} of {} sent)",
                    stored.progress.id,
                    it.id,
                    stored.progress.sent,
                    stored.progress.total
                );
                self.start_replay(it.clone(), stored, ctx);
            }
            _ => {}
        }
    }
}

impl Handler<StartReplay> for Supervisor {
    type Result = Result<ReplayProgress, RequestError>;
    fn handle(&mut self, msg: StartReplay, ctx: &mut Context<Self>) -> Self::Result {
        if self.replays.running(&msg.id) {
            return Err(ReplayRefused::Running.into());
        }
        self.bring_forward(&msg.id, ctx);
        let Some(integration) = self
            .running
            .get(&msg.id)
            .map(|r| Integration::clone(&r.config))
        else {
            return Err(ReplayRefused::NotRunning.into());
        };
        let stored = StoredReplay::new(msg.window, msg.sources);
        let first = stored.progress.clone();
        // The answer is the store's: a replay asked for on another node and not
        // picked up yet (its NOTIFY on the way, or lost until the re-read) is
        // running already, and a replay the store did not record is not started.
        record_new(&self.store, &integration, &stored)?;
        log::info!(
            "replay {} started for integration {}",
            first.id,
            integration.id
        );
        self.start_replay(integration, stored, ctx);
        Ok(first)
    }
}

/// A cancel answered is final: the replay never runs again. The cancel is carried
/// out while the Supervisor handles other messages, and a restart of the integration
/// among them (a change, a crash) would resume the replay from its record — still
/// "running" until the replay actor, or the store, records the cancel — and the
/// resumed replay would run on after the cancel was answered. So no replay of the
/// integration resumes or starts until the cancel is recorded.
impl Handler<CancelReplay> for Supervisor {
    type Result = ResponseActFuture<Self, Result<Option<ReplayProgress>, StoreError>>;
    fn handle(&mut self, msg: CancelReplay, _: &mut Context<Self>) -> Self::Result {
        let id = msg.id;
        self.replays.cancel_started(id);
        let latest = self
            .replays
            .latest
            .get(&id)
            .map(|h| (h.addr.clone(), h.running));
        let (store, account) = (self.store.clone(), msg.account.clone());
        Box::pin(
            async move {
                match latest {
                    // Its actor cancels it and records that.
                    Some((addr, true)) => match addr.send(msg).await {
                        Ok(cancelled) => cancelled,
                        // The actor died (a panic): its record still says running.
                        Err(_) => cancel_stored(&store, &account, &id).await,
                    },
                    // Nothing runs here: the record may still say running (a
                    // replay asked for on another node and not picked up yet,
                    // after one that ended here), and is cancelled there.
                    Some((_, false)) | None => cancel_stored(&store, &account, &id).await,
                }
            }
            .into_actor(self)
            .map(move |cancelled, act, ctx| {
                act.replays.cancel_ended(&id);
                match &cancelled {
                    Ok(Some(p)) => act.replays.ended(&id, p.id),
                    // Nothing was cancelled (none ran, or the store did not take the
                    // cancel: 503): a replay a restart did not resume meanwhile
                    // resumes now, if its record says it runs.
                    Ok(None) | Err(_) => {
                        if let Some(it) = act.running.get(&id).map(|r| r.config.clone()) {
                            act.resume_replay(&it, ctx);
                        }
                    }
                }
                cancelled
            }),
        )
    }
}

impl Handler<ObserveReplay> for Supervisor {
    type Result = ResponseFuture<Option<ReplayProgress>>;
    fn handle(&mut self, msg: ObserveReplay, _: &mut Context<Self>) -> Self::Result {
        let addr = self.replays.latest.get(&msg.id).map(|h| h.addr.clone());
        let store = self.store.clone();
        Box::pin(async move {
            let id = msg.id;
            if let Some(addr) = addr {
                if let Ok(progress) = addr.send(msg).await {
                    return progress;
                }
            }
            // The record answers for a replay not in memory: one that ended before a
            // restart, or one waiting for its integration to run again. One that
            // cannot be read is shown as none (logged).
            stored_replay(&store, &id)
                .ok()
                .flatten()
                .map(|s| s.progress)
        })
    }
}

impl Handler<ReplayEnded> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ReplayEnded, _: &mut Context<Self>) {
        self.replays.ended(&msg.id, msg.replay);
        self.replay_crashes.remove(&msg.id);
    }
}

impl Handler<CountReplay> for Supervisor {
    type Result = ResponseFuture<Result<Vec<(Source, u64)>, StoreError>>;
    fn handle(&mut self, msg: CountReplay, _: &mut Context<Self>) -> Self::Result {
        let (audit, jobs) = (self.audit.clone(), self.jobs.clone());
        Box::pin(async move {
            let mut counts = Vec::new();
            for source in msg.sources {
                let count = CountWindow {
                    account: msg.account.clone(),
                    window: msg.window,
                };
                let n = match source {
                    Source::Audit => audit.send(count).await,
                    Source::Jobs => jobs.send(count).await,
                }
                .map_err(|e| StoreError::Unavailable(format!("the event readers: {e}")))??;
                counts.push((source, n));
            }
            Ok(counts)
        })
    }
}

impl Handler<ReplayChanged> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: ReplayChanged, ctx: &mut Context<Self>) {
        self.replay_changed(msg.id, ctx);
    }
}

impl Handler<RereadReplays> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: RereadReplays, ctx: &mut Context<Self>) {
        // The replays running here, whose records may say cancelled, and the
        // records that say running, whose replay may not run here yet.
        let mut ids: Vec<Uuid> = self
            .replays
            .latest
            .iter()
            .filter(|(_, h)| h.running)
            .map(|(id, _)| *id)
            .collect();
        ids.extend(
            msg.running
                .into_iter()
                .filter(|id| !self.replays.running(id)),
        );
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.replay_changed(id, ctx);
        }
    }
}
