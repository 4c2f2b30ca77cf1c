//! Supervisor: one per process. Knows every integration's config and the address
//! of each running IntegrationActor; starts, restarts or stops only the actors
//! whose config changed, and restarts one that ends unexpectedly or stops making
//! progress (its heartbeat, `heartbeat.rs`); winds them all down at shutdown
//! (`shutdown.rs`).

use super::audit_collector::AuditCollector;
use super::heartbeat::{self, Heartbeat};
use super::integration::{DeliverySettings, IntegrationActor, Supervised};
use super::job_collector::JobCollector;
use super::messages::*;
use super::observation::{Observation, Published, RestartReason, Restarts};
use super::replays::Replays;
use super::threads::Placement;
use crate::metrics::ActorLabels;
use crate::model::{AccountId, Integration};
use crate::store::Store;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How the Supervisor watches its actors, from the operator's config.
#[derive(Debug, Clone, Copy)]
pub struct Supervision {
    /// How often every actor's heartbeat is checked.
    pub heartbeat_check: Duration,
    /// How far past its promised progress an actor may be before it counts as stuck
    /// (it is then stopped and started again from the store).
    pub stuck_margin: Duration,
}

pub(super) struct Running {
    /// The integration as the actor runs it: one copy, shared with the actor.
    pub(super) config: Arc<Integration>,
    pub(super) addr: Addr<IntegrationActor>,
    generation: u64,
    started: Instant,
    pub(super) heartbeat: Heartbeat,
    /// When the status publisher last had the actor asked (`ObserveAll`).
    observed: Instant,
}

/// One per process: starts, restarts and stops the integration actors and their replays so that they match the store.
pub struct Supervisor {
    /// The running replay of each integration.
    pub(super) replays: Replays,
    pub(super) store: Store,
    pub(super) audit: Addr<AuditCollector>,
    pub(super) jobs: Addr<JobCollector>,
    /// Shared by every integration actor (one copy, not one each).
    pub(super) settings: Arc<DeliverySettings>,
    pub(super) supervision: Supervision,
    /// The delivery thread each integration's actor runs on.
    threads: Placement,
    pub(super) running: HashMap<Uuid, Running>,
    /// Unexpected stops per integration, for the restart back-off.
    crashes: HashMap<Uuid, u32>,
    /// Integrations whose actor ended unexpectedly and waits out its back-off:
    /// the config it ran, and the number of the restart due. A re-read or a
    /// change that leaves the delivery config as it was does not start it early
    /// (a crashing actor would otherwise restart at every re-read); one that
    /// changes the delivery config does, as the change may be the cure.
    restarting: HashMap<Uuid, (Integration, u64)>,
    /// Replays stopped as stuck or vanished since they last ended normally, per
    /// integration: their resumption backs off like an actor's restart.
    pub(super) replay_crashes: HashMap<Uuid, u32>,
    /// What the Supervisor did to each integration's actor since the service started.
    restarts: HashMap<Uuid, Restarts>,
    /// Set by `Shutdown`: nothing is started or restarted any more.
    pub(super) shutting_down: bool,
    /// Integrations whose stored state could not be read (a store fault): read again
    /// every second until their actors match it.
    pub(super) unsettled: HashMap<Uuid, AccountId>,
    /// A full reconcile that could not read the store: tried again every second.
    pub(super) reconcile_pending: bool,
    /// A full reconcile under way: the integrations it read and has yet to apply.
    reconciling: Option<Reconciling>,
    generation: u64,
    /// Test builds only: integrations whose replays' posts outlive their timeout.
    #[cfg(feature = "test-hooks")]
    pub(super) stalled_replays: std::collections::HashSet<Uuid>,
}

