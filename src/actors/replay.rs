//! ReplayActor: re-sends a window of retained events for one integration, beside
//! its live delivery — its own HEC client and cursor, never the live checkpoint —
//! reporting sent/total, and stoppable at any time.

use super::audit_collector::AuditCollector;
use super::delivery::{self, Claimed, CollectorFeed, Halt, Ledger, Stopped};
use super::heartbeat::Pulse;
use super::integration::DeliverySettings;
use super::job_collector::JobCollector;
use super::messages::{
    Batch, CancelReplay, CountWindow, Drain, ObserveReplay, ReplayEnded, Stop, WindDown, Window,
};
use crate::hec::client::HecClient;
use crate::hec::encode::Envelope;
use crate::hec::policy::Policy;
use crate::hec::response::Failure;
use crate::model::{AccountId, Integration, Source};
use crate::store::{Store, StoreError};
use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Where a replay is: running, or how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReplayState {
    /// Posting (or waiting to resume with its integration).
    Running,
    /// Every event of the window was posted.
    Done,
    /// Stopped by a failure the customer must fix (`error` says which).
    Failed,
    /// Cancelled by the customer.
    Cancelled,
}

/// A replay's progress, as the status shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplayProgress {
    /// This replay (a new one gets a new id; a resumed one keeps its own).
    pub id: Uuid,
    /// The window's first instant.
    pub from: DateTime<Utc>,
    /// The window's last instant.
    pub to: DateTime<Utc>,
    /// The sources re-sent, in this order.
    pub sources: Vec<Source>,
    /// Running, or how it ended.
    pub state: ReplayState,
    /// Events in the window when the replay started.
    pub total: u64,
    /// Events Splunk accepted so far.
    pub sent: u64,
    /// Events Splunk refused as bad data (they are in the dead letters already, or were delivered live).
    pub skipped: u64,
    /// When it was started.
    pub started_at: DateTime<Utc>,
    /// When it ended (`null` while it runs).
    pub finished_at: Option<DateTime<Utc>>,
    /// The last failure: a transient one while it retries, or why it failed.
    pub error: Option<Failure>,
}

/// A replay's progress, shared between its actor and the actor's own run (one
/// thread): the run counts, the actor answers. The Supervisor never holds it.
pub type SharedProgress = Arc<Mutex<ReplayProgress>>;

/// A replay as kept in the store: a running one resumes from its cursor when its
/// integration starts again (after a restart, or after the integration was
/// restarted), instead of being lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredReplay {
    /// Its progress, as shown.
    pub progress: ReplayProgress,
    /// The source being replayed (index into `progress.sources`), and the sequence
    /// in it up to which every event was posted.
    pub source: usize,
    /// The sequence in that source up to which every event was posted.
    pub after: u64,
}

impl ReplayProgress {
    /// The window this replay re-sends.
    pub fn window(&self) -> Window {
        Window {
            from: self.from,
            to: self.to,
        }
    }
}

impl StoredReplay {
    /// A replay of `window` and `sources` about to start: nothing sent yet, its
    /// total counted when it starts.
    pub fn new(window: Window, sources: Vec<Source>) -> StoredReplay {
        StoredReplay {
            progress: ReplayProgress {
                id: Uuid::new_v4(),
                from: window.from,
                to: window.to,
                sources,
                state: ReplayState::Running,
                total: 0,
                sent: 0,
                skipped: 0,
                started_at: Utc::now(),
                finished_at: None,
                error: None,
            },
            source: 0,
            after: 0,
        }
    }

    /// A replay that has ended (done, failed or cancelled): nothing left to resume.
    pub fn ended(progress: ReplayProgress) -> StoredReplay {
        StoredReplay {
            source: progress.sources.len(),
            after: 0,
            progress,
        }
    }
}

/// Records the replay's state; a replay that cannot be recorded still runs (it
/// would only start over after a restart).
pub fn record(store: &Store, account: &AccountId, it: &Uuid, replay: &StoredReplay) {
    match store.put_replay(account, it, replay) {
        // Deleted: its replay goes with it.
        Ok(()) | Err(StoreError::Gone) => {}
        Err(e) => log::warn!("replay for integration {it}: cannot record its progress: {e}"),
    }
}

/// Records the progress of the replay this actor runs: like [`record`], and on
/// PostgreSQL fenced by this node's lease on the integration's shard, so that a
/// node that lost the shard (paused, then resumed) cannot overwrite the record of
/// the replay its new holder resumed. A refused write is logged, and the replay
/// is stopped by the lease round that found the shard gone.
fn record_progress(store: &Store, account: &AccountId, it: &Uuid, replay: &StoredReplay) {
    match store.put_replay_progress(account, it, replay) {
        Ok(()) | Err(StoreError::Gone) => {}
        Err(e) => log::warn!("replay for integration {it}: cannot record its progress: {e}"),
    }
}

