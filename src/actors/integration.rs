//! IntegrationActor: owns one integration — its timer, checkpoint, HEC client and
//! the batch that failed. One per integration, so one customer's slow or broken
//! Splunk only ever delays that customer's own posts.

use super::audit_collector::AuditCollector;
use super::delivery::{self, Claimed, CollectorFeed, Halt, Ledger};
use super::gate::SyncGate;
use super::heartbeat::Pulse;
use super::history::Tally;
use super::job_collector::JobCollector;
use super::messages::*;
use super::observation::*;
use crate::hec::client::{ClientSettings, HecClient};
use crate::hec::encode::Envelope;
use crate::hec::policy::{Policy, PolicySettings, SlowDown};
use crate::hec::response::{Failure, FailureKind};
use crate::logsafe::clean;
use crate::metrics::{FailureLabels, IntegrationLabels, Metrics};
use crate::model::{Integration, Source};
use crate::store::{Checkpoint, DeadLetter, Store, StoreError};
use actix::prelude::*;
use chrono::Utc;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every integration actor needs from the service's config.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// This environment's host name, stamped on every event (config `host`).
    pub host: String,
    /// The largest post; smaller once Splunk refuses a size.
    pub max_batch_bytes: usize,
    /// The sync interval: one sync per interval, and the longest back-off.
    pub interval: Duration,
    /// The HEC client's timeouts and SSRF guard.
    pub client: ClientSettings,
    /// Where delivery counts posts, events and failures for `/metrics`.
    pub metrics: std::sync::Arc<Metrics>,
    /// Posts that may wait for indexer acknowledgement at once.
    pub posts_in_flight: usize,
    /// The longest wait a HEC `Retry-After` can impose.
    pub max_retry_after: Duration,
    /// How long a post size learnt from a refusal holds before larger posts are tried.
    pub post_size_regrow: Duration,
    /// The internal intervals: back-off base, restart delay, progress log.
    pub timing: crate::timing::Timing,
}

impl DeliverySettings {
    /// The settings `config` gives, counting into `metrics`.
    pub fn of(config: &crate::config::Config, metrics: std::sync::Arc<Metrics>) -> Self {
        DeliverySettings {
            metrics,
            host: config.host.clone(),
            max_batch_bytes: config.max_batch_bytes,
            interval: config.sync_interval(),
            client: config.client_settings(),
            posts_in_flight: config.posts_in_flight,
            max_retry_after: config.max_retry_after_secs.get(),
            post_size_regrow: config.post_size_regrow_secs.get(),
            timing: config.timing.clone(),
        }
    }

    /// The longest one step of delivery may take without progress: a post, with the
    /// health probe that may follow its failure, each bounded by the request timeout
    /// (connection included). Past it (and the Supervisor's margin) an actor is stuck.
    pub fn longest_step(&self) -> Duration {
        self.client.request * 2
    }

    /// What the delivery policy follows for integration `it`.
    pub fn policy(&self, it: &Integration) -> PolicySettings {
        PolicySettings {
            max_post_bytes: self.max_batch_bytes,
            posts_in_flight: self.posts_in_flight,
            interval: self.interval,
            backoff_base: self.timing.retry_backoff_base_secs.get(),
            max_retry_after: self.max_retry_after,
            regrow_after: self.post_size_regrow,
            ack_poll: self.client.ack_poll,
            ack_timeout: self.client.ack_timeout,
            compressed: it.gzip,
        }
    }
}

/// Handles a sync cycle needs; shared by the actor and the cycle future.
struct Deps {
    /// Shared with the Supervisor's record of the running actor.
    it: Arc<Integration>,
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    client: Result<HecClient, Failure>,
    /// Shared by every integration actor.
    settings: Arc<DeliverySettings>,
    /// The labels of its metrics, built once: every series shares their strings.
    labels: IntegrationLabels,
    /// Progress promised to the Supervisor, and its request to wind down.
    pulse: Pulse,
    /// The places of the syncs of this actor's thread.
    gate: SyncGate,
}

/// [`Shared`], which marks on every change (every mutable borrow) that what the
/// actor shows of itself may have changed: the status publisher asks only the
/// actors so marked, not all of them every second.
struct Observed {
    cell: RefCell<Shared>,
    changed: Arc<AtomicBool>,
}

impl Observed {
    fn borrow(&self) -> std::cell::Ref<'_, Shared> {
        self.cell.borrow()
    }

    fn borrow_mut(&self) -> std::cell::RefMut<'_, Shared> {
        self.changed.store(true, Ordering::Release);
        self.cell.borrow_mut()
    }
}

