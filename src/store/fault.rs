//! The store's fault: a write that fails for a reason of the disk (full, read-only)
//! is noted at once, so ingest answers 503 and delivery pauses; a watcher thread
//! then checks the disk and reopens sled once it takes writes again.

use super::{Engine, SledStore as Store, StoreError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Store {
    /// Why the store cannot take writes right now (a full or read-only disk), if so.
    pub fn fault(&self) -> Option<String> {
        self.inner
            .fault
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_fault(&self, reason: Option<String>) {
        if reason.is_some() {
            // Writes answered with an error may or may not be on disk: the in-memory
            // dedup windows are read again from what the store really holds.
            self.recent().clear();
        }
        let mut fault = self.inner.fault.lock().unwrap_or_else(|p| p.into_inner());
        match (&*fault, &reason) {
            (None, Some(r)) => log::error!(
                "store: cannot write to {}: {r}; ingest answers 503 and delivery pauses until it can",
                self.inner.dir.display()
            ),
            (Some(_), None) => log::warn!(
                "store: {} takes writes again; ingest and delivery resume",
                self.inner.dir.display()
            ),
            _ => {}
        }
        *fault = reason;
    }

    /// Passes `result` through, noting an I/O failure as the store's fault at once
    /// (the watcher then works on recovering).
    pub fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e @ (StoreError::Sled(sled::Error::Io(_)) | StoreError::Flush(_))) = &result {
            self.set_fault(Some(e.to_string()));
        }
        result
    }

    /// The watcher: every `every` (a second by default) while the store is failing,
    /// and every tenth time otherwise, checks whether the disk takes writes; once it
    /// does again, reopens sled, since sled refuses writes for good after an I/O
    /// error. The thread ends with the store's last handle.
    pub(super) fn watch(&self, every: Duration) -> Result<(), StoreError> {
        let weak = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("siemsync-store-watch".into())
            .spawn(move || {
                let mut since_probe = 0;
                loop {
                    std::thread::sleep(every);
                    let Some(inner) = weak.upgrade() else { return };
                    let store = Store { inner };
                    since_probe += 1;
                    if store.fault().is_some() {
                        store.recover();
                    } else if since_probe >= 10 {
                        since_probe = 0;
                        let probed = store.engine().and_then(|e| e.probe());
                        let _ = store.noted(probed);
                    }
                }
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store watcher: {e}")))?;
        Ok(())
    }

    /// One recovery attempt: if the data dir takes a write again, swap the failed
    /// sled for a freshly opened one. Everything flushed before the fault is kept.
    fn recover(&self) {
        if let Err(e) = disk_takes_writes(&self.inner.dir) {
            self.set_fault(Some(format!(
                "the data directory does not take writes: {e}"
            )));
            return;
        }
        let old = self
            .inner
            .engine
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let generation = old.as_ref().map_or(0, |e| e.generation) + 1;
        if let Some(old) = old {
            // Wait for operations in flight to let go, so that sled's file lock goes too.
            let t0 = std::time::Instant::now();
            while Arc::strong_count(&old) > 1 && t0.elapsed().as_secs() < 5 {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(old);
        }
        // The flush thread lets go of the old database a moment after it is dropped.
        let mut opened = Engine::open(&self.inner.dir, self.inner.cache_bytes, generation);
        for _ in 0..20 {
            if opened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            opened = Engine::open(&self.inner.dir, self.inner.cache_bytes, generation);
        }
        match opened {
            Ok(engine) => {
                self.recent().clear();
                let healthy = engine.probe();
                *self.inner.engine.write().unwrap_or_else(|p| p.into_inner()) =
                    Some(Arc::new(engine));
                match healthy {
                    Ok(()) => self.set_fault(None),
                    Err(e) => self.set_fault(Some(e.to_string())),
                }
            }
            Err(e) => self.set_fault(Some(format!("reopening the store failed: {e}"))),
        }
    }
}

/// Writes, syncs and removes a small file in `dir`: whether the disk has room and
/// takes writes.
fn disk_takes_writes(dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".siemsync-write-check");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0u8; 64 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}
