//! The web page: three static files compiled into the binary (no CDN, no build
//! step), and `GET /api/v1/whoami` so the page knows whose token it holds.

use super::auth::Caller;
use crate::model::AccountId;
use actix_web::HttpResponse;
use serde::Serialize;
use uuid::Uuid;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

pub(super) fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        // Only our own files: the page needs nothing from anywhere else.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; frame-ancestors 'none'",
        ))
        .body(body)
}

/// `GET /`: the page.
#[utoipa::path(get, path = "/", operation_id = "webPage", tag = "web page", security(()),
    responses((status = 200, description = "The web page", content_type = "text/html", body = String)))]
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /ui/app.js`: the page's script.
#[utoipa::path(get, path = "/ui/app.js", operation_id = "webPageScript", tag = "web page", security(()),
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String)))]
pub async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /ui/app.css`: the page's style sheet.
#[utoipa::path(get, path = "/ui/app.css", operation_id = "webPageStyle", tag = "web page", security(()),
    responses((status = 200, description = "The page's style sheet", content_type = "text/css", body = String)))]
pub async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Whose token the caller holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum WhoAmI {
    /// The administrator's token.
    Admin,
    /// The platform's ingest token.
    Ingest,
    /// An account token.
    Account {
        /// The account it acts for.
        account: AccountId,
        /// The token's id.
        token: Uuid,
        /// The name it was given.
        name: Option<String>,
    },
}

/// The caller's role, and for an account token its account.
#[utoipa::path(get, path = "/api/v1/whoami", operation_id = "whoami", tag = "service",
    security(("admin" = []), ("ingest" = []), ("account" = [])),
    responses((status = 200, description = "Whose token this is", body = WhoAmI,
        example = json!({"role": "account", "account": "acme", "token": "0b7f3c1e-5a4d-4f7e-9a51-2d8c6b0e4f11", "name": null}))))]
pub async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(match caller {
        Caller::Admin => WhoAmI::Admin,
        Caller::Ingest => WhoAmI::Ingest,
        Caller::Account(t) => WhoAmI::Account {
            account: t.account,
            token: t.id,
            name: t.name,
        },
    })
}
