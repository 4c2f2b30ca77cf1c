//! A batch of encoded events, and the one batch builder. A batch remembers where
//! each event's bytes end, so it can be split (413), cut at the event Splunk
//! refused (`invalid-event-number`), and committed event by event.

use actix_web::web::Bytes;
use std::ops::{ControlFlow, Range};

/// Which part of a source a batch carries; decides how its delivery moves the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// Audit events, in sequence order.
    Audit,
    /// Jobs changed since the checkpoint, in change order.
    JobsChanged,
    /// Jobs still in progress, re-sent for their progress; moves no cursor.
    JobsRunning,
}

/// One event of a batch: its sequence (audit sequence or job change sequence)
/// and where its bytes end in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Its audit sequence or job change sequence: what the checkpoint moves to.
    pub seq: u64,
    /// Where its bytes end in the body, so a batch can be cut between events.
    pub end: usize,
}

/// Encoded events ready to post, concatenated as HEC wants them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Which source and cursor it came from.
    pub kind: BatchKind,
    /// The HEC body: the events' JSON, concatenated.
    pub body: Bytes,
    /// The events, in body order.
    pub items: Vec<Item>,
    /// For running jobs: the last job id, to continue after it.
    pub last_job: Option<String>,
    /// Whether the source had more than fitted.
    pub more: bool,
}

impl Batch {
    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn start_of(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.items[i - 1].end
        }
    }

    /// The bytes of event `i` alone.
    pub fn event(&self, i: usize) -> Bytes {
        self.body.slice(self.start_of(i)..self.items[i].end)
    }

    /// Events `range` as a batch of their own, sharing the same bytes.
    pub fn slice(&self, range: Range<usize>) -> Batch {
        let (start, end) = if range.is_empty() {
            (0, 0)
        } else {
            (self.start_of(range.start), self.items[range.end - 1].end)
        };
        Batch {
            kind: self.kind,
            body: self.body.slice(start..end),
            items: self.items[range.clone()]
                .iter()
                .map(|it| Item {
                    seq: it.seq,
                    end: it.end - start,
                })
                .collect(),
            last_job: if range.end == self.len() {
                self.last_job.clone()
            } else {
                None
            },
            more: self.more,
        }
    }

    /// The batch without the events `drop` marks (indexes past its end are kept),
    /// their bytes copied.
    pub fn without(&self, drop: &[bool]) -> Batch {
        let mut body = Vec::with_capacity(self.body.len());
        let mut items = Vec::with_capacity(self.len());
        for (i, item) in self.items.iter().enumerate() {
            if drop.get(i).copied().unwrap_or(false) {
                continue;
            }
            body.extend_from_slice(&self.event(i));
            items.push(Item {
                seq: item.seq,
                end: body.len(),
            });
        }
        Batch {
            kind: self.kind,
            body: body.into(),
            items,
            last_job: self.last_job.clone(),
            more: self.more,
        }
    }

    /// Consecutive parts of one source as one batch (their bytes copied); `None`
    /// when they hold no event.
    pub fn concat(parts: &[Batch]) -> Option<Batch> {
        let last = parts.iter().rev().find(|p| !p.is_empty())?;
        let mut body = Vec::with_capacity(parts.iter().map(|p| p.body.len()).sum());
        let mut items = Vec::with_capacity(parts.iter().map(Batch::len).sum());
        for p in parts {
            let start = body.len();
            body.extend_from_slice(&p.body);
            items.extend(p.items.iter().map(|i| Item {
                seq: i.seq,
                end: start + i.end,
            }));
        }
        Some(Batch {
            kind: last.kind,
            body: body.into(),
            items,
            last_job: last.last_job.clone(),
            more: last.more,
        })
    }

    /// Which of the integration's sources the batch is from (for its tally and metrics).
    pub fn source(&self) -> crate::model::Source {
        match self.kind {
            BatchKind::Audit => crate::model::Source::Audit,
            _ => crate::model::Source::Jobs,
        }
    }

    /// How many leading events fit in `max_bytes` (at least one).
    pub fn fitting(&self, max_bytes: usize) -> usize {
        self.items
            .iter()
            .take_while(|it| it.end <= max_bytes)
            .count()
            .max(1)
    }
}

