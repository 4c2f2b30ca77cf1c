//! IntegrationActor: owns one integration — its timer, checkpoint, HEC client and
//! the batch that failed. One per integration, so one customer's slow or broken
//! Splunk only ever delays that customer's own posts.

use super::audit_collector::AuditCollector;
use super::job_collector::JobCollector;
use super::messages::*;
use crate::hec::client::{AckAnswer, ClientSettings, HecClient};
use crate::hec::encode::Envelope;
use crate::hec::response::{Failure, FailureKind, Outcome};
use crate::logsafe::clean;
use crate::metrics::{FailureLabels, IntegrationLabels, Metrics};
use crate::model::{Integration, Source};
use crate::store::{Checkpoint, DeadLetter, PostClaim, Store, StoreError};
use actix::prelude::*;
use chrono::Utc;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What every integration actor needs from the service's config.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub host: String,
    pub max_batch_bytes: usize,
    pub interval: Duration,
    pub client: ClientSettings,
    pub metrics: std::sync::Arc<Metrics>,
}

/// Handles a sync cycle needs; shared by the actor and the cycle future.
struct Deps {
    it: Integration,
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    client: Result<HecClient, Failure>,
    settings: DeliverySettings,
}

/// State the running cycle updates while the actor answers status questions.
struct Shared {
    checkpoint: Checkpoint,
    /// The batch that failed: re-sent, unchanged, before anything newer.
    pending: Option<Batch>,
    /// The largest post this Splunk accepts, learnt from 413 answers.
    max_post_bytes: usize,
    /// Set when Splunk takes events but says something needs fixing (no ack id
    /// although acknowledgement is on): delivery goes on, the status shows it.
    warning: Option<Failure>,
    /// The largest post Splunk accepted since the actor started.
    largest_accepted: usize,
    /// Events refused one by one with nothing accepted in between; past a few, the
    /// cause is not the events (a proxy, a token's settings) and delivery stops
    /// instead of filling the dead letters.
    refused_in_a_row: u32,
    /// Events and bytes delivered in the current cycle, for its log line.
    cycle: (usize, usize),
    /// The current cycle's events and bytes per source, for its history record.
    tally: super::history::Tally,
    /// When catch-up progress was last logged (at most every 10 s).
    progress_logged: Instant,
    /// Running-job snapshots already dead-lettered: the running pass moves no cursor,
    /// so the same refused snapshot comes back every tick.
    dead_running: std::collections::HashSet<u64>,
    obs: Observation,
}

enum CycleError {
    /// Splunk or the network is briefly unable: retry with back-off.
    Transient(Failure),
    /// The customer must fix something: retry once per interval.
    Config(Failure),
    /// The integration was deleted while a post was in flight.
    Gone,
}

/// Counts a live actor in `siemsync_integration_actors` from its creation until it is
/// dropped, however it ends (a panic too).
struct Alive(prometheus_client::metrics::gauge::Gauge);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub struct IntegrationActor {
    _alive: Alive,
    deps: Rc<Deps>,
    shared: Rc<RefCell<Shared>>,
    generation: u64,
    supervisor: Recipient<Stopped>,
    next: Option<SpawnHandle>,
    syncing: bool,
    /// A sync was asked for while one ran: run again right after.
    again: bool,
    rng: u64,
}

