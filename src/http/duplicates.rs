//! The warning that another integration of the same account already sends the same
//! data to the same collector with the same token: while both are enabled, Splunk
//! receives those events twice. Computed here, since tokens never reach a caller.

use crate::model::integration::IntegrationView;
use crate::model::Integration;
use serde::Serialize;
use uuid::Uuid;

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WarningKind {
    /// Another integration sends the same data to the same collector with the same token.
    Duplicate,
}

/// Another integration a warning names.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NamedIntegration {
    /// Its id.
    pub id: Uuid,
    /// Its name.
    pub name: String,
}

/// A warning about an integration's settings: saved all the same.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Warning {
    /// What it is about.
    pub kind: WarningKind,
    /// What is wrong and what to do, in the customer's words.
    pub message: String,
    /// The other integrations concerned.
    pub integrations: Vec<NamedIntegration>,
}

/// An integration as the API answers it (create, read, list, replace, change).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "9f0c2d4e-8b1a-4c3d-a5e6-7f8091a2b3c4", "account": "acme",
    "name": "Main Splunk", "hec_token": "****9012", "hec_uri": "https://splunk.example.com:8088",
    "sources": ["audit", "jobs"], "enabled": true, "index": null, "tls_verify": true,
    "ca_pem": null, "indexer_ack": false, "gzip": true, "managed_by": "api",
    "created_at": "2026-11-25T09:51:00Z", "updated_at": "2026-11-25T09:51:00Z", "version": 1,
    "warnings": []}))]
pub struct IntegrationAnswer {
    /// The integration.
    #[serde(flatten)]
    pub integration: IntegrationView,
    /// Warnings about its settings (another integration already sends there).
    pub warnings: Vec<Warning>,
}

/// The warnings about `it` among the account's integrations (`all` may include `it`).
pub fn warnings(all: &[Integration], it: &Integration) -> Vec<Warning> {
    let uri = &it.hec_uri;
    let same: Vec<&Integration> = all
        .iter()
        .filter(|o| {
            o.id != it.id
                && o.account == it.account
                && o.hec_token == it.hec_token
                && o.sources.iter().any(|s| it.wants(*s))
                && o.hec_uri.same_collector(uri)
        })
        .collect();
    if same.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = same.iter().map(|o| format!("{:?}", o.name)).collect();
    let who = match names.as_slice() {
        [one] => format!("The integration {one}"),
        many => format!("The integrations {}", many.join(", ")),
    };
    let verb = if same.len() == 1 { "sends" } else { "send" };
    vec![Warning {
        kind: WarningKind::Duplicate,
        message: format!("{who} of this account already {verb} to this HEC URI with this token: while both are enabled, Splunk receives the same events twice. Delete or disable one of them, or use another token."),
        integrations: same
            .iter()
            .map(|o| NamedIntegration {
                id: o.id,
                name: o.name.clone(),
            })
            .collect(),
    }]
}

/// An integration's API view, with its `warnings`.
pub fn view(all: &[Integration], it: &Integration) -> IntegrationAnswer {
    IntegrationAnswer {
        integration: it.to_view(),
        warnings: warnings(all, it),
    }
}
