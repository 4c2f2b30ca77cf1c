//! Ingest rate per account: a token bucket per account, so that one account whose
//! platform side posts a flood cannot take the ingest path (and the disk's write
//! rate) from the others. Over its rate an account's requests are answered 429 with
//! `Retry-After` and store nothing; other accounts are not slowed. Events count as
//! posted (repeats of known ids included: they cost the same to read).

use crate::model::AccountId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An account's ingest allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Events per second, sustained.
    pub per_sec: u64,
    /// Events that may come at once, after a quiet period.
    pub burst: u64,
}

/// What an ingest request of `n` events may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Go on: the events are counted.
    Granted,
    /// Over the rate: nothing is counted; the events fit again after this long.
    Wait(Duration),
    /// More events in one request than the account may ever post at once.
    LargerThanBurst,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    limit: Limit,
}

impl Bucket {
    /// The tokens the bucket holds at `now`.
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.limit.per_sec as f64).min(self.limit.burst as f64)
    }
}

/// Buckets kept before full ones are dropped: a full bucket behaves exactly like
/// none, so the map holds only the accounts that posted lately.
const PRUNE_ABOVE: usize = 4096;

fn prune(buckets: &mut HashMap<AccountId, Bucket>, now: Instant) {
    buckets.retain(|_, b| b.refilled(now) < b.limit.burst as f64);
}

/// The buckets of every account that has posted, and how often each was refused.
#[derive(Debug, Default)]
pub struct IngestLimits {
    buckets: Mutex<HashMap<AccountId, Bucket>>,
    /// The number of buckets at which full ones are next dropped.
    prune_at: AtomicUsize,
    refused: Mutex<HashMap<AccountId, u64>>,
    /// The number of refusal counts at which those of accounts without a bucket (none
    /// posted lately) are next dropped.
    refused_prune_at: AtomicUsize,
}

impl IngestLimits {
    /// Takes `n` events from `account`'s bucket under `limit`, if they fit now.
    pub fn take(&self, account: &AccountId, limit: Limit, n: u64, now: Instant) -> Take {
        // An empty request costs a store round trip too: it is charged as one event.
        let n = n.max(1);
        if n > limit.burst {
            return Take::LargerThanBurst;
        }
        let mut buckets = lock(&self.buckets);
        let prune_at = self.prune_at.load(Ordering::Relaxed).max(PRUNE_ABOVE);
        if buckets.len() >= prune_at {
            prune(&mut buckets, now);
            // Many accounts posting at once: prune again only once they have doubled,
            // so the cost per request stays constant.
            self.prune_at.store(buckets.len() * 2, Ordering::Relaxed);
        }
        let b = buckets.entry(account.clone()).or_insert(Bucket {
            tokens: limit.burst as f64,
            at: now,
            limit,
        });
        // The time since the last request refills at the limit then in force; a
        // changed limit applies from now, and the bucket never holds more than its burst.
        b.tokens = b.refilled(now).min(limit.burst as f64);
        b.limit = limit;
        b.at = now;
        let n = n as f64;
        if b.tokens >= n {
            b.tokens -= n;
            return Take::Granted;
        }
        let wait = Duration::from_secs_f64((n - b.tokens) / limit.per_sec.max(1) as f64);
        drop(buckets);
        self.count_refusal(account);
        Take::Wait(wait)
    }

    /// When `account` has not even one event left: how long until it has (at least:
    /// a request of n events waits for n). Checked before a request's body is read,
    /// so a flood costs little to refuse.
    pub fn dry(&self, account: &AccountId, limit: Limit, now: Instant) -> Option<Duration> {
        let wait = {
            let buckets = lock(&self.buckets);
            let b = buckets.get(account)?;
            let tokens = b.refilled(now).min(limit.burst as f64);
            (tokens < 1.0)
                .then(|| Duration::from_secs_f64((1.0 - tokens) / limit.per_sec.max(1) as f64))?
        };
        self.count_refusal(account);
        Some(wait)
    }

    /// Gives back `n` events taken by a request that then stored nothing (a store
    /// fault): the account is not charged for what it must send again.
    pub fn refund(&self, account: &AccountId, n: u64) {
        if let Some(b) = lock(&self.buckets).get_mut(account) {
            b.tokens = (b.tokens + n as f64).min(b.limit.burst as f64);
        }
    }

    /// Requests of `account` refused for its rate since the process started (or, once
    /// more than 4096 accounts were refused, since it last posted after a quiet period
    /// long enough to refill its bucket).
    pub fn refused(&self, account: &AccountId) -> u64 {
        lock(&self.refused).get(account).copied().unwrap_or(0)
    }