/// State the running cycle updates while the actor answers status questions.
struct Shared {
    checkpoint: Checkpoint,
    /// The batch that failed: re-sent, unchanged, before anything newer.
    pending: Option<Batch>,
    /// Set when Splunk takes events but says something needs fixing (no ack id
    /// although acknowledgement is on): delivery goes on, the status shows it.
    warning: Option<Failure>,
    /// Events and bytes delivered (and events dead-lettered) in the current cycle,
    /// per source: its log line and its history record.
    cycle: Tally,
    /// When catch-up progress was last logged (at most every 10 s).
    progress_logged: Instant,
    /// Running-job snapshots already dead-lettered: the running pass moves no cursor,
    /// so the same refused snapshot comes back every tick.
    dead_running: std::collections::HashSet<u64>,
    obs: Observation,
}

/// Counts a live actor in `siemsync_integration_actors` from its creation until it is
/// dropped, however it ends (a panic too).
struct Alive(prometheus_client::metrics::gauge::Gauge);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What ties an integration actor to the Supervisor that started it.
pub struct Supervised {
    /// Which start of the integration this is: a late word from an older one is ignored.
    pub generation: u64,
    /// Told when the actor ends.
    pub supervisor: Recipient<Stopped>,
    /// The actor's side of its heartbeat.
    pub pulse: Pulse,
    /// The sync gate of the thread the actor runs on.
    pub gate: SyncGate,
}

/// Delivers one integration: its timer, checkpoint, HEC client and the batch that failed.
pub struct IntegrationActor {
    _alive: Alive,
    deps: Rc<Deps>,
    shared: Rc<Observed>,
    /// What delivery has learnt about this Splunk (post size, refusals, back-off).
    policy: Rc<RefCell<Policy>>,
    generation: u64,
    supervisor: Recipient<Stopped>,
    next: Option<SpawnHandle>,
    syncing: bool,
    /// A sync was asked for while one ran: run again right after.
    again: bool,
    /// Winding down with a sync running: told once its posts in flight are done.
    drained: Option<tokio::sync::oneshot::Sender<WindDown>>,
    /// The sync ended on the wind-down before the `Drain` that follows it arrived
    /// (the actor runs on another thread than the Supervisor): how it ended, for
    /// that `Drain` to answer. Stopping at once would drop the `Drain` unanswered,
    /// which reads as a post abandoned.
    wound_down: Option<WindDown>,
    /// Test builds only: the thread the latest sync ran on (`SyncThread`).
    #[cfg(feature = "test-hooks")]
    synced_on: Option<String>,
}

