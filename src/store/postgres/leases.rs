//! Who delivers what: nodes with heartbeats, and time-limited leases on the fixed
//! set of shards that integrations hash into. Times are the database's clock, so
//! nodes' clocks never need to agree.
//!
//! Each node calls [`PgStore::balance`] every lease/3 or so: it renews its leases,
//! claims free or expired shards up to its fair share of the live nodes, and is told
//! which shards it holds beyond its share. It stops those integrations and then
//! [`PgStore::release`]s them, and the node short of shards claims them on its next
//! round. Shares are deterministic (live nodes by name), so they sum to the shard
//! count and the spread settles instead of oscillating. A node back from a lapse
//! of its own heartbeat also counts, for a lease after its return, the nodes that
//! were live at its last heartbeat: after a cluster-wide lapse (PostgreSQL down
//! longer than a lease) each node back takes its own shards, not the first one all.

use super::error::PgError;
use super::{PgStore, Shared};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A node's lease on a shard at one epoch: what every checkpoint commit of an
/// integration in that shard is fenced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The node holding the lease.
    pub node: String,
    /// The shard.
    pub shard: i32,
    /// The lease's epoch: a newer claim has a higher one.
    pub epoch: i64,
}

/// What a node holds after one balancing round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// The shards this node holds now, each with its lease's epoch.
    pub held: BTreeMap<i32, i64>,
    /// Held shards beyond this node's fair share: stop their integrations, then
    /// `release` them for the node that is short.
    pub surplus: Vec<i32>,
    /// The live nodes (heartbeat not expired, not stopping), by name.
    pub live_nodes: Vec<String>,
    /// This node's fair share.
    pub target: usize,
}

impl Holdings {
    /// The fence for an integration in `shard`, if this node holds that shard.
    pub fn fence(&self, node: &str, shard: i32) -> Option<Fence> {
        self.held.get(&shard).map(|&epoch| Fence {
            node: node.to_owned(),
            shard,
            epoch,
        })
    }

    /// The shards this node runs delivery for (held, not surplus), with epochs.
    pub fn kept_leases(&self) -> BTreeMap<i32, i64> {
        self.held
            .iter()
            .filter(|(s, _)| !self.surplus.contains(s))
            .map(|(&s, &e)| (s, e))
            .collect()
    }
}

/// What the actors must do after a lease round, from the shards they run
/// (`running`), those this node now keeps, and those held again after another node
/// held them (`stale`): start the shards `gained`, and restart those `reclaimed` —
/// run here before and now, but stale: another node may have delivered and
/// committed them meanwhile, so the actors' positions in memory are out of date.
/// A shard this node claims back with nobody in between (its own lease lapsed,
/// as in a PostgreSQL outage) is neither: its actors go on.
pub fn lease_changes(
    running: &BTreeMap<i32, i64>,
    kept: &BTreeMap<i32, i64>,
    stale: &std::collections::BTreeSet<i32>,
) -> (Vec<i32>, Vec<i32>) {
    let mut gained = Vec::new();
    let mut reclaimed = Vec::new();
    for shard in kept.keys() {
        if !running.contains_key(shard) {
            gained.push(*shard);
        } else if stale.contains(shard) {
            reclaimed.push(*shard);
        }
    }
    (gained, reclaimed)
}

/// A node as the operator view shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// When its leases lapse without another heartbeat.
    pub expires_at: DateTime<Utc>,
    /// Whether its heartbeat is current.
    pub alive: bool,
    /// Whether it is shutting down and handing its shards over.
    pub stopping: bool,
    /// Shards whose lease it holds now.
    pub shards: i64,
}

/// One row of the append-only commit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The record's number, in commit order.
    pub id: i64,
    /// The integration whose checkpoint moved.
    pub integration: Uuid,
    /// The node that committed.
    pub node: String,
    /// The shard it was fenced by.
    pub shard: i32,
    /// The lease epoch it held.
    pub epoch: i64,
    /// The audit cursor after the commit.
    pub audit_seq: i64,
    /// The job cursor after the commit.
    pub job_seq: i64,
}

