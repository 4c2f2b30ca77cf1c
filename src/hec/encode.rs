//! Events → the bytes HEC receives: one JSON envelope per event, concatenated.
//!
//! The `event` object carries every field the product page lists, under the
//! names README.md's "What Splunk receives" gives, with `null` for an unknown
//! value (never absent), so Splunk searches can rely on the field existing.

use crate::model::audit_parts::{audit_parts, EncodedAudit};
use crate::model::{AccountId, AuditEvent, JobSnapshot};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

/// The envelope fields shared by every event of one integration.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The environment's host name (config `host`).
    pub host: String,
    /// The integration's index; `None` leaves it to the token's default index.
    pub index: Option<String>,
}

/// The `source` of audit events, so Splunk searches can tell the two kinds apart.
pub const AUDIT_SOURCE: &str = "siemsync:audit";
/// The `source` of job updates.
pub const JOBS_SOURCE: &str = "siemsync:jobs";
/// The source of the one event a connection test posts, so it is easy to find and to filter out.
pub const TEST_SOURCE: &str = "siemsync:test";

#[derive(Serialize)]
struct JobOut<'a> {
    time: &'a DateTime<Utc>,
    host: &'a str,
    upload_time: &'a DateTime<Utc>,
    account: &'a AccountId,
    connector: &'a Option<String>,
    job: &'a str,
    scheduled: &'a Option<DateTime<Utc>>,
    planned_start: &'a Option<DateTime<Utc>>,
    start_time: &'a Option<DateTime<Utc>>,
    description: &'a Option<String>,
    progress: &'a Option<f64>,
    paused: &'a Option<DateTime<Utc>>,
    end_time: &'a Option<DateTime<Utc>>,
    status: &'a str,
    #[serde(rename = "type")]
    job_type: &'a str,
    user: &'a Option<String>,
}

/// HEC's `time`: epoch seconds with a millisecond fraction (never milliseconds,
/// which Splunk would file in the far future).
fn write_epoch(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    write_epoch_ms(out, t.timestamp_millis());
}

fn write_epoch_ms(out: &mut Vec<u8>, ms: i64) {
    use std::io::Write;
    // Sign and magnitude: -500 ms is -0.500 s (floored parts would print -1.500).
    let sign = if ms < 0 { "-" } else { "" };
    let abs = ms.unsigned_abs();
    let _ = write!(out, "{sign}{}.{:03}", abs / 1000, abs % 1000);
}

fn write_envelope(
    out: &mut Vec<u8>,
    env: &Envelope,
    source: &str,
    time: &DateTime<Utc>,
    event: &impl Serialize,
) {
    out.extend_from_slice(b"{\"time\":");
    write_epoch(out, time);
    envelope_fields(out, env, source);
    json_into(out, event);
    out.extend_from_slice(b"}\n");
}

/// The envelope's fields after `time`, up to the value of `event`.
fn envelope_fields(out: &mut Vec<u8>, env: &Envelope, source: &str) {
    out.extend_from_slice(b",\"host\":");
    json_into(out, &env.host);
    out.extend_from_slice(b",\"source\":");
    json_into(out, source);
    out.extend_from_slice(b",\"sourcetype\":\"_json\"");
    if let Some(index) = &env.index {
        out.extend_from_slice(b",\"index\":");
        json_into(out, index);
    }
    out.extend_from_slice(b",\"event\":");
}

fn json_into(out: &mut Vec<u8>, v: &(impl Serialize + ?Sized)) {
    // Serialising borrowed plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("serialising an event");
}

/// The bytes every audit event of one post shares: the envelope of one integration
/// and the post's upload time. Built once per batch.
pub struct AuditFrame {
    /// From after the envelope's `time` up to the opening of the event object.
    envelope: Vec<u8>,
    /// Between the stored head and tail: `host` and `upload_time`.
    middle: Vec<u8>,
}

impl AuditFrame {
    /// The frame for one post of one integration: encoded once, copied per event.
    pub fn new(env: &Envelope, upload_time: &DateTime<Utc>) -> AuditFrame {
        let mut envelope = Vec::with_capacity(128);
        envelope_fields(&mut envelope, env, AUDIT_SOURCE);
        envelope.push(b'{');
        let mut middle = Vec::with_capacity(96);
        middle.extend_from_slice(b",\"host\":");
        json_into(&mut middle, &env.host);
        middle.extend_from_slice(b",\"upload_time\":");
        json_into(&mut middle, upload_time);
        middle.push(b',');
        AuditFrame { envelope, middle }
    }

