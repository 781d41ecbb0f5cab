//! The compile worker: takes a job from the queue, builds its firmware in the qmk_firmware tree
//! and stores the result, on Lambda (one SQS record at a time) and in `oven serve` (a loop over
//! the local queue) alike.
//!
//! Delivery is at least once, so every step is guarded by the job's state machine: a redelivered
//! message for a job someone else holds under a live lease, or one already done, builds nothing.
//! A compile that fails is a *result* (`finished`, returncode ≠ 0, a `failure` class and the
//! log); only infrastructure errors are errors, so that the queue delivers the message again.
//! See [`runner`] for how the build itself is confined.
//!
//! Leases are heartbeats: a started job's lease is short ([`WorkerConfig::lease`], 30 s) and
//! renewed every [`WorkerConfig::heartbeat`] while the job is worked on, with the queue
//! message's visibility extended alongside. A dead worker is thus noticed within a lease (its
//! message comes back, and the reaper sees the lapsed lease), while a long compile is never
//! taken from a live one. A worker whose lease was taken over, or ran out because it could not
//! renew, stops its build ([`WorkerError::LeaseLost`]); its finish could not be stored anyway
//! (the attempt guards it).

mod artifacts;
pub mod batch;
pub mod build;
pub mod builddate;
pub mod cache;
pub mod ccoption;
pub mod diagnostics;
pub mod eta;
pub mod precheck;
pub mod qmkserver;
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

/// Default [`WorkerConfig::lease`].
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default [`WorkerConfig::heartbeat`].
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

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
    /// How long a started job stays with this worker without a renewal: how soon a dead
    /// worker's job is taken over. Renewed every `heartbeat` while the job runs.
    pub lease: Duration,
    /// How often the lease is renewed (and the message's visibility extended); well under
    /// `lease`, so that a renewal or two may fail without losing the job.
    pub heartbeat: Duration,
    /// How long a message stays away after a failure that is not the job's
    /// ([`Worker::retry_soon`]; [`RETRY_AFTER`] by default).
    pub retry_after: Duration,
    /// `-j` for the build.
    pub jobs: usize,
    pub log_cap: usize,
    /// After this many starts a job whose worker keeps vanishing is failed by the reaper.
    pub max_attempts: u32,
    /// Store a GPL source archive per job.
    pub source_archives: bool,
    /// The binary that answers as `qmk` to serve make's qmk commands from a fork server
    /// ([`qmkserver`]): the worker's own, whose `main` calls [`qmkserver::run_if_client`].
    /// `None`: every command runs the qmk CLI.
    pub qmk_client: Option<PathBuf>,
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
            lease: DEFAULT_LEASE,
            retry_after: RETRY_AFTER,
            heartbeat: DEFAULT_HEARTBEAT,
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            log_cap: 1 << 20,
            max_attempts: 3,
            source_archives: true,
            qmk_client: None,
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
    /// The worker stopped working on the job: see [`LeaseLost`]. The message is not
    /// acknowledged; whoever holds the job now, or the next delivery, carries on.
    #[error("lease lost: {0}")]
    LeaseLost(LeaseLost),
    #[error("another oven serve runs a worker on this data directory ({0}): stop it, or start this one with --no-worker")]
    Locked(PathBuf),
}

/// Why a worker let go of a job before finishing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    /// Another worker started it (or the reaper requeued or failed it): a renewal found it so.
    #[error("job is {state} at attempt {attempt}, not ours any more")]
    TakenOver { state: &'static str, attempt: u32 },
    /// The job is gone (expired).
    #[error("job no longer exists")]
    Gone,
    /// No renewal succeeded until the lease ran out: another worker may hold it by now.
    #[error("could not renew the lease before it ran out")]
    Expired,
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
    base: Mutex<Option<source::Base>>,
    /// One build at a time per worker: builds share the warm build directory.
    building: Mutex<()>,
    /// Serves make's qmk commands (started on the first build).
    qmk_server: qmkserver::Slot,
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

/// The request's `layers` as strings (numbers as written), for locating compiler errors.
fn request_layers(req: &Value) -> Vec<Vec<String>> {
    let key = |k: &Value| k.as_str().map_or_else(|| k.to_string(), str::to_string);
    req.get("layers")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| {
                    l.as_array()
                        .map_or_else(Vec::new, |l| l.iter().map(key).collect())
                })
                .collect()
        })
        .unwrap_or_default()
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

