//! One store interface, two backends: [`Store`] is what the actors, the HTTP
//! handlers, retention, reload and the CLI hold, and it is either the embedded sled
//! store ([`SledStore`], the default) or PostgreSQL ([`PgStore`], several nodes).
//!
//! Why an enum and not a trait object or a generic: the ~50 operations keep exactly
//! the names, arguments and results they had on sled, so no call site changes (it
//! still says `Store`, `store.commit(..)`, `Store::append_audit` as a function
//! pointer); a dispatch is one `match` on two variants, which the compiler inlines,
//! with no vtable and no boxing of the generic visitors (`audit_after`,
//! `jobs_changed_after`, `replay::<T>`), which a trait object could not take at all.
//! A generic `Store<B>` would have spread a type parameter through every actor,
//! message and handler.
//!
//! The operations are synchronous, as on sled. On PostgreSQL each runs on the
//! store's own runtime and the calling thread waits parked ([`PgStore::wait`]) —
//! where sled's calls wait for the disk: the ingest handlers' blocking pool
//! (`web::block`), the collectors' sync arbiters, and the integration, replay and
//! supervisor actors on their arbiters (one round trip per checkpoint commit or
//! read, as sled's calls block them for a read or a flush today).
//!
//! What is the embedded store's alone (its test hooks, the per-account retention
//! sweep, claims of posts in flight): on PostgreSQL retention drops whole audit
//! partitions instead (`PgStore::sweep`, run by `lib.rs`), and the claim is empty.
//! The backlog quota is enforced on both: on PostgreSQL by one transaction per
//! account on any node (`postgres/quota.rs`), the commit of a post that was in
//! flight taking what it delivered out of the gap.

use super::postgres::{Expected, Fence, Holdings, PgError, PgOptions, PgStore};
use super::{
    Account, AccountToken, AuditSweep, Backlog, Checkpoint, DeadLetter, Gap, Heads, IngestOutcome,
    KnownAccount, OverviewRow, PostClaim, QuotaDrops, Readers, SledStore, StoreError, StoreOptions,
    StoredAudit, StoredJob, SyncRecord, SyncSummary,
};
use crate::model::audit_parts::EncodedAudit;
use crate::model::{AccountId, Integration, JobSnapshot, Source};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The service's store: sled or PostgreSQL (see the module's note). Cheap to clone.
#[derive(Clone)]
pub enum Store {
    /// The embedded store in the data directory.
    Sled(SledStore),
    /// PostgreSQL, with this node's shard leases.
    Postgres(PgNode),
}

/// A node on PostgreSQL: the store, and the shard leases its last balancing round
/// left it holding — what its checkpoint commits are fenced by.
#[derive(Clone)]
pub struct PgNode {
    pg: PgStore,
    holdings: Arc<RwLock<Held>>,
    /// The accounts an ingest on this node took over their quota, for this
    /// node's quota sweep (any node may sweep any account).
    sweep_due: Arc<super::retention::SweepDue>,
}

/// The shard leases as the last successful balancing round left them, and until
/// when this node may trust them without another round.
#[derive(Default)]
struct Held {
    holdings: Holdings,
    /// The round's start + the lease − a quarter of it, on this machine's monotonic
    /// clock: PostgreSQL's lease began after the round started, so this is before it
    /// lapses there, by a quarter for a post under way and for clocks that tick at
    /// slightly different rates. `None` before the first round.
    until: Option<Instant>,
    /// The epoch this node last held each shard under, kept after a shard is lost:
    /// a claim raises a shard's epoch by one, so one held again more than one
    /// epoch later was claimed by another node in between.
    last_epoch: BTreeMap<i32, i64>,
    /// Shards held again after another node held them: this node's actors of
    /// them started from checkpoints that node may have moved since, so they
    /// neither post nor commit (`fence` refuses) until the Supervisor restarted
    /// them from the stored state (`Store::restarted`).
    stale: BTreeSet<i32>,
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> StoreError {
        match e {
            // Callers act on these as on sled's: 503 and retry, 404, 409.
            PgError::Unavailable(why) => StoreError::Unavailable(why),
            // Contention: retried the same way, but not noted as a fault.
            e @ PgError::Busy(_) => StoreError::Unavailable(e.to_string()),
            PgError::Gone => StoreError::Gone,
            PgError::VersionConflict { actual: None, .. } => StoreError::Gone,
            PgError::VersionConflict { .. } => StoreError::Changed,
            PgError::Corrupt { key, reason } => StoreError::Corrupt { key, reason },
            PgError::Secret(e) => StoreError::Secret(e),
            // A node that lost a lease must not move the checkpoint: the delivery
            // stops and retries, and only the lease holder's commit can succeed.
            e @ PgError::LeaseLost { .. } => StoreError::Unavailable(e.to_string()),
            other => StoreError::Postgres(other),
        }
    }
}

impl PgNode {
    fn wait<T>(&self, f: impl Future<Output = Result<T, PgError>>) -> Result<T, StoreError> {
        self.pg.wait(f).map_err(StoreError::from)
    }

