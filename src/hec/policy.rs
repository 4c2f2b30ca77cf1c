//! The delivery policy: given a post (its events' sizes), Splunk's classified answer
//! and what delivery has learnt so far, it says what to do next — post how many
//! events, wait for an acknowledgement, commit, dead-letter one event, re-send
//! smaller, back off for how long, or stop with a configuration error. The live
//! integration and a replay both follow it; it reads no clock and does no I/O, so
//! every rule below is a unit test.
//!
//! Its rules, from docs/hec.md:
//! - `invalid-event-number` i: the objects before i were indexed and are never sent
//!   again; object i is refused, the rest is re-sent.
//! - An event is bad only when Splunk refuses it *alone* — or names it in a post no
//!   larger than one it accepted before. A code-6 refusal is also how Splunk Cloud
//!   refuses a body over its ~5 MiB cap (pointing at object 0) and how any Splunk
//!   refuses an event over its per-event limit: until then, it may be the size.
//! - 413 halves the post size; a size learnt from a refusal grows back after a quiet
//!   period.
//! - A Splunk refusing event after event alone is a configuration problem (the
//!   refusal breaker), not bad data.
//! - Transient answers back off exponentially with jitter, or as long as Splunk
//!   asked (`Retry-After`), bounded; capacity warnings (24/25) pace the next post.

use super::response::{self, Failure, Outcome};
use std::time::{Duration, Instant};

/// The operator's settings the policy follows.
#[derive(Debug, Clone, Copy)]
pub struct PolicySettings {
    /// The largest post (`max_batch_bytes`); learnt sizes never exceed it.
    pub max_post_bytes: usize,
    /// Posts that may wait for their acknowledgement at once (`posts_in_flight`).
    pub posts_in_flight: usize,
    /// The sync interval: the longest exponential back-off.
    pub interval: Duration,
    /// The first retry's wait after a failure; it doubles with each further one.
    pub backoff_base: Duration,
    /// The longest wait a `Retry-After` can impose (`max_retry_after_secs`).
    pub max_retry_after: Duration,
    /// How long a post size learnt from a refusal holds before larger posts are tried.
    pub regrow_after: Duration,
    /// Longest wait between two ack polls.
    pub ack_poll: Duration,
    /// When an acknowledgement that has not come makes the post be re-sent.
    pub ack_timeout: Duration,
    /// Posts go gzipped: Splunk's body limit then counts compressed bytes, which the
    /// events' sizes do not tell, so a post size accepted before proves nothing
    /// about the next post (it may compress worse).
    pub compressed: bool,
}

/// Events refused alone, one after another with nothing accepted between, before
/// the policy stops and says the cause is elsewhere.
pub const MAX_REFUSED_IN_A_ROW: u32 = 5;
/// The first pause after a capacity warning; it doubles while warnings continue.
const FIRST_SLOW_DOWN: Duration = Duration::from_millis(200);
/// The longest pause between posts while Splunk keeps warning of its capacity.
const MAX_SLOW_DOWN: Duration = Duration::from_secs(5);
/// The first ack poll comes this soon; later ones as often as a quarter of the
/// oldest wait, so a slow Splunk is asked ever less often (up to `ack_poll`).
const MIN_ACK_POLL: Duration = Duration::from_millis(50);

/// What the next post carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The first `n` events.
    Post(usize),
    /// The first event can never be posted (larger than any post): dead-letter it unsent.
    Refuse(Failure),
}

/// Splunk asked to slow down: wait `pause` before the next post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowDown {
    /// How long the next post waits.
    pub pause: Duration,
    /// Splunk's warning (code 24 or 25), shown in the status.
    pub reason: Failure,
}