/// The result fields every finished job has (contract §6.3), before the build.
fn base_result(job: &Job, tree: Option<&TreeInfo>) -> JobResult {
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
        firmware_commit: tree.map(|t| t.commit.clone()),
        build_date: tree.map(|t| t.build_date().qmk()),
        request_hash: Some(job.request_hash.clone()).filter(|h| !h.is_empty()),
        toolchains: tree.map(|t| t.toolchains.clone()),
        queue_seconds: job
            .started_at
            .map(|s| s.seconds_since(job.created_at).max(0.0)),
        ..Default::default()
    }
}

/// What the tree shows about a job before compiling (see [`precheck`]): the keyboard
/// folder QMK will build, or why the job cannot be built, in words for the user.
/// A job the tree lets through: the tree, and the keyboard folder QMK will build.
struct Buildable<'a> {
    tree: &'a TreeInfo,
    folder: String,
}

fn precheck_job<'a>(tree: Option<&'a TreeInfo>, job: &Job) -> Result<Buildable<'a>, Refused> {
    let Some(tree) = tree else {
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
        .map(|()| Buildable {
            tree,
            folder: folder.clone(),
        })
        .map_err(|r| Refused {
            returncode: returncode::NOT_BUILDABLE,
            failure: r.failure,
            message: r.message,
            keyboard_folder: Some(folder),
        })
}

/// The finished result of a job refused before compiling.
fn refused_result(job: &Job, tree: Option<&TreeInfo>, refused: Refused) -> JobResult {
    let mut result = base_result(job, tree);
    result.returncode = refused.returncode;
    result.output = refused.message;
    result.failure = Some(refused.failure.into());
    result.keyboard_folder = refused.keyboard_folder;
    if tree.is_none() {
        result.command = vec![];
    }
    result
}

/// The tree's pre-compile checks at submit time, for a runner that has the tree next to its
/// API (`oven serve`): a job the tree refuses is finished at once with the same result the
/// worker would give it, without waiting behind other compiles in the queue.
pub struct SubmitPrecheck {
    tree: TreeInfo,
}

impl SubmitPrecheck {
    /// `None` without a tree (then every job goes to the worker, which says so).
    pub fn new(cfg: &WorkerConfig) -> Option<SubmitPrecheck> {
        let home = cfg.qmk_home.as_ref()?;
        Some(SubmitPrecheck {
            tree: TreeInfo::load(home, cfg),
        })
    }
}

impl crate::http::SubmitCheck for SubmitPrecheck {
    fn refuse(&self, job: &Job) -> Option<JobResult> {
        precheck_job(Some(&self.tree), job)
            .err()
            .map(|refused| refused_result(job, Some(&self.tree), refused))
    }
}

