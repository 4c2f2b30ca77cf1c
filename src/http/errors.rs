//! The API's one error shape: `{"error": "..."}` with a 4xx (or 5xx for our own faults).

use crate::model::FieldError;
use crate::store::StoreError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;

/// The body of every error answer: what was wrong, naming the field or cause.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"error": "`hec_uri` must start with http:// or https://"}))]
pub struct ErrorBody {
    /// What is wrong, naming the field, and what to do.
    pub error: String,
}

/// An API error answer: a status and a message that names the problem, as `{"error": …}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was wrong, and what to do.
    pub message: String,
    /// Seconds to send as `Retry-After` (a 429, or a 503 of the disk reserve).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An answer with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    /// 429: the caller is over its rate; it may try again after `secs` seconds.
    pub fn too_many_requests(message: impl Into<String>, secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, message)
        }
    }
    /// 503: the request cannot be stored now; the caller may try again after `secs` seconds.
    pub fn unavailable(message: impl Into<String>, secs: u64) -> ApiError {
        ApiError {
            retry_after: Some(secs),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// A 404 saying `what` was not found.
    pub fn not_found(what: &str) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut answer = HttpResponse::build(self.status);
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a stalled body may never come: do not wait for it.
            answer.force_close();
        }
        if let Some(secs) = self.retry_after {
            answer.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        answer.json(ErrorBody {
            error: self.message.clone(),
        })
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Gone => return ApiError::not_found("integration"),
            StoreError::Changed => return ApiError::new(
                StatusCode::CONFLICT,
                "the integration was changed by another request meanwhile: read it again and retry",
            ),
            _ => {}
        }
        log::error!("store: {e}");
        // The platform retries on 503; nothing was half-written (writes are atomic).
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("siemsync cannot use its store right now, retry later: {e}"),
        )
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(_: actix_web::error::BlockingError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "siemsync is shutting down, retry later",
        )
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(_: actix::MailboxError) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "siemsync's delivery engine is not running, retry later",
        )
    }
}