impl IntegrationActor {
    /// An actor for `it`, started by the Supervisor; it syncs at once when started.
    pub fn new(
        it: Arc<Integration>,
        store: Store,
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
        settings: Arc<DeliverySettings>,
        supervised: Supervised,
    ) -> IntegrationActor {
        let Supervised {
            generation,
            supervisor,
            pulse,
            gate,
        } = supervised;
        let client = HecClient::new(&it, settings.client);
        let seed = it.id.as_u128() as u64 ^ (it.id.as_u128() >> 64) as u64 ^ generation;
        let alive = settings.metrics.integration_actors.clone();
        alive.inc();
        IntegrationActor {
            _alive: Alive(alive),
            policy: Rc::new(RefCell::new(Policy::new(settings.policy(&it), seed))),
            shared: Rc::new(Observed {
                changed: pulse.changed(),
                cell: RefCell::new(Shared {
                    checkpoint: Checkpoint::default(),
                    pending: None,
                    warning: None,
                    cycle: Tally::default(),
                    progress_logged: Instant::now(),
                    dead_running: Default::default(),
                    obs: Observation {
                        state: State::Pending,
                        started_at: Utc::now(),
                        config_version: it.version,
                        last_attempt: None,
                        last_error: None,
                        retries: 0,
                        syncing: false,
                        next_sync: None,
                        progress: None,
                        error_kind: None,
                        retry_after_secs: None,
                        slow_down: None,
                        sync_started_at: None,
                        last_sync: None,
                    },
                }),
            }),
            deps: Rc::new(Deps {
                labels: IntegrationLabels::of(&it),
                it,
                store,
                audit,
                jobs,
                client,
                settings,
                pulse,
                gate,
            }),
            generation,
            supervisor,
            next: None,
            syncing: false,
            again: false,
            drained: None,
            wound_down: None,
            #[cfg(feature = "test-hooks")]
            synced_on: None,
        }
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            self.again = true;
            return;
        }
        // Winding down: no sync starts (a Sync now that came after the last one ended).
        if self.deps.pulse.draining() {
            return;
        }
        if let Some(h) = self.next.take() {
            ctx.cancel_future(h);
        }
        self.syncing = true;
        #[cfg(feature = "test-hooks")]
        {
            let here = std::thread::current();
            self.synced_on = Some(
                here.name()
                    .map_or_else(|| format!("{:?}", here.id()), str::to_owned),
            );
        }
        // No promise until a post leaves: the delivery loop makes one per request.
        self.deps.pulse.idle();
        {
            let mut s = self.shared.borrow_mut();
            s.obs.syncing = true;
            s.obs.next_sync = None;
            s.obs.sync_started_at = Some(Utc::now());
            s.cycle = Tally::default();
        }
        let started = Instant::now();
        let gated = self.gated_sync();
        ctx.spawn(gated.into_actor(self).map(move |result, act, ctx| {
            // `None`: the wind-down came while it waited for a place; it never started.
            let ran = result.is_some();
            act.finished(result.unwrap_or(Err(Halt::Drained)), ran, started, ctx)
        }));
    }

    /// The sync, to run once the gate gives it a place (`None`: wound down while waiting).
    /// The cycle's own future — every step of delivery, 10 KiB in a debug build — is
    /// built on the heap only once the sync has its place: at start every integration's
    /// first sync waits at once (100,000 at 100,000 integrations), and held inline they
    /// made the peak RSS.
    fn gated_sync(&self) -> impl std::future::Future<Output = Option<Result<(), Halt>>> + 'static {
        let (deps, shared, policy) = (self.deps.clone(), self.shared.clone(), self.policy.clone());
        let cycle = {
            let deps = deps.clone();
            async move { Box::pin(run_cycle(deps, shared, policy)).await }
        };
        async move { deps.gate.run(&deps.it.account, &deps.pulse, cycle).await }
    }

    fn finished(
        &mut self,
        result: Result<(), Halt>,
        ran: bool,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        self.syncing = false;
        let gone = matches!(result, Err(Halt::Gone));
        let delay = self.conclude(result, started);
        if gone {
            ctx.stop();
            return;
        }
        if self.deps.pulse.draining() {
            // The shutdown waits for this: the posts that were in flight have been
            // answered, and committed when Splunk took them — or there were none,
            // the sync having waited for a place all along.
            let outcome = if ran {
                WindDown::Finished
            } else {
                WindDown::Idle
            };
            match self.drained.take() {
                Some(tx) => {
                    let _ = tx.send(outcome);
                    ctx.stop();
                }
                // The `Drain` is on its way: it answers this and stops the actor.
                None => self.wound_down = Some(outcome),
            }
            return;
        }
        self.again = false;
        if delay >= self.deps.settings.client.keep_alive {
            // The connection would not be reused after so long: close it now rather
            // than hold a socket Splunk has closed (CLOSE-WAIT) until the next sync.
            if let Ok(client) = &self.deps.client {
                client.close_idle();
            }
        }
        self.shared.borrow_mut().obs.next_sync =
            Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        // Waiting for the next sync is no work in progress: nothing to watch.
        self.deps.pulse.idle();
        self.next = Some(ctx.run_later(delay, |act, ctx| act.sync(ctx)));
    }

    /// Records how a sync ended (status, history, log and metrics) and answers how
    /// long until the next one.
    fn conclude(&mut self, result: Result<(), Halt>, started: Instant) -> Duration {
        let interval = self.deps.settings.interval;
        let shared = self.shared.clone();
        let mut s = shared.borrow_mut();
        s.obs.syncing = false;
        s.obs.progress = None;
        let finished_at = Utc::now();
        let started_at = s.obs.sync_started_at.take().unwrap_or(finished_at);
        s.obs.last_sync = Some(SyncReport {
            started_at,
            finished_at,
            events: s.cycle.events(),
            ok: result.is_ok(),
        });
        s.obs.retry_after_secs = None;
        let error = match &result {
            Ok(()) | Err(Halt::Gone | Halt::Drained) => None,
            Err(Halt::Transient { failure, .. }) => Some((failure, FailureKind::Transient)),
            Err(Halt::Config(f)) => Some((f, FailureKind::Configuration)),
        };
        // A sync cut short by a deletion or a shutdown is not recorded.
        if !matches!(result, Err(Halt::Gone | Halt::Drained)) {
            let d = &self.deps;
            let (cp, tally) = (&s.checkpoint, &s.cycle);
            super::history::record(
                &d.store,
                &d.it,
                cp,
                tally,
                started_at,
                started.elapsed(),
                error,
            );
        }
        match result {
            Ok(()) => {
                s.obs.retries = 0;
                if self.again {
                    Duration::ZERO
                } else {
                    interval.saturating_sub(started.elapsed())
                }
            }
            Err(Halt::Gone | Halt::Drained) => Duration::ZERO,
            Err(Halt::Transient {
                failure,
                retry_after,
            }) => {
                self.failed(&mut s, failure, started);
                s.obs.error_kind = Some(FailureKind::Transient);
                let mut policy = self.policy.borrow_mut();
                s.obs.retry_after_secs =
                    retry_after.map(|d| policy.bounded_retry_after(d).as_secs());
                policy.back_off(s.obs.retries, retry_after)
            }
            Err(Halt::Config(failure)) => {
                // Retrying sooner cannot help until the customer fixes it.
                self.failed(&mut s, failure, started);
                s.obs.error_kind = Some(FailureKind::Configuration);
                interval
            }
        }
    }

    fn failed(&self, s: &mut Shared, failure: Failure, started: Instant) {
        log::warn!(
            "sync integration={} account={} events={} bytes={} duration_ms={} result=failed http_status={:?} code={:?} error={:?} advice={:?}",
            self.deps.it.id,
            self.deps.it.account,
            s.cycle.events(),
            s.cycle.bytes(),
            started.elapsed().as_millis(),
            failure.http_status,
            failure.code,
            clean(&failure.text),
            clean(&failure.advice)
        );
        let m = &self.deps.settings.metrics;
        let labels = &self.deps.labels;
        let code = match (failure.code, failure.http_status) {
            (Some(c), _) => c.to_string(),
            (None, Some(s)) => format!("http_{s}"),
            (None, None) => "transport".into(),
        };
        m.failures
            .get_or_create(&FailureLabels {
                account: labels.account.clone(),
                integration: labels.integration.clone(),
                code,
            })
            .inc();
        if s.obs.retries > 0 {
            m.retries.get_or_create(labels).inc();
        }
        s.obs.state = State::Failing;
        s.obs.last_error = Some(failure);
        s.obs.retries += 1;
    }
}

