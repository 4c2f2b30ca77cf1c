//! The one delivery loop, shared by live delivery and replays: it reads batches from
//! a [`Feed`], posts them as the [`Policy`] plans, keeps up to the policy's window of
//! posts waiting for indexer acknowledgement at once, and applies the policy's
//! decision for each post strictly in order through a [`Ledger`] — which is where
//! live delivery moves its checkpoint and keeps dead letters, and a replay counts
//! its progress.
//!
//! Order and at-least-once with several posts in flight: a post is committed only
//! after every post before it; each post holds its retention claim until its commit
//! or failure. When a post's answer splits it (a bad event, a size refusal), what
//! is left of it is posted again ahead of the later posts in the commit order, so
//! nothing Splunk took is sent twice. When a post fails (Splunk busy, an ack that
//! never came), everything from it on is kept to be sent again — later posts that
//! Splunk may already have taken included (at-least-once).

use super::audit_collector::AuditCollector;
use super::heartbeat::Pulse;
use super::job_collector::JobCollector;
use super::messages::{
    Batch, BatchRequest, CollectAudit, CollectChangedJobs, CollectRunningJobs, Window,
};
use crate::hec::client::{AckAnswer, HecClient};
use crate::hec::encode::Envelope;
use crate::hec::policy::{Decision, Plan, Policy, SlowDown};
use crate::hec::response::{self, Failure, Outcome};
use crate::model::AccountId;
use crate::store::{PostClaim, StoreError};
use actix::prelude::*;
use chrono::Utc;
use futures_util::future::LocalBoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Why a delivery stopped before its feed ran dry.
#[derive(Debug, Clone, PartialEq)]
pub enum Halt {
    /// Splunk or the network is briefly unable: retry with back-off, waiting at
    /// least `retry_after` when Splunk asked.
    Transient {
        /// What went wrong, as the status shows it.
        failure: Failure,
        /// Splunk's `Retry-After`: the back-off waits at least this long.
        retry_after: Option<Duration>,
    },
    /// The customer must fix something: retry once per interval.
    Config(Failure),
    /// The integration was deleted while a post was in flight.
    Gone,
    /// The Supervisor asked to wind down (shutdown): the posts in flight were
    /// answered and dealt with; what was not posted stays pending.
    Drained,
}

impl Halt {
    /// siemsync's own store or actors failed: retried like a busy Splunk.
    pub fn internal(text: String) -> Halt {
        Halt::Transient {
            failure: Failure {
                http_status: None,
                code: None,
                text,
                advice: "siemsync could not read or write its own store; it retries. Tell the operator if this persists.".into(),
            },
            retry_after: None,
        }
    }
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Gone => Halt::Gone,
            other => Halt::internal(other.to_string()),
        }
    }
}

impl From<MailboxError> for Halt {
    fn from(e: MailboxError) -> Self {
        Halt::internal(format!("collector unavailable: {e}"))
    }
}

/// A delivery that stopped: why, and the events not committed, in order, to be
/// sent first next time (live delivery keeps them; a replay reads them again).
#[derive(Debug)]
pub struct Stopped {
    /// Why it stopped.
    pub halt: Halt,
    /// The events not committed, in order; `None` when every read event was.
    pub pending: Option<Batch>,
}

/// Whether a part may be posted.
pub enum Claimed {
    /// Every event of the part is still stored; retention leaves them while this lives.
    Held(Option<PostClaim>),
    /// Which events of the part are no longer stored: they are dropped, never sent.
    Gone(Vec<bool>),
}

/// Where a delivery's results go.
#[allow(async_fn_in_trait)] // used by this crate's single-threaded actors only
pub trait Ledger {
    /// Before a part is posted.
    fn claim(&mut self, part: &Batch) -> Result<Claimed, Halt>;
    /// The first `upto` events of `part` are done: delivered, and the last of them
    /// refused as bad data when `refused` is given. Answers whether a new dead
    /// letter was kept (the refusal breaker counts those).
    async fn commit(
        &mut self,
        part: &Batch,
        upto: usize,
        refused: Option<Failure>,
    ) -> Result<bool, Halt>;
    /// A post is about to be sent.
    fn posting(&mut self) {}
    /// A post ended (answered, and acknowledged when asked) after `took`.
    fn posted(&mut self, _took: Duration) {}
    /// Splunk took events but something needs fixing (shown in the status).
    fn warn(&mut self, _warning: Failure) {}
    /// Splunk asked to slow down (or, with `None`, no longer does).
    fn slowed(&mut self, _slow_down: Option<&SlowDown>) {}
}

/// Where a delivery's batches come from.
#[allow(async_fn_in_trait)]
pub trait Feed {
    /// The next batch after the last one handed out (of at most `max_bytes`), or
    /// `None` once there is no more.
    async fn next(&mut self, max_bytes: usize) -> Result<Option<Batch>, Halt>;
}