    /// Takes the outcome of a lease round that began at `began` as what fences
    /// this node's commits and posts from now on, and logs a change.
    fn adopt(&self, began: Instant, holdings: Holdings) -> Holdings {
        let lease = self.pg.lease_time();
        let mut held = self.holdings.write().unwrap_or_else(|p| p.into_inner());
        let before = &held.holdings;
        let me = self.pg.node_name();
        let (was, now) = (kept(before), kept(&holdings));
        if was != now || before.live_nodes != holdings.live_nodes || held.until.is_none() {
            let gained: Vec<i32> = now.iter().filter(|s| !was.contains(s)).copied().collect();
            let lost: Vec<i32> = was.iter().filter(|s| !now.contains(s)).copied().collect();
            log::info!(
                "postgres: node {me} holds {} of {} shards (its share: {}; gained {}; lost {}; handing over {}); live nodes: {}",
                now.len(),
                self.pg.shards(),
                holdings.target,
                shard_list(&gained),
                shard_list(&lost),
                shard_list(&holdings.surplus),
                holdings.live_nodes.join(", ")
            );
        }
        for (&shard, &epoch) in &holdings.held {
            if let Some(last) = held.last_epoch.insert(shard, epoch) {
                if epoch > last + 1 {
                    held.stale.insert(shard);
                }
            }
        }
        held.holdings = holdings.clone();
        held.until = Some(began + lease - lease / 4);
        holdings
    }

    /// The fence of integration `id`'s checkpoint commits: this node's lease on its shard.
    fn fence(&self, id: &Uuid) -> Result<Fence, StoreError> {
        let shard = self.pg.shard_of(id);
        let held = self.holdings.read().unwrap_or_else(|p| p.into_inner());
        if held.stale.contains(&shard) {
            return Err(StoreError::Unavailable(format!(
                "shard {shard} of integration {id} was delivered by another node while this node's ({}) lease had lapsed: its delivery starts again here from the stored checkpoint",
                self.pg.node_name()
            )));
        }
        held.holdings
            .fence(self.pg.node_name(), shard)
            .ok_or_else(|| {
                StoreError::Unavailable(format!(
                    "this node ({}) holds no lease on shard {shard} of integration {id} now; its checkpoint moves once the lease is held",
                    self.pg.node_name()
                ))
            })
    }
}

/// The shards of `h` this node runs delivery for: held and not handed over.
fn kept(h: &Holdings) -> Vec<i32> {
    h.kept_leases().into_keys().collect()
}

/// Jobs read per round trip when `running_jobs` pages through PostgreSQL.
const RUNNING_PAGE: usize = 256;

impl Store {
    /// Opens the embedded store as the service runs it (see [`SledStore::open_with_options`]).
    pub fn open_with_options(dir: &Path, options: &StoreOptions) -> Result<Store, StoreError> {
        SledStore::open_with_options(dir, options).map(Store::Sled)
    }

