//! PostgreSQL only: control on any node. A change made through any node's API (an
//! integration created, changed or deleted, Sync now) is announced with NOTIFY in
//! the transaction that made it (`store::postgres::notify`); this job listens and
//! hands each to the Supervisor as the local API would, so the node that runs the
//! integration acts within a second:
//! - created / changed / deleted → `Refresh`: the Supervisor reads the integration
//!   back and restarts only its actor. The node that made the change refreshes
//!   twice (its API, then the notification); the second finds the version it runs
//!   and does nothing.
//! - an account's SIEM feature switched (`PUT /api/v1/accounts/{a}`) → `Refresh` of
//!   each of its integrations: started or stopped as the switch says.
//! - Sync now → `SyncNow`: acted on only where the integration's actor runs.
//!
//! Only the node holding the event's shard acts on it; the others drop it.
//! - a replay asked for or cancelled on a node that does not run the integration
//!   (stored in its replay record) → `ReplayChanged`: where the integration runs,
//!   its replay starts or stops as the record says.
//!
//! Notifications sent while the listening connection was down are lost, so every
//! (re)connection (several in a row make one), and every `[timing]
//! control_reread_secs`, re-reads all integrations (`Reread`: one query, made off
//! the Supervisor's thread; only those that differ are read again) and the
//! running replays (`RereadReplays`).

use crate::actors::messages::{ObserveAll, Refresh, ReplayChanged, Reread, RereadReplays, SyncNow};
use crate::actors::observation::Published;
use crate::actors::Supervisor;
use crate::background::Background;
use crate::store::postgres::{ControlAction, ControlEvent, ControlSignal, PgStore};
use crate::store::Store;
use actix::Addr;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Starts the job on PostgreSQL (it also publishes the delivery status of the
/// integrations this node runs); on sled, where every change is made by this
/// process and told to its Supervisor directly, a job with nothing to do.
pub fn spawn(store: &Store, supervisor: Addr<Supervisor>, reread: Duration) -> Background {
    let mut job = Background::new("the control listener and status publisher");
    let Some(pg) = store.postgres() else {
        return job;
    };
    let mut listener = pg.listen();
    let pg = pg.clone();
    let store = store.clone();
    let (publisher_pg, publisher_supervisor) = (pg.clone(), supervisor.clone());
    job.spawn(move |mut stop| async move {
        let mut reread_at = actix_rt::time::interval(reread);
        reread_at.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: start-up reconciles already.
        reread_at.tick().await;
        loop {
            let first = tokio::select! {
                _ = stop.stopped() => return,
                _ = reread_at.tick() => {
                    reread_all(&pg, &supervisor).await;
                    continue;
                }
                signal = listener.recv() => signal,
            };
            let Some(first) = first else {
                if listener.store_gone().await {
                    // Only at shutdown, which stops this job next.
                    stop.stopped().await;
                    return;
                }
                // The listening task failed (a bug): without it no change made
                // elsewhere arrives before the next re-read, so it starts again.
                log::error!("postgres: the control listener ended; listening again");
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = actix_rt::time::sleep(Duration::from_secs(1)) => {}
                }
                listener = pg.listen();
                continue;
            };
            // Everything already queued is handled now, and any number of
            // reconnections among it makes one re-read, after the events.
            let mut reconnected = false;
            let mut next = Some(first);
            while let Some(signal) = next {
                match signal {
                    ControlSignal::Listening => reconnected = true,
                    ControlSignal::Event(e) => pass_on(e, &store, &supervisor),
                }
                next = listener.try_recv();
            }
            if reconnected {
                log::debug!("postgres: listening for control changes; re-reading the integrations");
                reread_all(&pg, &supervisor).await;
                // The periodic re-read counts from this one.
                reread_at.reset();
            }
        }
    });
    job.spawn(move |stop| publish(publisher_pg, publisher_supervisor, reread, stop));
    job
}