/// What a [`CollectorFeed`] reads.
pub enum Source {
    /// One batch, then nothing (a batch kept from a failed delivery).
    Once(Option<Batch>),
    /// Audit events after this sequence.
    Audit {
        /// The last sequence handed out; moves on with each batch.
        after: u64,
    },
    /// Jobs changed after this change sequence.
    ChangedJobs {
        /// The last change sequence handed out; moves on with each batch.
        after: u64,
    },
    /// Jobs still in progress whose snapshot is at or before `up_to`, after job `after_job`.
    RunningJobs {
        /// Newer snapshots were sent as changed jobs: not sent again here.
        up_to: u64,
        /// The job the last batch ended with; `None` to start from the first.
        after_job: Option<String>,
        /// The collector said there is no more.
        done: bool,
    },
}

/// Batches read from the collectors, each starting after the last handed out.
pub struct CollectorFeed<'a> {
    /// Reads the account's audit log.
    pub audit: &'a Addr<AuditCollector>,
    /// Reads the account's job snapshots.
    pub jobs: &'a Addr<JobCollector>,
    /// Whose events are read.
    pub account: &'a AccountId,
    /// The host and index stamped on every event.
    pub envelope: &'a Envelope,
    /// A replay's window; `None` for live delivery.
    pub window: Option<Window>,
    /// Which events, and where the reading stands.
    pub source: Source,
    /// The read of the batch after the last one handed out, sent as that one was
    /// handed out (see [`Ahead`]); `None` to start with.
    pub ahead: Option<Ahead>,
}

/// A collector's read sent before the delivery asked for it: the batch after the
/// one just handed out, read while that one is posted and committed — reading
/// (PostgreSQL's round trips, decoding, encoding) then overlaps the post instead
/// of waiting behind its commit. Sent only while the source has more than a batch
/// left (a catch-up), so an integration keeps at most one batch more in memory,
/// and an idle one reads nothing more. It is used only if the delivery asks for
/// exactly that read (same cursor and size); otherwise, and when the delivery
/// stops (a failed post, a disabled or deleted integration, a lost or stale
/// shard), it is dropped unused: what is posted is always claimed first
/// ([`Ledger::claim`]), whenever it was read. Its events' `upload_time` is when
/// it was read, one post earlier than a read after the post would stamp.
pub struct Ahead {
    /// The cursor the read starts after.
    after: u64,
    /// The size it was asked for.
    max_bytes: usize,
    read: LocalBoxFuture<'static, Result<Result<Batch, StoreError>, MailboxError>>,
}

impl Feed for CollectorFeed<'_> {
    async fn next(&mut self, max_bytes: usize) -> Result<Option<Batch>, Halt> {
        let request = batch_request(self, max_bytes);
        let ahead = self.ahead.take();
        let after = match &mut self.source {
            Source::Once(batch) => return Ok(batch.take()),
            Source::Audit { after } | Source::ChangedJobs { after } => *after,
            Source::RunningJobs { done: true, .. } => return Ok(None),
            Source::RunningJobs {
                up_to,
                after_job,
                done,
            } => {
                let b = self
                    .jobs
                    .send(CollectRunningJobs {
                        request,
                        up_to: *up_to,
                        after_job: after_job.clone(),
                    })
                    .await??;
                *after_job = b.last_job.clone();
                *done = !b.more;
                return Ok((!b.is_empty()).then_some(b));
            }
        };
        // A read ahead for another cursor or size is dropped before the new read is
        // sent: the collector skips a request whose answer nobody waits for, instead
        // of reading it first.
        let ahead = ahead.filter(|a| a.after == after && a.max_bytes == max_bytes);
        let batch = match ahead {
            Some(a) => a.read.await??,
            None => self.read(request, after).await??,
        };
        let last = batch.items.last().map_or(after, |i| i.seq);
        if batch.more {
            // More than this batch is stored: the next read goes now (see `Ahead`).
            self.ahead = Some(Ahead {
                after: last,
                max_bytes,
                read: self.read(batch_request(self, max_bytes), last),
            });
        }
        match &mut self.source {
            Source::Audit { after } | Source::ChangedJobs { after } if batch.more => *after = last,
            // The store had nothing after this batch: the pass ends with it instead of
            // asking the collector once more. (That last read came after the post,
            // queued behind every other integration's reads: at start, when all of
            // them sync at once, each held its idle connection all that while, and
            // 100,000 integrations ran out of file descriptors.) Events stored
            // meanwhile go with the next sync.
            _ => self.source = Source::Once(None),
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// A read of `account`'s events of `max_bytes` at most.
fn batch_request(feed: &CollectorFeed<'_>, max_bytes: usize) -> BatchRequest {
    BatchRequest {
        account: feed.account.clone(),
        envelope: feed.envelope.clone(),
        upload_time: Utc::now(),
        max_bytes,
    }
}

impl CollectorFeed<'_> {
    /// Sends the read of the audit events or changed jobs after `after` to its
    /// collector: the message is queued now, the answer awaited later.
    fn read(
        &self,
        request: BatchRequest,
        after: u64,
    ) -> LocalBoxFuture<'static, Result<Result<Batch, StoreError>, MailboxError>> {
        let window = self.window;
        if matches!(self.source, Source::ChangedJobs { .. }) {
            Box::pin(self.jobs.send(CollectChangedJobs {
                request,
                after,
                window,
            }))
        } else {
            Box::pin(self.audit.send(CollectAudit {
                request,
                after,
                window,
            }))
        }
    }
}

