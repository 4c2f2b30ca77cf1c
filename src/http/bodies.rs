//! The request bodies of the API, as the OpenAPI document describes them.
//!
//! Bodies are read field by field by the model's readers (`model::fields`), so that
//! every refusal names the array index and the field; these types describe what those
//! readers take, for the document only. Rules the readers check beyond JSON Schema
//! (a HEC URI's shape, a PEM bundle, a time RFC 3339 can write in UTC) are in the
//! field descriptions. `scripts/contract.sh` holds them to the readers: schemathesis
//! sends the examples and data generated from these schemas (and data that breaks
//! them) to a live service, and fails on a body these types refuse that the service
//! takes, or one they allow that it answers with anything but a documented status.

use crate::model::job::JOB_STATUSES;
use crate::model::{AccountId, Source};
use chrono::{DateTime, Utc};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::ToSchema;
use uuid::Uuid;

/// `PUT /api/v1/accounts/{account}`: the SIEM feature switch and the account's own
/// ingest rate and backlog quota. A limit left out stays as it is; `null` returns to
/// the operator's default.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"siem_enabled": true}))]
pub struct AccountBody {
    /// On: the account's enabled integrations run. Off: they stop.
    pub siem_enabled: bool,
    /// Events per second the account may post (1–1,000,000,000); `null`: the default.
    #[schema(minimum = 1, maximum = 1_000_000_000_u64)]
    pub ingest_events_per_sec: Option<u64>,
    /// Events the account may post at once after a quiet period (1–1,000,000,000,000);
    /// `null`: the default.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    pub ingest_burst: Option<u64>,
    /// Bytes of stored events the account may hold before its oldest undelivered ones
    /// are dropped (65,536–1,125,899,906,842,624); `null`: the default.
    #[schema(minimum = 65_536_u64, maximum = 1_125_899_906_842_624_u64)]
    pub max_backlog_bytes: Option<u64>,
}

/// `POST …/tokens`: a name to tell the token apart by (the body may be empty).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "acme's SIEM admins"}))]
pub struct TokenBody {
    /// At most 100 characters, not only spaces.
    #[schema(max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
}

/// The `event` of an audit event: a non-empty string or a non-empty object.
fn event_schema() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1)),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .min_properties(Some(1)),
        )
        .into()
}

/// One audit event of the platform, as posted (`time` and `event` required).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventBody {
    /// Unique within the account: an id repeated within the account's last
    /// `dedup_window` events is ignored (a retry). One is made when missing.
    #[schema(min_length = 1, max_length = 128)]
    pub id: Option<String>,
    /// When it happened: RFC 3339, in the years 0000–9999 once converted to UTC.
    pub time: DateTime<Utc>,
    /// The connector it concerns (an identifier).
    pub connector: Option<AccountId>,
    /// The access level used.
    pub acl: Option<String>,
    /// The HTTP method or action used.
    pub method: Option<String>,
    /// Who did it.
    pub user: Option<String>,
    /// From where: an IPv4 or IPv6 address.
    pub ip: Option<String>,
    /// Anything else about it.
    pub metadata: Option<std::collections::HashMap<String, serde_json::Value>>,
    /// What happened.
    #[schema(schema_with = event_schema)]
    pub event: serde_json::Value,
}

/// A job's state, as the platform reports it: one of the words the job reader takes
/// ([`JOB_STATUSES`]), so that the document and the reader keep one list.
fn job_status_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A job's state, as the platform reports it."))
        .enum_values(Some(JOB_STATUSES))
        .into()
}

/// One snapshot of a backup, restore or export job (`job`, `type`, `status` required).
/// A newer snapshot of the job replaces the older one.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSnapshotBody {
    /// The job (an identifier).
    pub job: AccountId,
    /// The connector it runs for (an identifier).
    pub connector: Option<AccountId>,
    /// When it was scheduled (RFC 3339).
    pub scheduled: Option<DateTime<Utc>>,
    /// When it was planned to start.
    pub planned_start: Option<DateTime<Utc>>,
    /// When it started.
    pub start_time: Option<DateTime<Utc>>,
    /// When it was paused.
    pub paused: Option<DateTime<Utc>>,
    /// When it ended.
    pub end_time: Option<DateTime<Utc>>,
    /// What it does.
    pub description: Option<String>,
    /// How far it is, from 0 to 1.
    #[schema(minimum = 0, maximum = 1)]
    pub progress: Option<f64>,
    /// Its state.
    #[schema(schema_with = job_status_schema)]
    pub status: String,
    /// What kind of job (backup, restore, export…); not only spaces.
    #[serde(rename = "type")]
    #[schema(pattern = r"\S")]
    pub job_type: String,
    /// Who started it.
    pub user: Option<String>,
}

