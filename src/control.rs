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
//!
//! Notifications sent while the listening connection was down are lost, so every
//! (re)connection, and every `[timing] control_reread_secs`, re-reads all
//! integrations (`Reconcile`).

use crate::actors::messages::{Reconcile, Refresh, SyncNow};
use crate::actors::Supervisor;
use crate::background::Background;
use crate::store::postgres::{ControlAction, ControlSignal};
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
    job.spawn(move |mut stop| async move {
        let mut reread_at = actix_rt::time::interval(reread);
        reread_at.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: start-up reconciles already.
        reread_at.tick().await;
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = reread_at.tick() => supervisor.do_send(Reconcile),
                signal = listener.recv() => match signal {
                    Some(ControlSignal::Listening) => {
                        log::debug!("postgres: listening for control changes; re-reading the integrations");
                        supervisor.do_send(Reconcile);
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
                            // A replay's record changed: the Supervisor resumes a
                            // running one whenever the integration (re)starts, and
                            // the periodic re-read is the net for the rest.
                            ControlAction::Replay => {}
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
