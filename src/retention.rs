//! The retention sweep: a periodic task that asks the store to drop what every
//! reader has delivered, what outlived `retention_days`, and an account's oldest
//! events while it is over its backlog quota. An ingest that takes an account over
//! its quota asks for a sweep of that account at once.

use crate::background::Background;
use crate::model::{AccountId, AuditEvent, Source};
use crate::store::{AuditSweep, QuotaDrops, Reader, Store, StoreError};
use chrono::Utc;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the sweep needs to know from the config.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// `retention_days`.
    pub retention: Duration,
    /// `account_max_backlog_bytes`: the quota of an account without its own.
    pub default_quota: u64,
}

/// The backlog quota in effect for `account`: its own where the operator set one,
/// else `default_quota`.
pub fn quota_of(store: &Store, account: &AccountId, default_quota: u64) -> Result<u64, StoreError> {
    Ok(store
        .account(account)?
        .and_then(|a| a.max_backlog_bytes)
        .unwrap_or(default_quota))
}

/// An account's share of the store, as the account view, the metrics and
/// `siemsync status` show it.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Bytes its stored audit events take.
    pub stored_bytes: u64,
    /// Of those, the bytes some integration of it has not delivered yet (all of them
    /// while it has none that sends audit events).
    pub backlog_bytes: u64,
    /// The backlog quota in effect.
    pub max_backlog_bytes: u64,
    /// What the quota dropped so far (`null`: nothing).
    pub quota_drops: Option<QuotaDrops>,
}

/// Reads `account`'s [`Usage`].
pub fn usage(store: &Store, account: &AccountId, default_quota: u64) -> Result<Usage, StoreError> {
    let min_delivered = readers(store, account, Source::Audit)?
        .iter()
        .map(|r| r.delivered_up_to)
        .min();
    Ok(Usage {
        stored_bytes: store.stored_bytes(account)?,
        backlog_bytes: store.backlog_bytes(account, min_delivered)?,
        max_backlog_bytes: quota_of(store, account, default_quota)?,
        quota_drops: store.quota_drops(account)?,
    })
}

/// The readers of one source of `account`, read at the moment the sweep decides: an
/// integration created or a checkpoint moved a moment before counts.
fn readers(store: &Store, account: &AccountId, source: Source) -> Result<Vec<Reader>, StoreError> {
    store
        .integrations_of(account)?
        .iter()
        .filter(|i| i.wants(source))
        .map(|i| {
            let cp = store.checkpoint(&i.id)?;
            Ok(Reader {
                integration: i.id,
                delivered_up_to: match source {
                    Source::Audit => cp.audit_seq,
                    Source::Jobs => cp.job_seq,
                },
            })
        })
        .collect()
}

/// Sweeps one account; returns (audit events, jobs) deleted.
pub fn sweep_account(
    store: &Store,
    account: &AccountId,
    policy: Policy,
    stop: &dyn Fn() -> bool,
) -> Result<(u64, u64), StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::MAX);
    let quota = quota_of(store, account, policy.default_quota)?;
    let audit = store.sweep_audit_within(
        account,
        cutoff,
        quota,
        &|| readers(store, account, Source::Audit),
        stop,
    )?;
    // What the quota dropped is told even when the shutdown cut the sweep short.
    if audit.quota_drops.is_some() {
        tell_the_account(store, account, quota, &audit)?;
    }
    if stop() {
        return Ok((audit.deleted, 0));
    }
    let jobs = store.sweep_jobs(account, cutoff, &|| readers(store, account, Source::Jobs))?;
    Ok((audit.deleted, jobs))
}

/// Writes siemsync's own audit event to the account's stream when the backlog quota
/// dropped events: it reaches the customer's Splunk with the newest events, so the
/// customer learns there, too, what they did not receive and why.
fn tell_the_account(
    store: &Store,
    account: &AccountId,
    quota: u64,
    sweep: &AuditSweep,
) -> Result<(), StoreError> {
    let Some(d) = sweep.quota_drops else {
        return Ok(());
    };
    let now = Utc::now();
    let gaps: Vec<_> = sweep
        .gaps
        .iter()
        .map(|(id, g)| {
            json!({"integration": id, "source": g.source.as_str(), "reason": g.reason.as_str(),
                   "count": g.count, "from": g.from, "to": g.to})
        })
        .collect();
    let event = AuditEvent {
        id: uuid::Uuid::new_v4().to_string(),
        time: now,
        connector: None,
        acl: Some("siem-integration:backlog-quota".into()),
        method: None,
        user: Some("siemsync".into()),
        ip_address: None,
        metadata: json!({
            "reason": "backlog_quota",
            "max_backlog_bytes": quota,
            "dropped_events": d.events,
            "from": d.from,
            "to": d.to,
            "integrations": gaps,
        })
        .as_object()
        .cloned(),
        event: json!(format!(
            "SIEM events dropped: {} audit events stored between {} and {} were removed undelivered because the account's backlog was over its quota of {quota} bytes (its Splunk was unreachable for too long)",
            d.events,
            d.from.to_rfc3339(),
            d.to.to_rfc3339()
        )),
        ingested_at: now,
    };
    store.append_audit(account, vec![event])?;
    Ok(())
}