impl IntegrationActor {
    pub fn new(
        it: Integration,
        generation: u64,
        store: Store,
        audit: Addr<AuditCollector>,
        jobs: Addr<JobCollector>,
        settings: DeliverySettings,
        supervisor: Recipient<Stopped>,
    ) -> IntegrationActor {
        let client = HecClient::new(&it, settings.client);
        let seed = it.id.as_u128() as u64 ^ (it.id.as_u128() >> 64) as u64 ^ generation;
        let alive = settings.metrics.integration_actors.clone();
        alive.inc();
        IntegrationActor {
            _alive: Alive(alive),
            shared: Rc::new(RefCell::new(Shared {
                checkpoint: Checkpoint::default(),
                pending: None,
                max_post_bytes: settings.max_batch_bytes,
                warning: None,
                largest_accepted: 0,
                cycle: (0, 0),
                tally: Default::default(),
                progress_logged: Instant::now(),
                refused_in_a_row: 0,
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
                    sync_started_at: None,
                    last_sync: None,
                },
            })),
            deps: Rc::new(Deps {
                it,
                store,
                audit,
                jobs,
                client,
                settings,
            }),
            generation,
            supervisor,
            next: None,
            syncing: false,
            again: false,
            rng: seed | 1,
        }
    }

    fn sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing {
            self.again = true;
            return;
        }
        if let Some(h) = self.next.take() {
            ctx.cancel_future(h);
        }
        self.syncing = true;
        {
            let mut s = self.shared.borrow_mut();
            s.obs.syncing = true;
            s.obs.next_sync = None;
            s.obs.sync_started_at = Some(Utc::now());
            s.cycle = (0, 0);
            s.tally = Default::default();
        }
        let started = Instant::now();
        let cycle = run_cycle(self.deps.clone(), self.shared.clone());
        ctx.spawn(
            cycle
                .into_actor(self)
                .map(move |result, act, ctx| act.finished(result, started, ctx)),
        );
    }

    fn finished(
        &mut self,
        result: Result<(), CycleError>,
        started: Instant,
        ctx: &mut Context<Self>,
    ) {
        self.syncing = false;
        let interval = self.deps.settings.interval;
        let shared = self.shared.clone();
        let delay = {
            let mut s = shared.borrow_mut();
            s.obs.syncing = false;
            s.obs.progress = None;
            let finished_at = Utc::now();
            let started_at = s.obs.sync_started_at.take().unwrap_or(finished_at);
            s.obs.last_sync = Some(SyncReport {
                started_at,
                finished_at,
                events: s.cycle.0 as u64,
                ok: result.is_ok(),
            });
            let error = match &result {
                Ok(()) | Err(CycleError::Gone) => None,
                Err(CycleError::Transient(f)) => Some((f, FailureKind::Transient)),
                Err(CycleError::Config(f)) => Some((f, FailureKind::Configuration)),
            };
            if !matches!(result, Err(CycleError::Gone)) {
                let d = &self.deps;
                let (cp, tally) = (&s.checkpoint, &s.tally);
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
                Err(CycleError::Gone) => {
                    drop(s);
                    ctx.stop();
                    return;
                }
                Err(CycleError::Transient(failure)) => {
                    self.failed(&mut s, failure, started);
                    s.obs.error_kind = Some(FailureKind::Transient);
                    self.backoff(s.obs.retries, interval)
                }
                Err(CycleError::Config(failure)) => {
                    // Retrying sooner cannot help until the customer fixes it.
                    self.failed(&mut s, failure, started);
                    s.obs.error_kind = Some(FailureKind::Configuration);
                    interval
                }
            }
        };
        self.again = false;
        self.shared.borrow_mut().obs.next_sync =
            Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        self.next = Some(ctx.run_later(delay, |act, ctx| act.sync(ctx)));
    }

    fn failed(&self, s: &mut Shared, failure: Failure, started: Instant) {
        log::warn!(
            "sync integration={} account={} events={} bytes={} duration_ms={} result=failed http_status={:?} code={:?} error={:?} advice={:?}",
            self.deps.it.id,
            self.deps.it.account,
            s.cycle.0,
            s.cycle.1,
            started.elapsed().as_millis(),
            failure.http_status,
            failure.code,
            clean(&failure.text),
            clean(&failure.advice)
        );
        let m = &self.deps.settings.metrics;
        let labels = IntegrationLabels::of(&self.deps.it);
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
            m.retries.get_or_create(&labels).inc();
        }
        s.obs.state = State::Failing;
        s.obs.last_error = Some(failure);
        s.obs.retries += 1;
    }

    /// Exponential back-off from one second, capped by the interval, with jitter so
    /// that many integrations failing together do not retry together.
    fn backoff(&mut self, retries: u32, interval: Duration) -> Duration {
        let base = Duration::from_secs(1u64 << retries.saturating_sub(1).min(16)).min(interval);
        // xorshift64: deterministic per integration, no shared RNG.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.5 + (self.rng % 1000) as f64 / 2000.0;
        base.mul_f64(fraction)
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
            clean(&self.deps.it.hec_uri().to_string())
        );
        // A new or re-enabled integration syncs at once.
        self.sync(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
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

fn internal(text: String) -> CycleError {
    CycleError::Transient(Failure {
        http_status: None,
        code: None,
        text,
        advice: "siemsync could not read or write its own store; it retries. Tell the operator if this persists.".into(),
    })
}

impl From<StoreError> for CycleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Gone => CycleError::Gone,
            other => internal(other.to_string()),
        }
    }
}

