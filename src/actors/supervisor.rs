//! Supervisor: one per process. Knows every integration's config and the address
//! of each running IntegrationActor; starts, restarts or stops only the actors
//! whose config changed, and restarts one that ends unexpectedly.

use super::audit_collector::AuditCollector;
use super::integration::{DeliverySettings, IntegrationActor};
use super::job_collector::JobCollector;
use super::messages::*;
use super::replay::{
    record, ReplayActor, ReplayProgress, ReplayState, SharedProgress, StoredReplay,
};
use crate::model::{AccountId, Integration};
use crate::store::Store;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

struct Running {
    config: Integration,
    addr: Addr<IntegrationActor>,
    generation: u64,
    started: std::time::Instant,
}

pub struct Supervisor {
    /// The latest replay of each integration, running or ended.
    replays: HashMap<Uuid, (Addr<ReplayActor>, SharedProgress)>,
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    settings: DeliverySettings,
    running: HashMap<Uuid, Running>,
    /// Unexpected stops per integration, for the restart back-off.
    crashes: HashMap<Uuid, u32>,
    /// Integrations whose stored state could not be read (a store fault): read again
    /// every second until their actors match it.
    unsettled: HashMap<Uuid, AccountId>,
    /// A full reconcile that could not read the store: tried again every second.
    reconcile_pending: bool,
    generation: u64,
}

impl Supervisor {
    pub fn new(
        store: Store,
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
        settings: DeliverySettings,
    ) -> Self {
        Supervisor {
            replays: HashMap::new(),
            store,
            audit,
            jobs,
            settings,
            running: HashMap::new(),
            crashes: HashMap::new(),
            unsettled: HashMap::new(),
            reconcile_pending: false,
            generation: 0,
        }
    }

    fn start(&mut self, it: Integration, ctx: &mut Context<Self>) {
        self.generation += 1;
        let addr = IntegrationActor::new(
            it.clone(),
            self.generation,
            self.store.clone(),
            self.audit.clone(),
            self.jobs.clone(),
            self.settings.clone(),
            ctx.address().recipient(),
        )
        .start();
        self.resume_replay(&it);
        self.running.insert(
            it.id,
            Running {
                config: it,
                addr,
                generation: self.generation,
                started: std::time::Instant::now(),
            },
        );
    }

    fn stop(&mut self, id: &Uuid) {
        // A running replay stops with its integration; its record stays running, so
        // it resumes when the integration starts again.
        if let Some((replay, _)) = self.replays.remove(id) {
            replay.do_send(Stop);
        }
        if let Some(r) = self.running.remove(id) {
            r.addr.do_send(Stop);
            log::info!("integration {id} stopped");
        }
    }

    /// Makes the actor of `it` (as stored now, `active` or not) match it: started,
    /// restarted, told of a version that changes nothing it does, or stopped.
    fn apply(&mut self, it: Integration, active: bool, ctx: &mut Context<Self>) {
        if !active {
            self.stop(&it.id);
            return;
        }
        match self.running.get_mut(&it.id) {
            Some(r) if !r.config.delivery_differs(&it) => {
                if r.config.version != it.version {
                    r.addr.do_send(Adopt {
                        integration: it.clone(),
                    });
                }
                r.config = it;
            }
            _ => {
                self.stop(&it.id);
                self.start(it, ctx);
            }
        }
    }

    /// Reads integration `id` from the store and makes its actor match: the one way
    /// a change reaches the actors. Every write is followed by a `Refresh`, handled in
    /// arrival order by this one actor, so the last one handled has read the last
    /// write — whatever order concurrent requests' messages came in, and whether the
    /// integration or its account's feature switch changed. Deleted: stopped for good.
    fn refresh(&mut self, account: &AccountId, id: Uuid, ctx: &mut Context<Self>) {
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
            }
            Err(e) => {
                if self.unsettled.insert(id, account.clone()).is_none() {
                    log::warn!("integration {id}: cannot read it to apply a change ({e}); trying again every second");
                }
            }
        }
    }

    /// Reads every stored integration and makes the actors match: start-up and reload.
    fn reconcile(&mut self, ctx: &mut Context<Self>) {
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
        for it in all.iter().cloned() {
            match self.store.is_active(&it) {
                Ok(active) => self.apply(it, active, ctx),
                Err(_) => {
                    self.unsettled.insert(it.id, it.account.clone());
                }
            }
        }
        log::info!(
            "{} integrations stored, {} running",
            all.len(),
            self.running.len()
        );
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, ctx| {
            // An actor that panicked never runs `stopped()`: its mailbox closing is the only sign.
            let dead: Vec<(Uuid, u64)> = act
                .running
                .iter()
                .filter(|(_, r)| !r.addr.connected())
                .map(|(id, r)| (*id, r.generation))
                .collect();
            for (id, generation) in dead {
                act.ended(id, generation, ctx);
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
        });
    }
}

