//! The API's contract: an OpenAPI 3.1 document generated from the handlers'
//! annotations and the request and answer types (utoipa), served at
//! `GET /api/v1/openapi.json`, and a reference page that renders it
//! (`GET /api/v1/docs`, compiled in like the web page).
//!
//! The error answers every operation can give (a bad path, a missing token, the store
//! unavailable…) are added here from what the operation takes, so that each one lists
//! every status it can answer with, each with the `{"error": …}` body.

use super::errors::ErrorBody;
use super::{accounts, bodies, checks, duplicates, history, ingest, integrations, metrics, nodes};
use super::{status, tokens, ui};
use actix_web::HttpResponse;
use std::sync::OnceLock;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref};
use utoipa::{Modify, OpenApi};

/// The document: every path of `ROUTES` but the document and its page themselves,
/// which are described in `add_own_paths`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "siemsync",
        description = "siemsync forwards a multi-tenant SaaS backup platform's security events \
(audit log, job updates) to each customer's Splunk through the HTTP Event Collector.\n\n\
Every body is JSON; every error is `{\"error\": \"<what is wrong, naming the field>\"}`. \
Every route that answers GET answers HEAD too. Authentication is `Authorization: Bearer <token>`: \
the *admin* token may do everything, the *ingest* token may only post events, and *account* \
tokens (made by the admin per account) may read and manage their own account's integrations; \
another account's resources answer 404, as if they did not exist.\n\n\
The whole flow: the administrator turns the feature on for the account \
(`PUT /api/v1/accounts/acme`), the customer adds an integration \
(`POST /api/v1/accounts/acme/integrations`), the platform posts events \
(`POST /api/v1/accounts/acme/audit`, `…/jobs`), and the status shows how delivery goes \
(`GET …/integrations/{id}/status`).",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::healthz, ui::index, ui::app_js, ui::app_css, ui::whoami, metrics::metrics,
        integrations::list_all, accounts::list, history::overview, nodes::list,
        accounts::put, accounts::get, tokens::create, tokens::list, tokens::delete,
        ingest::audit, ingest::jobs,
        integrations::list, integrations::create, checks::test_settings,
        integrations::get, integrations::replace, integrations::patch, integrations::delete,
        integrations::status, integrations::sync_now, integrations::test,
        integrations::replay, integrations::cancel_replay, checks::replay_preview,
        history::history, integrations::dead_letters,
    ),
    components(schemas(
        ErrorBody, bodies::AccountBody, bodies::TokenBody, bodies::AuditEventBody,
        bodies::JobSnapshotBody, bodies::IntegrationBody, bodies::TestSettingsBody,
        bodies::ReplayBody, duplicates::IntegrationAnswer, status::IntegrationStatus,
    )),
    modifiers(&Contract),
    tags(
        (name = "service", description = "Health, metrics, whose token this is"),
        (name = "accounts", description = "The per-account SIEM feature switch and ingest rate"),
        (name = "tokens", description = "Account tokens, made by the admin"),
        (name = "ingest", description = "The platform posts audit events and job snapshots"),
        (name = "integrations", description = "A customer's SIEM integrations, their status and history"),
        (name = "replay", description = "Re-sending a window of retained events"),
        (name = "web page", description = "The page's static files"),
        (name = "contract", description = "This document and its reference page"),
    ),
)]
pub struct ApiDoc;

