//! The local artifact store: one file per key under `<data dir>/artifacts/`.
//!
//! Every write goes to a temporary file under `<data dir>/tmp/` (same file system) that is
//! fsynced and then renamed over the target, so a reader sees the old file or the whole new one,
//! never half of it. Content type and file name are not stored: [`ArtifactStore::download`]
//! receives them and passes them through to the runner, which sets the headers.
//!
//! A composed artifact that would copy a large range (a job's source archive is the whole
//! base archive of the tree plus a few kilobytes) is not copied: it is stored as a directory
//! `<key>@parts/` (`@` never occurs in a key) holding hard links to the source files, a file
//! with its own bytes, and `manifest.json` listing the ranges in order. Hard links make it
//! independent of its sources (deleting or replacing them leaves the inode it links to), and
//! artifacts are never written in place, so a linked file never changes. Such an artifact is
//! downloaded as [`Download::Pieces`], streamed straight from the linked files.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::job::JobId;
use crate::ports::{
    ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError, Download,
    FilePiece, Part,
};

const BACKEND: &str = "files";

/// Ranges at least this long are linked rather than copied when composing.
const LINK_AT_LEAST: u64 = 1 << 20;
const PARTS_SUFFIX: &str = "@parts";
const MANIFEST: &str = "manifest.json";

/// The ranges a composed artifact is made of; `file` names a file in its `@parts` directory.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    len: u64,
    pieces: Vec<ManifestPiece>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ManifestPiece {
    file: String,
    start: u64,
    end: u64,
}

/// Where the bytes of `key` are: its file, or the pieces of its `@parts` directory.
fn locate(root: &Path, key: &str) -> io::Result<(Vec<FilePiece>, u64)> {
    let plain = root.join(key);
    match std::fs::metadata(&plain) {
        Ok(m) if m.is_file() => {
            let len = m.len();
            return Ok((
                vec![FilePiece {
                    path: plain,
                    range: 0..len,
                }],
                len,
            ));
        }
        Ok(_) => return Err(io::Error::from(io::ErrorKind::NotFound)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = root.join(format!("{key}{PARTS_SUFFIX}"));
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join(MANIFEST))?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut pieces = Vec::with_capacity(manifest.pieces.len());
    for p in manifest.pieces {
        // Names are ours (`l<n>`, `own`); anything else is a damaged manifest.
        if p.file.contains('/') || p.file.starts_with('.') || p.start > p.end {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad manifest"));
        }
        pieces.push(FilePiece {
            path: dir.join(&p.file),
            range: p.start..p.end,
        });
    }
    Ok((pieces, manifest.len))
}

/// The pieces of `pieces` (concatenated) that cover `range`.
fn slice(pieces: &[FilePiece], range: Range<u64>) -> Vec<FilePiece> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for p in pieces {
        let len = p.range.end - p.range.start;
        let (lo, hi) = (range.start.max(at), range.end.min(at + len));
        if lo < hi {
            out.push(FilePiece {
                path: p.path.clone(),
                range: p.range.start + (lo - at)..p.range.start + (hi - at),
            });
        }
        at += len;
    }
    out
}

/// Appends `range` of the file at `path` to `out`.
fn copy_range(path: &Path, range: Range<u64>, out: &mut File) -> io::Result<()> {
    let mut src = File::open(path)?;
    src.seek(SeekFrom::Start(range.start))?;
    let want = range.end - range.start;
    // File to File: std uses copy_file_range(2) here, so the bytes stay in the kernel.
    let copied = io::copy(&mut src.take(want), out)?;
    if copied != want {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{} shrank while copying", path.display()),
        ));
    }
    Ok(())
}

/// A composed artifact, resolved: each piece is our own bytes or a range of a stored file.
enum Resolved {
    Own(Bytes),
    Range(FilePiece),
}

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
            // A composed version of the key linked to its pieces is replaced by this file.
            remove_dir_if_any(&parts_dir_of(&target)).map_err(backend)?;
            Ok(())
        })
        .await;
        join.map_err(backend)?
    }
}

fn parts_dir_of(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_os_string();
    name.push(PARTS_SUFFIX);
    PathBuf::from(name)
}