    /// Appends one stored audit event's envelope; its HEC time is when the event happened.
    pub fn write(&self, out: &mut Vec<u8>, time_ms: i64, head: &[u8], tail: &[u8]) {
        out.reserve(40 + self.envelope.len() + head.len() + self.middle.len() + tail.len());
        out.extend_from_slice(b"{\"time\":");
        write_epoch_ms(out, time_ms);
        out.extend_from_slice(&self.envelope);
        out.extend_from_slice(head);
        out.extend_from_slice(&self.middle);
        out.extend_from_slice(tail);
        out.extend_from_slice(b"}}\n");
    }
}

/// Appends one audit event's envelope: its stored parts in a frame (the one encoding
/// delivery uses, here for an event not read from the store).
pub fn audit(
    out: &mut Vec<u8>,
    env: &Envelope,
    account: &AccountId,
    ev: &AuditEvent,
    upload_time: &DateTime<Utc>,
) {
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    audit_parts(&mut head, &mut tail, account, ev);
    AuditFrame::new(env, upload_time).write(out, ev.time.timestamp_millis(), &head, &tail);
}

/// Appends one job snapshot's envelope; its time is the upload time, as the product page says.
pub fn job(
    out: &mut Vec<u8>,
    env: &Envelope,
    account: &AccountId,
    job: &JobSnapshot,
    upload_time: &DateTime<Utc>,
) {
    let body = JobOut {
        time: upload_time,
        host: &env.host,
        upload_time,
        account,
        connector: &job.connector,
        job: &job.job,
        scheduled: &job.scheduled,
        planned_start: &job.planned_start,
        start_time: &job.start_time,
        description: &job.description,
        progress: &job.progress,
        paused: &job.paused,
        end_time: &job.end_time,
        status: &job.status,
        job_type: &job.job_type,
        user: &job.user,
    };
    write_envelope(out, env, JOBS_SOURCE, upload_time, &body);
}

/// The clearly marked event a connection test posts.
pub fn test_event(
    out: &mut Vec<u8>,
    env: &Envelope,
    account: &AccountId,
    integration: &str,
    name: &str,
    now: &DateTime<Utc>,
) {
    let body = serde_json::json!({
        "message": format!("siemsync connection test: the SIEM integration {name:?} can send events to this Splunk. You can ignore this event."),
        "test": true,
        "integration": integration,
        "account": account,
        "host": env.host,
        "time": now,
    });
    write_envelope(out, env, TEST_SOURCE, now, &body);
}

/// What a stored event can weigh, at most, as the HEC event of any integration
/// on this host: written with the longest index name and the longest upload time
/// it could be sent with. Ingest refuses events above `max_event_bytes` by it.
pub struct EventSize<'a> {
    envelope: Envelope,
    account: &'a AccountId,
    upload_time: DateTime<Utc>,
    scratch: Vec<u8>,
}

/// Everything of an event's HEC bytes but its variable fields: field names, the
/// envelope's constants, three times, an IP address, the longest index name.
const FIXED_BOUND: usize = 1024;