impl Supervisor {
    /// A Supervisor over `store` and the two collectors, starting each integration's
    /// actor on its delivery thread of `threads`; integrations start on the first `Reconcile`.
    pub fn new(
        store: Store,
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
        settings: DeliverySettings,
        supervision: Supervision,
        threads: Placement,
    ) -> Self {
        Supervisor {
            replays: Replays::default(),
            store,
            audit,
            jobs,
            settings: Arc::new(settings),
            supervision,
            threads,
            running: HashMap::new(),
            crashes: HashMap::new(),
            restarting: HashMap::new(),
            replay_crashes: HashMap::new(),
            restarts: HashMap::new(),
            shutting_down: false,
            unsettled: HashMap::new(),
            reconcile_pending: false,
            reconciling: None,
            generation: 0,
            #[cfg(feature = "test-hooks")]
            stalled_replays: Default::default(),
        }
    }

    fn start(&mut self, it: Integration, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let Some((thread, gate)) = self.threads.thread_for(&it.id) else {
            // Every delivery thread has ended: an actor started now would never be
            // built, and its vanishing be taken for a panic and restarted for ever.
            log::error!(
                "integration {} not started: no delivery thread is running",
                it.id
            );
            return;
        };
        self.generation += 1;
        let (heartbeat, pulse) = heartbeat::pair(self.settings.longest_step());
        // One copy of the integration and of the settings, shared by the actor and
        // the Supervisor: at 100,000 integrations every copy is tens of MiB.
        let it = Arc::new(it);
        let (config, store, audit, jobs, settings) = (
            it.clone(),
            self.store.clone(),
            self.audit.clone(),
            self.jobs.clone(),
            self.settings.clone(),
        );
        let supervised = Supervised {
            generation: self.generation,
            supervisor: ctx.address().recipient(),
            pulse,
            gate: gate.clone(),
        };
        // Built on its own thread: its state and HEC client stay there.
        let addr = IntegrationActor::start_in_arbiter(thread, |_| {
            IntegrationActor::new(config, store, audit, jobs, settings, supervised)
        });
        self.resume_replay(&it, ctx);
        self.running.insert(
            it.id,
            Running {
                config: it,
                addr,
                generation: self.generation,
                started: Instant::now(),
                heartbeat,
                observed: Instant::now(),
            },
        );
    }

    fn stop(&mut self, id: &Uuid) {
        // A running replay stops with its integration; its record stays running, so
        // it resumes when the integration starts again.
        self.replays.stop(id);
        if let Some(r) = self.running.remove(id) {
            r.addr.do_send(Stop);
            log::info!("integration {id} stopped");
        }
    }

    /// Makes the actor of `it` (as stored now, `active` or not) match it: started,
    /// restarted, told of a version that changes nothing it does, or stopped.
    /// On PostgreSQL an integration runs only on the node holding its shard
    /// (`Store::holds`); elsewhere it counts as not active here.
    pub(super) fn apply(&mut self, it: Integration, active: bool, ctx: &mut Context<Self>) {
        if !active || !self.store.holds(&it.id) {
            self.stop(&it.id);
            return;
        }
        if let Some((crashed, _)) = self.restarting.get_mut(&it.id) {
            if !crashed.delivery_differs(&it) {
                // Started when its back-off ends, as stored then.
                *crashed = it;
                return;
            }
            self.restarting.remove(&it.id);
        }
        match self.running.get_mut(&it.id) {
            Some(r) if !r.config.delivery_differs(&it) => {
                if r.config.version != it.version {
                    r.addr.do_send(Adopt {
                        integration: it.clone(),
                    });
                }
                r.config = Arc::new(it);
            }
            _ => {
                self.stop(&it.id);
                self.start(it, ctx);
            }
        }
    }

