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
pub mod bodies;
pub mod checks;
pub mod duplicates;
pub mod errors;
pub mod history;
pub mod ingest;
pub mod integrations;
pub mod metrics;
pub mod nodes;
pub mod openapi;
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
use serde::Serialize;
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
    /// The free-space reserve of the data directory's disk, and whom it refuses.
    pub disk_reserve: Arc<crate::disk_reserve::DiskReserve>,
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
    read_body_sized(payload, None, config).await
}

/// [`read_body`] into a buffer sized once from the length the request declares (at
/// most `max_body_bytes`; 32 KiB when it declares none, as actix-web starts). An
/// ingest body of a few MB grown from 32 KiB was copied about twice over, and each
/// larger buffer was fresh memory the kernel had to clear: 2-3 % of ingest's CPU.
pub async fn read_body_sized(
    payload: web::Payload,
    declared: Option<usize>,
    config: &Config,
) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let limit = config.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {limit} bytes; send fewer events per request"),
        )
    };
    if declared.is_some_and(|n| n > limit) {
        // Refused before a byte is read or any memory is set aside for it.
        return Err(too_large());
    }
    let timeout = config.body_timeout_secs.get();
    let collect = async move {
        let mut payload = payload;
        let mut buf = web::BytesMut::with_capacity(declared.map_or(32 * 1024, |n| n.min(limit)));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(Some)?;
            if buf.len() + chunk.len() > limit {
                return Err(None::<actix_web::error::PayloadError>);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    match actix_web::rt::time::timeout(timeout, collect).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(Some(e))) => Err(ApiError::bad_request(format!(
            "could not read the request body: {e}"
        ))),
        Ok(Err(None)) => Err(too_large()),
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

/// The `{account}` of a path, for the API document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountPath {
    /// The account: 1–64 characters of `[A-Za-z0-9._-]`.
    #[param(example = "acme")]
    pub account: AccountId,
}

/// The `{account}` and `{id}` of an integration's path, for the API document.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IntegrationPath {
    /// The account: 1–64 characters of `[A-Za-z0-9._-]`.
    #[param(example = "acme")]
    pub account: AccountId,
    /// The integration's id, as made by siemsync.
    pub id: uuid::Uuid,
}

/// The `{account}` path segment, validated.
pub fn account_of(raw: &str) -> Result<AccountId, ApiError> {
    AccountId::parse(raw).map_err(|e| {
        ApiError::bad_request(format!(
            "`account` in the path is not a valid identifier: {e}"
        ))
    })
}

/// Whether the service can do its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Up, and the store takes writes (for every account, or, below
    /// `min_free_disk_bytes`, for those not refused for their backlog).
    Ok,
    /// Up, but no account can store: the store cannot take writes (full or
    /// read-only disk), or the free space is under half of `min_free_disk_bytes`.
    Degraded,
}

/// `GET /healthz`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` while no account can store.
    pub status: HealthState,
    /// Only while the store cannot write: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Only while the free space is under `min_free_disk_bytes`: how much is free and
    /// whose ingest is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
}

/// Up, and able to store: 503 with the reason while the store cannot take writes or
/// the free space is under the disk reserve's hard line; `disk` says so below the floor.
#[utoipa::path(get, path = "/healthz", operation_id = "health", tag = "service", security(()),
    responses(
        (status = 200, description = "Up, and the store takes writes; `disk` present while the free space is under min_free_disk_bytes and the accounts with the largest backlogs are refused", body = Health,
            example = json!({"status": "ok"})),
        (status = 503, description = "Up, but no account can store: the store cannot write (full or read-only disk, `storage`), or the free space is under half of min_free_disk_bytes (`disk`)", body = Health,
            example = json!({"status": "degraded", "storage": "siemsync cannot write to its store: No space left on device"})),
    ))]