/// One pass over every account; returns (audit events, jobs) deleted.
pub fn sweep(store: &Store, policy: Policy) -> Result<(u64, u64), StoreError> {
    sweep_until(store, policy, &|| false)
}

/// `sweep`, ending early once `stop` says so (the shutdown): checked between two
/// accounts and between two batches of one account's audit log, so one batch (one
/// transaction) is the most it goes on for. The next sweep finishes the work.
pub fn sweep_until(
    store: &Store,
    policy: Policy,
    stop: &dyn Fn() -> bool,
) -> Result<(u64, u64), StoreError> {
    let (mut audit, mut jobs) = (0, 0);
    for account in store.accounts_with_events()? {
        if stop() {
            break;
        }
        let (a, j) = sweep_account(store, &account, policy, stop)?;
        audit += a;
        jobs += j;
    }
    Ok((audit, jobs))
}

/// Runs the sweep `every` (`[timing] retention_sweep_secs`) over every account, and
/// at once over an account an ingest took over its quota, until stopped.
pub fn spawn(store: Store, policy: Policy, every: Duration) -> Background {
    let mut job = Background::new("the retention sweep");
    job.spawn(move |mut stop| async move {
        let mut next = actix_rt::time::Instant::now() + every;
        loop {
            let due = tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep_until(next) => {
                    next = actix_rt::time::Instant::now() + every;
                    None
                }
                _ = store.sweep_asked() => Some(store.take_sweep_due()),
            };
            let still_over = run_once(&store, policy, due, &mut stop).await;
            if !still_over.is_empty() {
                // A post in flight held the oldest events: try again in a moment, not
                // a sweep period later (and not in a busy loop while the post lasts).
                tokio::select! {
                    _ = stop.stopped() => return,
                    _ = actix_rt::time::sleep(QUOTA_RETRY.min(every)) => {}
                }
                for account in &still_over {
                    store.ask_sweep(account);
                }
            }
        }
    });
    job
}

/// One sweep on a blocking thread; returns the accounts asked for that are still
/// over their quota. A sweep under way is asked to stop at the next batch when the
/// service stops, and waited for: its blocking thread cannot be interrupted, and the
/// store is flushed after it. One batch is all the shutdown waits for.
async fn run_once(
    store: &Store,
    policy: Policy,
    due: Option<Vec<AccountId>>,
    stop: &mut crate::background::StopSignal,
) -> Vec<AccountId> {
    let s = store.clone();
    let halt = Arc::new(AtomicBool::new(false));
    let halted = halt.clone();
    let mut sweeping = actix_web::rt::task::spawn_blocking(move || {
        sweep_some(&s, policy, due, &|| halted.load(Ordering::Relaxed))
    });
    let swept = tokio::select! {
        swept = &mut sweeping => swept,
        _ = stop.stopped() => {
            log::info!("retention: shutting down; the sweep under way stops after its current batch");
            halt.store(true, Ordering::Relaxed);
            sweeping.await
        }
    };
    match swept {
        Ok(Ok(((0, 0), over))) => over,
        Ok(Ok(((audit, jobs), over))) => {
            log::info!("retention: {audit} audit events and {jobs} jobs removed");
            over
        }
        Ok(Err(e)) => {
            log::error!("retention sweep failed: {e}");
            Vec::new()
        }
        Err(e) => {
            log::error!("retention sweep stopped: {e}");
            Vec::new()
        }
    }
}

/// How soon a quota sweep that a post in flight held back is tried again.
const QUOTA_RETRY: Duration = Duration::from_millis(200);

/// Sweeps every account (`due` is `None`) or those asked for; returns (audit events,
/// jobs) deleted, and the accounts asked for that are still over their quota.
fn sweep_some(
    store: &Store,
    policy: Policy,
    due: Option<Vec<AccountId>>,
    stop: &dyn Fn() -> bool,
) -> Result<((u64, u64), Vec<AccountId>), StoreError> {
    let Some(accounts) = due else {
        return Ok((sweep_until(store, policy, stop)?, Vec::new()));
    };
    let (mut deleted, mut over) = ((0, 0), Vec::new());
    for account in accounts {
        if stop() {
            break;
        }
        let (a, j) = sweep_account(store, &account, policy, stop)?;
        deleted = (deleted.0 + a, deleted.1 + j);
        if store.stored_bytes(&account)? > quota_of(store, &account, policy.default_quota)? {
            over.push(account);
        }
    }
    Ok((deleted, over))
}