/// The nodes a share of the shards is counted for: heartbeat current, not
/// stopping; by name. A copy from sled refuses to start while any is listed.
pub(super) const LIVE_NODES: &str =
    "SELECT name FROM nodes WHERE expires_at > clock_timestamp() AND NOT stopping ORDER BY name";

/// The nodes the claims of a node back from its own lapse are counted for: the
/// live ones and those still live at `$1`, its last heartbeat before the lapse.
/// None when another node (not `$2`) stayed live through that lapse (live now,
/// its run started by `$1`): the lapse was this node's alone, not the cluster's,
/// and the nodes renewing meanwhile claim the shards of any that died then.
const RECENT_NODES: &str = "SELECT name FROM nodes WHERE NOT stopping
      AND (expires_at > clock_timestamp() OR expires_at > $1)
      AND NOT EXISTS (SELECT 1 FROM nodes WHERE name <> $2 AND NOT stopping
                        AND expires_at > clock_timestamp() AND started_at <= $1)
      ORDER BY name";

/// The advisory lock every balancing round takes first (an arbitrary constant,
/// "siemleas"; the migrations take another). Public for the tests that hold it
/// from outside, as a slow round of another node would.
pub const BALANCE_LOCK: i64 = 0x7369_656d_6c65_6173;

/// How long one lease round (or hand-back) may take, of a lease: below the third
/// between two rounds, so that a round stuck behind a lock or a slow server gives
/// up and the next one starts on time instead of every node's rounds queuing.
pub(super) fn round_limit(lease: std::time::Duration) -> std::time::Duration {
    lease / 4
}

/// The margin between the last post under a lease and a claim of it once lapsed
/// (see `PgStore::lease_lasts`), of a lease.
pub(super) fn post_margin(lease: std::time::Duration) -> std::time::Duration {
    lease / 4
}

