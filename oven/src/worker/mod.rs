//! The compile worker: takes a job from the queue, builds its firmware in the qmk_firmware tree
//! and stores the result, on Lambda (one SQS record at a time) and in `oven serve` (a loop over
//! the local queue) alike.
//!
//! Delivery is at least once, so every step is guarded by the job's state machine: a redelivered
//! message for a job someone else holds under a live lease, or one already done, builds nothing.
//! A compile that fails is a *result* (`finished`, returncode ≠ 0, a `failure` class and the
//! log); only infrastructure errors are errors, so that the queue delivers the message again.
//! See [`runner`] for how the build itself is confined.

mod artifacts;
pub mod batch;
pub mod build;
pub mod cache;
pub mod eta;
pub mod precheck;
pub mod runner;
pub mod source;
pub mod tree;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::job::{Job, JobId, JobResult, JobState, Transition};
use crate::keymap::names;
use crate::ports::{
    ArtifactError, ArtifactMeta, ArtifactStore, BackendError, JobQueue, JobStore, QueueMessage,
    TransitionError,
};
use crate::telemetry::{self, FailureClass, Metric};
use crate::time::Millis;

pub use build::{classify_failure, BUILD_KEYMAP};
pub use eta::{eta, Eta, EtaInsight};

use build::TreeInfo;

/// A job the worker will not build, and what the result says about it.
struct Refused {
    returncode: i32,
    failure: &'static str,
    message: String,
    keyboard_folder: Option<String>,
}

/// Return codes Oven adds to the contract's (§6.2): >0 is the build's own exit code.
pub mod returncode {
    /// The keyboard is not in the tree (as upstream).
    pub const UNKNOWN_KEYBOARD: i32 = -1;
    /// The build succeeded but left no firmware file (upstream's misspelt `return_code`).
    pub const NO_FIRMWARE: i32 = -4;
    /// The build ran past the time limit and was killed.
    pub const TIMEOUT: i32 = -5;
    /// The worker has no qmk_firmware tree, or the request cannot be built at all.
    pub const NOT_BUILDABLE: i32 = -6;
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The tree; `None` makes every job finish with [`tree::NO_TREE_MESSAGE`].
    pub qmk_home: Option<PathBuf>,
    /// The build command (`qmk` or a compatible CLI).
    pub qmk: PathBuf,
    /// PATH given to builds (the only inherited variable).
    pub path: String,
    /// Writable scratch: `jobs/<id>`, `ccache/`, `sources/`, `qmk_firmware/` (the writable
    /// overlay of the tree, see [`tree::overlay`], with the warm `.build` inside).
    pub work_root: PathBuf,
    /// Base of the URLs in results, without a trailing slash.
    pub public_url: String,
    pub compile_timeout: Duration,
    /// Added to the compile timeout for the lease (uploads, archive).
    pub lease_margin: Duration,
    /// `-j` for the build.
    pub jobs: usize,
    pub log_cap: usize,
    /// After this many starts a job whose worker keeps vanishing is failed by the reaper.
    pub max_attempts: u32,
    /// Store a GPL source archive per job.
    pub source_archives: bool,
}

impl WorkerConfig {
    /// From the environment (see [`crate::config`]); `qmk_home` is `--qmk-home` if given.
    pub fn from_env(qmk_home: Option<&Path>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let secs = env(crate::config::COMPILE_TIMEOUT_SECS)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(crate::config::DEFAULT_COMPILE_TIMEOUT_SECS);
        WorkerConfig {
            qmk_home: tree::find_qmk_home(qmk_home),
            qmk: env(crate::config::QMK_BIN)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("qmk")),
            path: env("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
            work_root: env(crate::config::WORK_DIR)
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("oven")),
            public_url: env(crate::config::PUBLIC_URL)
                .unwrap_or_else(|| "http://127.0.0.1:8080".into())
                .trim_end_matches('/')
                .to_string(),
            compile_timeout: Duration::from_secs(secs),
            lease_margin: Duration::from_secs(120),
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            log_cap: 1 << 20,
            max_attempts: 3,
            source_archives: true,
        }
    }
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Processed {
    /// This worker finished the job (successfully or not).
    Finished { returncode: i32, cached: bool },
    /// The job was not built here: done already, or held by a live worker. Ack the message.
    Duplicate(JobState),
    /// No such job (expired or never created). Ack the message.
    Missing,
}