impl Actor for IntegrationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        match self.deps.store.checkpoint(&self.deps.it.id) {
            Ok(cp) => self.shared.borrow_mut().checkpoint = cp,
            Err(e) => {
                log::error!(
                    "integration {}: cannot read its checkpoint: {e}",
                    self.deps.it.id
                );
                ctx.stop();
                return;
            }
        }
        log::info!(
            "integration {} (account {}) started: delivering {} to {}",
            self.deps.it.id,
            self.deps.it.account,
            self.deps
                .it
                .sources
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("+"),
            clean(&self.deps.it.hec_uri.to_string())
        );
        // A new or re-enabled integration syncs at once.
        self.sync(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.deps.pulse.ended();
        self.supervisor.do_send(Stopped {
            id: self.deps.it.id,
            generation: self.generation,
        });
    }
}

impl Handler<SyncNow> for IntegrationActor {
    type Result = bool;
    fn handle(&mut self, _: SyncNow, ctx: &mut Context<Self>) -> bool {
        self.sync(ctx);
        true
    }
}

impl Handler<Adopt> for IntegrationActor {
    type Result = ();
    fn handle(&mut self, msg: Adopt, _: &mut Context<Self>) {
        // Only what delivery does not use changed (the Supervisor restarts the actor
        // otherwise): the version is all the actor needs to take on.
        self.shared.borrow_mut().obs.config_version = msg.integration.version;
    }
}

impl Handler<Observe> for IntegrationActor {
    type Result = Option<Observation>;
    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Option<Observation> {
        Some(self.shared.borrow().obs.clone())
    }
}

/// Test builds only: panic inside the actor, as a bug would.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Panic;

#[cfg(feature = "test-hooks")]
impl Handler<Panic> for IntegrationActor {
    type Result = ();
    fn handle(&mut self, _: Panic, _: &mut Context<Self>) {
        panic!(
            "forced panic in integration {} (test hook)",
            self.deps.it.id
        );
    }
}

impl Handler<Stop> for IntegrationActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Drain> for IntegrationActor {
    type Result = ResponseFuture<WindDown>;
    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(h) = self.next.take() {
            ctx.cancel_future(h);
        }
        if !self.syncing {
            ctx.stop();
            let outcome = self.wound_down.take().unwrap_or(WindDown::Idle);
            return Box::pin(std::future::ready(outcome));
        }
        // The running sync sees the wind-down on its pulse and ends after the posts
        // in flight; `finished` answers then.
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drained = Some(tx);
        // Dropped unanswered: the actor ended another way (a panic) and its posts with it.
        Box::pin(async move { rx.await.unwrap_or(WindDown::Abandoned) })
    }
}

/// Test builds only: the thread this actor ran its latest sync on.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "Option<String>")]
pub struct SyncThread;

#[cfg(feature = "test-hooks")]
impl Handler<SyncThread> for IntegrationActor {
    type Result = Option<String>;
    fn handle(&mut self, _: SyncThread, _: &mut Context<Self>) -> Option<String> {
        self.synced_on.clone()
    }
}

/// Test builds only: the actor's posts from now on outlive their client's timeout
/// (as a hung connection the timeout misses would), to prove the heartbeat finds it.
#[cfg(feature = "test-hooks")]
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stall;

#[cfg(feature = "test-hooks")]
impl Handler<Stall> for IntegrationActor {
    type Result = ();
    fn handle(&mut self, _: Stall, _: &mut Context<Self>) {
        if let Ok(client) = &self.deps.client {
            client.ignore_timeout();
        }
    }
}

/// Counts the backlog at the start of a cycle, so a catch-up reports done/total.
fn start_progress(deps: &Deps, shared: &Observed) -> Result<(), Halt> {
    let cp = shared.borrow().checkpoint.clone();
    let total = deps.store.backlog(&deps.it, &cp)?.events();
    let mut s = shared.borrow_mut();
    s.cycle = Tally::default();
    // The first batch of a catch-up is logged at once, then every `progress_log_secs`.
    s.progress_logged = Instant::now()
        .checked_sub(deps.settings.timing.progress_log_secs.get())
        .unwrap_or_else(Instant::now);
    s.obs.progress = (total > 0).then(|| Progress {
        done: 0,
        total,
        started_at: Utc::now(),
    });
    Ok(())
}

