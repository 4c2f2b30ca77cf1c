//! Answers a caller needs before committing to anything: settings tested before they
//! are saved (`POST …/integrations/test`), and how many events a replay window holds
//! before it is started (`GET …/integrations/{id}/replay/preview`).

use super::auth::Caller;
use super::errors::ApiError;
use super::integrations::{
    api_managed, check_destination, lookup, replay_request, require_feature, run_test,
};
use super::{account_of, duplicates, read_body, AppState};
use crate::actors::messages::CountReplay;
use crate::hec::check::ConnectionReport;
use crate::model::fields::parse_object;
use crate::model::{AccountId, Integration, IntegrationChange, Source};
use actix_web::{web, HttpResponse};
use chrono::DateTime;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// The integration a test body describes: a new one, or (with `"id"`) a saved one
/// with the body's changes, PATCH-style. A saved token is used only on the server it
/// was entered for: a new scheme, host or port needs `hec_token` in the same body.
fn described(state: &AppState, account: &AccountId, v: &Value) -> Result<Integration, ApiError> {
    let change = IntegrationChange::from_json(v)?;
    let Some(id) = v.get("id").filter(|id| !id.is_null()) else {
        require_feature(state, account)?;
        return Ok(change.create(account.clone(), Utc::now(), state.policy())?);
    };
    let id = id
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| {
            ApiError::bad_request("`id` must be the id of one of the account's integrations")
        })?;
    let old = state
        .store
        .integration(account, &id)?
        .ok_or_else(|| ApiError::not_found("integration"))?;
    api_managed(&old)?;
    // `apply` refuses a new destination without the token (it goes only where it was entered for).
    Ok(change.apply(&old, Utc::now(), state.policy())?)
}

/// The report of settings tested before saving.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SettingsReport {
    /// The connection test's report.
    #[serde(flatten)]
    pub report: ConnectionReport,
    /// Warnings about the settings (another integration already sends there).
    pub warnings: Vec<duplicates::Warning>,
}

/// Retained events per source, of the sources asked for.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceCounts {
    /// Audit events (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<u64>,
    /// Job snapshots (only when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
}

/// How many retained events a replay window holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"from": "2026-11-25T09:00:00Z", "to": "2026-11-25T10:00:00Z",
    "counts": {"audit": 120, "jobs": 4}, "total": 124}))]
pub struct ReplayPreview {
    /// The window's first instant.
    pub from: DateTime<Utc>,
    /// Its last instant.
    pub to: DateTime<Utc>,
    /// Per source.
    pub counts: SourceCounts,
    /// In all.
    pub total: u64,
}

/// `…/replay/preview?from=&to=&sources=`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Read by the handler as raw pairs, to refuse repeated keys.
pub struct PreviewQuery {
    /// The window's first instant (RFC 3339).
    from: DateTime<Utc>,
    /// Its last instant.
    to: DateTime<Utc>,
    /// Comma-separated: `audit`, `jobs` (default: the integration's).
    sources: Option<String>,
}

/// `POST …/integrations/test`: tests settings without storing them.
#[utoipa::path(post, path = "/api/v1/accounts/{account}/integrations/test", operation_id = "testSettings", tag = "integrations",
    params(super::AccountPath), security(("admin" = []), ("account" = [])),
    request_body(content = super::bodies::TestSettingsBody),
    responses((status = 200, description = "The connection test's report, and warnings; nothing is stored", body = SettingsReport),
        (status = 403, description = "A new integration on an account whose SIEM feature is off", body = super::errors::ErrorBody),
        (status = 409, description = "`id` names an integration declared in the config file", body = super::errors::ErrorBody)))]
/// The body is a
/// create body, or `{"id", …changes}` for a saved integration. Answers the connection
/// test report with `warnings` (another integration already sends there).
pub async fn test_settings(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let account = account_of(&path)?;
    caller.require_account(&account)?;
    let body = read_body(body, &state.config).await?;
    let it = described(&state, &account, &parse_object(&body)?)?;
    check_destination(&state, &it).await?;
    let report = run_test(&state.config, &it).await;
    let all = state.store.integrations_of(&account)?;
    Ok(HttpResponse::Ok().json(SettingsReport {
        report,
        warnings: duplicates::warnings(&all, &it),
    }))
}

#[utoipa::path(get, path = "/api/v1/accounts/{account}/integrations/{id}/replay/preview", operation_id = "replayPreview", tag = "replay",
    params(super::IntegrationPath, PreviewQuery), security(("admin" = []), ("account" = [])),
    responses((status = 200, description = "The retained events of the window", body = ReplayPreview)))]
/// `GET …/integrations/{id}/replay/preview?from=…&to=…&sources=audit,jobs`: the
/// retained events a replay of that window would re-send, per source, before any is.
pub async fn replay_preview(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    query: web::Query<Vec<(String, String)>>,
) -> Result<HttpResponse, ApiError> {
    let it = lookup(&state, &caller, &path)?;
    // The same reading as a replay's body, so both refuse the same mistakes.
    let mut body = Map::new();
    for (key, value) in query.into_inner() {
        let value = match key.as_str() {
            "sources" => json!(value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()),
            _ => json!(value),
        };
        if body.insert(key.clone(), value).is_some() {
            return Err(ApiError::bad_request(format!("`{key}` is given twice")));
        }
    }
    let (window, sources) = replay_request(&it, &Value::Object(body))?;
    let counts = state
        .supervisor
        .send(CountReplay {
            account: it.account.clone(),
            window,
            sources,
        })
        .await??;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let of = |wanted: Source| counts.iter().find(|(s, _)| *s == wanted).map(|(_, n)| *n);
    Ok(HttpResponse::Ok().json(ReplayPreview {
        from: window.from,
        to: window.to,
        counts: SourceCounts {
            audit: of(Source::Audit),
            jobs: of(Source::Jobs),
        },
        total,
    }))
}