    /// An integration a reconcile has read but not applied yet is applied now, from
    /// a fresh read: a Sync now or a replay asked for it in the seconds a large
    /// reconcile takes, and would otherwise be refused as not running.
    pub(super) fn bring_forward(&mut self, id: &Uuid, ctx: &mut Context<Self>) {
        let Some(r) = &self.reconciling else {
            return;
        };
        if self.running.contains_key(id) || r.refreshed.contains(id) {
            return;
        }
        let queued = r.rest.as_slice().iter().find(|it| it.id == *id);
        if let Some(account) = queued.map(|it| it.account.clone()) {
            self.refresh(&account, *id, ctx);
        }
    }

    /// Reads integration `id` from the store and makes its actor match: the one way
    /// a change reaches the actors. Every write is followed by a `Refresh`, handled in
    /// arrival order by this one actor, so the last one handled has read the last
    /// write — whatever order concurrent requests' messages came in, and whether the
    /// integration or its account's feature switch changed. Deleted: stopped for good.
    fn refresh(&mut self, account: &AccountId, id: Uuid, ctx: &mut Context<Self>) {
        if let Some(r) = &mut self.reconciling {
            // Read after the reconcile's read: the reconcile must not apply its
            // older copy over this one.
            r.refreshed.insert(id);
        }
        let stored = self.store.integration(account, &id).and_then(|found| {
            found
                .map(|it| self.store.is_active(&it).map(|active| (it, active)))
                .transpose()
        });
        match stored {
            Ok(Some((it, active))) => {
                self.unsettled.remove(&id);
                self.apply(it, active, ctx);
            }
            Ok(None) => {
                self.unsettled.remove(&id);
                self.forget(&id);
                self.crashes.remove(&id);
                self.restarting.remove(&id);
                self.restarts.remove(&id);
            }
            Err(e) => {
                if self.unsettled.insert(id, account.clone()).is_none() {
                    log::warn!("integration {id}: cannot read it to apply a change ({e}); trying again every second");
                }
            }
        }
    }

    /// Reads every stored integration and makes the actors match: start-up, reload
    /// and a hand-over of shards. The integrations are applied [`RECONCILE_CHUNK`] at
    /// a time, the Supervisor handling its messages in between: at 100,000
    /// integrations one go held the System thread (and so the HTTP server's start)
    /// for seconds. A change handled in between reads the store after this read
    /// did, so the reconcile leaves that integration to it.
    pub(super) fn reconcile(&mut self, ctx: &mut Context<Self>) {
        let all = match self.store.all_integrations() {
            Ok(all) => all,
            Err(e) => {
                if !self.reconcile_pending {
                    log::error!(
                        "cannot read the integrations to start them ({e}); trying again every second"
                    );
                }
                self.reconcile_pending = true;
                return;
            }
        };
        self.reconcile_pending = false;
        let stored: std::collections::HashSet<Uuid> = all.iter().map(|it| it.id).collect();
        let gone: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !stored.contains(id))
            .copied()
            .collect();
        for id in gone {
            self.forget(&id);
        }
        self.generation += 1;
        // A newer read replaces one still being applied: its chain of chunks ends.
        self.reconciling = Some(Reconciling {
            run: self.generation,
            stored: all.len(),
            rest: all.into_iter(),
            refreshed: Default::default(),
        });
        self.reconcile_chunk(self.generation, ctx);
    }

    /// Applies the next [`RECONCILE_CHUNK`] integrations of reconcile `run`, and
    /// schedules the next chunk after the messages waiting meanwhile. On PostgreSQL
    /// all of them at once, as before chunks: there an integration also changes
    /// through shard hand-overs and control re-reads, which do not mark what they
    /// applied, so a later chunk could apply its older read over theirs.
    fn reconcile_chunk(&mut self, run: u64, ctx: &mut Context<Self>) {
        let size = if self.store.postgres().is_some() {
            usize::MAX
        } else {
            RECONCILE_CHUNK
        };
        let Some(r) = self.reconciling.as_mut().filter(|r| r.run == run) else {
            return;
        };
        let chunk: Vec<Integration> = r
            .rest
            .by_ref()
            .filter(|it| !r.refreshed.contains(&it.id))
            .take(size)
            .collect();
        let done = r.rest.len() == 0;
        for it in chunk {
            match self.store.is_active(&it) {
                Ok(active) => self.apply(it, active, ctx),
                Err(_) => {
                    self.unsettled.insert(it.id, it.account.clone());
                }
            }
        }
        if !done && !self.shutting_down {
            // Through the timer, not straight on: the System thread serves whatever
            // else waits (the HTTP server, the Supervisor's mailbox) in between.
            ctx.run_later(Duration::ZERO, move |act, ctx| {
                act.reconcile_chunk(run, ctx)
            });
            return;
        }
        if let Some(r) = self.reconciling.take() {
            log::info!(
                "{} integrations stored, {} running",
                r.stored,
                self.running.len()
            );
        }
    }
}

