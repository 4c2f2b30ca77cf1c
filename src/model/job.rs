//! A job-monitor snapshot: the latest known state of one backup/restore/export job.

use super::fields::{FieldError, Fields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The statuses the product page lists, in its words.
pub const JOB_STATUSES: [&str; 6] = [
    "successful",
    "scheduled",
    "in progress",
    "cancelled",
    "incomplete",
    "unsuccessful",
];

/// A job snapshot as stored; a newer snapshot of the same job replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSnapshot {
    /// The job's id: a newer snapshot with it replaces this one.
    pub job: String,
    /// The connector (backup source) the job runs for, when one.
    pub connector: Option<String>,
    /// When it was scheduled.
    pub scheduled: Option<DateTime<Utc>>,
    /// When it was planned to start.
    pub planned_start: Option<DateTime<Utc>>,
    /// When it started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it was paused, if it is.
    pub paused: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// The platform's description of it.
    pub description: Option<String>,
    /// How far it is, from 0 to 1.
    pub progress: Option<f64>,
    /// Its status, one of the contract's words ("in progress", "successful", …).
    pub status: String,
    #[serde(rename = "type")]
    /// What kind of job (`type` in JSON).
    pub job_type: String,
    /// Who started it, when known.
    pub user: Option<String>,
    /// When siemsync stored this snapshot.
    pub ingested_at: DateTime<Utc>,
}

impl JobSnapshot {
    /// Still running: such a job is sent again on every tick so its progress can be followed.
    /// Ended: successful, cancelled, incomplete or unsuccessful.
    pub fn is_finished(&self) -> bool {
        !matches!(self.status.as_str(), "in progress" | "scheduled")
    }

    /// Running now: sent again on every tick so its progress can be followed.
    pub fn in_progress(&self) -> bool {
        self.status == "in progress"
    }

    /// Reads and validates one snapshot of a posted body (`index`: its position), stored at `now`.
    pub fn from_json(
        value: &Value,
        index: usize,
        now: DateTime<Utc>,
    ) -> Result<JobSnapshot, FieldError> {
        let mut f = Fields::new(value, Some(index))?;
        let job = f.required("job", Fields::identifier)?;
        let connector = f.identifier("connector")?;
        let scheduled = f.time("scheduled")?;
        let planned_start = f.time("planned_start")?;
        let start_time = f.time("start_time")?;
        let paused = f.time("paused")?;
        let end_time = f.time("end_time")?;
        let description = f.string("description")?;
        let progress = match f.number("progress")? {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                return Err(f.error("progress", format!("must be between 0 and 1, got {p}")))
            }
            p => p,
        };
        let status = f.required("status", Fields::string)?;
        if !JOB_STATUSES.contains(&status.as_str()) {
            return Err(f.error(
                "status",
                format!(
                    "must be one of {}, got {status:?}",
                    JOB_STATUSES.map(|s| format!("{s:?}")).join(", ")
                ),
            ));
        }
        let job_type = f.required("type", Fields::text)?;
        let user = f.string("user")?;
        f.finish()?;
        Ok(JobSnapshot {
            job,
            connector,
            scheduled,
            planned_start,
            start_time,
            paused,
            end_time,
            description,
            progress,
            status,
            job_type,
            user,
            ingested_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<JobSnapshot, String> {
        JobSnapshot::from_json(&v, 2, Utc::now()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_job_snapshot_needs_job_type_and_status() {
        let ok = parse(
            json!({"job": "j-1", "type": "backup", "status": "in progress", "progress": 0.5,
            "end_time": null, "start_time": "2026-11-25T10:00:00Z"}),
        )
        .unwrap();
        assert!(ok.in_progress());
        assert_eq!(ok.end_time, None);
        assert_eq!(
            parse(json!({"type": "backup", "status": "successful"})).unwrap_err(),
            "item 2: `job` is required"
        );
        assert_eq!(
            parse(json!({"job": "j", "status": "successful"})).unwrap_err(),
            "item 2: `type` is required"
        );
    }

    #[test]
    fn bad_job_values_are_refused_by_name() {
        let base = |k: &str, v: Value| {
            let mut o = json!({"job": "j-1", "type": "backup", "status": "successful"});
            o[k] = v;
            parse(o).unwrap_err()
        };
        assert_eq!(
            base("progress", json!(1.5)),
            "item 2: `progress` must be between 0 and 1, got 1.5"
        );
        assert!(base("status", json!("exploded")).starts_with("item 2: `status` must be one of"));
        assert!(
            base("job", json!("has space")).starts_with("item 2: `job` is not a valid identifier")
        );
        assert!(base("paused", json!("noon")).starts_with("item 2: `paused` is not an RFC 3339"));
    }
}
