//! The sync gate: how many syncs may start together, and who starts next.
//!
//! At start every integration syncs at once, and 100,000 connections opened
//! together had the service run out of file descriptors and memory. A sync takes a
//! place before it starts and gives it back when it ends or when its lease runs out,
//! whichever is first: one held up by a hanging Splunk goes on without its place
//! (bounded by its own timeouts). So the gate bounds the syncs under way that
//! started less than a lease ago, not all of them: syncs at hanging Splunks can
//! add up to `places` more each lease.
//!
//! Each delivery thread has its own gate (the places split between them): a place
//! goes back when its holder's lease timer fires on the holder's thread, and a
//! place only ever goes to a sync on the same thread, so a thread blocked in
//! synchronous work holds up its own syncs only. A freed place goes to the waiting
//! accounts in turn (round robin), one sync of each, so an account with thousands of
//! syncs waiting keeps another account's sync waiting about one lease, not until
//! all of its own have started.

use super::delivery::Halt;
use super::heartbeat::Pulse;
use crate::model::AccountId;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::{hash_map::Entry, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Places on every delivery thread together: far more than the collectors and one
/// core per thread serve at a time, so a tick takes no longer for them.
pub const SYNCS_AT_ONCE: usize = 1024;
/// How long a sync keeps its place at most: one held up by a slow Splunk then goes
/// on without it (keeping its own connection), so hung Splunks delay other syncs'
/// start by about a second, not by their timeouts.
pub const SYNC_LEASE: Duration = Duration::from_secs(1);

/// What the gates show on `/metrics` (shared by the gates of every thread).
#[derive(Debug, Clone, Default)]
pub struct GateGauges {
    /// Places held (`siemsync_sync_places_in_use`).
    pub in_use: Gauge,
    /// Syncs waiting for a place (`siemsync_syncs_waiting`).
    pub waiting: Gauge,
}

/// One delivery thread's places; cloned into each integration actor of the thread.
#[derive(Debug, Clone)]
pub struct SyncGate {
    inner: Arc<Inner>,
    lease: Duration,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    gauges: GateGauges,
}

#[derive(Debug, Default)]
struct State {
    /// Places nobody holds. Never more than 0 while a sync waits: a freed place
    /// goes straight to a waiter.
    free: usize,
    next_id: u64,
    /// Accounts with syncs in `queues`, in the order they get the next places.
    turns: VecDeque<AccountId>,
    /// Per account, its waiting syncs first come first; ids no longer in `waiting`
    /// (given up) are skipped when reached.
    queues: HashMap<AccountId, VecDeque<u64>>,
    /// Syncs waiting, and how to wake each.
    waiting: HashMap<u64, Waker>,
    /// Syncs given a place they have not taken yet.
    granted: HashSet<u64>,
}

/// Capacity a gate's queues keep once nobody waits.
const QUEUES_KEPT: usize = 64;

impl State {
    /// At start every integration's first sync waits here at once (100,000 at
    /// 100,000 integrations): once the last has its place, the queues give back what
    /// they grew to (about 13 MiB at 100,000) instead of keeping it for good.
    fn shrink_when_nobody_waits(&mut self) {
        if !self.waiting.is_empty() || self.waiting.capacity() <= QUEUES_KEPT {
            return;
        }
        self.waiting.shrink_to(QUEUES_KEPT);
        self.queues.shrink_to(QUEUES_KEPT);
        self.turns.shrink_to(QUEUES_KEPT);
        self.granted.shrink_to(QUEUES_KEPT);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing in the lock panics half-way through a change; a poisoned state
        // is as consistent as it was.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place came free: it goes to the next account's first sync waiting, or
    /// back to the free ones. Answers whom to wake (outside the lock).
    fn hand_over(&self, s: &mut State) -> Option<Waker> {
        while let Some(account) = s.turns.pop_front() {
            let Some(queue) = s.queues.get_mut(&account) else {
                continue;
            };
            while let Some(id) = queue.pop_front() {
                if let Some(waker) = s.waiting.remove(&id) {
                    s.granted.insert(id);
                    self.gauges.waiting.dec();
                    if queue.is_empty() {
                        s.queues.remove(&account);
                    } else {
                        s.turns.push_back(account);
                    }
                    s.shrink_when_nobody_waits();
                    return Some(waker);
                }
            }
            s.queues.remove(&account);
        }
        s.free += 1;
        self.gauges.in_use.dec();
        None
    }
}

/// A place held: given back (to the next waiter) when dropped.
struct Place {
    inner: Arc<Inner>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.inner.lock();
            self.inner.hand_over(&mut s)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// One sync's wait for a place; gives up its turn (or a place granted but not yet
/// taken) when dropped, as when the actor stops while it waits.
struct Waiting {
    inner: Arc<Inner>,
    account: AccountId,
    id: Option<u64>,
    done: bool,
}

impl Waiting {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Place> {
        let mut s = self.inner.lock();
        let place = || Place {
            inner: self.inner.clone(),
        };
        match self.id {
            None if s.free > 0 => {
                s.free -= 1;
                self.inner.gauges.in_use.inc();
                self.done = true;
                Poll::Ready(place())
            }
            None => {
                let id = s.next_id;
                s.next_id += 1;
                s.waiting.insert(id, cx.waker().clone());
                self.inner.gauges.waiting.inc();
                match s.queues.entry(self.account.clone()) {
                    Entry::Occupied(mut q) => q.get_mut().push_back(id),
                    Entry::Vacant(v) => {
                        v.insert(VecDeque::from([id]));
                        s.turns.push_back(self.account.clone());
                    }
                }
                self.id = Some(id);
                Poll::Pending
            }
            Some(id) if s.granted.remove(&id) => {
                self.done = true;
                Poll::Ready(place())
            }
            Some(id) => {
                if let Some(w) = s.waiting.get_mut(&id) {
                    w.clone_from(cx.waker());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let (Some(id), false) = (self.id, self.done) else {
            return;
        };
        let waker = {
            let mut s = self.inner.lock();
            if s.granted.remove(&id) {
                self.inner.hand_over(&mut s)
            } else {
                if s.waiting.remove(&id).is_some() {
                    self.inner.gauges.waiting.dec();
                }
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl SyncGate {
    /// A gate of `places` (at least one), each held for `lease` at most.
    pub fn new(places: usize, lease: Duration, gauges: GateGauges) -> SyncGate {
        SyncGate {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    free: places.max(1),
                    ..State::default()
                }),
                gauges,
            }),
            lease,
        }
    }

    /// One gate per delivery thread, `places` split evenly between them (at least
    /// one each), all counted in the same `gauges`.
    pub fn split(
        places: usize,
        threads: usize,
        lease: Duration,
        gauges: &GateGauges,
    ) -> Vec<SyncGate> {
        let each = (places / threads.max(1)).max(1);
        (0..threads.max(1))
            .map(|_| SyncGate::new(each, lease, gauges.clone()))
            .collect()
    }

    /// Runs `cycle`, a sync of `account`, once it has a place; the place goes back
    /// when the cycle ends or its lease runs out, whichever is first. `None`: asked
    /// to wind down while waiting, the cycle never started.
    pub async fn run<F>(
        &self,
        account: &AccountId,
        pulse: &Pulse,
        cycle: F,
    ) -> Option<Result<(), Halt>>
    where
        F: std::future::Future<Output = Result<(), Halt>>,
    {
        let mut waiting = Waiting {
            inner: self.inner.clone(),
            account: account.clone(),
            id: None,
            done: false,
        };
        let place = tokio::select! {
            place = std::future::poll_fn(|cx| waiting.poll(cx)) => place,
            _ = pulse.drained() => return None,
        };
        drop(waiting);
        let mut cycle = std::pin::pin!(cycle);
        tokio::select! {
            ended = &mut cycle => return Some(ended),
            _ = actix_rt::time::sleep(self.lease) => {}
        }
        drop(place);
        Some(cycle.await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_rt::Arbiter;
    use std::cell::Cell;
    use std::time::Instant;

    fn account(name: &str) -> AccountId {
        AccountId::parse(name).unwrap()
    }

    /// A cycle that notes when it starts and ends once `end` is sent (or dropped).
    async fn cycle(
        started: &Cell<bool>,
        end: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<(), Halt> {
        started.set(true);
        let _ = end.await;
        Ok(())
    }

    async fn yield_a_while() {
        for _ in 0..20 {
            actix_rt::task::yield_now().await;
        }
    }

    #[actix_rt::test]
    async fn a_sync_waits_for_a_place_until_one_ends_or_its_lease_runs_out() {
        let (_heartbeat, pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        let acme = account("acme");
        let (a, b, c) = (Cell::new(false), Cell::new(false), Cell::new(false));
        let gate = SyncGate::new(1, Duration::from_secs(3600), GateGauges::default());
        let (end_a, rx_a) = tokio::sync::oneshot::channel();
        let (end_b, rx_b) = tokio::sync::oneshot::channel();
        let first = gate.run(&acme, &pulse, cycle(&a, rx_a));
        let second = gate.run(&acme, &pulse, cycle(&b, rx_b));
        let both = futures_util::future::join(first, second);
        let waiting = async {
            yield_a_while().await;
            assert!(a.get() && !b.get(), "one place: the second waits");
            end_a.send(()).unwrap();
            yield_a_while().await;
            assert!(b.get(), "the first ended: the second runs");
            end_b.send(()).unwrap();
        };
        let ((x, y), ()) = futures_util::future::join(both, waiting).await;
        assert!(matches!((x, y), (Some(Ok(())), Some(Ok(())))));

        // A sync that does not end gives its place back after its lease.
        let gate = SyncGate::new(1, Duration::from_millis(50), GateGauges::default());
        let (_never, rx) = tokio::sync::oneshot::channel();
        let t0 = Instant::now();
        let stuck = gate.run(&acme, &pulse, cycle(&a, rx));
        let next = async {
            yield_a_while().await;
            gate.run(&acme, &pulse, async {
                c.set(true);
                Ok(())
            })
            .await
        };
        tokio::select! {
            _ = stuck => panic!("the stuck cycle ended"),
            r = next => assert!(matches!(r, Some(Ok(())))),
        }
        assert!(c.get() && t0.elapsed() >= Duration::from_millis(50));
    }

    #[actix_rt::test]
    async fn the_queues_of_a_start_give_their_memory_back_once_nobody_waits() {
        // At start every integration's first sync waits at once; what the queues grow
        // to must not stay held for good by an idle service.
        let (_heartbeat, pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        let gate = SyncGate::new(8, Duration::from_secs(3600), GateGauges::default());
        let syncs = (0..5_000).map(|n| {
            let account = account(&format!("tenant-{n}"));
            let gate = gate.clone();
            let pulse = pulse.clone();
            async move {
                gate.run(&account, &pulse, async {
                    yield_a_while().await;
                    Ok(())
                })
                .await
            }
        });
        let grown = async {
            yield_a_while().await;
            gate.inner.lock().waiting.capacity()
        };
        let (ended, grown) =
            futures_util::future::join(futures_util::future::join_all(syncs), grown).await;
        assert!(ended.iter().all(|r| matches!(r, Some(Ok(())))));
        assert!(grown >= 4_000, "the waits never queued ({grown})");
        let s = gate.inner.lock();
        let held = [
            s.waiting.capacity(),
            s.queues.capacity(),
            s.turns.capacity(),
            s.granted.capacity(),
        ];
        assert!(
            held.iter().all(|c| *c <= 2 * QUEUES_KEPT),
            "the queues kept capacities {held:?}"
        );
    }

    /// Waits, for up to 10 s, until `cond` holds.
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !cond() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "waited 10 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[actix_rt::test]
    async fn one_accounts_many_hanging_syncs_keep_another_account_waiting_two_leases_at_most() {
        let lease = Duration::from_millis(200);
        let gauges = GateGauges::default();
        let gate = SyncGate::new(2, lease, gauges.clone());
        let (_heartbeat, pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        // Account A: 20 syncs at a Splunk that never answers.
        for _ in 0..20 {
            let (gate, pulse) = (gate.clone(), pulse.clone());
            actix_rt::spawn(async move {
                gate.run(&account("a"), &pulse, std::future::pending())
                    .await
            });
        }
        yield_a_while().await;
        assert_eq!((gauges.in_use.get(), gauges.waiting.get()), (2, 18));
        let t0 = Instant::now();
        let b = gate.run(&account("b"), &pulse, async { Ok(()) }).await;
        assert!(matches!(b, Some(Ok(()))));
        assert!(
            t0.elapsed() < lease * 2 + Duration::from_millis(200),
            "account B waited {:?} behind account A's hanging syncs (lease {lease:?})",
            t0.elapsed()
        );
    }

    #[actix_rt::test]
    async fn a_delivery_thread_blocked_in_synchronous_work_holds_up_no_other_threads_syncs() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        use std::sync::Arc;
        let lease = Duration::from_millis(200);
        let gates = SyncGate::split(2, 2, lease, &GateGauges::default());
        let (gate_a, gate_b) = (gates[0].clone(), gates[1].clone());
        let (_heartbeat, pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        let acme = account("acme");
        let (thread_a, thread_b) = (Arbiter::new(), Arbiter::new());
        let flags: [Arc<AtomicBool>; 5] = Default::default();
        let [held_a, held_b, queued_a, blocked_a, started_b] = flags.clone();
        // Each thread's place is taken by a sync that never ends.
        for (thread, gate, held) in [(&thread_a, &gate_a, held_a), (&thread_b, &gate_b, held_b)] {
            let (gate, pulse, acme) = (gate.clone(), pulse.clone(), acme.clone());
            thread.spawn(async move {
                let _ = gate
                    .run(&acme, &pulse, async {
                        held.store(true, SeqCst);
                        std::future::pending().await
                    })
                    .await;
            });
        }
        wait_until("both places taken", || {
            flags[0].load(SeqCst) && flags[1].load(SeqCst)
        });
        // A sync waits on each thread, A's first (with one gate for both, the place
        // B's lease frees would go to it).
        let (g, p, acme_a) = (gate_a.clone(), pulse.clone(), acme.clone());
        thread_a.spawn(async move {
            queued_a.store(true, SeqCst);
            let _ = g.run(&acme_a, &p, async { Ok(()) }).await;
        });
        wait_until("A's sync waiting", || flags[2].load(SeqCst));
        let (g, p) = (gate_b.clone(), pulse.clone());
        thread_b.spawn(async move {
            let _ = g
                .run(&acme, &p, async {
                    started_b.store(true, SeqCst);
                    Ok(())
                })
                .await;
        });
        // Thread A is stuck in synchronous work (a slow disk) for 3 s.
        thread_a.spawn(async move {
            blocked_a.store(true, SeqCst);
            std::thread::sleep(Duration::from_secs(3));
        });
        wait_until("thread A blocked", || flags[3].load(SeqCst));
        let t0 = Instant::now();
        wait_until("B's sync started", || flags[4].load(SeqCst));
        assert!(
            t0.elapsed() < lease * 2 + Duration::from_millis(200),
            "B's sync waited {:?} for blocked thread A (lease {lease:?})",
            t0.elapsed()
        );
        thread_a.stop();
        thread_b.stop();
    }

    #[actix_rt::test]
    async fn a_sync_waiting_for_a_place_at_shutdown_never_starts() {
        let (heartbeat, pulse) = super::super::heartbeat::pair(Duration::from_secs(1));
        let acme = account("acme");
        let gate = SyncGate::new(1, Duration::from_secs(3600), GateGauges::default());
        let (a, b) = (Cell::new(false), Cell::new(false));
        let (_end, rx) = tokio::sync::oneshot::channel();
        let busy = gate.run(&acme, &pulse, cycle(&a, rx));
        let (_end_b, rx_b) = tokio::sync::oneshot::channel();
        let waiting = async {
            yield_a_while().await;
            heartbeat.drain();
            gate.run(&acme, &pulse, cycle(&b, rx_b)).await
        };
        tokio::select! {
            _ = busy => panic!("the busy cycle ended"),
            r = waiting => assert!(r.is_none(), "the wait was cut short: no cycle ran"),
        }
        assert!(!b.get());
    }
}