/// Test builds only: makes an integration's actor panic, to prove the restart.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "bool")]
pub struct ForcePanic {
    pub id: Uuid,
}

#[cfg(feature = "test-hooks")]
impl Handler<ForcePanic> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: ForcePanic, _: &mut Context<Self>) -> bool {
        match self.running.get(&msg.id) {
            Some(r) => {
                r.addr.do_send(super::integration::Panic);
                true
            }
            None => false,
        }
    }
}

impl Handler<Refresh> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Refresh, ctx: &mut Context<Self>) {
        self.refresh(&msg.account, msg.id, ctx);
    }
}

impl Handler<Reconcile> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Reconcile, ctx: &mut Context<Self>) {
        self.reconcile(ctx);
    }
}

impl Handler<SyncNow> for Supervisor {
    type Result = bool;
    fn handle(&mut self, msg: SyncNow, _: &mut Context<Self>) -> bool {
        match self.running.get(&msg.id) {
            Some(r) => {
                r.addr.do_send(msg);
                true
            }
            None => false,
        }
    }
}

impl Handler<Observe> for Supervisor {
    type Result = ResponseFuture<Option<Observation>>;
    fn handle(&mut self, msg: Observe, _: &mut Context<Self>) -> Self::Result {
        let addr = self.running.get(&msg.id).map(|r| r.addr.clone());
        Box::pin(async move {
            match addr {
                Some(a) => a.send(msg).await.ok().flatten(),
                None => None,
            }
        })
    }
}

impl Supervisor {
    fn start_replay(&mut self, it: Integration, stored: StoredReplay, progress: SharedProgress) {
        let id = it.id;
        let addr = ReplayActor {
            it,
            window: stored.progress.window(),
            sources: stored.progress.sources.clone(),
            from: (stored.source, stored.after),
            store: self.store.clone(),
            audit: self.audit.clone(),
            jobs: self.jobs.clone(),
            settings: self.settings.clone(),
            progress: progress.clone(),
        }
        .start();
        self.replays.insert(id, (addr, progress));
    }

    fn stored_replay(&self, id: &Uuid) -> Option<StoredReplay> {
        match self.store.replay::<StoredReplay>(id) {
            Ok(stored) => stored,
            Err(e) => {
                log::warn!("integration {id}: cannot read its replay: {e}");
                None
            }
        }
    }

    /// Stops an integration for good (deleted): its replay record goes too, after the
    /// replay stopped, so that nothing records it again.
    fn forget(&mut self, id: &Uuid) {
        self.stop(id);
        if let Err(e) = self.store.delete_replay(id) {
            log::warn!("integration {id}: cannot delete its replay record: {e}");
        }
    }

    /// A replay recorded as running when its integration (re)starts: it goes on from
    /// where it was.
    fn resume_replay(&mut self, it: &Integration) {
        if self
            .replays
            .get(&it.id)
            .is_some_and(|(_, p)| snapshot(p).state == ReplayState::Running)
        {
            return;
        }
        match self.stored_replay(&it.id) {
            Some(stored) if stored.progress.state == ReplayState::Running => {
                log::info!(
                    "replay {} for integration {} resumes ({} of {} sent)",
                    stored.progress.id,
                    it.id,
                    stored.progress.sent,
                    stored.progress.total
                );
                let progress = Arc::new(Mutex::new(stored.progress.clone()));
                self.start_replay(it.clone(), stored, progress);
            }
            _ => {}
        }
    }
}