pub async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let disk = state.disk_reserve.below_floor();
    match state.store.fault() {
        // Above the hard line the accounts not refused still store: the service works.
        None if !state.disk_reserve.everyone_refused() => HttpResponse::Ok().json(Health {
            status: HealthState::Ok,
            storage: None,
            disk,
        }),
        fault => HttpResponse::ServiceUnavailable().json(Health {
            status: HealthState::Degraded,
            storage: fault.map(|reason| format!("siemsync cannot write to its store: {reason}")),
            disk,
        }),
    }
}

async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see the API document at /api/v1/openapi.json",
    ))
}

/// Routes only test builds have (never in a release build, nor in the API document).
fn test_hooks(_cfg: &mut web::ServiceConfig) {
    #[cfg(feature = "test-hooks")]
    _cfg.route(
        "/api/v1/accounts/{account}/integrations/{id}/_panic",
        web::post().to(integrations::force_panic),
    )
    .route(
        "/api/v1/accounts/{account}/integrations/{id}/_stall",
        web::post().to(integrations::force_stall),
    );
}

/// Which requests a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET, and HEAD (the headers alone).
    GetOrHead,
    /// GET only.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
}

impl Verb {
    fn route(self) -> actix_web::Route {
        match self {
            Verb::GetOrHead => get_or_head(),
            Verb::Get => web::get(),
            Verb::Post => web::post(),
            Verb::Put => web::put(),
            Verb::Patch => web::patch(),
            Verb::Delete => web::delete(),
        }
    }

    /// The methods it answers, as an `Allow` header lists them.
    pub fn methods(self) -> &'static [&'static str] {
        match self {
            Verb::GetOrHead => &["GET", "HEAD"],
            Verb::Get => &["GET"],
            Verb::Post => &["POST"],
            Verb::Put => &["PUT"],
            Verb::Patch => &["PATCH"],
            Verb::Delete => &["DELETE"],
        }
    }
}

/// One route of the API: `configure` registers exactly these, and a test checks that
/// the OpenAPI document describes each one, so none can ship undocumented.
pub struct RouteDef {
    /// What it answers.
    pub verb: Verb,
    /// The path, with `{name}` segments as in the document.
    pub path: &'static str,
    /// Its handler, on the route `verb` makes.
    pub handler: fn(actix_web::Route) -> actix_web::Route,
}

const fn route(
    verb: Verb,
    path: &'static str,
    handler: fn(actix_web::Route) -> actix_web::Route,
) -> RouteDef {
    RouteDef {
        verb,
        path,
        handler,
    }
}

const ACCOUNT: &str = "/api/v1/accounts/{account}";
const INTEGRATION: &str = "/api/v1/accounts/{account}/integrations/{id}";

