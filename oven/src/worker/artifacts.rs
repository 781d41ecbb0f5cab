//! Artifact storage of a finished build: the firmware, the keymap, the log and the GPL source
//! archive under the job's keys, and results served from the cache by copying an earlier job's
//! artifacts to this job's keys.

use bytes::Bytes;

use super::{cache, source, text_meta, TreeInfo, Worker, WorkerError};
use crate::job::{Job, JobResult};
use crate::ports::{ArtifactBody, ArtifactError, ArtifactKey};

/// What a job stored: (file name, content type) of each artifact, the cache entry's list.
pub type Stored = Vec<(String, String)>;

impl Worker {
    /// Stores the artifacts of a build of `job`: the firmware (if any), the keymap as
    /// submitted (`payload`), the log, and the source archive; sets the result's URLs.
    pub(super) async fn store_artifacts(
        &self,
        job: &Job,
        tree: &TreeInfo,
        result: &mut JobResult,
        payload: Bytes,
        firmware: Option<&Bytes>,
    ) -> Result<Stored, WorkerError> {
        let started = std::time::Instant::now();
        let mut source_seconds = None;
        let mut stored = Vec::new();
        let firmware_display = result.download_name(&result.firmware_filename);
        let keymap_display = result.download_name(&result.keymap_archive);
        let put = |name: String, display: &str, ct: &'static str, body: Bytes| {
            let artifacts = self.artifacts.clone();
            let id = job.id;
            let meta = text_meta(ct, display);
            async move {
                let key = ArtifactKey::for_job(id, &name)?;
                artifacts
                    .put(&key, ArtifactBody::Bytes(body), &meta)
                    .await?;
                Ok::<_, WorkerError>((name, ct.to_string()))
            }
        };
        if let Some(fw) = firmware {
            stored.push(
                put(
                    result.firmware_filename.clone(),
                    &firmware_display,
                    "application/octet-stream",
                    fw.clone(),
                )
                .await?,
            );
            result.firmware_binary_url = self.url(job.id, "download");
        }
        stored.push(
            put(
                result.keymap_archive.clone(),
                &keymap_display,
                "application/json",
                payload.clone(),
            )
            .await?,
        );
        result.firmware_keymap_url = self.url(job.id, "keymap");
        stored.push(
            put(
                "build.log".into(),
                "build.log",
                "text/plain; charset=utf-8",
                Bytes::from(result.output.clone()),
            )
            .await?,
        );
        if self.cfg.source_archives {
            if let Some(base) = self.base_index().await? {
                let mut files = vec![source::JobFile {
                    name: result.keymap_archive.clone(),
                    data: payload,
                }];
                if let Some(fw) = firmware {
                    files.push(source::JobFile {
                        name: result.firmware_filename.clone(),
                        data: fw.clone(),
                    });
                }
                let key = ArtifactKey::for_job(job.id, &result.source_archive)?;
                let t = std::time::Instant::now();
                result.source_archive_sha256 = source::compose_job_archive(
                    &*self.artifacts,
                    &tree.commit,
                    &base,
                    &files,
                    &key,
                    &result.download_name(&result.source_archive),
                )
                .await?;
                let seconds = t.elapsed().as_secs_f64();
                source_seconds = Some(seconds);
                tracing::info!(job = %job.id, seconds, "source archive composed");
                stored.push((result.source_archive.clone(), "application/zip".into()));
                result.firmware_source_url = self.url(job.id, "source");
            }
        }
        if let Some(p) = &mut result.phases {
            let total = started.elapsed().as_secs_f64();
            p.store = Some((total - source_seconds.unwrap_or(0.0)).max(0.0));
            p.source_archive = source_seconds;
        }
        Ok(stored)
    }

    /// A cached result for this job, its artifacts copied to the job's own keys.
    pub(super) async fn cached_result(
        &self,
        job: &Job,
        key: &ArtifactKey,
        fresh: &JobResult,
    ) -> Result<Option<JobResult>, WorkerError> {
        let Some(entry) = cache::lookup(&*self.artifacts, key).await? else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        let mut copies = Vec::new();
        for (name, ct) in &entry.artifacts {
            let from = ArtifactKey::for_job(entry.job_id, name)?;
            // The first job's artifacts expire with it; then the cache entry is stale.
            let Some(size) = self.artifacts.size(&from).await? else {
                return Ok(None);
            };
            copies.push((from, size, name, ct));
        }
        for (from, size, name, ct) in copies {
            let to = ArtifactKey::for_job(job.id, name)?;
            let parts = vec![crate::ports::Part::Copy {
                from,
                range: 0..size,
            }];
            match self
                .artifacts
                .compose(
                    &to,
                    parts,
                    &text_meta(ct, &entry.result.download_name(name)),
                )
                .await
            {
                Ok(()) => {}
                Err(ArtifactError::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
        let mut r = entry.result;
        r.id = fresh.id.clone();
        r.queue_seconds = fresh.queue_seconds;
        r.cached = Some(true);
        // This job's own phases: its wait, and copying the first job's artifacts.
        r.phases = Some(crate::job::Phases {
            queue: fresh.queue_seconds,
            store: Some(started.elapsed().as_secs_f64()),
            ..Default::default()
        });
        if r.firmware_binary_url.is_some() {
            r.firmware_binary_url = self.url(job.id, "download");
        }
        if r.firmware_keymap_url.is_some() {
            r.firmware_keymap_url = self.url(job.id, "keymap");
        }
        if r.firmware_source_url.is_some() {
            r.firmware_source_url = self.url(job.id, "source");
        }
        Ok(Some(r))
    }
}
