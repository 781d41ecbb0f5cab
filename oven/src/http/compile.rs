//! `POST /v1/compile`, `GET /v1/compile/{id}` and the download routes (contract §4.4–4.6).

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::error::{json, json_bytes, ApiError};
use super::{QueuePosition, Shared, SubmitError};
use crate::job::{Job, JobId, JobResult, JobState, Transition};
use crate::keymap::{KeymapRequest, MAX_BODY_BYTES};
use crate::ports::{ArtifactError, ArtifactKey, ArtifactMeta, Download, FilePiece, QueueMessage};
use crate::telemetry::{self, Metric};
use crate::time::Millis;

/// `POST /v1/compile`: validate, store the job as queued, then enqueue it.
pub async fn submit(State(app): State<Shared>, req: Request) -> Response {
    // One byte over the limit is enough to know it is too large.
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES + 1).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                413,
                format!("request body too large (limit {MAX_BODY_BYTES} bytes)"),
            )
            .into_response()
        }
    };
    let request = match KeymapRequest::from_body(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let id = JobId::new();
    let (request, hash) = request.into_parts();
    let job = Job::queued(id, request, hash, Millis::now(), app.config.retention);
    let refused = app.submit_check.as_ref().and_then(|c| c.refuse(&job));
    let submitted = match (refused, &app.submitter) {
        (Some(result), _) => store_finished(&app, &job, result).await,
        (None, Some(s)) => s.submit(&job).await,
        (None, None) => store_then_send(&app, &job).await,
    };
    if let Err(e) = submitted {
        tracing::error!(job_id = %id, error = %e, "submit failed");
        return ApiError::unavailable("could not accept the job", e).into_response();
    }
    tracing::info!(job_id = %id, "job queued");
    telemetry::emit(Metric::JobSubmitted);
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(br#"{"enqueued":true,"job_id":""#);
    body.extend_from_slice(id.to_string().as_bytes());
    body.extend_from_slice(b"\"}");
    json_bytes(StatusCode::OK, body)
}

/// A job refused before compiling: stored, started and finished with its result at once
/// (the same state changes a worker makes), never queued. If finishing fails after the job
/// was stored, its message is sent after all, so the worker (which checks the same way) ends
/// it: a stored job is never left queued without a message.
async fn store_finished(app: &Shared, job: &Job, result: JobResult) -> Result<(), SubmitError> {
    app.jobs
        .create(job)
        .await
        .map_err(|e| SubmitError::Store(e.to_string()))?;
    let now = Millis::now();
    let start = Transition::Start {
        at: now,
        lease_until: now.plus(std::time::Duration::from_secs(60)),
    };
    let finished = match app.jobs.transition(job.id, start).await {
        Ok(started) => {
            let finish = Transition::Finish {
                at: Millis::now(),
                attempt: started.attempt,
                result,
            };
            app.jobs.transition(job.id, finish).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = finished {
        tracing::warn!(job = %job.id, error = %e, "could not finish a refused job; queueing it");
        app.queue
            .send(&QueueMessage { job_id: job.id })
            .await
            .map_err(|e| SubmitError::Queue(e.to_string()))?;
    }
    Ok(())
}

/// The generic submit: create, then send; a failed send turns the job `failed`.
async fn store_then_send(app: &Shared, job: &Job) -> Result<(), SubmitError> {
    app.jobs
        .create(job)
        .await
        .map_err(|e| SubmitError::Store(e.to_string()))?;
    if let Err(e) = app.queue.send(&QueueMessage { job_id: job.id }).await {
        // Never leave a job queued that no worker will ever see.
        let fail = Transition::Fail {
            at: Millis::now(),
            reason: "Oven could not enqueue this job".to_string(),
        };
        if let Err(te) = app.jobs.transition(job.id, fail).await {
            tracing::error!(job = %job.id, error = %te, "could not mark an unqueued job failed");
        }
        return Err(SubmitError::Queue(e.to_string()));
    }
    Ok(())
}

async fn find_job(app: &Shared, id: &str) -> Result<Job, ApiError> {
    let id: JobId = id.parse().map_err(|_| ApiError::job_not_found())?;
    match app.jobs.get(id).await {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(ApiError::job_not_found()),
        Err(e) => {
            tracing::error!(job_id = %id, error = %e, "could not read the job");
            Err(ApiError::unavailable("could not read the job", e))
        }
    }
}

/// `GET /v1/compile/{id}`.
pub async fn status(State(app): State<Shared>, Path(id): Path<String>) -> Response {
    let job = match find_job(&app, &id).await {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    let queue = match (&app.queue_insight, job.state) {
        (Some(qi), JobState::Queued) => qi.position(&job).await,
        _ => None,
    };
    let doc = StatusDoc {
        job: &job,
        base: &app.config.public_url,
        queue,
    };
    json(StatusCode::OK, &doc)
}

/// The status document: contract §4.5 Path A, keys sorted like Flask's output.
pub struct StatusDoc<'a> {
    pub job: &'a Job,
    /// Public base URL for the result's download URLs.
    pub base: &'a str,
    pub queue: Option<QueuePosition>,
}

impl Serialize for StatusDoc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let job = self.job;
        let mut m = s.serialize_map(None)?;
        let created = job.created_at.http_date();
        m.serialize_entry("created_at", &created)?;
        // The job is stored and enqueued in one request.
        m.serialize_entry("enqueued_at", &created)?;
        if let Some(q) = &self.queue {
            if let Some(eta) = q.eta_seconds {
                m.serialize_entry("eta_seconds", &eta)?;
            }
        }
        m.serialize_entry("id", &job.id)?;
        m.serialize_entry("is_failed", &job.is_failed())?;
        if let Some(q) = &self.queue {
            m.serialize_entry("jobs_ahead", &q.jobs_ahead)?;
        }
        match (job.state, &job.result, &job.error) {
            (JobState::Finished, Some(r), _) => m.serialize_entry(
                "result",
                &ResultView {
                    r,
                    base: self.base,
                    id: job.id,
                },
            )?,
            (JobState::Failed, _, Some(reason)) => {
                m.serialize_entry("result", &FailedResult { output: reason })?
            }
            _ => m.serialize_entry("result", &())?,
        }
        m.serialize_entry("status", job.state.as_str())?;
        m.end()
    }
}

#[derive(Serialize)]
struct FailedResult<'a> {
    output: &'a str,
}

