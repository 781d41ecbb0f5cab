//! The API's own documents: `/v1`, `/v1/healthcheck`, skeletons, converters, OpenAPI.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::error::{json, json_bytes};
use super::{Shared, OPENAPI_JSON};
use crate::keymap::SKELETON_DOCUMENTATION;

/// The body of `/v1` and `/v1/healthcheck` (contract §4.1, keys sorted). Where the process
/// compiles too (`oven serve`), Oven adds what the worker builds with: `firmware_commit`,
/// `toolchains` (tool → version, `null` when missing), `status_compiler` and `reasons` (why it
/// is degraded); a degraded compiler makes `status` degraded.
#[derive(Serialize)]
struct Health<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    children: Option<[&'static str; 4]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    firmware_commit: Option<Option<&'a str>>,
    /// Waiting jobs; `null` when the queue could not be asked.
    queue_length: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasons: Option<&'a [String]>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_compiler: Option<&'static str>,
    status_queue: &'static str,
    status_store: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toolchains: Option<&'a BTreeMap<String, Option<String>>>,
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
    let compiler = app.config.compiler.as_ref();
    let compiler_ok = compiler.is_none_or(|c| c.problems.is_empty());
    let body = Health {
        children: children.then_some(["compile", "converters", "keyboards", "skeletons"]),
        firmware_commit: compiler.map(|c| c.firmware_commit.as_deref()),
        queue_length: waiting.as_ref().ok().copied(),
        reasons: compiler.map(|c| c.problems.as_slice()),
        status: if store.is_ok() && waiting.is_ok() && compiler_ok {
            "running"
        } else {
            "degraded"
        },
        status_compiler: compiler.map(|_| good(compiler_ok)),
        status_queue: good(waiting.is_ok()),
        status_store: good(store.is_ok()),
        toolchains: compiler.map(|c| &c.toolchains),
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
