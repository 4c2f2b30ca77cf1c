//! The delivery threads: the integration actors are spread over several actix
//! arbiters (one per core unless `delivery_threads` says otherwise), each
//! integration on the one its id hashes to, so that a fleet's syncs use every core
//! rather than the one thread the Supervisor, the replays and the HTTP server's
//! System share. An actor reaches the Supervisor and the collectors by `Addr`,
//! which crosses threads; what is its own (`Rc` state, its HEC client and its
//! connections) is built on its thread and never leaves it.

use super::gate::{GateGauges, SyncGate, SYNCS_AT_ONCE, SYNC_LEASE};
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The running delivery threads; [`DeliveryThreads::stop`] stops and joins them.
pub struct DeliveryThreads {
    arbiters: Vec<Arbiter>,
    /// Each thread's sync gate: its syncs only ever wait for its own places.
    gates: Vec<SyncGate>,
}

/// Where each integration's actor runs: shared by the Supervisor, which starts them.
#[derive(Clone)]
pub struct Placement {
    handles: Arc<[ArbiterHandle]>,
    gates: Arc<[SyncGate]>,
}

impl DeliveryThreads {
    /// Starts `n` threads (at least one), sharing [`SYNCS_AT_ONCE`] places between
    /// them, counted in `gauges`. Must run inside an actix System.
    pub fn start(n: usize, gauges: &GateGauges) -> DeliveryThreads {
        let n = n.max(1);
        DeliveryThreads {
            arbiters: (0..n).map(|_| Arbiter::new()).collect(),
            gates: SyncGate::split(SYNCS_AT_ONCE, n, SYNC_LEASE, gauges),
        }
    }

    /// Where the Supervisor starts each integration's actor.
    pub fn placement(&self) -> Placement {
        Placement {
            handles: self.arbiters.iter().map(Arbiter::handle).collect(),
            gates: self.gates.iter().cloned().collect(),
        }
    }

    /// Stops every thread and waits until each has ended, for up to `deadline`
    /// in all. The Supervisor's shutdown has wound the actors down before: what is
    /// left on a thread (an actor that ignored its stop) is dropped with it. A
    /// thread still busy after `deadline` — something blocking outside any
    /// future — is left behind, and said so, rather than hang the shutdown.
    pub async fn stop(mut self, deadline: Duration) {
        let arbiters = std::mem::take(&mut self.arbiters);
        let mut stopping = Vec::with_capacity(arbiters.len());
        for arbiter in arbiters {
            let (ended, gone) = tokio::sync::oneshot::channel::<()>();
            // Never finishes: dropped with the thread's other tasks when its runtime
            // goes, which closes `gone` — the sign the thread is about to end.
            arbiter.spawn(async move {
                let _ended = ended;
                std::future::pending::<()>().await
            });
            arbiter.stop();
            stopping.push((arbiter, gone));
        }
        let until = tokio::time::Instant::now() + deadline;
        for (i, (arbiter, gone)) in stopping.into_iter().enumerate() {
            if tokio::time::timeout_at(until, gone).await.is_err() {
                log::error!(
                    "shutdown: delivery thread {i} did not end within {deadline:?} of being told; left behind"
                );
                continue;
            }
            // Its tasks are gone, but dropping its runtime still waits for the blocking
            // work it started (a DNS lookup that never answers): joined on a thread of
            // its own, so that only the same deadline is waited for.
            let (joined, join) = tokio::sync::oneshot::channel();
            let joiner = std::thread::Builder::new()
                .name(format!("siemsync-join-{i}"))
                .spawn(move || {
                    let _ = joined.send(arbiter.join().is_ok());
                });
            if let Err(e) = joiner {
                log::error!("shutdown: delivery thread {i} left behind unjoined: {e}");
                continue;
            }
            match tokio::time::timeout_at(until, join).await {
                Ok(Ok(true)) => {}
                Ok(_) => log::error!("shutdown: delivery thread {i} ended with a panic"),
                Err(_) => log::error!(
                    "shutdown: delivery thread {i} still waits for blocking work {deadline:?} after being told; left behind"
                ),
            }
        }
    }
}

