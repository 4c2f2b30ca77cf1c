//! An audit-log event: who did what, from where.

use super::fields::{self, FieldError, Fields};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::net::IpAddr;

/// An audit event as stored: validated, with every optional field explicit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique within the account; the platform's retries are recognised by it.
    pub id: String,
    /// When it happened on the platform: the HEC event's time.
    pub time: DateTime<Utc>,
    /// The connector (backup source) it concerns, when one.
    pub connector: Option<String>,
    /// The permission the action needed, when one.
    pub acl: Option<String>,
    /// The HTTP method of the platform's request, when one.
    pub method: Option<String>,
    /// Who did it, when known.
    pub user: Option<String>,
    /// From where, when known.
    pub ip_address: Option<IpAddr>,
    /// Anything else the platform recorded, as given.
    pub metadata: Option<Map<String, Value>>,
    /// What happened: a non-empty string or object.
    pub event: Value,
    /// When siemsync stored it; the backlog's age is measured from here.
    pub ingested_at: DateTime<Utc>,
}

/// An audit event's fields as read, before the rules: what the body reader and the
/// field reader both produce, so the rules live in one place ([`AuditEvent::checked`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(borrow)]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow)]
    acl: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    metadata: Option<Map<String, Value>>,
    event: Option<Value>,
}

/// A struct read only from a JSON object: serde's derived readers also take an
/// array of the fields in order, which the field reader rightly refuses.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Object(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// Reads an ingest body's array item by item, checking each as it is read, so that
/// no list of unchecked items is built first. After an item that breaks a rule the
/// rest is still read (unchecked): a body that then turns out not to read this way
/// goes to the field reader like any other, which names the same first problem.
struct BodySeed {
    now: DateTime<Utc>,
    capacity: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed {
    type Value = Result<Vec<AuditEvent>, FieldError>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed {
    type Value = Result<Vec<AuditEvent>, FieldError>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of audit events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(self.capacity);
        let mut first_problem = None;
        let mut index = 0;
        while let Some(raw) = seq.next_element::<ObjectOnly<Raw<'de>>>()? {
            if first_problem.is_none() {
                match AuditEvent::checked(raw.0, index, self.now) {
                    Ok(ev) => events.push(ev),
                    Err(e) => first_problem = Some(e),
                }
            }
            index += 1;
        }
        Ok(first_problem.map_or(Ok(events), Err))
    }
}

