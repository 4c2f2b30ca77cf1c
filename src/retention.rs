//! The retention sweep: a periodic task that asks the store to drop what every
//! reader has delivered, what outlived `retention_days`, and an account's oldest
//! records while it is over its backlog quota, and writes the notice of what the
//! quota dropped into the account's stream. An ingest that takes an account over
//! its quota asks for a sweep of that account at once (the quota part only).

use crate::background::Background;
use crate::model::{AccountId, AuditEvent, Source};
use crate::store::{AuditSweep, Gap, QuotaDrops, Reader, Store, StoreError};
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
    /// At most one notice of dropped events per account this often from the sweeps an
    /// ingest asks for (the sweep period); the periodic sweep tells what is owed.
    pub notice_every: Duration,
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
    /// Bytes its stored audit events and job snapshots take: what the quota is
    /// enforced on.
    pub stored_bytes: u64,
    /// Of those, the bytes some integration of it has not delivered yet: audit events
    /// and job snapshots after the checkpoint of the source's slowest integration (all
    /// of a source while it has none that sends it). A running job delivered is no
    /// backlog, though its snapshot stays stored until it ends.
    pub backlog_bytes: u64,
    /// The backlog quota in effect.
    pub max_backlog_bytes: u64,
    /// What the quota dropped so far (`null`: nothing).
    pub quota_drops: Option<QuotaDrops>,
}

/// Reads `account`'s [`Usage`].
pub fn usage(store: &Store, account: &AccountId, default_quota: u64) -> Result<Usage, StoreError> {
    let slowest = |source| -> Result<Option<u64>, StoreError> {
        Ok(readers(store, account, source)?
            .iter()
            .map(|r| r.delivered_up_to)
            .min())
    };
    let (min_audit, min_jobs) = (slowest(Source::Audit)?, slowest(Source::Jobs)?);
    Ok(Usage {
        stored_bytes: store.stored_bytes(account)?,
        backlog_bytes: store.backlog_bytes(account, min_audit, min_jobs)?,
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

/// Which sweep of an account runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The periodic one: retention of both sources, the quota, and the notice owed.
    Periodic,
    /// The one an ingest asked for: the quota only (it reads the oldest records, not
    /// all of the account's jobs), and a notice only if none was written for a period.
    Asked,
}

/// Sweeps one account; returns (audit events, jobs) deleted, and whether it
/// stopped with more to do (its turn of [`PASSES_PER_TURN`] passes was over).
pub fn sweep_account(
    store: &Store,
    account: &AccountId,
    policy: Policy,
    stop: &dyn Fn() -> bool,
) -> Result<((u64, u64), bool), StoreError> {
    let swept = sweep_one(store, account, policy, Kind::Periodic, stop)?;
    Ok(((swept.deleted, swept.jobs_deleted), swept.unfinished))
}

/// Passes (batches of up to 10,000 events) one sweep of an account runs before the
/// next account's turn. A flood keeps an account over its quota pass after pass
/// (each pass drops what was over when it read; the flood adds more meanwhile): the
/// one sweep task would otherwise see to nothing else. The account is asked for
/// again, behind those already waiting.
const PASSES_PER_TURN: u32 = 16;

fn sweep_one(
    store: &Store,
    account: &AccountId,
    policy: Policy,
    kind: Kind,
    stop: &dyn Fn() -> bool,
) -> Result<AuditSweep, StoreError> {
    let cutoff =
        Utc::now() - chrono::Duration::from_std(policy.retention).unwrap_or(chrono::Duration::MAX);
    let quota = quota_of(store, account, policy.default_quota)?;
    let passes = std::cell::Cell::new(0);
    let turn_over = || {
        passes.set(passes.get() + 1);
        stop() || passes.get() >= PASSES_PER_TURN
    };
    let mut swept = store.sweep_within(
        account,
        cutoff,
        quota,
        &|source| readers(store, account, source),
        &turn_over,
    )?;
    // What the quota dropped is told even when the shutdown cut the sweep short: the
    // store keeps what is owed from the drop's own write until a notice says it.
    tell_the_account(store, account, quota, false, policy.notice_every)?;
    if kind == Kind::Asked || stop() {
        return Ok(swept);
    }
    swept.jobs_deleted +=
        store.sweep_jobs(account, cutoff, &|| readers(store, account, Source::Jobs))?;
    Ok(swept)
}

/// Writes siemsync's own audit event to the account's stream when the backlog quota
/// dropped events: it reaches the customer's Splunk with the newest events, so the
/// customer learns there, too, what they did not receive and why. One notice says
/// everything dropped since the one before, and is written by any sweep (periodic or
/// asked) only when no notice was written for `every`: at most one per period, the
/// first at once; what is owed when the drops stop is told by the first sweep a
/// period after the last notice. At the start (`at_start`) what is owed is written
/// at once (a crash may have come between a drop and its notice).
fn tell_the_account(
    store: &Store,
    account: &AccountId,
    quota: u64,
    at_start: bool,
    every: Duration,
) -> Result<(), StoreError> {
    let due = |last: Option<chrono::DateTime<Utc>>| match last {
        None => true,
        Some(_) if at_start => true,
        Some(at) => {
            Utc::now()
                .signed_duration_since(at)
                .to_std()
                .unwrap_or_default()
                >= every
        }
    };
    store.tell_quota_drops(account, &due, &|d, gaps| notice(quota, d, gaps))?;
    Ok(())
}

/// The notice of what the quota dropped, as siemsync's own audit event.
fn notice(quota: u64, d: &QuotaDrops, gaps: &[(uuid::Uuid, Gap)]) -> AuditEvent {
    let now = Utc::now();
    let gaps: Vec<_> = gaps
        .iter()
        .map(|(id, g)| {
            json!({"integration": id, "source": g.source.as_str(), "reason": g.reason.as_str(),
                   "count": g.count, "from": g.from, "to": g.to})
        })
        .collect();
    AuditEvent {
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
            "dropped_jobs": d.jobs,
            "from": d.from,
            "to": d.to,
            "integrations": gaps,
        })
        .as_object()
        .cloned(),
        event: json!(format!(
            "SIEM events dropped: {} audit events and {} job snapshots stored between {} and {} were removed undelivered because the account's backlog was over its quota of {quota} bytes (its Splunk was unreachable for too long)",
            d.events,
            d.jobs,
            d.from.to_rfc3339(),
            d.to.to_rfc3339()
        )),
        ingested_at: now,
    }
}

