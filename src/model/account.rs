//! An account's settings as the administrator sets them: the SIEM feature switch,
//! and the account's own ingest allowance where the operator's default does not fit.

use super::fields::{kind, FieldError, Fields};
use serde_json::Value;

/// The highest ingest rate (events a second) the config or an account may set; a
/// larger value is refused, naming the field.
pub const MAX_INGEST_RATE: u64 = 1_000_000_000;
/// The highest ingest burst (events at once) the config or an account may set.
pub const MAX_INGEST_BURST: u64 = 1_000_000_000_000;
/// The smallest backlog quota that can be set (config or per account): 64 KiB, far
/// above siemsync's own audit event about a drop, so that event alone never puts an
/// account over its quota again.
pub const MIN_BACKLOG_BYTES: u64 = 64 * 1024;
/// The largest backlog quota that can be set (config or per account): 1 PiB.
pub const MAX_BACKLOG_BYTES: u64 = 1 << 50;

/// One optional per-account setting in a `PUT`: left as it is when the field is
/// absent (so that switching the feature does not undo an operator's override),
/// back to the operator's default with `null`, or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Override {
    /// The field was absent: the stored value stays.
    Keep,
    /// The field was `null`: back to the operator's default.
    Default,
    /// The account's own value.
    Set(u64),
}

impl Override {
    /// The stored value after this change to `old`.
    pub fn apply(self, old: Option<u64>) -> Option<u64> {
        match self {
            Override::Keep => old,
            Override::Default => None,
            Override::Set(v) => Some(v),
        }
    }
}

/// The body of `PUT /api/v1/accounts/{account}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountChange {
    /// The SIEM feature switch; `false` stops the account's integrations.
    pub siem_enabled: bool,
    /// The account's own sustained ingest rate.
    pub ingest_events_per_sec: Override,
    /// The account's own ingest burst.
    pub ingest_burst: Override,
    /// The account's own backlog quota in bytes.
    pub max_backlog_bytes: Override,
}

impl AccountChange {
    /// Validates the body: `siem_enabled` required, limits in range, no unknown field;
    /// the error names the field.
    pub fn from_json(body: &Value) -> Result<AccountChange, FieldError> {
        let mut f = Fields::new(body, None)?;
        let siem_enabled = match f.get("siem_enabled") {
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(f.error(
                    "siem_enabled",
                    format!("must be true or false, got {}", kind(other)),
                ))
            }
            None => return Err(f.error("siem_enabled", "is required")),
        };
        let ingest_events_per_sec = limit(&mut f, "ingest_events_per_sec", 1, MAX_INGEST_RATE)?;
        let ingest_burst = limit(&mut f, "ingest_burst", 1, MAX_INGEST_BURST)?;
        let max_backlog_bytes = limit(
            &mut f,
            "max_backlog_bytes",
            MIN_BACKLOG_BYTES,
            MAX_BACKLOG_BYTES,
        )?;
        f.finish()?;
        Ok(AccountChange {
            siem_enabled,
            ingest_events_per_sec,
            ingest_burst,
            max_backlog_bytes,
        })
    }
}

fn limit(f: &mut Fields, field: &'static str, min: u64, max: u64) -> Result<Override, FieldError> {
    let present = f.has(field);
    match f.get(field) {
        // `get` reads a null as absent; `has` tells them apart.
        None if present => Ok(Override::Default),
        None => Ok(Override::Keep),
        Some(Value::Number(n)) => match n.as_u64().filter(|n| (min..=max).contains(n)) {
            Some(n) => Ok(Override::Set(n)),
            None => Err(f.error(
                field,
                format!(
                    "must be a whole number between {min} and {max}, or null for the default; got {n}"
                ),
            )),
        },
        Some(other) => Err(f.error(
            field,
            format!(
                "must be a whole number between {min} and {max}, or null for the default; got {}",
                kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_account_change_keeps_resets_or_sets_each_limit() {
        let c = AccountChange::from_json(&json!({"siem_enabled": true})).unwrap();
        assert_eq!(c.ingest_events_per_sec, Override::Keep);
        assert_eq!(c.ingest_events_per_sec.apply(Some(5)), Some(5));
        let c = AccountChange::from_json(
            &json!({"siem_enabled": false, "ingest_events_per_sec": null, "ingest_burst": 500}),
        )
        .unwrap();
        assert!(!c.siem_enabled);
        assert_eq!(c.ingest_events_per_sec.apply(Some(5)), None);
        assert_eq!(c.ingest_burst.apply(None), Some(500));
        assert_eq!(c.max_backlog_bytes.apply(Some(7)), Some(7));
        let c =
            AccountChange::from_json(&json!({"siem_enabled": true, "max_backlog_bytes": 300000}))
                .unwrap();
        assert_eq!(c.max_backlog_bytes, Override::Set(300_000));
    }

    #[test]
    fn a_bad_limit_is_refused_naming_the_field() {
        for (body, field) in [
            (
                json!({"siem_enabled": true, "ingest_burst": 0}),
                "ingest_burst",
            ),
            (
                json!({"siem_enabled": true, "ingest_burst": -3}),
                "ingest_burst",
            ),
            (
                json!({"siem_enabled": true, "ingest_burst": 1.5}),
                "ingest_burst",
            ),
            (
                json!({"siem_enabled": true, "ingest_events_per_sec": "fast"}),
                "ingest_events_per_sec",
            ),
            (
                json!({"siem_enabled": true, "ingest_events_per_sec": 2_000_000_000u64}),
                "ingest_events_per_sec",
            ),
            (
                json!({"siem_enabled": true, "ingest_rate": 5}),
                "ingest_rate",
            ),
            (json!({"ingest_burst": 5}), "siem_enabled"),
            (
                json!({"siem_enabled": true, "max_backlog_bytes": 0}),
                "max_backlog_bytes",
            ),
            (
                json!({"siem_enabled": true, "max_backlog_bytes": 1000}),
                "max_backlog_bytes",
            ),
            (
                json!({"siem_enabled": true, "max_backlog_bytes": "1GB"}),
                "max_backlog_bytes",
            ),
            (
                json!({"siem_enabled": true, "max_backlog_bytes": 2_000_000_000_000_000u64}),
                "max_backlog_bytes",
            ),
        ] {
            let e = AccountChange::from_json(&body).unwrap_err().to_string();
            assert!(e.contains(field), "{body}: {e}");
        }
    }
}
