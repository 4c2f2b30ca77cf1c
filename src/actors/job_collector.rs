//! JobCollector: the only reader of job snapshots, on its own threads like the AuditCollector.

use super::batch::Batcher;
use super::messages::{Batch, BatchKind, CollectChangedJobs, CollectRunningJobs};
use crate::hec::encode;
use crate::store::{Store, StoreError};
use actix::prelude::*;
use std::ops::ControlFlow;

pub struct JobCollector {
    store: Store,
}

impl JobCollector {
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
