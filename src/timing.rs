//! Every interval the service waits on, as settings: the operator's (sync interval,
//! timeouts) and the internal ones (back-off base, restart delay, progress log,
//! watchers), so a test can run a five-minute tick or a ten-second progress log in
//! milliseconds by setting them, instead of waiting them out.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration given as a number of seconds in the config file or the environment:
/// whole (`300`) or a fraction (`0.05`), so tests can shorten any interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Secs(Duration);

/// Why a number of seconds was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecsError {
    /// Not a number.
    #[error("not a number of seconds")]
    NotANumber,
    /// Negative, infinite, or more than a year.
    #[error("must be a number of seconds between 0 and 31536000 (a year)")]
    OutOfRange,
}

impl Secs {
    /// The longest duration any setting takes: a year.
    const MAX: f64 = 31_536_000.0;

    /// Whole seconds.
    pub const fn from_secs(s: u64) -> Secs {
        Secs(Duration::from_secs(s))
    }

    /// From a number of seconds, refusing what no interval can be.
    pub fn from_f64(s: f64) -> Result<Secs, SecsError> {
        if s.is_nan() {
            return Err(SecsError::NotANumber);
        }
        if !(0.0..=Self::MAX).contains(&s) {
            return Err(SecsError::OutOfRange);
        }
        Ok(Secs(Duration::from_secs_f64(s)))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Secs {
    type Err = SecsError;
    fn from_str(s: &str) -> Result<Secs, SecsError> {
        let v: f64 = s.trim().parse().map_err(|_| SecsError::NotANumber)?;
        Secs::from_f64(v)
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secs, D::Error> {
        let v = f64::deserialize(d)?;
        Secs::from_f64(v).map_err(serde::de::Error::custom)
    }
}

/// The internal intervals (`[timing]` in the config file). Operators rarely change
/// them; each is a setting so that what they pace can be tested in milliseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// The first retry after a failed post; it doubles with each further failure,
    /// up to the sync interval (`SIEMSYNC_TIMING_RETRY_BACKOFF_BASE_SECS`).
    pub retry_backoff_base_secs: Secs,
    /// The first restart of an integration actor that ended unexpectedly; it doubles
    /// with each further crash, up to 64 times (`SIEMSYNC_TIMING_RESTART_DELAY_SECS`).
    pub restart_delay_secs: Secs,
    /// An actor that ran this long before it crashed is restarted after the first
    /// delay again (`SIEMSYNC_TIMING_RESTART_FORGIVEN_AFTER_SECS`).
    pub restart_forgiven_after_secs: Secs,
    /// How often a long catch-up logs its progress (`SIEMSYNC_TIMING_PROGRESS_LOG_SECS`).
    pub progress_log_secs: Secs,
    /// How often the Supervisor re-reads what a store fault kept it from reading
    /// (`SIEMSYNC_TIMING_SUPERVISOR_RETRY_SECS`).
    pub supervisor_retry_secs: Secs,
    /// How often the store checks that its disk still takes writes
    /// (`SIEMSYNC_TIMING_STORE_WATCH_SECS`).
    pub store_watch_secs: Secs,
    /// How often the config file's modification time is checked for a reload
    /// (`SIEMSYNC_TIMING_CONFIG_POLL_SECS`).
    pub config_poll_secs: Secs,
    /// How often the retention sweep runs (`SIEMSYNC_TIMING_RETENTION_SWEEP_SECS`);
    /// unset, a twentieth of the retention, between 1 s and 1 h.
    pub retention_sweep_secs: Option<Secs>,
    /// How long an idle connection to a Splunk is kept for the next post
    /// (`SIEMSYNC_TIMING_CONNECTION_KEEP_ALIVE_SECS`); an integration whose next
    /// sync is further away drops its connections between syncs.
    pub connection_keep_alive_secs: Secs,
    /// How often the free space of the data directory's filesystem is read for the
    /// disk reserve (`SIEMSYNC_TIMING_DISK_CHECK_SECS`); ingest reads it again at once
    /// after writing a sixteenth of `min_free_disk_bytes`.
    pub disk_check_secs: Secs,
    /// PostgreSQL only: how often a node re-reads every integration and makes its
    /// actors match, the safety net under the control notifications (which reach it
    /// within a second, but are lost while its listening connection is down)
    /// (`SIEMSYNC_TIMING_CONTROL_REREAD_SECS`).
    pub control_reread_secs: Secs,
    /// PostgreSQL only: how long a node's lease on a shard lasts unless renewed
    /// (`SIEMSYNC_TIMING_SHARD_LEASE_SECS`); it is renewed every third of it, and a
    /// killed node's integrations resume on the others within it plus one renewal.
    /// At least [`Timing::MIN_SHARD_LEASE`].
    pub shard_lease_secs: Secs,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            retry_backoff_base_secs: Secs::from_secs(1),
            restart_delay_secs: Secs::from_secs(1),
            restart_forgiven_after_secs: Secs::from_secs(600),
            progress_log_secs: Secs::from_secs(10),
            supervisor_retry_secs: Secs::from_secs(1),
            store_watch_secs: Secs::from_secs(1),
            config_poll_secs: Secs::from_secs(2),
            retention_sweep_secs: None,
            connection_keep_alive_secs: Secs::from_secs(15),
            disk_check_secs: Secs::from_secs(1),
            control_reread_secs: Secs::from_secs(30),
            shard_lease_secs: Secs::from_secs(15),
        }
    }
}

impl Timing {
    /// The shortest shard lease: renewed every third of it, a lease must outlast a
    /// renewal round trip on a busy machine with room to spare, or nodes lose
    /// their shards to each other while all of them are alive.
    pub const MIN_SHARD_LEASE: Duration = Duration::from_secs(1);