/// One sync: the failed batch first, then the audit log, jobs changed since the
/// checkpoint, and last every job still in progress — each delivered by the one
/// delivery loop, which moves the checkpoint in order as Splunk takes them.
async fn run_cycle(
    deps: Rc<Deps>,
    shared: Rc<Observed>,
    policy: Rc<RefCell<Policy>>,
) -> Result<(), Halt> {
    let started = Instant::now();
    if let Some(reason) = deps.store.fault() {
        // A delivery now could not move its checkpoint: it would only be sent again.
        return Err(StoreError::Unavailable(reason).into());
    }
    // Without a usable client the failed batch stays pending, untouched.
    let client = deps.client.as_ref().map_err(|f| Halt::Config(f.clone()))?;
    start_progress(&deps, &shared)?;
    let pass = |source| pass(&deps, client, &shared, &policy, source);
    // Jobs changed after this point are sent as changed in this cycle (or the next),
    // so the running-jobs pass skips them instead of sending them twice.
    let jobs_at_start = shared.borrow().checkpoint.job_seq;
    shared.borrow_mut().warning = None;
    // A leftover batch of running jobs is not re-sent: this cycle's running pass
    // sends the same jobs with their current progress.
    let pending = shared.borrow_mut().pending.take();
    if let Some(batch) = pending.filter(|b| b.kind != BatchKind::JobsRunning) {
        pass(delivery::Source::Once(Some(batch))).await?;
    }
    if deps.it.wants(Source::Audit) {
        let after = shared.borrow().checkpoint.audit_seq;
        pass(delivery::Source::Audit { after }).await?;
    }
    if deps.it.wants(Source::Jobs) {
        let after = shared.borrow().checkpoint.job_seq;
        pass(delivery::Source::ChangedJobs { after }).await?;
        pass(delivery::Source::RunningJobs {
            up_to: jobs_at_start,
            after_job: None,
            done: false,
        })
        .await?;
    }
    let cycle = shared.borrow().cycle;
    log::info!(
        "sync integration={} account={} events={} bytes={} duration_ms={} result=ok",
        deps.it.id,
        deps.it.account,
        cycle.events(),
        cycle.bytes(),
        started.elapsed().as_millis()
    );
    if let Some(w) = shared.borrow().warning.clone() {
        return Err(Halt::Config(w));
    }
    Ok(())
}

/// Delivers everything one source has after `source`'s cursor; what was not
/// committed when delivery stopped stays pending, to be re-sent first.
async fn pass(
    deps: &Deps,
    client: &HecClient,
    shared: &Observed,
    policy: &RefCell<Policy>,
    source: delivery::Source,
) -> Result<(), Halt> {
    let envelope = Envelope {
        host: deps.settings.host.clone(),
        index: deps.it.index.clone(),
    };
    let mut feed = CollectorFeed {
        audit: &deps.audit,
        jobs: &deps.jobs,
        account: &deps.it.account,
        envelope: &envelope,
        window: None,
        source,
        ahead: None,
    };
    let mut ledger = Live { deps, shared };
    delivery::deliver(client, policy, &mut feed, &mut ledger, &deps.pulse)
        .await
        .map_err(|stopped| {
            shared.borrow_mut().pending = stopped.pending;
            stopped.halt
        })
}

/// Live delivery's side of a post: claims against retention, the checkpoint and
/// dead letters, metrics, and what the status shows.
struct Live<'a> {
    deps: &'a Deps,
    shared: &'a Observed,
}

impl Ledger for Live<'_> {
    fn claim(&mut self, part: &Batch) -> Result<Claimed, Halt> {
        claim(self.deps, part)
    }

    async fn commit(
        &mut self,
        part: &Batch,
        upto: usize,
        refused: Option<Failure>,
    ) -> Result<bool, Halt> {
        commit(self.deps, self.shared, part, upto, refused).await
    }

    fn posting(&mut self) {
        self.shared.borrow_mut().obs.last_attempt = Some(Utc::now());
    }

    fn posted(&mut self, took: Duration) {
        self.deps
            .settings
            .metrics
            .post_seconds
            .get_or_create(&self.deps.labels)
            .observe(took.as_secs_f64());
    }

    fn warn(&mut self, warning: Failure) {
        self.shared.borrow_mut().warning = Some(warning);
    }

    fn slowed(&mut self, slow_down: Option<&SlowDown>) {
        let mut s = self.shared.borrow_mut();
        s.obs.slow_down = match (slow_down, s.obs.slow_down.take()) {
            (None, _) => None,
            (Some(sd), before) => Some(SlowDownView {
                code: sd.reason.code,
                text: sd.reason.text.clone(),
                advice: sd.reason.advice.clone(),
                pause_ms: sd.pause.as_millis() as u64,
                since: before.map_or_else(Utc::now, |b| b.since),
            }),
        };
    }
}

