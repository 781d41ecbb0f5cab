//! The local artifact store: one file per key under `<data dir>/artifacts/`.
//!
//! Every write goes to a temporary file under `<data dir>/tmp/` (same file system) that is
//! fsynced and then renamed over the target, so a reader sees the old file or the whole new one,
//! never half of it. Content type and file name are not stored: [`ArtifactStore::download`]
//! receives them and passes them through to the runner, which sets the headers.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::job::JobId;
use crate::ports::{
    ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError, Download,
    Part,
};

const BACKEND: &str = "files";

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, e)
}

/// Artifacts as files in a directory.
#[derive(Debug, Clone)]
pub struct LocalArtifacts {
    root: PathBuf,
    tmp: PathBuf,
}

impl LocalArtifacts {
    /// Uses `<data_dir>/artifacts` (and `<data_dir>/tmp` for writes in progress).
    pub fn open(data_dir: &Path) -> io::Result<LocalArtifacts> {
        let root = data_dir.join("artifacts");
        let tmp = data_dir.join("tmp");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&tmp)?;
        Ok(LocalArtifacts { root, tmp })
    }

    /// Where `key` is stored (keys are validated relative paths, so this stays under the root).
    pub fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    /// Deletes every artifact of job `id` (after the job expired).
    pub async fn delete_job(&self, id: JobId) -> Result<(), BackendError> {
        let dir = self.root.join(id.to_string());
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(backend(format!("{}: {e}", dir.display()))),
        }
    }

    /// Writes `fill`'s output to `key` atomically.
    async fn write_with(
        &self,
        key: &ArtifactKey,
        fill: impl FnOnce(&mut File) -> Result<(), ArtifactError> + Send + 'static,
    ) -> Result<(), ArtifactError> {
        let target = self.path(key);
        let tmp_dir = self.tmp.clone();
        let join = tokio::task::spawn_blocking(move || -> Result<(), ArtifactError> {
            let parent = target
                .parent()
                .ok_or_else(|| backend("artifact path has no parent"))?;
            std::fs::create_dir_all(parent).map_err(backend)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir).map_err(backend)?;
            fill(tmp.as_file_mut())?;
            tmp.as_file().sync_all().map_err(backend)?;
            tmp.persist(&target).map_err(|e| backend(e.error))?;
            Ok(())
        })
        .await;
        join.map_err(backend)?
    }
}

fn not_found_or(key: &str, e: io::Error) -> ArtifactError {
    if e.kind() == io::ErrorKind::NotFound {
        ArtifactError::NotFound(key.to_string())
    } else {
        ArtifactError::Backend(backend(format!("{key}: {e}")))
    }
}

#[async_trait]
impl ArtifactStore for LocalArtifacts {
    async fn put(
        &self,
        key: &ArtifactKey,
        body: ArtifactBody,
        _meta: &ArtifactMeta,
    ) -> Result<(), BackendError> {
        let r = self
            .write_with(key, move |out| match body {
                ArtifactBody::Bytes(b) => out.write_all(&b).map_err(|e| backend(e).into()),
                ArtifactBody::File(path) => {
                    let mut src = File::open(&path)
                        .map_err(|e| backend(format!("{}: {e}", path.display())))?;
                    io::copy(&mut src, out).map_err(backend)?;
                    Ok(())
                }
            })
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(ArtifactError::Backend(e)) => Err(e),
            Err(e @ ArtifactError::NotFound(_)) => Err(backend(e)),
        }
    }

    async fn compose(
        &self,
        key: &ArtifactKey,
        parts: Vec<Part>,
        _meta: &ArtifactMeta,
    ) -> Result<(), ArtifactError> {
        let root = self.root.clone();
        self.write_with(key, move |out| {
            for part in parts {
                match part {
                    Part::Bytes(b) => out.write_all(&b).map_err(backend)?,
                    Part::Copy { from, range } => {
                        let mut src = File::open(root.join(from.as_str()))
                            .map_err(|e| not_found_or(from.as_str(), e))?;
                        let len = src.metadata().map_err(backend)?.len();
                        if range.start > range.end || range.end > len {
                            return Err(backend(format!(
                                "range {}..{} outside {} ({len} bytes)",
                                range.start,
                                range.end,
                                from.as_str()
                            ))
                            .into());
                        }
                        src.seek(SeekFrom::Start(range.start)).map_err(backend)?;
                        let want = range.end - range.start;
                        let copied = io::copy(&mut src.take(want), out).map_err(backend)?;
                        if copied != want {
                            return Err(
                                backend(format!("{} shrank while copying", from.as_str())).into()
                            );
                        }
                    }
                }
            }
            Ok(())
        })
        .await
    }

    async fn size(&self, key: &ArtifactKey) -> Result<Option<u64>, BackendError> {
        match tokio::fs::metadata(self.path(key)).await {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(format!("{}: {e}", key.as_str()))),
        }
    }

    async fn get(&self, key: &ArtifactKey) -> Result<Bytes, ArtifactError> {
        let path = self.path(key);
        let data = tokio::task::spawn_blocking(move || {
            let mut f = File::open(&path)?;
            if !f.metadata()?.is_file() {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            let mut v = Vec::new();
            f.read_to_end(&mut v)?;
            Ok(v)
        })
        .await
        .map_err(backend)?
        .map_err(|e| not_found_or(key.as_str(), e))?;
        Ok(Bytes::from(data))
    }

    async fn download(
        &self,
        key: &ArtifactKey,
        meta: &ArtifactMeta,
    ) -> Result<Download, ArtifactError> {
        let path = self.path(key);
        let m = tokio::fs::metadata(&path)
            .await
            .map_err(|e| not_found_or(key.as_str(), e))?;
        if !m.is_file() {
            return Err(ArtifactError::NotFound(key.as_str().to_string()));
        }
        Ok(Download::File {
            path,
            meta: meta.clone(),
            len: m.len(),
        })
    }
}