impl From<MailboxError> for CycleError {
    fn from(e: MailboxError) -> Self {
        internal(format!("collector unavailable: {e}"))
    }
}

/// Counts the backlog at the start of a cycle, so a catch-up reports done/total.
fn start_progress(deps: &Deps, shared: &RefCell<Shared>) -> Result<(), CycleError> {
    let cp = shared.borrow().checkpoint.clone();
    let total = deps.store.backlog(&deps.it, &cp)?.events();
    let mut s = shared.borrow_mut();
    s.cycle = (0, 0);
    // The first batch of a catch-up is logged at once, then every 10 s.
    s.progress_logged = Instant::now()
        .checked_sub(Duration::from_secs(10))
        .unwrap_or_else(Instant::now);
    s.obs.progress = (total > 0).then(|| Progress {
        done: 0,
        total,
        started_at: Utc::now(),
    });
    Ok(())
}

/// Events refused one by one, with nothing accepted between, before delivery stops
/// and says the cause is elsewhere.
const MAX_REFUSED_IN_A_ROW: u32 = 5;

/// One sync: the failed batch first, then the audit log, jobs changed since the
/// checkpoint, and last every job still in progress — each batch delivered, and the
/// checkpoint moved, before the next is read.
async fn run_cycle(deps: Rc<Deps>, shared: Rc<RefCell<Shared>>) -> Result<(), CycleError> {
    let started = Instant::now();
    if let Some(reason) = deps.store.fault() {
        // A delivery now could not move its checkpoint: it would only be sent again.
        return Err(StoreError::Unavailable(reason).into());
    }
    start_progress(&deps, &shared)?;
    // Jobs changed after this point are sent as changed in this cycle (or the next),
    // so the running-jobs pass skips them instead of sending them twice.
    let jobs_at_start = shared.borrow().checkpoint.job_seq;
    let request = || BatchRequest {
        account: deps.it.account.clone(),
        envelope: Envelope {
            host: deps.settings.host.clone(),
            index: deps.it.index.clone(),
        },
        upload_time: Utc::now(),
        max_bytes: shared.borrow().max_post_bytes,
    };
    shared.borrow_mut().warning = None;
    // A leftover batch of running jobs is not re-sent: this cycle's running pass
    // sends the same jobs with their current progress.
    let pending = shared.borrow_mut().pending.take();
    if let Some(batch) = pending.filter(|b| b.kind != BatchKind::JobsRunning) {
        deliver(&deps, &shared, batch).await?;
    }
    if deps.it.wants(Source::Audit) {
        loop {
            let after = shared.borrow().checkpoint.audit_seq;
            let batch = deps
                .audit
                .send(CollectAudit {
                    request: request(),
                    after,
                    window: None,
                })
                .await??;
            if batch.is_empty() {
                break;
            }
            deliver(&deps, &shared, batch).await?;
        }
    }
    if deps.it.wants(Source::Jobs) {
        loop {
            let after = shared.borrow().checkpoint.job_seq;
            let batch = deps
                .jobs
                .send(CollectChangedJobs {
                    request: request(),
                    after,
                    window: None,
                })
                .await??;
            if batch.is_empty() {
                break;
            }
            deliver(&deps, &shared, batch).await?;
        }
        let mut after_job = None;
        loop {
            let batch = deps
                .jobs
                .send(CollectRunningJobs {
                    request: request(),
                    up_to: jobs_at_start,
                    after_job: after_job.clone(),
                })
                .await??;
            if batch.is_empty() {
                break;
            }
            let more = batch.more;
            after_job = batch.last_job.clone();
            deliver(&deps, &shared, batch).await?;
            if !more {
                break;
            }
        }
    }
    log::info!(
        "sync integration={} account={} events={} bytes={} duration_ms={} result=ok",
        deps.it.id,
        deps.it.account,
        shared.borrow().cycle.0,
        shared.borrow().cycle.1,
        started.elapsed().as_millis()
    );
    if let Some(w) = shared.borrow().warning.clone() {
        return Err(CycleError::Config(w));
    }
    Ok(())
}