    /// Opens the embedded store with sled's defaults (tools and tests).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        SledStore::open(dir).map(Store::Sled)
    }

    /// Connects to PostgreSQL (migrating the schema), from any thread, and takes
    /// this node's first shard leases (its share of the free ones), so that its
    /// first commits are fenced.
    pub fn connect_postgres(options: PgOptions) -> Result<Store, StoreError> {
        let pg = super::postgres::park_until_done(PgStore::connect(options))?;
        let node = PgNode {
            pg,
            holdings: Arc::default(),
            sweep_due: Arc::default(),
        };
        let store = Store::Postgres(node);
        // Several nodes share the shards: each delivers only the integrations of
        // the shards it holds (`Store::holds`), and the lease loop hands shards over
        // as nodes come and go (lib.rs `spawn_leases`).
        store.first_round()?;
        // After registering (see `check_no_unfinished_import`): a node must not run
        // on a half-copied database. Refused, it leaves at once, so that the copy
        // can be run again without waiting for its heartbeat to lapse.
        if let Store::Postgres(n) = &store {
            if let Err(e) = n.wait(n.pg.check_no_unfinished_import()) {
                if let Err(left) = n.wait(n.pg.leave()) {
                    log::warn!("postgres: leaving after the refused start failed: {left}");
                }
                return Err(e);
            }
        }
        Ok(store)
    }

    /// The first lease round of a node starting on PostgreSQL. A live row under
    /// its name from another process is either a process killed moments ago (a
    /// crash and restart: its heartbeat stands still and lapses within the lease)
    /// or one that runs (it renews every lease/3): the start waits for the first,
    /// and is refused as soon as the heartbeat moves, or when it did not lapse.
    /// A round that could not get its turn or its answer in time (another node's
    /// round held the balancing lock longer than a round waits for it, as a loaded
    /// machine makes it; a connection lost) is tried again within the same bound,
    /// as the lease loop tries again: it says nothing about the name, and the
    /// start must not fail, or be refused for the wrong reason, on it.
    fn first_round(&self) -> Result<Holdings, StoreError> {
        let Store::Postgres(n) = self else {
            return Ok(Holdings::default());
        };
        let me = n.pg.node_name().to_owned();
        let lease = n.pg.lease_time();
        let give_up = Instant::now() + lease + lease / 3;
        let mut seen = None;
        // The name found in use by an earlier round: the answer if the rounds that
        // follow cannot finish before the start gives up.
        let mut in_use: Option<StoreError> = None;
        let mut said_busy = false;
        loop {
            let e = match self.balance_leases() {
                Ok(h) => return Ok(h.unwrap_or_default()),
                Err(e @ StoreError::Postgres(PgError::NameInUse { .. })) => e,
                // Busy or unreachable (`PgError::is_unavailable`, as `StoreError` has it).
                Err(e @ StoreError::Unavailable(_)) => {
                    if Instant::now() >= give_up {
                        return Err(in_use.unwrap_or(e));
                    }
                    if !said_busy {
                        log::info!("postgres: node {me}'s first lease round did not finish ({e}); trying again until the start gives up");
                        said_busy = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let heartbeat = match n.wait(n.pg.nodes()) {
                Ok(nodes) => nodes
                    .into_iter()
                    .find(|x| x.name == me)
                    .map(|x| x.heartbeat_at),
                // Unread: whether it moved is asked again after the next round.
                Err(StoreError::Unavailable(_)) => None,
                Err(other) => return Err(other),
            };
            let renewed = matches!((seen, heartbeat), (Some(a), Some(b)) if a != b);
            if renewed || Instant::now() >= give_up {
                return Err(e);
            }
            if seen.is_none() && in_use.is_none() {
                log::warn!(
                    "postgres: node {me} has a live heartbeat from another process: waiting up to {} s for it to lapse (a process killed moments ago); if it is renewed, another process runs under this name and this start is refused",
                    lease.as_secs_f64()
                );
            }
            seen = heartbeat.or(seen);
            in_use = Some(e);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The PostgreSQL store, when this is one.
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            Store::Sled(_) => None,
            Store::Postgres(n) => Some(&n.pg),
        }
    }

    /// One round of shard ownership on PostgreSQL (heartbeat, renew, claim): the
    /// holdings that fence this node's commits until the next round. Nothing to do
    /// on sled, where one process owns everything.
    pub fn balance_leases(&self) -> Result<Option<Holdings>, StoreError> {
        let Store::Postgres(n) = self else {
            return Ok(None);
        };
        let began = Instant::now();
        let holdings = n.wait(n.pg.balance())?;
        Ok(Some(n.adopt(began, holdings)))
    }

    /// [`Store::balance_leases`] for an async caller (the lease loop): the round
    /// runs on the store's own threads and connections, and nothing here blocks
    /// the caller's thread.
    pub async fn renew_leases(&self) -> Result<Option<Holdings>, StoreError> {
        let Store::Postgres(n) = self else {
            return Ok(None);
        };
        let began = Instant::now();
        let holdings = n.pg.balance().await?;
        Ok(Some(n.adopt(began, holdings)))
    }

    /// Whether this node may post integration `id`'s events now. Always on sled. On
    /// PostgreSQL only while the last successful lease round left it holding the
    /// integration's shard, no longer than that round's lease lasts (see
    /// `Held::until`), and while PostgreSQL says the lease lasts a margin more
    /// (one round trip, `PgStore::lease_lasts`): a node that lost the shard, or
    /// cannot renew, stops sending before another node may deliver the same
    /// events — a post it sent could never be committed, so it would be sent
    /// again without end.
    pub fn may_post(&self, id: &Uuid) -> Result<(), StoreError> {
        let Store::Postgres(n) = self else {
            return Ok(());
        };
        let shard = n.pg.shard_of(id);
        let held = n.holdings.read().unwrap_or_else(|p| p.into_inner());
        let me = n.pg.node_name();
        if !held.holdings.held.contains_key(&shard) {
            return Err(StoreError::Unavailable(format!(
                "this node ({me}) holds no lease on shard {shard} of integration {id} now: it sends nothing for it until the lease is held again"
            )));
        }
        if held.until.is_none_or(|t| Instant::now() >= t) {
            return Err(StoreError::Unavailable(format!(
                "this node ({me}) could not renew its lease on shard {shard} of integration {id} in time: it sends nothing for it until a renewal succeeds"
            )));
        }
        drop(held);
        // And by PostgreSQL's clock, with a margin the claims respect too: this
        // machine's view above may be stale (a pause between the round and now).
        let fence = n.fence(id)?;
        n.wait(n.pg.lease_lasts(&fence))
    }

    /// Whether this node runs integration `id`'s delivery: always on sled; on
    /// PostgreSQL while the last lease round left it holding the integration's
    /// shard and not handing it over (surplus). `may_post` and the fence still
    /// guard every post and commit: this only says which actors to run.
    pub fn holds(&self, id: &Uuid) -> bool {
        let Store::Postgres(n) = self else {
            return true;
        };
        let shard = n.pg.shard_of(id);
        let held = n.holdings.read().unwrap_or_else(|p| p.into_inner());
        held.holdings.held.contains_key(&shard) && !held.holdings.surplus.contains(&shard)
    }

    /// Whether this node hands integration `id`'s shard over (it still holds the
    /// lease, beyond its share): its actor finishes its posts in flight first. An
    /// integration of a shard not held at all was claimed elsewhere: stopped at once.
    pub fn hands_over(&self, id: &Uuid) -> bool {
        let Store::Postgres(n) = self else {
            return false;
        };
        let shard = n.pg.shard_of(id);
        let held = n.holdings.read().unwrap_or_else(|p| p.into_inner());
        held.holdings.held.contains_key(&shard) && held.holdings.surplus.contains(&shard)
    }

    /// The shards held again after another node held them, whose actors must
    /// restart from the stored state (see `Held::stale`); empty on sled.
    pub fn stale_shards(&self) -> BTreeSet<i32> {
        let Store::Postgres(n) = self else {
            return BTreeSet::new();
        };
        let held = n.holdings.read().unwrap_or_else(|p| p.into_inner());
        held.stale.clone()
    }

    /// The actors of `shards` were stopped and start again from what is stored:
    /// their posts and commits are fenced by the current leases from now on.
    pub fn restarted(&self, shards: &[i32]) {
        if let Store::Postgres(n) = self {
            let mut held = n.holdings.write().unwrap_or_else(|p| p.into_inner());
            for s in shards {
                held.stale.remove(s);
            }
        }
    }

    /// The shards this node runs delivery for (held, not handed over), each with
    /// its lease's epoch; empty on sled.
    pub fn kept_leases(&self) -> BTreeMap<i32, i64> {
        let Store::Postgres(n) = self else {
            return BTreeMap::new();
        };
        let held = n.holdings.read().unwrap_or_else(|p| p.into_inner());
        held.holdings.kept_leases()
    }

    /// Hands `shards` back (PostgreSQL), after their integrations' actors stopped:
    /// from now on this node neither posts nor commits for them, and a node short
    /// of shards claims them on its next round. Only those still surplus by the
    /// latest round: one that is this node's share again (a node left meanwhile)
    /// is kept. Nothing on sled.
    pub async fn release_shards(&self, shards: &[i32]) -> Result<Vec<i32>, StoreError> {
        let Store::Postgres(n) = self else {
            return Ok(Vec::new());
        };
        let shards: Vec<i32> = {
            let mut held = n.holdings.write().unwrap_or_else(|p| p.into_inner());
            let still: Vec<i32> = shards
                .iter()
                .filter(|s| held.holdings.surplus.contains(s))
                .copied()
                .collect();
            for s in &still {
                held.holdings.held.remove(s);
            }
            held.holdings.surplus.retain(|s| !still.contains(s));
            still
        };
        if shards.is_empty() {
            return Ok(shards);
        }
        n.pg.release(&shards).await?;
        Ok(shards)
    }

    /// A clean stop on PostgreSQL: hands every shard back at once. Nothing on sled.
    pub fn leave(&self) -> Result<(), StoreError> {
        if let Store::Postgres(n) = self {
            n.wait(n.pg.leave())?;
            *n.holdings.write().unwrap_or_else(|p| p.into_inner()) = Held::default();
        }
        Ok(())
    }

    // ---- health and durability ----

    /// Why the store cannot take writes right now, if so (`/healthz`, ingest).
    pub fn fault(&self) -> Option<String> {
        match self {
            Store::Sled(s) => s.fault(),
            // The pool's words ("error connecting to server") do not say to what.
            Store::Postgres(n) => {
                n.pg.fault()
                    .map(|why| format!("no writable PostgreSQL answers: {why}"))
            }
        }
    }

    /// Notes the outcome of a write (sled marks its disk faulty on an I/O error;
    /// PostgreSQL's operations note their own outcome).
    pub fn noted<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match self {
            Store::Sled(s) => s.noted(result),
            Store::Postgres(_) => result,
        }
    }

    /// Waits until every write made before the call is durable. On PostgreSQL a
    /// write is durable when its call returned (its transaction committed).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.flush().await,
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Which opening of the database writes go to now (sled reopens after a fault;
    /// PostgreSQL has one generation: a commit that returned is durable).
    pub fn generation(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.generation(),
            Store::Postgres(_) => Ok(0),
        }
    }

    /// Like `flush`, failing when sled was reopened since `generation`.
    pub async fn flush_since(&self, generation: u64) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.flush_since(generation).await,
            Store::Postgres(_) => Ok(()),
        }
    }

    /// Synchronous flush, for shutdown.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.flush_now(),
            Store::Postgres(_) => Ok(()),
        }
    }

    /// The bytes the store takes: sled's files, or PostgreSQL's database.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.size_on_disk(),
            Store::Postgres(n) => n.wait(n.pg.size_on_disk()),
        }
    }

    /// Test builds: slows the embedded store down (see `pace`). PostgreSQL is not
    /// paced: a test that needs it runs on sled.
    #[cfg(feature = "test-hooks")]
    pub fn set_pace(&self, pace: super::Pace) {
        match self {
            Store::Sled(s) => s.set_pace(pace),
            Store::Postgres(_) => panic!("set_pace is a test hook of the embedded store only"),
        }
    }

    /// Test builds: how many batches the embedded store's sweeps have run.
    #[cfg(feature = "test-hooks")]
    pub fn sweep_batches(&self) -> u64 {
        match self {
            Store::Sled(s) => s.sweep_batches(),
            Store::Postgres(_) => 0,
        }
    }

    /// Test builds: how many passes the embedded store's sweeps have run, counting
    /// those that removed nothing.
    #[cfg(feature = "test-hooks")]
    pub fn sweep_passes(&self) -> u64 {
        match self {
            Store::Sled(s) => s.sweep_passes(),
            Store::Postgres(_) => 0,
        }
    }

    /// Test builds: the embedded store's pause before counting (see `pace`).
    pub fn before_count(&self) {
        if let Store::Sled(s) = self {
            s.before_count()
        }
    }

    // ---- accounts and tokens ----

    /// Every account siemsync has heard of, sorted by name.
    pub fn known_accounts(&self) -> Result<Vec<KnownAccount>, StoreError> {
        match self {
            Store::Sled(s) => s.known_accounts(),
            Store::Postgres(n) => n.wait(n.pg.known_accounts()),
        }
    }

    /// Whether siemsync has heard of the account at all.
    pub fn knows_account(&self, id: &AccountId) -> Result<bool, StoreError> {
        match self {
            Store::Sled(s) => s.knows_account(id),
            Store::Postgres(n) => n.wait(n.pg.knows_account(id)),
        }
    }

    /// Sets an account's feature switch.
    pub fn put_account(&self, id: &AccountId, account: &Account) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_account(id, account),
            Store::Postgres(n) => n.wait(n.pg.put_account(id, account)),
        }
    }

    /// An account's feature switch, if it was ever set.
    pub fn account(&self, id: &AccountId) -> Result<Option<Account>, StoreError> {
        match self {
            Store::Sled(s) => s.account(id),
            Store::Postgres(n) => n.wait(n.pg.account(id)),
        }
    }

    /// Makes an account token; answers it and its secret (shown once).
    pub fn create_token(
        &self,
        account: &AccountId,
        name: Option<String>,
    ) -> Result<(AccountToken, String), StoreError> {
        match self {
            Store::Sled(s) => s.create_token(account, name),
            Store::Postgres(n) => n.wait(n.pg.create_token(account, name)),
        }
    }

    /// The account token a bearer secret stands for, if any.
    pub fn token_for_secret(&self, secret: &str) -> Result<Option<AccountToken>, StoreError> {
        match self {
            Store::Sled(s) => s.token_for_secret(secret),
            Store::Postgres(n) => n.wait(n.pg.token_for_secret(secret)),
        }
    }

    /// The tokens of `account` (never their secrets).
    pub fn tokens_of(&self, account: &AccountId) -> Result<Vec<AccountToken>, StoreError> {
        match self {
            Store::Sled(s) => s.tokens_of(account),
            Store::Postgres(n) => n.wait(n.pg.tokens_of(account)),
        }
    }

    /// Deletes an account's token; whether there was one.
    pub fn delete_token(&self, account: &AccountId, id: &Uuid) -> Result<bool, StoreError> {
        match self {
            Store::Sled(s) => s.delete_token(account, id),
            Store::Postgres(n) => n.wait(n.pg.delete_token(account, id)),
        }
    }

    // ---- events ----

    /// Stores audit events in order, ignoring retries within the dedup window;
    /// durable once this returned (sled: after `flush_since`).
    pub fn append_audit<E: Into<EncodedAudit>>(
        &self,
        account: &AccountId,
        events: Vec<E>,
    ) -> Result<IngestOutcome, StoreError> {
        match self {
            Store::Sled(s) => s.append_audit(account, events),
            Store::Postgres(n) => n.wait(n.pg.append_audit(account, events)),
        }
    }

    /// [`Store::append_audit`] of events ingest read straight into their stored form.
    /// On sled they are left in `events`, so that the caller frees them on the thread
    /// that allocated them (a free from another thread is the allocator's dearer
    /// path); PostgreSQL's writer takes them.
    pub fn append_encoded_audit(
        &self,
        account: &AccountId,
        events: &mut Vec<EncodedAudit>,
    ) -> Result<IngestOutcome, StoreError> {
        match self {
            Store::Sled(s) => s.append_encoded_audit(account, events),
            Store::Postgres(n) => n.wait(n.pg.append_audit(account, std::mem::take(events))),
        }
    }

    /// Stores job snapshots; answers how many changed a job.
    pub fn put_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<JobSnapshot>,
    ) -> Result<usize, StoreError> {
        match self {
            Store::Sled(s) => s.put_jobs(account, jobs),
            Store::Postgres(n) => n.wait(n.pg.put_jobs(account, jobs)),
        }
    }

    /// The bytes the account's stored audit events and job snapshots take: what
    /// the backlog quota is enforced on.
    pub fn stored_bytes(&self, account: &AccountId) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.stored_bytes(account),
            Store::Postgres(n) => n.wait(n.pg.stored_bytes(account)),
        }
    }

    /// The stored bytes the slowest reader of each source (`min_audit`, `min_jobs`:
    /// their checkpoints) has not passed. PostgreSQL counts audit events only.
    pub fn backlog_bytes(
        &self,
        account: &AccountId,
        min_audit: Option<u64>,
        min_jobs: Option<u64>,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.backlog_bytes(account, min_audit, min_jobs),
            Store::Postgres(n) => n.wait(n.pg.audit_bytes_after(account, min_audit.unwrap_or(0))),
        }
    }

    /// Visits the stored audit events after `after`, in order, until `visit` breaks.
    pub fn audit_after(
        &self,
        account: &AccountId,
        after: u64,
        visit: impl FnMut(&StoredAudit<'_>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.audit_after(account, after, visit),
            Store::Postgres(n) => n.wait(n.pg.audit_after(account, after, visit)),
        }
    }

    /// Visits the job snapshots changed after `after`, in order, until `visit` breaks.
    pub fn jobs_changed_after(
        &self,
        account: &AccountId,
        after: u64,
        visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.jobs_changed_after(account, after, visit),
            Store::Postgres(n) => n.wait(n.pg.jobs_changed_after(account, after, visit)),
        }
    }

    /// Visits the jobs still in progress, by job id, after `after_job`, until `visit` breaks.
    pub fn running_jobs(
        &self,
        account: &AccountId,
        after_job: Option<&str>,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let n = match self {
            Store::Sled(s) => return s.running_jobs(account, after_job, visit),
            Store::Postgres(n) => n,
        };
        let mut after = after_job.map(str::to_owned);
        loop {
            let page = n.wait(n.pg.running_jobs(account, after.as_deref(), RUNNING_PAGE))?;
            let full = page.len() == RUNNING_PAGE;
            after = page.last().map(|j| j.snapshot.job.clone());
            for job in page {
                if visit(job).is_break() {
                    return Ok(());
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The account's last audit sequence and job change.
    pub fn heads(&self, account: &AccountId) -> Result<Heads, StoreError> {
        match self {
            Store::Sled(s) => s.heads(account),
            Store::Postgres(n) => n.wait(n.pg.heads(account)),
        }
    }

    /// What an integration has not delivered yet.
    pub fn backlog(&self, it: &Integration, cp: &Checkpoint) -> Result<Backlog, StoreError> {
        match self {
            Store::Sled(s) => s.backlog(it, cp),
            Store::Postgres(n) => n.wait(n.pg.backlog(it, cp)),
        }
    }

    /// Audit events after `after`: how many, and when the oldest arrived.
    pub fn audit_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        match self {
            Store::Sled(s) => s.audit_backlog(account, after),
            Store::Postgres(n) => n.wait(n.pg.audit_backlog(account, after)),
        }
    }

    /// Job snapshots changed after `after`: how many, and when the oldest arrived.
    pub fn job_backlog(
        &self,
        account: &AccountId,
        after: u64,
    ) -> Result<(u64, Option<DateTime<Utc>>), StoreError> {
        match self {
            Store::Sled(s) => s.job_backlog(account, after),
            Store::Postgres(n) => n.wait(n.pg.job_backlog(account, after)),
        }
    }

    // ---- integrations ----

    /// Stores `it` over version `expected` (`None`: a new one); answers it with its
    /// new version. `Changed` / `Gone` when another write came first.
    pub fn put_integration(
        &self,
        it: &Integration,
        expected: Option<u64>,
    ) -> Result<Integration, StoreError> {
        match self {
            Store::Sled(s) => s.put_integration(it, expected),
            Store::Postgres(n) => {
                let cas = expected.map_or(Expected::New, Expected::Version);
                let version = n.wait(n.pg.put_integration(it, cas))?;
                Ok(Integration {
                    version,
                    ..it.clone()
                })
            }
        }
    }

    /// Whether an integration should be delivering.
    pub fn is_active(&self, it: &Integration) -> Result<bool, StoreError> {
        match self {
            Store::Sled(s) => s.is_active(it),
            Store::Postgres(n) => n.wait(n.pg.is_active(it)),
        }
    }

    /// Integration `id` of `account`, with its token opened.
    pub fn integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        match self {
            Store::Sled(s) => s.integration(account, id),
            Store::Postgres(n) => Ok(n.wait(n.pg.integration(account, id))?.map(versioned)),
        }
    }

    /// Every integration of `account`.
    pub fn integrations_of(&self, account: &AccountId) -> Result<Vec<Integration>, StoreError> {
        match self {
            Store::Sled(s) => s.integrations_of(account),
            Store::Postgres(n) => Ok(n
                .wait(n.pg.integrations_of(account))?
                .into_iter()
                .map(versioned)
                .collect()),
        }
    }

    /// Every stored integration of every account.
    pub fn all_integrations(&self) -> Result<Vec<Integration>, StoreError> {
        match self {
            Store::Sled(s) => s.all_integrations(),
            Store::Postgres(n) => Ok(n
                .wait(n.pg.all_integrations())?
                .into_iter()
                .map(versioned)
                .collect()),
        }
    }

    /// How many integrations are stored, without opening their tokens (sled only:
    /// the nodes view; on PostgreSQL each node's count comes with its shards).
    pub fn integration_count(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.integration_count(),
            Store::Postgres(n) => Ok(n.wait(n.pg.integration_stamps())?.len() as u64),
        }
    }

    /// Removes an integration with everything that hangs off it; answers what was
    /// removed. (On PostgreSQL read first, then deleted: a change made in between
    /// is deleted too, and the answer shows the version read.)
    pub fn delete_integration(
        &self,
        account: &AccountId,
        id: &Uuid,
    ) -> Result<Option<Integration>, StoreError> {
        match self {
            Store::Sled(s) => s.delete_integration(account, id),
            Store::Postgres(n) => {
                let Some(it) = n.wait(n.pg.integration(account, id))? else {
                    return Ok(None);
                };
                let removed = n.wait(n.pg.delete_integration(account, id))?;
                Ok(removed.then(|| versioned(it)))
            }
        }
    }

    /// Integration `id`'s checkpoint.
    pub fn checkpoint(&self, id: &Uuid) -> Result<Checkpoint, StoreError> {
        match self {
            Store::Sled(s) => s.checkpoint(id),
            Store::Postgres(n) => n.wait(n.pg.checkpoint(id)),
        }
    }

    /// A fresh id (dead letters).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.next_id(),
            Store::Postgres(n) => n.wait(n.pg.next_id()),
        }
    }

    /// Moves integration `id`'s checkpoint to `cp` with its dead letters, only while
    /// it exists; on PostgreSQL only under this node's lease on its shard (fenced).
    pub fn commit(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
    ) -> Result<Checkpoint, StoreError> {
        match self {
            Store::Sled(s) => s.commit(account, id, cp, dead),
            Store::Postgres(n) => {
                let fence = n.fence(id)?;
                n.wait(n.pg.commit(account, id, cp, dead, &fence))
            }
        }
    }

    /// [`Store::commit`] of a post that delivered the events `posted` (their
    /// source and sequences). On PostgreSQL those a quota sweep dropped while the
    /// post was in flight are taken out of the integration's gap (the sweep counted
    /// them); on sled a post's claim keeps its events, so nothing to do.
    pub fn commit_delivered(
        &self,
        account: &AccountId,
        id: &Uuid,
        cp: &Checkpoint,
        dead: &[DeadLetter],
        posted: (Source, Vec<u64>),
    ) -> Result<Checkpoint, StoreError> {
        match self {
            Store::Sled(s) => s.commit(account, id, cp, dead),
            Store::Postgres(n) => {
                let fence = n.fence(id)?;
                n.wait(n.pg.commit_posted(account, id, cp, dead, &fence, Some(posted)))
            }
        }
    }

    /// Integration `id`'s dead letters: how many, and the newest `limit`.
    pub fn dead_letters(
        &self,
        id: &Uuid,
        limit: usize,
    ) -> Result<(usize, Vec<DeadLetter>), StoreError> {
        match self {
            Store::Sled(s) => s.dead_letters(id, limit),
            Store::Postgres(n) => n.wait(n.pg.dead_letters(id, limit)),
        }
    }

    /// Records the progress of a replay this node's actor runs, only while the
    /// integration exists and, on PostgreSQL, only while this node holds the lease
    /// on its shard (fenced like a checkpoint commit): a node that lost the shard
    /// never overwrites the record of the replay its new holder resumed.
    pub fn put_replay_progress(
        &self,
        account: &AccountId,
        id: &Uuid,
        replay: &impl Serialize,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_replay(account, id, replay),
            Store::Postgres(n) => {
                let fence = n.fence(id)?;
                n.wait(n.pg.put_replay_fenced(account, id, replay, &fence))
            }
        }
    }

    /// Records an integration's replay, only while the integration exists.
    pub fn put_replay(
        &self,
        account: &AccountId,
        id: &Uuid,
        replay: &impl Serialize,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_replay(account, id, replay),
            Store::Postgres(n) => n.wait(n.pg.put_replay(id, replay)),
        }
    }

    /// Removes an integration's replay record.
    pub fn delete_replay(&self, id: &Uuid) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.delete_replay(id),
            Store::Postgres(n) => n.wait(n.pg.delete_replay(id)),
        }
    }

    /// An integration's replay record, if any.
    pub fn replay<T: DeserializeOwned + Send + 'static>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Store::Sled(s) => s.replay(id),
            Store::Postgres(n) => n.wait(n.pg.replay(id)),
        }
    }

    /// Keeps the latest connection test's report, only while the integration exists.
    pub fn put_connection_report(
        &self,
        account: &AccountId,
        id: &Uuid,
        report: &impl Serialize,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.put_connection_report(account, id, report),
            Store::Postgres(n) => n.wait(n.pg.put_connection_report(id, report)),
        }
    }

    /// The latest connection test's report, if any.
    pub fn connection_report<T: DeserializeOwned>(
        &self,
        id: &Uuid,
    ) -> Result<Option<T>, StoreError> {
        match self {
            Store::Sled(s) => s.connection_report(id),
            Store::Postgres(n) => n.wait(n.pg.connection_report(id)),
        }
    }

    /// The losses recorded for integration `id`.
    pub fn gaps(&self, id: &Uuid) -> Result<Vec<Gap>, StoreError> {
        match self {
            Store::Sled(s) => s.gaps(id),
            Store::Postgres(n) => n.wait(n.pg.gaps(id)),
        }
    }

    // ---- sync history ----

    /// Records one sync of integration `id`.
    pub fn record_sync(
        &self,
        account: &AccountId,
        id: &Uuid,
        record: &SyncRecord,
    ) -> Result<(), StoreError> {
        match self {
            Store::Sled(s) => s.record_sync(account, id, record),
            Store::Postgres(n) => n.wait(n.pg.record_sync(account, id, record)),
        }
    }

    /// Integration `id`'s syncs since `since`, newest first, at most `limit`.
    pub fn history(
        &self,
        id: &Uuid,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<SyncRecord>, StoreError> {
        match self {
            Store::Sled(s) => s.history(id, since, limit),
            Store::Postgres(n) => n.wait(n.pg.history(id, since, limit)),
        }
    }

    /// The integration's latest sync and last sync without an error.
    pub fn sync_summary(&self, id: &Uuid) -> Result<Option<SyncSummary>, StoreError> {
        match self {
            Store::Sled(s) => s.sync_summary(id),
            Store::Postgres(n) => n.wait(n.pg.sync_summary(id)),
        }
    }

    /// Every integration with its summary, for the overview.
    pub fn overview_rows(&self) -> Result<Vec<OverviewRow>, StoreError> {
        match self {
            Store::Sled(s) => s.overview_rows(),
            Store::Postgres(n) => n.wait(n.pg.overview_rows()),
        }
    }

    // ---- the embedded store's retention (see the module's note) ----

    /// Before a post: which of its events retention removed meanwhile, and a claim
    /// that keeps the others until dropped. On PostgreSQL nothing is claimed:
    /// retention drops only partitions every reader passed or that outlived the
    /// retention (then counted in the gap), and what the quota drops is counted at
    /// once and taken out of the gap again by the commit of a post that carried it
    /// (`commit_delivered`).
    pub fn claim_for_post(
        &self,
        account: &AccountId,
        source: Source,
        seqs: &[u64],
    ) -> Result<(Vec<bool>, Option<PostClaim>), StoreError> {
        match self {
            Store::Sled(s) => {
                let (gone, claim) = s.claim_for_post(account, source, seqs)?;
                Ok((gone, Some(claim)))
            }
            Store::Postgres(_) => Ok((vec![false; seqs.len()], None)),
        }
    }

    /// Accounts that have events stored.
    pub fn accounts_with_events(&self) -> Result<Vec<AccountId>, StoreError> {
        match self {
            Store::Sled(s) => s.accounts_with_events(),
            Store::Postgres(n) => n.wait(n.pg.accounts_with_events()),
        }
    }

    /// The accounts the periodic sweep sees to: on sled every account with events
    /// (retention and the quota); on PostgreSQL, where retention drops partitions,
    /// those over their quota (their own, else `default_quota`) or owed a notice.
    pub fn accounts_to_sweep(&self, default_quota: u64) -> Result<Vec<AccountId>, StoreError> {
        match self {
            Store::Sled(s) => s.accounts_with_events(),
            Store::Postgres(n) => n.wait(n.pg.accounts_to_sweep(default_quota)),
        }
    }

    /// The embedded store's sweep of an account's audit events (see `SledStore`).
    pub fn sweep_audit(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: Readers,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.sweep_audit(account, cutoff, readers),
            Store::Postgres(_) => Err(per_account_sweep()),
        }
    }

    /// The quota sweep of an account's audit events and job snapshots (on sled also
    /// retention's of its audit events before `cutoff`; on PostgreSQL the quota only,
    /// in one transaction, and `readers` and `stop` are not needed: it reads the
    /// checkpoints itself, under lock, and does at most one batch).
    pub fn sweep_within(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        quota: u64,
        readers: super::retention::SourceReaders,
        stop: &dyn Fn() -> bool,
    ) -> Result<AuditSweep, StoreError> {
        match self {
            Store::Sled(s) => s.sweep_within(account, cutoff, quota, readers, stop),
            Store::Postgres(n) => n.wait(n.pg.quota_sweep(account, quota)),
        }
    }

    /// What the quota sweep could still remove of the account: its stored bytes less
    /// its newest audit chunk and newest job snapshot.
    pub fn quota_droppable_bytes(&self, account: &AccountId) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.quota_droppable_bytes(account),
            Store::Postgres(n) => n.wait(n.pg.quota_droppable_bytes(account)),
        }
    }

    /// Writes the account's cumulative "events dropped" notice when one is owed
    /// and due. On PostgreSQL the notice is made from what was owed when read, and
    /// written only if nothing changed that meanwhile (a sweep's drop in between is
    /// told by the next notice).
    pub fn tell_quota_drops(
        &self,
        account: &AccountId,
        due: &dyn Fn(Option<DateTime<Utc>>) -> bool,
        notice: super::retention::NoticeOf,
    ) -> Result<Option<QuotaDrops>, StoreError> {
        match self {
            Store::Sled(s) => s.tell_quota_drops(account, due, notice),
            Store::Postgres(n) => {
                let pending = n.wait(n.pg.pending_notice(account))?;
                let Some(drops) = pending.drops else {
                    return Ok(None);
                };
                if !due(pending.last_notice_at.filter(|_| !pending.retell)) {
                    return Ok(None);
                }
                let event = notice(&drops, &pending.gaps);
                n.wait(n.pg.write_notice(account, event, pending))
            }
        }
    }

    /// The accounts owed a quota notice.
    pub fn accounts_owed_a_notice(&self) -> Result<Vec<AccountId>, StoreError> {
        match self {
            Store::Sled(s) => s.accounts_owed_a_notice(),
            Store::Postgres(n) => n.wait(n.pg.accounts_owed_a_notice()),
        }
    }

    /// The embedded store's sweep of an account's job snapshots (nothing on
    /// PostgreSQL, whose partition sweep removes finished jobs for all accounts).
    pub fn sweep_jobs(
        &self,
        account: &AccountId,
        cutoff: DateTime<Utc>,
        readers: Readers,
    ) -> Result<u64, StoreError> {
        match self {
            Store::Sled(s) => s.sweep_jobs(account, cutoff, readers),
            Store::Postgres(_) => Ok(0),
        }
    }

    /// What the backlog quota dropped of the account's events.
    pub fn quota_drops(&self, account: &AccountId) -> Result<Option<QuotaDrops>, StoreError> {
        match self {
            Store::Sled(s) => s.quota_drops(account),
            Store::Postgres(n) => n.wait(n.pg.quota_drops(account)),
        }
    }

    /// Asks this node's quota sweep to see to the account now.
    pub fn ask_sweep(&self, account: &AccountId) {
        match self {
            Store::Sled(s) => s.ask_sweep(account),
            Store::Postgres(n) => n.sweep_due.ask(account),
        }
    }

    /// The accounts an ingest asked the quota sweep for.
    pub fn take_sweep_due(&self) -> Vec<AccountId> {
        match self {
            Store::Sled(s) => s.take_sweep_due(),
            Store::Postgres(n) => n.sweep_due.take(),
        }
    }

    /// Resolves when an account is asked for.
    pub async fn sweep_asked(&self) {
        match self {
            Store::Sled(s) => s.sweep_asked().await,
            Store::Postgres(n) => n.sweep_due.asked().await,
        }
    }
}

/// Why the embedded store's per-account retention sweep is refused on PostgreSQL.
fn per_account_sweep() -> StoreError {
    StoreError::Unsupported(
        "the per-account retention sweep is the embedded store's; on PostgreSQL retention drops whole audit partitions (PgStore::sweep)".into(),
    )
}

/// An integration as PostgreSQL stores it: its version lives beside the document.
fn versioned(v: super::postgres::Versioned<Integration>) -> Integration {
    Integration {
        version: v.version,
        ..v.value
    }
}

/// Shards as ranges for the log ("0-85, 200"; "none").
fn shard_list(shards: &[i32]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        while i + 1 < sorted.len() && sorted[i + 1] == sorted[i] + 1 {
            i += 1;
        }
        parts.push(if sorted[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", sorted[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod shard_list_tests {
    use super::shard_list;

    #[test]
    fn shard_lists_in_the_log_are_sorted_ranges() {
        assert_eq!(shard_list(&[]), "none");
        assert_eq!(shard_list(&[7]), "7");
        assert_eq!(shard_list(&[3, 0, 1, 2, 200, 5, 6]), "0-3, 5-6, 200");
    }
}
