//! The HTTP API (contract §3): one axum [`Router`] served by the three HTTP Lambdas
//! (`lambda_http::run`) and by `oven serve` (a TCP listener).
//!
//! The route table [`ROUTES`] is the single list the router is built from; the OpenAPI document
//! and `template.yaml` are tested against it. Cross-cutting behaviour lives in [`layers`]:
//! CORS on every response, `//v1/...` paths, JSON for every error.

pub mod aws;
mod compile;
mod error;
pub mod keyboards;
mod layers;
mod local;
mod meta;
mod s3_keyboards;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use serde::Serialize;

use crate::job::Job;
use crate::ports::{ArtifactStore, JobQueue, JobStore};

pub use error::ApiError;
pub use keyboards::{KeyboardIndex, KeyboardIndexError, LocalKeyboardIndex};
pub use s3_keyboards::{S3KeyboardIndex, POINTER_KEY};

/// The OpenAPI 3 description of this API, served at `GET /v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Which deployed Lambda serves a route (`template.yaml` wires the same split).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    Submit,
    Status,
    Download,
}

impl Function {
    pub fn name(self) -> &'static str {
        match self {
            Function::Submit => "submit",
            Function::Status => "status",
            Function::Download => "download",
        }
    }
}

/// One route of the API. `HEAD` (for every `GET`) and `OPTIONS` (CORS preflight, every path)
/// are answered implicitly and not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// The path in OpenAPI template form (`{id}`, `{keyboard}`; `{keyboard}` may contain `/`).
    pub path: &'static str,
    pub function: Function,
    endpoint: Endpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Root,
    Health,
    Converters,
    Skeletons,
    SkeletonKeymap,
    OpenApi,
    Submit,
    Status,
    Download(compile::ArtifactKind),
    KeyboardList,
    KeyboardsAll,
    Usb,
    /// `/v1/keyboards/{keyboard}` and `.../readme`: one catch-all route (the name has slashes).
    Keyboard,
    KeyboardReadme,
}

const fn route(
    method: &'static str,
    path: &'static str,
    function: Function,
    endpoint: Endpoint,
) -> Route {
    Route {
        method,
        path,
        function,
        endpoint,
    }
}

/// Every route the API serves.
pub const ROUTES: &[Route] = {
    use compile::ArtifactKind as A;
    use Endpoint as E;
    use Function::*;
    &[
        route("GET", "/v1", Status, E::Root),
        route("GET", "/v1/healthcheck", Status, E::Health),
        route("GET", "/v1/converters", Status, E::Converters),
        route("GET", "/v1/skeletons", Status, E::Skeletons),
        route("GET", "/v1/skeletons/keymap", Status, E::SkeletonKeymap),
        route("GET", "/v1/openapi.json", Status, E::OpenApi),
        route("POST", "/v1/compile", Submit, E::Submit),
        route("GET", "/v1/compile/{id}", Status, E::Status),
        route(
            "GET",
            "/v1/compile/{id}/download",
            Download,
            E::Download(A::Firmware),
        ),
        route(
            "GET",
            "/v1/compile/{id}/hex",
            Download,
            E::Download(A::Firmware),
        ),
        route(
            "GET",
            "/v1/compile/{id}/keymap",
            Download,
            E::Download(A::Keymap),
        ),
        route(
            "GET",
            "/v1/compile/{id}/source",
            Download,
            E::Download(A::Source),
        ),
        route("GET", "/v1/keyboards", Status, E::KeyboardList),
        route("GET", "/v1/keyboards/all", Status, E::KeyboardsAll),
        route("GET", "/v1/keyboards/{keyboard}", Status, E::Keyboard),
        route(
            "GET",
            "/v1/keyboards/{keyboard}/readme",
            Status,
            E::KeyboardReadme,
        ),
        route("GET", "/v1/usb", Status, E::Usb),
    ]
};

/// The route table as `(method, path)` pairs (for comparisons with `template.yaml`).
pub fn route_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    ROUTES.iter().map(|r| (r.method, r.path))
}

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Absolute base URL browsers reach the API at (no trailing slash); result URLs start with it.
    pub public_url: String,
    /// Base URL of the keyboards site (redirect targets of `/v1/keyboards/...`, `/v1/usb`).
    pub keyboards_url: String,
    /// Shown as `version` by `/v1`.
    pub version: String,
    /// How long a job is kept.
    pub retention: Duration,
    /// Local runner only: serve this built keyboards tree under `/keyboards/`.
    pub keyboards_dir: Option<PathBuf>,
    /// Local runner only: the worker's tree and toolchains, reported by `/v1/healthcheck`.
    pub compiler: Option<crate::setup::CompilerHealth>,
}

impl ApiConfig {
    pub fn new(public_url: &str, keyboards_url: &str) -> Self {
        ApiConfig {
            public_url: public_url.trim_end_matches('/').to_string(),
            keyboards_url: keyboards_url.trim_end_matches('/').to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            retention: Duration::from_secs(crate::config::DEFAULT_RETENTION_HOURS * 3600),
            keyboards_dir: None,
            compiler: None,
        }
    }