/// Claims a part's events before it is posted. A batch held through failures can
/// outlive the retention: what the sweep removed meanwhile was counted in this
/// integration's gap, so it is dropped from the batch, never sent — the gap in the
/// status stays exactly what Splunk never received. (A job snapshot replaced by a
/// newer one is dropped too: the newer one is sent.) Running jobs need no claim:
/// retention keeps them.
fn claim(deps: &Deps, part: &Batch) -> Result<Claimed, Halt> {
    // On PostgreSQL a node that lost the integration's shard must not post at all.
    deps.store.may_post(&deps.it.id)?;
    if part.kind == BatchKind::JobsRunning {
        return Ok(Claimed::Held(None));
    }
    let seqs: Vec<u64> = part.items.iter().map(|i| i.seq).collect();
    let (gone, claim) = deps
        .store
        .claim_for_post(&deps.it.account, part.source(), &seqs)?;
    let dropped = gone.iter().filter(|g| **g).count();
    if dropped == 0 {
        return Ok(Claimed::Held(claim));
    }
    log::info!(
        "integration {} (account {}): {dropped} {} events of the batch held for re-sending are no longer stored (retention removed them and counted them in the gap, or a newer job snapshot replaced them); not sent",
        deps.it.id,
        deps.it.account,
        part.source().as_str()
    );
    Ok(Claimed::Gone(gone))
}

/// The dead letter of event `upto - 1` of `part`, which Splunk refused alone for `reason`.
fn dead_letter(
    deps: &Deps,
    part: &Batch,
    upto: usize,
    reason: Failure,
) -> Result<DeadLetter, Halt> {
    let bytes = part.event(upto - 1);
    let event = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    log::warn!(
        "integration {} (account {}): Splunk refused a {} event (HTTP {:?} code {:?}: {}); kept in dead letters",
        deps.it.id,
        deps.it.account,
        part.source().as_str(),
        reason.http_status,
        reason.code,
        clean(&reason.text)
    );
    Ok(DeadLetter {
        id: deps.store.next_id()?,
        at: Utc::now(),
        source: part.source(),
        seq: part.items[upto - 1].seq,
        reason,
        event,
    })
}

/// Counts `done` more events of a catch-up, and logs its progress every
/// `progress_log_secs`.
fn advance_progress(deps: &Deps, s: &mut Shared, done: u64) {
    let logged = s.progress_logged;
    let Some(p) = &mut s.obs.progress else {
        return;
    };
    p.done = (p.done + done).min(p.total);
    if logged.elapsed() >= deps.settings.timing.progress_log_secs.get() {
        let (rate, eta) = p.rate_and_eta();
        log::info!(
            "catch-up integration={} account={} done={} total={} rate={:.0}/s eta_secs={}",
            deps.it.id,
            deps.it.account,
            p.done,
            p.total,
            rate,
            eta.map_or("unknown".into(), |e| format!("{e:.0}"))
        );
        s.progress_logged = Instant::now();
    }
}

/// Records that the first `upto` events of `part` are done — delivered, or the last one
/// dead-lettered with `dead` — moving the checkpoint (the one place that does) and
/// making it durable before the next commit, so a crash repeats at most the posts in
/// flight. Answers whether a new dead letter was kept.
async fn commit(
    deps: &Deps,
    shared: &Observed,
    part: &Batch,
    upto: usize,
    dead: Option<Failure>,
) -> Result<bool, Halt> {
    let last = part.items[upto - 1];
    let delivered = (upto - usize::from(dead.is_some())) as u64;
    let mut cp = shared.borrow().checkpoint.clone();
    match part.kind {
        BatchKind::Audit => {
            cp.audit_seq = last.seq;
            cp.delivered_audit += delivered;
        }
        BatchKind::JobsChanged => {
            cp.job_seq = last.seq;
            cp.delivered_jobs += delivered;
        }
        BatchKind::JobsRunning => cp.delivered_jobs += delivered,
    }
    if delivered > 0 {
        cp.last_success = Some(Utc::now());
    }
    let mut letters = Vec::new();
    let already_kept =
        part.kind == BatchKind::JobsRunning && shared.borrow().dead_running.contains(&last.seq);
    let dead = dead.filter(|_| !already_kept);
    if let Some(reason) = dead {
        letters.push(dead_letter(deps, part, upto, reason)?);
    }
    // The events this commit delivers (a running job's snapshot moves no cursor).
    let posted = match part.kind {
        BatchKind::JobsRunning => Vec::new(),
        _ => part.items[..upto].iter().map(|i| i.seq).collect(),
    };
    let cp = deps.store.commit_delivered(
        &deps.it.account,
        &deps.it.id,
        &cp,
        &letters,
        (part.source(), posted),
    )?;
    deps.store.flush().await?;
    let m = &deps.settings.metrics;
    let labels = deps.labels.with_source(part.source());
    // The refused event's bytes are not delivered ones.
    let bytes = part.slice(0..delivered as usize).body.len();
    m.events_delivered.get_or_create(&labels).inc_by(delivered);
    m.bytes_delivered
        .get_or_create(&labels)
        .inc_by(bytes as u64);
    if !letters.is_empty() {
        // Created with the first dead letter: a series of zeros per integration
        // would be held by every idle integration.
        m.dead_lettered
            .get_or_create(&deps.labels)
            .inc_by(letters.len() as u64);
    }
    let mut s = shared.borrow_mut();
    s.checkpoint = cp;
    s.cycle
        .add(part.source(), delivered, bytes as u64, letters.len() as u64);
    advance_progress(deps, &mut s, upto as u64);
    if let Some(letter) = letters.first() {
        if part.kind == BatchKind::JobsRunning {
            s.dead_running.insert(letter.seq);
        }
    }
    if s.warning.is_none() {
        s.obs.state = State::Healthy;
        s.obs.last_error = None;
        s.obs.retries = 0;
        s.obs.retry_after_secs = None;
    }
    Ok(!letters.is_empty())
}