/// What to do with a post once Splunk answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Delivered, pending indexer acknowledgement of this id: commit nothing yet.
    AwaitAck(u64),
    /// Every event is delivered: commit them. `slow_down`: pause before the next
    /// post; `warning`: delivered, but something needs fixing (shown in the status).
    Commit {
        /// Wait this before the next post.
        slow_down: Option<SlowDown>,
        /// What the customer should fix although the events arrived.
        warning: Option<Failure>,
    },
    /// The first `delivered` events were indexed; the next one is bad on its own:
    /// commit them with it dead-lettered, and post the rest.
    DeadLetter {
        /// Leading events Splunk indexed.
        delivered: usize,
        /// Why the event after them was refused; kept with the dead letter.
        failure: Failure,
    },
    /// The first `delivered` events were indexed; post the rest again (the policy's
    /// limits for the next posts have changed).
    Resend {
        /// Leading events Splunk indexed (never sent again).
        delivered: usize,
    },
    /// Splunk is briefly unable. The first `delivered` events were indexed: commit
    /// them, keep the rest, and back off (at least `retry_after` when Splunk asked).
    Retry {
        /// Leading events Splunk indexed (committed).
        delivered: usize,
        /// What Splunk or the network said, for the status.
        failure: Failure,
        /// The wait Splunk asked for, already bounded by `max_retry_after`.
        retry_after: Option<Duration>,
    },
    /// The customer must fix something: keep everything, retry at the next interval.
    Stop(Failure),
}

/// What delivery has learnt about one Splunk; one per integration (and per replay).
#[derive(Debug, Clone)]
pub struct Policy {
    settings: PolicySettings,
    /// The largest post to build now: the setting, or less after a refusal.
    max_post_bytes: usize,
    /// When the post size was last lowered (or last grown back while still lowered).
    shrunk_at: Option<Instant>,
    /// The largest post Splunk accepted: a refusal of a post no larger is not about size.
    largest_accepted: usize,
    /// While isolating a refused event: post at most this many events.
    probe: Option<usize>,
    /// The size of a post refused at object 0 with code 6: if a smaller one is then
    /// accepted, the refusal was about size (Splunk Cloud), and the size is learnt.
    size_suspect: Option<usize>,
    refused_in_a_row: u32,
    ack_timeouts_in_a_row: u32,
    slow_downs_in_a_row: u32,
    /// xorshift64 state for the back-off's jitter: deterministic per integration.
    rng: u64,
}

impl Policy {
    /// A policy with nothing learnt yet; `seed` varies the jitter between integrations.
    pub fn new(settings: PolicySettings, seed: u64) -> Policy {
        Policy {
            settings,
            max_post_bytes: settings.max_post_bytes,
            shrunk_at: None,
            largest_accepted: 0,
            probe: None,
            size_suspect: None,
            refused_in_a_row: 0,
            ack_timeouts_in_a_row: 0,
            slow_downs_in_a_row: 0,
            rng: seed | 1,
        }
    }

    /// The operator's settings it follows (delivery reads its timeouts from them).
    pub fn settings(&self) -> &PolicySettings {
        &self.settings
    }

    /// The largest post to build now (what batches are read up to).
    pub fn max_post_bytes(&self) -> usize {
        self.max_post_bytes
    }

    /// Posts that may be in flight at once: one while a refusal is being isolated
    /// (each answer decides the next post), else the setting.
    pub fn window(&self) -> usize {
        if self.probe.is_some() || self.size_suspect.is_some() {
            1
        } else {
            self.settings.posts_in_flight.max(1)
        }
    }

    /// How many of the leading events go into the next post; `ends[i]` is where
    /// event i's bytes end (so `ends[0]` is the first event's size). Grows a
    /// learnt post size back once it has held for `regrow_after`.
    pub fn plan(&mut self, ends: &[usize], now: Instant) -> Plan {
        self.regrow(now);
        let first = ends.first().copied().unwrap_or(0);
        if first > self.settings.max_post_bytes {
            return Plan::Refuse(response::larger_than_any_post(
                first,
                self.settings.max_post_bytes,
            ));
        }
        let fit = ends
            .iter()
            .take_while(|e| **e <= self.max_post_bytes)
            .count()
            .max(1);
        Plan::Post(fit.min(self.probe.unwrap_or(usize::MAX)).max(1))
    }