/// Delivers a batch in as many posts as Splunk needs, never losing an event:
/// a 413 halves the post size (remembered), an event Splunk refuses as bad data
/// goes to the dead letters while the others go on, and whatever is left when
/// Splunk stops answering stays pending, to be re-sent first.
async fn deliver(deps: &Deps, shared: &RefCell<Shared>, batch: Batch) -> Result<(), CycleError> {
    let client = match &deps.client {
        Ok(c) => c,
        Err(failure) => {
            shared.borrow_mut().pending = Some(batch);
            return Err(CycleError::Config(failure.clone()));
        }
    };
    let mut rest = batch;
    // While isolating a bad event that Splunk did not point at: post at most this many.
    let mut probe: Option<usize> = None;
    while !rest.is_empty() {
        let max = shared.borrow().max_post_bytes;
        let n = rest.fitting(max).min(probe.unwrap_or(usize::MAX));
        let part = rest.slice(0..n);
        // Held until the checkpoint moved past the part (or the post failed).
        let _claim = match claim(deps, &part)? {
            Claimed::Held(claim) => claim,
            Claimed::Gone(gone) => {
                rest = rest.without(&gone);
                continue;
            }
        };
        {
            let mut s = shared.borrow_mut();
            s.pending = Some(rest.clone());
            s.obs.last_attempt = Some(Utc::now());
        }
        let posted = Instant::now();
        let outcome = match client.post_events(part.body.clone()).await {
            Outcome::Delivered { ack_id: Some(id) } if client.acknowledges() => {
                wait_for_ack(client, id, deps.settings.client).await
            }
            Outcome::Delivered { ack_id: None } if client.acknowledges() => {
                shared.borrow_mut().warning = Some(Failure {
                    http_status: Some(200),
                    code: Some(14),
                    text: "Splunk returned no ackId".into(),
                    advice: "Indexer acknowledgement is off on this token: turn it on in Splunk or turn it off here. Events are delivered without confirmation meanwhile.".into(),
                });
                Outcome::Delivered { ack_id: None }
            }
            other => other,
        };
        deps.settings
            .metrics
            .post_seconds
            .get_or_create(&IntegrationLabels::of(&deps.it))
            .observe(posted.elapsed().as_secs_f64());
        let outcome = match outcome {
            // A lone event refused as too large although Splunk took a post at least as
            // large before: the limit is not about this event.
            Outcome::TooLarge(f) if n == 1 && part.body.len() <= shared.borrow().largest_accepted => {
                Outcome::Config(Failure {
                    advice: format!(
                        "Splunk refused a {}-byte post although it accepted {} bytes before: its max_content_length was lowered, or a proxy in between limits request bodies.",
                        part.body.len(),
                        shared.borrow().largest_accepted
                    ),
                    ..f
                })
            }
            o => o,
        };
        let refuses_one_alone = match &outcome {
            Outcome::TooLarge(_) => n == 1,
            Outcome::Data {
                invalid_event: Some(i),
                ..
            } if *i < n => *i == 0,
            Outcome::Data { .. } => n == 1,
            _ => false,
        };
        if refuses_one_alone && shared.borrow().refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
            let f = outcome.failure().cloned().unwrap_or_default();
            shared.borrow_mut().pending = Some(rest);
            return Err(CycleError::Config(Failure {
                advice: format!(
                    "Splunk refuses every event it is sent, one after another ({}); this is not about the events: check that the token's source type is _json and that no proxy alters the posts. The events are kept and sent once Splunk takes them.",
                    f.text
                ),
                ..f
            }));
        }
        let done = match outcome {
            Outcome::Delivered { .. } => {
                probe = None;
                commit(deps, shared, &part, n, None).await?;
                let mut s = shared.borrow_mut();
                s.largest_accepted = s.largest_accepted.max(part.body.len());
                n
            }
            Outcome::TooLarge(failure) if n == 1 => {
                let failure = Failure {
                    advice: format!(
                        "This event alone ({} bytes) is larger than Splunk accepts (max_content_length); it is kept in the dead letters.",
                        part.body.len()
                    ),
                    ..failure
                };
                commit(deps, shared, &part, 1, Some(failure)).await?;
                1
            }
            Outcome::TooLarge(_) => {
                let smaller = (part.body.len() / 2).max(1);
                log::info!(
                    "integration {}: Splunk took no {}-byte post; trying {} bytes",
                    deps.it.id,
                    part.body.len(),
                    smaller
                );
                shared.borrow_mut().max_post_bytes = smaller;
                0
            }
            Outcome::Data {
                failure,
                invalid_event: Some(i),
            } if i < n => {
                // Splunk indexed the events before i; event i is bad; resend after it.
                probe = None;
                commit(deps, shared, &part, i + 1, Some(failure)).await?;
                i + 1
            }
            Outcome::Data { failure, .. } if n == 1 => {
                commit(deps, shared, &part, 1, Some(failure)).await?;
                1
            }
            Outcome::Data { .. } => {
                probe = Some(n / 2);
                0
            }
            Outcome::Transient { failure, accepted } => {
                let taken = accepted.filter(|&i| i > 0 && i < n).unwrap_or(0);
                if taken > 0 {
                    commit(deps, shared, &part, taken, None).await?;
                    rest = rest.slice(taken..rest.len());
                }
                shared.borrow_mut().pending = Some(rest);
                return Err(CycleError::Transient(failure));
            }
            Outcome::Config(failure) => {
                shared.borrow_mut().pending = Some(rest);
                return Err(CycleError::Config(failure));
            }
        };
        if done > 0 {
            rest = rest.slice(done..rest.len());
        }
    }
    shared.borrow_mut().pending = None;
    Ok(())
}

