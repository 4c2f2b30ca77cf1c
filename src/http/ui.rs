//! The web page: three static files compiled into the binary (no CDN, no build
//! step), and `GET /api/v1/whoami` so the page knows whose token it holds.

use super::auth::Caller;
use actix_web::{web, HttpResponse};
use serde_json::json;

const INDEX: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
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

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub async fn app_css() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// The caller's role, and for an account token its account.
pub async fn whoami(caller: Caller) -> HttpResponse {
    HttpResponse::Ok().json(match caller {
        Caller::Admin => json!({"role": "admin"}),
        Caller::Ingest => json!({"role": "ingest"}),
        Caller::Account(t) => {
            json!({"role": "account", "account": t.account, "token": t.id, "name": t.name})
        }
    })
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", super::get_or_head().to(index))
        .route("/ui/app.js", super::get_or_head().to(app_js))
        .route("/ui/app.css", super::get_or_head().to(app_css))
        .route("/api/v1/whoami", super::get_or_head().to(whoami));
}