/// Errors that must make the queue deliver the message again.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("artifact store: {0}")]
    Artifact(#[from] ArtifactError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error("worker I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot run the build: {0}")]
    Run(#[from] runner::RunError),
}

impl From<crate::ports::InvalidArtifactKey> for WorkerError {
    fn from(e: crate::ports::InvalidArtifactKey) -> Self {
        WorkerError::Backend(BackendError::new("artifact key", e))
    }
}

/// The worker: ports, configuration, and what it learnt about its tree.
pub struct Worker {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    artifacts: Arc<dyn ArtifactStore>,
    cfg: WorkerConfig,
    tree: Option<TreeInfo>,
    base: Mutex<Option<source::BaseIndex>>,
    /// One build at a time per worker: builds share the warm build directory.
    building: Mutex<()>,
}

fn on_path(path: &str, tool: &str) -> bool {
    path.split(':')
        .any(|d| !d.is_empty() && Path::new(d).join(tool).is_file())
}

fn text_meta(ct: &str, name: &str) -> ArtifactMeta {
    ArtifactMeta {
        content_type: ct.into(),
        file_name: name.into(),
    }
}

fn request_str<'a>(req: &'a Value, field: &str) -> &'a str {
    req.get(field).and_then(Value::as_str).unwrap_or("")
}

/// What a finished job reports: its queue wait, and either a cache hit or a compile (its
/// duration, and success or its failure class).
fn finish_metrics(job: &Job, result: &JobResult) -> Vec<Metric> {
    let mut out = Vec::new();
    if let Some(started) = job.started_at {
        let wait = Duration::from_millis((started.0 - job.created_at.0).max(0) as u64);
        out.push(Metric::QueueWait(wait));
    }
    if result.cached == Some(true) {
        out.push(Metric::CacheHit);
    } else if let Some(secs) = result.compile_seconds {
        out.push(Metric::CompileDuration(Duration::from_secs_f64(
            secs.max(0.0),
        )));
    }
    if let Some(phases) = &result.phases {
        out.extend(phases.present().into_iter().map(|(phase, secs)| {
            Metric::PhaseDuration(phase, Duration::from_secs_f64(secs.max(0.0)))
        }));
    }
    if result.returncode == 0 {
        out.push(Metric::JobFinished);
    } else {
        let class = result.failure.as_deref().unwrap_or("compile_error");
        out.push(Metric::Failure(FailureClass::new(class)));
    }
    out
}

