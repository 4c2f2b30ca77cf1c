//! Group commit: every writer that needs its data on disk before it answers waits
//! for one shared `fsync`, so concurrent ingest requests share flushes instead of
//! queueing one each.

use std::sync::mpsc;
use std::sync::Mutex;
use tokio::sync::oneshot;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the flush thread; dropping the last one ends the thread.
pub struct Flusher {
    tx: Mutex<mpsc::Sender<Waiter>>,
}

impl Flusher {
    pub fn start(db: sled::Db) -> Flusher {
        let (tx, rx) = mpsc::channel::<Waiter>();
        std::thread::Builder::new()
            .name("siemsync-flush".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    // Everyone who asked before this flush starts is covered by it.
                    let mut waiters = vec![first];
                    waiters.extend(rx.try_iter());
                    let result = db.flush().map(|_| ()).map_err(|e| e.to_string());
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .expect("spawning the flush thread");
        Flusher { tx: Mutex::new(tx) }
    }

    /// Resolves once everything written before the call is durable.
    pub async fn flush(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .lock()
            .map_err(|_| "flush thread lock poisoned".to_string())?
            .send(tx)
            .map_err(|_| "the flush thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the flush thread has stopped".to_string())?
    }
}