/// Writes the notices owed from before a restart (a crash may come between a drop
/// and its notice).
fn tell_what_is_owed(store: &Store, policy: Policy) -> Result<(), StoreError> {
    for account in store.accounts_owed_a_notice()? {
        let quota = quota_of(store, &account, policy.default_quota)?;
        tell_the_account(store, &account, quota, true, policy.notice_every)?;
    }
    Ok(())
}

/// One pass over every account; returns (audit events, jobs) deleted.
pub fn sweep(store: &Store, policy: Policy) -> Result<(u64, u64), StoreError> {
    Ok(sweep_until(store, policy, &|| false)?.0)
}

/// `sweep`, ending early once `stop` says so (the shutdown): checked between two
/// accounts and between two batches of one account's audit log, so one batch (one
/// transaction) is the most it goes on for. The next sweep finishes the work.
/// Also returns the accounts whose turn ended with more to do.
pub fn sweep_until(
    store: &Store,
    policy: Policy,
    stop: &dyn Fn() -> bool,
) -> Result<((u64, u64), Vec<AccountId>), StoreError> {
    let (mut audit, mut jobs, mut unfinished) = (0, 0, Vec::new());
    for account in store.accounts_to_sweep(policy.default_quota)? {
        if stop() {
            break;
        }
        let ((a, j), more) = sweep_account(store, &account, policy, stop)?;
        audit += a;
        jobs += j;
        if more {
            unfinished.push(account);
        }
    }
    Ok(((audit, jobs), unfinished))
}

/// Runs the sweep `every` (`[timing] retention_sweep_secs`) over every account, and
/// at once over an account an ingest took over its quota, until stopped.
pub fn spawn(store: Store, policy: Policy, every: Duration) -> Background {
    let mut job = Background::new("the retention sweep");
    job.spawn(move |mut stop| async move {
        let s = store.clone();
        match actix_web::rt::task::spawn_blocking(move || tell_what_is_owed(&s, policy)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("retention: cannot write the notices owed: {e}"),
            Err(e) => log::error!("retention: writing the notices owed stopped: {e}"),
        }
        let mut next = actix_rt::time::Instant::now() + every;
        // Accounts to ask for again in a moment, and when.
        let (mut retry, mut retry_at) = (Vec::new(), None);
        loop {
            let due = tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep_until(next) => {
                    next = actix_rt::time::Instant::now() + every;
                    None
                }
                _ = store.sweep_asked() => Some(store.take_sweep_due()),
                _ = actix_rt::time::sleep_until(retry_at.unwrap_or(next)), if retry_at.is_some() => {
                    retry_at = None;
                    for account in retry.drain(..) {
                        store.ask_sweep(&account);
                    }
                    continue;
                }
            };
            let again = run_once(&store, policy, due, &mut stop).await;
            // A turn that ended with more to do goes on at once, behind the accounts
            // asked for meanwhile.
            for account in &again.at_once {
                store.ask_sweep(account);
            }
            if !again.soon.is_empty() {
                // A post in flight held the oldest events, or an ingest came during the
                // sweep: try again in a moment, not a sweep period later (and not in a
                // busy loop while the post lasts).
                retry.extend(again.soon);
                retry_at.get_or_insert(actix_rt::time::Instant::now() + QUOTA_RETRY.min(every));
            }
        }
    });
    job
}