/// A finished job's result with its download URLs built from the public base URL: a URL is
/// present exactly when the file it names was recorded.
struct ResultView<'a> {
    r: &'a JobResult,
    base: &'a str,
    id: JobId,
}

impl Serialize for ResultView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Destructured without `..`: a new field in JobResult must be decided on here.
        let JobResult {
            id,
            keyboard,
            keyboard_folder,
            keymap,
            layout,
            returncode,
            output,
            firmware,
            firmware_filename,
            keymap_archive,
            source_archive,
            keymap_json,
            command,
            public_firmware,
            firmware_binary_url: _,
            firmware_keymap_url: _,
            firmware_source_url: _,
            failure,
            compile_seconds,
            queue_seconds,
            firmware_size,
            firmware_commit,
            toolchains,
            cached,
            build_date,
            request_hash,
            firmware_sha256,
            keymap_sha256,
            source_archive_sha256,
            flash,
            keymap_errors,
            phases,
        } = self.r;
        let url = |kind: ArtifactKind| {
            [format!(
                "{}/v1/compile/{}/{}",
                self.base,
                self.id,
                kind.route()
            )]
        };
        let mut m = s.serialize_map(None)?;
        if let Some(v) = build_date {
            m.serialize_entry("build_date", v)?;
        }
        if let Some(v) = cached {
            m.serialize_entry("cached", v)?;
        }
        m.serialize_entry("command", command)?;
        if let Some(v) = compile_seconds {
            m.serialize_entry("compile_seconds", v)?;
        }
        if let Some(v) = failure {
            m.serialize_entry("failure", v)?;
        }
        m.serialize_entry("firmware", firmware)?;
        if !firmware_filename.is_empty() {
            m.serialize_entry("firmware_binary_url", &url(ArtifactKind::Firmware))?;
        }
        if let Some(v) = firmware_commit {
            m.serialize_entry("firmware_commit", v)?;
        }
        m.serialize_entry("firmware_filename", firmware_filename)?;
        if !keymap_archive.is_empty() {
            m.serialize_entry("firmware_keymap_url", &url(ArtifactKind::Keymap))?;
        }
        if let Some(v) = firmware_sha256 {
            m.serialize_entry("firmware_sha256", v)?;
        }
        if let Some(v) = firmware_size {
            m.serialize_entry("firmware_size", v)?;
        }
        if !source_archive.is_empty() {
            m.serialize_entry("firmware_source_url", &url(ArtifactKind::Source))?;
        }
        if let Some(v) = flash {
            m.serialize_entry("flash", v)?;
        }
        m.serialize_entry("id", id)?;
        m.serialize_entry("keyboard", keyboard)?;
        if let Some(v) = keyboard_folder {
            m.serialize_entry("keyboard_folder", v)?;
        }
        m.serialize_entry("keymap", keymap)?;
        m.serialize_entry("keymap_archive", keymap_archive)?;
        if let Some(v) = keymap_errors {
            m.serialize_entry("keymap_errors", v)?;
        }
        m.serialize_entry("keymap_json", keymap_json)?;
        if let Some(v) = keymap_sha256 {
            m.serialize_entry("keymap_sha256", v)?;
        }
        m.serialize_entry("layout", layout)?;
        m.serialize_entry("output", output)?;
        if let Some(v) = phases {
            m.serialize_entry("phases", v)?;
        }
        m.serialize_entry("public_firmware", public_firmware)?;
        if let Some(v) = queue_seconds {
            m.serialize_entry("queue_seconds", v)?;
        }
        if let Some(v) = request_hash {
            m.serialize_entry("request_hash", v)?;
        }
        m.serialize_entry("returncode", returncode)?;
        m.serialize_entry("source_archive", source_archive)?;
        if let Some(v) = source_archive_sha256 {
            m.serialize_entry("source_archive_sha256", v)?;
        }
        if let Some(v) = toolchains {
            m.serialize_entry("toolchains", v)?;
        }
        m.end()
    }
}