impl Worker {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        artifacts: Arc<dyn ArtifactStore>,
        cfg: WorkerConfig,
    ) -> Self {
        runner::protect_worker_secrets();
        let tree = cfg.qmk_home.as_ref().map(|home| TreeInfo {
            home: home.clone(),
            commit: tree::firmware_commit(home),
            toolchains: tree::toolchains(&cfg.path, &cfg.qmk),
            ccache: on_path(&cfg.path, "ccache"),
            aliases: Arc::new(tree::load_aliases(home)),
        });
        Worker {
            store,
            queue,
            artifacts,
            cfg,
            tree,
            base: Mutex::new(None),
            building: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// The firmware commit of the tree, if there is one.
    pub fn firmware_commit(&self) -> Option<&str> {
        self.tree.as_ref().map(|t| t.commit.as_str())
    }

    fn url(&self, id: JobId, what: &str) -> Option<Vec<String>> {
        Some(vec![format!(
            "{}/v1/compile/{id}/{what}",
            self.cfg.public_url
        )])
    }

    /// The result fields every finished job has (contract §6.3), before the build.
    fn base_result(&self, job: &Job) -> JobResult {
        let req = &job.request;
        let (kb, km) = (request_str(req, "keyboard"), request_str(req, "keymap"));
        let keymap_archive = format!(
            "{}.json",
            names::ascii_component(&format!("{}-{km}", kb.replace('/', "-")))
        );
        JobResult {
            id: job.id.to_string(),
            keyboard: kb.to_string(),
            keymap: km.to_string(),
            layout: request_str(req, "layout").to_string(),
            returncode: -2,
            output: "Unknown error".into(),
            firmware: None,
            firmware_filename: String::new(),
            source_archive: format!(
                "{}.zip",
                names::ascii_component(&format!("qmk_firmware-{}-{km}", kb.replace('/', "-")))
            ),
            keymap_json: serde_json::to_string(req).unwrap_or_default(),
            command: vec!["qmk".into(), "compile".into(), keymap_archive.clone()],
            keymap_archive,
            public_firmware: false,
            firmware_commit: self.tree.as_ref().map(|t| t.commit.clone()),
            toolchains: self.tree.as_ref().map(|t| t.toolchains.clone()),
            queue_seconds: job
                .started_at
                .map(|s| s.seconds_since(job.created_at).max(0.0)),
            ..Default::default()
        }
    }

    /// Handles one queue message. `Ok` means: acknowledge it. Everything it logs carries the
    /// job id.
    pub async fn process(&self, message: &QueueMessage) -> Result<Processed, WorkerError> {
        use tracing::Instrument;
        self.process_in_span(message)
            .instrument(telemetry::job_span(message.job_id))
            .await
    }

    async fn process_in_span(&self, message: &QueueMessage) -> Result<Processed, WorkerError> {
        let id = message.job_id;
        let Some(job) = self.store.get(id).await? else {
            tracing::warn!(job = %id, "message for a job that does not exist");
            return Ok(Processed::Missing);
        };
        if job.state.is_terminal() {
            return Ok(Processed::Duplicate(job.state));
        }
        // The base archive can take a while the first time: make it before taking the lease.
        if self.cfg.source_archives && self.precheck(&job).is_ok() {
            self.base_index().await?;
        }
        let now = Millis::now();
        let lease = now.plus(self.cfg.compile_timeout + self.cfg.lease_margin);
        let job = match self
            .store
            .transition(
                id,
                Transition::Start {
                    at: now,
                    lease_until: lease,
                },
            )
            .await
        {
            Ok(job) => job,
            Err(TransitionError::Conflict(c)) => {
                tracing::info!(job = %id, state = c.current.state.as_str(), "duplicate delivery");
                return Ok(Processed::Duplicate(c.current.state));
            }
            Err(TransitionError::NotFound(_)) => return Ok(Processed::Missing),
            Err(TransitionError::Backend(e)) => return Err(e.into()),
        };
        let result = self.build_result(&job).await?;
        let (returncode, cached) = (result.returncode, result.cached == Some(true));
        let metrics = finish_metrics(&job, &result);
        match self
            .store
            .transition(
                id,
                Transition::Finish {
                    at: Millis::now(),
                    attempt: job.attempt,
                    result,
                },
            )
            .await
        {
            Ok(_) => {
                metrics.into_iter().for_each(telemetry::emit);
                Ok(Processed::Finished { returncode, cached })
            }
            // The lease ran out and another worker took over (or the reaper failed it).
            Err(TransitionError::Conflict(c)) => Ok(Processed::Duplicate(c.current.state)),
            Err(TransitionError::NotFound(_)) => Ok(Processed::Missing),
            Err(TransitionError::Backend(e)) => Err(e.into()),
        }
    }

    async fn base_index(&self) -> Result<Option<source::BaseIndex>, WorkerError> {
        let Some(t) = &self.tree else { return Ok(None) };
        if t.commit == "unknown" {
            return Ok(None);
        }
        let mut base = self.base.lock().await;
        if base.is_none() {
            let started = std::time::Instant::now();
            let idx = source::ensure_base(
                &*self.artifacts,
                &t.home,
                &t.commit,
                &self.cfg.work_root.join("sources"),
            )
            .await?;
            tracing::info!(
                seconds = started.elapsed().as_secs_f64(),
                entries = idx.entries,
                "base source archive ready"
            );
            *base = Some(idx);
        }
        Ok(*base)
    }

    /// What the tree shows about a job before compiling (see [`precheck`]): the keyboard
    /// folder QMK will build, or why the job cannot be built, in words for the user.
    fn precheck(&self, job: &Job) -> Result<String, Refused> {
        let Some(tree) = &self.tree else {
            return Err(Refused {
                returncode: returncode::NOT_BUILDABLE,
                failure: "no_qmk_tree",
                message: tree::NO_TREE_MESSAGE.into(),
                keyboard_folder: None,
            });
        };
        let kb = request_str(&job.request, "keyboard");
        let Some(folder) = tree::resolve_keyboard(&tree.home, &tree.aliases, kb) else {
            let below = tree::keyboards_below(&tree.home, kb, 8);
            let hint = if below.is_empty() {
                String::new()
            } else {
                format!(" Keyboards in that folder: {}.", below.join(", "))
            };
            return Err(Refused {
                returncode: returncode::UNKNOWN_KEYBOARD,
                failure: "unknown_keyboard",
                message: format!(
                    "Unknown keyboard! {kb} is not a keyboard of qmk_firmware {} (nor an alias \
                     of one).{hint}",
                    tree.commit.get(..10).unwrap_or(&tree.commit)
                ),
                keyboard_folder: None,
            });
        };
        precheck::check(&tree.home, &folder, &job.request)
            .map(|()| folder.clone())
            .map_err(|r| Refused {
                returncode: returncode::NOT_BUILDABLE,
                failure: r.failure,
                message: r.message,
                keyboard_folder: Some(folder),
            })
    }

    /// Builds (or finds in the cache) the result of a started job; stores its artifacts.
    async fn build_result(&self, job: &Job) -> Result<JobResult, WorkerError> {
        let mut result = self.base_result(job);
        let Some(tree) = self.tree.clone() else {
            result.returncode = returncode::NOT_BUILDABLE;
            result.output = tree::NO_TREE_MESSAGE.into();
            result.failure = Some("no_qmk_tree".into());
            result.command = vec![];
            return Ok(result);
        };
        let folder = match self.precheck(job) {
            Ok(folder) => folder,
            Err(refused) => {
                result.returncode = refused.returncode;
                result.output = refused.message;
                result.failure = Some(refused.failure.into());
                result.keyboard_folder = refused.keyboard_folder;
                return Ok(result);
            }
        };
        result.keyboard_folder = Some(folder.clone());

        let hash = if job.request_hash.is_empty() {
            cache::request_hash(&job.request).unwrap_or_default()
        } else {
            job.request_hash.clone()
        };
        let cache_key = cache::key(&hash, &tree.commit);
        if let Some(key) = &cache_key {
            if let Some(hit) = self.cached_result(job, key, &result).await? {
                return Ok(hit);
            }
        }

        let _one_build = self.building.lock().await;
        let job_dir = self.cfg.work_root.join("jobs").join(job.id.to_string());
        let _ = std::fs::remove_dir_all(&job_dir);
        std::fs::create_dir_all(&job_dir)?;
        let outcome = self.compile(job, &tree, &job_dir, &mut result).await;
        let _ = std::fs::remove_dir_all(&job_dir);
        let (firmware, stored) = outcome?;

        let compile_seconds = result.compile_seconds.unwrap_or(0.0);
        if let Err(e) = eta::record(&*self.artifacts, compile_seconds).await {
            tracing::warn!(error = %e, "could not record compile time");
        }
        if result.returncode == 0 && firmware.is_some() {
            if let Some(key) = &cache_key {
                let entry = cache::CacheEntry {
                    job_id: job.id,
                    result: result.clone(),
                    artifacts: stored,
                };
                cache::store(&*self.artifacts, key, &entry).await?;
            }
        }
        Ok(result)
    }

    /// Runs the build of a started job in `job_dir`, turns its outcome into `result` and
    /// stores the artifacts. Returns the firmware (if any) and the stored artifacts.
    async fn compile(
        &self,
        job: &Job,
        tree: &TreeInfo,
        job_dir: &Path,
        result: &mut JobResult,
    ) -> Result<(Option<Bytes>, artifacts::Stored), WorkerError> {
        let (kb, km) = (result.keyboard.clone(), result.keymap.clone());
        let mut payload =
            serde_json::to_vec(&job.request).map_err(|e| std::io::Error::other(e.to_string()))?;
        payload.push(b'\n');
        std::fs::write(job_dir.join(&result.keymap_archive), &payload)?;
        let folder = result.keyboard_folder.clone().unwrap_or_else(|| kb.clone());
        let out = match build::build(&self.cfg, tree, job_dir, &job.request, &folder, &km).await {
            Ok(out) => out,
            Err(runner::RunError::Spawn { program, source }) => {
                // A worker without its build command cannot build anything; say so in the result.
                result.returncode = returncode::NOT_BUILDABLE;
                result.output = format!("Cannot run the build command {program}: {source}");
                result.failure = Some("no_build_command".into());
                return Ok((None, vec![]));
            }
            Err(e) => return Err(e.into()),
        };
        result.compile_seconds = Some(out.elapsed.as_secs_f64());
        result.phases = Some(crate::job::Phases {
            queue: result.queue_seconds,
            ..out.phases
        });
        result.output = out.log;
        let mut firmware = None;
        match (out.status, out.firmware) {
            (runner::BuildStatus::Exited(0), Some(fw)) => {
                result.returncode = 0;
                result.firmware_filename =
                    format!("{}.{}", names::ascii_stem(&folder, &km), fw.ext);
                result.firmware_size = Some(fw.bytes.len() as u64);
                firmware = Some(fw.bytes);
            }
            (runner::BuildStatus::Exited(0), None) => {
                result.returncode = returncode::NO_FIRMWARE;
                result.failure = Some("no_firmware".into());
            }
            (runner::BuildStatus::Exited(code), _) => {
                result.returncode = code;
                result.failure = Some(classify_failure(&result.output, &result.layout).into());
            }
            (runner::BuildStatus::Signaled(sig), _) => {
                result.returncode = 128 + sig;
                result.failure = Some("killed".into());
            }
            (runner::BuildStatus::TimedOut, _) => {
                result.returncode = returncode::TIMEOUT;
                result.failure = Some("timeout".into());
            }
        }
        let stored = self
            .store_artifacts(job, tree, result, Bytes::from(payload), firmware.as_ref())
            .await?;
        Ok((firmware, stored))
    }

    /// A message from the dead-letter queue: the job could not be processed; fail it.
    pub async fn fail_dead_letter(&self, message: &QueueMessage) -> Result<(), WorkerError> {
        let reason = "The compile could not be completed after several attempts. \
                      Please try again later."
            .to_string();
        match self
            .store
            .transition(
                message.job_id,
                Transition::Fail {
                    at: Millis::now(),
                    reason,
                },
            )
            .await
        {
            Ok(_) => {
                tracing::warn!(job_id = %message.job_id, "dead letter: job failed");
                telemetry::emit(Metric::Failure(FailureClass::new("dead_letter")));
                Ok(())
            }
            Err(TransitionError::Conflict(_)) | Err(TransitionError::NotFound(_)) => Ok(()),
            Err(TransitionError::Backend(e)) => Err(e.into()),
        }
    }

    /// Jobs whose worker vanished (lease over): queued again, or failed after
    /// `max_attempts` starts. Returns how many were handled.
    pub async fn reap(&self) -> Result<usize, WorkerError> {
        let now = Millis::now();
        let expired = self.store.expired_leases(now, 50).await?;
        for job in &expired {
            if job.attempt >= self.cfg.max_attempts {
                let reason = format!(
                    "The compile worker stopped responding {} times; giving up.",
                    job.attempt
                );
                match self
                    .store
                    .transition(job.id, Transition::Fail { at: now, reason })
                    .await
                {
                    Ok(_)
                    | Err(TransitionError::Conflict(_))
                    | Err(TransitionError::NotFound(_)) => {}
                    Err(TransitionError::Backend(e)) => return Err(e.into()),
                }
            } else {
                self.queue.send(&QueueMessage { job_id: job.id }).await?;
            }
        }
        Ok(expired.len())
    }

    /// The local worker loop: receive, process, acknowledge; reap now and then. Runs until
    /// the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut last_reap = std::time::Instant::now() - Duration::from_secs(3600);
        loop {
            if last_reap.elapsed() > Duration::from_secs(15) {
                last_reap = std::time::Instant::now();
                if let Err(e) = self.reap().await {
                    tracing::warn!(error = %e, "reaper");
                }
            }
            let deliveries = match self.queue.receive(1, Duration::from_secs(5)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "receive");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for d in deliveries {
                match self.process(&d.message).await {
                    Ok(p) => {
                        tracing::info!(job = %d.message.job_id, outcome = ?p, "processed");
                        if let Err(e) = self.queue.ack(&d.receipt).await {
                            tracing::warn!(error = %e, "ack");
                        }
                    }
                    // Not acknowledged: the queue delivers it again after its visibility timeout.
                    Err(e) => tracing::error!(job = %d.message.job_id, error = %e, "job failed"),
                }
            }
        }
    }
}