    fn regrow(&mut self, now: Instant) {
        let Some(at) = self.shrunk_at else { return };
        if now.saturating_duration_since(at) < self.settings.regrow_after {
            return;
        }
        self.max_post_bytes = self
            .max_post_bytes
            .saturating_mul(2)
            .min(self.settings.max_post_bytes);
        self.shrunk_at = (self.max_post_bytes < self.settings.max_post_bytes).then_some(now);
    }

    fn shrink_to(&mut self, bytes: usize, now: Instant) {
        self.max_post_bytes = bytes.clamp(1, self.max_post_bytes);
        self.shrunk_at = Some(now);
    }

    /// The ack id to wait for, when an answer is a delivery that must be confirmed.
    pub fn awaits_ack(outcome: &Outcome, acknowledges: bool) -> Option<u64> {
        match outcome {
            Outcome::Delivered {
                ack_id: Some(id), ..
            } if acknowledges => Some(*id),
            _ => None,
        }
    }

    /// What to do with Splunk's answer to a post of events ending at `ends`.
    pub fn on_answer(
        &mut self,
        ends: &[usize],
        outcome: Outcome,
        acknowledges: bool,
        now: Instant,
    ) -> Decision {
        if let Some(id) = Self::awaits_ack(&outcome, acknowledges) {
            return Decision::AwaitAck(id);
        }
        let n = ends.len();
        let bytes = ends.last().copied().unwrap_or(0);
        match outcome {
            Outcome::Delivered { slow_down, .. } => self.delivered(bytes, slow_down, now),
            Outcome::Unconfirmed(warning) => match self.delivered(bytes, None, now) {
                Decision::Commit { slow_down, .. } => Decision::Commit {
                    slow_down,
                    warning: Some(warning),
                },
                other => other,
            },
            Outcome::TooLarge(f) if n == 1 => {
                match response::too_large_alone(f, bytes, self.size_known_to_pass()) {
                    Outcome::TooLarge(f) => self.dead_letter(0, f),
                    other => Decision::Stop(other.failure().cloned().unwrap_or_default()),
                }
            }
            Outcome::TooLarge(_) => {
                self.shrink_to(bytes / 2, now);
                Decision::Resend { delivered: 0 }
            }
            Outcome::Data {
                failure,
                invalid_event,
                maybe_size,
            } => self.refused(ends, failure, invalid_event, maybe_size),
            Outcome::Transient {
                failure,
                accepted,
                retry_after,
            } => {
                let delivered = accepted.filter(|&i| i > 0 && i < n).unwrap_or(0);
                if delivered > 0 {
                    self.accepted_prefix(ends[delivered - 1]);
                }
                Decision::Retry {
                    delivered,
                    failure,
                    retry_after: retry_after.map(|d| self.bounded_retry_after(d)),
                }
            }
            Outcome::Config(f) => Decision::Stop(f),
        }
    }

    /// A data refusal (codes 6, 12, 13, 15), naming event `invalid` or not.
    fn refused(
        &mut self,
        ends: &[usize],
        failure: Failure,
        invalid: Option<usize>,
        maybe_size: bool,
    ) -> Decision {
        let n = ends.len();
        let bytes = ends.last().copied().unwrap_or(0);
        let size_possible = maybe_size && n > 1 && bytes > self.size_known_to_pass();
        match invalid.filter(|&i| i < n) {
            Some(i) if !size_possible => {
                if i > 0 {
                    self.accepted_prefix(ends[i - 1]);
                }
                self.dead_letter(i, failure)
            }
            Some(i) if i > 0 => {
                // The events before i were indexed; event i leads the next post,
                // where a refusal of it can be judged again.
                self.accepted_prefix(ends[i - 1]);
                Decision::Resend { delivered: i }
            }
            Some(_) => {
                // Object 0 of a post larger than any accepted: Splunk Cloud's answer
                // to an oversized body, or a bad first event. Halving tells them apart.
                self.probe = Some(n / 2);
                self.size_suspect = Some(bytes);
                Decision::Resend { delivered: 0 }
            }
            None if n == 1 => self.dead_letter(0, failure),
            None => {
                // Splunk did not say which event: post smaller until it is alone.
                self.probe = Some(n / 2);
                Decision::Resend { delivered: 0 }
            }
        }
    }

