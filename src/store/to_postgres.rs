//! `siemsync migrate --from-sled DIR --to-postgres URL`: copies a stopped
//! single-node service's sled data directory into PostgreSQL, so that the same
//! integrations go on delivering from several nodes without losing a checkpoint.
//!
//! What is copied, each under its own ids and sequences (so checkpoints, dead
//! letter numbers and replay cursors stay valid): accounts, account tokens (their
//! hashes), integrations (HEC tokens sealed ones stay sealed, so the nodes need
//! the same `secret_key`; clear ones are sealed when a key is given), checkpoints, dead letters, replays (a
//! running one goes on from its cursor on the node that takes the integration),
//! gaps, connection reports, every audit chunk the sled store still holds (its
//! retention already removed what every integration delivered; what is left is
//! undelivered, in a replay's reach, or kept for the retention), the dedup window's
//! ids, every job snapshot and the tombstones of swept finished jobs, and each
//! account's newest sequences.
//!
//! Not copied: sync history (the page's 7-day chart; it refills as the nodes sync,
//! and replaying records one by one could not be made idempotent cheaply), the
//! backlog quota's drop counts and pending notices (on PostgreSQL the account's
//! `quota_drops` start from nothing; each integration's quota gaps are copied), and
//! the published delivery status (each node publishes its own).
//!
//! Idempotent and resumable: every write inserts what is missing and checks that
//! what is there is identical (see `postgres::import`). Before its first data write
//! the copy marks the database `copying` (table `sled_import`, with a fingerprint of
//! the directory's content): nodes refuse to start until it is `done`, and only a
//! copy of the same content may resume. Each account's newest sequences and the
//! dead letter numbering are written first. Nothing is written to the sled
//! directory.

use super::postgres::{
    live_nodes_at, park_until_done, AccountHeads, Copied, ImportStart, IntegrationCopy, PgError,
    PgOptions, PgStore,
};
use super::secrets::{self, TokenCipher};
use super::sled_export::{RawChunk, RawIds};
use super::{SledStore, StoreError};
use crate::model::AccountId;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// Chunks (of up to 64 events) per write.
const CHUNKS_PER_WRITE: usize = 256;
/// Id records, or job snapshots, per write.
const ROWS_PER_WRITE: usize = 1024;
/// sled's page cache while copying (as the token reseal's): each record is read
/// about once, so a small cache bounds memory however large the store is.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// What to copy where.
#[derive(Debug, Clone)]
pub struct MoveOptions {
    /// The sled data directory (of a stopped service).
    pub from: PathBuf,
    /// The PostgreSQL URL (libpq form) of the database the nodes will use.
    pub to: String,
    /// The key the sled store's HEC tokens are sealed with (the nodes' `secret_key`).
    pub secret_key: Option<String>,
    /// Test builds: end the process after this many writes, as a kill would.
    pub exit_after_writes: Option<u64>,
}