impl<'a> EventSize<'a> {
    /// The measure for one account's events on this host (`host` from the config).
    pub fn new(host: &str, account: &'a AccountId) -> EventSize<'a> {
        EventSize {
            envelope: Envelope {
                host: host.to_owned(),
                index: Some("x".repeat(crate::model::integration::MAX_INDEX_LEN)),
            },
            account,
            // Nine fraction digits: the longest time chrono writes.
            upload_time: DateTime::from_timestamp(4_102_444_799, 999_999_999).unwrap_or_default(),
            scratch: Vec::new(),
        }
    }

    fn fixed(&self) -> usize {
        FIXED_BOUND + 2 * text_bound(&self.envelope.host) + text_bound(self.account.as_str())
    }

    /// An audit event's size: a cheap upper bound first, written out only when
    /// the bound is above `limit`.
    pub fn audit(&mut self, ev: &AuditEvent, limit: usize) -> usize {
        let opt = |s: &Option<String>| s.as_deref().map_or(4, text_bound);
        let bound = self.fixed()
            + text_bound(&ev.id)
            + opt(&ev.connector)
            + opt(&ev.acl)
            + opt(&ev.method)
            + opt(&ev.user)
            + ev.metadata.as_ref().map_or(4, map_bound)
            + json_size_bound(&ev.event);
        if bound <= limit {
            return bound;
        }
        self.scratch.clear();
        audit(
            &mut self.scratch,
            &self.envelope,
            self.account,
            ev,
            &self.upload_time,
        );
        self.scratch.len()
    }

    /// An encoded audit event's size, the same way: its stored parts are exact, so
    /// the bound is the fixed part's and theirs.
    pub fn encoded_audit(&mut self, ev: &EncodedAudit, limit: usize) -> usize {
        let bound = self.fixed() + ev.head().len() + ev.rest().len();
        if bound <= limit {
            return bound;
        }
        self.scratch.clear();
        let mut tail = Vec::with_capacity(64 + ev.rest().len());
        crate::model::audit_parts::account_into(&mut tail, self.account);
        tail.extend_from_slice(ev.rest());
        AuditFrame::new(&self.envelope, &self.upload_time).write(
            &mut self.scratch,
            ev.time_ms,
            ev.head(),
            &tail,
        );
        self.scratch.len()
    }

    /// A job snapshot's size, the same way.
    pub fn job(&mut self, j: &JobSnapshot, limit: usize) -> usize {
        let opt = |s: &Option<String>| s.as_deref().map_or(4, text_bound);
        let bound = self.fixed()
            + 5 * 40
            + text_bound(&j.job)
            + opt(&j.connector)
            + opt(&j.description)
            + text_bound(&j.status)
            + text_bound(&j.job_type)
            + opt(&j.user);
        if bound <= limit {
            return bound;
        }
        self.scratch.clear();
        job(
            &mut self.scratch,
            &self.envelope,
            self.account,
            j,
            &self.upload_time,
        );
        self.scratch.len()
    }
}

/// A string's JSON size at most: every character a six-byte escape, and quotes.
fn text_bound(s: &str) -> usize {
    6 * s.len() + 2
}

fn map_bound(m: &Map<String, Value>) -> usize {
    2 + m
        .iter()
        .map(|(k, v)| text_bound(k) + 2 + json_size_bound(v))
        .sum::<usize>()
}

/// An upper bound of a value's compact JSON size, without writing it.
fn json_size_bound(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        // The longest f64, i64 or u64 serde_json writes is 24 characters.
        Value::Number(_) => 24,
        Value::String(s) => text_bound(s),
        Value::Array(a) => 2 + a.iter().map(|v| json_size_bound(v) + 1).sum::<usize>(),
        Value::Object(m) => map_bound(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn an_audit_event_carries_every_field_with_nulls_for_unknowns() {
        let ev = AuditEvent::from_json(
            &json!({"id": "e-1", "time": "2026-11-25T10:00:00.123Z", "event": "login", "ip": "10.0.0.1"}),
            0,
            Utc::now(),
        )
        .unwrap();
        let upload: DateTime<Utc> = "2026-11-25T10:05:00Z".parse().unwrap();
        let env = Envelope {
            host: "eu-1.example.com".into(),
            index: Some("sec".into()),
        };
        let mut out = Vec::new();
        audit(
            &mut out,
            &env,
            &AccountId::parse("acme").unwrap(),
            &ev,
            &upload,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("{\"time\":1795600800.123,"), "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["sourcetype"], "_json");
        assert_eq!(v["source"], "siemsync:audit");
        assert_eq!(v["index"], "sec");
        assert_eq!(
            v["event"],
            json!({"id": "e-1", "time": "2026-11-25T10:00:00.123Z", "host": "eu-1.example.com",
                   "upload_time": "2026-11-25T10:05:00Z", "account": "acme", "connector": null,
                   "acl": null, "method": null, "user": null, "ip_address": "10.0.0.1",
                   "metadata": null, "event": "login"})
        );
    }

    #[test]
    fn epoch_times_before_1970_keep_their_fraction() {
        let epoch = |ms| {
            let mut out = Vec::new();
            write_epoch_ms(&mut out, ms);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(epoch(-500), "-0.500");
        assert_eq!(epoch(-315_619_199_750), "-315619199.750");
        assert_eq!(epoch(-1000), "-1.000");
        assert_eq!(epoch(-1), "-0.001");
        assert_eq!(epoch(0), "0.000");
        assert_eq!(epoch(1500), "1.500");
        assert_eq!(epoch(i64::MIN), "-9223372036854775.808");
        let ev = AuditEvent::from_json(
            &json!({"id": "e", "time": "1969-12-31T23:59:59.500Z", "event": "x"}),
            0,
            Utc::now(),
        )
        .unwrap();
        let env = Envelope {
            host: "h".into(),
            index: None,
        };
        let mut out = Vec::new();
        audit(
            &mut out,
            &env,
            &AccountId::parse("a").unwrap(),
            &ev,
            &Utc::now(),
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"].as_f64().unwrap(), -0.5);
        assert_eq!(v["event"]["time"], "1969-12-31T23:59:59.500Z");
    }

    #[test]
    fn a_job_event_is_timed_by_its_upload() {
        let j = JobSnapshot::from_json(
            &json!({"job": "j-1", "type": "backup", "status": "in progress", "progress": 0.25,
                    "start_time": "2026-11-25T09:00:00Z"}),
            0,
            Utc::now(),
        )
        .unwrap();
        let upload: DateTime<Utc> = "2026-11-25T10:05:00.5Z".parse().unwrap();
        let env = Envelope {
            host: "h".into(),
            index: None,
        };
        let mut out = Vec::new();
        job(
            &mut out,
            &env,
            &AccountId::parse("acme").unwrap(),
            &j,
            &upload,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"].as_f64().unwrap(), 1795601100.5);
        assert!(v.get("index").is_none());
        let keys: Vec<&String> = v["event"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 16);
        assert_eq!(v["event"]["progress"], 0.25);
        assert_eq!(v["event"]["end_time"], Value::Null);
        assert_eq!(v["event"]["type"], "backup");
        assert_eq!(v["event"]["time"], "2026-11-25T10:05:00.500Z");
    }

    #[test]
    fn an_events_size_bound_is_never_below_what_it_weighs_in_any_integration() {
        let account = AccountId::parse("acme").unwrap();
        let host = "eu-1.backup.example.com";
        let mut size = EventSize::new(host, &account);
        let events = [
            json!({"time": "2026-11-25T10:00:00Z", "event": "x"}),
            json!({"id": "e\u{1}\"\\", "time": "2026-11-25T10:00:00.123456789+05:30",
                "connector": "c-1", "acl": "\u{7f}é", "method": "DELETE", "user": "\u{2028}",
                "ip": "2001:db8::ffff:ffff:ffff", "metadata": {"n": 1e300, "m": -1.2345678901234567e-300,
                "list": [1, true, null, "\u{1f}"], "deep": {"a": {"b": [u64::MAX]}}},
                "event": {"k": "v"}}),
        ];
        let env = Envelope {
            host: host.into(),
            index: Some("x".repeat(80)),
        };
        let latest = DateTime::from_timestamp(4_102_444_799, 999_999_999).unwrap();
        for (i, raw) in events.iter().enumerate() {
            let ev = AuditEvent::from_json(raw, i, Utc::now()).unwrap();
            let mut out = Vec::new();
            audit(&mut out, &env, &account, &ev, &latest);
            let bound = size.audit(&ev, usize::MAX);
            assert!(bound >= out.len(), "{i}: bound {bound} < {}", out.len());
            // Past the limit, it is measured exactly.
            assert_eq!(size.audit(&ev, 0), out.len(), "{i}");
            // Ingest weighs the stored form it read: the same exact size, and a
            // bound that is never below it either.
            let encoded = EncodedAudit::from(&ev);
            let bound = size.encoded_audit(&encoded, usize::MAX);
            assert!(
                bound >= out.len(),
                "{i}: encoded bound {bound} < {}",
                out.len()
            );
            assert_eq!(size.encoded_audit(&encoded, 0), out.len(), "{i}");
        }
        let snapshot = JobSnapshot::from_json(
            &json!({"job": "j-1", "type": "backup", "status": "in progress",
                "description": "d\u{0}".repeat(100), "progress": 0.123456789, "user": "u",
                "scheduled": "2026-11-25T10:00:00.5Z", "end_time": "2026-11-25T10:00:00.123456789Z"}),
            0,
            Utc::now(),
        )
        .unwrap();
        let mut out = Vec::new();
        job(&mut out, &env, &account, &snapshot, &latest);
        assert!(size.job(&snapshot, usize::MAX) >= out.len());
        assert_eq!(size.job(&snapshot, 0), out.len());
    }
}