impl AuditEvent {
    /// Reads an ingest body: a JSON array of audit events. Read straight into the
    /// event's fields (no JSON tree in between); a body that does not read that way
    /// (a wrong type, an unknown field, not an array) is read again field by field,
    /// which names the first problem exactly.
    pub fn read_body(body: &[u8], now: DateTime<Utc>) -> Result<Vec<AuditEvent>, FieldError> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_slice(body);
        let read = BodySeed {
            now,
            // A guess at the item count (an event takes a few hundred bytes of JSON),
            // so that the list is not regrown and copied a dozen times.
            capacity: body.len() / 192,
        }
        .deserialize(&mut de)
        .and_then(|checked| de.end().map(|()| checked));
        match read {
            Ok(checked) => checked,
            Err(_) => fields::read_array(body, now, Self::from_json),
        }
    }

    /// Validates one item of an ingest body (`index` is its position, for messages).
    /// Without an `id` the service makes one, so the event still carries one to Splunk.
    pub fn from_json(
        value: &Value,
        index: usize,
        now: DateTime<Utc>,
    ) -> Result<AuditEvent, FieldError> {
        let mut f = Fields::new(value, Some(index))?;
        let raw = Raw {
            id: f.string("id")?.map(Cow::Owned),
            time: f.string("time")?.map(Cow::Owned),
            connector: f.string("connector")?.map(Cow::Owned),
            acl: f.string("acl")?.map(Cow::Owned),
            method: f.string("method")?.map(Cow::Owned),
            user: f.string("user")?.map(Cow::Owned),
            ip: f.string("ip")?.map(Cow::Owned),
            metadata: f.object("metadata")?,
            event: f.get("event").cloned(),
        };
        f.finish()?;
        Self::checked(raw, index, now)
    }

    /// The rules every audit event must meet, whichever reader read it.
    fn checked(raw: Raw<'_>, index: usize, now: DateTime<Utc>) -> Result<AuditEvent, FieldError> {
        let error = |field: &str, problem: String| FieldError {
            index: Some(index),
            field: Some(field.to_owned()),
            problem,
        };
        let id = match raw.id {
            None => uuid::Uuid::new_v4().to_string(),
            Some(s) if s.is_empty() || s.len() > 128 => {
                return Err(error("id", "must be 1 to 128 characters".into()))
            }
            Some(s) => s.into_owned(),
        };
        let time = match raw.time {
            None => return Err(error("time", "is required".into())),
            Some(s) => {
                fields::parse_time(&s).map_err(|problem| error("time", problem.to_string()))?
            }
        };
        let connector = match raw.connector {
            None => None,
            Some(s) => match fields::identifier(&s) {
                Ok(()) => Some(s.into_owned()),
                Err(problem) => return Err(error("connector", problem.to_string())),
            },
        };
        let method = match raw.method {
            Some(m)
                if m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_alphabetic()) =>
            {
                return Err(error(
                    "method",
                    format!("must be an HTTP method such as GET or POST, got {m:?}"),
                ))
            }
            m => m.map(Cow::into_owned),
        };
        let ip_address = match raw.ip {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| error("ip", format!("is not an IPv4 or IPv6 address: {s:?}")))?,
            ),
        };
        let event = match raw.event {
            None | Some(Value::Null) => return Err(error("event", "is required".into())),
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(error("event", "must not be empty".into()))
            }
            Some(Value::Object(m)) if m.is_empty() => {
                return Err(error("event", "must not be an empty object".into()))
            }
            Some(v @ (Value::String(_) | Value::Object(_))) => v,
            Some(other) => {
                return Err(error(
                    "event",
                    format!(
                        "must be a string or an object, got {}",
                        fields::kind(&other)
                    ),
                ))
            }
        };
        Ok(AuditEvent {
            id,
            time,
            connector,
            acl: raw.acl.map(Cow::into_owned),
            method,
            user: raw.user.map(Cow::into_owned),
            ip_address,
            metadata: raw.metadata,
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
    fn the_body_reader_refuses_what_the_field_reader_refuses_in_the_same_words() {
        let now = Utc::now();
        let good = r#"{"id": "a", "time": "2026-11-25T10:00:00Z", "event": "x"}"#;
        let bad_ip = r#"{"id": "b", "time": "2026-11-25T10:00:00Z", "event": "x", "ip": "1.2.3"}"#;
        let bad_time = r#"{"id": "c", "time": "soon", "event": "x"}"#;
        let unknown = r#"{"id": "d", "time": "2026-11-25T10:00:00Z", "event": "x", "colour": 1}"#;
        let wrong_type = r#"{"id": 5, "time": "2026-11-25T10:00:00Z", "event": "x"}"#;
        let twice = r#"{"id": "e", "id": "f", "time": "2026-11-25T10:00:00Z", "event": "x"}"#;
        let bodies = [
            format!("[{good},{bad_ip},{good},{bad_time}]"),
            // A rule broken before a body that does not read as events: the first
            // problem in order is still the one named.
            format!("[{good},{bad_time},{unknown}]"),
            format!("[{good},{bad_time},{wrong_type}]"),
            format!("[{good},{unknown},{bad_time}]"),
            // A broken rule before JSON that is not valid: refused as not JSON.
            format!("[{good},{bad_ip},{good}"),
            format!("[{bad_time}] trailing"),
            format!("[{good},{twice}]"),
            format!("[{good},[1, 2]]"),
            good.to_string(),
            format!("[{good},{good}]"),
        ];
        for body in &bodies {
            let fast = AuditEvent::read_body(body.as_bytes(), now);
            let fields = fields::read_array(body.as_bytes(), now, AuditEvent::from_json);
            match (fast, fields) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{body}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{body}"),
                (a, b) => panic!("{body}: body reader {a:?}, field reader {b:?}"),
            }
        }
        let e = AuditEvent::read_body(bodies[1].as_bytes(), now).unwrap_err();
        assert!(e.to_string().starts_with("item 1: `time` "), "{e}");
        let e = AuditEvent::read_body(bodies[4].as_bytes(), now).unwrap_err();
        assert!(e.to_string().contains("not valid JSON"), "{e}");
    }

    #[test]
    fn an_audit_event_without_id_gets_one() {
        let e = parse(json!({"time": "2026-11-25T10:00:00Z", "event": {"what": "x"}})).unwrap();
        assert_eq!(e.id.len(), 36);
    }
}
