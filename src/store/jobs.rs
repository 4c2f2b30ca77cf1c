//! Job snapshots: the latest snapshot of every job, a per-account change sequence,
//! and the index of jobs still running.

use super::dedup::id_hash;
use super::heads::heads_in;
use super::{decode, encode, keys, SledStore as Store, StoreError};
use crate::model::{AccountId, JobSnapshot};
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::ControlFlow;

/// A job snapshot with the change sequence it was stored under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    /// The change sequence of its latest snapshot: the job cursor moves along these.
    pub change_seq: u64,
    /// The latest snapshot.
    pub snapshot: JobSnapshot,
}

/// A job snapshot's hash, its storage time aside: what is kept of a finished job after
/// retention removed its record, to recognise a retry of its final snapshot. (A
/// change of `JobSnapshot`'s fields changes the hash: such a retry is then sent once
/// more, never lost.)
pub(super) fn final_hash(snap: &JobSnapshot) -> u128 {
    let plain = JobSnapshot {
        ingested_at: DateTime::UNIX_EPOCH,
        ..snap.clone()
    };
    id_hash(&serde_json::to_string(&plain).expect("serialising a job snapshot"))
}

impl Store {
    /// Stores job snapshots, each replacing the job's previous one, all or nothing.
    /// A snapshot identical to the stored one (a platform retry) changes nothing.
    pub fn put_jobs(
        &self,
        account: &AccountId,
        jobs: Vec<JobSnapshot>,
    ) -> Result<usize, StoreError> {
        let _writer = self.writer();
        // One database for the whole write, even if the store is reopened meanwhile.
        let tree = &self.events()?;
        let mut heads = heads_in(tree, account)?;
        let count = jobs.len();
        let mut batch = sled::Batch::default();
        let mut changed = false;
        // The account's stored bytes, as they change with each record (the backlog
        // quota counts job snapshots too), written in the same batch.
        let (mut added, mut replaced) = (0u64, 0u64);
        for snap in latest_per_job(jobs) {
            let job_key = keys::with_name(keys::JOB, account, &snap.job);
            let Some(old_bytes) = is_news(tree, account, &snap, &mut batch)? else {
                continue;
            };
            replaced += old_bytes;
            heads.jobs += 1;
            let running_key = keys::with_name(keys::JOB_RUNNING, account, &snap.job);
            if snap.in_progress() {
                batch.insert(running_key, &heads.jobs.to_be_bytes());
            } else {
                batch.remove(running_key);
            }
            batch.insert(
                keys::with_seq(keys::JOB_CHANGE, account, heads.jobs),
                snap.job.as_bytes(),
            );
            let record = encode(&StoredJob {
                change_seq: heads.jobs,
                snapshot: snap,
            });
            added += record.len() as u64;
            batch.insert(job_key, record);
            changed = true;
        }
        if changed {
            let bytes =
                (super::audit::stored_bytes_in(tree, account)? + added).saturating_sub(replaced);
            batch.insert(
                keys::account_prefix(keys::STORED_BYTES, account),
                &bytes.to_be_bytes(),
            );
            batch.insert(
                keys::account_prefix(keys::HEADS, account),
                &heads.to_bytes(),
            );
            tree.apply_batch(batch)?;
        }
        Ok(count)
    }