    fn count_refusal(&self, account: &AccountId) {
        let mut refused = lock(&self.refused);
        *refused.entry(account.clone()).or_default() += 1;
        // Bounded like the buckets: the counts of accounts that have not posted lately
        // go once many accounts were refused (taken after `buckets` is let go, so the
        // two locks are never taken the other way round).
        if refused.len()
            >= self
                .refused_prune_at
                .load(Ordering::Relaxed)
                .max(PRUNE_ABOVE)
        {
            let buckets = lock(&self.buckets);
            refused.retain(|a, _| buckets.contains_key(a));
            self.refused_prune_at
                .store(refused.len() * 2, Ordering::Relaxed);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        per_sec: 100,
        burst: 200,
    };

    fn acme() -> AccountId {
        AccountId::parse("acme").unwrap()
    }

    #[test]
    fn refusal_counts_are_kept_for_the_accounts_posting_lately_not_for_every_account_ever() {
        let l = IngestLimits::default();
        let tiny = Limit {
            per_sec: 1,
            burst: 1,
        };
        let t0 = Instant::now();
        for round in 0..4u64 {
            let at = t0 + Duration::from_secs(10 * round);
            for i in 0..PRUNE_ABOVE {
                let a = AccountId::parse(&format!("r{round}-{i}")).unwrap();
                assert_eq!(l.take(&a, tiny, 1, at), Take::Granted);
                assert!(matches!(l.take(&a, tiny, 1, at), Take::Wait(_)));
            }
        }
        let kept = lock(&l.refused).len();
        assert!(kept <= 2 * PRUNE_ABOVE, "{kept} refusal counts kept");
        let last = AccountId::parse(&format!("r3-{}", PRUNE_ABOVE - 1)).unwrap();
        assert_eq!(l.refused(&last), 1, "a recent account's count is kept");
    }

    #[test]
    fn a_burst_is_granted_then_the_rate_refills_it() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.take(&acme(), LIMIT, 150, t0), Take::Granted);
        // 50 left: 100 more must wait half a second.
        assert_eq!(
            l.take(&acme(), LIMIT, 100, t0),
            Take::Wait(Duration::from_millis(500))
        );
        assert_eq!(l.refused(&acme()), 1);
        assert_eq!(
            l.take(&acme(), LIMIT, 100, t0 + Duration::from_millis(500)),
            Take::Granted
        );
        // Never more than the burst, however long the quiet.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(l.take(&acme(), LIMIT, 200, later), Take::Granted);
        assert!(matches!(l.take(&acme(), LIMIT, 1, later), Take::Wait(_)));
    }

    #[test]
    fn a_request_larger_than_the_burst_is_refused_outright_and_accounts_are_apart() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.take(&acme(), LIMIT, 201, t0), Take::LargerThanBurst);
        assert_eq!(l.refused(&acme()), 0, "not a refusal for the rate");
        let other = AccountId::parse("other").unwrap();
        assert_eq!(l.take(&acme(), LIMIT, 200, t0), Take::Granted);
        assert_eq!(l.take(&other, LIMIT, 200, t0), Take::Granted);
        assert_eq!(l.refused(&other), 0);
    }

    #[test]
    fn an_account_without_a_single_event_left_is_dry_until_one_refills() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.dry(&acme(), LIMIT, t0), None, "never posted: not dry");
        assert_eq!(l.take(&acme(), LIMIT, 200, t0), Take::Granted);
        assert_eq!(l.dry(&acme(), LIMIT, t0), Some(Duration::from_millis(10)));
        assert_eq!(l.dry(&acme(), LIMIT, t0 + Duration::from_millis(10)), None);
        assert_eq!(l.refused(&acme()), 1);
    }

    #[test]
    fn an_empty_request_costs_one_event_and_full_buckets_are_forgotten() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        let tiny = Limit {
            per_sec: 1,
            burst: 1,
        };
        assert_eq!(l.take(&acme(), tiny, 0, t0), Take::Granted);
        assert!(matches!(l.take(&acme(), tiny, 0, t0), Take::Wait(_)));
        // With acme, PRUNE_ABOVE buckets: the next request prunes.
        for i in 1..PRUNE_ABOVE {
            let a = AccountId::parse(&format!("a{i}")).unwrap();
            assert_eq!(l.take(&a, LIMIT, 1, t0), Take::Granted);
        }
        // Once refilled, the buckets of accounts that stopped posting go.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.take(&acme(), tiny, 1, later), Take::Granted);
        assert_eq!(lock(&l.buckets).len(), 1);
    }

    #[test]
    fn a_raised_rate_applies_from_now_not_to_the_time_before() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.take(&acme(), LIMIT, 200, t0), Take::Granted);
        let faster = Limit {
            per_sec: 10_000,
            burst: 200,
        };
        // One second at the old 100/s: 100 tokens, not 200.
        let t1 = t0 + Duration::from_secs(1);
        assert!(matches!(l.take(&acme(), faster, 150, t1), Take::Wait(_)));
        assert_eq!(l.take(&acme(), faster, 100, t1), Take::Granted);
    }

    #[test]
    fn a_refund_gives_back_what_a_failed_request_took() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.take(&acme(), LIMIT, 200, t0), Take::Granted);
        l.refund(&acme(), 120);
        assert_eq!(l.take(&acme(), LIMIT, 120, t0), Take::Granted);
        assert!(matches!(l.take(&acme(), LIMIT, 1, t0), Take::Wait(_)));
    }
}
