//! The API's error answer: the contract's `{"code": N, "message": "..."}` with status N.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::keymap::RequestError;

/// An error answer. `detail` carries the field and reason where the contract's message is fixed
/// (`Buzz off hacker.`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code} {message}")]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            detail: None,
        }
    }

    pub fn job_not_found() -> Self {
        ApiError::new(404, "Compile job not found")
    }

    /// A backend failure: logged in full, answered without internals.
    pub fn unavailable(what: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{what}");
        ApiError::new(503, format!("{what}; please retry later"))
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError {
            code: e.code,
            message: e.message,
            detail: e.detail,
        }
    }
}

/// A JSON response with a pre-serialised body.
pub fn json_bytes(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Serialises `value` as the JSON body of a response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_bytes(status, body),
        Err(e) => ApiError::new(500, format!("could not encode the response: {e}")).into_response(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match serde_json::to_vec(&self) {
            Ok(body) => json_bytes(status, body),
            Err(_) => json_bytes(status, r#"{"code":500,"message":"error"}"#),
        }
    }
}