/// Re-sends one replay window. Started by the Supervisor, which talks to it only by
/// messages: `ObserveReplay`, `CancelReplay`, `Stop`; it tells the Supervisor
/// `ReplayEnded` when it ends by itself, and stays to say how it ended.
pub struct ReplayActor {
    it: Integration,
    window: Window,
    sources: Vec<Source>,
    /// Where to start: `(source index, sequence after)`; `(0, 0)` for a new replay.
    from: (usize, u64),
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    settings: DeliverySettings,
    /// Shared only between this actor and its own run, on the actor's thread: the
    /// run counts what it sent, the actor answers questions about it.
    progress: SharedProgress,
    /// The run while it goes on: cancelling it stops it between two awaits.
    run: Option<SpawnHandle>,
    /// Told when the replay ends by itself.
    ended: Recipient<ReplayEnded>,
    /// Progress promised to the Supervisor, and its request to wind down.
    pulse: Pulse,
    /// Winding down with the run going on: told once its posts in flight are done.
    drained: Option<tokio::sync::oneshot::Sender<WindDown>>,
    /// The run ended on the wind-down before the `Drain` that follows it arrived (the
    /// actor runs on another thread than the Supervisor): that `Drain` answers
    /// `Finished` and stops the actor. Stopping at once would drop it unanswered,
    /// which reads as a post abandoned.
    wound_down: Option<WindDown>,
    /// Test builds only: its posts outlive their client's timeout.
    #[cfg(feature = "test-hooks")]
    stall: bool,
}

/// What a replay actor needs from the Supervisor that starts it.
pub struct ReplayDeps {
    /// Where it records its progress.
    pub store: Store,
    /// The audit log's reader.
    pub audit: Addr<AuditCollector>,
    /// The job snapshots' reader.
    pub jobs: Addr<JobCollector>,
    /// How to post: the same settings as live delivery.
    pub settings: DeliverySettings,
    /// Told when the replay ends by itself.
    pub ended: Recipient<ReplayEnded>,
    /// The actor's side of its heartbeat.
    pub pulse: Pulse,
    /// Test builds only: its posts outlive their client's timeout (`Fault::StallReplays`).
    #[cfg(feature = "test-hooks")]
    pub stall: bool,
}

impl ReplayActor {
    /// A replay of `it` that goes on from `stored` (from its start for a new one).
    pub fn new(it: Integration, stored: StoredReplay, deps: ReplayDeps) -> Self {
        ReplayActor {
            it,
            window: stored.progress.window(),
            sources: stored.progress.sources.clone(),
            from: (stored.source, stored.after),
            store: deps.store,
            audit: deps.audit,
            jobs: deps.jobs,
            settings: deps.settings,
            progress: Arc::new(Mutex::new(stored.progress)),
            run: None,
            ended: deps.ended,
            pulse: deps.pulse,
            drained: None,
            wound_down: None,
            #[cfg(feature = "test-hooks")]
            stall: deps.stall,
        }
    }

    fn snapshot(&self) -> ReplayProgress {
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn update(p: &SharedProgress, f: impl FnOnce(&mut ReplayProgress)) {
    f(&mut p.lock().unwrap_or_else(|e| e.into_inner()));
}

impl Actor for ReplayActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let run = replay(Run {
            it: self.it.clone(),
            window: self.window,
            sources: self.sources.clone(),
            from: self.from,
            store: self.store.clone(),
            audit: self.audit.clone(),
            jobs: self.jobs.clone(),
            settings: self.settings.clone(),
            progress: self.progress.clone(),
            pulse: self.pulse.clone(),
            #[cfg(feature = "test-hooks")]
            stall: self.stall,
        });
        let handle = ctx.spawn(run.into_actor(self).map(|result, act, ctx| {
            act.run = None;
            // It stays only to say how it ended: nothing more to watch.
            act.pulse.idle();
            if let Ok(RunEnd::Drained) = result {
                // Its record stays running, its cursor after the last post Splunk
                // took: the replay goes on after the restart.
                match act.drained.take() {
                    Some(tx) => {
                        let _ = tx.send(WindDown::Finished);
                        ctx.stop();
                    }
                    // The `Drain` is on its way: it answers and stops the actor.
                    None => act.wound_down = Some(WindDown::Finished),
                }
                return;
            }
            update(&act.progress, |p| {
                p.finished_at = Some(Utc::now());
                match result {
                    Ok(_) => p.state = ReplayState::Done,
                    Err(f) => {
                        p.state = ReplayState::Failed;
                        p.error = Some(f);
                    }
                }
            });
            let progress = act.snapshot();
            record_progress(
                &act.store,
                &act.it.account,
                &act.it.id,
                &StoredReplay::ended(progress.clone()),
            );
            log::info!("replay for integration {} ended", act.it.id);
            act.ended.do_send(ReplayEnded {
                id: act.it.id,
                replay: progress.id,
            });
            // Ended (done or failed) while the shutdown waited for it: nothing was
            // abandoned, and it has nothing left to do.
            if let Some(tx) = act.drained.take() {
                let _ = tx.send(WindDown::Finished);
                ctx.stop();
            }
        }));
        self.run = Some(handle);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.pulse.ended();
        // Stopped without finishing: with its integration or the service — then the
        // record stays running and the replay resumes when the integration runs again.
        update(&self.progress, |p| {
            if p.state == ReplayState::Running {
                p.state = ReplayState::Cancelled;
                p.finished_at = Some(Utc::now());
            }
        });
    }
}

