//! Sealing a store that was written without a secret key. sled keeps old versions
//! of a record in its files until it reclaims their space, which may be much later,
//! so sealing the tokens in place would leave them readable in clear on disk.
//! Instead the whole store is copied into a fresh database, every token sealed on
//! the way, which then takes the old one's place; the old files are overwritten
//! with zeros before they are removed.
//!
//! The data directory may be the only place the service can write (systemd's
//! `StateDirectory`), so the new database is built in a subdirectory and moved in
//! file by file. Markers say how far the swap got, and the next open finishes it:
//! - `.reseal/` without `READY`: an unfinished copy, removed; the old store is intact;
//! - `.reseal/READY`: the copy is complete; the old files move to `.reseal-old/`;
//! - `.reseal/MOVING`: the old files are all aside; the new ones move in;
//! - `.reseal-old/` alone: the swap is done; the old files are wiped.

use super::secrets::{is_sealed, TokenCipher};
use super::{keys, StoreError};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// sled's page cache while copying: the copy reads each record once, so a small
/// cache bounds memory however large the store is.
const COPY_CACHE_BYTES: u64 = 64 << 20;

const STAGING: &str = ".reseal";
const ASIDE: &str = ".reseal-old";
const READY: &str = "READY";
const MOVING: &str = "MOVING";

/// sled's own files in its directory (sled 0.34: `conf`, `db`, `blobs/`, `snap.*`).
fn is_sled_file(name: &OsStr) -> bool {
    name.to_str()
        .is_some_and(|n| matches!(n, "conf" | "db" | "blobs") || n.starts_with("snap."))
}

fn rewrite_error(what: &str, e: io::Error) -> StoreError {
    StoreError::Rewrite(format!("{what}: {e}"))
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

fn mark(marker: &Path) -> io::Result<()> {
    fs::File::create(marker)?.sync_all()?;
    match marker.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Moves sled's files from `from` into `to`, one rename each.
fn move_sled_files(from: &Path, to: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        if is_sled_file(&entry.file_name()) {
            fs::rename(entry.path(), to.join(entry.file_name()))?;
        }
    }
    sync_dir(from)?;
    sync_dir(to)
}

/// Overwrites every file under `path` with zeros, then removes it all.
fn wipe(path: &Path) -> io::Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    let mut todo = vec![path.to_owned()];
    while let Some(p) = todo.pop() {
        for entry in fs::read_dir(&p)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                todo.push(entry.path());
                continue;
            }
            let mut f = fs::OpenOptions::new().write(true).open(entry.path())?;
            let mut left = f.metadata()?.len();
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            f.sync_all()?;
        }
    }
    fs::remove_dir_all(path)
}

/// Puts the complete new database in place of the old one. Each step can be
/// repeated after a crash: the markers say which ones are done.
fn swap(dir: &Path) -> io::Result<()> {
    let staging = dir.join(STAGING);
    let aside = dir.join(ASIDE);
    if !staging.join(MOVING).exists() {
        fs::create_dir_all(&aside)?;
        move_sled_files(dir, &aside)?;
        mark(&staging.join(MOVING))?;
    }
    move_sled_files(&staging, dir)?;
    // READY goes first: staging without it is taken for an unfinished copy.
    fs::remove_file(staging.join(READY))?;
    sync_dir(&staging)?;
    fs::remove_dir_all(&staging)?;
    sync_dir(dir)?;
    wipe(&aside)?;
    sync_dir(dir)
}

/// Finishes, or undoes, a rewrite that a crash interrupted. Runs before sled opens
/// `dir`.
/// Whether a rewrite left anything in `dir` that the next start finishes.
pub(super) fn interrupted(dir: &Path) -> bool {
    dir.join(STAGING).exists() || dir.join(ASIDE).exists()
}

pub(super) fn finish_interrupted(dir: &Path) -> Result<(), StoreError> {
    let staging = dir.join(STAGING);
    if staging.join(READY).exists() {
        log::warn!("store: finishing the rewrite that sealed the stored HEC tokens");
        swap(dir).map_err(|e| rewrite_error("finishing the swap", e))?;
    } else if staging.exists() {
        fs::remove_dir_all(&staging)
            .map_err(|e| rewrite_error("removing an unfinished copy", e))?;
    }
    let aside = dir.join(ASIDE);
    if aside.exists() {
        wipe(&aside).map_err(|e| rewrite_error("wiping the old files", e))?;
    }
    Ok(())
}

/// One stored integration with its token sealed (bound to the integration's id,
/// as `Store::put_integration` seals it). Read as plain JSON, so every field
/// comes across as it was.
fn sealed_record(key: &[u8], value: &[u8], cipher: &TokenCipher) -> Result<Vec<u8>, StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).replace('\0', "/"),
        reason: reason.to_owned(),
    };
    let mut it: serde_json::Value =
        serde_json::from_slice(value).map_err(|e| corrupt(&e.to_string()))?;
    let id = it["id"]
        .as_str()
        .and_then(|s| uuid::Uuid::parse_str(s).ok())
        .ok_or_else(|| corrupt("no integration id"))?;
    let token = it["hec_token"]
        .as_str()
        .ok_or_else(|| corrupt("no hec_token"))?;
    if !is_sealed(token) {
        it["hec_token"] = cipher.seal(token, id.as_bytes())?.into();
    }
    Ok(super::encode(&it))
}

