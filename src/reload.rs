//! Hot reload: the integrations declared in the config file (`[[integrations]]`)
//! follow the file. SIGHUP, or a change of the file, re-reads it; a valid file is
//! written to the store and one `Reconcile` goes to the Supervisor, which reads the
//! store and restarts only what changed; an invalid file is rejected whole and the running set goes on.

use crate::actors::messages::Reconcile;
use crate::actors::Supervisor;
use crate::background::Background;
use crate::config::Config;
use crate::model::Integration;
use crate::store::{Store, StoreError};
use actix::Addr;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What one reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Integrations of the file stored (new or changed).
    pub written: usize,
    /// Integrations no longer in the file, removed.
    pub removed: usize,
}

fn same(a: &Integration, b: &Integration) -> bool {
    let plain = |i: &Integration| Integration {
        created_at: i.created_at,
        updated_at: i.created_at,
        version: 0,
        ..i.clone()
    };
    plain(a)
        == Integration {
            created_at: a.created_at,
            ..plain(b)
        }
}

/// Makes the store's file-managed integrations exactly `desired`. Each is written
/// over the version it was read at, like an API change (only reloads, one at a time,
/// write these, so a conflict means the store changed under us: the reload fails and
/// the next one tries again).
pub fn store_file_integrations(
    store: &Store,
    desired: &[Integration],
) -> Result<Changes, StoreError> {
    let mut changes = Changes::default();
    for it in desired {
        let mut it = it.clone();
        let old = store.integration(&it.account, &it.id)?;
        match &old {
            Some(old) if same(old, &it) => continue,
            Some(old) => it.created_at = old.created_at,
            None => {}
        }
        store.put_integration(&it, old.map(|o| o.version))?;
        changes.written += 1;
    }
    let wanted: HashSet<_> = desired.iter().map(|i| i.id).collect();
    for it in store.all_integrations()? {
        if it.file_managed && !wanted.contains(&it.id) {
            store.delete_integration(&it.account, &it.id)?;
            changes.removed += 1;
        }
    }
    store.flush_now()?;
    Ok(changes)
}

/// Re-reads the file and applies it, or says why it was rejected.
pub fn reload(path: &Path, store: &Store, supervisor: &Addr<Supervisor>, why: &str) {
    let desired = match Config::load(path).and_then(|c| c.file_integrations()) {
        Ok(d) => d,
        Err(e) => {
            log::error!("config reload ({why}) rejected, nothing changed: {e}");
            return;
        }
    };
    match store_file_integrations(store, &desired) {
        Ok(changes) => log::info!(
            "config reload ({why}): {} file integrations, {} written, {} removed",
            desired.len(),
            changes.written,
            changes.removed
        ),
        Err(e) => log::error!("config reload ({why}) could not be stored: {e}"),
    }
    // Also after a failure part-way: the actors follow whatever was stored.
    supervisor.do_send(Reconcile);
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches for SIGHUP and for changes of the file, whose modification time is
/// checked every `poll` (`[timing] config_poll_secs`), on the current actix System,
/// until the returned job is stopped.
pub fn watch(
    path: PathBuf,
    poll: Duration,
    store: Store,
    supervisor: Addr<Supervisor>,
) -> Background {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let on_signal = tx.clone();
    // Both taken before this returns (and the service says it is listening): a
    // SIGHUP or an edit right after start is not missed.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let mut last = stamp(&path);
    let mut job = Background::new("the config watcher");
    job.spawn(move |mut stop| async move {
        match hangup {
            Ok(mut hup) => loop {
                tokio::select! {
                    _ = stop.stopped() => return,
                    got = hup.recv() => match got {
                        Some(()) => { let _ = on_signal.send("SIGHUP"); }
                        None => return,
                    },
                }
            },
            Err(e) => log::warn!(
                "cannot listen for SIGHUP, the config is reloaded on file changes only: {e}"
            ),
        }
    });
    let file = path.clone();
    job.spawn(move |mut stop| async move {
        loop {
            tokio::select! {
                _ = stop.stopped() => return,
                _ = actix_rt::time::sleep(poll) => {}
            }
            let now = stamp(&file);
            if now != last {
                last = now;
                if tx.send("file changed").is_err() {
                    return;
                }
            }
        }
    });
    // Ends once both watchers above ended (their senders dropped).
    job.spawn(move |_| async move {
        while let Some(why) = rx.recv().await {
            reload(&path, &store, &supervisor, why);
        }
    });
    job
}