    /// Event `delivered` is bad on its own — unless Splunk has been refusing event
    /// after event alone, which is not about the events.
    fn dead_letter(&mut self, delivered: usize, failure: Failure) -> Decision {
        self.probe = None;
        self.size_suspect = None;
        if delivered == 0 && self.refused_in_a_row >= MAX_REFUSED_IN_A_ROW {
            return Decision::Stop(response::refuses_every_event(failure));
        }
        Decision::DeadLetter { delivered, failure }
    }

    /// The delivery recorded a new dead letter (the refusal breaker counts them; a
    /// refusal already kept, such as a running job's unchanged snapshot, does not count).
    pub fn dead_lettered(&mut self) {
        self.refused_in_a_row += 1;
    }

    /// The largest post (in event bytes) that Splunk is known to take whatever it
    /// holds: the largest accepted, or nothing when posts are compressed (a post
    /// no larger may compress worse and exceed a limit on the compressed body).
    fn size_known_to_pass(&self) -> usize {
        if self.settings.compressed {
            0
        } else {
            self.largest_accepted
        }
    }

    /// Splunk took the events before a refusal: their size is one it accepts.
    fn accepted_prefix(&mut self, bytes: usize) {
        self.largest_accepted = self.largest_accepted.max(bytes);
        self.refused_in_a_row = 0;
    }

    fn delivered(&mut self, bytes: usize, slow_down: Option<Failure>, now: Instant) -> Decision {
        if self.size_suspect.take().is_some() {
            // A smaller post went through after a code-6 refusal of object 0: it was
            // the size (Splunk Cloud's cap), so posts stay this size for now.
            self.shrink_to(bytes, now);
        }
        self.probe = None;
        self.largest_accepted = self.largest_accepted.max(bytes);
        self.refused_in_a_row = 0;
        self.ack_timeouts_in_a_row = 0;
        let slow_down = match slow_down {
            Some(reason) => {
                self.slow_downs_in_a_row = self.slow_downs_in_a_row.saturating_add(1);
                let doubling =
                    FIRST_SLOW_DOWN.saturating_mul(1u32 << (self.slow_downs_in_a_row - 1).min(16));
                Some(SlowDown {
                    pause: doubling
                        .min(MAX_SLOW_DOWN)
                        .min(self.settings.max_retry_after),
                    reason,
                })
            }
            None => {
                self.slow_downs_in_a_row = 0;
                None
            }
        };
        Decision::Commit {
            slow_down,
            warning: None,
        }
    }

    /// Splunk confirmed the post indexed.
    pub fn on_acked(
        &mut self,
        ends: &[usize],
        slow_down: Option<Failure>,
        now: Instant,
    ) -> Decision {
        self.delivered(ends.last().copied().unwrap_or(0), slow_down, now)
    }

    /// No acknowledgement came within the timeout: re-send the post. `cookies`: the
    /// client sends a load balancer's cookies back (for the advice).
    pub fn on_ack_timeout(&mut self, cookies: bool) -> Decision {
        self.ack_timeouts_in_a_row = self.ack_timeouts_in_a_row.saturating_add(1);
        Decision::Retry {
            delivered: 0,
            failure: response::ack_timeout(
                self.settings.ack_timeout,
                self.ack_timeouts_in_a_row,
                cookies,
            ),
            retry_after: None,
        }
    }

    /// How long to wait before the next ack poll, the oldest post having waited `oldest`.
    pub fn ack_poll_delay(&self, oldest: Duration) -> Duration {
        (oldest / 4).clamp(MIN_ACK_POLL, self.settings.ack_poll.max(MIN_ACK_POLL))
    }