fn holds_clear_token(value: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(value)
        .ok()
        .and_then(|v| v["hec_token"].as_str().map(|t| !is_sealed(t)))
        .unwrap_or(false)
}

/// Copies every tree of `old` into a new database at `to`, sealing tokens, and
/// carries the id generator over (see [`keys::ID_FLOOR`]). Returns the records copied.
fn copy(old: &sled::Db, to: &Path, cipher: &TokenCipher) -> Result<u64, StoreError> {
    let new = sled::Config::new()
        .path(to)
        .cache_capacity(COPY_CACHE_BYTES)
        .open()?;
    let mut copied = 0u64;
    for name in old.tree_names() {
        let (src, dst) = (old.open_tree(&name)?, new.open_tree(&name)?);
        let sealing = name.as_ref() == b"registry";
        let mut batch = sled::Batch::default();
        for kv in src.iter() {
            let (k, v) = kv?;
            if sealing && k.starts_with(keys::INTEGRATIONS) {
                batch.insert(k.to_vec(), sealed_record(&k, &v, cipher)?);
            } else {
                batch.insert(k, v);
            }
            copied += 1;
            if copied.is_multiple_of(10_000) {
                dst.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        dst.apply_batch(batch)?;
    }
    // The new generator starts again from 0: ids go on above every one given out.
    let floor = super::id_floor(&old.open_tree("registry")?)?.saturating_add(old.generate_id()?);
    new.open_tree("registry")?
        .insert(keys::ID_FLOOR, &floor.to_be_bytes())?;
    new.flush()?;
    Ok(copied)
}

/// With a secret key set: if any HEC token in the store at `dir` is in clear,
/// rewrites the store with every token sealed and no clear copy left in its files.
/// Returns how many tokens were in clear. Must run before the store is opened.
pub fn seal_tokens_at_rest(dir: &Path, cipher: &TokenCipher) -> Result<usize, StoreError> {
    finish_interrupted(dir)?;
    if !dir.join("db").exists() {
        return Ok(0);
    }
    let old = sled::Config::new()
        .path(dir)
        .cache_capacity(COPY_CACHE_BYTES)
        .open()?;
    let mut clear = 0;
    for kv in old.open_tree("registry")?.scan_prefix(keys::INTEGRATIONS) {
        let (_, v) = kv?;
        clear += usize::from(holds_clear_token(&v));
    }
    if clear == 0 {
        return Ok(0);
    }
    log::info!(
        "store: sealing {clear} HEC tokens stored in clear: rewriting {} into a fresh database",
        dir.display()
    );
    let started = std::time::Instant::now();
    let copied = copy(&old, &dir.join(STAGING), cipher)?;
    drop(old);
    mark(&dir.join(STAGING).join(READY))
        .map_err(|e| rewrite_error("marking the copy complete", e))?;
    swap(dir).map_err(|e| rewrite_error("swapping the new store in", e))?;
    log::info!(
        "store: {copied} records rewritten with their tokens sealed in {:.1} s; the old files are wiped",
        started.elapsed().as_secs_f64()
    );
    Ok(clear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountId, Integration, IntegrationChange, IntegrationPolicy};
    use crate::store::{SledStore as Store, StoreOptions};

    const TOKEN: &str = "c1ea77e5-0000-4000-8000-000000000042";
    const KEY: &str = "a secret key that is long enough to seal with";

    fn integration() -> Integration {
        IntegrationChange::from_json(&serde_json::json!({
            "name": "Main", "hec_token": TOKEN, "hec_uri": "https://splunk.example.com:8088",
            "sources": ["audit"], "enabled": true}))
        .and_then(|c| {
            c.create(
                AccountId::parse("acme").unwrap(),
                chrono::Utc::now(),
                IntegrationPolicy::default(),
            )
        })
        .unwrap()
    }

    fn clear_copies(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(p) = todo.pop() {
            for e in fs::read_dir(&p).unwrap().flatten() {
                if e.path().is_dir() {
                    todo.push(e.path());
                } else if fs::read(e.path())
                    .unwrap()
                    .windows(TOKEN.len())
                    .any(|w| w == TOKEN.as_bytes())
                {
                    found.push(e.path().display().to_string());
                }
            }
        }
        found
    }

    /// Waits until a dropped `Store` let go of `dir` (its flush thread ends a
    /// moment after it is dropped, and sled's lock goes with it).
    fn released(dir: &Path) {
        let start = std::time::Instant::now();
        loop {
            match sled::Config::new().path(dir).open() {
                Ok(_) => return,
                Err(e) if start.elapsed().as_secs() >= 10 => panic!("{dir:?} stays locked: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    /// A store written without a key: one integration (rewritten a few times),
    /// events and dead-letter ids. Returns the last id given out.
    fn unsealed_store(dir: &Path) -> (Integration, u64) {
        let store = Store::open(dir).unwrap();
        let mut it = integration();
        let mut version = None;
        for i in 0..5 {
            it.name = format!("Main {i}");
            version = Some(store.put_integration(&it, version).unwrap().version);
        }
        let account = it.account.clone();
        let events = (0..100)
            .map(|i| {
                crate::model::AuditEvent::read_body(
                    format!(r#"[{{"id": "e{i}", "time": "2026-11-25T10:00:00Z", "event": "x"}}]"#)
                        .as_bytes(),
                    chrono::Utc::now(),
                )
                .unwrap()
                .remove(0)
            })
            .collect();
        store.append_audit(&account, events).unwrap();
        let mut last_id = 0;
        for _ in 0..10 {
            last_id = store.next_id().unwrap();
        }
        store.flush_now().unwrap();
        drop(store);
        released(dir);
        (it, last_id)
    }

    fn open_sealed(dir: &Path) -> Store {
        Store::open_with_options(
            dir,
            &StoreOptions {
                secret_key: Some(KEY.into()),
                cache_bytes: 8 << 20,
                dedup_window: 1000,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn assert_sealed_and_whole(dir: &Path, it: &Integration, last_id: u64) {
        assert_eq!(clear_copies(dir), Vec::<String>::new());
        assert!(!dir.join(STAGING).exists() && !dir.join(ASIDE).exists());
        let store = open_sealed(dir);
        let back = store.integration(&it.account, &it.id).unwrap().unwrap();
        assert_eq!(back.hec_token, TOKEN);
        assert_eq!(back.name, "Main 4");
        let heads = store.heads(&it.account).unwrap();
        assert_eq!(heads.audit, 100, "the events came across");
        assert!(store.next_id().unwrap() > last_id, "ids never repeat");
        drop(store);
        released(dir);
    }

    #[test]
    fn sealing_rewrites_the_store_and_leaves_no_clear_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (it, last_id) = unsealed_store(dir.path());
        assert!(!clear_copies(dir.path()).is_empty(), "the premise");
        let cipher = TokenCipher::new(KEY);
        assert_eq!(seal_tokens_at_rest(dir.path(), &cipher).unwrap(), 1);
        assert_sealed_and_whole(dir.path(), &it, last_id);
        assert_eq!(
            seal_tokens_at_rest(dir.path(), &cipher).unwrap(),
            0,
            "nothing left to seal"
        );
    }

    /// A crash after each step of the swap: the next open finishes it, and the
    /// store is whole and sealed; a crash during the copy leaves the old store.
    #[test]
    fn a_crash_at_any_step_of_the_rewrite_is_finished_at_the_next_open() {
        let cipher = TokenCipher::new(KEY);
        for crash_after in 0..6 {
            let dir = tempfile::tempdir().unwrap();
            let dir = dir.path();
            let (it, last_id) = unsealed_store(dir);
            let old = sled::Config::new().path(dir).open().unwrap();
            copy(&old, &dir.join(STAGING), &cipher).unwrap();
            drop(old);
            let staging = dir.join(STAGING);
            let aside = dir.join(ASIDE);
            let steps: Vec<Box<dyn Fn()>> = vec![
                Box::new(|| mark(&staging.join(READY)).unwrap()),
                Box::new(|| {
                    // Half the old files aside.
                    fs::create_dir_all(&aside).unwrap();
                    fs::rename(dir.join("db"), aside.join("db")).unwrap();
                }),
                Box::new(|| {
                    move_sled_files(dir, &aside).unwrap();
                    mark(&staging.join(MOVING)).unwrap();
                }),
                Box::new(|| fs::rename(staging.join("db"), dir.join("db")).unwrap()),
                Box::new(|| {
                    move_sled_files(&staging, dir).unwrap();
                    fs::remove_file(staging.join(READY)).unwrap();
                }),
                Box::new(|| fs::remove_dir_all(&staging).unwrap()),
            ];
            for step in &steps[..=crash_after] {
                step();
            }
            if crash_after == 0 {
                // READY was written: the swap is finished by the next open, even one
                // without a key (which then asks for it).
                drop(Store::open(dir).unwrap());
                released(dir);
                assert!(open_sealed(dir).integrations_of(&it.account).is_ok());
                released(dir);
            }
            // What the service does at start with a key set.
            seal_tokens_at_rest(dir, &cipher).unwrap();
            assert_sealed_and_whole(dir, &it, last_id);
        }
        // A crash during the copy (no READY): the copy is dropped, the old store is used.
        let dir = tempfile::tempdir().unwrap();
        let (it, _) = unsealed_store(dir.path());
        fs::create_dir_all(dir.path().join(STAGING).join("blobs")).unwrap();
        fs::write(dir.path().join(STAGING).join("db"), b"half a database").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!dir.path().join(STAGING).exists());
        assert_eq!(
            store
                .integration(&it.account, &it.id)
                .unwrap()
                .unwrap()
                .hec_token,
            TOKEN
        );
    }
}
