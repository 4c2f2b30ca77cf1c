//! Ingest rate per account: a token bucket per account, so that one account whose
//! platform side posts a flood cannot take the ingest path (and the disk's write
//! rate) from the others. Over its rate an account's requests are answered 429 with
//! `Retry-After` and store nothing; other accounts are not slowed. Events count as
//! posted (repeats of known ids included: they cost the same to read).

use crate::model::AccountId;
use std::collections::HashMap;
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

/// The buckets of every account that has posted, and how often each was refused.
#[derive(Debug, Default)]
pub struct IngestLimits {
    buckets: Mutex<HashMap<AccountId, Bucket>>,
    refused: Mutex<HashMap<AccountId, u64>>,
}

impl IngestLimits {
    /// Takes `n` events from `account`'s bucket under `limit`, if they fit now.
    pub fn take(&self, account: &AccountId, limit: Limit, n: u64, now: Instant) -> Take {
        if n > limit.burst {
            self.count_refusal(account);
            return Take::LargerThanBurst;
        }
        let mut buckets = lock(&self.buckets);
        let b = buckets.entry(account.clone()).or_insert(Bucket {
            tokens: limit.burst as f64,
            at: now,
            limit,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        // A changed limit applies from now: the bucket never holds more than its burst.
        b.limit = limit;
        b.tokens = (b.tokens + elapsed * limit.per_sec as f64).min(limit.burst as f64);
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

    /// When `account` has not even one event left: how long until it has. Checked
    /// before a request's body is read, so a flood costs little to refuse.
    pub fn dry(&self, account: &AccountId, limit: Limit, now: Instant) -> Option<Duration> {
        let wait = {
            let buckets = lock(&self.buckets);
            let b = buckets.get(account)?;
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            let tokens = (b.tokens + elapsed * limit.per_sec as f64).min(limit.burst as f64);
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

    /// Requests of `account` refused for its rate since the process started.
    pub fn refused(&self, account: &AccountId) -> u64 {
        lock(&self.refused).get(account).copied().unwrap_or(0)
    }

    fn count_refusal(&self, account: &AccountId) {
        *lock(&self.refused).entry(account.clone()).or_default() += 1;
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
    fn a_refund_gives_back_what_a_failed_request_took() {
        let l = IngestLimits::default();
        let t0 = Instant::now();
        assert_eq!(l.take(&acme(), LIMIT, 200, t0), Take::Granted);
        l.refund(&acme(), 120);
        assert_eq!(l.take(&acme(), LIMIT, 120, t0), Take::Granted);
        assert!(matches!(l.take(&acme(), LIMIT, 1, t0), Take::Wait(_)));
    }
}