    /// A `Retry-After` bounded by the setting, so a hostile HEC cannot park an
    /// integration for days.
    pub fn bounded_retry_after(&self, d: Duration) -> Duration {
        d.min(self.settings.max_retry_after)
    }

    /// The wait before attempt `failures + 1` (`failures` ≥ 1 failed in a row):
    /// exponential from `backoff_base` (a second), capped by the interval, with jitter so that many
    /// integrations failing together do not retry together — and never shorter than
    /// what Splunk asked (`retry_after`, bounded).
    pub fn back_off(&mut self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let base = (self.settings.backoff_base * (1u32 << failures.saturating_sub(1).min(16)))
            .min(self.settings.interval);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jittered = base.mul_f64(0.5 + (self.rng % 1000) as f64 / 2000.0);
        match retry_after {
            Some(d) => self.bounded_retry_after(d).max(jittered),
            None => jittered,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Settings for tests of the policy and of the loop that follows it.
    pub(crate) fn settings() -> PolicySettings {
        PolicySettings {
            max_post_bytes: 1000,
            posts_in_flight: 4,
            interval: Duration::from_secs(300),
            backoff_base: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            regrow_after: Duration::from_secs(3600),
            ack_poll: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(300),
            compressed: false,
        }
    }

    fn policy() -> Policy {
        Policy::new(settings(), 42)
    }

    /// Ends of `n` events of `size` bytes each.
    fn ends(n: usize, size: usize) -> Vec<usize> {
        (1..=n).map(|i| i * size).collect()
    }

    fn failure(code: i64) -> Failure {
        Failure {
            http_status: Some(400),
            code: Some(code),
            text: "Invalid data format".into(),
            advice: String::new(),
        }
    }

    fn data(code: i64, invalid: Option<usize>) -> Outcome {
        Outcome::Data {
            failure: failure(code),
            invalid_event: invalid,
            maybe_size: code == 6,
        }
    }

    fn ok() -> Outcome {
        Outcome::Delivered {
            ack_id: None,
            slow_down: None,
        }
    }

    fn commit() -> Decision {
        Decision::Commit {
            slow_down: None,
            warning: None,
        }
    }

    #[test]
    fn a_post_carries_as_many_events_as_fit_and_at_least_one() {
        let mut p = policy();
        let now = Instant::now();
        assert_eq!(p.plan(&ends(50, 100), now), Plan::Post(10));
        assert_eq!(p.plan(&[600, 1000, 1001], now), Plan::Post(2));
        assert_eq!(p.plan(&[1000], now), Plan::Post(1));
    }

    #[test]
    fn an_event_larger_than_any_post_is_refused_unsent() {
        let Plan::Refuse(f) = policy().plan(&[1001, 1100], Instant::now()) else {
            panic!()
        };
        assert!(f.text.contains("1001 bytes"), "{}", f.text);
    }

    #[test]
    fn a_delivered_post_is_committed_and_with_acknowledgement_waits_for_it_first() {
        let mut p = policy();
        let now = Instant::now();
        assert_eq!(p.on_answer(&ends(3, 10), ok(), false, now), commit());
        let acked = Outcome::Delivered {
            ack_id: Some(7),
            slow_down: None,
        };
        assert_eq!(
            p.on_answer(&ends(3, 10), acked.clone(), true, now),
            Decision::AwaitAck(7)
        );
        assert_eq!(p.on_acked(&ends(3, 10), None, now), commit());
        // An ack id from a token the integration does not acknowledge with is ignored.
        assert_eq!(p.on_answer(&ends(3, 10), acked, false, now), commit());
    }

    #[test]
    fn a_delivery_without_ack_id_is_committed_with_a_warning() {
        let w = failure(14);
        let d = policy().on_answer(
            &ends(2, 10),
            Outcome::Unconfirmed(w.clone()),
            true,
            Instant::now(),
        );
        assert_eq!(
            d,
            Decision::Commit {
                slow_down: None,
                warning: Some(w)
            }
        );
    }

    #[test]
    fn a_named_bad_event_is_dead_lettered_after_committing_the_events_before_it() {
        let mut p = policy();
        let now = Instant::now();
        // Splunk accepted 1000 bytes before: a refusal of a smaller post is about the event.
        p.on_answer(&ends(10, 100), ok(), false, now);
        assert_eq!(
            p.on_answer(&ends(10, 100), data(6, Some(3)), false, now),
            Decision::DeadLetter {
                delivered: 3,
                failure: failure(6)
            }
        );
        // Codes 12, 13 and 15 are never about size, even in a post never seen before.
        let mut fresh = policy();
        assert_eq!(
            fresh.on_answer(&ends(10, 100), data(15, Some(0)), false, now),
            Decision::DeadLetter {
                delivered: 0,
                failure: failure(15)
            }
        );
    }

    #[test]
    fn a_code_6_refusal_of_object_0_in_a_large_post_is_split_not_dead_lettered() {
        let mut p = policy();
        let now = Instant::now();
        assert_eq!(
            p.on_answer(&ends(8, 125), data(6, Some(0)), false, now),
            Decision::Resend { delivered: 0 }
        );
        assert_eq!(p.window(), 1, "one post at a time while isolating");
        assert_eq!(p.plan(&ends(8, 125), now), Plan::Post(4));
        // The half is accepted: it was the size (Splunk Cloud's cap), now learnt.
        assert_eq!(p.on_answer(&ends(4, 125), ok(), false, now), commit());
        assert_eq!(p.max_post_bytes(), 500);
        assert_eq!(p.plan(&ends(8, 125), now), Plan::Post(4));
        assert_eq!(p.window(), 4);
    }

    #[test]
    fn an_event_refused_alone_after_halving_is_the_bad_one_and_nothing_is_learnt() {
        let mut p = policy();
        let now = Instant::now();
        let mut n = 8;
        while n > 1 {
            assert_eq!(
                p.on_answer(&ends(n, 100), data(6, Some(0)), false, now),
                Decision::Resend { delivered: 0 }
            );
            n /= 2;
            assert_eq!(p.plan(&ends(8, 100), now), Plan::Post(n));
        }
        assert_eq!(
            p.on_answer(&ends(1, 100), data(6, Some(0)), false, now),
            Decision::DeadLetter {
                delivered: 0,
                failure: failure(6)
            }
        );
        p.dead_lettered();
        assert_eq!(p.on_answer(&ends(8, 100), ok(), false, now), commit());
        assert_eq!(
            p.max_post_bytes(),
            1000,
            "a bad event teaches nothing about size"
        );
        assert_eq!(p.plan(&ends(20, 100), now), Plan::Post(10));
    }

    #[test]
    fn a_code_6_naming_a_later_event_in_a_post_of_unknown_size_commits_before_it_and_resends_from_it(
    ) {
        let mut p = policy();
        let now = Instant::now();
        assert_eq!(
            p.on_answer(&ends(10, 100), data(6, Some(4)), false, now),
            Decision::Resend { delivered: 4 }
        );
        // The 400 bytes before it were accepted; a smaller post naming its first event
        // is judged at once.
        assert_eq!(
            p.on_answer(&ends(4, 100), data(6, Some(0)), false, now),
            Decision::DeadLetter {
                delivered: 0,
                failure: failure(6)
            }
        );
    }

    #[test]
    fn with_gzip_a_size_accepted_before_does_not_make_a_code_6_at_object_0_a_bad_event() {
        // Splunk Cloud caps the body on the wire: a post of fewer event bytes than
        // one accepted before may compress worse and exceed it.
        let mut p = Policy::new(
            PolicySettings {
                compressed: true,
                ..settings()
            },
            42,
        );
        let now = Instant::now();
        assert_eq!(p.on_answer(&ends(10, 100), ok(), false, now), commit());
        assert_eq!(
            p.on_answer(&ends(8, 100), data(6, Some(0)), false, now),
            Decision::Resend { delivered: 0 },
            "split, not dead-lettered"
        );
        // Without gzip the same answer names a bad event: the size passed before.
        let mut plain = policy();
        assert_eq!(plain.on_answer(&ends(10, 100), ok(), false, now), commit());
        assert_eq!(
            plain.on_answer(&ends(8, 100), data(6, Some(0)), false, now),
            Decision::DeadLetter {
                delivered: 0,
                failure: failure(6)
            }
        );
    }

    #[test]
    fn an_unnamed_refusal_halves_until_the_event_is_alone() {
        let mut p = policy();
        let now = Instant::now();
        assert_eq!(
            p.on_answer(&ends(10, 10), data(13, None), false, now),
            Decision::Resend { delivered: 0 }
        );
        assert_eq!(p.plan(&ends(10, 10), now), Plan::Post(5));
        assert_eq!(
            p.on_answer(&ends(1, 10), data(13, None), false, now),
            Decision::DeadLetter {
                delivered: 0,
                failure: failure(13)
            }
        );
        // An out-of-range event number is no better than none.
        assert_eq!(
            p.on_answer(&ends(4, 10), data(13, Some(9)), false, now),
            Decision::Resend { delivered: 0 }
        );
    }

    #[test]
    fn a_413_halves_the_post_size_and_a_lone_event_too_large_is_dead_lettered() {
        let mut p = policy();
        let now = Instant::now();
        let too_large = || Outcome::TooLarge(Failure::default());
        assert_eq!(
            p.on_answer(&ends(10, 100), too_large(), false, now),
            Decision::Resend { delivered: 0 }
        );
        assert_eq!(p.max_post_bytes(), 500);
        let Decision::DeadLetter {
            delivered: 0,
            failure,
        } = p.on_answer(&[900], too_large(), false, now)
        else {
            panic!()
        };
        assert!(failure.advice.contains("900 bytes"));
        // Splunk took 500 bytes before: a lone 400-byte refusal is a lowered limit.
        p.on_answer(&ends(5, 100), ok(), false, now);
        assert!(matches!(
            p.on_answer(&[400], too_large(), false, now),
            Decision::Stop(f) if f.advice.contains("proxy")
        ));
    }

    #[test]
    fn a_learnt_post_size_grows_back_after_a_quiet_period() {
        let mut p = policy();
        let t0 = Instant::now();
        p.on_answer(
            &ends(10, 100),
            Outcome::TooLarge(Failure::default()),
            false,
            t0,
        );
        p.on_answer(
            &ends(5, 100),
            Outcome::TooLarge(Failure::default()),
            false,
            t0,
        );
        assert_eq!(p.max_post_bytes(), 250);
        let hour = Duration::from_secs(3600);
        assert_eq!(p.plan(&ends(20, 50), t0 + hour / 2), Plan::Post(5));
        assert_eq!(p.plan(&ends(20, 50), t0 + hour), Plan::Post(10));
        assert_eq!(p.max_post_bytes(), 500);
        assert_eq!(p.plan(&ends(20, 50), t0 + hour * 3 / 2), Plan::Post(10));
        assert_eq!(p.plan(&ends(20, 50), t0 + hour * 2), Plan::Post(20));
        assert_eq!(p.max_post_bytes(), 1000, "never above the setting");
        assert_eq!(p.plan(&ends(40, 50), t0 + hour * 9), Plan::Post(20));
    }

    #[test]
    fn splunk_refusing_every_event_alone_stops_delivery_as_a_configuration_problem() {
        let mut p = policy();
        let now = Instant::now();
        for _ in 0..MAX_REFUSED_IN_A_ROW {
            assert!(matches!(
                p.on_answer(&[100], data(6, Some(0)), false, now),
                Decision::DeadLetter { .. }
            ));
            p.dead_lettered();
        }
        assert!(matches!(
            p.on_answer(&[100], data(6, Some(0)), false, now),
            Decision::Stop(f) if f.advice.contains("refuses every event")
        ));
        // Anything accepted in between resets the count.
        p.on_answer(&[100], ok(), false, now);
        assert!(matches!(
            p.on_answer(&[100], data(6, Some(0)), false, now),
            Decision::DeadLetter { .. }
        ));
    }

    #[test]
    fn transient_answers_keep_what_splunk_took_and_honour_a_bounded_retry_after() {
        let mut p = policy();
        let busy = |accepted, retry_after| Outcome::Transient {
            failure: failure(9),
            accepted,
            retry_after,
        };
        assert_eq!(
            p.on_answer(&ends(10, 10), busy(Some(7), None), false, Instant::now()),
            Decision::Retry {
                delivered: 7,
                failure: failure(9),
                retry_after: None
            }
        );
        assert_eq!(
            p.on_answer(
                &ends(10, 10),
                busy(None, Some(Duration::from_secs(86_400 * 30))),
                false,
                Instant::now()
            ),
            Decision::Retry {
                delivered: 0,
                failure: failure(9),
                retry_after: Some(Duration::from_secs(60))
            }
        );
        assert!(matches!(
            p.on_answer(
                &ends(1, 10),
                Outcome::Config(failure(4)),
                false,
                Instant::now()
            ),
            Decision::Stop(_)
        ));
    }

    #[test]
    fn back_off_grows_with_jitter_up_to_the_interval_and_never_undercuts_retry_after() {
        let mut p = policy();
        for failures in 1..=20 {
            let base =
                Duration::from_secs(1 << (failures - 1).min(16)).min(Duration::from_secs(300));
            let d = p.back_off(failures, None);
            assert!(d >= base / 2 && d <= base, "{failures}: {d:?}");
        }
        assert_eq!(
            p.back_off(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.back_off(1, Some(Duration::from_secs(1 << 40))),
            Duration::from_secs(60),
            "bounded by max_retry_after"
        );
        let zero = p.back_off(1, Some(Duration::ZERO));
        assert!(
            zero >= Duration::from_millis(500),
            "Retry-After: 0 is no busy loop"
        );
    }

    #[test]
    fn capacity_warnings_pace_the_next_posts_more_while_they_continue() {
        let mut p = policy();
        let now = Instant::now();
        let warned = || Outcome::Delivered {
            ack_id: None,
            slow_down: Some(failure(24)),
        };
        let pause = |d: Decision| match d {
            Decision::Commit {
                slow_down: Some(s), ..
            } => s.pause,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            pause(p.on_answer(&[10], warned(), false, now)),
            Duration::from_millis(200)
        );
        assert_eq!(
            pause(p.on_answer(&[10], warned(), false, now)),
            Duration::from_millis(400)
        );
        for _ in 0..40 {
            p.on_answer(&[10], warned(), false, now);
        }
        assert_eq!(
            pause(p.on_answer(&[10], warned(), false, now)),
            MAX_SLOW_DOWN
        );
        assert_eq!(p.on_answer(&[10], ok(), false, now), commit());
        assert_eq!(
            pause(p.on_answer(&[10], warned(), false, now)),
            Duration::from_millis(200)
        );
    }

    #[test]
    fn ack_timeouts_in_a_row_are_counted_until_an_ack_comes() {
        let mut p = policy();
        let advice = |d: Decision| match d {
            Decision::Retry { failure, .. } => failure.advice,
            other => panic!("{other:?}"),
        };
        assert!(!advice(p.on_ack_timeout(false)).contains("in a row"));
        assert!(advice(p.on_ack_timeout(false)).contains("2 batches in a row"));
        p.on_acked(&[10], None, Instant::now());
        assert!(!advice(p.on_ack_timeout(true)).contains("in a row"));
    }

    #[test]
    fn ack_polls_come_soon_then_ever_less_often() {
        let p = policy();
        assert_eq!(p.ack_poll_delay(Duration::ZERO), MIN_ACK_POLL);
        assert_eq!(
            p.ack_poll_delay(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            p.ack_poll_delay(Duration::from_secs(600)),
            Duration::from_secs(10)
        );
    }
}