/// Every route, in the order they are matched (`…/integrations/test` before
/// `…/integrations/{id}`).
pub const ROUTES: &[RouteDef] = &[
    route(Verb::GetOrHead, "/healthz", |r| r.to(healthz)),
    route(Verb::GetOrHead, "/", |r| r.to(ui::index)),
    route(Verb::GetOrHead, "/ui/app.js", |r| r.to(ui::app_js)),
    route(Verb::GetOrHead, "/ui/app.css", |r| r.to(ui::app_css)),
    route(Verb::GetOrHead, "/api/v1/openapi.json", |r| {
        r.to(openapi::document)
    }),
    route(Verb::GetOrHead, "/api/v1/docs", |r| {
        r.to(openapi::reference)
    }),
    route(Verb::GetOrHead, "/api/v1/docs/reference.js", |r| {
        r.to(openapi::reference_js)
    }),
    route(Verb::GetOrHead, "/api/v1/whoami", |r| r.to(ui::whoami)),
    route(Verb::GetOrHead, "/metrics", |r| r.to(metrics::metrics)),
    route(Verb::GetOrHead, "/api/v1/integrations", |r| {
        r.to(integrations::list_all)
    }),
    route(Verb::Get, "/api/v1/accounts", |r| r.to(accounts::list)),
    route(Verb::Get, "/api/v1/overview", |r| r.to(history::overview)),
    route(Verb::GetOrHead, "/api/v1/nodes", |r| r.to(nodes::list)),
    route(Verb::Put, ACCOUNT, |r| r.to(accounts::put)),
    route(Verb::GetOrHead, ACCOUNT, |r| r.to(accounts::get)),
    route(Verb::Post, "/api/v1/accounts/{account}/tokens", |r| {
        r.to(tokens::create)
    }),
    route(Verb::GetOrHead, "/api/v1/accounts/{account}/tokens", |r| {
        r.to(tokens::list)
    }),
    route(
        Verb::Delete,
        "/api/v1/accounts/{account}/tokens/{id}",
        |r| r.to(tokens::delete),
    ),
    route(Verb::Post, "/api/v1/accounts/{account}/audit", |r| {
        r.to(ingest::audit)
    }),
    route(Verb::Post, "/api/v1/accounts/{account}/jobs", |r| {
        r.to(ingest::jobs)
    }),
    route(
        Verb::GetOrHead,
        "/api/v1/accounts/{account}/integrations",
        |r| r.to(integrations::list),
    ),
    route(Verb::Post, "/api/v1/accounts/{account}/integrations", |r| {
        r.to(integrations::create)
    }),
    route(
        Verb::Post,
        "/api/v1/accounts/{account}/integrations/test",
        |r| r.to(checks::test_settings),
    ),
    route(Verb::GetOrHead, INTEGRATION, |r| r.to(integrations::get)),
    route(Verb::Put, INTEGRATION, |r| r.to(integrations::replace)),
    route(Verb::Patch, INTEGRATION, |r| r.to(integrations::patch)),
    route(Verb::Delete, INTEGRATION, |r| r.to(integrations::delete)),
    route(
        Verb::GetOrHead,
        "/api/v1/accounts/{account}/integrations/{id}/status",
        |r| r.to(integrations::status),
    ),
    route(
        Verb::Post,
        "/api/v1/accounts/{account}/integrations/{id}/sync",
        |r| r.to(integrations::sync_now),
    ),
    route(
        Verb::Post,
        "/api/v1/accounts/{account}/integrations/{id}/test",
        |r| r.to(integrations::test),
    ),
    route(
        Verb::Post,
        "/api/v1/accounts/{account}/integrations/{id}/replay",
        |r| r.to(integrations::replay),
    ),
    route(
        Verb::Delete,
        "/api/v1/accounts/{account}/integrations/{id}/replay",
        |r| r.to(integrations::cancel_replay),
    ),
    route(
        Verb::Get,
        "/api/v1/accounts/{account}/integrations/{id}/replay/preview",
        |r| r.to(checks::replay_preview),
    ),
    route(
        Verb::Get,
        "/api/v1/accounts/{account}/integrations/{id}/history",
        |r| r.to(history::history),
    ),
    route(
        Verb::GetOrHead,
        "/api/v1/accounts/{account}/integrations/{id}/dead-letters",
        |r| r.to(integrations::dead_letters),
    ),
];

/// A known path asked with a method it does not take: 405 with the methods it does.
fn method_not_allowed(path: &'static str) -> actix_web::Route {
    let allow: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.path == path)
        .flat_map(|r| r.verb.methods().iter().copied())
        .collect();
    let allow = allow.join(", ");
    web::route().to(move || {
        let allow = allow.clone();
        async move {
            let mut answer = HttpResponse::MethodNotAllowed();
            answer.insert_header((actix_web::http::header::ALLOW, allow.clone()));
            answer.json(errors::ErrorBody {
                error: format!("this endpoint takes {allow} only; see the API document at /api/v1/openapi.json"),
            })
        }
    })
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
        .app_data(query_errors);
    // Test hooks first: their paths would otherwise meet the 405 of `…/{id}/…` paths.
    test_hooks(cfg);
    for r in ROUTES {
        cfg.route(r.path, (r.handler)(r.verb.route()));
    }
    // After every route: a known path with another method.
    let mut seen: Vec<&str> = Vec::new();
    for r in ROUTES {
        if !seen.contains(&r.path) {
            seen.push(r.path);
            cfg.route(r.path, method_not_allowed(r.path));
        }
    }
    cfg.default_service(web::to(no_route));
}
