//! Why a delivery did not go through, in the words the status API shows: shared by
//! the HEC answer classifier that makes it, the store that keeps it (dead letters)
//! and the API that shows it.

use serde::{Deserialize, Serialize};

/// Why a post did not deliver, as the status API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Failure {
    /// HTTP status, when Splunk answered at all.
    pub http_status: Option<u16>,
    /// HEC's `code`, when the body carried one.
    pub code: Option<i64>,
    /// Splunk's own `text`, or the transport error.
    pub text: String,
    /// What to do about it, in the customer's words.
    pub advice: String,
}

/// Whether a failure clears by itself or needs the customer: the status says
/// "retrying" (Splunk busy or unreachable, nothing to do) or "needs action" (token,
/// URI, index, acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// Retried with back-off; nothing for the customer to do.
    Transient,
    /// The customer must change something in Splunk or in the integration.
    Configuration,
}
