//! JobCollector: the only reader of job snapshots, on its own threads like the AuditCollector.

use super::batch::Batcher;
use super::messages::{Batch, BatchKind, CollectChangedJobs, CollectRunningJobs, CountWindow};
use crate::hec::encode;
use crate::store::{Store, StoreError};
use actix::prelude::*;
use std::ops::ControlFlow;

/// Reads job snapshots for the integration and replay actors: the only reader of
/// job data, on its own threads, so a slow store never blocks an actor.
pub struct JobCollector {
    store: Store,
}

impl JobCollector {
    /// A collector over `store`.
    pub fn new(store: Store) -> Self {
        JobCollector { store }
    }
}

impl Actor for JobCollector {
    type Context = SyncContext<Self>;
}

impl Handler<CollectChangedJobs> for JobCollector {
    type Result = Result<Batch, StoreError>;

    fn handle(&mut self, msg: CollectChangedJobs, _: &mut Self::Context) -> Self::Result {
        let r = &msg.request;
        let mut batch = Batcher::new(BatchKind::JobsChanged, r.max_bytes);
        self.store.jobs_changed_after(&r.account, msg.after, |j| {
            if msg
                .window
                .is_some_and(|w| !w.contains(&j.snapshot.ingested_at))
            {
                return ControlFlow::Continue(());
            }
            batch.push(j.change_seq, None, |out| {
                encode::job(out, &r.envelope, &r.account, &j.snapshot, &r.upload_time)
            })
        })?;
        Ok(batch.finish())
    }
}

impl Handler<CollectRunningJobs> for JobCollector {
    type Result = Result<Batch, StoreError>;

    fn handle(&mut self, msg: CollectRunningJobs, _: &mut Self::Context) -> Self::Result {
        let r = &msg.request;
        let mut batch = Batcher::new(BatchKind::JobsRunning, r.max_bytes);
        self.store
            .running_jobs(&r.account, msg.after_job.as_deref(), |j| {
                if j.change_seq > msg.up_to {
                    return ControlFlow::Continue(());
                }
                let job = j.snapshot.job.clone();
                batch.push(j.change_seq, Some(&job), |out| {
                    encode::job(out, &r.envelope, &r.account, &j.snapshot, &r.upload_time)
                })
            })?;
        Ok(batch.finish())
    }
}

impl Handler<CountWindow> for JobCollector {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, msg: CountWindow, _: &mut Self::Context) -> Self::Result {
        self.store.before_count();
        let mut n = 0;
        self.store.jobs_changed_after(&msg.account, 0, |j| {
            n += u64::from(msg.window.contains(&j.snapshot.ingested_at));
            ControlFlow::Continue(())
        })?;
        Ok(n)
    }
}
