//! Liveness by progress (quickwit's heartbeat), and the wind-down at shutdown: the
//! link between one delivering actor (an IntegrationActor or a ReplayActor) and its
//! Supervisor.
//!
//! The actor's side, [`Pulse`], says as it works by when it will show progress
//! next: a post in flight promises its answer within the longest a post may take
//! (the client's own timeouts), a wait for a known moment promises to be back soon
//! after it, and an actor between syncs promises nothing. The Supervisor's side,
//! [`Heartbeat`], reads that promise cheaply (one atomic) and finds an actor that
//! broke it — one stuck in a post its timeout did not end — where "its mailbox is
//! still open" would call it alive for ever. The same link carries the other way
//! the Supervisor's request to wind down (finish the posts in flight, start none),
//! and tells the Supervisor when the actor is gone for good.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The `due` value of an actor that promises nothing (between syncs, or waiting by design).
const IDLE: u64 = u64::MAX;
/// The `due` value of an actor whose `stopped()` ran: it said how it ended.
const ENDED: u64 = u64::MAX - 1;

/// A new link for one actor: the Supervisor keeps the [`Heartbeat`], the actor the
/// [`Pulse`]. `step` is the longest one step of delivery may take without progress
/// (a post, with the health probe that may follow its failure).
pub fn pair(step: Duration) -> (Heartbeat, Pulse) {
    let origin = Instant::now();
    let due = Arc::new(AtomicU64::new(IDLE));
    // A new actor has something to show at once.
    let changed = Arc::new(AtomicBool::new(true));
    let (drain, draining) = watch::channel(false);
    (
        Heartbeat {
            origin,
            due: due.clone(),
            drain,
            changed: changed.clone(),
        },
        Pulse {
            origin,
            due,
            draining,
            step,
            changed,
        },
    )
}

/// The Supervisor's side: reads the actor's promise, asks it to wind down, and
/// learns when it is gone.
#[derive(Debug)]
pub struct Heartbeat {
    origin: Instant,
    due: Arc<AtomicU64>,
    drain: watch::Sender<bool>,
    changed: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Whether what the actor shows of itself may have changed since this was last
    /// asked (and from now on, not until it changes again). Asked before the actor
    /// is: a change made meanwhile is either in its answer or asked about next time.
    pub fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }

    /// How long past its promised progress the actor is at `now` (`None`: it is on
    /// time, or promised nothing).
    pub fn overdue(&self, now: Instant) -> Option<Duration> {
        let due = self.due.load(Ordering::Relaxed);
        if due == IDLE || due == ENDED {
            return None;
        }
        let due = self.origin + Duration::from_millis(due);
        now.checked_duration_since(due).filter(|d| !d.is_zero())
    }

    /// Whether the actor (or any future of it) still exists. An actor that panicked
    /// never runs `stopped()`: its pulse being dropped is the sign.
    pub fn alive(&self) -> bool {
        !self.drain.is_closed()
    }

    /// Whether the actor is gone without having said so (`Pulse::ended`): only a
    /// panic ends an actor without running its `stopped()`.
    pub fn vanished(&self) -> bool {
        !self.alive() && self.due.load(Ordering::Relaxed) != ENDED
    }

    /// Asks the actor to finish the posts it has in flight and to start no other.
    pub fn drain(&self) {
        self.drain.send_replace(true);
    }

    /// Resolves once the actor and all its futures are dropped.
    pub async fn gone(&self) {
        self.drain.closed().await
    }
}

/// The actor's side: promises progress as it works, and hears the wind-down.
/// Cloned into the actor's own futures; the actor is gone once every clone is.
#[derive(Debug, Clone)]
pub struct Pulse {
    origin: Instant,
    due: Arc<AtomicU64>,
    draining: watch::Receiver<bool>,
    step: Duration,
    changed: Arc<AtomicBool>,
}

impl Pulse {
    /// A pulse no Supervisor watches (unit tests of the delivery loop).
    pub fn detached(step: Duration) -> Pulse {
        pair(step).1
    }

    /// Work that started at `since` (a post sent then, or now) shows progress within
    /// one step of it.
    pub fn busy_since(&self, since: Instant) {
        let due = since.saturating_duration_since(self.origin) + self.step;
        self.due.store(
            due.as_millis().min(u128::from(ENDED - 1)) as u64,
            Ordering::Relaxed,
        );
    }

    /// The actor ends by itself (its `stopped()` runs) and tells the Supervisor so.
    pub fn ended(&self) {
        self.due.store(ENDED, Ordering::Relaxed);
    }

    /// Nothing to promise: between syncs, or a wait the actor chose (a back-off).
    pub fn idle(&self) {
        self.due.store(IDLE, Ordering::Relaxed);
    }

    /// The flag that says what the actor shows of itself may have changed
    /// ([`Heartbeat::take_changed`]).
    pub fn changed(&self) -> Arc<AtomicBool> {
        self.changed.clone()
    }

    /// Whether the Supervisor asked to wind down.
    pub fn draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Resolves once the Supervisor asks to wind down; never, if it cannot any more.
    pub async fn drained(&self) {
        let mut rx = self.draining.clone();
        if rx.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promise_broken_by_more_than_nothing_is_overdue() {
        let (hb, pulse) = pair(Duration::from_millis(100));
        let start = Instant::now();
        assert_eq!(hb.overdue(start + Duration::from_secs(3600)), None, "idle");
        pulse.busy_since(start);
        assert_eq!(hb.overdue(start + Duration::from_millis(50)), None);
        let late = hb.overdue(start + Duration::from_millis(400)).unwrap();
        assert!(late >= Duration::from_millis(290), "{late:?}");
        pulse.idle();
        assert_eq!(hb.overdue(start + Duration::from_millis(400)), None);
    }

    #[actix_rt::test]
    async fn the_supervisor_hears_when_the_last_clone_of_the_pulse_is_gone() {
        let (hb, pulse) = pair(Duration::from_millis(100));
        let copy = pulse.clone();
        assert!(!copy.draining());
        hb.drain();
        assert!(copy.draining());
        copy.drained().await;
        drop(pulse);
        assert!(hb.alive(), "a clone still lives");
        drop(copy);
        assert!(!hb.alive());
        assert!(hb.vanished(), "gone without a word: a panic");
        hb.gone().await;
        let (hb, pulse) = pair(Duration::from_millis(100));
        pulse.ended();
        drop(pulse);
        assert!(!hb.alive() && !hb.vanished(), "it said it ended");
    }
}