#[cfg(test)]
mod tests {
    use super::super::gate::GateGauges;
    use super::*;
    use crate::model::AccountId;

    /// Stands in for the Supervisor: told when the actor ends.
    struct Told;
    impl Actor for Told {
        type Context = Context<Self>;
    }
    impl Handler<Stopped> for Told {
        type Result = ();
        fn handle(&mut self, _: Stopped, _: &mut Context<Self>) {}
    }

    /// What an actor is built from: an audit integration of account `acme` in a fresh
    /// store (kept while the `TempDir` lives), the shipped config's settings, collectors.
    struct Parts {
        _dir: tempfile::TempDir,
        it: Integration,
        store: Store,
        settings: DeliverySettings,
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
    }

    fn parts() -> Parts {
        let dir = tempfile::tempdir().unwrap();
        let sled = crate::store::SledStore::open(dir.path()).unwrap();
        let acme = AccountId::parse("acme").unwrap();
        let it = crate::store::testing::integration(&sled, &acme, &["audit"]);
        let store = Store::Sled(sled);
        let config = crate::config::Config::from_toml(
            include_str!("../../config/siemsync.toml"),
            std::path::Path::new("siemsync.toml"),
            |_| None,
        )
        .unwrap();
        let settings = DeliverySettings::of(&config, std::sync::Arc::new(Metrics::new()));
        let s = store.clone();
        let audit = SyncArbiter::start(1, move || AuditCollector::new(s.clone()));
        let s = store.clone();
        let jobs = SyncArbiter::start(1, move || JobCollector::new(s.clone()));
        Parts {
            _dir: dir,
            it,
            store,
            settings,
            audit,
            jobs,
        }
    }

    /// What the Supervisor (here a stand-in) hands an actor it starts.
    fn supervised(gate: SyncGate, pulse: super::super::heartbeat::Pulse) -> Supervised {
        Supervised {
            generation: 1,
            supervisor: Told.start().recipient(),
            pulse,
            gate,
        }
    }

    #[actix_rt::test]
    async fn an_idle_integration_holds_under_4_kib_with_its_series() {
        // Every integration's actor lives for good, and its metric series from its
        // first delivery on: at 100,000 integrations each KiB is 100 MiB of RSS.
        // Measured by the counting allocator of test builds (`crate::footprint`): the
        // actor as the Supervisor builds it (the integration and the settings shared
        // with it), started (context and mailbox), with the series a delivery makes.
        // Before the sharing: 2,349 + 848 bytes for the actor (its own copies of the
        // integration and the settings), 1,874 for the series (their own label strings
        // each, and a dead-letter counter at zero) — 5,071 in all.
        use crate::footprint::heap_of;
        let p = parts();
        let (it, settings) = (Arc::new(p.it), Arc::new(p.settings));
        // The TLS config of its trust setting is built once for all integrations.
        let _shared_tls = HecClient::new(&it, settings.client);
        let gate = SyncGate::new(1, Duration::from_secs(3600), GateGauges::default());
        let (_heartbeat, pulse) = super::super::heartbeat::pair(settings.longest_step());
        let supervised = supervised(gate, pulse);
        let (built, actor) = heap_of(|| {
            IntegrationActor::new(
                it.clone(),
                p.store.clone(),
                p.audit.clone(),
                p.jobs.clone(),
                settings.clone(),
                supervised,
            )
        });
        let labels = actor.deps.labels.clone();
        let (started, _addr) = heap_of(|| actor.start());
        let m = &settings.metrics;
        let (series, ()) = heap_of(|| {
            let audit = labels.with_source(Source::Audit);
            m.events_delivered.get_or_create(&audit).inc_by(10);
            m.bytes_delivered.get_or_create(&audit).inc_by(1000);
            m.post_seconds.get_or_create(&labels).observe(0.01);
        });
        let all = built + started + series;
        assert!(
            all <= 4096,
            "an idle integration holds {all} bytes: {built} built, {started} started, {series} in its series"
        );
    }

