//! The retention sweep: a periodic task that asks the store to drop what every
//! reader has delivered, or what outlived `retention_days`.

use crate::background::Background;
use crate::model::Source;
use crate::store::{Reader, Store, StoreError};
use chrono::Utc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One pass over every account; returns (audit events, jobs) deleted.
pub fn sweep(store: &Store, retention: Duration) -> Result<(u64, u64), StoreError> {
    sweep_until(store, retention, &|| false)
}

/// `sweep`, ending early once `stop` says so (the shutdown): checked between two
/// accounts and between two batches of one account's audit log, so one batch (one
/// transaction) is the most it goes on for. The next sweep finishes the work.
pub fn sweep_until(
    store: &Store,
    retention: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(u64, u64), StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let (mut audit, mut jobs) = (0, 0);
    for account in store.accounts_with_events()? {
        if stop() {
            break;
        }
        // Read by the sweep at the moment it decides: an integration created or a
        // checkpoint moved a moment before counts.
        let readers = |source: Source| -> Result<Vec<Reader>, StoreError> {
            store
                .integrations_of(&account)?
                .iter()
                .filter(|i| i.wants(source))
                .map(|i| {
                    let cp = store.checkpoint(&i.id)?;
                    Ok(Reader {
                        integration: i.id,
                        delivered_up_to: match source {
                            Source::Audit => cp.audit_seq,
                            Source::Jobs => cp.job_seq,
                        },
                    })
                })
                .collect()
        };
        audit += store.sweep_audit_until(&account, cutoff, &|| readers(Source::Audit), stop)?;
        if stop() {
            break;
        }
        jobs += store.sweep_jobs(&account, cutoff, &|| readers(Source::Jobs))?;
    }
    Ok((audit, jobs))
}

/// Runs the sweep `every` (`[timing] retention_sweep_secs`), until stopped.
pub fn spawn(store: Store, retention: Duration, every: Duration) -> Background {
    let mut job = Background::new("the retention sweep");
    job.spawn(move |mut stop| async move {
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep(every) => {}
            }
            // A sweep under way is asked to stop at the next batch, and waited for:
            // its blocking thread cannot be interrupted, and the store is flushed
            // after it. One batch is all the shutdown waits for, not the whole sweep.
            let s = store.clone();
            let halt = Arc::new(AtomicBool::new(false));
            let halted = halt.clone();
            let mut sweeping = actix_web::rt::task::spawn_blocking(move || {
                sweep_until(&s, retention, &|| halted.load(Ordering::Relaxed))
            });
            let swept = tokio::select! {
                swept = &mut sweeping => swept,
                _ = stop.stopped() => {
                    log::info!("retention: shutting down; the sweep under way stops after its current batch");
                    halt.store(true, Ordering::Relaxed);
                    sweeping.await
                }
            };
            match swept {
                Ok(Ok((0, 0))) => {}
                Ok(Ok((audit, jobs))) => {
                    log::info!("retention: {audit} audit events and {jobs} jobs removed")
                }
                Ok(Err(e)) => log::error!("retention sweep failed: {e}"),
                Err(e) => log::error!("retention sweep stopped: {e}"),
            }
        }
    });
    job
}
