//! "Test connection": the health endpoint says whether HEC is up, but not whether
//! the token works, so the check also posts one clearly marked test event — and
//! tells the customer, in their words, which step failed and what to do.

use super::client::{Health, HecClient};
use super::encode::{self, Envelope};
use super::response::Outcome;
use crate::model::Integration;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One step of the check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Step {
    /// `connection`, `health` or `token`.
    pub check: String,
    /// Whether this step passed.
    pub ok: bool,
    /// What it found, or what to fix, in the customer's words.
    pub message: String,
}

/// What a connection test found; also kept in the integration's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionReport {
    /// Every step passed: events will reach Splunk.
    pub ok: bool,
    /// When the test ran; the status shows how old the report is.
    pub checked_at: DateTime<Utc>,
    /// The one sentence to show: what works, or what to fix first.
    pub summary: String,
    /// The steps run, in order; none after the connection failed.
    pub steps: Vec<Step>,
}

fn step(check: &str, ok: bool, message: impl Into<String>) -> Step {
    Step {
        check: check.to_owned(),
        ok,
        message: message.into(),
    }
}

/// Runs the check against the integration's Splunk now.
pub async fn check_connection(
    client: &HecClient,
    it: &Integration,
    host: &str,
) -> ConnectionReport {
    let mut steps = Vec::new();
    match client.health().await {
        Health::Unreachable(outcome) => {
            let f = outcome.failure().cloned().unwrap_or_default();
            steps.push(step(
                "connection",
                false,
                format!("{} ({})", f.advice, f.text),
            ));
            return finish(steps);
        }
        Health::Answered { status, code, text } => {
            steps.push(step(
                "connection",
                true,
                format!("{} answered.", it.hec_uri()),
            ));
            steps.push(match (status, code) {
                (200, _) => step("health", true, "Splunk's HTTP Event Collector is up and healthy."),
                (503, _) => step(
                    "health",
                    false,
                    format!("Splunk's HTTP Event Collector is up but unhealthy: {text}. Splunk may be overloaded; raise queueSize (50MB recommended)."),
                ),
                (404, _) => step(
                    "health",
                    false,
                    "The server answered, but has no HTTP Event Collector at this address (404): check the port (usually 8088) and path of the HEC URI, and that HEC is enabled in Splunk's Global Settings.",
                ),
                _ => step("health", false, format!("The health endpoint answered HTTP {status}: {text}.")),
            });
        }
    }
    let mut body = Vec::new();
    let env = Envelope {
        host: host.to_owned(),
        index: it.index.clone(),
    };
    encode::test_event(
        &mut body,
        &env,
        &it.account,
        &it.id.to_string(),
        &it.name,
        &Utc::now(),
    );
    steps.push(match client.post_events(body.into()).await {
        // The classifier says so when acknowledgement is asked for and no ack id came.
        Outcome::Unconfirmed(_) => step(
            "token",
            false,
            "Splunk accepted the test event but did not return an acknowledgement id: indexer acknowledgement is off on this token. Turn it on in Splunk, or turn it off here.",
        ),
        Outcome::Delivered { .. } => step(
            "token",
            true,
            "Splunk accepted a test event with this token (source siemsync:test).",
        ),
        other => {
            let f = other.failure().cloned().unwrap_or_default();
            let detail = match (f.http_status, f.code) {
                (Some(s), Some(c)) => format!(" (Splunk said: {} — HTTP {s}, code {c})", f.text),
                (Some(s), None) => format!(" (HTTP {s})"),
                _ => format!(" ({})", f.text),
            };
            step("token", false, format!("{}{detail}", f.advice))
        }
    });
    finish(steps)
}

fn finish(steps: Vec<Step>) -> ConnectionReport {
    let ok = steps.iter().all(|s| s.ok);
    let summary = match steps.iter().find(|s| !s.ok) {
        None => {
            "The connection works: Splunk is healthy and accepted a test event with this token."
                .to_owned()
        }
        Some(s) => s.message.clone(),
    };
    ConnectionReport {
        ok,
        checked_at: Utc::now(),
        summary,
        steps,
    }
}