impl Handler<Stop> for ReplayActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Drain> for ReplayActor {
    type Result = ResponseFuture<WindDown>;
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if self.run.is_none() {
            ctx.stop();
            let outcome = self.wound_down.take().unwrap_or(WindDown::Idle);
            return Box::pin(std::future::ready(outcome));
        }
        // The run sees the wind-down on its pulse and ends after its posts in flight.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drained = Some(tx);
        Box::pin(async move { rx.await.unwrap_or(WindDown::Abandoned) })
    }
}

impl Handler<ObserveReplay> for ReplayActor {
    type Result = Option<ReplayProgress>;
    fn handle(&mut self, _: ObserveReplay, _: &mut Context<Self>) -> Option<ReplayProgress> {
        Some(self.snapshot())
    }
}

impl Handler<CancelReplay> for ReplayActor {
    type Result = Result<Option<ReplayProgress>, StoreError>;
    fn handle(
        &mut self,
        _: CancelReplay,
        ctx: &mut Context<Self>,
    ) -> Result<Option<ReplayProgress>, StoreError> {
        let Some(run) = self.run.take() else {
            return Ok(None);
        };
        // The run is dropped here, between two of its awaits: it records nothing more
        // over the cancellation.
        ctx.cancel_future(run);
        self.pulse.idle();
        update(&self.progress, |p| {
            p.state = ReplayState::Cancelled;
            p.finished_at = Some(Utc::now());
        });
        let cancelled = self.snapshot();
        // Cancelled for good: the record says so, so no restart resumes it.
        record_progress(
            &self.store,
            &self.it.account,
            &self.it.id,
            &StoredReplay::ended(cancelled.clone()),
        );
        Ok(Some(cancelled))
    }
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure {
        http_status: None,
        code: None,
        text: e.to_string(),
        advice: "siemsync could not read its store for the replay; start it again.".into(),
    }
}

/// What one replay run needs.
struct Run {
    it: Integration,
    window: Window,
    sources: Vec<Source>,
    from: (usize, u64),
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    settings: DeliverySettings,
    progress: SharedProgress,
    pulse: Pulse,
    #[cfg(feature = "test-hooks")]
    stall: bool,
}

/// How a replay run ended without a failure.
enum RunEnd {
    /// Every event of the window was posted.
    Done,
    /// Wound down at shutdown: it resumes from its record after the restart.
    Drained,
}

/// Counts the events of the window, for `total`.
async fn count_window(run: &Run) -> Result<u64, Failure> {
    let mut total = 0;
    for s in &run.sources {
        let count = CountWindow {
            account: run.it.account.clone(),
            window: run.window,
        };
        total += match s {
            Source::Audit => run.audit.send(count).await,
            Source::Jobs => run.jobs.send(count).await,
        }
        .map_err(internal)?
        .map_err(internal)?;
    }
    Ok(total)
}

async fn replay(run: Run) -> Result<RunEnd, Failure> {
    // Counting the window reads the account's log on a shared collector: no promise
    // until the posts, whose own timeouts bound them (a large account's count took
    // longer than a post's budget, and the replay was killed and counted again).
    run.pulse.idle();
    let client = HecClient::new(&run.it, run.settings.client)?;
    #[cfg(feature = "test-hooks")]
    if run.stall {
        client.ignore_timeout();
    }
    if run.from == (0, 0) {
        let total = count_window(&run).await?;
        update(&run.progress, |p| p.total = total);
        // Recorded at once, not with the first post Splunk takes: on PostgreSQL the
        // other nodes answer from the record, and a replay whose posts all wait
        // (Splunk down) would show its progress without a total.
        let snapshot = run
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if snapshot.state == ReplayState::Running {
            let stored = StoredReplay {
                progress: snapshot,
                source: 0,
                after: 0,
            };
            record_progress(&run.store, &run.it.account, &run.it.id, &stored);
        }
    }
    // Its own policy: what the replay learns (a post size) is not the live delivery's.
    let policy = RefCell::new(Policy::new(
        run.settings.policy(&run.it),
        run.it.id.as_u128() as u64 ^ 0x7265_706c_6179,
    ));
    for (index, source) in run.sources.iter().copied().enumerate().skip(run.from.0) {
        let after = if index == run.from.0 { run.from.1 } else { 0 };
        if let RunEnd::Drained = replay_source(&run, &client, &policy, index, source, after).await?
        {
            return Ok(RunEnd::Drained);
        }
    }
    Ok(RunEnd::Done)
}