enum Claimed {
    /// Every event of the part is still stored; retention leaves them while this lives.
    Held(Option<PostClaim>),
    /// Which events of the part are no longer stored.
    Gone(Vec<bool>),
}

/// Claims a part's events before it is posted. A batch held through failures can
/// outlive the retention: what the sweep removed meanwhile was counted in this
/// integration's gap, so it is dropped from the batch, never sent — the gap in the
/// status stays exactly what Splunk never received. (A job snapshot replaced by a
/// newer one is dropped too: the newer one is sent.) Running jobs need no claim:
/// retention keeps them.
fn claim(deps: &Deps, part: &Batch) -> Result<Claimed, CycleError> {
    if part.kind == BatchKind::JobsRunning {
        return Ok(Claimed::Held(None));
    }
    let seqs: Vec<u64> = part.items.iter().map(|i| i.seq).collect();
    let (gone, claim) = deps
        .store
        .claim_for_post(&deps.it.account, part.source(), &seqs)?;
    let dropped = gone.iter().filter(|g| **g).count();
    if dropped == 0 {
        return Ok(Claimed::Held(Some(claim)));
    }
    log::info!(
        "integration {} (account {}): {dropped} {} events of the batch held for re-sending are no longer stored (retention removed them and counted them in the gap, or a newer job snapshot replaced them); not sent",
        deps.it.id,
        deps.it.account,
        part.source().as_str()
    );
    Ok(Claimed::Gone(gone))
}