/// Starts the worker loop of `oven serve` on the local adapters: jobs from the local queue,
/// and the local dead-letter table drained into failed jobs (as SQS's dead-letter queue is on
/// AWS). Without a tree (`cfg.qmk_home` is `None`) it still runs and finishes each job with
/// [`tree::NO_TREE_MESSAGE`].
pub fn spawn_local(
    storage: &crate::adapters::local::LocalStorage,
    cfg: WorkerConfig,
) -> tokio::task::JoinHandle<()> {
    if cfg.qmk_home.is_none() {
        tracing::warn!("{}", tree::NO_TREE_MESSAGE);
    }
    let db = Arc::new(storage.db.clone());
    let worker = Arc::new(Worker::new(
        db.clone(),
        db.clone(),
        Arc::new(storage.artifacts.clone()),
        cfg,
    ));
    let dead = worker.clone();
    tokio::spawn(async move {
        let drain = async move {
            loop {
                match db.take_dead_letters(50).await {
                    Ok(letters) => {
                        for l in letters {
                            if let Err(e) = dead.fail_dead_letter(&l.message).await {
                                tracing::warn!(job = %l.message.job_id, error = %e, "dead letter");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "dead letters"),
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        };
        tokio::join!(worker.run(), drain);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_reports_its_wait_and_either_a_compile_or_a_cache_hit() {
        let mut job = Job::queued(
            JobId::new(),
            serde_json::json!({}),
            String::new(),
            Millis(1_000),
            Duration::from_secs(60),
        );
        job.started_at = Some(Millis(3_500));
        let built = JobResult {
            compile_seconds: Some(12.5),
            ..Default::default()
        };
        assert_eq!(
            finish_metrics(&job, &built),
            vec![
                Metric::QueueWait(Duration::from_millis(2_500)),
                Metric::CompileDuration(Duration::from_secs_f64(12.5)),
                Metric::JobFinished,
            ]
        );
        let failed_hit = JobResult {
            returncode: 2,
            cached: Some(true),
            failure: Some("compile_error".into()),
            ..Default::default()
        };
        assert_eq!(
            finish_metrics(&job, &failed_hit)[1..],
            [
                Metric::CacheHit,
                Metric::Failure(FailureClass::new("compile_error"))
            ]
        );
    }

    #[test]
    fn failures_are_classified_from_the_log() {
        assert_eq!(
            classify_failure("☒ Invalid JSON keymap: x : bad", "L"),
            "schema_rejected"
        );
        assert_eq!(
            classify_failure(" * The firmware is too large! 30000/28672", "L"),
            "firmware_too_large"
        );
        assert_eq!(
            classify_failure(
                "keymap.c:3: error: implicit declaration of function 'LAYOUT_x'",
                "LAYOUT_x"
            ),
            "unknown_layout"
        );
        assert_eq!(
            classify_failure(
                "error: 'KC_NOPE' undeclared here\nnote: in definition of macro 'LAYOUT_x'",
                "LAYOUT_x"
            ),
            "compile_error"
        );
    }
}