/// Re-sends the window's events of one source, after sequence `after`, retrying
/// with back-off through transient failures.
async fn replay_source(
    run: &Run,
    client: &HecClient,
    policy: &RefCell<Policy>,
    index: usize,
    source: Source,
    after: u64,
) -> Result<RunEnd, Failure> {
    let envelope = Envelope {
        host: run.settings.host.clone(),
        index: run.it.index.clone(),
    };
    let mut ledger = Replayed {
        store: &run.store,
        it: &run.it,
        progress: &run.progress,
        source: index,
        after,
    };
    let mut failures = 0;
    loop {
        let after = ledger.after;
        let mut feed = CollectorFeed {
            audit: &run.audit,
            jobs: &run.jobs,
            account: &run.it.account,
            envelope: &envelope,
            window: Some(run.window),
            source: match source {
                Source::Audit => delivery::Source::Audit { after },
                Source::Jobs => delivery::Source::ChangedJobs { after },
            },
            ahead: None,
        };
        // What was not committed is read again from the cursor: the window's
        // events are retained.
        let halt = match delivery::deliver(client, policy, &mut feed, &mut ledger, &run.pulse).await
        {
            Ok(()) => return Ok(RunEnd::Done),
            Err(Stopped { halt, .. }) => halt,
        };
        let (failure, retry_after) = match halt {
            Halt::Transient {
                failure,
                retry_after,
            } => (failure, retry_after),
            Halt::Config(failure) => return Err(failure),
            Halt::Gone => return Err(internal("the integration was deleted")),
            Halt::Drained => return Ok(RunEnd::Drained),
        };
        failures = if ledger.after == after {
            failures + 1
        } else {
            1
        };
        update(&run.progress, |p| p.error = Some(failure));
        let wait = policy.borrow_mut().back_off(failures, retry_after);
        // A back-off is a wait by design, not a lack of progress.
        run.pulse.idle();
        tokio::select! {
            _ = actix_rt::time::sleep(wait) => run.pulse.busy_since(std::time::Instant::now()),
            _ = run.pulse.drained() => return Ok(RunEnd::Drained),
        }
    }
}

/// A replay's side of a post: its progress, and its cursor kept in the store so a
/// restart re-sends at most the posts in flight. Refused events are counted as
/// skipped, not kept: they are in the dead letters already, or were delivered live.
struct Replayed<'a> {
    store: &'a Store,
    it: &'a Integration,
    progress: &'a SharedProgress,
    /// The source being replayed (index into the progress's sources).
    source: usize,
    /// The sequence up to which every event is committed.
    after: u64,
}

impl Ledger for Replayed<'_> {
    fn claim(&mut self, _: &Batch) -> Result<Claimed, Halt> {
        // On PostgreSQL a node that lost the integration's shard must not post at all.
        self.store.may_post(&self.it.id)?;
        Ok(Claimed::Held(None))
    }

    async fn commit(
        &mut self,
        part: &Batch,
        upto: usize,
        refused: Option<Failure>,
    ) -> Result<bool, Halt> {
        let skipped = u64::from(refused.is_some());
        update(self.progress, |p| {
            p.sent += upto as u64 - skipped;
            p.skipped += skipped;
        });
        self.after = part.items[upto - 1].seq;
        let snapshot = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if snapshot.state == ReplayState::Running {
            record_progress(
                self.store,
                &self.it.account,
                &self.it.id,
                &StoredReplay {
                    progress: snapshot,
                    source: self.source,
                    after: self.after,
                },
            );
        }
        // A replay keeps no dead letter (the events stay in the store), so its
        // refusals do not trip the refusal breaker: a window may well hold a run of
        // events live delivery dead-lettered already. They show as `skipped`.
        Ok(false)
    }

    fn warn(&mut self, warning: Failure) {
        // Delivered but not confirmed (indexer acknowledgement on the integration,
        // off on the token): the replay goes on, and says so.
        update(self.progress, |p| p.error = Some(warning));
    }
}