/// How often the integrations running here are looked at for a change to publish.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Publishes what this node observes of the integrations it runs (the live part of
/// their status: state, errors, progress, next sync, restarts) so that a node that
/// does not run one can answer for it. Looked at every second, and published only
/// when it changed, and at least every `refresh` (the re-read interval) so that a
/// reader can tell a live record from one left by a stopped node: at most one
/// upsert per integration per second whatever the post rate, all in one statement.
async fn publish(
    pg: PgStore,
    supervisor: Addr<Supervisor>,
    refresh: Duration,
    mut stop: crate::background::StopSignal,
) {
    let mut tick = actix_rt::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: HashMap<Uuid, (Published, Instant)> = HashMap::new();
    // What each actor last showed: the Supervisor asks only those that marked a
    // change, and answers `None` for the others.
    let mut latest: HashMap<Uuid, Published> = HashMap::new();
    let mut all = true;
    loop {
        tokio::select! {
            _ = stop.stopped() => return,
            _ = tick.tick() => {}
        }
        let Ok(seen) = supervisor.send(ObserveAll { all, refresh }).await else {
            // The Supervisor is gone: only at shutdown, which stops this task next.
            stop.stopped().await;
            return;
        };
        all = false;
        let mut running = HashSet::with_capacity(seen.len());
        let mut due = Vec::new();
        for (id, p) in seen {
            match p {
                Some(p) => {
                    latest.insert(id, *p);
                }
                // Never seen here (not expected: a new actor is marked from its
                // start): every actor is asked at the next look.
                None if !latest.contains_key(&id) => {
                    all = true;
                    continue;
                }
                None => {}
            }
            running.insert(id);
            let p = &latest[&id];
            let changed = published
                .get(&id)
                .is_none_or(|(before, at)| before != p || at.elapsed() >= refresh);
            if !changed {
                continue;
            }
            match serde_json::to_value(p) {
                Ok(doc) => due.push((id, doc)),
                Err(e) => log::warn!("integration {id}: cannot encode its status to publish: {e}"),
            }
        }
        // Integrations no longer running here are forgotten: published afresh if
        // they come back.
        latest.retain(|id, _| running.contains(id));
        let ids: Vec<Uuid> = due.iter().map(|(id, _)| *id).collect();
        match pg.publish_statuses(due).await {
            Ok(()) => {
                let at = Instant::now();
                published.retain(|id, _| running.contains(id));
                for id in ids {
                    if let Some(p) = latest.get(&id) {
                        published.insert(id, (p.clone(), at));
                    }
                }
            }
            // Retried at the next tick: nothing was marked published.
            Err(e) => log::warn!(
                "postgres: cannot publish the delivery status of {} integrations: {e}",
                ids.len()
            ),
        }
    }
}

/// Hands one control event to the Supervisor, as the local API would; only on the
/// node holding the integration's shard, the one that runs it (a node that gains
/// the shard later reads the integration as stored then).
fn pass_on(e: ControlEvent, store: &Store, supervisor: &Addr<Supervisor>) {
    if !store.holds(&e.integration) {
        return;
    }
    log::debug!(
        "postgres: control change of integration {}: {:?}",
        e.integration,
        e.action
    );
    match e.action {
        ControlAction::Changed { .. } | ControlAction::Deleted | ControlAction::AccountChanged => {
            supervisor.do_send(Refresh {
                account: e.account,
                id: e.integration,
            })
        }
        ControlAction::SyncNow => supervisor.do_send(SyncNow { id: e.integration }),
        // A replay asked for or cancelled on another node: where the integration
        // runs, its replay follows the record.
        ControlAction::Replay => supervisor.do_send(ReplayChanged { id: e.integration }),
    }
}

/// Re-reads what notifications may have missed: the integrations, and the replays
/// asked for or cancelled on another node. The integrations are read here, off
/// the Supervisor's thread (where the lease loop runs too), in one query that
/// opens no token; the Supervisor reads again only those that differ from what
/// it runs (`Reread`). A read that fails waits for the next re-read.
async fn reread_all(pg: &PgStore, supervisor: &Addr<Supervisor>) {
    match pg.integration_stamps().await {
        Ok(stamps) => supervisor.do_send(Reread { stamps }),
        Err(e) => log::warn!(
            "postgres: cannot re-read the integrations: {e}; trying again at the next re-read"
        ),
    }
    match pg.running_replays().await {
        Ok(running) => supervisor.do_send(RereadReplays { running }),
        Err(e) => log::warn!(
            "postgres: cannot re-read the running replays: {e}; trying again at the next re-read"
        ),
    }
}