fn snapshot(p: &SharedProgress) -> ReplayProgress {
    p.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Handler<StartReplay> for Supervisor {
    type Result = Result<ReplayProgress, String>;
    fn handle(&mut self, msg: StartReplay, _: &mut Context<Self>) -> Self::Result {
        if let Some((_, p)) = self.replays.get(&msg.id) {
            if snapshot(p).state == ReplayState::Running {
                return Err("a replay of this integration is running: cancel it first, or wait for it to end".into());
            }
        }
        let Some(integration) = self.running.get(&msg.id).map(|r| r.config.clone()) else {
            return Err("the integration is not running: turn on its Enable toggle (and the account's SIEM feature) first".into());
        };
        let progress = Arc::new(Mutex::new(ReplayProgress {
            id: Uuid::new_v4(),
            from: msg.window.from,
            to: msg.window.to,
            sources: msg.sources.clone(),
            state: ReplayState::Running,
            total: 0,
            sent: 0,
            skipped: 0,
            started_at: chrono::Utc::now(),
            finished_at: None,
            error: None,
        }));
        let first = snapshot(&progress);
        let stored = StoredReplay {
            progress: first.clone(),
            source: 0,
            after: 0,
        };
        record(&self.store, &integration.account, &integration.id, &stored);
        log::info!(
            "replay {} started for integration {}",
            first.id,
            integration.id
        );
        self.start_replay(integration, stored, progress);
        Ok(first)
    }
}

impl Handler<CancelReplay> for Supervisor {
    type Result = Option<ReplayProgress>;
    fn handle(&mut self, msg: CancelReplay, _: &mut Context<Self>) -> Self::Result {
        let cancelled = match self.replays.get(&msg.id) {
            Some((addr, p)) => {
                if snapshot(p).state != ReplayState::Running {
                    return None;
                }
                addr.do_send(Stop);
                // Marked at once, so that the replay, which may be between two posts,
                // records no more progress over the cancellation.
                let mut shared = p.lock().unwrap_or_else(|e| e.into_inner());
                shared.state = ReplayState::Cancelled;
                shared.finished_at = Some(chrono::Utc::now());
                shared.clone()
            }
            // Not in memory: a replay of an integration that is not running (disabled)
            // is cancelled in its record, so that it does not resume when enabled.
            None => {
                let mut stored = self.stored_replay(&msg.id)?.progress;
                if stored.state != ReplayState::Running {
                    return None;
                }
                stored.state = ReplayState::Cancelled;
                stored.finished_at = Some(chrono::Utc::now());
                stored
            }
        };
        // Cancelled for good: the record says so, so no restart resumes it.
        record(
            &self.store,
            &msg.account,
            &msg.id,
            &StoredReplay::ended(cancelled.clone()),
        );
        Some(cancelled)
    }
}

impl Handler<CountReplay> for Supervisor {
    type Result =
        ResponseFuture<Result<Vec<(crate::model::Source, u64)>, crate::store::StoreError>>;
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
                    crate::model::Source::Audit => audit.send(count).await,
                    crate::model::Source::Jobs => jobs.send(count).await,
                }
                .map_err(|e| {
                    crate::store::StoreError::Unavailable(format!("the event readers: {e}"))
                })??;
                counts.push((source, n));
            }
            Ok(counts)
        })
    }
}

impl Handler<ObserveReplay> for Supervisor {
    type Result = Option<ReplayProgress>;
    fn handle(&mut self, msg: ObserveReplay, _: &mut Context<Self>) -> Self::Result {
        // The record answers for a replay not in memory: one that ended before a
        // restart, or one waiting for its integration to run again.
        match self.replays.get(&msg.id) {
            Some((_, p)) => Some(snapshot(p)),
            None => self.stored_replay(&msg.id).map(|s| s.progress),
        }
    }
}

impl Handler<Stopped> for Supervisor {
    type Result = ();
    fn handle(&mut self, msg: Stopped, ctx: &mut Context<Self>) {
        self.ended(msg.id, msg.generation, ctx);
    }
}

impl Supervisor {
    /// An actor ended: if it was not stopped on purpose, restart it from sled, with back-off.
    fn ended(&mut self, id: Uuid, generation: u64, ctx: &mut Context<Self>) {
        let msg = Stopped { id, generation };
        let unexpected = self
            .running
            .get(&msg.id)
            .is_some_and(|r| r.generation == msg.generation);
        if !unexpected {
            return;
        }
        let Some(r) = self.running.remove(&msg.id) else {
            return;
        };
        let crashes = self.crashes.entry(msg.id).or_insert(0);
        // An actor that ran a good while before it ended starts its back-off afresh.
        if r.started.elapsed() > Duration::from_secs(600) {
            *crashes = 0;
        }
        *crashes += 1;
        let delay = Duration::from_secs(1u64 << (*crashes - 1).min(6));
        self.settings
            .metrics
            .actor_restarts
            .get_or_create(&crate::metrics::IntegrationLabels::of(&r.config))
            .inc();
        log::warn!(
            "integration {} ended unexpectedly; restarting in {delay:?}",
            msg.id
        );
        let id = r.config.id;
        let account = r.config.account.clone();
        ctx.run_later(delay, move |act, ctx| {
            // Started again meanwhile by a change; otherwise as stored now (it may have
            // changed, been disabled or deleted meanwhile).
            if !act.running.contains_key(&id) {
                act.refresh(&account, id, ctx);
            }
        });
    }
}
