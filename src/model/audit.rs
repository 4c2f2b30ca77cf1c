//! An audit-log event: who did what, from where.

use super::audit_parts::{EncodedAudit, EventOf, MetadataOf, PartsOf};
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
    #[serde(borrow, default, deserialize_with = "borrowed")]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    time: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    acl: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    method: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    user: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow)]
    event: Option<Json<'a>>,
}

/// A JSON value as the body reader keeps it: a string borrowed from the body where
/// it has no escapes, anything else as `serde_json`'s [`Value`] (a number, a
/// boolean or `null` without allocating).
#[derive(Debug)]
pub(super) enum Json<'a> {
    Str(Cow<'a, str>),
    Other(Value),
}

impl Json<'_> {
    /// Writes it as `serde_json` writes the same [`Value`].
    pub(super) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Json::Str(s) => super::audit_parts::string_into(out, s),
            Json::Other(v) => super::audit_parts::json_into(out, v),
        }
    }

    fn into_value(self) -> Value {
        match self {
            Json::Str(s) => Value::String(s.into_owned()),
            Json::Other(v) => v,
        }
    }
}

impl From<Value> for Json<'_> {
    fn from(v: Value) -> Self {
        match v {
            Value::String(s) => Json::Str(Cow::Owned(s)),
            other => Json::Other(other),
        }
    }
}

/// Reads a JSON value into a [`Json`], building each kind exactly as [`Value`]'s
/// own reader does (so that it writes back the same bytes).
struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json<'de>, E> {
        Ok(Json::Other(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json<'de>, E> {
        Ok(Json::Other(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json<'de>, E> {
        Ok(Json::Other(Value::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json<'de>, E> {
        Ok(Json::Other(
            serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Other(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Other(Value::Null))
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Json<'de>, A::Error> {
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(Json::Other)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Json<'de>, A::Error> {
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Json::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Json<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

/// A string (a map key, a field), borrowed from the body where it has no escapes.
struct Key<'a>(Cow<'a, str>);

/// An optional string field, borrowed from the body where it has no escapes: serde's
/// own `Option<Cow<str>>` always copies (it borrows only a bare `Cow`).
fn borrowed<'de: 'a, 'a, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<Key<'a>>::deserialize(d)?.map(|k| k.0))
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_str(JsonVisitor)? {
            Json::Str(s) => Ok(Key(s)),
            Json::Other(_) => Err(serde::de::Error::custom("a map key must be a string")),
        }
    }
}

/// An event's metadata: a JSON object, as the field reader has it or as the body
/// reader reads it without building a map.
#[derive(Debug)]
pub(super) enum Metadata<'a> {
    Map(Map<String, Value>),
    /// In key order, each key once with its last value: what `serde_json`'s map
    /// keeps of the same object, so that it is written the same.
    Entries(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Metadata<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Metadata<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Metadata<'de>, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Json<'de>>()? {
                    entries.push((k, v));
                }
                // A map keeps a repeated key once, with its last value: reversed, a
                // stable sort puts the last value of each key first, which dedup keeps.
                entries.reverse();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.dedup_by(|later, kept| later.0 == kept.0);
                Ok(Metadata::Entries(entries))
            }
        }
        d.deserialize_map(Entries)
    }
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
    type Value = Result<Vec<EncodedAudit>, FieldError>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed {
    type Value = Result<Vec<EncodedAudit>, FieldError>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of audit events")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(self.capacity);
        let mut first_problem = None;
        let mut scratch = Vec::with_capacity(1024);
        let mut index = 0;
        while let Some(raw) = seq.next_element::<ObjectOnly<Raw<'de>>>()? {
            if first_problem.is_none() {
                match AuditEvent::checked(raw.0, index) {
                    Ok(ev) => events.push(ev.encode(&self.now, &mut scratch)),
                    Err(e) => first_problem = Some(e),
                }
            }
            index += 1;
        }
        Ok(first_problem.map_or(Ok(events), Err))
    }
}

