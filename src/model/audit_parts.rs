//! An audit event's stored form: the parts of its HEC event object that depend
//! neither on the integration nor on the moment of delivery, encoded once when the
//! event is ingested, so that delivering it is copying bytes. The store keeps these
//! parts; the HEC encoder (`hec::encode::AuditFrame`) completes them per post.
//!
//! The field names are the product's contract with the customer's Splunk (the
//! README's "What Splunk receives"), which is why they live with the event.

use super::audit::Json;
use super::{AccountId, AuditEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::net::IpAddr;

/// Writes `s` as a JSON string, escaped exactly as `serde_json` escapes it.
pub(super) fn string_into(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("serialising a string");
}

/// Writes an optional string: `null` when absent (the README: a missing optional
/// value is `null`, not absent).
fn opt_into(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string_into(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub(super) fn json_into(out: &mut Vec<u8>, v: &impl Serialize) {
    // Serialising borrowed plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("serialising an event");
}

/// Writes `t` as the JSON string chrono's `Serialize` writes (`2026-11-25T09:00:00.123Z`:
/// the fraction in 3, 6 or 9 digits as needed, none when whole; a leap second as
/// `:60`), by hand: through chrono's `Debug` and `collect_str` it cost about 1,100
/// instructions an event at ingest. Years outside 0–9999 (which ingest refuses) go
/// An address as its `Display` writes it; IPv4, the common case, by hand (through
/// `fmt` it cost about 1 % of forwarding's CPU).
fn ip_into(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            write!(out, "{ip}").expect("writing an address");
        }
    }
}

/// through chrono.
pub(super) fn time_into(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return json_into(out, t);
    }
    let (mut second, mut nano) = (t.second(), t.nanosecond());
    if nano >= 1_000_000_000 {
        second += 1;
        nano -= 1_000_000_000;
    }
    let digits = |out: &mut Vec<u8>, v: u32, width: u32| {
        for k in (0..width).rev() {
            out.push(b'0' + (v / 10u32.pow(k) % 10) as u8);
        }
    };
    out.push(b'"');
    digits(out, year as u32, 4);
    out.push(b'-');
    digits(out, t.month(), 2);
    out.push(b'-');
    digits(out, t.day(), 2);
    out.push(b'T');
    digits(out, t.hour(), 2);
    out.push(b':');
    digits(out, t.minute(), 2);
    out.push(b':');
    digits(out, second, 2);
    if nano != 0 {
        out.push(b'.');
        if nano % 1_000_000 == 0 {
            digits(out, nano / 1_000_000, 3);
        } else if nano % 1_000 == 0 {
            digits(out, nano / 1_000, 6);
        } else {
            digits(out, nano, 9);
        }
    }
    out.extend_from_slice(b"Z\"");
}

/// An audit event's own fields, borrowed: what the stored form is written from,
/// whether they come from an [`AuditEvent`] or straight from an ingest body.
pub(super) struct PartsOf<'a> {
    pub id: &'a str,
    pub time: &'a DateTime<Utc>,
    pub connector: Option<&'a str>,
    pub acl: Option<&'a str>,
    pub method: Option<&'a str>,
    pub user: Option<&'a str>,
    pub ip_address: Option<IpAddr>,
    pub metadata: MetadataOf<'a>,
    pub event: EventOf<'a>,
}