    /// Visits jobs whose snapshot changed after change sequence `after`, in change order.
    pub fn jobs_changed_after(
        &self,
        account: &AccountId,
        after: u64,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let prefix = keys::account_prefix(keys::JOB_CHANGE, account);
        let start = keys::with_seq(keys::JOB_CHANGE, account, after.saturating_add(1));
        let tree = self.events()?;
        for kv in tree.range(start..) {
            let (k, job) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let job_key = keys::with_name(keys::JOB, account, &String::from_utf8_lossy(&job));
            let Some(v) = tree.get(&job_key)? else {
                continue;
            };
            let job: StoredJob = decode(&job_key, &v)?;
            // The job changed again while we read: its newer change key comes later
            // in this scan (or the next), so this stale key must not carry it now,
            // or the cursor would jump past jobs between the two keys.
            if job.change_seq != keys::seq_of(&k) {
                continue;
            }
            if visit(job).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Visits the jobs still in progress, ordered by job id, starting after `after_job`.
    pub fn running_jobs(
        &self,
        account: &AccountId,
        after_job: Option<&str>,
        mut visit: impl FnMut(StoredJob) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let prefix = keys::account_prefix(keys::JOB_RUNNING, account);
        let mut start = match after_job {
            Some(j) => keys::with_name(keys::JOB_RUNNING, account, j),
            None => prefix.clone(),
        };
        if after_job.is_some() {
            start.push(0);
        }
        let tree = self.events()?;
        for kv in tree.range(start..) {
            let (k, _) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            let job = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let job_key = keys::with_name(keys::JOB, account, &job);
            let Some(v) = tree.get(&job_key)? else {
                continue;
            };
            if visit(decode(&job_key, &v)?).is_break() {
                break;
            }
        }
        Ok(())
    }
}

/// The snapshots of one request, the last of each job only, in the order the jobs
/// first appear (within one request the last snapshot of a job wins).
pub(in crate::store) fn latest_per_job(jobs: Vec<JobSnapshot>) -> Vec<JobSnapshot> {
    let mut latest: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<JobSnapshot> = Vec::new();
    for j in jobs {
        match latest.get(&j.job) {
            Some(&i) => out[i] = j,
            None => {
                latest.insert(j.job.clone(), out.len());
                out.push(j);
            }
        }
    }
    out
}

/// Whether `snap` changes what is stored of its job (`Some`: the bytes of the record
/// it replaces, 0 for a new job); if so, removes from `batch`'s view what it replaces
/// (the old change key, or the guard of a swept finished job). A retry of the stored
/// snapshot is not news, nor is a late retry of an older one that would reopen a
/// finished job (it would then be re-sent as running every tick).
fn is_news(
    tree: &sled::Tree,
    account: &AccountId,
    snap: &JobSnapshot,
    batch: &mut sled::Batch,
) -> Result<Option<u64>, StoreError> {
    let job_key = keys::with_name(keys::JOB, account, &snap.job);
    if let Some(bytes) = tree.get(&job_key)? {
        let old: StoredJob = decode(&job_key, &bytes)?;
        let same = JobSnapshot {
            ingested_at: old.snapshot.ingested_at,
            ..snap.clone()
        } == old.snapshot;
        let reopens = old.snapshot.is_finished() && !snap.is_finished();
        if same || reopens {
            return Ok(None);
        }
        batch.remove(keys::with_seq(keys::JOB_CHANGE, account, old.change_seq));
        return Ok(Some(bytes.len() as u64));
    }
    // The job ended and retention removed its record: the same guards, from what the
    // sweep kept of it.
    let done_key = keys::with_name(keys::JOB_DONE, account, &snap.job);
    if let Some(v) = tree.get(&done_key)? {
        let (_, hash) = super::retention::read_job_done_marker(&done_key, &v)?;
        if !snap.is_finished() || final_hash(snap) == hash {
            return Ok(None);
        }
        batch.remove(done_key);
    }
    Ok(Some(0))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{job, store};
    use super::super::Heads;
    use super::*;
    use chrono::Utc;

    fn running(s: &Store, a: &AccountId) -> Vec<String> {
        let mut v = Vec::new();
        s.running_jobs(a, None, |j| {
            v.push(j.snapshot.job);
            ControlFlow::Continue(())
        })
        .unwrap();
        v
    }

    fn changed_after(s: &Store, a: &AccountId, after: u64) -> Vec<(String, String)> {
        let mut v = Vec::new();
        s.jobs_changed_after(a, after, |j| {
            v.push((j.snapshot.job, j.snapshot.status));
            ControlFlow::Continue(())
        })
        .unwrap();
        v
    }

    #[test]
    fn a_finished_job_stays_finished_after_its_record_is_swept() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        let reader = |seq| crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: seq,
        };
        let retention = Utc::now() - chrono::Duration::days(30);
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        // Delivered by the account's only reader: the sweep removes the record.
        assert_eq!(
            s.sweep_jobs(&a, retention, &|| Ok(vec![reader(2)]))
                .unwrap(),
            1
        );
        assert_eq!(changed_after(&s, &a, 0), vec![]);
        // The platform's late retries, of the running and of the final snapshot.
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        assert_eq!(running(&s, &a), Vec::<String>::new(), "the job reopened");
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        assert_eq!(changed_after(&s, &a, 2), vec![], "a retry was taken as new");
        // Later sweeps within the retention keep what the guard needs.
        s.sweep_jobs(&a, retention, &|| Ok(vec![reader(2)]))
            .unwrap();
        s.put_jobs(&a, vec![job("j1", "in progress", 0.7)]).unwrap();
        assert_eq!(running(&s, &a), Vec::<String>::new(), "the job reopened");
        // A different final state is news, and is sent.
        s.put_jobs(&a, vec![job("j1", "unsuccessful", 1.0)])
            .unwrap();
        assert_eq!(
            changed_after(&s, &a, 2),
            vec![("j1".to_string(), "unsuccessful".to_string())]
        );
    }

    #[test]
    fn what_stops_a_finished_job_reopening_goes_after_the_retention() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        let reader = crate::store::Reader {
            integration: uuid::Uuid::nil(),
            delivered_up_to: 1,
        };
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        let retention = Utc::now() - chrono::Duration::days(30);
        assert_eq!(
            s.sweep_jobs(&a, retention, &|| Ok(vec![reader])).unwrap(),
            1
        );
        let guards = |s: &Store| {
            s.events()
                .unwrap()
                .scan_prefix(keys::account_prefix(keys::JOB_DONE, &a))
                .count()
        };
        assert_eq!(guards(&s), 1);
        // A sweep with everything older than its cutoff: the guard has outlived it.
        s.sweep_jobs(&a, Utc::now() + chrono::Duration::seconds(1), &|| {
            Ok(vec![reader])
        })
        .unwrap();
        assert_eq!(guards(&s), 0);
    }

    #[test]
    fn a_newer_job_snapshot_replaces_the_older_and_moves_to_the_end() {
        let (_d, s) = store();
        let a = AccountId::parse("acc").unwrap();
        s.put_jobs(
            &a,
            vec![job("j1", "in progress", 0.1), job("j2", "in progress", 0.2)],
        )
        .unwrap();
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        // A retry of the same snapshot is not a change, nor is a late older one.
        s.put_jobs(&a, vec![job("j1", "successful", 1.0)]).unwrap();
        s.put_jobs(&a, vec![job("j1", "in progress", 0.5)]).unwrap();
        let mut changed = Vec::new();
        s.jobs_changed_after(&a, 0, |j| {
            changed.push((j.change_seq, j.snapshot.job, j.snapshot.status));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(
            changed,
            vec![
                (2, "j2".into(), "in progress".into()),
                (3, "j1".into(), "successful".into())
            ]
        );
        let mut running = Vec::new();
        s.running_jobs(&a, None, |j| {
            running.push(j.snapshot.job);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(running, vec!["j2".to_string()]);
        assert_eq!(s.heads(&a).unwrap(), Heads { audit: 0, jobs: 3 });
    }
}