/// An integration's settings: the product page's fields (name, HEC token, HEC URI,
/// data sources, Enable) and the advanced ones. Create needs `name`, `hec_token`,
/// `hec_uri` and `sources`; `PUT` needs the same but may leave out `hec_token` to keep
/// the stored one; `PATCH` changes only the fields it names. A change of the URI's
/// scheme, host or port needs `hec_token` in the same body. `id`, `account`,
/// `managed_by`, `created_at`, `updated_at` and `version` may be echoed back from a
/// read and are ignored.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Main Splunk",
    "hec_token": "12345678-1234-1234-1234-123456789012",
    "hec_uri": "https://splunk.example.com:8088",
    "sources": ["audit", "jobs"],
    "enabled": true
}))]
pub struct IntegrationBody {
    /// 1–100 characters, not only spaces.
    #[schema(max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    /// The HEC token from Splunk, without spaces (at most 256 characters). Write-only:
    /// answers show `****` and its last 4 characters.
    #[schema(min_length = 1, max_length = 256, pattern = r"^\S+$")]
    pub hec_token: Option<String>,
    /// The Splunk HEC: `https://host:8088`, or with `/services/collector` or
    /// `/services/collector/event`; not `/raw`. Only public addresses unless the
    /// operator allows private ones.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub hec_uri: Option<String>,
    /// Which data to send: at least one of `audit` and `jobs` (a repeat counts once).
    #[schema(min_items = 1)]
    pub sources: Option<Vec<Source>>,
    /// The Enable toggle (false when created without it).
    pub enabled: Option<bool>,
    /// The Splunk index (lowercase letters, digits, `_` and `-`; at most 80); `null`:
    /// the token's default.
    #[schema(max_length = 80, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    pub index: Option<String>,
    /// Check Splunk's certificate (default true; false only where the operator allows it).
    pub tls_verify: Option<bool>,
    /// A PEM bundle of CA certificates for a Splunk with a private CA; `null` clears it.
    pub ca_pem: Option<String>,
    /// Indexer acknowledgement (default false): delivered only once Splunk indexed it.
    pub indexer_ack: Option<bool>,
    /// Compress posts with gzip (default true).
    pub gzip: Option<bool>,
    /// Read-only, as a read answers it: any value is ignored.
    pub id: Option<serde_json::Value>,
    /// Read-only: any value is ignored.
    pub account: Option<serde_json::Value>,
    /// Read-only: any value is ignored.
    pub managed_by: Option<serde_json::Value>,
    /// Read-only: any value is ignored.
    pub created_at: Option<serde_json::Value>,
    /// Read-only: any value is ignored.
    pub updated_at: Option<serde_json::Value>,
    /// Read-only: any value is ignored.
    pub version: Option<serde_json::Value>,
}

/// `POST …/integrations/test`: settings to test before saving: a create body, or
/// with `id` a saved integration's changes (PATCH-style).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Main Splunk",
    "hec_token": "12345678-1234-1234-1234-123456789012",
    "hec_uri": "https://splunk.example.com:8088",
    "sources": ["audit", "jobs"]
}))]
pub struct TestSettingsBody {
    /// A saved integration whose settings, changed by the rest of the body, are tested.
    pub id: Option<Uuid>,
    /// The integration's name, as in a create body.
    #[schema(max_length = 100, pattern = r"\S")]
    pub name: Option<String>,
    /// The HEC token (needed with a new scheme, host or port of a saved one).
    #[schema(min_length = 1, max_length = 256, pattern = r"^\S+$")]
    pub hec_token: Option<String>,
    /// The HEC URI: `https://host[:port]`.
    #[schema(pattern = "^[hH][tT][tT][pP][sS]?://")]
    pub hec_uri: Option<String>,
    /// Which data sources it sends: `audit`, `jobs`.
    #[schema(min_items = 1)]
    pub sources: Option<Vec<Source>>,
    /// The Enable toggle.
    pub enabled: Option<bool>,
    /// The Splunk index to write to (left out: the token's default).
    #[schema(max_length = 80, pattern = "^[a-z0-9][a-z0-9_-]*$")]
    pub index: Option<String>,
    /// Check Splunk's certificate.
    pub tls_verify: Option<bool>,
    /// A PEM bundle of CA certificates for a private CA.
    pub ca_pem: Option<String>,
    /// Indexer acknowledgement.
    pub indexer_ack: Option<bool>,
    /// Compress posts with gzip.
    pub gzip: Option<bool>,
}

/// `POST …/replay`: the window to re-send (`from` not after `to`), and the sources
/// (the integration's own when left out; only sources it sends).
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "from": "2026-11-25T09:00:00Z",
    "to": "2026-11-25T10:00:00Z",
    "sources": ["audit"]
}))]
pub struct ReplayBody {
    /// The window's first instant (RFC 3339).
    pub from: DateTime<Utc>,
    /// The window's last instant.
    pub to: DateTime<Utc>,
    /// Which sources to re-send.
    #[schema(min_items = 1)]
    pub sources: Option<Vec<Source>>,
}