impl AuditEvent {
    /// Reads an ingest body: a JSON array of audit events. Read straight into each
    /// event's stored form (no JSON tree, no owned strings in between); a body that
    /// does not read that way (a wrong type, an unknown field, not an array) is read
    /// again field by field, which names the first problem exactly.
    pub fn read_body(body: &[u8], now: DateTime<Utc>) -> Result<Vec<EncodedAudit>, FieldError> {
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
            Err(_) => fields::read_array(body, now, |v, i, now| {
                Self::from_json(v, i, now).map(EncodedAudit::from)
            }),
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
            metadata: f.object("metadata")?.map(Metadata::Map),
            event: f.get("event").cloned().map(Json::from),
        };
        f.finish()?;
        Self::checked(raw, index).map(|c| c.into_event(now))
    }

    /// The rules every audit event must meet, whichever reader read it.
    fn checked(raw: Raw<'_>, index: usize) -> Result<Checked<'_>, FieldError> {
        let error = |field: &str, problem: String| FieldError {
            index: Some(index),
            field: Some(field.to_owned()),
            problem,
        };
        let id = match raw.id {
            None => Cow::Owned(uuid::Uuid::new_v4().to_string()),
            Some(s) if s.is_empty() || s.len() > 128 => {
                return Err(error("id", "must be 1 to 128 characters".into()))
            }
            Some(s) => s,
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
                Ok(()) => Some(s),
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
            m => m,
        };
        let ip_address = match raw.ip {
            None => None,
            Some(s) => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| error("ip", format!("is not an IPv4 or IPv6 address: {s:?}")))?,
            ),
        };
        let event = match raw.event {
            None | Some(Json::Other(Value::Null)) => {
                return Err(error("event", "is required".into()))
            }
            Some(Json::Str(s)) if s.trim().is_empty() => {
                return Err(error("event", "must not be empty".into()))
            }
            Some(Json::Other(Value::Object(m))) if m.is_empty() => {
                return Err(error("event", "must not be an empty object".into()))
            }
            Some(v @ (Json::Str(_) | Json::Other(Value::Object(_)))) => v,
            Some(Json::Other(other)) => {
                return Err(error(
                    "event",
                    format!(
                        "must be a string or an object, got {}",
                        fields::kind(&other)
                    ),
                ))
            }
        };
        Ok(Checked {
            id,
            time,
            connector,
            acl: raw.acl,
            method,
            user: raw.user,
            ip_address,
            metadata: raw.metadata,
            event,
        })
    }
}

/// An audit event that met the rules, its fields still borrowed from the body.
struct Checked<'a> {
    id: Cow<'a, str>,
    time: DateTime<Utc>,
    connector: Option<Cow<'a, str>>,
    acl: Option<Cow<'a, str>>,
    method: Option<Cow<'a, str>>,
    user: Option<Cow<'a, str>>,
    ip_address: Option<IpAddr>,
    metadata: Option<Metadata<'a>>,
    event: Json<'a>,
}

impl Checked<'_> {
    fn into_event(self, ingested_at: DateTime<Utc>) -> AuditEvent {
        AuditEvent {
            id: self.id.into_owned(),
            time: self.time,
            connector: self.connector.map(Cow::into_owned),
            acl: self.acl.map(Cow::into_owned),
            method: self.method.map(Cow::into_owned),
            user: self.user.map(Cow::into_owned),
            ip_address: self.ip_address,
            metadata: self.metadata.map(|m| match m {
                Metadata::Map(m) => m,
                Metadata::Entries(entries) => entries
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_value()))
                    .collect(),
            }),
            event: self.event.into_value(),
            ingested_at,
        }
    }

    /// Its stored form, written straight from the borrowed fields.
    fn encode(&self, ingested_at: &DateTime<Utc>, scratch: &mut Vec<u8>) -> EncodedAudit {
        let parts = PartsOf {
            id: &self.id,
            time: &self.time,
            connector: self.connector.as_deref(),
            acl: self.acl.as_deref(),
            method: self.method.as_deref(),
            user: self.user.as_deref(),
            ip_address: self.ip_address,
            metadata: match &self.metadata {
                None => MetadataOf::None,
                Some(Metadata::Map(m)) => MetadataOf::Map(m),
                Some(Metadata::Entries(e)) => MetadataOf::Entries(e),
            },
            event: EventOf::Json(&self.event),
        };
        EncodedAudit::new(&parts, ingested_at, scratch)
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
            // What the body reader reads its own way (metadata, event) breaking the
            // rules or not JSON the reader takes.
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": 5}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": [1]}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": true}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": null}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": {}}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": " \n\t"}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": "m"}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": [1]}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": null}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": {"n": 1e400}}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": {"n": -1e400}}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": {"a": 1, "a": 2}}]"#
                .into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": {"a": 1,}}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "\ud800"}]"#.into(),
            r#"[{"id": "q", "time": "2026-11-25T10:00:00Z", "event": "x", "metadata": {"\ud800": 1}}]"#
                .into(),
        ];
        for body in &bodies {
            let fast = AuditEvent::read_body(body.as_bytes(), now);
            let fields = fields::read_array(body.as_bytes(), now, |v, i, now| {
                AuditEvent::from_json(v, i, now).map(EncodedAudit::from)
            });
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
