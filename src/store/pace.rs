//! Test builds only (`test-hooks`): slows the store's long operations down, so that
//! a test can catch the service in the middle of one — a retention sweep of many
//! batches, or a replay's count of a large account — without storing millions of
//! events. A build without the feature has the same calls, doing nothing.

use super::SledStore as Store;
#[cfg(feature = "test-hooks")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "test-hooks")]
use std::time::Duration;

/// Test builds only: how much slower the store is made. The default changes nothing.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Pace {
    /// Audit events a retention sweep deletes per batch (`None`: the normal 10,000).
    pub sweep_batch_events: Option<u64>,
    /// Added after each batch of a retention sweep, as a slow disk would.
    pub sweep_batch_pause: Duration,
    /// Added before each count of a replay's window, as a large account would.
    pub count_pause: Duration,
}

/// The pace set on one store, and the sweep batches done so far.
#[cfg(feature = "test-hooks")]
#[derive(Default)]
pub(super) struct Paced {
    pace: std::sync::Mutex<Pace>,
    sweep_batches: AtomicU64,
    /// Sweep passes (reads followed by a write decision), whether or not they removed anything.
    sweep_passes: AtomicU64,
    /// Whether sweep passes wait between their read and their write (`hold_sweep_writes`).
    hold_writes: std::sync::Mutex<bool>,
    released: std::sync::Condvar,
    /// Sweep passes waiting there now.
    waiting: AtomicU64,
}

impl Store {
    #[cfg(feature = "test-hooks")]
    fn pace(&self) -> Pace {
        *self
            .inner
            .paced
            .pace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Test builds only: slows this store (every clone of it) down to `pace`.
    #[cfg(feature = "test-hooks")]
    pub fn set_pace(&self, pace: Pace) {
        *self
            .inner
            .paced
            .pace
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = pace;
    }

    /// Test builds only: how many retention sweep batches this store has done.
    #[cfg(feature = "test-hooks")]
    pub fn sweep_batches(&self) -> u64 {
        self.inner.paced.sweep_batches.load(Ordering::Relaxed)
    }

    /// Test builds only: how many retention sweep passes this store has run, counting
    /// those that found nothing to remove.
    #[cfg(feature = "test-hooks")]
    pub fn sweep_passes(&self) -> u64 {
        self.inner.paced.sweep_passes.load(Ordering::Relaxed)
    }

    /// Audit events a sweep deletes per batch: `normal`, unless a test set another.
    pub(super) fn sweep_batch_events(&self, normal: u64) -> u64 {
        #[cfg(feature = "test-hooks")]
        if let Some(n) = self.pace().sweep_batch_events {
            return n.max(1);
        }
        normal
    }

    /// A sweep batch was written.
    pub(super) fn sweep_batch_done(&self) {
        #[cfg(feature = "test-hooks")]
        {
            self.inner
                .paced
                .sweep_batches
                .fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(self.pace().sweep_batch_pause);
        }
    }

    /// Test builds only: while `hold` is true, every sweep pass waits between reading
    /// what it will remove and writing that down, so a test can show what the store
    /// does meanwhile.
    #[cfg(feature = "test-hooks")]
    pub fn hold_sweep_writes(&self, hold: bool) {
        let paced = &self.inner.paced;
        *paced.hold_writes.lock().unwrap_or_else(|p| p.into_inner()) = hold;
        paced.released.notify_all();
    }

    /// Test builds only: how many sweep passes wait in [`Store::hold_sweep_writes`] now.
    #[cfg(feature = "test-hooks")]
    pub fn sweep_writes_held(&self) -> u64 {
        self.inner.paced.waiting.load(Ordering::Relaxed)
    }

    /// A sweep pass has read what it will remove and is about to write.
    pub(super) fn before_sweep_write(&self) {
        #[cfg(feature = "test-hooks")]
        {
            let paced = &self.inner.paced;
            paced.sweep_passes.fetch_add(1, Ordering::Relaxed);
            let mut held = paced.hold_writes.lock().unwrap_or_else(|p| p.into_inner());
            paced.waiting.fetch_add(1, Ordering::Relaxed);
            while *held {
                held = paced.released.wait(held).unwrap_or_else(|p| p.into_inner());
            }
            paced.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Called by the collectors before they count a replay's window.
    pub fn before_count(&self) {
        #[cfg(feature = "test-hooks")]
        std::thread::sleep(self.pace().count_pause);
    }
}