impl Worker {
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn JobQueue>,
        artifacts: Arc<dyn ArtifactStore>,
        cfg: WorkerConfig,
    ) -> Self {
        runner::protect_worker_secrets();
        let tree = cfg.qmk_home.as_ref().map(|home| TreeInfo::load(home, &cfg));
        Worker {
            store,
            queue,
            artifacts,
            cfg,
            tree,
            base: Mutex::new(None),
            building: Mutex::new(()),
            qmk_server: qmkserver::Slot::default(),
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

    /// Handles one queue message. `Ok` means: acknowledge it. Everything it logs carries the
    /// job id. Without a receipt, the lease is renewed but no message visibility extended.
    pub async fn process(&self, message: &QueueMessage) -> Result<Processed, WorkerError> {
        self.process_delivery(message, None).await
    }

    /// [`process`](Self::process) for a delivery whose `receipt` (SQS receipt handle, local
    /// receipt) the heartbeat keeps invisible while the job runs.
    pub async fn process_delivery(
        &self,
        message: &QueueMessage,
        receipt: Option<&str>,
    ) -> Result<Processed, WorkerError> {
        use tracing::Instrument;
        let processed = self
            .process_in_span(message, receipt)
            .instrument(telemetry::job_span(message.job_id))
            .await;
        match (&processed, receipt) {
            // Whoever holds the job now, or the next delivery, carries on.
            (Err(WorkerError::LeaseLost(_)), _) | (Ok(_), _) | (_, None) => {}
            // Not the job's fault: back soon rather than after the whole visibility timeout.
            (Err(_), Some(receipt)) => self.retry_soon(receipt).await,
        }
        processed
    }

    async fn process_in_span(
        &self,
        message: &QueueMessage,
        receipt: Option<&str>,
    ) -> Result<Processed, WorkerError> {
        let id = message.job_id;
        let Some(job) = self.store.get(id).await? else {
            tracing::warn!(job = %id, "message for a job that does not exist");
            return Ok(Processed::Missing);
        };
        if job.state.is_terminal() {
            return Ok(Processed::Duplicate(job.state));
        }
        // Held by a live worker: nothing to do (and no base archive to prepare for it).
        if job.state == JobState::Running && job.lease_until.is_some_and(|l| l >= Millis::now()) {
            tracing::info!(job = %id, attempt = job.attempt, "held by another worker");
            return Ok(Processed::Duplicate(job.state));
        }
        // Checked once: a refused job needs no base archive and no build.
        let checked = precheck_job(self.tree.as_ref(), &job);
        // The base archive can take a while the first time: make it before taking the lease.
        if self.cfg.source_archives && checked.is_ok() {
            self.base_index().await?;
        }
        let now = Millis::now();
        let lease = now.plus(self.cfg.lease);
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
        if let Some(r) = receipt {
            // Not yet renewing: this one may take a while longer than a heartbeat.
            self.extend_visibility(r, self.cfg.lease / 2).await;
        }
        // The build runs while the lease is renewed; losing the lease drops the build (which
        // kills its process group, see `runner`).
        let result = tokio::select! {
            result = self.build_result(&job, checked) => result?,
            lost = self.hold_lease(&job, receipt) => {
                tracing::warn!(job = %id, attempt = job.attempt, reason = %lost, "lease lost: build stopped");
                telemetry::emit(Metric::LeaseLost);
                return Err(WorkerError::LeaseLost(lost));
            }
        };
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

    /// Renews the lease of the started `job` every heartbeat, extending the visibility of its
    /// message alongside; returns only when the lease is lost.
    async fn hold_lease(&self, job: &Job, receipt: Option<&str>) -> LeaseLost {
        let beat = self.cfg.heartbeat;
        let mut until = job.lease_until.unwrap_or_else(Millis::now);
        loop {
            // Wake at the next beat, or when the lease we hold would run out if sooner.
            let left = Duration::from_millis((until.0 - Millis::now().0).max(0) as u64);
            tokio::time::sleep(beat.min(left)).await;
            let next = Millis::now().plus(self.cfg.lease);
            let renew = self.store.transition(
                job.id,
                Transition::Renew {
                    attempt: job.attempt,
                    lease_until: next,
                },
            );
            // A slow renewal still helps while the lease holds; one that hangs must not
            // outlive the lease it is meant to keep.
            let left = Duration::from_millis((until.0 - Millis::now().0).max(0) as u64);
            match tokio::time::timeout(left.max(beat), renew).await {
                Ok(Ok(_)) => {
                    until = next;
                    if let Some(r) = receipt {
                        self.extend_visibility(r, beat).await;
                    }
                }
                Ok(Err(TransitionError::Conflict(c))) => {
                    return LeaseLost::TakenOver {
                        state: c.current.state.as_str(),
                        attempt: c.current.attempt,
                    }
                }
                Ok(Err(TransitionError::NotFound(_))) => return LeaseLost::Gone,
                Ok(Err(TransitionError::Backend(e))) => {
                    tracing::warn!(job = %job.id, error = %e, "lease renewal failed");
                }
                Err(_) => tracing::warn!(job = %job.id, "lease renewal timed out"),
            }
            if Millis::now() >= until {
                return LeaseLost::Expired;
            }
        }
    }

    /// Keeps the message invisible two heartbeats longer than the lease: it comes back only
    /// once the lease is over, when a new delivery can start the job, even if the worker died
    /// between a renewal and this extension (one heartbeat would leave the message visible
    /// exactly when the lease ends, and a delivery finding the job still held acknowledges
    /// it). Best effort: the reaper covers a message that comes back early or not at all.
    /// Gives up after `patience`.
    async fn extend_visibility(&self, receipt: &str, patience: Duration) {
        let timeout = self.cfg.lease + 2 * self.cfg.heartbeat;
        let extend = self.queue.extend_visibility(receipt, timeout);
        match tokio::time::timeout(patience, extend).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not extend the message's visibility"),
            Err(_) => tracing::warn!("extending the message's visibility timed out"),
        }
    }

    /// Makes (or finds) the base source archive now, in the background, rather than in the
    /// first job, which would otherwise show `queued` while the tree is zipped (5 s locally,
    /// 54 s to moto's S3 in one run). A job that comes first waits for the same work.
    pub fn prepare_in_background(self: &Arc<Self>) {
        if !self.cfg.source_archives {
            return;
        }
        let worker = self.clone();
        tokio::spawn(async move {
            if let Err(e) = worker.base_index().await {
                tracing::warn!(error = %e, "base source archive (the first job tries again)");
            }
        });
    }

    async fn base_index(&self) -> Result<Option<source::Base>, WorkerError> {
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
                entries = idx.index.entries,
                "base source archive ready"
            );
            *base = Some(idx);
        }
        Ok(base.clone())
    }

    /// Builds (or finds in the cache) the result of a started job; stores its artifacts.
    async fn build_result(
        &self,
        job: &Job,
        checked: Result<Buildable<'_>, Refused>,
    ) -> Result<JobResult, WorkerError> {
        let Buildable { tree, folder } = match checked {
            Ok(b) => b,
            Err(refused) => return Ok(refused_result(job, self.tree.as_ref(), refused)),
        };
        let mut result = base_result(job, Some(tree));
        result.keyboard_folder = Some(folder);

        let hash = if job.request_hash.is_empty() {
            cache::request_hash(&job.request).unwrap_or_default()
        } else {
            job.request_hash.clone()
        };
        let cache_key = cache::key(&hash, &tree.commit);
        result.request_hash = Some(hash.clone()).filter(|h| !h.is_empty());
        if let Some(key) = &cache_key {
            if let Some(hit) = self.cached_result(job, key, &result).await? {
                return Ok(hit);
            }
        }

        let _one_build = self.building.lock().await;
        let job_dir = self.cfg.work_root.join("jobs").join(job.id.to_string());
        let _ = std::fs::remove_dir_all(&job_dir);
        std::fs::create_dir_all(&job_dir)?;
        let outcome = self.compile(job, tree, &job_dir, &mut result).await;
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
        let out = match build::build(
            &self.cfg,
            tree,
            &self.qmk_server,
            job_dir,
            &job.request,
            &folder,
            &km,
        )
        .await
        {
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
        result.keymap_sha256 = Some(source::sha256_hex(&payload));
        result.flash = diagnostics::flash_budget(&out.log);
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
                result.firmware_sha256 = Some(source::sha256_hex(&fw.bytes));
                firmware = Some(fw.bytes);
            }
            (runner::BuildStatus::Exited(0), None) => {
                result.returncode = returncode::NO_FIRMWARE;
                result.failure = Some("no_firmware".into());
            }
            (runner::BuildStatus::Exited(code), _) => {
                result.returncode = code;
                result.failure = Some(classify_failure(&result.output, &result.layout).into());
                // The keymap's own errors first, in the user's terms: the Configurator shows
                // the start of `output`.
                let errors = diagnostics::keymap_errors(
                    &result.output,
                    out.keymap_c.as_deref(),
                    &request_layers(&job.request),
                );
                if !errors.is_empty() {
                    result.output = format!("{}\n{}", diagnostics::summary(&errors), result.output);
                    result.keymap_errors = Some(errors);
                }
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
                telemetry::emit(Metric::JobDeadLettered);
                telemetry::emit(Metric::Failure(FailureClass::new("dead_letter")));
                Ok(())
            }
            Err(TransitionError::Conflict(_)) | Err(TransitionError::NotFound(_)) => Ok(()),
            Err(TransitionError::Backend(e)) => Err(e.into()),
        }
    }

    /// Jobs whose worker vanished (lease over): queued again (message sent, then the job
    /// moved back to `queued` if its lease is still over), or failed after `max_attempts`
    /// starts. Returns how many were handled. Runs in the local worker loop, and on AWS on a
    /// schedule (the compile function's `Reaper` event) as well as after each batch.
    pub async fn reap(&self) -> Result<usize, WorkerError> {
        let now = Millis::now();
        let expired = self.store.expired_leases(now, 50).await?;
        let mut handled = 0;
        for job in &expired {
            let outcome = if job.attempt >= self.cfg.max_attempts {
                let reason = format!(
                    "The compile worker stopped responding {} times; giving up.",
                    job.attempt
                );
                let r = self
                    .store
                    .transition(job.id, Transition::Fail { at: now, reason })
                    .await;
                if r.is_ok() {
                    telemetry::emit(Metric::Failure(FailureClass::new("worker_lost")));
                }
                r
            } else {
                // Message first: should we stop in between, the job is still running with its
                // lease over, and the next round sends again (a duplicate is harmless; a
                // queued job without a message would wait forever).
                self.queue.send(&QueueMessage { job_id: job.id }).await?;
                let r = self
                    .store
                    .transition(
                        job.id,
                        Transition::Requeue {
                            at: now,
                            attempt: job.attempt,
                        },
                    )
                    .await;
                if r.is_ok() {
                    tracing::warn!(job = %job.id, attempt = job.attempt, "requeued: its worker stopped renewing the lease");
                    telemetry::emit(Metric::JobRequeued);
                }
                r
            };
            match outcome {
                Ok(_) => handled += 1,
                // Renewed, started or finished meanwhile: not ours to touch.
                Err(TransitionError::Conflict(_)) | Err(TransitionError::NotFound(_)) => {}
                Err(TransitionError::Backend(e)) => return Err(e.into()),
            }
        }
        Ok(handled)
    }

    /// Gives up at once the lease of every running job, so that [`reap`](Self::reap) queues
    /// them again now rather than when their leases run out. Only for a worker that knows no
    /// other worker shares its store: `oven serve` on start, holding the data directory's
    /// worker lock, when every running job was held by its own previous run. Conditional on
    /// each job's attempt, so a job taken meanwhile is left alone. Returns their ids, oldest
    /// submission first.
    pub async fn release_orphaned_leases(&self) -> Result<Vec<JobId>, WorkerError> {
        let mut running = self.store.expired_leases(Millis(i64::MAX), 1_000).await?;
        running.sort_by_key(|j| j.created_at);
        let mut released = Vec::new();
        for job in running {
            let past = Millis(Millis::now().0 - 1);
            match self
                .store
                .transition(
                    job.id,
                    Transition::Renew {
                        attempt: job.attempt,
                        lease_until: past,
                    },
                )
                .await
            {
                Ok(_) => released.push(job.id),
                Err(TransitionError::Conflict(_)) | Err(TransitionError::NotFound(_)) => {}
                Err(TransitionError::Backend(e)) => return Err(e.into()),
            }
        }
        Ok(released)
    }

    /// After a failure that is not the job's (a store, queue or bucket error), the message
    /// comes back after `retry_after` ([`RETRY_AFTER`] by default) rather than after the
    /// queue's whole visibility timeout (an hour on the template's queue): a transient fault
    /// heals within a minute, and a lasting one (a wrong bucket) reaches the dead-letter queue
    /// after its receives, which fails the job, instead of holding it `queued` for hours.
    /// [`Self::process_delivery`] calls it for every such failure.
    async fn retry_soon(&self, receipt: &str) {
        if let Err(e) = self
            .queue
            .extend_visibility(receipt, self.cfg.retry_after)
            .await
        {
            tracing::warn!(error = %e, "could not shorten the message's visibility");
        }
    }

    /// The local worker loop: receive, process, acknowledge; reap now and then. Runs until
    /// the task is dropped.
    pub async fn run(self: Arc<Self>) {
        let mut last_reap = std::time::Instant::now() - Duration::from_secs(3600);
        // Often enough that a lapsed lease is seen within half a lease more.
        let reap_every = (self.cfg.lease / 2).max(Duration::from_millis(100));
        loop {
            if last_reap.elapsed() >= reap_every {
                last_reap = std::time::Instant::now();
                if let Err(e) = self.reap().await {
                    tracing::warn!(error = %e, "reaper");
                }
            }
            let wait = reap_every.min(Duration::from_secs(5));
            let deliveries = match self.queue.receive(1, wait).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "receive");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for d in deliveries {
                match self.process_delivery(&d.message, Some(&d.receipt)).await {
                    Ok(p) => {
                        tracing::info!(job = %d.message.job_id, outcome = ?p, "processed");
                        if let Err(e) = self.queue.ack(&d.receipt).await {
                            tracing::warn!(error = %e, "ack");
                        }
                    }
                    // Not acknowledged: the queue delivers it again (soon, see retry_soon).
                    Err(e) => tracing::error!(job = %d.message.job_id, error = %e, "job failed"),
                }
            }
        }
    }
}