/// Why the copy did not start or did not finish; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The directory holds no sled database.
    #[error("{0} is not a siemsync data directory: no sled database in it (give data_dir of the stopped service)")]
    NotSled(String),
    /// A running service holds the sled database.
    #[error("the sled directory {0} is in use by a running siemsync: stop it first, so that nothing changes while it is copied")]
    SledInUse(String),
    /// The sled store needs a start of the service before it can be copied.
    #[error("the sled directory {dir} cannot be copied as it is: {why}; nothing was written")]
    NotCurrent {
        /// The directory.
        dir: String,
        /// What the service's start would do first.
        why: String,
    },
    /// The sled store could not be read.
    #[error("reading the sled store in {dir}: {source}")]
    Sled {
        /// The directory.
        dir: String,
        /// What failed.
        source: StoreError,
    },
    /// A sealed HEC token does not open with the key given (or no key was given).
    #[error("integration {id} of account {account}: {reason}; nothing was written")]
    Key {
        /// The integration.
        id: uuid::Uuid,
        /// Its account.
        account: AccountId,
        /// What is wrong with the key.
        reason: secrets::SecretError,
    },
    /// PostgreSQL could not be reached or its schema not brought up to date.
    #[error("connecting to PostgreSQL: {0}")]
    Connect(PgError),
    /// A node is using the database.
    #[error("siemsync nodes are live on this PostgreSQL database ({0}): stop every node before copying into it (a killed one leaves when its lease lapses); nothing was written")]
    LiveNode(String),
    /// PostgreSQL holds other data under ids being copied.
    #[error("{0}: a node has used this database since, or another data directory was copied into it. Nothing of it was overwritten; copy into an empty database (an interrupted copy of this same directory may be run again)")]
    Differs(String),
    /// PostgreSQL holds other data under ids being copied, found after the copy
    /// had begun writing: its marker says `copying`, which keeps nodes from starting.
    #[error("{0}: nothing of it was overwritten, but the copy stopped part-way, and nodes refuse to start on this database until a copy of this directory completes. Copy into an empty database instead; or, to keep this database as it is now (with what was copied so far), end the copy by hand: DELETE FROM sled_import;")]
    DiffersPartWay(String),
    /// The copy finished earlier and nodes have run on the database since.
    #[error("this directory was copied into this database before, and siemsync nodes have run on it since {0}: copying again could bring back what they changed or deleted, so it is refused; nothing was written. The copy is complete: start the nodes")]
    UsedSince(String),
    /// A write failed.
    #[error("writing to PostgreSQL: {0}")]
    Postgres(PgError),
    /// A write failed: what it was writing.
    #[error("writing {what} to PostgreSQL: {source} (run the copy again to go on from there)")]
    Writing {
        /// What was being written.
        what: String,
        /// What failed.
        source: PgError,
    },
}

impl From<PgError> for MoveError {
    fn from(e: PgError) -> MoveError {
        match e {
            e @ PgError::Differs(_) => MoveError::Differs(e.to_string()),
            e => MoveError::Postgres(e),
        }
    }
}

/// Rows per kind, in the order they were copied.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// (kind, rows added, rows already there).
    pub kinds: Vec<(&'static str, Copied)>,
}

impl Summary {
    fn add(&mut self, kind: &'static str, c: Copied) {
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => total.add(c),
            None => self.kinds.push((kind, c)),
        }
    }

    /// The counts of one kind.
    pub fn of(&self, kind: &str) -> Copied {
        self.kinds
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }

    /// One line per kind: added, and already there.
    pub fn table(&self) -> String {
        let mut out = format!("{:<20} {:>10} {:>14}\n", "KIND", "COPIED", "ALREADY THERE");
        for (kind, c) in &self.kinds {
            out.push_str(&format!("{kind:<20} {:>10} {:>14}\n", c.added, c.present));
        }
        out
    }
}

/// The copy under way: where to, what it did, and the test builds' exit.
struct Mover<'a> {
    pg: PgStore,
    /// The marker says `copying`: a refusal from here on leaves it so.
    marked: bool,
    summary: Summary,
    writes: u64,
    exit_after: Option<u64>,
    progress: &'a mut dyn FnMut(String),
}

impl Mover<'_> {
    /// Runs one write; a failure names `what` was being written.
    fn write<T>(
        &mut self,
        what: impl FnOnce() -> String,
        f: impl std::future::Future<Output = Result<T, PgError>>,
    ) -> Result<T, MoveError> {
        let marked = self.marked;
        let out = self.pg.block_on(f).map_err(|e| match e {
            e @ PgError::Differs(_) if marked => MoveError::DiffersPartWay(e.to_string()),
            e @ PgError::Differs(_) => MoveError::from(e),
            source => MoveError::Writing {
                what: what(),
                source,
            },
        })?;
        self.writes += 1;
        if self.exit_after.is_some_and(|n| self.writes >= n) {
            (self.progress)(format!(
                "test hook: exiting after {} writes, as a kill would",
                self.writes
            ));
            std::process::exit(3);
        }
        Ok(out)
    }

    fn noted(&mut self, kind: &'static str, c: Copied) {
        self.summary.add(kind, c);
    }
}

/// Opens the sled store for reading, unchanged, with a readable refusal when a
/// service holds it or it needs a start of the service first.
fn open_sled(dir: &Path) -> Result<SledStore, MoveError> {
    let shown = dir.display().to_string();
    // sled would create an empty database in any directory: that is not a copy.
    if !dir.join("conf").is_file() && !dir.join("db").is_file() {
        return Err(MoveError::NotSled(shown));
    }
    match SledStore::open_unchanged(dir, SLED_CACHE_BYTES) {
        Ok(Ok(store)) => Ok(store),
        Ok(Err(why)) => Err(MoveError::NotCurrent { dir: shown, why }),
        Err(StoreError::Sled(sled::Error::Io(io))) if io.to_string().contains("acquire lock") => {
            Err(MoveError::SledInUse(shown))
        }
        Err(source) => Err(MoveError::Sled { dir: shown, source }),
    }
}