    #[actix_rt::test]
    async fn a_sync_waiting_for_its_place_holds_under_a_kib() {
        // At start every integration's first sync waits for a place at once: 100,000
        // of them at 100,000 integrations, so what each holds meanwhile is RSS.
        let p = parts();
        let gate = SyncGate::new(1, Duration::from_secs(3600), GateGauges::default());
        let (_heartbeat, pulse) = super::super::heartbeat::pair(p.settings.longest_step());
        let supervised = supervised(gate, pulse);
        let actor = IntegrationActor::new(
            Arc::new(p.it),
            p.store,
            p.audit,
            p.jobs,
            Arc::new(p.settings),
            supervised,
        );
        let waiting = actor.gated_sync();
        let size = std::mem::size_of_val(&waiting);
        assert!(
            size <= 1024,
            "a sync waiting for its place holds {size} bytes"
        );
    }

    /// An actor whose first sync waits for the gate's one place, held by another
    /// account's sync that never ends; once it waits.
    async fn an_actor_waiting_for_a_place() -> (
        Addr<IntegrationActor>,
        super::super::heartbeat::Heartbeat,
        GateGauges,
        tempfile::TempDir,
    ) {
        let Parts {
            _dir,
            it,
            store,
            settings,
            audit,
            jobs,
        } = parts();
        let gauges = GateGauges::default();
        let gate = SyncGate::new(1, Duration::from_secs(3600), gauges.clone());
        let (_other, other_pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        let g = gate.clone();
        actix_rt::spawn(async move {
            let _other = _other;
            let other = AccountId::parse("other").unwrap();
            g.run(&other, &other_pulse, std::future::pending()).await
        });
        let (heartbeat, pulse) = super::super::heartbeat::pair(settings.longest_step());
        let actor = IntegrationActor::new(
            Arc::new(it),
            store,
            audit,
            jobs,
            Arc::new(settings),
            supervised(gate, pulse),
        )
        .start();
        let t0 = Instant::now();
        while gauges.waiting.get() != 1 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the sync never waited"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        (actor, heartbeat, gauges, _dir)
    }

    #[actix_rt::test]
    async fn a_sync_still_waiting_for_a_place_at_shutdown_winds_down_idle() {
        let (actor, heartbeat, gauges, _dir) = an_actor_waiting_for_a_place().await;
        heartbeat.drain();
        let outcome = actor.send(Drain).await.unwrap();
        assert!(
            matches!(outcome, WindDown::Idle),
            "it never started a sync, yet said {outcome:?}"
        );
        assert_eq!(gauges.waiting.get(), 0, "its wait was given up");
    }

    #[actix_rt::test]
    async fn a_sync_that_ends_on_the_wind_down_before_the_drain_arrives_still_answers_it() {
        // In the service the actor runs on another thread than the Supervisor, which
        // asks on the heartbeat first and sends `Drain` after: the sync can see the
        // wind-down and end in between. The `Drain` must still be answered — dropped
        // unanswered, it reads as a post abandoned (CI failed on that once).
        let (actor, heartbeat, gauges, _dir) = an_actor_waiting_for_a_place().await;
        let t0 = Instant::now();
        heartbeat.drain();
        // The sync gives its wait up and ends before the `Drain` is sent.
        while gauges.waiting.get() != 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the sync never ended"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        let outcome = actor.send(Drain).await;
        assert!(
            matches!(outcome, Ok(WindDown::Idle)),
            "the Drain after the sync ended was answered {outcome:?}"
        );
        let t0 = Instant::now();
        while heartbeat.alive() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the actor did not stop"
            );
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn an_actor_marks_a_change_of_what_it_shows_and_nothing_else() {
        // The status publisher asks only the actors so marked: one that changed and
        // is not marked would keep showing the other nodes its old status.
        let (actor, heartbeat, _gauges, _dir) = an_actor_waiting_for_a_place().await;
        assert!(heartbeat.take_changed(), "a new actor, its sync begun");
        assert!(
            !heartbeat.take_changed(),
            "asked once, clear until it changes"
        );
        let before = actor
            .send(Observe {
                id: uuid::Uuid::nil(),
            })
            .await
            .unwrap()
            .unwrap();
        assert!(!heartbeat.take_changed(), "being looked at is no change");
        let mut it = parts().it;
        it.version = before.config_version + 1;
        actor.send(Adopt { integration: it }).await.unwrap();
        assert!(heartbeat.take_changed(), "a new version adopted");
        let seen = actor
            .send(Observe {
                id: uuid::Uuid::nil(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen.config_version, before.config_version + 1);
        assert!(!heartbeat.take_changed());
    }
}