impl Shared {
    /// Bounds the waits of the lease transaction `tx`: a lock held by a stalled
    /// transaction (another node's round, a commit of a paused node) fails this
    /// round after a fraction of it instead of freezing it, and the next round
    /// tries again; the whole round and any idle time in it stay within its limit.
    async fn bounded(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), PgError> {
        let limit = round_limit(self.options.lease).as_millis().max(1);
        let lock = (self.options.lease / 9).as_millis().max(1);
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {lock}; SET LOCAL statement_timeout = {limit};
             SET LOCAL idle_in_transaction_session_timeout = {limit}"
        ))
        .await?;
        Ok(())
    }

    async fn balance(&self) -> Result<Holdings, PgError> {
        let me = &self.options.node_name;
        let lease = self.options.lease.as_secs_f64();
        let instance = self.instance.to_string();
        let mut client = self.lease_pool.get().await?;
        let tx = client.transaction().await?;
        self.bounded(&tx).await?;
        // Rounds take turns, across all nodes: at READ COMMITTED two nodes starting
        // at once would each miss the other's uncommitted row and both pass the
        // second-node guard. Held until this transaction ends.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BALANCE_LOCK])
            .await?;
        // A live row under this name written by another process: refused, and
        // nothing of its row or leases is touched (the transaction rolls back). A
        // row without an instance (an older build) counts as another process's.
        let taken = tx
            .query_opt(
                "SELECT 1 FROM nodes WHERE name = $1 AND expires_at > clock_timestamp()
                   AND NOT stopping AND (info->>'instance') IS DISTINCT FROM $2",
                &[me, &instance],
            )
            .await?;
        if taken.is_some() {
            return Err(PgError::NameInUse {
                node: me.clone(),
                lease_secs: self.options.lease.as_secs_f64(),
            });
        }
        // A node shutting down stays `stopping` while it renews what it holds
        // until it hands everything back: it claims nothing more, and the others
        // share the shards without it.
        let stopping = self.stopping.load(std::sync::atomic::Ordering::SeqCst);
        // This node's last heartbeat if its row has lapsed since (it could not
        // renew: PostgreSQL or the node was away): the nodes live then still
        // count for its claims, for a lease from now (`RECENT_NODES`).
        let lapsed_beat: Option<DateTime<Utc>> = tx
            .query_opt(
                "SELECT heartbeat_at FROM nodes WHERE name = $1 AND expires_at <= clock_timestamp()",
                &[me],
            )
            .await?
            .map(|r| r.get(0));
        // Or the one before the lapse this node came back from less than a lease
        // ago: the nodes live then keep counting while they come back one by one.
        let recent_beat = lapsed_beat.or_else(|| {
            let back = self
                .back_from_lapse
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            back.filter(|(_, until)| std::time::Instant::now() < *until)
                .map(|(beat, _)| beat)
        });
        tx.execute(
            "INSERT INTO nodes (name, started_at, heartbeat_at, expires_at, info, stopping)
             VALUES ($1, clock_timestamp(), clock_timestamp(), clock_timestamp() + make_interval(secs => $2),
                     jsonb_build_object('instance', $3::text), $4)
             ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,
               expires_at = excluded.expires_at, stopping = excluded.stopping,
               info = nodes.info || excluded.info,
               started_at = CASE WHEN nodes.stopping OR nodes.expires_at < clock_timestamp()
                                 THEN excluded.started_at ELSE nodes.started_at END",
            &[me, &lease, &instance, &stopping],
        )
        .await?;
        // An expired lease is not renewed: another node may have claimed it. It is
        // claimed again below, with a new epoch, if it is still free. The renewal
        // changes no key column: it does not wait for the commits in flight, which
        // key-share-lock the row (registry.rs `fenced`).
        let mut held: BTreeMap<i32, i64> = tx
            .query(
                "UPDATE shard_leases SET expires_at = clock_timestamp() + make_interval(secs => $2)
                 WHERE owner = $1 AND expires_at > clock_timestamp() RETURNING shard, epoch",
                &[me, &lease],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let live_nodes: Vec<String> = tx
            .query(LIVE_NODES, &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let target = if stopping {
            held.len()
        } else {
            fair_share(self.shards as usize, &live_nodes, me)
        };
        // A node back from its own lapse claims up to its share among the nodes
        // live now and those live at its last heartbeat: after a cluster-wide
        // lapse (no node could renew, PostgreSQL was down) the first node back
        // takes its share of the nodes live before, its own shards first, not
        // every shard to hand most back as the others return (each of them then
        // finds its own shards free). It keeps counting them for a lease after
        // its return, however many rounds that is: the others' first rounds back
        // may come later than its second (their connections find the promoted
        // server later, their rounds tick at other moments). Then it counts the
        // live ones alone: shards of a node that did not come back within a
        // lease are claimed then. A node renewing on time is not held back: a
        // killed node's shards are taken over as soon as they are claimable;
        // nor is one whose lapse was its own (a stall, a pause) while another
        // node stayed live: those renewing claim what a node that died
        // meanwhile held.
        let claim_to = match recent_beat {
            Some(beat) if !stopping => {
                let recent: Vec<String> = tx
                    .query(RECENT_NODES, &[&beat, me])
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                if recent.is_empty() {
                    target
                } else {
                    target.min(fair_share(self.shards as usize, &recent, me))
                }
            }
            _ => target,
        };
        if held.len() < claim_to {
            // A lapsed lease is claimed only once it lapsed a margin ago: its
            // holder started no post later than a margin before the lapse
            // (`PgStore::lease_lasts`), so two nodes post one shard at once only
            // for a post that outlasts twice the margin. A released one, or this
            // node's own, at once.
            // FOR UPDATE conflicts with the commits' key share: a shard with a
            // commit in flight is skipped, and claimed by a later round. This
            // node's own lapsed shards come first: after a cluster-wide lapse each
            // node gets back what it ran.
            let claimed = tx
                .query(
                    "UPDATE shard_leases SET owner = $1, epoch = epoch + 1,
                       expires_at = clock_timestamp() + make_interval(secs => $2)
                     WHERE shard IN (SELECT shard FROM shard_leases
                                     WHERE owner IS NULL
                                        OR (owner = $1 AND expires_at <= clock_timestamp())
                                        OR expires_at <= clock_timestamp() - make_interval(secs => $4)
                                     ORDER BY (owner IS NOT DISTINCT FROM $1) DESC, shard
                                     LIMIT $3 FOR UPDATE SKIP LOCKED)
                     RETURNING shard, epoch",
                    &[
                        me,
                        &lease,
                        &((claim_to - held.len()) as i64),
                        &post_margin(self.options.lease).as_secs_f64(),
                    ],
                )
                .await?;
            held.extend(
                claimed
                    .iter()
                    .map(|r| (r.get::<_, i32>(0), r.get::<_, i64>(1))),
            );
        }
        tx.execute(
            "DELETE FROM nodes WHERE expires_at < clock_timestamp() - interval '1 day'",
            &[],
        )
        .await?;
        tx.commit().await?;
        if let Some(beat) = lapsed_beat.filter(|_| !stopping) {
            *self
                .back_from_lapse
                .lock()
                .unwrap_or_else(|p| p.into_inner()) =
                Some((beat, std::time::Instant::now() + self.options.lease));
        }
        let surplus = surplus(&held, target);
        Ok(Holdings {
            held,
            surplus,
            live_nodes,
            target,
        })
    }
}

/// A node's fair share of `shards` among `live` nodes (sorted by name, as the
/// balancing round reads them): an even split, one more for the first
/// `shards mod n`. Every live node computes the same split, so the shares sum to
/// the shard count and the spread settles instead of oscillating. A node not (yet)
/// among the live ones counts as the first.
fn fair_share(shards: usize, live: &[String], me: &str) -> usize {
    let n = live.len().max(1);
    let rank = live.iter().position(|x| x == me).unwrap_or(0);
    shards / n + usize::from(rank < shards % n)
}

/// The held shards beyond `target`: the highest-numbered ones, so that a node
/// keeps the same low shards across rounds.
fn surplus(held: &BTreeMap<i32, i64>, target: usize) -> Vec<i32> {
    held.keys()
        .rev()
        .take(held.len().saturating_sub(target))
        .copied()
        .collect()
}

impl PgStore {
    /// One round of ownership: heartbeat, renew this node's leases, claim free or
    /// expired shards up to its fair share. Shards missing from the result that
    /// the node held before were lost (expired): stop their integrations.
    pub async fn balance(&self) -> Result<Holdings, PgError> {
        self.run_write(|s| async move { s.balance().await }).await
    }

    /// Hands shards back (after their integrations were stopped).
    pub async fn release(&self, shards: &[i32]) -> Result<(), PgError> {
        let shards = shards.to_vec();
        self.run_write(move |s| async move {
            let mut client = s.lease_pool.get().await?;
            let tx = client.transaction().await?;
            s.bounded(&tx).await?;
            // Locked FOR UPDATE: a commit in flight (key share) ends first.
            tx.execute(
                "UPDATE shard_leases SET owner = NULL, expires_at = NULL
                 WHERE owner = $1 AND shard IN (SELECT shard FROM shard_leases
                   WHERE owner = $1 AND shard = ANY($2) FOR UPDATE)",
                &[&s.options.node_name, &shards],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Whether `fence` still holds, by PostgreSQL's clock, for at least the post
    /// margin (a quarter of the lease): asked before every post, so a node whose
    /// renewals are late (paused, partitioned, its rounds stuck) stops posting a
    /// margin before the lease lapses, and another node claims it only a margin
    /// after (`LeaseLost` otherwise). Local clocks play no part.
    pub async fn lease_lasts(&self, fence: &Fence) -> Result<(), PgError> {
        let fence = fence.clone();
        let margin = post_margin(self.lease_time()).as_secs_f64();
        self.run(move |s| async move {
            let held = s
                .pool
                .get()
                .await?
                .query_opt(
                    "SELECT 1 FROM shard_leases
                     WHERE shard = $1 AND owner = $2 AND epoch = $3
                       AND expires_at > clock_timestamp() + make_interval(secs => $4)",
                    &[&fence.shard, &fence.node, &fence.epoch, &margin],
                )
                .await?;
            match held {
                Some(_) => Ok(()),
                None => Err(PgError::LeaseLost {
                    node: fence.node,
                    shard: fence.shard,
                    epoch: fence.epoch,
                }),
            }
        })
        .await
    }

    /// How long one lease round may take before it is given up.
    pub fn round_limit(&self) -> std::time::Duration {
        round_limit(self.lease_time())
    }

    /// The start of a clean stop: from now on this node claims no shard and its row
    /// says `stopping` (the other nodes share the shards without it); its rounds
    /// still renew what it holds until [`PgStore::leave`] hands it back.
    pub async fn begin_stopping(&self) -> Result<(), PgError> {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.run_write(|s| async move {
            s.lease_pool
                .get()
                .await?
                .execute(
                    "UPDATE nodes SET stopping = true WHERE name = $1 AND info->>'instance' = $2",
                    &[&s.options.node_name, &s.instance.to_string()],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// A clean stop: hands every shard back at once and leaves the live nodes, so
    /// the others take over without waiting for the leases to expire.
    ///
    /// It takes its turn among the lease rounds (the balancing lock), so that a
    /// round of this node still running in PostgreSQL (one the lease loop stopped
    /// waiting for at its time limit) ends before it, or begins after it and
    /// finds this node stopping: such a round can neither keep its rows locked
    /// through the hand-back nor claim the shards again right after it. A lock it
    /// could not get in time (that round, a hand-back of surplus shards the
    /// shutdown cut short, a slow round of another node: each bounded by the
    /// round's limits) is waited for again, up to half a lease; only then, or when
    /// PostgreSQL cannot be reached, do the leases lapse by themselves instead.
    pub async fn leave(&self) -> Result<(), PgError> {
        // Half a lease in all, the attempt running then included: the stop's other
        // steps and the service manager's stop timeout have the rest.
        let bound = self.lease_time() / 2;
        let retried = async {
            let mut said = false;
            loop {
                match self.leave_once().await {
                    Err(e @ PgError::Busy(_)) => {
                        if !said {
                            log::info!("postgres: handing the shards back must wait ({e}); trying again for up to {} s", bound.as_secs_f64());
                            said = true;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(bound, retried)
            .await
            .unwrap_or_else(|_| {
                Err(PgError::Busy(format!(
                "the shards could not be handed back within {} s; their leases lapse by themselves",
                bound.as_secs_f64()
            )))
            })
    }

    async fn leave_once(&self) -> Result<(), PgError> {
        self.run_write(|s| async move {
            let mut client = s.lease_pool.get().await?;
            let tx = client.transaction().await?;
            s.bounded(&tx).await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BALANCE_LOCK])
                .await?;
            let me = &s.options.node_name;
            // Only this process's own row and leases: a process refused under a
            // live node's name must not hand that node's shards away.
            let mine = tx
                .execute(
                    "UPDATE nodes SET stopping = true, expires_at = clock_timestamp()
                     WHERE name = $1 AND info->>'instance' = $2",
                    &[me, &s.instance.to_string()],
                )
                .await?;
            if mine == 0 {
                return Ok(());
            }
            // Locked FOR UPDATE: the commits in flight (key share) end first.
            tx.execute(
                "UPDATE shard_leases SET owner = NULL, expires_at = NULL
                 WHERE owner = $1 AND shard IN (SELECT shard FROM shard_leases
                   WHERE owner = $1 FOR UPDATE)",
                &[me],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Every known node, by name, with how many shards it holds.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, PgError> {
        self.run(|s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "SELECT n.name, n.started_at, n.heartbeat_at, n.expires_at,
                            n.expires_at > clock_timestamp(), n.stopping,
                            (SELECT count(*) FROM shard_leases l
                             WHERE l.owner = n.name AND l.expires_at > clock_timestamp())
                     FROM nodes n ORDER BY n.name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| NodeInfo {
                    name: r.get(0),
                    started_at: r.get(1),
                    heartbeat_at: r.get(2),
                    expires_at: r.get(3),
                    alive: r.get(4),
                    stopping: r.get(5),
                    shards: r.get(6),
                })
                .collect())
        })
        .await
    }

    /// The commit log of an integration, oldest first.
    pub async fn commit_log(&self, integration: &Uuid) -> Result<Vec<CommitRecord>, PgError> {
        let id = *integration;
        self.run(move |s| async move {
            let rows = s
                .pool
                .get()
                .await?
                .query(
                    "SELECT id, integration, node, shard, epoch, audit_seq, job_seq
                     FROM checkpoint_commits WHERE integration = $1 ORDER BY id",
                    &[&id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| CommitRecord {
                    id: r.get(0),
                    integration: r.get(1),
                    node: r.get(2),
                    shard: r.get(3),
                    epoch: r.get(4),
                    audit_seq: r.get(5),
                    job_seq: r.get(6),
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    #[test]
    fn a_shard_another_node_held_meanwhile_restarts_its_actors_and_one_claimed_back_alone_does_not()
    {
        let running = BTreeMap::from([(1, 5), (2, 3), (3, 9), (5, 2)]);
        // 1 renewed (same epoch), 2 lost, 3 claimed back after another node held
        // it (stale), 4 gained, 5 claimed back with nobody in between (+1).
        let kept = BTreeMap::from([(1, 5), (3, 11), (4, 1), (5, 3)]);
        let stale = std::collections::BTreeSet::from([3]);
        assert_eq!(lease_changes(&running, &kept, &stale), (vec![4], vec![3]));
        assert_eq!(
            lease_changes(&kept, &kept, &Default::default()),
            (vec![], vec![])
        );
    }

    #[test]
    fn fair_shares_split_every_shard_evenly_over_the_live_nodes() {
        for n in 1..=7 {
            let live = names(n);
            let shares: Vec<usize> = live.iter().map(|me| fair_share(256, &live, me)).collect();
            assert_eq!(shares.iter().sum::<usize>(), 256, "{n} nodes: {shares:?}");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} nodes: {shares:?}");
        }
        let live = names(3);
        assert_eq!(fair_share(256, &live, "node-0"), 86);
        assert_eq!(fair_share(256, &live, "node-1"), 85);
        assert_eq!(fair_share(256, &live, "node-2"), 85);
        // More nodes than shards: the last ones get none.
        assert_eq!(fair_share(2, &live, "node-2"), 0);
        // Alone (or not yet seen live): everything.
        assert_eq!(fair_share(256, &[], "node-9"), 256);
    }

    #[test]
    fn a_node_over_its_share_hands_over_its_highest_shards() {
        let held: BTreeMap<i32, i64> = (0..10).map(|s| (s, 1)).collect();
        assert_eq!(surplus(&held, 7), vec![9, 8, 7]);
        assert_eq!(surplus(&held, 10), Vec::<i32>::new());
        assert_eq!(surplus(&held, 20), Vec::<i32>::new());
        assert_eq!(surplus(&held, 0).len(), 10);
    }
}
