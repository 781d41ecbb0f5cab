//! The API's own documents: `/v1`, `/v1/healthcheck`, skeletons, converters, OpenAPI.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::error::{json, json_bytes};
use super::{Shared, OPENAPI_JSON};
use crate::keymap::SKELETON_DOCUMENTATION;

/// The body of `/v1` and `/v1/healthcheck` (contract §4.1, keys sorted).
#[derive(Serialize)]
struct Health<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<[&'static str; 4]>,
    /// Waiting jobs; `null` when the queue could not be asked.
    queue_length: Option<u64>,
    status: &'static str,
    status_queue: &'static str,
    status_store: &'static str,
    version: &'a str,
}

fn good(ok: bool) -> &'static str {
    if ok {
        "good"
    } else {
        "degraded"
    }
}

/// Asks the job store and the queue; enqueues nothing.
async fn health(app: &Shared, children: bool) -> Response {
    let (store, waiting) = tokio::join!(app.jobs.ping(), app.queue.waiting());
    if let Err(e) = &store {
        tracing::warn!(error = %e, "health: job store");
    }
    if let Err(e) = &waiting {
        tracing::warn!(error = %e, "health: queue");
    }
    let body = Health {
        children: children.then_some(["compile", "converters", "keyboards", "skeletons"]),
        queue_length: waiting.as_ref().ok().copied(),
        status: if store.is_ok() && waiting.is_ok() {
            "running"
        } else {
            "degraded"
        },
        status_queue: good(waiting.is_ok()),
        status_store: good(store.is_ok()),
        version: &app.config.version,
    };
    json(StatusCode::OK, &body)
}

pub async fn root(State(app): State<Shared>) -> Response {
    health(&app, true).await
}

pub async fn healthcheck(State(app): State<Shared>) -> Response {
    health(&app, false).await
}

pub async fn converters() -> Response {
    // The KLE converter of the original is not offered (it is broken upstream, contract B6).
    json_bytes(StatusCode::OK, r#"{"children":[]}"#)
}

pub async fn skeletons() -> Response {
    json_bytes(StatusCode::OK, r#"{"children":["keymap"]}"#)
}

#[derive(Serialize)]
struct Skeleton {
    documentation: &'static str,
    keyboard: Option<()>,
    keymap: Option<()>,
    layers: [(); 0],
    layout: Option<()>,
    notes: &'static str,
    version: u32,
}

pub async fn skeleton_keymap() -> Response {
    json(
        StatusCode::OK,
        &Skeleton {
            documentation: SKELETON_DOCUMENTATION,
            keyboard: None,
            keymap: None,
            layers: [],
            layout: None,
            notes: "",
            version: 1,
        },
    )
}

pub async fn openapi() -> Response {
    json_bytes(StatusCode::OK, OPENAPI_JSON)
}