/// Where one posted part stands.
enum State {
    Posting,
    Answered(Outcome),
    /// Delivered; Splunk confirms ack `id` once indexed.
    Awaiting {
        id: u64,
        since: Instant,
        slow_down: Option<Failure>,
    },
    Acked {
        slow_down: Option<Failure>,
    },
    TimedOut,
}

struct Slot {
    id: u64,
    part: Batch,
    /// Held until the part is committed or given up.
    _claim: Option<PostClaim>,
    started: Instant,
    state: State,
}

impl Slot {
    /// An answer that stops further posts until it is dealt with in order.
    fn failed(&self) -> bool {
        match &self.state {
            State::Answered(o) => !matches!(o, Outcome::Delivered { .. } | Outcome::Unconfirmed(_)),
            State::TimedOut => true,
            _ => false,
        }
    }
}

/// The events of a delivery not yet committed, in order.
enum Entry {
    Unposted(Batch),
    Posted(Slot),
}

impl Entry {
    fn batch(&self) -> &Batch {
        match self {
            Entry::Unposted(b) => b,
            Entry::Posted(s) => &s.part,
        }
    }
}

type Posted<'a> = FuturesUnordered<LocalBoxFuture<'a, (u64, Outcome)>>;

/// One delivery run: everything the feed has, or until a post fails or `pulse` is
/// asked to wind down. It promises progress on `pulse` as it goes.
pub async fn deliver(
    client: &HecClient,
    policy: &RefCell<Policy>,
    feed: &mut impl Feed,
    ledger: &mut impl Ledger,
    pulse: &Pulse,
) -> Result<(), Stopped> {
    let mut run = Run::new(client, policy, pulse);
    match run.drive(feed, ledger).await {
        Ok(()) => Ok(()),
        Err(halt) => Err(Stopped {
            halt,
            pending: run.pending(),
        }),
    }
}

struct Run<'a> {
    client: &'a HecClient,
    policy: &'a RefCell<Policy>,
    pulse: &'a Pulse,
    queue: VecDeque<Entry>,
    posts: Posted<'a>,
    poll: Option<LocalBoxFuture<'a, AckAnswer>>,
    /// When the ack poll in flight was sent.
    poll_started: Option<Instant>,
    /// When the last ack poll was answered.
    polled_at: Option<Instant>,
    /// Splunk asked to slow down: no new post before this.
    pace_until: Option<Instant>,
    feed_done: bool,
    next_id: u64,
}