/// Appends encoded events until the byte cap; always takes at least one event,
/// so a single large event is still offered to Splunk.
pub struct Batcher {
    kind: BatchKind,
    max_bytes: usize,
    body: Vec<u8>,
    items: Vec<Item>,
    last_job: Option<String>,
    more: bool,
}

impl Batcher {
    /// A batcher for `kind` that takes events until `max_bytes`.
    pub fn new(kind: BatchKind, max_bytes: usize) -> Batcher {
        Batcher {
            kind,
            max_bytes,
            // Small to start: most ticks carry a few events, and thousands of
            // integrations may hold a batch at once.
            body: Vec::with_capacity(max_bytes.min(16 << 10)),
            items: Vec::new(),
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
        if self.body.len() > self.max_bytes && !self.items.is_empty() {
            self.body.truncate(before);
            self.more = true;
            return ControlFlow::Break(());
        }
        self.items.push(Item {
            seq,
            end: self.body.len(),
        });
        self.last_job = job.map(str::to_owned);
        ControlFlow::Continue(())
    }

    /// The batch built so far.
    pub fn finish(self) -> Batch {
        Batch {
            kind: self.kind,
            body: self.body.into(),
            items: self.items,
            last_job: self.last_job,
            more: self.more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(events: &[&str], max: usize) -> Batch {
        let mut b = Batcher::new(BatchKind::Audit, max);
        for (i, e) in events.iter().enumerate() {
            if b.push(i as u64 + 10, None, |out| {
                out.extend_from_slice(e.as_bytes())
            })
            .is_break()
            {
                break;
            }
        }
        b.finish()
    }

    #[test]
    fn a_batch_stops_at_the_cap_but_always_holds_one_event() {
        let b = batch(&["aaaa", "bbbb", "cccc"], 9);
        assert_eq!(&b.body[..], b"aaaabbbb");
        assert!(b.more);
        let big = batch(&["a-very-long-event", "b"], 4);
        assert_eq!(big.len(), 1);
        assert_eq!(&big.body[..], b"a-very-long-event");
    }

    #[test]
    fn slices_and_halves_keep_each_events_bytes_and_sequence() {
        let b = batch(&["aa", "bbb", "c", "dddd"], 100);
        assert_eq!(&b.event(1)[..], b"bbb");
        let s = b.slice(1..3);
        assert_eq!(&s.body[..], b"bbbc");
        assert_eq!(
            s.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![11, 12]
        );
        assert_eq!(&s.event(1)[..], b"c");
        assert!(b.slice(4..4).is_empty());
        let (l, r) = (b.slice(0..2), b.slice(2..4));
        assert_eq!((&l.body[..], &r.body[..]), (&b"aabbb"[..], &b"cdddd"[..]));
        assert_eq!(&r.event(1)[..], b"dddd");
        assert_eq!(
            (b.fitting(6), b.fitting(5), b.fitting(1), b.fitting(100)),
            (3, 2, 1, 4)
        );
        let w = b.without(&[true, false, true]);
        assert_eq!(&w.body[..], b"bbbdddd");
        assert_eq!(
            w.items.iter().map(|i| i.seq).collect::<Vec<_>>(),
            vec![11, 13]
        );
        assert_eq!(&w.event(1)[..], b"dddd");
        let c = Batch::concat(&[b.slice(3..4), b.slice(0..0), b.slice(0..2)]).unwrap();
        assert_eq!(&c.body[..], b"ddddaabbb");
        assert_eq!(
            c.items.iter().map(|i| (i.seq, i.end)).collect::<Vec<_>>(),
            vec![(13, 4), (10, 6), (11, 9)]
        );
        assert_eq!(&c.event(2)[..], b"bbb");
        assert!(Batch::concat(&[b.slice(1..1)]).is_none());
    }
}
