//! The ports: what Oven needs from storage and messaging, as traits.
//!
//! Two adapter sets implement them: AWS (DynamoDB, SQS, S3) and local (SQLite, a durable SQLite
//! queue, a directory). Both are run through the same conformance tests, so the router and the
//! worker behave the same on either.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::job::{Conflict, Job, JobId, Transition};

/// A failure of the storage or messaging backend itself (network, throttling, disk), as
/// opposed to a domain outcome such as a conflict. Callers retry these or answer 503.
#[derive(Debug, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct BackendError {
    pub backend: &'static str,
    pub message: String,
}

impl BackendError {
    pub fn new(backend: &'static str, err: impl std::fmt::Display) -> Self {
        BackendError {
            backend,
            message: err.to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("a job with id {0} already exists")]
    Exists(JobId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("no job {0}")]
    NotFound(JobId),
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The job table.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Stores a new job; fails with [`CreateError::Exists`] if the id is taken.
    async fn create(&self, job: &Job) -> Result<(), CreateError>;

    /// The job, or `None` if it never existed or has expired (`expires_at` in the past).
    async fn get(&self, id: JobId) -> Result<Option<Job>, BackendError>;

    /// Applies `transition` atomically, only if the stored job satisfies its precondition;
    /// returns the job as stored afterwards.
    async fn transition(&self, id: JobId, transition: Transition) -> Result<Job, TransitionError>;

    /// Jobs in `running` whose lease ended before `before`, oldest first (for the reaper).
    async fn expired_leases(
        &self,
        before: crate::time::Millis,
        limit: usize,
    ) -> Result<Vec<Job>, BackendError>;

    /// Cheap round trip used by the health check.
    async fn ping(&self) -> Result<(), BackendError>;
}

/// What travels through the queue: just enough to find the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    pub job_id: JobId,
}

/// A message handed to a worker, with what it needs to acknowledge it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: QueueMessage,
    /// Opaque handle for [`JobQueue::ack`] (SQS receipt handle, local row id).
    pub receipt: String,
    /// How many times this message has been delivered, this time included.
    pub receive_count: u32,
}

/// The job queue: at-least-once delivery with a visibility timeout.
#[async_trait]
pub trait JobQueue: Send + Sync + 'static {
    async fn send(&self, message: &QueueMessage) -> Result<(), BackendError>;

    /// Up to `max` messages, waiting up to `wait` for the first. Each stays invisible to
    /// other receivers for the queue's visibility timeout, then comes back unless acked.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError>;

    /// Deletes a delivered message for good.
    async fn ack(&self, receipt: &str) -> Result<(), BackendError>;

    /// Keeps a delivered message invisible for `timeout` from now (SQS
    /// `ChangeMessageVisibility`; whole seconds, rounded up, at most 12 hours). The worker calls
    /// it with every lease renewal, so a message comes back soon after its worker dies, and
    /// never while the worker lives. A receipt whose message was acknowledged or delivered
    /// again since changes nothing (locally) or is refused (SQS): callers log and carry on.
    async fn extend_visibility(&self, receipt: &str, timeout: Duration)
        -> Result<(), BackendError>;

    /// Messages waiting (not in flight), as the queue reports it.
    async fn waiting(&self) -> Result<u64, BackendError>;
}

/// Where an artifact lives: `<job id>/<file name>`, or a shared object such as a base source
/// archive per firmware commit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArtifactKey(String);

#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid artifact key {0:?}")]
pub struct InvalidArtifactKey(pub String);

impl ArtifactKey {
    /// Keys are relative paths of `[A-Za-z0-9._-]` segments, no `..`: they become S3 keys and
    /// local file paths.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidArtifactKey> {
        let key = key.into();
        let ok = !key.is_empty()
            && key.len() <= 512
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && seg != "."
                    && seg != ".."
                    && seg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            });
        if ok {
            Ok(ArtifactKey(key))
        } else {
            Err(InvalidArtifactKey(key))
        }
    }

    /// The key of a job's file.
    pub fn for_job(id: JobId, file_name: &str) -> Result<Self, InvalidArtifactKey> {
        Self::new(format!("{id}/{file_name}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a stored artifact is offered for download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactMeta {
    pub content_type: String,
    /// The name the browser saves it as (`Content-Disposition: attachment; filename=...`).
    pub file_name: String,
}

/// The bytes of an artifact to store.
#[derive(Debug, Clone)]
pub enum ArtifactBody {
    Bytes(Bytes),
    /// A file on local disk, streamed rather than read into memory (source archives).
    File(PathBuf),
}

/// One piece of an artifact assembled from others without moving their bytes through the
/// worker (S3 `UploadPartCopy`; a local file copy).
#[derive(Debug, Clone)]
pub enum Part {
    /// A byte range of an artifact already stored.
    Copy {
        from: ArtifactKey,
        range: Range<u64>,
    },
    Bytes(Bytes),
}

/// What the download route answers.
#[derive(Debug)]
pub enum Download {
    /// 302 to this URL (a presigned S3 GET).
    Redirect(String),
    /// Serve this local file (the local runner streams it).
    File {
        path: PathBuf,
        meta: ArtifactMeta,
        len: u64,
    },
    /// Serve the concatenation of these byte ranges of local files (a composed artifact the
    /// local store keeps as links to its pieces rather than as a copy).
    Pieces {
        pieces: Vec<FilePiece>,
        meta: ArtifactMeta,
        len: u64,
    },
}

/// A byte range of a local file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePiece {
    pub path: PathBuf,
    pub range: Range<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("no artifact {0}")]
    NotFound(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Object storage for firmware, keymaps, source archives and logs.
#[async_trait]
pub trait ArtifactStore: Send + Sync + 'static {
    async fn put(
        &self,
        key: &ArtifactKey,
        body: ArtifactBody,
        meta: &ArtifactMeta,
    ) -> Result<(), BackendError>;

    /// Stores `key` as the concatenation of `parts`.
    async fn compose(
        &self,
        key: &ArtifactKey,
        parts: Vec<Part>,
        meta: &ArtifactMeta,
    ) -> Result<(), ArtifactError>;

    /// Size in bytes, or `None` if absent.
    async fn size(&self, key: &ArtifactKey) -> Result<Option<u64>, BackendError>;

    /// The whole artifact (small ones: logs, cached results, keymaps).
    async fn get(&self, key: &ArtifactKey) -> Result<Bytes, ArtifactError>;

    /// How to hand it to a browser: a presigned redirect or a local file.
    async fn download(
        &self,
        key: &ArtifactKey,
        meta: &ArtifactMeta,
    ) -> Result<Download, ArtifactError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_keys_are_confined() {
        assert!(ArtifactKey::new("0f/dz60_default.hex").is_ok());
        assert!(ArtifactKey::new("sources/abc123.zip").is_ok());
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/./b", "a b", "a\\b", "x/",
        ] {
            assert!(ArtifactKey::new(bad).is_err(), "{bad}");
        }
    }
}