/// Polls Splunk until it confirms batch `id` is indexed; an ack that does not come
/// in time makes the batch be re-sent (at-least-once, as the log shippers do).
async fn wait_for_ack(client: &HecClient, id: u64, t: ClientSettings) -> Outcome {
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        actix_rt::time::sleep(delay.min(t.ack_timeout.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(t.ack_poll);
        match client.poll_acks(&[id]).await {
            AckAnswer::Status(acks) if acks.contains(&(id, true)) => {
                return Outcome::Delivered { ack_id: Some(id) }
            }
            AckAnswer::Status(_) => {}
            AckAnswer::Failed(config @ Outcome::Config(_)) => return config,
            AckAnswer::Failed(_) => {}
        }
        if start.elapsed() >= t.ack_timeout {
            return Outcome::Transient {
                failure: Failure {
                    http_status: None,
                    code: None,
                    text: format!("no indexer acknowledgement within {} s", t.ack_timeout.as_secs()),
                    advice: "Splunk took the events but did not confirm they were indexed in time; siemsync sends them again. Behind a load balancer, make sure it keeps each channel on one indexer.".into(),
                },
                accepted: None,
            };
        }
    }
}

/// Records that the first `upto` events of `part` are done — delivered, or the last one
/// dead-lettered with `dead` — moving the checkpoint (the one place that does) and
/// making it durable before the next post, so a crash repeats at most one post.
async fn commit(
    deps: &Deps,
    shared: &RefCell<Shared>,
    part: &Batch,
    upto: usize,
    dead: Option<Failure>,
) -> Result<(), CycleError> {
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
        letters.push(DeadLetter {
            id: deps.store.next_id()?,
            at: Utc::now(),
            source: part.source(),
            seq: last.seq,
            reason,
            event,
        });
    }
    let cp = deps
        .store
        .commit(&deps.it.account, &deps.it.id, &cp, &letters)?;
    deps.store.flush().await?;
    let m = &deps.settings.metrics;
    let labels = IntegrationLabels::of(&deps.it);
    let bytes = part.slice(0..upto).body.len();
    m.events_delivered
        .get_or_create(&labels.with_source(part.source()))
        .inc_by(delivered);
    m.bytes_delivered
        .get_or_create(&labels.with_source(part.source()))
        .inc_by(bytes as u64);
    m.dead_lettered
        .get_or_create(&labels)
        .inc_by(letters.len() as u64);
    let mut s = shared.borrow_mut();
    s.checkpoint = cp;
    s.cycle.0 += upto;
    s.cycle.1 += bytes;
    let dead = letters.len() as u64;
    s.tally.add(part.source(), delivered, bytes as u64, dead);
    let logged = s.progress_logged;
    if let Some(p) = &mut s.obs.progress {
        p.done = (p.done + upto as u64).min(p.total);
        if logged.elapsed() >= Duration::from_secs(10) {
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
    if delivered > 0 {
        s.refused_in_a_row = 0;
    }
    if let Some(letter) = letters.first() {
        s.refused_in_a_row += 1;
        if part.kind == BatchKind::JobsRunning {
            s.dead_running.insert(letter.seq);
        }
    }
    if s.warning.is_none() {
        s.obs.state = State::Healthy;
        s.obs.last_error = None;
        s.obs.retries = 0;
    }
    Ok(())
}