/// How long a message whose processing failed for a reason not the job's stays invisible
/// ([`Worker::retry_soon`]).
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// File in the data directory that the process running its worker holds locked.
pub const WORKER_LOCK: &str = "worker.lock";

/// Starts the worker loop of `oven serve` on the local adapters: jobs from the local queue,
/// and the local dead-letter table drained into failed jobs (as SQS's dead-letter queue is on
/// AWS). Without a tree (`cfg.qmk_home` is `None`) it still runs and finishes each job with
/// [`tree::NO_TREE_MESSAGE`].
///
/// It first takes the data directory's [`WORKER_LOCK`] (an OS file lock, released when the
/// process dies however it dies), failing with [`WorkerError::Locked`] if another process
/// holds it. Holding it, it knows that no build of this data directory is live, so the jobs
/// found running were held by a previous run that died: it gives up their leases and queues
/// them again at once, before taking new work.
pub fn spawn_local(
    storage: &crate::adapters::local::LocalStorage,
    cfg: WorkerConfig,
) -> Result<tokio::task::JoinHandle<()>, WorkerError> {
    if cfg.qmk_home.is_none() {
        tracing::warn!("{}", tree::NO_TREE_MESSAGE);
    }
    let lock_path = storage.data_dir.join(WORKER_LOCK);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(WorkerError::Locked(lock_path)),
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    let db = Arc::new(storage.db.clone());
    let worker = Arc::new(Worker::new(
        db.clone(),
        db.clone(),
        Arc::new(storage.artifacts.clone()),
        cfg,
    ));
    worker.prepare_in_background();
    let dead = worker.clone();
    Ok(tokio::spawn(async move {
        // Held (open and locked) for as long as the worker runs.
        let _lock = lock;
        let released = match worker.release_orphaned_leases().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "could not release the previous run's jobs");
                Vec::new()
            }
        };
        if !released.is_empty() {
            tracing::warn!(
                jobs = released.len(),
                "requeuing jobs the previous run was building"
            );
            // Queued durably first (a message each), then built before anything submitted
            // after them; their messages then find them done.
            if let Err(e) = worker.reap().await {
                tracing::warn!(error = %e, "reaper");
            }
            for id in released {
                let message = QueueMessage { job_id: id };
                match worker.process(&message).await {
                    Ok(p) => tracing::info!(job = %id, outcome = ?p, "processed"),
                    Err(e) => tracing::error!(job = %id, error = %e, "job failed"),
                }
            }
        }
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
        // `run` reaps first, so the released jobs are queued before anything is received.
        tokio::join!(worker.run(), drain);
    }))
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