/// Integrations a reconcile applies in one turn of the Supervisor: about 0.1 s of
/// the System thread, at the 9 s that 100,000 took in one go (BENCHMARKS.md).
pub const RECONCILE_CHUNK: usize = 1_000;

/// A full reconcile being applied chunk by chunk.
struct Reconciling {
    /// Which reconcile: a newer one replaces it.
    run: u64,
    /// How many integrations it read (for its log line).
    stored: usize,
    /// What it read and has not applied yet.
    rest: std::vec::IntoIter<Integration>,
    /// Integrations refreshed since its read: their newer read stands.
    refreshed: std::collections::HashSet<Uuid>,
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.supervision.heartbeat_check, |act, ctx| {
            if !act.shutting_down {
                act.check_heartbeats(ctx);
                act.check_replays(ctx);
            }
        });
        ctx.run_interval(
            self.settings.timing.supervisor_retry_secs.get(),
            |act, ctx| {
                if act.shutting_down {
                    return;
                }
                if act.reconcile_pending {
                    act.reconcile(ctx);
                }
                let unsettled: Vec<(Uuid, AccountId)> = act
                    .unsettled
                    .iter()
                    .map(|(id, account)| (*id, account.clone()))
                    .collect();
                for (id, account) in unsettled {
                    act.refresh(&account, id, ctx);
                }
            },
        );
    }
}

/// Test builds only: a fault forced on an integration's actor.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// It panics, as a bug would: proves the restart.
    Panic,
    /// Its posts outlive their client's timeout: proves the heartbeat finds it stuck.
    Stall,
    /// The same for the integration's replays started from now on (resumed ones
    /// too): proves a stuck replay is found, and resumed with back-off.
    StallReplays,
}

/// Test builds only: forces `fault` on the actor of integration `id`; answers
/// whether one runs.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ForceFault {
    /// The integration whose actor gets the fault.
    pub id: Uuid,
    /// Which fault.
    pub fault: Fault,
}

#[cfg(feature = "test-hooks")]
impl Handler<ForceFault> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: ForceFault, _: &mut Context<Self>) -> bool {
        let Some(r) = self.running.get(&msg.id) else {
            return false;
        };
        match msg.fault {
            Fault::Panic => r.addr.do_send(super::integration::Panic),
            Fault::Stall => r.addr.do_send(super::integration::Stall),
            Fault::StallReplays => {
                self.stalled_replays.insert(msg.id);
            }
        }
        true
    }
}

/// Test builds only: the name of the thread integration `id`'s actor ran its
/// latest sync on (`None`: no actor runs, or it has not synced yet).
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct SyncThread {
    /// The integration whose actor is asked.
    pub id: Uuid,
}

#[cfg(feature = "test-hooks")]
impl Handler<SyncThread> for Supervisor {
    type Result = ResponseFuture<Option<String>>;
    fn handle(&mut self, msg: SyncThread, _: &mut Context<Self>) -> Self::Result {
        let addr = self.running.get(&msg.id).map(|r| r.addr.clone());
        Box::pin(async move {
            match addr {
                Some(a) => a.send(super::integration::SyncThread).await.ok().flatten(),
                None => None,
            }
        })
    }
}