/// One sweep on a blocking thread; returns the accounts to sweep again. A sweep under way is asked to stop at the next batch when the
/// service stops, and waited for: its blocking thread cannot be interrupted, and the
/// store is flushed after it. One batch is all the shutdown waits for.
async fn run_once(
    store: &Store,
    policy: Policy,
    due: Option<Vec<AccountId>>,
    stop: &mut crate::background::StopSignal,
) -> Again {
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
            Again::default()
        }
        Err(e) => {
            log::error!("retention sweep stopped: {e}");
            Again::default()
        }
    }
}

/// How soon a quota sweep that a post in flight held back is tried again.
const QUOTA_RETRY: Duration = Duration::from_millis(200);

/// The accounts a sweep leaves to the next.
#[derive(Debug, Default, PartialEq)]
struct Again {
    /// Their turn ended with more to do: at once, behind those already asked for.
    at_once: Vec<AccountId>,
    /// A post in flight held records the quota would drop, or an ingest during the
    /// sweep left something it may drop over the quota: in a moment.
    soon: Vec<AccountId>,
}

/// Sweeps every account (`due` is `None`) or those asked for; returns (audit events,
/// jobs) deleted, and the accounts to sweep again. An account over its quota with
/// nothing the quota may drop (its newest chunk and newest job snapshot are all it
/// holds beyond the quota) is not asked for again: only an ingest can change that,
/// and the ingest asks.
fn sweep_some(
    store: &Store,
    policy: Policy,
    due: Option<Vec<AccountId>>,
    stop: &dyn Fn() -> bool,
) -> Result<((u64, u64), Again), StoreError> {
    let Some(accounts) = due else {
        let (deleted, at_once) = sweep_until(store, policy, stop)?;
        let soon = Vec::new();
        return Ok((deleted, Again { at_once, soon }));
    };
    let (mut deleted, mut again) = ((0, 0), Again::default());
    for account in accounts {
        if stop() {
            break;
        }
        // One account's failure (a deadlock victim, a corrupt record) is said and
        // costs the rest of the due accounts nothing. It is not tried again at once
        // (a lasting fault would say so in a busy loop): its next ingest or the
        // periodic sweep asks again.
        let swept = match sweep_one(store, &account, policy, Kind::Asked, stop) {
            Ok(swept) => swept,
            Err(e) => {
                log::error!("account {account}: the backlog quota sweep failed: {e}");
                continue;
            }
        };
        deleted = (deleted.0 + swept.deleted, deleted.1 + swept.jobs_deleted);
        if swept.unfinished {
            again.at_once.push(account);
            continue;
        }
        let over = match (
            store.quota_droppable_bytes(&account),
            quota_of(store, &account, policy.default_quota),
        ) {
            (Ok(droppable), Ok(quota)) => droppable > quota,
            (Err(e), _) | (_, Err(e)) => {
                log::error!("account {account}: its backlog quota could not be read: {e}");
                false
            }
        };
        if swept.held_back || over {
            again.soon.push(account);
        }
    }
    Ok((deleted, again))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::ControlFlow;

    use crate::store::testing::sized_audit as flood;

    fn setup(dir: &std::path::Path) -> (Store, AccountId) {
        let sled = crate::store::SledStore::open(dir).unwrap();
        let a = AccountId::parse("acme").unwrap();
        crate::store::testing::integration(&sled, &a, &["audit"]);
        (Store::Sled(sled), a)
    }

    /// siemsync's notices in the account's stream: what each says was dropped.
    fn notices(s: &Store, a: &AccountId) -> Vec<u64> {
        let mut out = Vec::new();
        s.audit_after(a, 0, |ev| {
            let v = ev.to_json().unwrap();
            if v["acl"] == "siem-integration:backlog-quota" {
                out.push(v["metadata"]["dropped_events"].as_u64().unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        out
    }

    fn policy(quota: u64) -> Policy {
        Policy {
            retention: Duration::from_secs(30 * 86_400),
            default_quota: quota,
            notice_every: Duration::from_secs(3600),
        }
    }

    #[test]
    fn a_crash_between_the_drop_and_the_notice_still_tells_the_account() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        for i in 0..10 {
            s.append_audit(&a, flood(&format!("b{i}"), 100)).unwrap();
        }
        let quota = s.stored_bytes(&a).unwrap() / 3;
        let past = Utc::now() - chrono::Duration::days(1);
        // The drop, and the crash before the notice was written.
        let dropped = s
            .sweep_within(&a, past, quota, &|_| Ok(vec![]), &|| false)
            .unwrap()
            .quota_drops
            .unwrap()
            .events;
        s.flush_now().unwrap();
        drop(s);
        let s = Store::Sled(crate::store::testing::reopen(
            dir.path(),
            &crate::store::StoreOptions::new(),
        ));
        // The service resumes: its sweep writes what the one before the crash owed.
        sweep(&s, policy(quota)).unwrap();
        assert_eq!(notices(&s, &a), vec![dropped]);
        sweep(&s, policy(quota)).unwrap();
        assert_eq!(notices(&s, &a), vec![dropped], "told once");
    }

    #[test]
    fn a_flood_of_many_sweeps_yields_few_notices_that_sum_to_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        let quota = 64 * 1024;
        for i in 0..60 {
            s.append_audit(&a, flood(&format!("b{i}"), 100)).unwrap();
            // The sweep each over-quota ingest asks for.
            sweep_some(&s, policy(quota), Some(vec![a.clone()]), &|| false).unwrap();
        }
        // The periodic sweep.
        sweep(&s, policy(quota)).unwrap();
        let told = notices(&s, &a);
        let dropped = s.quota_drops(&a).unwrap().unwrap().events;
        assert!(dropped > 5000, "{dropped}");
        assert!(
            (1..=2).contains(&told.len()),
            "{} notices for one flood: {told:?}",
            told.len()
        );
        assert_eq!(told.iter().sum::<u64>(), dropped, "{told:?}");
    }

    /// One audit event of about `bytes` bytes.
    fn big_event(id: &str, bytes: usize) -> Vec<AuditEvent> {
        vec![AuditEvent::from_json(
            &json!({"id": id, "time": "2026-11-25T10:00:00Z", "event": "x".repeat(bytes)}),
            0,
            Utc::now(),
        )
        .unwrap()]
    }

    #[test]
    fn an_account_over_its_quota_with_nothing_that_may_go_is_not_swept_again_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        let quota = 64 * 1024;
        // One request larger than the quota: its events are the newest, and stay.
        s.append_audit(&a, big_event("big", 900_000)).unwrap();
        let (_, again) = sweep_some(&s, policy(quota), Some(vec![a.clone()]), &|| false).unwrap();
        assert!(s.stored_bytes(&a).unwrap() > quota);
        assert_eq!(again, Again::default(), "asked again with nothing to drop");
    }

    #[cfg(feature = "test-hooks")]
    #[actix_rt::test]
    async fn an_account_over_its_quota_with_nothing_that_may_go_is_not_swept_in_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        let quota = 64 * 1024;
        s.append_audit(&a, big_event("big", 900_000)).unwrap();
        let job = spawn(s.clone(), policy(quota), Duration::from_secs(3600));
        // The ingest took it over its quota: it asks for a sweep.
        s.ask_sweep(&a);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.sweep_passes() == 0 {
            assert!(std::time::Instant::now() < deadline, "the sweep never ran");
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        // A window of ten retries' worth (QUOTA_RETRY): a loop would show in it.
        actix_rt::time::sleep(QUOTA_RETRY * 10).await;
        let passes = s.sweep_passes();
        job.stop().await;
        assert!(
            passes <= 2,
            "{passes} sweep passes of an account with nothing to drop"
        );
    }

    #[test]
    fn an_account_whose_splunk_took_everything_has_no_backlog_even_with_jobs_running() {
        let dir = tempfile::tempdir().unwrap();
        let sled = crate::store::SledStore::open(dir.path()).unwrap();
        let a = AccountId::parse("acme").unwrap();
        let it = crate::store::testing::integration(&sled, &a, &["audit", "jobs"]);
        let s = Store::Sled(sled);
        s.append_audit(&a, flood("b", 100)).unwrap();
        let jobs = (0..20)
            .map(|i| crate::store::testing::job(&format!("j{i}"), "in progress", 0.5))
            .collect();
        s.put_jobs(&a, jobs).unwrap();
        let before = usage(&s, &a, 1 << 30).unwrap();
        assert_eq!(before.backlog_bytes, before.stored_bytes);
        // Splunk took every audit event and every job snapshot; the jobs still run.
        let mut job_seq = 0;
        s.jobs_changed_after(&a, 0, |j| {
            job_seq = job_seq.max(j.change_seq);
            ControlFlow::Continue(())
        })
        .unwrap();
        let cp = crate::store::Checkpoint {
            audit_seq: 100,
            job_seq,
            ..Default::default()
        };
        s.commit(&a, &it.id, &cp, &[]).unwrap();
        let after = usage(&s, &a, 1 << 30).unwrap();
        assert!(after.stored_bytes > 0);
        assert_eq!(after.backlog_bytes, 0, "{after:?}");
    }

    #[cfg(feature = "test-hooks")]
    #[test]
    fn a_flood_on_one_account_does_not_keep_the_sweep_from_another() {
        use std::sync::atomic::AtomicU64;
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        let b = AccountId::parse("other").unwrap();
        let quota = 64 * 1024;
        for i in 0..3 {
            s.append_audit(&b, flood(&format!("b{i}"), 100)).unwrap();
            s.append_audit(&a, flood(&format!("a{i}"), 100)).unwrap();
        }
        assert!(s.stored_bytes(&b).unwrap() > quota);
        s.set_pace(crate::store::Pace {
            sweep_batch_events: Some(50),
            sweep_batch_pause: Duration::from_millis(20),
            ..Default::default()
        });
        // A flood on A that outpaces every pass of its sweep.
        let flooding = Arc::new(AtomicBool::new(true));
        let appended = Arc::new(AtomicU64::new(0));
        let flooder = {
            let (s, a, flooding, appended) =
                (s.clone(), a.clone(), flooding.clone(), appended.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while flooding.load(Ordering::Relaxed) {
                    s.append_audit(&a, flood(&format!("f{i}"), 100)).unwrap();
                    appended.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while appended.load(Ordering::Relaxed) < 5 {
            assert!(
                std::time::Instant::now() < deadline,
                "the flood never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let (s, a, b) = (s.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let _ = tx.send(sweep_some(&s, policy(quota), Some(vec![a, b]), &|| false));
            });
        }
        let swept = rx.recv_timeout(Duration::from_secs(8));
        flooding.store(false, Ordering::Relaxed);
        flooder.join().unwrap();
        let (_, again) = swept.expect("the sweep of A never let B's run").unwrap();
        assert!(s.stored_bytes(&b).unwrap() <= quota, "B was not swept");
        assert_eq!(
            again.at_once,
            vec![a],
            "A, still over, is asked again at once"
        );
    }

    #[test]
    fn the_periodic_sweep_writes_at_most_one_notice_per_period() {
        let dir = tempfile::tempdir().unwrap();
        let (s, a) = setup(dir.path());
        let quota = 150_000;
        for i in 0..10 {
            s.append_audit(&a, flood(&format!("b{i}"), 100)).unwrap();
        }
        // The first drop is told at once.
        sweep(&s, policy(quota)).unwrap();
        assert_eq!(notices(&s, &a).len(), 1);
        // Fewer new events than the quota: the notice itself stays (one dropped
        // undelivered would be told again at once, by design).
        for i in 10..13 {
            s.append_audit(&a, flood(&format!("b{i}"), 100)).unwrap();
        }
        // Asked, then periodic, within one period: no second notice.
        sweep_some(&s, policy(quota), Some(vec![a.clone()]), &|| false).unwrap();
        sweep(&s, policy(quota)).unwrap();
        assert_eq!(notices(&s, &a).len(), 1, "two notices within one period");
        // A period later the periodic sweep tells what is owed.
        let later = Policy {
            notice_every: Duration::ZERO,
            ..policy(quota)
        };
        sweep(&s, later).unwrap();
        let told = notices(&s, &a);
        assert_eq!(told.len(), 2);
        assert_eq!(
            told.iter().sum::<u64>(),
            s.quota_drops(&a).unwrap().unwrap().events
        );
    }
}