impl<'a> Run<'a> {
    /// A run that has read nothing and posted nothing yet.
    fn new(client: &'a HecClient, policy: &'a RefCell<Policy>, pulse: &'a Pulse) -> Run<'a> {
        Run {
            client,
            policy,
            pulse,
            queue: VecDeque::new(),
            posts: FuturesUnordered::new(),
            poll: None,
            poll_started: None,
            polled_at: None,
            pace_until: None,
            feed_done: false,
            next_id: 0,
        }
    }

    async fn drive(&mut self, feed: &mut impl Feed, ledger: &mut impl Ledger) -> Result<(), Halt> {
        loop {
            self.beat(None);
            self.expire();
            self.settle(ledger).await?;
            self.fill(feed, ledger).await?;
            if self.queue.is_empty() && self.feed_done {
                return Ok(());
            }
            let draining = self.pulse.draining();
            if draining && !self.queue.iter().any(|e| matches!(e, Entry::Posted(_))) {
                return Err(Halt::Drained);
            }
            self.start_poll();
            let wake = self.wake();
            self.beat(wake);
            // Only beside something else to wait for: waiting for nothing is a fault.
            let waits = wake.is_some() || !self.posts.is_empty() || self.poll.is_some();
            tokio::select! {
                Some((id, outcome)) = self.posts.next(), if !self.posts.is_empty() => self.arrived(id, outcome),
                answer = poll(&mut self.poll) => {
                    self.poll = None;
                    self.poll_started = None;
                    self.polled_at = Some(Instant::now());
                    self.acks(answer)?;
                }
                _ = actix_rt::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {}
                // Wakes a wait for an ack poll or a pause, to stop posting at once.
                _ = self.pulse.drained(), if !draining && waits => {}
                else => return Err(Halt::internal("delivery waited for nothing (a siemsync fault)".into())),
            }
        }
    }

    /// Promises progress: within one step of the oldest request still unanswered (its
    /// client's timeouts end it by then), else of `wake` (a wait for a known moment);
    /// else nothing — reading events and committing wait on the collectors and the
    /// store, which every integration shares: a restart of this actor would not speed
    /// them up, and counting their queues against a post's budget killed healthy
    /// actors under load.
    fn beat(&self, wake: Option<Instant>) {
        let posting = self.queue.iter().filter_map(|e| match e {
            Entry::Posted(Slot {
                state: State::Posting,
                started,
                ..
            }) => Some(*started),
            _ => None,
        });
        let oldest = posting.chain(self.poll_started).min();
        match oldest.or_else(|| wake.map(|w| w.max(Instant::now()))) {
            Some(since) => self.pulse.busy_since(since),
            None => self.pulse.idle(),
        }
    }

    /// Applies the policy's decision to each answered post at the front, in order.
    async fn settle(&mut self, ledger: &mut impl Ledger) -> Result<(), Halt> {
        while let Some(Entry::Posted(slot)) = self.queue.front_mut() {
            let now = Instant::now();
            let ends = ends(&slot.part);
            let decision = {
                let mut policy = self.policy.borrow_mut();
                match std::mem::replace(&mut slot.state, State::Posting) {
                    state @ (State::Posting | State::Awaiting { .. }) => {
                        slot.state = state;
                        return Ok(());
                    }
                    State::Answered(outcome) => {
                        policy.on_answer(&ends, outcome, self.client.acknowledges(), now)
                    }
                    State::Acked { slow_down } => policy.on_acked(&ends, slow_down, now),
                    State::TimedOut => policy.on_ack_timeout(self.client.has_cookies()),
                }
            };
            if let Decision::AwaitAck(id) = decision {
                slot.state = State::Awaiting {
                    id,
                    since: now,
                    slow_down: None,
                };
                return Ok(());
            }
            ledger.posted(slot.started.elapsed());
            let Some(Entry::Posted(slot)) = self.queue.pop_front() else {
                return Ok(());
            };
            self.apply(ledger, slot.part, decision, now).await?;
        }
        Ok(())
    }

    /// Carries out the policy's `decision` on an answered post that left the queue:
    /// commit, dead-letter, re-send or retry what Splunk did not take, or stop.
    async fn apply(
        &mut self,
        ledger: &mut impl Ledger,
        part: Batch,
        decision: Decision,
        now: Instant,
    ) -> Result<(), Halt> {
        match decision {
            Decision::Commit { slow_down, warning } => {
                if let Some(w) = warning {
                    ledger.warn(w);
                }
                if let Err(e) = ledger.commit(&part, part.len(), None).await {
                    self.requeue_front(part);
                    return Err(e);
                }
                ledger.slowed(slow_down.as_ref());
                self.pace_until = slow_down.map(|s| now + s.pause);
            }
            Decision::DeadLetter { delivered, failure } => {
                match ledger.commit(&part, delivered + 1, Some(failure)).await {
                    Ok(kept) => {
                        if kept {
                            self.policy.borrow_mut().dead_lettered();
                        }
                        self.requeue_front(part.slice(delivered + 1..part.len()));
                    }
                    Err(e) => {
                        self.requeue_front(part);
                        return Err(e);
                    }
                }
            }
            Decision::Resend { delivered } => {
                self.commit_prefix(ledger, &part, delivered).await?;
                self.requeue_front(part.slice(delivered..part.len()));
            }
            Decision::Retry {
                delivered,
                failure,
                retry_after,
            } => {
                self.commit_prefix(ledger, &part, delivered).await?;
                self.requeue_front(part.slice(delivered..part.len()));
                return Err(Halt::Transient {
                    failure,
                    retry_after,
                });
            }
            Decision::Stop(failure) => {
                self.requeue_front(part);
                return Err(Halt::Config(failure));
            }
            // Handled above, before the post left the queue; never dropped.
            Decision::AwaitAck(_) => self.requeue_front(part),
        }
        Ok(())
    }

    async fn commit_prefix(
        &mut self,
        ledger: &mut impl Ledger,
        part: &Batch,
        delivered: usize,
    ) -> Result<(), Halt> {
        if delivered == 0 {
            return Ok(());
        }
        if let Err(e) = ledger.commit(part, delivered, None).await {
            self.requeue_front(part.clone());
            return Err(e);
        }
        Ok(())
    }

    /// Puts what is left of the front post back at the front, to be posted again
    /// ahead of the later posts.
    fn requeue_front(&mut self, rest: Batch) {
        if !rest.is_empty() {
            self.queue.push_front(Entry::Unposted(rest));
        }
    }

    /// Posts new parts while the window, the pace and the answers so far allow. What
    /// is left of a split post comes before posts already in flight: it is posted
    /// whatever the window, or the posts behind it could never be committed.
    async fn fill(&mut self, feed: &mut impl Feed, ledger: &mut impl Ledger) -> Result<(), Halt> {
        loop {
            // Winding down: the posts in flight finish, nothing new is read or posted.
            if self.pulse.draining() {
                return Ok(());
            }
            if self.pace_until.is_some_and(|t| Instant::now() < t) {
                return Ok(());
            }
            let first_unposted = self
                .queue
                .iter()
                .position(|e| matches!(e, Entry::Unposted(_)));
            let behind_posted = first_unposted.is_some_and(|k| {
                self.queue
                    .iter()
                    .skip(k)
                    .any(|e| matches!(e, Entry::Posted(_)))
            });
            if !behind_posted && !self.may_post_more() {
                return Ok(());
            }
            let Some(k) = first_unposted else {
                if self.feed_done {
                    return Ok(());
                }
                let max = self.policy.borrow().max_post_bytes();
                match feed.next(max).await? {
                    Some(batch) => self.queue.push_back(Entry::Unposted(batch)),
                    None => self.feed_done = true,
                }
                continue;
            };
            let batch = self.queue[k].batch().clone();
            let plan = self.policy.borrow_mut().plan(&ends(&batch), Instant::now());
            match plan {
                // Committed in order: only once everything before it is.
                Plan::Refuse(_) if k > 0 => return Ok(()),
                Plan::Refuse(failure) => {
                    let one = batch.slice(0..1);
                    ledger.commit(&one, 1, Some(failure)).await?;
                    self.replace(k, batch.slice(1..batch.len()));
                }
                Plan::Post(n) => {
                    let part = batch.slice(0..n);
                    match ledger.claim(&part)? {
                        Claimed::Gone(gone) => self.replace(k, batch.without(&gone)),
                        Claimed::Held(claim) => {
                            self.post(k, part, claim, ledger);
                            if n < batch.len() {
                                self.queue
                                    .insert(k + 1, Entry::Unposted(batch.slice(n..batch.len())));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether a new post may join those in flight: without acknowledgement one at a
    /// time; with it, one until the first answer brought a load balancer's cookies
    /// (if any), then the policy's window — and none while a failed post waits to be
    /// dealt with in order.
    fn may_post_more(&self) -> bool {
        let limit = if self.client.acknowledges() && self.client.has_answered() {
            self.policy.borrow().window()
        } else {
            1
        };
        let mut posted = 0;
        for e in &self.queue {
            if let Entry::Posted(s) = e {
                if s.failed() {
                    return false;
                }
                posted += 1;
            }
        }
        posted < limit
    }

    fn replace(&mut self, k: usize, batch: Batch) {
        if batch.is_empty() {
            self.queue.remove(k);
        } else {
            self.queue[k] = Entry::Unposted(batch);
        }
    }

    fn post(&mut self, k: usize, part: Batch, claim: Option<PostClaim>, ledger: &mut impl Ledger) {
        ledger.posting();
        self.next_id += 1;
        let id = self.next_id;
        let client = self.client;
        let body = part.body.clone();
        self.posts.push(Box::pin(
            async move { (id, client.post_events(body).await) },
        ));
        self.queue[k] = Entry::Posted(Slot {
            id,
            part,
            _claim: claim,
            started: Instant::now(),
            state: State::Posting,
        });
    }

    /// Splunk answered post `id`: a delivery to confirm starts waiting for its ack.
    fn arrived(&mut self, id: u64, outcome: Outcome) {
        let acknowledges = self.client.acknowledges();
        let awaited: Vec<u64> = self.awaiting().map(|(ack, _)| ack).collect();
        let reused = Policy::awaits_ack(&outcome, acknowledges).filter(|a| awaited.contains(a));
        if let Some(ack) = reused {
            // Two posts hold the same ack id (indexers behind a balancer that is not
            // sticky each count from 0): a `true` for it could be either indexer's, so
            // neither post can be confirmed by it. Both are sent again.
            for entry in &mut self.queue {
                if let Entry::Posted(slot) = entry {
                    if matches!(slot.state, State::Awaiting { id, .. } if id == ack) {
                        slot.state = State::Answered(response::ack_id_reused(ack));
                    }
                }
            }
        }
        let Some(slot) = self.slot_mut(id) else {
            return;
        };
        slot.state = match Policy::awaits_ack(&outcome, acknowledges) {
            Some(ack) if reused.is_some() => State::Answered(response::ack_id_reused(ack)),
            Some(ack) => State::Awaiting {
                id: ack,
                since: Instant::now(),
                slow_down: match outcome {
                    Outcome::Delivered { slow_down, .. } => slow_down,
                    _ => None,
                },
            },
            None => State::Answered(outcome),
        };
    }

    fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        self.queue.iter_mut().find_map(|e| match e {
            Entry::Posted(s) if s.id == id => Some(s),
            _ => None,
        })
    }

    /// The ack ids being waited for, with when each post was answered.
    fn awaiting(&self) -> impl Iterator<Item = (u64, Instant)> + '_ {
        self.queue.iter().filter_map(|e| match e {
            Entry::Posted(Slot {
                state: State::Awaiting { id, since, .. },
                ..
            }) => Some((*id, *since)),
            _ => None,
        })
    }

    /// When the next ack poll is due: soon after a post is answered, then ever less
    /// often as the oldest wait grows (the policy's schedule).
    fn next_poll(&self) -> Option<Instant> {
        let oldest = self.awaiting().map(|(_, since)| since).min()?;
        let from = self.polled_at.map_or(oldest, |p| p.max(oldest));
        Some(from + self.policy.borrow().ack_poll_delay(from - oldest))
    }

    fn start_poll(&mut self) {
        if self.poll.is_some() || self.next_poll().is_none_or(|t| t > Instant::now()) {
            return;
        }
        let ids: Vec<u64> = self.awaiting().map(|(id, _)| id).collect();
        let client = self.client;
        self.poll_started = Some(Instant::now());
        self.poll = Some(Box::pin(async move { client.poll_acks(&ids).await }));
    }

    /// The next moment something is due: an ack poll, an ack timeout, the end of a pause.
    fn wake(&self) -> Option<Instant> {
        let timeout = self.policy.borrow().settings().ack_timeout;
        let poll = self.poll.is_none().then(|| self.next_poll()).flatten();
        let expiry = self.awaiting().map(|(_, since)| since + timeout).min();
        let pace = self.pace_until.filter(|t| *t > Instant::now());
        [poll, expiry, pace].into_iter().flatten().min()
    }

    /// An ack poll's answer: confirmed posts are acked; ids not asked about, or
    /// never issued, are ignored. A refusal of the poll itself (acknowledgement off
    /// on the token) stops delivery; other failures are retried until the timeout.
    fn acks(&mut self, answer: AckAnswer) -> Result<(), Halt> {
        let confirmed: Vec<u64> = match answer {
            AckAnswer::Status(acks) => acks
                .into_iter()
                .filter(|(_, indexed)| *indexed)
                .map(|(id, _)| id)
                .collect(),
            AckAnswer::Failed(Outcome::Config(f)) => return Err(Halt::Config(f)),
            AckAnswer::Failed(_) => Vec::new(),
        };
        for entry in &mut self.queue {
            if let Entry::Posted(slot) = entry {
                if let State::Awaiting { id, slow_down, .. } = &mut slot.state {
                    if confirmed.contains(id) {
                        slot.state = State::Acked {
                            slow_down: slow_down.take(),
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// Posts whose acknowledgement is overdue are given up (and sent again).
    fn expire(&mut self) {
        let timeout = self.policy.borrow().settings().ack_timeout;
        for entry in &mut self.queue {
            if let Entry::Posted(slot) = entry {
                if matches!(slot.state, State::Awaiting { since, .. } if since.elapsed() >= timeout)
                {
                    slot.state = State::TimedOut;
                }
            }
        }
    }

    /// Everything not committed, in order, as one batch.
    fn pending(&mut self) -> Option<Batch> {
        let parts: Vec<Batch> = self.queue.drain(..).map(|e| e.batch().clone()).collect();
        Batch::concat(&parts)
    }
}

/// Where each event of a batch ends: what the policy measures posts by.
fn ends(batch: &Batch) -> Vec<usize> {
    batch.items.iter().map(|i| i.end).collect()
}

/// Awaits an ack poll when one is in flight; never completes otherwise.
async fn poll(p: &mut Option<LocalBoxFuture<'_, AckAnswer>>) -> AckAnswer {
    match p {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::batch::{BatchKind, Item};
    use crate::actors::messages::CountWindow;
    use crate::hec::client::ClientSettings;
    use crate::model::{IntegrationChange, IntegrationPolicy};
    use actix_web::web::Bytes;
    use serde_json::json;

    fn client() -> HecClient {
        let it = IntegrationChange::from_json(&json!({"name": "n",
            "hec_token": "t-0123456789abcdef", "hec_uri": "https://splunk.example.com",
            "sources": ["audit"], "enabled": true, "indexer_ack": true}))
        .and_then(|c| {
            c.create(
                AccountId::parse("acme").unwrap(),
                Utc::now(),
                IntegrationPolicy::default(),
            )
        })
        .unwrap();
        let settings = ClientSettings {
            connect: Duration::from_secs(1),
            request: Duration::from_secs(1),
            ack_poll: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(300),
            keep_alive: Duration::from_secs(15),
            allow_internal: true,
        };
        HecClient::new(&it, settings).unwrap()
    }

    fn policy() -> RefCell<Policy> {
        RefCell::new(Policy::new(crate::hec::policy::tests::settings(), 7))
    }

    fn posted(id: u64, seq: u64) -> Entry {
        Entry::Posted(Slot {
            id,
            part: Batch {
                kind: BatchKind::Audit,
                body: Bytes::from_static(b"{}"),
                items: vec![Item { seq, end: 2 }],
                last_job: None,
                more: false,
            },
            _claim: None,
            started: Instant::now(),
            state: State::Posting,
        })
    }

    fn delivered(ack: u64) -> Outcome {
        Outcome::Delivered {
            ack_id: Some(ack),
            slow_down: None,
        }
    }

    /// The heartbeat hears a promise only for a request in flight or a wait for a
    /// known moment: reading events and committing wait on the collectors and the
    /// store, shared by every integration, and an idle integration waits for
    /// nothing — neither may ever count as stuck.
    #[actix_rt::test]
    async fn only_a_request_in_flight_or_a_known_wait_promises_progress() {
        let (client, policy) = (client(), policy());
        let step = Duration::from_secs(2);
        let (heartbeat, pulse) = crate::actors::heartbeat::pair(step);
        let mut run = Run::new(&client, &policy, &pulse);
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        run.beat(None);
        assert_eq!(heartbeat.overdue(later), None, "nothing in flight");
        // A back-off (or Splunk's Retry-After) ends at a known moment.
        let wake = now + Duration::from_secs(10);
        run.beat(Some(wake));
        assert_eq!(heartbeat.overdue(wake + step / 2), None);
        assert!(
            heartbeat.overdue(wake + step * 2).is_some(),
            "late after its wait"
        );
        // A post in flight is answered within its step.
        run.queue.push_back(posted(1, 1));
        run.beat(None);
        assert!(heartbeat.overdue(later).is_some(), "a post never answered");
        run.queue.clear();
        run.beat(None);
        assert_eq!(heartbeat.overdue(later), None, "answered: idle again");
    }

    /// Behind a balancer that is not sticky, two indexers each count ack ids from 0:
    /// a `true` for id 0 could be either's, so neither post may be committed on it.
    #[actix_rt::test]
    async fn an_ack_id_given_to_two_posts_confirms_neither() {
        let client = client();
        let policy = policy();
        let pulse = Pulse::detached(Duration::from_secs(2));
        let mut run = Run {
            client: &client,
            policy: &policy,
            pulse: &pulse,
            queue: VecDeque::from([posted(1, 1), posted(2, 2), posted(3, 3)]),
            posts: FuturesUnordered::new(),
            poll: None,
            poll_started: None,
            polled_at: None,
            pace_until: None,
            feed_done: true,
            next_id: 3,
        };
        run.arrived(1, delivered(0));
        run.arrived(2, delivered(0));
        run.arrived(3, delivered(1));
        run.acks(AckAnswer::Status(vec![(0, true), (1, true)]))
            .unwrap();
        let states: Vec<&str> = run
            .queue
            .iter()
            .map(|e| match e {
                Entry::Posted(Slot {
                    state: State::Answered(Outcome::Transient { .. }),
                    ..
                }) => "refused",
                Entry::Posted(Slot {
                    state: State::Acked { .. },
                    ..
                }) => "acked",
                _ => "other",
            })
            .collect();
        assert_eq!(states, ["refused", "refused", "acked"]);
    }

    /// `n` audit events of account `acme`, numbered from `from`, in the store.
    fn store_audit(store: &crate::store::Store, from: usize, n: usize) {
        let now = Utc::now();
        let events = (from..from + n)
            .map(|i| {
                crate::model::AuditEvent::from_json(
                    &json!({"id": format!("e-{i}"), "time": "2026-11-25T10:00:00Z",
                        "event": "Restore started", "user": "ann@example.com"}),
                    i,
                    now,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        store
            .append_audit(&AccountId::parse("acme").unwrap(), events)
            .unwrap();
    }

    #[actix_rt::test]
    async fn a_pass_that_read_to_the_end_in_one_batch_asks_the_collector_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        store_audit(&store, 0, 3);
        let s = store.clone();
        let audit = SyncArbiter::start(1, move || AuditCollector::new(s.clone()));
        let s = store.clone();
        let jobs = SyncArbiter::start(1, move || JobCollector::new(s.clone()));
        let account = AccountId::parse("acme").unwrap();
        let envelope = crate::hec::encode::Envelope {
            host: "h".into(),
            index: None,
        };
        let feed = |source| CollectorFeed {
            audit: &audit,
            jobs: &jobs,
            account: &account,
            envelope: &envelope,
            window: None,
            source,
            ahead: None,
        };
        let mut whole = feed(Source::Audit { after: 0 });
        let first = whole.next(1 << 20).await.unwrap().unwrap();
        assert_eq!((first.len(), first.more), (3, false));
        // Stored after the read that reached the end: for the next sync.
        store_audit(&store, 3, 2);
        assert!(whole.next(1 << 20).await.unwrap().is_none());
        // A batch cut at the byte limit: the pass reads on.
        let mut cut = feed(Source::Audit { after: 0 });
        let first = cut.next(first.items[0].end).await.unwrap().unwrap();
        assert_eq!((first.len(), first.more), (1, true));
        let rest = cut.next(1 << 20).await.unwrap().unwrap();
        assert_eq!(rest.len(), 4);
        assert!(cut.next(1 << 20).await.unwrap().is_none());
    }

    /// A catch-up reads its next batch while the one just handed out is posted and
    /// committed: the read is queued at the collector as the batch is handed out,
    /// so it is answered before anything the collector is asked afterwards.
    #[cfg(feature = "test-hooks")]
    #[actix_rt::test]
    async fn the_next_batch_is_read_while_the_last_one_is_posted() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        store_audit(&store, 0, 3);
        let r = Readers::of(&store);
        let (audit, account) = (&r.audit, &r.account);
        let mut feed = r.feed();
        let whole = feed.next(1 << 20).await.unwrap().unwrap();
        let one = whole.items[0].end;
        let mut feed = CollectorFeed {
            source: Source::Audit { after: 0 },
            ..feed
        };
        let first = feed.next(one).await.unwrap().unwrap();
        assert_eq!((first.len(), first.more), (1, true));
        // The collector (one thread) is kept busy from now on: a count that first
        // waits a minute.
        store.set_pace(crate::store::Pace {
            count_pause: Duration::from_secs(60),
            ..Default::default()
        });
        let window = Window {
            from: Utc::now() - chrono::Duration::days(1),
            to: Utc::now(),
        };
        let mut count = std::pin::pin!(audit.send(CountWindow {
            account: account.clone(),
            window,
        }));
        let second = feed.next(one).await.unwrap().unwrap();
        assert_eq!(second.items[0].seq, first.items[0].seq + 1);
        // Read before the count was asked for: the count is not answered yet.
        assert!(
            futures_util::FutureExt::now_or_never(count.as_mut()).is_none(),
            "the second batch was read only after the count"
        );
    }

    /// A read sent ahead is used only for the read the delivery then asks for:
    /// a smaller post size (after Splunk refused one as too large) reads again.
    #[actix_rt::test]
    async fn a_batch_read_ahead_for_another_size_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        store_audit(&store, 0, 6);
        let r = Readers::of(&store);
        let mut feed = r.feed();
        let one = store_end(&mut feed).await;
        let mut feed = CollectorFeed {
            source: Source::Audit { after: 0 },
            ..feed
        };
        let two = feed.next(2 * one).await.unwrap().unwrap();
        assert_eq!(two.len(), 2);
        let smaller = feed.next(one).await.unwrap().unwrap();
        assert_eq!(smaller.len(), 1, "read again at the smaller size");
        assert_eq!(smaller.items[0].seq, two.items[1].seq + 1);
        let rest = feed.next(1 << 20).await.unwrap().unwrap();
        assert_eq!(rest.len(), 3, "read again at the larger size");
        assert!(feed.next(1 << 20).await.unwrap().is_none());
    }

    /// The collectors of a store (one thread each), and what a feed of account
    /// `acme`'s audit log reads with.
    struct Readers {
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
        account: AccountId,
        envelope: Envelope,
    }

    impl Readers {
        fn of(store: &crate::store::Store) -> Readers {
            let s = store.clone();
            let audit = SyncArbiter::start(1, move || AuditCollector::new(s.clone()));
            let s = store.clone();
            let jobs = SyncArbiter::start(1, move || JobCollector::new(s.clone()));
            Readers {
                audit,
                jobs,
                account: AccountId::parse("acme").unwrap(),
                envelope: Envelope {
                    host: "h".into(),
                    index: None,
                },
            }
        }

        /// A feed of the audit log from its start.
        fn feed(&self) -> CollectorFeed<'_> {
            CollectorFeed {
                audit: &self.audit,
                jobs: &self.jobs,
                account: &self.account,
                envelope: &self.envelope,
                window: None,
                source: Source::Audit { after: 0 },
                ahead: None,
            }
        }
    }

    /// The size of one event's HEC bytes (the events of `store_audit` are alike).
    async fn store_end(feed: &mut CollectorFeed<'_>) -> usize {
        let whole = feed.next(1 << 20).await.unwrap().unwrap();
        whole.items[0].end
    }
}
