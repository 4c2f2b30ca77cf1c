//! The Supervisor's shutdown: every actor (integration delivery and replay) is asked
//! to finish the posts it has in flight and to start no other; what has not finished
//! when the grace runs out is abandoned. Each outcome is logged and reported, so
//! that a batch sent again after the restart (at-least-once) is explained.

use super::heartbeat::Heartbeat;
use super::messages::{Drain, Rebalance, Shutdown, Stop, WindDown};
use super::supervisor::{Running, Supervisor};
use crate::metrics::{ActorLabels, Metrics};
use crate::model::Integration;
use actix::prelude::*;
use futures_util::future::join_all;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Which kind of actor wound down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// An integration's live delivery.
    Integration,
    /// An integration's replay.
    Replay,
}

impl ActorKind {
    fn as_str(self) -> &'static str {
        match self {
            ActorKind::Integration => "integration",
            ActorKind::Replay => "replay",
        }
    }
}

/// How one actor ended at shutdown.
#[derive(Debug, Clone, Serialize)]
pub struct ActorShutdown {
    /// The integration it delivered (or replayed) for.
    pub integration: Uuid,
    /// The integration's account.
    pub account: String,
    /// Live delivery or replay.
    pub actor: ActorKind,
    /// Idle, finished its posts in flight, or abandoned one.
    pub outcome: WindDown,
}

/// What the Supervisor's shutdown did, actor by actor.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// Every actor that was running, and how it ended.
    pub actors: Vec<ActorShutdown>,
    /// The grace the posts in flight had.
    pub grace: Duration,
    /// How long winding down took.
    pub took: Duration,
}

impl ShutdownReport {
    /// How many actors ended with `outcome`.
    pub fn count(&self, outcome: WindDown) -> usize {
        self.actors.iter().filter(|a| a.outcome == outcome).count()
    }

    /// The outcome of `actor` of integration `id`, if it was running.
    pub fn outcome(&self, id: &Uuid, actor: ActorKind) -> Option<WindDown> {
        self.actors
            .iter()
            .find(|a| a.integration == *id && a.actor == actor)
            .map(|a| a.outcome)
    }
}

/// One actor to wind down: its handles, and whose it is.
struct Winding {
    integration: std::sync::Arc<Integration>,
    actor: ActorKind,
    drain: Recipient<Drain>,
    stop: Recipient<Stop>,
    heartbeat: Heartbeat,
}

impl Winding {
    /// A running integration actor, taken out of the Supervisor's `running`.
    fn integration(r: Running) -> Winding {
        Winding {
            integration: r.config,
            actor: ActorKind::Integration,
            drain: r.addr.clone().recipient(),
            stop: r.addr.recipient(),
            heartbeat: r.heartbeat,
        }
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ResponseActFuture<Self, ShutdownReport>;
    fn handle(&mut self, msg: Shutdown, _: &mut Context<Self>) -> Self::Result {
        self.shutting_down = true;
        let started = Instant::now();
        let mut actors: Vec<Winding> = Vec::new();
        for (_, r) in self.running.drain() {
            actors.push(Winding::integration(r));
        }
        for (id, h) in self.replays.take_all() {
            // A replay without its integration has nothing to answer for.
            let Some(it) = actors.iter().find(|a| a.integration.id == id) else {
                h.addr.do_send(Stop);
                continue;
            };
            let integration = it.integration.clone();
            actors.push(Winding {
                integration,
                actor: ActorKind::Replay,
                drain: h.addr.clone().recipient(),
                stop: h.addr.recipient(),
                heartbeat: h.heartbeat,
            });
        }
        let metrics = self.settings.metrics.clone();
        let grace = msg.grace;
        let all = actors
            .into_iter()
            .map(move |a| wind_down(a, grace, metrics.clone(), "shutdown"));
        Box::pin(join_all(all).into_actor(self).map(move |actors, _, ctx| {
            let report = ShutdownReport {
                actors,
                grace,
                took: started.elapsed(),
            };
            log::info!(
                "shutdown: {} actors stopped in {:?}: {} idle, {} finished their posts in flight, {} abandoned a post after the grace of {grace:?}",
                report.actors.len(),
                report.took,
                report.count(WindDown::Idle),
                report.count(WindDown::Finished),
                report.count(WindDown::Abandoned),
            );
            // Its timers (the heartbeat check, the retries of unreadable integrations) go with it.
            ctx.stop();
            report
        }))
    }
}

impl Handler<Rebalance> for Supervisor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, msg: Rebalance, _: &mut Context<Self>) -> Self::Result {
        // A running replay of an integration not held here stops (its record
        // stays running): it resumes on the shard's next holder, from its record.
        // Also one whose integration's actor is gone already.
        // A reclaimed shard's actors and replays restart from what is stored.
        let pg = self.store.postgres().cloned();
        let reclaimed = |id: &Uuid| {
            pg.as_ref()
                .is_some_and(|pg| msg.reclaimed.contains(&pg.shard_of(id)))
        };
        for id in self.replays.ids() {
            if !self.store.holds(&id) || reclaimed(&id) {
                self.replays.stop(&id);
            }
        }
        // Out of `running` at once: a change applied meanwhile finds them not held
        // and not running, and starts nothing.
        let unheld: Vec<Uuid> = self
            .running
            .keys()
            .filter(|id| !self.store.holds(id) || reclaimed(id))
            .copied()
            .collect();
        let mut actors = Vec::new();
        for id in &unheld {
            if let Some(r) = self.running.remove(id) {
                // Handed over: this node still holds the lease, so its posts in
                // flight get their grace. Claimed elsewhere already: the other
                // node posts the same events now, so nothing more is sent here.
                let grace = if self.store.hands_over(id) || reclaimed(id) {
                    msg.grace
                } else {
                    Duration::ZERO
                };
                actors.push((Winding::integration(r), grace));
            }
        }
        let metrics = self.settings.metrics.clone();
        let all = actors
            .into_iter()
            .map(move |(a, grace)| wind_down(a, grace, metrics.clone(), "hand-over"));
        let mut gained = msg.gained;
        gained.extend(msg.reclaimed);
        let store = self.store.clone();
        Box::pin(join_all(all).into_actor(self).map(move |stopped, act, ctx| {
            if !stopped.is_empty() {
                log::info!(
                    "hand-over: {} integrations stopped here ({} finished their posts in flight, {} abandoned one)",
                    stopped.len(),
                    stopped.iter().filter(|a| a.outcome == WindDown::Finished).count(),
                    stopped.iter().filter(|a| a.outcome == WindDown::Abandoned).count(),
                );
            }
            // The old actors are gone: what starts now reads the stored state,
            // and may post and commit again under the current leases.
            store.restarted(&gained);
            if !act.shutting_down && !gained.is_empty() {
                act.start_gained(&gained, ctx);
            }
        }))
    }
}