/// Which file of a job a download route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    Firmware,
    Keymap,
    Source,
}

impl ArtifactKind {
    fn route(self) -> &'static str {
        match self {
            ArtifactKind::Firmware => "download",
            ArtifactKind::Keymap => "keymap",
            ArtifactKind::Source => "source",
        }
    }

    fn file_name(self, r: &JobResult) -> &str {
        match self {
            ArtifactKind::Firmware => &r.firmware_filename,
            ArtifactKind::Keymap => &r.keymap_archive,
            ArtifactKind::Source => &r.source_archive,
        }
    }

    fn what(self) -> &'static str {
        match self {
            ArtifactKind::Firmware => "firmware",
            ArtifactKind::Keymap => "keymap",
            ArtifactKind::Source => "source archive",
        }
    }
}

/// The media type a file is served with, by its extension.
pub fn content_type(file_name: &str) -> &'static str {
    match file_name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("zip") => "application/zip",
        Some("hex") => "text/plain; charset=us-ascii",
        _ => "application/octet-stream",
    }
}

/// `GET /v1/compile/{id}/{download,hex,keymap,source}`.
pub async fn download(
    State(app): State<Shared>,
    Path(id): Path<String>,
    kind: ArtifactKind,
) -> Response {
    match serve_artifact(&app, &id, kind).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    }
}

/// Streams the concatenation of local file ranges. Every file is opened before the response
/// starts, so a missing one is a 404 rather than a truncated 200.
async fn serve_pieces(
    pieces: Vec<FilePiece>,
    meta: &ArtifactMeta,
    len: u64,
) -> std::io::Result<Response> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut reader: Box<dyn tokio::io::AsyncRead + Send + Unpin> = Box::new(tokio::io::empty());
    for piece in pieces {
        let mut file = tokio::fs::File::open(&piece.path).await?;
        file.seek(std::io::SeekFrom::Start(piece.range.start))
            .await?;
        let n = piece.range.end.saturating_sub(piece.range.start);
        reader = Box::new(reader.chain(file.take(n)));
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        reader,
        256 * 1024,
    ));
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&meta.content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&crate::keymap::names::content_disposition(&meta.file_name))
            .unwrap_or(HeaderValue::from_static("attachment")),
    );
    Ok(res)
}

async fn serve_artifact(app: &Shared, id: &str, kind: ArtifactKind) -> Result<Response, ApiError> {
    let job = find_job(app, id).await?;
    tracing::info!(job_id = %job.id, artifact = kind.what(), "download");
    let missing = || ApiError::new(404, format!("No {} for this compile job", kind.what()));
    let local_error = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => missing(),
        _ => ApiError::unavailable("could not open the artifact", e),
    };
    let result = job.result.as_ref().ok_or_else(missing)?;
    let name = kind.file_name(result);
    if name.is_empty() {
        return Err(missing());
    }
    let key = ArtifactKey::for_job(job.id, name).map_err(|_| missing())?;
    let meta = ArtifactMeta {
        content_type: content_type(name).to_string(),
        file_name: result.download_name(name),
    };
    match app.artifacts.download(&key, &meta).await {
        Ok(Download::Redirect(url)) => redirect(&url),
        Ok(Download::File { path, meta, len }) => {
            let whole = vec![FilePiece {
                path,
                range: 0..len,
            }];
            serve_pieces(whole, &meta, len).await.map_err(local_error)
        }
        Ok(Download::Pieces { pieces, meta, len }) => {
            serve_pieces(pieces, &meta, len).await.map_err(local_error)
        }
        Err(ArtifactError::NotFound(_)) => Err(missing()),
        Err(ArtifactError::Backend(e)) => {
            Err(ApiError::unavailable("could not read the artifact", e))
        }
    }
}

/// 302 to `url`.
pub fn redirect(url: &str) -> Result<Response, ApiError> {
    let location = HeaderValue::from_str(url)
        .map_err(|_| ApiError::new(502, "the storage returned an unusable URL"))?;
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::FOUND;
    res.headers_mut().insert(header::LOCATION, location);
    Ok(res)
}
