//! The one batch builder: appends encoded events until the byte cap, always at
//! least one event so that a large one is still sent.

use super::messages::{Batch, BatchKind};
use std::ops::ControlFlow;

pub struct Batcher {
    kind: BatchKind,
    max_bytes: usize,
    body: Vec<u8>,
    events: u64,
    last_seq: u64,
    last_job: Option<String>,
    more: bool,
}

impl Batcher {
    pub fn new(kind: BatchKind, max_bytes: usize, after: u64) -> Batcher {
        Batcher {
            kind,
            max_bytes,
            body: Vec::with_capacity(max_bytes.min(1 << 20)),
            events: 0,
            last_seq: after,
            last_job: None,
            more: false,
        }
    }

    /// Offers one event, written by `encode`; breaks when the batch is full.
    pub fn push(
        &mut self,
        seq: u64,
        job: Option<&str>,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> ControlFlow<()> {
        let before = self.body.len();
        encode(&mut self.body);
        if self.body.len() > self.max_bytes && self.events > 0 {
            self.body.truncate(before);
            self.more = true;
            return ControlFlow::Break(());
        }
        self.events += 1;
        self.last_seq = self.last_seq.max(seq);
        self.last_job = job.map(str::to_owned);
        ControlFlow::Continue(())
    }

    pub fn finish(self) -> Batch {
        Batch {
            kind: self.kind,
            body: self.body.into(),
            events: self.events,
            last_seq: self.last_seq,
            last_job: self.last_job,
            more: self.more,
        }
    }
}
