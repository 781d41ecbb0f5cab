//! Keyboard routes (contract §4.7): the list read from the published keyboards tree, and
//! redirects to the keyboards site for everything else.
//!
//! Where the tree lives is a port, [`KeyboardIndex`]: a directory for `oven serve`
//! ([`LocalKeyboardIndex`]), the keyboards bucket on AWS (`current.json` names the published
//! prefix, see `S3KeyboardIndex` in the AWS adapters).

use std::path::PathBuf;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::compile::redirect;
use super::error::{json, ApiError};
use super::Shared;
use crate::keymap::check_keyboard;

/// The key of the keyboard list inside a published tree.
pub const KEYBOARD_LIST: &str = "v1/keyboard_list.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyboardIndexError {
    #[error("no keyboards tree has been published")]
    NotPublished,
    #[error(transparent)]
    Backend(#[from] crate::ports::BackendError),
}

/// Read access to the published keyboards tree.
#[async_trait]
pub trait KeyboardIndex: Send + Sync + 'static {
    /// The bytes of `v1/keyboard_list.json` (`{"last_updated":..,"keyboards":[..]}`).
    async fn keyboard_list(&self) -> Result<Bytes, KeyboardIndexError>;
}

/// A built tree in a local directory (`<dir>/v1/keyboard_list.json`).
pub struct LocalKeyboardIndex {
    pub dir: PathBuf,
}

#[async_trait]
impl KeyboardIndex for LocalKeyboardIndex {
    async fn keyboard_list(&self) -> Result<Bytes, KeyboardIndexError> {
        match tokio::fs::read(self.dir.join(KEYBOARD_LIST)).await {
            Ok(b) => Ok(Bytes::from(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyboardIndexError::NotPublished)
            }
            Err(e) => Err(crate::ports::BackendError::new("keyboards-dir", e).into()),
        }
    }
}

#[derive(Deserialize)]
struct KeyboardList {
    keyboards: Vec<String>,
}

/// `GET /v1/keyboards`: the `keyboards` array of the list.
///
/// A server without a keyboards tree (`oven serve` without `--keyboards-dir`, its default)
/// answers 404: this server has no list to give, now or later, and a redirect to the keyboards
/// site's `keyboard_list.json` would hand clients an object where they expect this route's
/// array. A tree that is configured but not published yet is a 503 (it will come).
pub async fn list(State(app): State<Shared>) -> Response {
    let Some(index) = &app.keyboards else {
        let message = format!(
            "This server has no keyboards tree (oven serve --keyboards-dir DIR serves one); \
             the list is in {}/v1/keyboard_list.json",
            app.config.keyboards_url
        );
        return ApiError::new(404, message).into_response();
    };
    let raw = match index.keyboard_list().await {
        Ok(b) => b,
        Err(KeyboardIndexError::NotPublished) => {
            return ApiError::new(503, "no keyboards tree has been published yet").into_response()
        }
        Err(KeyboardIndexError::Backend(e)) => {
            return ApiError::unavailable("could not read the keyboard list", e).into_response()
        }
    };
    match serde_json::from_slice::<KeyboardList>(&raw) {
        Ok(l) => json(StatusCode::OK, &l.keyboards),
        Err(e) => {
            ApiError::unavailable("the published keyboard list is not valid", e).into_response()
        }
    }
}

fn to_site(app: &Shared, path: &str) -> Response {
    redirect(&format!("{}/v1/{path}", app.config.keyboards_url))
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn all(State(app): State<Shared>) -> Response {
    to_site(&app, "keyboards.json")
}

pub async fn usb(State(app): State<Shared>) -> Response {
    to_site(&app, "usb.json")
}

/// `GET /v1/keyboards/{keyboard}` and `.../readme` (the name contains `/`).
pub async fn keyboard(State(app): State<Shared>, Path(rest): Path<String>) -> Response {
    let (kb, file) = match rest.strip_suffix("/readme") {
        Some(kb) => (kb, "readme.md"),
        None => (rest.as_str(), "info.json"),
    };
    if let Err(reason) = check_keyboard(kb) {
        return ApiError::new(404, format!("No such keyboard: {reason}")).into_response();
    }
    to_site(&app, &format!("keyboards/{kb}/{file}"))
}