/// An event's metadata, borrowed.
pub(super) enum MetadataOf<'a> {
    None,
    Map(&'a Map<String, Value>),
    /// As the body reader reads it: in key order, each key once (its last value), as
    /// `serde_json`'s map keeps them.
    Entries(&'a [(Cow<'a, str>, Json<'a>)]),
}

/// An event's `event` value, borrowed: a string or a JSON value.
pub(super) enum EventOf<'a> {
    Value(&'a Value),
    Json(&'a Json<'a>),
}

impl<'a> PartsOf<'a> {
    pub(super) fn of(ev: &'a AuditEvent) -> PartsOf<'a> {
        PartsOf {
            id: &ev.id,
            time: &ev.time,
            connector: ev.connector.as_deref(),
            acl: ev.acl.as_deref(),
            method: ev.method.as_deref(),
            user: ev.user.as_deref(),
            ip_address: ev.ip_address,
            metadata: ev
                .metadata
                .as_ref()
                .map_or(MetadataOf::None, MetadataOf::Map),
            event: EventOf::Value(&ev.event),
        }
    }

    /// Writes the head: `"id":…,"time":…`.
    fn write_head(&self, head: &mut Vec<u8>) {
        head.extend_from_slice(b"\"id\":");
        string_into(head, self.id);
        head.extend_from_slice(b",\"time\":");
        time_into(head, self.time);
    }

    /// Writes the tail after the account: `,"connector":…,"event":…`.
    fn write_rest(&self, rest: &mut Vec<u8>) {
        rest.extend_from_slice(b",\"connector\":");
        opt_into(rest, self.connector);
        rest.extend_from_slice(b",\"acl\":");
        opt_into(rest, self.acl);
        rest.extend_from_slice(b",\"method\":");
        opt_into(rest, self.method);
        rest.extend_from_slice(b",\"user\":");
        opt_into(rest, self.user);
        rest.extend_from_slice(b",\"ip_address\":");
        match &self.ip_address {
            // An address's text never needs escaping.
            Some(ip) => {
                rest.push(b'"');
                ip_into(rest, ip);
                rest.push(b'"');
            }
            None => rest.extend_from_slice(b"null"),
        }
        rest.extend_from_slice(b",\"metadata\":");
        match self.metadata {
            MetadataOf::None => rest.extend_from_slice(b"null"),
            MetadataOf::Map(m) => json_into(rest, m),
            MetadataOf::Entries(entries) => {
                rest.push(b'{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        rest.push(b',');
                    }
                    string_into(rest, key);
                    rest.push(b':');
                    value.write(rest);
                }
                rest.push(b'}');
            }
        }
        rest.extend_from_slice(b",\"event\":");
        match self.event {
            EventOf::Value(v) => json_into(rest, v),
            EventOf::Json(v) => v.write(rest),
        }
    }
}

/// Writes the account's member of the tail: `"account":…`.
pub fn account_into(out: &mut Vec<u8>, account: &AccountId) {
    out.extend_from_slice(b"\"account\":");
    string_into(out, account.as_str());
}

/// Writes an audit event's stored form: the event object's fields before `host`
/// and `upload_time`, and those after.
/// `head` receives `"id":…,"time":…` and `tail` `"account":…,…,"event":…`.
pub fn audit_parts(head: &mut Vec<u8>, tail: &mut Vec<u8>, account: &AccountId, ev: &AuditEvent) {
    // Written field by field rather than through a derived `Serialize`: ingest writes
    // this for every event, and the derived form cost a struct's serialisation, a
    // brace taken off the front (a copy of the whole buffer) and a String cloned
    // for the account. The bytes are the same (a test checks it against the derived
    // form).
    let parts = PartsOf::of(ev);
    parts.write_head(head);
    account_into(tail, account);
    parts.write_rest(tail);
}

/// An audit event as ingest hands it to the store: its stored form already written
/// (all but the account, which the store adds), the hash of its id for the dedup
/// window, and its two times. One allocation an event, however many fields it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAudit {
    /// [`id_hash`] of its id.
    pub id_hash: u128,
    /// When it happened (milliseconds since the epoch).
    pub time_ms: i64,
    /// When siemsync stored it (milliseconds since the epoch).
    pub ingested_at_ms: i64,
    /// The head, then the tail after the account.
    parts: Vec<u8>,
    head_len: usize,
}

impl EncodedAudit {
    /// Written in `scratch` (the caller's, reused), then copied into a buffer of
    /// exactly its size: 10,000 events a request take no more memory than their bytes.
    pub(super) fn new(
        parts: &PartsOf<'_>,
        ingested_at: &DateTime<Utc>,
        scratch: &mut Vec<u8>,
    ) -> EncodedAudit {
        scratch.clear();
        parts.write_head(scratch);
        let head_len = scratch.len();
        parts.write_rest(scratch);
        EncodedAudit {
            id_hash: id_hash(parts.id),
            time_ms: parts.time.timestamp_millis(),
            ingested_at_ms: ingested_at.timestamp_millis(),
            parts: scratch.as_slice().into(),
            head_len,
        }
    }

    /// `"id":…,"time":…`.
    pub fn head(&self) -> &[u8] {
        &self.parts[..self.head_len]
    }

    /// The tail after `"account":…`: `,"connector":…,"event":…`.
    pub fn rest(&self) -> &[u8] {
        &self.parts[self.head_len..]
    }
}

impl From<&AuditEvent> for EncodedAudit {
    fn from(ev: &AuditEvent) -> EncodedAudit {
        EncodedAudit::new(&PartsOf::of(ev), &ev.ingested_at, &mut Vec::new())
    }
}

impl From<AuditEvent> for EncodedAudit {
    fn from(ev: AuditEvent) -> EncodedAudit {
        EncodedAudit::from(&ev)
    }
}