/// Test builds only: the Supervisor handles no message until `0` resolves (or its
/// sender is dropped). Messages sent meanwhile queue up and are then handled in
/// the order sent: a test makes an interleaving of them happen for sure.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold(pub tokio::sync::oneshot::Receiver<()>);

#[cfg(feature = "test-hooks")]
impl Handler<Hold> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Hold, ctx: &mut Context<Self>) {
        ctx.wait(
            async move {
                let _ = msg.0.await;
            }
            .into_actor(self),
        );
    }
}

impl Handler<Refresh> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Refresh, ctx: &mut Context<Self>) {
        self.refresh(&msg.account, msg.id, ctx);
    }
}

impl Handler<Reread> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Reread, ctx: &mut Context<Self>) {
        if self.shutting_down {
            return;
        }
        let running: HashMap<Uuid, (AccountId, u64)> = self
            .running
            .iter()
            .map(|(id, r)| (*id, (r.config.account.clone(), r.config.version)))
            .collect();
        let store = &self.store;
        let stale = differing(&running, &self.restarting, &msg.stamps, |id| {
            store.holds(id)
        });
        if stale.is_empty() {
            return;
        }
        log::info!(
            "control re-read: {} of {} integrations differ from what runs here; reading them again",
            stale.len(),
            msg.stamps.len()
        );
        for (account, id) in stale {
            self.refresh(&account, id, ctx);
        }
    }
}

/// The integrations a re-read found differing from the actors running here
/// (`running`: id → account and version): stored at another version, to be started (active,
/// shard held) or stopped (inactive, shard not held), or no longer stored. Those
/// waiting out a restart back-off (`restarting`) are left to it.
fn differing<T>(
    running: &HashMap<Uuid, (AccountId, u64)>,
    restarting: &HashMap<Uuid, T>,
    stamps: &[crate::store::postgres::IntegrationStamp],
    holds: impl Fn(&Uuid) -> bool,
) -> Vec<(AccountId, Uuid)> {
    let mut stale = Vec::new();
    let mut stored = std::collections::HashSet::with_capacity(stamps.len());
    for s in stamps {
        stored.insert(s.id);
        if restarting.contains_key(&s.id) {
            continue;
        }
        let wanted = s.active && holds(&s.id);
        let differs = match running.get(&s.id) {
            Some((_, version)) => !wanted || *version != s.version,
            None => wanted,
        };
        if differs {
            stale.push((s.account.clone(), s.id));
        }
    }
    // Running but no longer stored: deleted (the Refresh finds it gone).
    stale.extend(
        running
            .iter()
            .filter(|(id, _)| !stored.contains(id))
            .map(|(id, (account, _))| (account.clone(), *id)),
    );
    stale
}

impl Handler<Reconcile> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Reconcile, ctx: &mut Context<Self>) {
        self.reconcile(ctx);
    }
}

impl Handler<SyncNow> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: SyncNow, ctx: &mut Context<Self>) -> bool {
        self.bring_forward(&msg.id, ctx);
        match self.running.get(&msg.id) {
            Some(r) => {
                r.addr.do_send(msg);
                true
            }
            None => false,
        }
    }
}

impl Handler<ObserveRestarts> for Supervisor {
    type Result = MessageResult<ObserveRestarts>;
    fn handle(&mut self, msg: ObserveRestarts, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.restarts.get(&msg.id).cloned().unwrap_or_default())
    }
}

impl Handler<Observe> for Supervisor {
    type Result = ResponseFuture<Option<Observation>>;
    fn handle(&mut self, msg: Observe, _: &mut Context<Self>) -> Self::Result {
        let addr = self.running.get(&msg.id).map(|r| r.addr.clone());
        Box::pin(async move {
            match addr {
                // An actor that just died has nothing to say: the status shows it
                // pending until the restart, which the liveness check makes.
                Some(a) => a.send(msg).await.ok().flatten(),
                None => None,
            }
        })
    }
}

