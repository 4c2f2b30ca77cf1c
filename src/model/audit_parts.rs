//! An audit event's stored form: the parts of its HEC event object that depend
//! neither on the integration nor on the moment of delivery, encoded once when the
//! event is ingested, so that delivering it is copying bytes. The store keeps these
//! parts; the HEC encoder (`hec::encode::AuditFrame`) completes them per post.
//!
//! The field names are the product's contract with the customer's Splunk (the
//! README's "What Splunk receives"), which is why they live with the event.

use super::{AccountId, AuditEvent};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The audit event object's fields before `host` and `upload_time`.
#[derive(Serialize)]
struct AuditHead<'a> {
    id: &'a str,
    time: &'a DateTime<Utc>,
}

/// The audit event object's fields after `upload_time`.
#[derive(Serialize)]
struct AuditTail<'a> {
    account: &'a AccountId,
    connector: &'a Option<String>,
    acl: &'a Option<String>,
    method: &'a Option<String>,
    user: &'a Option<String>,
    ip_address: &'a Option<IpAddr>,
    metadata: &'a Option<Map<String, Value>>,
    event: &'a Value,
}

fn json_into(out: &mut Vec<u8>, v: &impl Serialize) {
    // Serialising borrowed plain data into a Vec cannot fail.
    serde_json::to_writer(&mut *out, v).expect("serialising an event");
}

/// Writes the JSON object `v` without its braces: a run of fields to splice.
fn fields_into(out: &mut Vec<u8>, v: &impl Serialize) {
    let start = out.len();
    json_into(out, v);
    debug_assert!(out[start] == b'{' && out.last() == Some(&b'}'));
    out.pop();
    out.remove(start);
}

/// Writes an audit event's stored form: the event object's fields before `host`
/// and `upload_time`, and those after.
/// `head` receives `"id":…,"time":…` and `tail` `"account":…,…,"event":…`.
pub fn audit_parts(head: &mut Vec<u8>, tail: &mut Vec<u8>, account: &AccountId, ev: &AuditEvent) {
    fields_into(
        head,
        &AuditHead {
            id: &ev.id,
            time: &ev.time,
        },
    );
    fields_into(
        tail,
        &AuditTail {
            account,
            connector: &ev.connector,
            acl: &ev.acl,
            method: &ev.method,
            user: &ev.user,
            ip_address: &ev.ip_address,
            metadata: &ev.metadata,
            event: &ev.event,
        },
    );
}
