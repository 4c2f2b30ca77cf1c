//! Group commit: every writer that needs its data on disk before it answers waits
//! for one shared `fsync`, so concurrent ingest requests share flushes instead of
//! queueing one each.

use std::sync::mpsc;
use std::sync::Mutex;
use tokio::sync::oneshot;

/// Why a flush did not make the data durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    /// sled's fsync failed (a full or failing disk), in sled's words. sled's error is
    /// not `Clone`, and every waiter of the shared flush gets the answer.
    #[error("{0}")]
    Disk(String),
    /// The flush thread has ended: the store is being dropped.
    #[error("the flush thread has stopped")]
    Stopped,
}

type Waiter = oneshot::Sender<Result<(), FlushError>>;

/// Handle to the flush thread; dropping the last one ends the thread.
pub struct Flusher {
    tx: Mutex<mpsc::Sender<Waiter>>,
}

impl Flusher {
    /// Starts the flush thread of `db`.
    pub fn start(db: sled::Db) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("siemsync-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everyone who asked before this flush starts is covered by it.
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db
                        .flush()
                        .map(|_| ())
                        .map_err(|e| FlushError::Disk(e.to_string()));
                    for w in waiters {
                        // A waiter that gave up (its request was dropped) needs no answer.
                        let _ = w.send(result.clone());
                    }
                }
            })?;
        Ok(Flusher { tx: Mutex::new(tx) })
    }

    /// Resolves once everything written before the call is durable.
    pub async fn flush(&self) -> Result<(), FlushError> {
        let (tx, rx) = oneshot::channel();
        // A panic while holding the lock cannot leave the sender half-used.
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(tx)
            .map_err(|_| FlushError::Stopped)?;
        rx.await.map_err(|_| FlushError::Stopped)?
    }
}