impl Handler<ObserveAll> for Supervisor {
    type Result = ResponseFuture<Vec<(Uuid, Option<Box<Published>>)>>;
    fn handle(&mut self, msg: ObserveAll, _: &mut Context<Self>) -> Self::Result {
        // Only the actors that marked a change are asked: at 100,000 integrations,
        // asking every one each second kept a core busy on an idle node. A restart
        // is a new actor, marked from its start, so the restarts count is asked too.
        // One gone without a word (a panic) marks nothing: asked, it answers no
        // observation, as the status says until its restart. And each is asked
        // again every `refresh` whatever its mark says: what is republished then
        // was observed then, not kept from its last change.
        let mut unchanged = Vec::new();
        let mut asks = Vec::new();
        let now = Instant::now();
        for (id, r) in &mut self.running {
            let changed = r.heartbeat.take_changed();
            let due = now.saturating_duration_since(r.observed) >= msg.refresh;
            if changed || due || msg.all || !r.heartbeat.alive() {
                r.observed = now;
                let restarts = self.restarts.get(id).cloned().unwrap_or_default();
                asks.push((*id, r.addr.clone(), restarts));
            } else {
                unchanged.push((*id, None));
            }
        }
        Box::pin(async move {
            let mut seen = futures_util::future::join_all(asks.into_iter().map(
                |(id, addr, restarts)| async move {
                    let observation = addr.send(Observe { id }).await.ok().flatten();
                    let published = Published {
                        observation,
                        restarts,
                    };
                    (id, Some(Box::new(published)))
                },
            ))
            .await;
            seen.extend(unchanged);
            seen
        })
    }
}

impl Supervisor {
    /// Stops an integration for good (deleted): its replay record goes too, after the
    /// replay stopped, so that nothing records it again.
    fn forget(&mut self, id: &Uuid) {
        self.stop(id);
        if let Err(e) = self.store.delete_replay(id) {
            log::warn!("integration {id}: cannot delete its replay record: {e}");
        }
    }
}

impl Handler<Stopped> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Stopped, ctx: &mut Context<Self>) {
        self.ended(msg.id, msg.generation, RestartReason::Ended, ctx);
    }
}

impl Supervisor {
    /// Liveness by progress: an actor that vanished (a panic never runs `stopped()`)
    /// is started again; one past its promised progress by more than the margin —
    /// stuck in a post its timeout did not end — is stopped and started again from
    /// the store (its checkpoint moved only over what Splunk took: nothing is lost).
    fn check_heartbeats(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let margin = self.supervision.stuck_margin;
        let failed: Vec<(Uuid, u64, RestartReason)> = self
            .running
            .iter()
            .filter_map(|(id, r)| {
                let reason = if r.heartbeat.vanished() {
                    RestartReason::Panic
                } else if r.heartbeat.overdue(now).is_some_and(|late| late > margin) {
                    RestartReason::Stuck
                } else {
                    return None;
                };
                Some((*id, r.generation, reason))
            })
            .collect();
        for (id, generation, reason) in failed {
            if let (RestartReason::Stuck, Some(r)) = (reason, self.running.get(&id)) {
                log::warn!(
                    "integration {id} (account {}): no progress for {:?} past the longest a post may take; stopping its actor",
                    r.config.account,
                    margin
                );
                self.settings
                    .metrics
                    .actor_kills
                    .get_or_create(&ActorLabels::of(&r.config, "integration", "stuck"))
                    .inc();
                // Handled even while the stuck post is pending: stopping drops it.
                r.addr.do_send(Stop);
            }
            self.ended(id, generation, reason, ctx);
        }
    }