/// Refuses before anything is written when a sealed token does not open with `key`.
fn check_key(
    integrations: &[crate::model::Integration],
    key: Option<&str>,
) -> Result<(), MoveError> {
    let cipher = key.map(TokenCipher::new);
    for it in integrations
        .iter()
        .filter(|it| secrets::is_sealed(&it.hec_token))
    {
        let reason = match &cipher {
            None => Some(secrets::SecretError::NoKey("the sled data directory")),
            Some(c) => c.open(&it.hec_token, it.id.as_bytes()).err(),
        };
        if let Some(reason) = reason {
            return Err(MoveError::Key {
                id: it.id,
                account: it.account.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// The live nodes on `url`, read before the schema is touched (a database a
/// node uses is left exactly as it is, also when this build's schema is newer).
fn live_nodes_before_schema(url: &str) -> Result<Vec<String>, MoveError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MoveError::Connect(PgError::Config(format!("cannot start a runtime: {e}"))))?;
    runtime
        .block_on(live_nodes_at(url))
        .map_err(MoveError::Connect)
}

/// What identifies the copied directory's content: its accounts, integrations and
/// each account's newest sequences. A copy resumes only into a database marked
/// with the same.
fn fingerprint(
    accounts: &[(AccountId, crate::store::Account)],
    integrations: &[crate::model::Integration],
    heads: &[AccountHeads],
) -> String {
    let mut text = String::new();
    for (a, _) in accounts {
        text.push_str(&format!("account {a}\n"));
    }
    let mut ids: Vec<String> = integrations.iter().map(|it| it.id.to_string()).collect();
    ids.sort();
    for id in ids {
        text.push_str(&format!("integration {id}\n"));
    }
    for h in heads {
        text.push_str(&format!(
            "heads {} {} {}\n",
            h.account, h.heads.audit, h.heads.jobs
        ));
    }
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// With a key, seals the HEC tokens the sled store kept in clear (it ran without
/// one), as a node with that key stores them; without a key, warns about them.
fn seal_clear(
    mut integrations: Vec<crate::model::Integration>,
    key: Option<&str>,
    progress: &mut dyn FnMut(String),
) -> Result<Vec<crate::model::Integration>, MoveError> {
    let clear = integrations
        .iter()
        .filter(|it| !secrets::is_sealed(&it.hec_token))
        .count();
    if clear == 0 {
        return Ok(integrations);
    }
    let Some(key) = key else {
        progress(format!(
            "warning: {clear} HEC tokens are stored in clear and are copied so; give SIEMSYNC_SECRET_KEY (the nodes' secret_key) to seal them"
        ));
        return Ok(integrations);
    };
    let cipher = TokenCipher::new(key);
    for it in integrations
        .iter_mut()
        .filter(|it| !secrets::is_sealed(&it.hec_token))
    {
        it.hec_token = cipher
            .seal(&it.hec_token, it.id.as_bytes())
            .map_err(|reason| MoveError::Key {
                id: it.id,
                account: it.account.clone(),
                reason,
            })?;
    }
    progress(format!(
        "{clear} HEC tokens stored in clear were sealed with the key given"
    ));
    Ok(integrations)
}

/// Copies `options.from` into `options.to`, telling `progress` what it did per kind.
///
/// Order: every check first (the key, live nodes before the schema, then under
/// the copy's lock: live nodes, another source, other account histories), then the
/// `copying` marker (nodes refuse to start), each account's newest sequences and
/// the dead letter numbering (so nothing can give out a number the copy holds),
/// then the data, then the marker `done`.
pub fn copy_sled_to_postgres(
    options: &MoveOptions,
    progress: &mut dyn FnMut(String),
) -> Result<Summary, MoveError> {
    let sled = open_sled(&options.from)?;
    let dir = options.from.display().to_string();
    let read_err = |source| MoveError::Sled {
        dir: dir.clone(),
        source,
    };
    let integrations = sled.export_integrations().map_err(read_err)?;
    check_key(&integrations, options.secret_key.as_deref())?;
    let live = live_nodes_before_schema(&options.to)?;
    if !live.is_empty() {
        return Err(MoveError::LiveNode(live.join(", ")));
    }
    let accounts = sled.export_accounts().map_err(read_err)?;
    let mut heads = Vec::new();
    for account in sled.accounts_with_events().map_err(read_err)? {
        heads.push(AccountHeads {
            heads: sled.heads(&account).map_err(read_err)?,
            audit_stored_at: sled.export_newest_audit_time(&account).map_err(read_err)?,
            account,
        });
    }
    let source = fingerprint(&accounts, &integrations, &heads);
    let mut pg_options = PgOptions::new(options.to.clone(), "siemsync-migrate");
    // To compare tokens sealed by an earlier run of the copy (see `seal_clear`).
    pg_options.secret_key = options.secret_key.clone();
    pg_options.pool_size = 2;
    // One write is up to a thousand rows or 256 chunks, into a database that may
    // be busy with its first partitions: a node's 30 s is meant for a live answer.
    pg_options.op_timeout = std::time::Duration::from_secs(600);
    pg_options.threads = 1;
    let pg = park_until_done(PgStore::connect(pg_options)).map_err(MoveError::Connect)?;
    let mut m = Mover {
        pg: pg.clone(),
        marked: false,
        summary: Summary::default(),
        writes: 0,
        exit_after: options.exit_after_writes,
        progress,
    };
    match m.write(
        || "checking the database and marking the copy".into(),
        pg.begin_import(source.clone(), heads.clone()),
    )? {
        ImportStart::NodesLive(live) => return Err(MoveError::LiveNode(live.join(", "))),
        ImportStart::UsedSince(at) => return Err(MoveError::UsedSince(at.to_rfc3339())),
        ImportStart::Fresh => (m.progress)("copying into a database without a copy yet".into()),
        ImportStart::Resumed => (m.progress)("resuming the copy of this same directory".into()),
    }
    m.marked = true;
    for h in &heads {
        let c = m.write(
            || format!("the newest sequences of account {}", h.account),
            pg.import_heads(&h.account, h.heads, h.audit_stored_at),
        )?;
        m.noted("account heads", c);
    }
    let mut highest_dead = 0;
    for it in &integrations {
        let (_, dead_letters) = sled.dead_letters(&it.id, usize::MAX).map_err(read_err)?;
        highest_dead = dead_letters
            .iter()
            .map(|d| d.id)
            .fold(highest_dead, u64::max);
    }
    m.write(
        || "the dead letter numbering".into(),
        pg.raise_dead_letter_ids(highest_dead),
    )?;
    for part in accounts.chunks(ROWS_PER_WRITE) {
        let first = part.first().map(|(a, _)| a.to_string()).unwrap_or_default();
        let c = m.write(
            || format!("accounts from {first}"),
            pg.import_accounts(part.to_vec()),
        )?;
        m.noted("accounts", c);
    }
    let tokens = sled.export_tokens().map_err(read_err)?;
    for part in tokens.chunks(ROWS_PER_WRITE) {
        let first = part
            .first()
            .map(|(_, t)| t.account.to_string())
            .unwrap_or_default();
        let c = m.write(
            || format!("account tokens from one of account {first}"),
            pg.import_tokens(part.to_vec()),
        )?;
        m.noted("account tokens", c);
    }
    let integrations = seal_clear(integrations, options.secret_key.as_deref(), m.progress)?;
    copy_integrations(&sled, &mut m, integrations).map_err(|e| match e {
        Step::Read(source) => read_err(source),
        Step::Write(e) => e,
    })?;
    (m.progress)(format!(
        "registry copied: {} accounts, {} integrations",
        m.summary.of("accounts").added + m.summary.of("accounts").present,
        m.summary.of("integrations").added + m.summary.of("integrations").present
    ));
    for h in &heads {
        copy_account(&sled, &mut m, h).map_err(|e| match e {
            Step::Read(source) => read_err(source),
            Step::Write(e) => e,
        })?;
    }
    m.write(|| "marking the copy done".into(), pg.finish_import(source))?;
    Ok(m.summary)
}

/// A step failed reading sled or writing PostgreSQL.
enum Step {
    Read(StoreError),
    Write(MoveError),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Step {
        Step::Read(e)
    }
}

impl From<MoveError> for Step {
    fn from(e: MoveError) -> Step {
        Step::Write(e)
    }
}

/// Copies each integration with what belongs to it.
fn copy_integrations(
    sled: &SledStore,
    m: &mut Mover<'_>,
    integrations: Vec<crate::model::Integration>,
) -> Result<(), Step> {
    for it in integrations {
        let (id, account) = (it.id, it.account.clone());
        let (replay, connection_report) = sled.export_docs(&id)?;
        let (_, dead_letters) = sled.dead_letters(&id, usize::MAX)?;
        let copy = IntegrationCopy {
            checkpoint: sled.export_checkpoint(&id)?,
            dead_letters,
            replay,
            connection_report,
            gaps: sled.gaps(&id)?,
            integration: it,
        };
        let pg = m.pg.clone();
        let c = m.write(
            || format!("integration {id} of account {account}"),
            pg.import_integration(copy),
        )?;
        m.noted("integrations", c.integrations);
        m.noted("checkpoints", c.checkpoints);
        m.noted("dead letters", c.dead_letters);
        m.noted("replays", c.replays);
        m.noted("connection reports", c.connection_reports);
        m.noted("gaps", c.gaps);
    }
    let s = &m.summary;
    (m.progress)(format!(
        "integrations: {} (checkpoints {}, dead letters {}, replays {}, gaps {})",
        total(s.of("integrations")),
        total(s.of("checkpoints")),
        total(s.of("dead letters")),
        total(s.of("replays")),
        total(s.of("gaps")),
    ));
    Ok(())
}

fn total(c: Copied) -> u64 {
    c.added + c.present
}

/// Copies one account's audit chunks, dedup ids and jobs (its newest sequences
/// were written first).
fn copy_account(sled: &SledStore, m: &mut Mover<'_>, h: &AccountHeads) -> Result<(), Step> {
    let pg = m.pg.clone();
    let (account, heads) = (&h.account, h.heads);
    let mut batch: Vec<RawChunk> = Vec::new();
    let (mut chunks, mut events) = (Copied::default(), 0u64);
    let mut flush = |m: &mut Mover<'_>, batch: &mut Vec<RawChunk>| -> Result<(), MoveError> {
        if batch.is_empty() {
            return Ok(());
        }
        events += batch.iter().map(|c| c.last - c.first + 1).sum::<u64>();
        let c = m.write(
            || format!("the audit events of account {account}"),
            pg.import_chunks(account, std::mem::take(batch)),
        )?;
        chunks.add(c);
        Ok(())
    };
    let mut failed = None;
    sled.export_audit(account, |chunk| {
        batch.push(chunk);
        if batch.len() >= CHUNKS_PER_WRITE {
            if let Err(e) = flush(m, &mut batch) {
                failed = Some(e);
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    flush(m, &mut batch)?;
    m.noted("audit chunks", chunks);
    let ids = sled.export_audit_ids(account)?;
    let mut id_count = Copied::default();
    for part in ids.chunks(ROWS_PER_WRITE) {
        let part: Vec<RawIds> = part.to_vec();
        id_count.add(m.write(
            || format!("the event ids of account {account}"),
            pg.import_ids(account, part),
        )?);
    }
    m.noted("dedup id records", id_count);
    let jobs = sled.export_jobs(account)?;
    let mut tombstones = Some(sled.export_tombstones(account)?);
    let mut job_count = Copied::default();
    let parts: Vec<_> = jobs.chunks(ROWS_PER_WRITE).map(|p| p.to_vec()).collect();
    for part in parts.into_iter().chain(std::iter::once(Vec::new())) {
        let stones = tombstones.take().unwrap_or_default();
        if part.is_empty() && stones.is_empty() {
            continue;
        }
        job_count.add(m.write(
            || format!("the jobs of account {account}"),
            pg.import_jobs(account, part, stones),
        )?);
    }
    m.noted("job snapshots", job_count);
    (m.progress)(format!(
        "account {account}: {events} audit events in {} chunks, {} job snapshots (newest audit sequence {}, job change {})",
        total(chunks),
        total(job_count),
        heads.audit,
        heads.jobs
    ));
    Ok(())
}