fn remove_dir_if_any(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn remove_file_if_any(file: &Path) -> io::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl LocalArtifacts {
    /// Writes the resolved pieces one after the other into one new file.
    async fn compose_by_copy(
        &self,
        key: &ArtifactKey,
        resolved: Vec<Resolved>,
    ) -> Result<(), ArtifactError> {
        let name = key.as_str().to_string();
        self.write_with(key, move |out| {
            for r in resolved {
                match r {
                    Resolved::Own(b) => out.write_all(&b).map_err(backend)?,
                    Resolved::Range(p) => {
                        copy_range(&p.path, p.range, out).map_err(|e| not_found_or(&name, e))?
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Stores `resolved` as `<target>@parts/`: large ranges as hard links, the rest in one file.
/// On failure nothing is changed.
fn link_composed(resolved: &[Resolved], target: &Path, tmp_dir: &Path) -> io::Result<()> {
    let stage = tempfile::Builder::new()
        .prefix("parts")
        .tempdir_in(tmp_dir)?;
    let mut own = File::create(stage.path().join("own"))?;
    let mut own_len = 0u64;
    let mut manifest = Manifest {
        len: 0,
        pieces: Vec::new(),
    };
    let mut linked: Vec<(PathBuf, String)> = Vec::new();
    let push_own = |manifest: &mut Manifest, start: u64, end: u64| {
        // Consecutive own bytes make one range.
        match manifest.pieces.last_mut() {
            Some(last) if last.file == "own" && last.end == start => last.end = end,
            _ => manifest.pieces.push(ManifestPiece {
                file: "own".into(),
                start,
                end,
            }),
        }
    };
    for r in resolved {
        match r {
            Resolved::Own(b) => {
                own.write_all(b)?;
                push_own(&mut manifest, own_len, own_len + b.len() as u64);
                own_len += b.len() as u64;
                manifest.len += b.len() as u64;
            }
            Resolved::Range(p) if p.range.end - p.range.start >= LINK_AT_LEAST => {
                let name = match linked.iter().find(|(src, _)| *src == p.path) {
                    Some((_, name)) => name.clone(),
                    None => {
                        let name = format!("l{}", linked.len());
                        std::fs::hard_link(&p.path, stage.path().join(&name))?;
                        linked.push((p.path.clone(), name.clone()));
                        name
                    }
                };
                manifest.pieces.push(ManifestPiece {
                    file: name,
                    start: p.range.start,
                    end: p.range.end,
                });
                manifest.len += p.range.end - p.range.start;
            }
            Resolved::Range(p) => {
                copy_range(&p.path, p.range.clone(), &mut own)?;
                let n = p.range.end - p.range.start;
                push_own(&mut manifest, own_len, own_len + n);
                own_len += n;
                manifest.len += n;
            }
        }
    }
    own.sync_all()?;
    let json = serde_json::to_vec(&manifest).map_err(io::Error::other)?;
    let mut m = File::create(stage.path().join(MANIFEST))?;
    m.write_all(&json).and_then(|()| m.sync_all())?;
    File::open(stage.path()).and_then(|d| d.sync_all())?;
    let parent = target
        .parent()
        .ok_or_else(|| io::Error::other("artifact path has no parent"))?;
    std::fs::create_dir_all(parent)?;
    let dir = parts_dir_of(target);
    // A directory cannot be renamed over a non-empty one: move an older version aside first.
    if dir.exists() {
        let old = tempfile::Builder::new().prefix("old").tempdir_in(tmp_dir)?;
        std::fs::rename(&dir, old.path().join("x"))?;
    }
    let stage = stage.keep();
    if let Err(e) = std::fs::rename(&stage, &dir) {
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    // The plain file of an older version would hide this one.
    remove_file_if_any(target)?;
    Ok(())
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
        let (root, tmp_dir) = (self.root.clone(), self.tmp.clone());
        let resolve = tokio::task::spawn_blocking(move || -> Result<_, ArtifactError> {
            let mut resolved = Vec::new();
            for part in parts {
                match part {
                    Part::Bytes(b) => resolved.push(Resolved::Own(b)),
                    Part::Copy { from, range } => {
                        let (pieces, len) = locate(&root, from.as_str())
                            .map_err(|e| not_found_or(from.as_str(), e))?;
                        if range.start > range.end || range.end > len {
                            return Err(backend(format!(
                                "range {}..{} outside {} ({len} bytes)",
                                range.start,
                                range.end,
                                from.as_str()
                            ))
                            .into());
                        }
                        resolved.extend(slice(&pieces, range).into_iter().map(Resolved::Range));
                    }
                }
            }
            Ok(resolved)
        });
        let resolved = resolve.await.map_err(backend)??;
        let large = resolved.iter().any(
            |r| matches!(r, Resolved::Range(p) if p.range.end - p.range.start >= LINK_AT_LEAST),
        );
        if large {
            let target = self.path(key);
            let (linked, resolved) = tokio::task::spawn_blocking(move || {
                (link_composed(&resolved, &target, &tmp_dir), resolved)
            })
            .await
            .map_err(backend)?;
            match linked {
                Ok(()) => return Ok(()),
                // A source vanished meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(ArtifactError::NotFound(key.as_str().to_string()))
                }
                // Another file system or no hard links: copy after all.
                Err(e) => {
                    tracing::debug!(error = %e, "composing by copy: cannot link");
                    return self.compose_by_copy(key, resolved).await;
                }
            }
        }
        self.compose_by_copy(key, resolved).await
    }

    async fn size(&self, key: &ArtifactKey) -> Result<Option<u64>, BackendError> {
        let root = self.root.clone();
        let name = key.as_str().to_string();
        let found = tokio::task::spawn_blocking(move || locate(&root, &name))
            .await
            .map_err(backend)?;
        match found {
            Ok((_, len)) => Ok(Some(len)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(backend(format!("{}: {e}", key.as_str()))),
        }
    }

    async fn get(&self, key: &ArtifactKey) -> Result<Bytes, ArtifactError> {
        let root = self.root.clone();
        let name = key.as_str().to_string();
        let data = tokio::task::spawn_blocking(move || {
            let (pieces, len) = locate(&root, &name)?;
            let mut v = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            for p in pieces {
                let mut f = File::open(&p.path)?;
                f.seek(SeekFrom::Start(p.range.start))?;
                let want = p.range.end - p.range.start;
                if f.take(want).read_to_end(&mut v)? as u64 != want {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
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
        let root = self.root.clone();
        let name = key.as_str().to_string();
        let (mut pieces, len) = tokio::task::spawn_blocking(move || locate(&root, &name))
            .await
            .map_err(backend)?
            .map_err(|e| not_found_or(key.as_str(), e))?;
        if pieces.len() == 1 && pieces[0].range == (0..len) {
            let path = pieces.remove(0).path;
            return Ok(Download::File {
                path,
                meta: meta.clone(),
                len,
            });
        }
        Ok(Download::Pieces {
            pieces,
            meta: meta.clone(),
            len,
        })
    }
}
