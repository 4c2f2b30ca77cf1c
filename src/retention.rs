//! The retention sweep: a periodic task that asks the store to drop what every
//! reader has delivered, or what outlived `retention_days`.

use crate::background::Background;
use crate::model::Source;
use crate::store::{Reader, Store, StoreError};
use chrono::Utc;
use std::time::Duration;

/// One pass over every account; returns (audit events, jobs) deleted.
pub fn sweep(store: &Store, retention: Duration) -> Result<(u64, u64), StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let (mut audit, mut jobs) = (0, 0);
    for account in store.accounts_with_events()? {
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
        audit += store.sweep_audit(&account, cutoff, &|| readers(Source::Audit))?;
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
            // A sweep under way is waited for: its blocking thread cannot be interrupted,
            // and the store is flushed after it.
            let s = store.clone();
            match actix_web::rt::task::spawn_blocking(move || sweep(&s, retention)).await {
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
