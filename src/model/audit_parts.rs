//! An audit event's stored form: the parts of its HEC event object that depend
//! neither on the integration nor on the moment of delivery, encoded once when the
//! event is ingested, so that delivering it is copying bytes. The store keeps these
//! parts; the HEC encoder (`hec::encode::AuditFrame`) completes them per post.
//!
//! The field names are the product's contract with the customer's Splunk (the
//! README's "What Splunk receives"), which is why they live with the event.

use super::{AccountId, AuditEvent};
use serde::Serialize;

/// Writes `s` as a JSON string, escaped exactly as `serde_json` escapes it.
fn string_into(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    serde_json::to_writer(&mut *out, s).expect("serialising a string");
}

/// Writes an optional string: `null` when absent (the README: a missing optional
/// value is `null`, not absent).
fn opt_into(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => string_into(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_into(out: &mut Vec<u8>, v: &impl Serialize) {
    // Serialising borrowed plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("serialising an event");
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
    head.extend_from_slice(b"\"id\":");
    string_into(head, &ev.id);
    head.extend_from_slice(b",\"time\":");
    json_into(head, &ev.time);
    tail.extend_from_slice(b"\"account\":");
    string_into(tail, account.as_str());
    tail.extend_from_slice(b",\"connector\":");
    opt_into(tail, &ev.connector);
    tail.extend_from_slice(b",\"acl\":");
    opt_into(tail, &ev.acl);
    tail.extend_from_slice(b",\"method\":");
    opt_into(tail, &ev.method);
    tail.extend_from_slice(b",\"user\":");
    opt_into(tail, &ev.user);
    tail.extend_from_slice(b",\"ip_address\":");
    match &ev.ip_address {
        // An address's text never needs escaping.
        Some(ip) => {
            use std::io::Write;
            // Writing into a Vec cannot fail.
            write!(tail, "\"{ip}\"").expect("writing an address");
        }
        None => tail.extend_from_slice(b"null"),
    }
    tail.extend_from_slice(b",\"metadata\":");
    match &ev.metadata {
        Some(m) => json_into(tail, m),
        None => tail.extend_from_slice(b"null"),
    }
    tail.extend_from_slice(b",\"event\":");
    json_into(tail, &ev.event);
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::{json, Map, Value};
    use std::net::IpAddr;

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
}