    /// From the environment of a deployed function ([`crate::config`] names the variables).
    pub fn from_env() -> Result<Self, ConfigError> {
        let var = |name: &'static str| std::env::var(name).map_err(|_| ConfigError::Missing(name));
        let mut cfg = ApiConfig::new(
            &var(crate::config::PUBLIC_URL)?,
            &std::env::var(crate::config::KEYBOARDS_URL)
                .unwrap_or_else(|_| DEFAULT_KEYBOARDS_URL.to_string()),
        );
        if let Ok(h) = std::env::var(crate::config::RETENTION_HOURS) {
            let hours: u64 = h
                .parse()
                .map_err(|_| ConfigError::Invalid(crate::config::RETENTION_HOURS, h.clone()))?;
            cfg.retention = Duration::from_secs(hours * 3600);
        }
        Ok(cfg)
    }
}

/// Where the stock Configurator reads keyboards from.
pub const DEFAULT_KEYBOARDS_URL: &str = "https://keyboards.qmk.fm";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    #[error("environment variable {0} has an invalid value {1:?}")]
    Invalid(&'static str, String),
}

/// What the status document of a queued job may add: its place in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QueuePosition {
    /// Jobs that will start before this one.
    pub jobs_ahead: u64,
    /// Estimated seconds until it starts, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

/// Hook for the worker side to tell how far a queued job is from an oven.
#[async_trait]
pub trait QueueInsight: Send + Sync + 'static {
    async fn position(&self, job: &Job) -> Option<QueuePosition>;
}

/// How a validated job becomes durable and queued. The default stores it, then sends its
/// message ([`JobStore::create`] then [`JobQueue::send`]); a backend that can do both in one
/// write (the local SQLite database) plugs in here.
#[async_trait]
pub trait Submitter: Send + Sync + 'static {
    /// After `Ok` the job is stored and its message queued. On `Err` no job may stay `queued`
    /// without a message.
    async fn submit(&self, job: &Job) -> Result<(), SubmitError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("could not store the job: {0}")]
    Store(String),
    #[error("could not enqueue the job: {0}")]
    Queue(String),
}

/// Problems a submit can refuse before a job reaches the queue (see
/// `worker::SubmitPrecheck`): `Some(result)` is the finished result the job gets at once.
pub trait SubmitCheck: Send + Sync + 'static {
    fn refuse(&self, job: &Job) -> Option<crate::job::JobResult>;
}

/// Everything the handlers share.
pub struct App {
    pub jobs: Arc<dyn JobStore>,
    pub queue: Arc<dyn JobQueue>,
    pub artifacts: Arc<dyn ArtifactStore>,
    pub keyboards: Option<Arc<dyn KeyboardIndex>>,
    pub queue_insight: Option<Arc<dyn QueueInsight>>,
    /// `None`: store, then enqueue (see [`Submitter`]).
    pub submitter: Option<Arc<dyn Submitter>>,
    /// Pre-compile checks at submit time, where the tree is at hand (`oven serve`).
    pub submit_check: Option<Arc<dyn SubmitCheck>>,
    pub config: ApiConfig,
}

impl App {
    pub fn new(
        jobs: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        artifacts: Arc<dyn ArtifactStore>,
        config: ApiConfig,
    ) -> Self {
        App {
            jobs,
            queue,
            artifacts,
            keyboards: None,
            queue_insight: None,
            submitter: None,
            submit_check: None,
            config,
        }
    }
}

type Shared = Arc<App>;

fn method_router(endpoint: Endpoint) -> MethodRouter<Shared> {
    match endpoint {
        Endpoint::Root => get(meta::root),
        Endpoint::Health => get(meta::healthcheck),
        Endpoint::Converters => get(meta::converters),
        Endpoint::Skeletons => get(meta::skeletons),
        Endpoint::SkeletonKeymap => get(meta::skeleton_keymap),
        Endpoint::OpenApi => get(meta::openapi),
        Endpoint::Submit => post(compile::submit),
        Endpoint::Status => get(compile::status),
        Endpoint::Download(kind) => get(move |state, path| compile::download(state, path, kind)),
        Endpoint::KeyboardList => get(keyboards::list),
        Endpoint::KeyboardsAll => get(keyboards::all),
        Endpoint::Usb => get(keyboards::usb),
        Endpoint::Keyboard | Endpoint::KeyboardReadme => get(keyboards::keyboard),
    }
}

/// The axum path of a route; `None` when another route's catch-all serves it.
fn axum_path(route: &Route) -> Option<&'static str> {
    match route.endpoint {
        Endpoint::Keyboard => Some("/v1/keyboards/{*keyboard}"),
        Endpoint::KeyboardReadme => None,
        _ => Some(route.path),
    }
}

/// Builds the router: the routes of [`ROUTES`], the keyboards tree when configured, and the
/// layers every response goes through.
pub fn router(app: App) -> Router {
    let keyboards_dir = app.config.keyboards_dir.clone();
    let state: Shared = Arc::new(app);
    let mut inner: Router<Shared> = Router::new();
    let mut seen: Vec<&str> = Vec::new();
    for r in ROUTES {
        let Some(path) = axum_path(r) else { continue };
        // Several methods on one path must be merged into one MethodRouter.
        if seen.contains(&path) {
            continue;
        }
        seen.push(path);
        let mut mr: MethodRouter<Shared> = MethodRouter::new();
        for other in ROUTES.iter().filter(|o| axum_path(o) == Some(path)) {
            mr = mr.merge(method_router(other.endpoint));
        }
        inner = inner.route(path, mr.fallback(layers::method_not_allowed));
    }
    let mut inner = inner.with_state(state);
    if let Some(dir) = keyboards_dir {
        inner = inner.nest_service("/keyboards", tower_http::services::ServeDir::new(dir));
    }
    layers::wrap(inner)
}