impl Supervisor {
    /// Starts the integrations of the shards `gained` (those running already are
    /// left as they are): what a hand-over changed, not a reconcile of everything.
    fn start_gained(&mut self, gained: &[i32], ctx: &mut Context<Self>) {
        let Some(pg) = self.store.postgres().cloned() else {
            return;
        };
        let all = match self.store.all_integrations() {
            Ok(all) => all,
            Err(e) => {
                // The full reconcile, retried every second, starts them.
                log::error!("hand-over: cannot read the integrations of the shards gained ({e}); trying again every second");
                self.reconcile_pending = true;
                return;
            }
        };
        for it in all {
            if !gained.contains(&pg.shard_of(&it.id)) {
                continue;
            }
            match self.store.is_active(&it) {
                Ok(active) => self.apply(it, active, ctx),
                Err(_) => {
                    self.unsettled.insert(it.id, it.account.clone());
                }
            }
        }
    }
}

/// Asks one actor to wind down and waits for it to be gone: within `grace` its
/// posts in flight finish, else it is stopped and they are abandoned. `why`
/// ("shutdown", "hand-over") heads its log lines and labels a kill.
async fn wind_down(
    a: Winding,
    grace: Duration,
    metrics: Arc<Metrics>,
    why: &'static str,
) -> ActorShutdown {
    let (id, account) = (a.integration.id, a.integration.account.to_string());
    let kind = a.actor.as_str();
    let who = match a.actor {
        ActorKind::Integration => format!("integration {id} (account {account})"),
        ActorKind::Replay => format!("the replay of integration {id} (account {account})"),
    };
    a.heartbeat.drain();
    let outcome = match actix_rt::time::timeout(grace, a.drain.send(Drain)).await {
        Ok(Ok(outcome)) => outcome,
        // It ended before it could answer (a panic): whatever it had in flight went with it.
        Ok(Err(_)) => WindDown::Abandoned,
        Err(_) => {
            // Dropping its running sync drops the post: the checkpoint has not moved.
            a.stop.do_send(Stop);
            metrics
                .actor_kills
                .get_or_create(&ActorLabels::of(&a.integration, kind, why))
                .inc();
            WindDown::Abandoned
        }
    };
    match outcome {
        WindDown::Idle => log::debug!("{why}: {who} was idle"),
        WindDown::Finished => log::info!(
            "{why}: {who} finished its post in flight; the checkpoint is where Splunk's answer left it"
        ),
        WindDown::Abandoned => log::warn!(
            "{why}: {who} abandoned its post in flight after the grace of {grace:?}; the checkpoint did not move, so those events are sent again (after the restart, or by the shard's next holder: at-least-once)"
        ),
    }
    // Gone before the store is flushed and the shutdown returns. One that does not
    // stop even when told (blocked outside any future) is left behind, and said so.
    // At least a second: an actor stopped at once (no grace) still needs a turn
    // of its thread to end.
    let told = grace.max(Duration::from_secs(1));
    if actix_rt::time::timeout(told, a.heartbeat.gone())
        .await
        .is_err()
    {
        log::error!("{why}: {who} did not stop within {told:?} of being told");
    }
    ActorShutdown {
        integration: id,
        account,
        actor: a.actor,
        outcome,
    }
}
