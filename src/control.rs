//! PostgreSQL only: control on any node. A change made through any node's API (an
//! integration created, changed or deleted, Sync now) is announced with NOTIFY in
//! the transaction that made it (`store::postgres::notify`); this job listens and
//! hands each to the Supervisor as the local API would, so the node that runs the
//! integration acts within a second:
//! - created / changed / deleted → `Refresh`: the Supervisor reads the integration
//!   back and restarts only its actor. The node that made the change refreshes
//!   twice (its API, then the notification); the second finds the version it runs
//!   and does nothing.
//! - Sync now → `SyncNow`: acted on only where the integration's actor runs.
//! - a replay asked for or cancelled on a node that does not run the integration
//!   (stored in its replay record) → `ReplayChanged`: where the integration runs,
//!   its replay starts or stops as the record says.
//!
//! Notifications sent while the listening connection was down are lost, so every
//! (re)connection, and every `[timing] control_reread_secs`, re-reads all
//! integrations (`Reconcile`) and the running replays (`RereadReplays`).

use crate::actors::messages::{Reconcile, Refresh, ReplayChanged, RereadReplays, SyncNow};
use crate::actors::Supervisor;
use crate::background::Background;
use crate::store::postgres::{ControlAction, ControlSignal, PgStore};
use crate::store::Store;
use actix::Addr;
use std::time::Duration;

/// Starts the job on PostgreSQL; on sled, where every change is made by this
/// process and told to its Supervisor directly, a job with nothing to do.
pub fn spawn(store: &Store, supervisor: Addr<Supervisor>, reread: Duration) -> Background {
    let mut job = Background::new("the control listener");
    let Some(pg) = store.postgres() else {
        return job;
    };
    let mut listener = pg.listen();
    let pg = pg.clone();
    job.spawn(move |mut stop| async move {
        let mut reread_at = actix_rt::time::interval(reread);
        reread_at.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: start-up reconciles already.
        reread_at.tick().await;
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = reread_at.tick() => reread_all(&pg, &supervisor).await,
                signal = listener.recv() => match signal {
                    Some(ControlSignal::Listening) => {
                        log::debug!("postgres: listening for control changes; re-reading the integrations");
                        reread_all(&pg, &supervisor).await;
                    }
                    Some(ControlSignal::Event(e)) => {
                        log::debug!("postgres: control change of integration {}: {:?}", e.integration, e.action);
                        match e.action {
                            ControlAction::Changed { .. } | ControlAction::Deleted => {
                                supervisor.do_send(Refresh {
                                    account: e.account,
                                    id: e.integration,
                                })
                            }
                            ControlAction::SyncNow => supervisor.do_send(SyncNow { id: e.integration }),
                            // A replay asked for or cancelled on another node:
                            // where the integration runs, its replay follows the record.
                            ControlAction::Replay => supervisor.do_send(ReplayChanged { id: e.integration }),
                        }
                    }
                    // The store is gone: only at shutdown, which stops this job next.
                    None => {
                        stop.stopped().await;
                        return;
                    }
                },
            }
        }
    });
    job
}

/// Re-reads what notifications may have missed: the integrations, and the replays
/// asked for or cancelled on another node.
async fn reread_all(pg: &PgStore, supervisor: &Addr<Supervisor>) {
    supervisor.do_send(Reconcile);
    match pg.running_replays().await {
        Ok(running) => supervisor.do_send(RereadReplays { running }),
        Err(e) => log::warn!(
            "postgres: cannot re-read the running replays: {e}; trying again at the next re-read"
        ),
    }
}