    /// Each setting's environment variable, key and a setter, for the config's overrides.
    pub fn env_keys() -> [(&'static str, &'static str); 12] {
        [
            (
                "SIEMSYNC_TIMING_RETRY_BACKOFF_BASE_SECS",
                "retry_backoff_base_secs",
            ),
            ("SIEMSYNC_TIMING_RESTART_DELAY_SECS", "restart_delay_secs"),
            (
                "SIEMSYNC_TIMING_RESTART_FORGIVEN_AFTER_SECS",
                "restart_forgiven_after_secs",
            ),
            ("SIEMSYNC_TIMING_PROGRESS_LOG_SECS", "progress_log_secs"),
            (
                "SIEMSYNC_TIMING_SUPERVISOR_RETRY_SECS",
                "supervisor_retry_secs",
            ),
            ("SIEMSYNC_TIMING_STORE_WATCH_SECS", "store_watch_secs"),
            ("SIEMSYNC_TIMING_CONFIG_POLL_SECS", "config_poll_secs"),
            (
                "SIEMSYNC_TIMING_RETENTION_SWEEP_SECS",
                "retention_sweep_secs",
            ),
            (
                "SIEMSYNC_TIMING_CONNECTION_KEEP_ALIVE_SECS",
                "connection_keep_alive_secs",
            ),
            ("SIEMSYNC_TIMING_DISK_CHECK_SECS", "disk_check_secs"),
            ("SIEMSYNC_TIMING_CONTROL_REREAD_SECS", "control_reread_secs"),
            ("SIEMSYNC_TIMING_SHARD_LEASE_SECS", "shard_lease_secs"),
        ]
    }

    /// Sets the setting named `key` (one of `env_keys`).
    pub fn set(&mut self, key: &str, v: Secs) {
        match key {
            "retry_backoff_base_secs" => self.retry_backoff_base_secs = v,
            "restart_delay_secs" => self.restart_delay_secs = v,
            "restart_forgiven_after_secs" => self.restart_forgiven_after_secs = v,
            "progress_log_secs" => self.progress_log_secs = v,
            "supervisor_retry_secs" => self.supervisor_retry_secs = v,
            "store_watch_secs" => self.store_watch_secs = v,
            "config_poll_secs" => self.config_poll_secs = v,
            "retention_sweep_secs" => self.retention_sweep_secs = Some(v),
            "connection_keep_alive_secs" => self.connection_keep_alive_secs = v,
            "disk_check_secs" => self.disk_check_secs = v,
            "control_reread_secs" => self.control_reread_secs = v,
            "shard_lease_secs" => self.shard_lease_secs = v,
            _ => unreachable!("not a timing key: {key}"),
        }
    }

    /// The settings that must not be zero (a zero period would spin), by key.
    pub fn zero_keys(&self) -> Option<&'static str> {
        [
            (self.retry_backoff_base_secs, "retry_backoff_base_secs"),
            (self.restart_delay_secs, "restart_delay_secs"),
            (self.progress_log_secs, "progress_log_secs"),
            (self.supervisor_retry_secs, "supervisor_retry_secs"),
            (self.store_watch_secs, "store_watch_secs"),
            (self.config_poll_secs, "config_poll_secs"),
            (
                self.connection_keep_alive_secs,
                "connection_keep_alive_secs",
            ),
            (self.disk_check_secs, "disk_check_secs"),
            (self.control_reread_secs, "control_reread_secs"),
            (self.shard_lease_secs, "shard_lease_secs"),
            (
                self.retention_sweep_secs.unwrap_or(Secs::from_secs(1)),
                "retention_sweep_secs",
            ),
        ]
        .into_iter()
        .find(|(s, _)| s.get() < Duration::from_millis(1))
        .map(|(_, k)| k)
    }

    /// The wait before restarting what ended unexpectedly for the `crashes`-th time
    /// in a row (≥ 1): `restart_delay_secs`, doubling per crash, up to 64 times.
    pub fn restart_delay(&self, crashes: u32) -> Duration {
        self.restart_delay_secs.get() * (1u32 << crashes.saturating_sub(1).min(6))
    }

    /// How often the retention sweep runs for `retention`.
    pub fn retention_sweep(&self, retention: Duration) -> Duration {
        self.retention_sweep_secs.map(Secs::get).unwrap_or_else(|| {
            (retention / 20).clamp(Duration::from_secs(1), Duration::from_secs(3600))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_whole_or_fractions_and_nothing_else() {
        assert_eq!("300".parse(), Ok(Secs::from_secs(300)));
        assert_eq!(
            "0.05".parse::<Secs>().map(Secs::get),
            Ok(Duration::from_millis(50))
        );
        assert_eq!("soon".parse::<Secs>(), Err(SecsError::NotANumber));
        assert_eq!("-1".parse::<Secs>(), Err(SecsError::OutOfRange));
        assert_eq!("inf".parse::<Secs>(), Err(SecsError::OutOfRange));
        assert_eq!("NaN".parse::<Secs>(), Err(SecsError::NotANumber));
        assert_eq!("1e9".parse::<Secs>(), Err(SecsError::OutOfRange));
    }

    #[test]
    fn every_timing_key_can_be_set_by_name() {
        let mut t = Timing::default();
        for (_, key) in Timing::env_keys() {
            t.set(key, Secs::from_secs(7));
        }
        assert_eq!(t.progress_log_secs, Secs::from_secs(7));
        assert_eq!(
            t.retention_sweep(Duration::from_secs(1)),
            Duration::from_secs(7)
        );
        assert_eq!(t.zero_keys(), None);
        t.set("store_watch_secs", Secs::from_secs(0));
        assert_eq!(t.zero_keys(), Some("store_watch_secs"));
    }
}
