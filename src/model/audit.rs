//! An audit-log event: who did what, from where.

use super::fields::{FieldError, Fields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// An audit event as stored: validated, with every optional field explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique within the account; the platform's retries are recognised by it.
    pub id: String,
    pub time: DateTime<Utc>,
    pub connector: Option<String>,
    pub acl: Option<String>,
    pub method: Option<String>,
    pub user: Option<String>,
    pub ip_address: Option<IpAddr>,
    pub metadata: Option<Map<String, Value>>,
    /// What happened: a non-empty string or object.
    pub event: Value,
    /// When siemsync stored it; the backlog's age is measured from here.
    pub ingested_at: DateTime<Utc>,
}

impl AuditEvent {
    /// Validates one item of an ingest body (`index` is its position, for messages).
    /// Without an `id` the service makes one, so the event still carries one to Splunk.
    pub fn from_json(
        value: &Value,
        index: usize,
        now: DateTime<Utc>,
    ) -> Result<AuditEvent, FieldError> {
        let mut f = Fields::new(value, Some(index))?;
        let id = match f.string("id")? {
            None => uuid::Uuid::new_v4().to_string(),
            Some(s) if s.is_empty() || s.len() > 128 => {
                return Err(f.error("id", "must be 1 to 128 characters"))
            }
            Some(s) => s,
        };
        let time = f.required("time", Fields::time)?;
        let connector = f.identifier("connector")?;
        let acl = f.string("acl")?;
        let method = match f.string("method")? {
            Some(m)
                if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                return Err(f.error(
                    "method",
                    format!("must be an HTTP method such as GET or POST, got {m:?}"),
                ))
            }
            m => m,
        };
        let user = f.string("user")?;
        let ip_address = match f.string("ip")? {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| f.error("ip", format!("is not an IPv4 or IPv6 address: {s:?}")))?,
            ),
        };
        let metadata = f.object("metadata")?;
        let event = match f.get("event") {
            None => return Err(f.error("event", "is required")),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(f.error("event", "must not be empty"))
            }
            Some(Value::Object(m)) if m.is_empty() => {
                return Err(f.error("event", "must not be an empty object"))
            }
            Some(v @ (Value::String(_) | Value::Object(_))) => v.clone(),
            Some(other) => {
                return Err(f.error(
                    "event",
                    format!(
                        "must be a string or an object, got {}",
                        super::fields::kind(other)
                    ),
                ))
            }
        };
        f.finish()?;
        Ok(AuditEvent {
            id,
            time,
            connector,
            acl,
            method,
            user,
            ip_address,
            metadata,
            event,
            ingested_at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<AuditEvent, String> {
        AuditEvent::from_json(&v, 7, Utc::now()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_audit_event_is_read_field_by_field() {
        let e = parse(
            json!({"id": "e1", "time": "2026-11-25T10:00:00.123+01:00", "connector": "c-1",
            "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "2001:db8::1",
            "metadata": {"k": 1}, "event": "login"}),
        )
        .unwrap();
        assert_eq!(e.time.to_rfc3339(), "2026-11-25T09:00:00.123+00:00");
        assert_eq!(e.ip_address.unwrap().to_string(), "2001:db8::1");
        assert_eq!(e.event, json!("login"));
    }

    #[test]
    fn bad_audit_fields_are_named_with_their_index() {
        assert_eq!(
            parse(json!({"event": "x"})).unwrap_err(),
            "item 7: `time` is required"
        );
        assert_eq!(
            parse(json!({"time": "2026-11-25T10:00:00Z"})).unwrap_err(),
            "item 7: `event` is required"
        );
        assert!(parse(json!({"time": "yesterday", "event": "x"}))
            .unwrap_err()
            .starts_with("item 7: `time` is not an RFC 3339 timestamp"));
        assert!(
            parse(json!({"time": "2026-11-25T10:00:00Z", "event": "x", "ip": "999.1.1.1"}))
                .unwrap_err()
                .contains("`ip` is not an IPv4")
        );
        assert!(
            parse(json!({"time": "2026-11-25T10:00:00Z", "event": "x", "colour": 1}))
                .unwrap_err()
                .contains("`colour` is not a known field")
        );
        assert!(
            parse(json!({"time": "2026-11-25T10:00:00Z", "event": "  "}))
                .unwrap_err()
                .contains("`event` must not be empty")
        );
        assert!(parse(json!("just a string"))
            .unwrap_err()
            .contains("must be a JSON object"));
    }

    #[test]
    fn an_audit_event_without_id_gets_one() {
        let e = parse(json!({"time": "2026-11-25T10:00:00Z", "event": {"what": "x"}})).unwrap();
        assert_eq!(e.id.len(), 36);
    }
}