impl Drop for DeliveryThreads {
    /// Not stopped through [`DeliveryThreads::stop`] (the service failed to start
    /// after them): the threads are told to end, without waiting for them.
    fn drop(&mut self) {
        for arbiter in &self.arbiters {
            arbiter.stop();
        }
    }
}

impl Placement {
    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there is none (never: [`DeliveryThreads::start`] starts at least one).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The thread integration `id`'s actor runs on, with that thread's sync gate:
    /// the same for the same id as long as the number of threads stays the same
    /// and the thread runs. A thread that has ended (a panic that took its runtime
    /// down) would never build the actor: the next live one is taken, and `None`
    /// answered when none is left.
    pub fn thread_for(&self, id: &Uuid) -> Option<(&ArbiterHandle, &SyncGate)> {
        let n = self.handles.len();
        let first = index(id, n);
        (0..n)
            .map(|k| (first + k) % n)
            // `spawn` answers whether the thread still takes work.
            .find(|&i| self.handles[i].spawn(std::future::ready(())))
            .map(|i| (&self.handles[i], &self.gates[i]))
    }
}

/// Which of `n` threads (n ≥ 1) runs integration `id`: a stable hash of the id (the
/// splitmix64 finaliser over both halves), so that ids made some other way than
/// at random (UUID v8) spread as evenly as random ones.
pub fn index(id: &Uuid, n: usize) -> usize {
    let v = id.as_u128();
    let mut x = (v as u64) ^ ((v >> 64) as u64);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x % n.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn stopping_returns_by_its_deadline_while_a_blocking_task_runs_on_a_thread() {
        let threads = DeliveryThreads::start(1, &GateGauges::default());
        let (started, running) = std::sync::mpsc::channel();
        threads.arbiters[0].spawn(async move {
            // Like a DNS lookup that never answers: the runtime's blocking pool waits for it.
            drop(tokio::task::spawn_blocking(move || {
                let _ = started.send(());
                std::thread::sleep(Duration::from_secs(5));
            }));
        });
        running
            .recv_timeout(Duration::from_secs(10))
            .expect("the blocking task started");
        let t0 = std::time::Instant::now();
        threads.stop(Duration::from_millis(100)).await;
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "stop(100 ms) took {:?}",
            t0.elapsed()
        );
    }

    #[actix_rt::test]
    async fn an_integration_whose_thread_has_ended_goes_to_a_live_one_or_to_none() {
        let mut threads = DeliveryThreads::start(2, &GateGauges::default());
        let placement = threads.placement();
        let id = (0u128..)
            .map(Uuid::from_u128)
            .find(|id| index(id, 2) == 0)
            .unwrap();
        let first = threads.arbiters.remove(0);
        first.stop();
        first.join().unwrap();
        let (thread, _) = placement
            .thread_for(&id)
            .expect("the other thread still runs");
        assert!(
            thread.spawn(std::future::ready(())),
            "placed on the thread that ended"
        );
        let second = threads.arbiters.remove(0);
        second.stop();
        second.join().unwrap();
        assert!(placement.thread_for(&id).is_none(), "no thread runs");
    }
    #[test]
    fn an_integration_always_hashes_to_the_same_thread_and_ids_spread_evenly() {
        let id: Uuid = "0b8f6a52-3c1d-4e0f-9a7b-5d2c8e1f4a60".parse().unwrap();
        assert_eq!(index(&id, 4), index(&id, 4));
        assert_eq!(index(&id, 1), 0);
        // Sequential ids (not random at all) still spread within 10 % of even.
        let mut per = [0usize; 4];
        for i in 0..40_000u128 {
            per[index(&Uuid::from_u128(i), 4)] += 1;
        }
        assert!(
            per.iter().all(|&c| (9_000..=11_000).contains(&c)),
            "{per:?}"
        );
    }
}
