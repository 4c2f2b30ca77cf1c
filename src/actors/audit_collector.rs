//! AuditCollector: the only reader of the audit log. Runs on its own threads
//! (a `SyncArbiter`), so reading and encoding never stall the delivery actors.

use super::batch::Batcher;
use super::messages::{Batch, BatchKind, CollectAudit, CountWindow};
use crate::hec::encode;
use crate::store::{Store, StoreError};
use actix::prelude::*;

/// Reads the audit log for the integration and replay actors: the only reader of
/// audit events, on its own threads, so a slow store never blocks an actor.
pub struct AuditCollector {
    store: Store,
}

impl AuditCollector {
    /// A collector over `store`.
    pub fn new(store: Store) -> Self {
        AuditCollector { store }
    }
}

impl Actor for AuditCollector {
    type Context = SyncContext<Self>;
}

impl Handler<CollectAudit> for AuditCollector {
    type Result = Result<Batch, StoreError>;

    fn handle(&mut self, msg: CollectAudit, _: &mut Self::Context) -> Self::Result {
        let r = &msg.request;
        let mut batch = Batcher::new(BatchKind::Audit, r.max_bytes);
        let frame = encode::AuditFrame::new(&r.envelope, &r.upload_time);
        self.store.audit_after(&r.account, msg.after, |ev| {
            if msg.window.is_some_and(|w| !w.contains(&ev.time())) {
                return std::ops::ControlFlow::Continue(());
            }
            batch.push(ev.seq, None, |out| {
                frame.write(out, ev.time_ms, ev.head, ev.tail)
            })
        })?;
        Ok(batch.finish())
    }
}

impl Handler<CountWindow> for AuditCollector {
    type Result = Result<u64, StoreError>;

    fn handle(&mut self, msg: CountWindow, _: &mut Self::Context) -> Self::Result {
        self.store.before_count();
        let mut n = 0;
        self.store.audit_after(&msg.account, 0, |ev| {
            n += u64::from(msg.window.contains(&ev.time()));
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(n)
    }
}