    /// An actor ended: if it was not stopped on purpose, restart it from sled, with back-off.
    fn ended(&mut self, id: Uuid, generation: u64, reason: RestartReason, ctx: &mut Context<Self>) {
        let msg = Stopped { id, generation };
        let unexpected = self
            .running
            .get(&msg.id)
            .is_some_and(|r| r.generation == msg.generation);
        if !unexpected || self.shutting_down {
            return;
        }
        let Some(r) = self.running.remove(&msg.id) else {
            return;
        };
        let crashes = self.crashes.entry(msg.id).or_insert(0);
        // An actor that ran a good while before it ended starts its back-off afresh.
        let timing = &self.settings.timing;
        if r.started.elapsed() > timing.restart_forgiven_after_secs.get() {
            *crashes = 0;
        }
        *crashes += 1;
        let delay = timing.restart_delay(*crashes);
        self.settings
            .metrics
            .actor_restarts
            .get_or_create(&ActorLabels::of(&r.config, "integration", reason.as_str()))
            .inc();
        let record = self.restarts.entry(id).or_default();
        record.count += 1;
        record.last_reason = Some(reason);
        record.last_at = Some(chrono::Utc::now());
        log::warn!(
            "integration {} ended unexpectedly ({}); restarting in {delay:?}",
            msg.id,
            reason.as_str()
        );
        let id = r.config.id;
        let account = r.config.account.clone();
        self.generation += 1;
        let due = self.generation;
        self.restarting
            .insert(id, (Arc::unwrap_or_clone(r.config), due));
        ctx.run_later(delay, move |act, ctx| {
            // Started again meanwhile by a change of its delivery config (or ended
            // and waiting for a later restart): nothing to do. Otherwise as stored
            // now (it may have changed, been disabled or deleted meanwhile).
            if act.restarting.get(&id).is_none_or(|(_, d)| *d != due) {
                return;
            }
            act.restarting.remove(&id);
            if !act.running.contains_key(&id) {
                act.refresh(&account, id, ctx);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::IntegrationStamp;

    fn stamp(id: Uuid, version: u64, active: bool) -> IntegrationStamp {
        IntegrationStamp {
            id,
            account: AccountId::parse("acme").unwrap(),
            version,
            active,
        }
    }

    #[test]
    fn a_re_read_refreshes_only_the_integrations_that_differ_from_what_runs() {
        let ids: Vec<Uuid> = (0..9).map(|_| Uuid::new_v4()).collect();
        let acme = AccountId::parse("acme").unwrap();
        let run = |v: u64| (acme.clone(), v);
        // 0: unchanged; 1: changed; 2: disabled; 3: new and active; 4: new and
        // inactive; 5: deleted; 6: shard not held here; 7: waiting out its
        // restart back-off, stored at a new version meanwhile; 8: unchanged.
        let running: HashMap<Uuid, (AccountId, u64)> = [
            (ids[0], run(3)),
            (ids[1], run(3)),
            (ids[2], run(3)),
            (ids[5], run(1)),
            (ids[6], run(2)),
            (ids[8], run(1)),
        ]
        .into_iter()
        .collect();
        let restarting: HashMap<Uuid, ()> = [(ids[7], ())].into_iter().collect();
        let stamps = vec![
            stamp(ids[0], 3, true),
            stamp(ids[1], 4, true),
            stamp(ids[2], 4, false),
            stamp(ids[3], 1, true),
            stamp(ids[4], 1, false),
            stamp(ids[6], 2, true),
            stamp(ids[7], 5, true),
            stamp(ids[8], 1, true),
        ];
        let not_held = ids[6];
        let mut stale: Vec<Uuid> = differing(&running, &restarting, &stamps, |id| *id != not_held)
            .into_iter()
            .map(|(_, id)| id)
            .collect();
        stale.sort();
        let mut want = vec![ids[1], ids[2], ids[3], ids[5], ids[6]];
        want.sort();
        assert_eq!(stale, want);
    }
}
