//! IntegrationActor: owns one integration — its timer, checkpoint, HEC client and
//! the batch that failed. One per integration, so one customer's slow or broken
//! Splunk only ever delays that customer's own posts.

use super::audit_collector::AuditCollector;
use super::job_collector::JobCollector;
use super::messages::*;
use crate::hec::client::{HecClient, Timeouts};
use crate::hec::encode::Envelope;
use crate::hec::response::{Failure, Outcome};
use crate::model::{Integration, Source};
use crate::store::{Checkpoint, Store, StoreError};
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
    pub timeouts: Timeouts,
}

/// Handles a sync cycle needs; shared by the actor and the cycle future.
struct Deps {
    it: Integration,
    store: Store,
    audit: Addr<AuditCollector>,
    jobs: Addr<JobCollector>,
    client: Result<HecClient, String>,
    settings: DeliverySettings,
}

/// State the running cycle updates while the actor answers status questions.
struct Shared {
    checkpoint: Checkpoint,
    /// The batch that failed: re-sent, unchanged, before anything newer.
    pending: Option<Batch>,
    obs: Observation,
}

enum CycleError {
    Failed(Failure),
    /// The integration was deleted while a post was in flight.
    Gone,
}

pub struct IntegrationActor {
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
        let client = HecClient::new(&it, settings.timeouts);
        let seed = it.id.as_u128() as u64 ^ (it.id.as_u128() >> 64) as u64 ^ generation;
        IntegrationActor {
            shared: Rc::new(RefCell::new(Shared {
                checkpoint: Checkpoint::default(),
                pending: None,
                obs: Observation {
                    state: State::Pending,
                    started_at: Utc::now(),
                    last_attempt: None,
                    last_error: None,
                    retries: 0,
                    syncing: false,
                    next_sync: None,
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
                Err(CycleError::Failed(failure)) => {
                    log::warn!(
                        "integration {} (account {}): delivery failed: {} — {}",
                        self.deps.it.id,
                        self.deps.it.account,
                        failure.text,
                        failure.advice
                    );
                    s.obs.state = State::Failing;
                    s.obs.last_error = Some(failure);
                    s.obs.retries += 1;
                    self.backoff(s.obs.retries, interval)
                }
            }
        };
        self.again = false;
        self.shared.borrow_mut().obs.next_sync =
            Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        self.next = Some(ctx.run_later(delay, |act, ctx| act.sync(ctx)));
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
            self.deps.it.hec_uri()
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

impl Handler<Observe> for IntegrationActor {
    type Result = Option<Observation>;
    fn handle(&mut self, _: Observe, _: &mut Context<Self>) -> Option<Observation> {
        Some(self.shared.borrow().obs.clone())
    }
}

impl Handler<Stop> for IntegrationActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

fn internal(text: String) -> CycleError {
    CycleError::Failed(Failure {
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

/// One sync: the failed batch first, then the audit log, jobs changed since the
/// checkpoint, and last every job still in progress — each batch posted, and the
/// checkpoint moved, before the next is read.
async fn run_cycle(deps: Rc<Deps>, shared: Rc<RefCell<Shared>>) -> Result<(), CycleError> {
    let started = Instant::now();
    let (mut events, mut bytes) = (0u64, 0usize);
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
        max_bytes: deps.settings.max_batch_bytes,
    };
    let pending = shared.borrow().pending.clone();
    if let Some(batch) = pending {
        events += batch.events;
        bytes += batch.body.len();
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
                })
                .await??;
            if batch.events == 0 {
                break;
            }
            events += batch.events;
            bytes += batch.body.len();
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
                })
                .await??;
            if batch.events == 0 {
                break;
            }
            events += batch.events;
            bytes += batch.body.len();
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
            if batch.events == 0 {
                break;
            }
            let more = batch.more;
            after_job = batch.last_job.clone();
            events += batch.events;
            bytes += batch.body.len();
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
        events,
        bytes,
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Posts one batch; on success moves the checkpoint (the one place that does) and
/// makes it durable before the next batch, so a crash repeats at most this batch.
async fn deliver(deps: &Deps, shared: &RefCell<Shared>, batch: Batch) -> Result<(), CycleError> {
    {
        let mut s = shared.borrow_mut();
        s.pending = Some(batch.clone());
        s.obs.last_attempt = Some(Utc::now());
    }
    let client = deps.client.as_ref().map_err(|e| {
        CycleError::Failed(Failure {
            http_status: None,
            code: None,
            text: e.clone(),
            advice: "The integration's TLS settings cannot be used: check ca_pem.".into(),
        })
    })?;
    match client.post_events(batch.body.clone()).await {
        Outcome::Delivered { .. } => {
            let cp = {
                let s = shared.borrow();
                let mut cp = s.checkpoint.clone();
                match batch.kind {
                    BatchKind::Audit => {
                        cp.audit_seq = batch.last_seq;
                        cp.delivered_audit += batch.events;
                    }
                    BatchKind::JobsChanged => {
                        cp.job_seq = batch.last_seq;
                        cp.delivered_jobs += batch.events;
                    }
                    BatchKind::JobsRunning => cp.delivered_jobs += batch.events,
                }
                cp.last_success = Some(Utc::now());
                cp
            };
            deps.store
                .put_checkpoint(&deps.it.account, &deps.it.id, &cp)?;
            deps.store.flush().await?;
            let mut s = shared.borrow_mut();
            s.checkpoint = cp;
            s.pending = None;
            s.obs.state = State::Healthy;
            s.obs.last_error = None;
            s.obs.retries = 0;
            log::debug!(
                "integration {}: delivered {} {} events",
                deps.it.id,
                batch.events,
                batch.source().as_str()
            );
            Ok(())
        }
        other => Err(CycleError::Failed(
            other
                .failure()
                .cloned()
                .expect("every outcome but Delivered carries a failure"),
        )),
    }
}