/// Adds the security schemes, this document's own paths and the error answers.
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin", "The administrator's token (config `admin_token`): may do everything."),
            ("ingest", "The platform's token (config `ingest_token`): may only post events."),
            ("account", "An account token (`ssa_…`, made with `POST …/tokens`): may read and manage its own account's integrations."),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
        add_own_paths(doc);
        for (path, item) in doc.paths.paths.iter_mut() {
            for op in operations(item) {
                add_errors(path, op);
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// The error answers `op` can give, from what it takes: a path parameter can be
/// malformed or name nothing, a token can be missing or not allowed, a body can be
/// malformed, too large or too slow, and the store can be unavailable. An answer the
/// operation describes itself is kept.
fn add_errors(path: &str, op: &mut Operation) {
    let secured = op.security.as_ref().is_some_and(|s| {
        serde_json::to_value(s).is_ok_and(|v| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|r| r != &serde_json::json!({})))
        })
    });
    let has_params = path.contains('{') || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let mut statuses: Vec<(&str, &str)> = Vec::new();
    if has_params || has_body {
        statuses.push((
            "400",
            "The request is not valid: the message names the parameter or field",
        ));
    }
    if secured {
        statuses.push(("401", "No bearer token, or one siemsync does not know"));
        statuses.push(("403", "This token may not do that"));
    }
    if path.contains('{') {
        statuses.push((
            "404",
            "No such resource (or another account's, which is not shown)",
        ));
    }
    if has_body {
        statuses.push((
            "408",
            "The body did not arrive within `body_timeout_secs`: the connection is closed",
        ));
        statuses.push(("413", "The body is larger than `max_body_bytes`"));
    }
    if secured {
        statuses.push((
            "503",
            "siemsync cannot use its store or its delivery engine right now: retry later",
        ));
    }
    for (code, description) in statuses {
        if !op.responses.responses.contains_key(code) {
            op.responses
                .responses
                .insert(code.to_owned(), error(description).into());
        }
    }
}

/// `GET /api/v1/openapi.json` and `GET /api/v1/docs`: described by hand here, since
/// they answer this document and a page rather than a typed body.
fn add_own_paths(doc: &mut Document) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItemBuilder};
    let page = |id: &str, summary: &str, content_type: &str| {
        PathItemBuilder::new()
            .operation(
                HttpMethod::Get,
                OperationBuilder::new()
                    .operation_id(Some(id))
                    .summary(Some(summary))
                    .tag("contract")
                    .security(utoipa::openapi::security::SecurityRequirement::default())
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description(summary)
                            .content(content_type, ContentBuilder::new().build()),
                    )
                    .build(),
            )
            .build()
    };
    doc.paths.paths.insert(
        "/api/v1/openapi.json".into(),
        page(
            "openapiDocument",
            "This document (OpenAPI 3.1)",
            "application/json",
        ),
    );
    doc.paths.paths.insert(
        "/api/v1/docs".into(),
        page(
            "apiReference",
            "The API reference page, rendered from this document",
            "text/html",
        ),
    );
    doc.paths.paths.insert(
        "/api/v1/docs/reference.js".into(),
        page(
            "apiReferenceScript",
            "The reference page's script",
            "text/javascript",
        ),
    );
}

/// utoipa 5 writes a Link Object's fields in snake case (`operation_id`); OpenAPI
/// spells them in camel case, as every other object of the document.
fn camel_case_links(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let Value::Object(link) = link {
                        for (snake, camel) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(snake) {
                                link.insert(camel.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(camel_case_links);
        }
        Value::Array(items) => items.iter_mut().for_each(camel_case_links),
        _ => {}
    }
}

/// The document as served, made once.
pub fn json() -> Result<&'static str, String> {
    static DOC: OnceLock<Result<String, String>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut value = serde_json::to_value(ApiDoc::openapi()).map_err(|e| e.to_string())?;
        camel_case_links(&mut value);
        serde_json::to_string_pretty(&value).map_err(|e| e.to_string())
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// `GET /api/v1/openapi.json`: the API's contract, without authentication.
pub async fn document() -> Result<HttpResponse, super::errors::ApiError> {
    let doc = json().map_err(|e| {
        super::errors::ApiError::new(
            actix_web::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("the API document could not be written: {e}"),
        )
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(doc))
}

const REFERENCE_HTML: &str = include_str!("ui/reference.html");
const REFERENCE_JS: &str = include_str!("ui/reference.js");

/// `GET /api/v1/docs`: the reference page, which renders the document.
pub async fn reference() -> HttpResponse {
    super::ui::asset("text/html; charset=utf-8", REFERENCE_HTML)
}

/// `GET /api/v1/docs/reference.js`: the reference page's script.
pub async fn reference_js() -> HttpResponse {
    super::ui::asset("text/javascript; charset=utf-8", REFERENCE_JS)
}
