//! The Control and Ingest API (actix-web), in the same process as the actors.
//!
//! `configure` mounts every route; `siemsync::start` builds the server around it.
//! Tests reach it over HTTP only, as the platform and the page do: the end-to-end
//! suite (`tests/suite`, harness `tests/suite/common.rs`) starts the service on
//! port 0, mostly in-process (`testkit::service::InProcess`: `siemsync::start` on
//! a thread with its own actix System), and as the real binary
//! (`testkit::service::spawn_process`) only where a signal, SIGKILL, the log or
//! the process itself is the point.

pub mod accounts;
pub mod auth;
pub mod checks;
pub mod duplicates;
pub mod errors;
pub mod history;
pub mod ingest;
pub mod integrations;
pub mod metrics;
pub mod status;
pub mod tokens;
pub mod ui;

use crate::actors::Supervisor;
use crate::config::Config;
use crate::model::{AccountId, IntegrationPolicy};
use crate::store::Store;
use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use errors::ApiError;
use serde_json::json;
use std::sync::Arc;

/// What every handler can reach.
pub struct AppState {
    /// The store every answer is read from and every change written to.
    pub store: Store,
    /// The Supervisor, told of every change and asked about the actors.
    pub supervisor: Addr<Supervisor>,
    /// The service's settings.
    pub config: Arc<Config>,
    /// The metrics `/metrics` shows.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Each account's ingest rate bucket.
    pub ingest_limits: Arc<crate::ingest_limit::IngestLimits>,
}

impl AppState {
    /// What the operator's config allows integrations to ask for.
    pub fn policy(&self) -> IntegrationPolicy {
        IntegrationPolicy {
            allow_insecure_tls: self.config.allow_insecure_tls,
        }
    }
}

/// Reads a request body up to the configured size, within the configured time:
/// larger ones get 413, and a client that stalls gets 408 and loses its connection,
/// so that stuck clients cannot hold connections for ever.
pub async fn read_body(payload: web::Payload, config: &Config) -> Result<Bytes, ApiError> {
    let limit = config.max_body_bytes;
    let timeout = config.body_timeout_secs.get();
    match actix_web::rt::time::timeout(timeout, payload.to_bytes_limited(limit)).await {
        Ok(Ok(Ok(b))) => Ok(b),
        Ok(Ok(Err(e))) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes; send fewer events per request"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} seconds (body_timeout_secs); send it at once",
                config.body_timeout_secs
            ),
        )),
    }
}

/// Headers on every answer: nothing the API says (a new account token above all)
/// may be kept by a cache or a browser, nor read as anything but its content type.
/// The page's own files set their `Cache-Control`, which this leaves alone.
pub fn security_headers() -> actix_web::middleware::DefaultHeaders {
    actix_web::middleware::DefaultHeaders::new()
        .add((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
}

/// A route for GET that answers HEAD too (actix-web sends HEAD the headers alone).
pub fn get_or_head() -> actix_web::Route {
    use actix_web::guard;
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The `{account}` path segment, validated.
pub fn account_of(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "`account` in the path is not a valid identifier: {e}"
        ))
    })
}

/// Up, and able to store: 503 with the reason while the store cannot take writes.
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.fault() {
        None => HttpResponse::Ok().json(json!({"status": "ok"})),
        Some(reason) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "degraded",
            "storage": format!("siemsync cannot write to its store: {reason}"),
        })),
    }
}

async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the HTTP contract in the README",
    ))
}

/// Routes only test builds have.
fn test_hooks(_cfg: &mut web::ServiceConfig) {
    #[cfg(feature = "test-hooks")]
    _cfg.route(
        "/integrations/{id}/_panic",
        web::post().to(integrations::force_panic),
    )
    .route(
        "/integrations/{id}/_stall",
        web::post().to(integrations::force_stall),
    );
}

/// Registers every route; the binary and the tests build the same app with it.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let json_errors = web::JsonConfig::default()
        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into());
    let path_errors = web::PathConfig::default()
        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into());
    let query_errors = web::QueryConfig::default()
        .error_handler(|e, _| ApiError::bad_request(e.to_string()).into());
    cfg.app_data(json_errors)
        .app_data(path_errors)
        .app_data(query_errors)
        .route("/healthz", get_or_head().to(healthz))
        .configure(ui::routes)
        .route("/metrics", get_or_head().to(metrics::metrics))
        .route(
            "/api/v1/integrations",
            get_or_head().to(integrations::list_all),
        )
        .route("/api/v1/accounts", web::get().to(accounts::list))
        .route("/api/v1/overview", web::get().to(history::overview))
        .service(
            web::scope("/api/v1/accounts/{account}")
                .route("", web::put().to(accounts::put))
                .route("", get_or_head().to(accounts::get))
                .route("/tokens", web::post().to(tokens::create))
                .route("/tokens", get_or_head().to(tokens::list))
                .route("/tokens/{id}", web::delete().to(tokens::delete))
                .route("/audit", web::post().to(ingest::audit))
                .route("/jobs", web::post().to(ingest::jobs))
                .route("/integrations", get_or_head().to(integrations::list))
                .route("/integrations", web::post().to(integrations::create))
                .route("/integrations/test", web::post().to(checks::test_settings))
                .route("/integrations/{id}", get_or_head().to(integrations::get))
                .route("/integrations/{id}", web::put().to(integrations::replace))
                .route("/integrations/{id}", web::patch().to(integrations::patch))
                .route("/integrations/{id}", web::delete().to(integrations::delete))
                .route(
                    "/integrations/{id}/status",
                    get_or_head().to(integrations::status),
                )
                .route(
                    "/integrations/{id}/sync",
                    web::post().to(integrations::sync_now),
                )
                .route(
                    "/integrations/{id}/test",
                    web::post().to(integrations::test),
                )
                .route(
                    "/integrations/{id}/replay",
                    web::post().to(integrations::replay),
                )
                .route(
                    "/integrations/{id}/replay",
                    web::delete().to(integrations::cancel_replay),
                )
                .route(
                    "/integrations/{id}/replay/preview",
                    web::get().to(checks::replay_preview),
                )
                .route(
                    "/integrations/{id}/history",
                    web::get().to(history::history),
                )
                .route(
                    "/integrations/{id}/dead-letters",
                    get_or_head().to(integrations::dead_letters),
                )
                .configure(test_hooks),
        )
        .default_service(web::to(no_route));
}