/// An audit event's id as the dedup window keeps it: FNV-1a, 128 bits, so that
/// distinct ids colliding is out of the question.
pub fn id_hash(id: &str) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    id.bytes()
        .fold(OFFSET, |h, b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_are_written_exactly_as_display_writes_them() {
        let mut v4: Vec<IpAddr> = (0..=255u8)
            .flat_map(|o| {
                [
                    [o, 0, 9, 10],
                    [1, o, 99, 100],
                    [255, 200, o, 7],
                    [10, 1, 0, o],
                ]
            })
            .map(IpAddr::from)
            .collect();
        v4.extend(
            [
                "::",
                "::1",
                "2001:db8::8a2e:370:7334",
                "::ffff:10.0.0.1",
                "fe80::1:0:0:1",
            ]
            .map(|s| s.parse::<IpAddr>().unwrap()),
        );
        for ip in v4 {
            let mut out = Vec::new();
            ip_into(&mut out, &ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    #[test]
    fn times_are_written_by_hand_exactly_as_chrono_serialises_them() {
        use chrono::{NaiveDate, TimeZone};
        let check = |t: DateTime<Utc>| {
            let (mut hand, mut serde) = (Vec::new(), Vec::new());
            time_into(&mut hand, &t);
            json_into(&mut serde, &t);
            assert_eq!(
                String::from_utf8(hand).unwrap(),
                String::from_utf8(serde).unwrap()
            );
        };
        // Every kind of fraction, the leap second, the ends of the years ingest takes,
        // and years chrono writes with a sign (through chrono here too).
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_nano_opt(23, 59, 59, 1_250_000_000)
            .unwrap();
        check(Utc.from_utc_datetime(&leap));
        for (y, nano) in [
            (0, 0),
            (1, 5),
            (999, 120_000_000),
            (1960, 250_000_001),
            (2026, 123_000_000),
            (2026, 123_456_000),
            (2026, 123_456_789),
            (2026, 1_000),
            (2026, 1_000_000),
            (9999, 999_999_999),
            (-1, 0),
            (10_000, 7),
        ] {
            let t = NaiveDate::from_ymd_opt(y, 12, 31)
                .unwrap()
                .and_hms_nano_opt(23, 59, 58, nano)
                .unwrap();
            check(Utc.from_utc_datetime(&t));
        }
        // And a spread over the range: milliseconds, microseconds, nanoseconds.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 253_402_300_800) as i64 - 62_167_219_200; // years 0..=9999
            let nano = match x % 4 {
                0 => 0,
                1 => (x >> 20) as u32 % 1000 * 1_000_000,
                2 => (x >> 20) as u32 % 1_000_000 * 1_000,
                _ => (x >> 20) as u32 % 1_000_000_000,
            };
            check(DateTime::from_timestamp(secs, nano).unwrap());
        }
    }

    /// The stored form as the derived `Serialize` wrote it before ingest wrote it
    /// field by field: the bytes already stored (and delivered) are these.
    #[derive(Serialize)]
    struct DerivedHead<'a> {
        id: &'a str,
        time: &'a DateTime<Utc>,
    }

    #[derive(Serialize)]
    struct DerivedTail<'a> {
        account: &'a AccountId,
        connector: &'a Option<String>,
        acl: &'a Option<String>,
        method: &'a Option<String>,
        user: &'a Option<String>,
        ip_address: &'a Option<IpAddr>,
        metadata: &'a Option<Map<String, Value>>,
        event: &'a Value,
    }

    fn derived(account: &AccountId, ev: &AuditEvent) -> (String, String) {
        let strip = |v: Vec<u8>| {
            let s = String::from_utf8(v).unwrap();
            s[1..s.len() - 1].to_owned()
        };
        let head = serde_json::to_vec(&DerivedHead {
            id: &ev.id,
            time: &ev.time,
        })
        .unwrap();
        let tail = serde_json::to_vec(&DerivedTail {
            account,
            connector: &ev.connector,
            acl: &ev.acl,
            method: &ev.method,
            user: &ev.user,
            ip_address: &ev.ip_address,
            metadata: &ev.metadata,
            event: &ev.event,
        })
        .unwrap();
        (strip(head), strip(tail))
    }

    #[test]
    fn the_stored_form_is_byte_for_byte_what_the_derived_serialisation_wrote() {
        let account = AccountId::parse("acct-1.x").unwrap();
        let now = Utc::now();
        let bodies = [
            json!({"id": "e1", "time": "2026-11-25T10:00:00.123+01:00", "connector": "c-1",
                "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
                "metadata": {"z": [1, 2.5, -3, null, true], "a": {"k": "v\"q\\"}, "é": "\u{1}"},
                "event": "Restore started"}),
            json!({"time": "2026-11-25T10:00:00Z", "event": {"what": "x\n\ty", "n": 1e300}}),
            json!({"id": "quote\" back\\slash \u{7f} \u{2028} ü 😀", "time": "1960-01-01T00:00:00.250000001Z",
                "user": "\u{0}\u{1f}", "ip": "2001:db8::1", "metadata": {}, "event": "ctl \u{8}\u{c}"}),
            json!({"id": "e4", "time": "2016-12-31T23:59:60Z", "ip": "::ffff:192.0.2.1",
                "acl": "", "method": "get", "event": {"nested": {"deep": [[]]}}}),
        ];
        for (i, body) in bodies.iter().enumerate() {
            let ev = AuditEvent::from_json(body, i, now).unwrap();
            let (mut head, mut tail) = (b"prefix".to_vec(), Vec::new());
            head.clear();
            audit_parts(&mut head, &mut tail, &account, &ev);
            let (want_head, want_tail) = derived(&account, &ev);
            assert_eq!(String::from_utf8(head).unwrap(), want_head, "item {i}");
            assert_eq!(String::from_utf8(tail).unwrap(), want_tail, "item {i}");
        }
    }

    /// The body reader writes the stored form straight from the body: byte for byte
    /// what the field reader's events write (and so what was stored and delivered
    /// before), over bodies with escapes, non-ASCII, nested metadata, numbers at
    /// their edges and repeated keys.
    #[test]
    fn the_body_reader_stores_byte_for_byte_what_the_field_reader_stores() {
        let account = AccountId::parse("acct-1.x").unwrap();
        let now = Utc::now();
        let items = [
            r#"{"id": "e1", "time": "2026-11-25T10:00:00.123+01:00", "connector": "c-1",
                "acl": "admin", "method": "POST", "user": "ann@example.com", "ip": "192.0.2.7",
                "metadata": {"target": "mailbox", "n": 17}, "event": "Restore started"}"#,
            r#"{"id": "esc\"aped\\ \u00e9 \ud83d\ude00 \u0001 \/", "time": "2026-11-25T10:00:00Z",
                "user": "ü\u2028\t", "acl": "", "method": "get", "ip": "::ffff:192.0.2.1",
                "event": "line\nbreak \"quoted\" é 😀 \u007f"}"#,
            r#"{"id": "n", "time": "2026-11-25T10:00:00Z", "event": "x",
                "metadata": {"z": 1e300, "a": -0, "m": 1.0, "b": -0.0, "c": 0.1, "d": 1e-7,
                "e": 18446744073709551615, "f": -9223372036854775808, "g": 12345678901234567890123,
                "h": 2.5E+3, "i": 100, "j": -1, "k": 1.7976931348623157e308, "l": 5e-324}}"#,
            r#"{"id": "dup", "time": "2026-11-25T10:00:00Z", "event": {"k": 1, "k": "again"},
                "metadata": {"k": 1, "a": [1], "k": {"x": 1, "x": 2}, "a": null, "k": "last",
                "b": true, "b": false, "c": 1, "c": {"n": [{"q": 1, "q": 2}]}}}"#,
            r#"{"id": "keys", "time": "2026-11-25T10:00:00Z", "event": "x",
                "metadata": {"B": 1, "\u0041": 2, "é": 3, "\u00e9": 4, "e": 5, "": 6, "a\"b": 7,
                "😀": 8, "\uffff": 9, "~": 10, "A": 11}}"#,
            r#"{"id": "nest", "time": "1960-01-01T00:00:00.250000001Z", "event": {"nested":
                {"deep": [[], {}, [{"a": [null, true, 1.5, "s\u0000"]}]]}, "z": 1, "a": 2},
                "metadata": {"tree": {"z": [1, {"y": {}}], "a": "\b\f\r"}, "list": [3, 2, 1],
                "empty": {}, "none": null}}"#,
            r#"{"time": "2016-12-31T23:59:60Z", "event": "no id", "metadata": {}}"#,
            r#"{"id": "nulls", "time": "2026-11-25T10:00:00Z", "connector": null, "acl": null,
                "method": null, "user": null, "ip": null, "metadata": null, "event": "x"}"#,
        ];
        let body = format!("[{}]", items.join(","));
        let read = AuditEvent::read_body(body.as_bytes(), now).unwrap();
        let values: Vec<Value> = serde_json::from_str(&body).unwrap();
        assert_eq!(read.len(), values.len());
        for (i, (enc, value)) in read.iter().zip(&values).enumerate() {
            let mut ev = AuditEvent::from_json(value, i, now).unwrap();
            if value.get("id").is_none() {
                // Made up by the service: the one the body reader made.
                let head = std::str::from_utf8(enc.head()).unwrap();
                ev.id = head[6..42].to_owned();
            }
            let (want_head, want_tail) = derived(&account, &ev);
            let mut tail = Vec::new();
            account_into(&mut tail, &account);
            tail.extend_from_slice(enc.rest());
            assert_eq!(
                std::str::from_utf8(enc.head()).unwrap(),
                want_head,
                "item {i}"
            );
            assert_eq!(String::from_utf8(tail).unwrap(), want_tail, "item {i}");
            assert_eq!(enc, &EncodedAudit::from(&ev), "item {i}");
            assert_eq!(enc.id_hash, id_hash(&ev.id), "item {i}");
        }
    }
}
