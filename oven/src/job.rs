//! The compile job: its id, its states, the legal transitions between them, and the result
//! document the QMK API contract defines (section 6.3).
//!
//! Queues deliver at least once and workers die, so every state change is a *conditional* write:
//! an adapter applies a [`Transition`] only if the stored job still satisfies
//! [`Transition::precondition`]. The pure [`Transition::apply`] is the one definition of the state
//! machine; the SQLite adapter runs it inside a transaction, the DynamoDB adapter turns the same
//! precondition into a `ConditionExpression`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Millis;

/// A job id: a random (version 4) UUID, shown in its hyphenated lower-case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(uuid::Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(uuid::Uuid::new_v4())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

/// Anything that is not a hyphenated uuid4 is not a job id (contract S6: ids reach storage keys).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a job id (expected a uuid4)")]
pub struct InvalidJobId;

impl FromStr for JobId {
    type Err = InvalidJobId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical 36-character form: one id, one storage key.
        if s.len() != 36 {
            return Err(InvalidJobId);
        }
        let u = uuid::Uuid::try_parse(s).map_err(|_| InvalidJobId)?;
        if u.get_version_num() != 4 || u.hyphenated().to_string() != s {
            return Err(InvalidJobId);
        }
        Ok(JobId(u))
    }
}

impl TryFrom<String> for JobId {
    type Error = InvalidJobId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// Where a job is in its life. The strings are the contract's `status` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting in the queue ("Waiting for an oven").
    Queued,
    /// A worker holds it under a lease ("Baking").
    Running,
    /// The compile ended, successfully or not: see `result.returncode`.
    Finished,
    /// The infrastructure gave up on it (dead-letter queue, deadline); `error` says why.
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Finished | JobState::Failed)
    }
}

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "finished" => JobState::Finished,
            "failed" => JobState::Failed,
            _ => return Err(UnknownState(s.to_string())),
        })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

/// A job as stored in the job table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub state: JobState,
    /// The validated keymap request, as JSON (what the worker writes as keymap.json).
    pub request: Value,
    /// Content hash of the normalised request (names cached results).
    pub request_hash: String,
    pub created_at: Millis,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    /// While running: the worker's lease. A running job past it may be taken over.
    pub lease_until: Option<Millis>,
    /// How many times a worker has started it; guards against a stale worker finishing it.
    pub attempt: u32,
    /// Set when finished.
    pub result: Option<JobResult>,
    /// Set when failed: a reason a user can read.
    pub error: Option<String>,
    /// After this the job is gone (DynamoDB TTL; the local store deletes it).
    pub expires_at: Millis,
}

impl Job {
    /// A new job, queued now.
    pub fn queued(
        id: JobId,
        request: Value,
        request_hash: String,
        now: Millis,
        retention: std::time::Duration,
    ) -> Self {
        Job {
            id,
            state: JobState::Queued,
            request,
            request_hash,
            created_at: now,
            started_at: None,
            finished_at: None,
            lease_until: None,
            attempt: 0,
            result: None,
            error: None,
            expires_at: now.plus(retention),
        }
    }

    /// The contract's `is_failed`: null while waiting or baking.
    pub fn is_failed(&self) -> Option<bool> {
        match self.state {
            JobState::Queued | JobState::Running => None,
            JobState::Finished => Some(self.result.as_ref().is_none_or(|r| r.returncode != 0)),
            JobState::Failed => Some(true),
        }
    }
}

/// A state change, applied only where its precondition holds.
// One per state change of a job, never in bulk: boxing the result would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// queued -> running; or running -> running when the previous lease has run out (a worker
    /// died and the queue redelivered). Increments `attempt`.
    Start { at: Millis, lease_until: Millis },
    /// running (this attempt) -> finished with a result.
    Finish {
        at: Millis,
        attempt: u32,
        result: JobResult,
    },
    /// queued or running -> failed, with a reason for the user.
    Fail { at: Millis, reason: String },
    /// running (this attempt) -> running with the lease moved to `lease_until`: the heartbeat
    /// of a live worker, so that a lease can be short (a dead worker is noticed soon) while a
    /// long compile is never taken from a live one. Only the holder of the current attempt may
    /// renew; a lease that already ran out may still be renewed as long as nobody took over
    /// (the attempt is unchanged). A `lease_until` in the past gives the job up at once, as
    /// `oven serve` does on start for the jobs its previous run held.
    Renew { attempt: u32, lease_until: Millis },
    /// running (this attempt, lease over before `at`) -> queued: the reaper hands a job whose
    /// worker vanished back to the queue, after sending its message. Queued, it leaves the
    /// reaper's index, so a job waiting behind others is not sent again on every round.
    Requeue { at: Millis, attempt: u32 },
}

/// What a stored job must look like for a transition to apply.
#[derive(Debug, Clone, PartialEq)]
pub enum Precondition {
    /// `state = queued`, or `state = running` and `lease_until < at`.
    StartableAt(Millis),
    /// `state = running` and `attempt = n`.
    RunningAttempt(u32),
    /// `state` is queued or running.
    NotTerminal,
    /// `state = running`, `attempt = n` and `lease_until < at`.
    LapsedAttempt { attempt: u32, at: Millis },
}

impl Precondition {
    pub fn holds(&self, job: &Job) -> bool {
        match *self {
            Precondition::StartableAt(at) => match job.state {
                JobState::Queued => true,
                JobState::Running => job.lease_until.is_some_and(|l| l < at),
                _ => false,
            },
            Precondition::RunningAttempt(n) => job.state == JobState::Running && job.attempt == n,
            Precondition::NotTerminal => !job.state.is_terminal(),
            Precondition::LapsedAttempt { attempt, at } => {
                job.state == JobState::Running
                    && job.attempt == attempt
                    && job.lease_until.is_some_and(|l| l < at)
            }
        }
    }
}

/// The stored job did not satisfy the transition's precondition; it carries the job as found,
/// so a redelivered message can tell "already finished" from "someone else is baking it".
#[derive(Debug, Clone, thiserror::Error)]
#[error("job {} is {}: transition not applied", .current.id, .current.state.as_str())]
pub struct Conflict {
    pub current: Box<Job>,
}

impl Transition {
    pub fn precondition(&self) -> Precondition {
        match self {
            Transition::Start { at, .. } => Precondition::StartableAt(*at),
            Transition::Finish { attempt, .. } | Transition::Renew { attempt, .. } => {
                Precondition::RunningAttempt(*attempt)
            }
            Transition::Fail { .. } => Precondition::NotTerminal,
            Transition::Requeue { at, attempt } => Precondition::LapsedAttempt {
                attempt: *attempt,
                at: *at,
            },
        }
    }

    pub fn target(&self) -> JobState {
        match self {
            Transition::Start { .. } | Transition::Renew { .. } => JobState::Running,
            Transition::Finish { .. } => JobState::Finished,
            Transition::Fail { .. } => JobState::Failed,
            Transition::Requeue { .. } => JobState::Queued,
        }
    }

    /// The job after this transition, or the conflict if its precondition does not hold.
    pub fn apply(&self, job: &Job) -> Result<Job, Conflict> {
        if !self.precondition().holds(job) {
            return Err(Conflict {
                current: Box::new(job.clone()),
            });
        }
        let mut next = job.clone();
        next.state = self.target();
        match self {
            Transition::Start { at, lease_until } => {
                next.started_at = Some(*at);
                next.lease_until = Some(*lease_until);
                next.attempt = job.attempt + 1;
            }
            Transition::Finish { at, result, .. } => {
                next.finished_at = Some(*at);
                next.lease_until = None;
                next.result = Some(result.clone());
            }
            Transition::Fail { at, reason } => {
                next.finished_at = Some(*at);
                next.lease_until = None;
                next.error = Some(reason.clone());
            }
            Transition::Renew { lease_until, .. } => {
                next.lease_until = Some(*lease_until);
            }
            Transition::Requeue { .. } => {
                next.lease_until = None;
            }
        }
        Ok(next)
    }
}

/// The `result` object of a finished job (contract section 6.3), plus what Oven adds.
///
/// Field names and types follow the contract so that the Configurator and scripts written for
/// api.qmk.fm read it unchanged; Oven's additions are optional and ignored by them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobResult {
    pub id: String,
    pub keyboard: String,
    pub keymap: String,
    pub layout: String,
    /// 0 on success; the compiler's exit code, or a negative code (see `failure`), otherwise.
    pub returncode: i32,
    /// The build log (capped). Always a string: the Configurator calls string methods on it.
    pub output: String,
    /// Legacy, always null.
    pub firmware: Option<Value>,
    /// `""` when no firmware was produced.
    pub firmware_filename: String,
    pub keymap_archive: String,
    pub source_archive: String,
    /// The submitted keymap, JSON-encoded as a string.
    pub keymap_json: String,
    pub command: Vec<String>,
    pub public_firmware: bool,
    /// Present only when a firmware file was stored; one absolute URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_binary_url: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_keymap_url: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_source_url: Option<Vec<String>>,

    // What Oven adds (absent from upstream; clients that do not know them ignore them).
    /// The keyboard folder QMK built for `keyboard` (`keyboard_folder` in QMK's CLI): the
    /// target of an alias such as `handwired/ferris` -> `ferris/0_1`, else `keyboard` itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyboard_folder: Option<String>,
    /// Short machine-readable class of a failure (`unknown_keyboard`, `compile_error`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toolchains: Option<std::collections::BTreeMap<String, String>>,
    /// True when this result was served from an identical earlier request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
    /// Where this job's time went, phase by phase (see [`Phases`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases: Option<Phases>,

    // Reproducibility: what a user needs to check the firmware against its source
    // (`oven verify`). Hashes are lower-case hex SHA-256 of the bytes the downloads serve.
    /// The date the firmware is stamped with, QMK's `QMK_BUILDDATE` form
    /// (`2026-07-19-20:55:20`, UTC): the firmware commit's, never the clock's (see
    /// [`crate::worker::builddate`]). VIA's EEPROM marker derives from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_date: Option<String>,
    /// The content hash of the request (the cache key with the commit; see
    /// [`crate::keymap::KeymapRequest::content_hash`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    /// SHA-256 of the firmware file (`/download`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_sha256: Option<String>,
    /// SHA-256 of the keymap JSON (`/keymap`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keymap_sha256: Option<String>,
    /// SHA-256 of the GPL source archive (`/source`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_archive_sha256: Option<String>,
    /// Flash use as the build reported it (AVR builds print it; ARM ones do not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flash: Option<FlashBudget>,
    /// Errors the compiler reported in the generated keymap, traced back to the request's
    /// `layers` (also the first lines of `output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keymap_errors: Option<Vec<KeymapError>>,
}

/// Flash use of a build, from QMK's size check (`builddefs/message.mk`: `The firmware size is
/// fine - 23722/28672 (82%, 4950 bytes free)`, `The firmware is too large! 30000/28672 (1328
/// bytes over)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashBudget {
    /// Bytes of flash the firmware uses.
    pub used_bytes: u64,
    /// Bytes of flash available to it (the MCU's flash less the bootloader).
    pub max_bytes: u64,
    /// `used * 100 / max`, rounded down (QMK's arithmetic).
    pub percent: u64,
    /// `max - used`, when it fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// `used - max`, when it does not: how much must go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub over_bytes: Option<u64>,
}

/// A compiler error located in the request: `layers[layer][key]` holds `keycode`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeymapError {
    pub layer: usize,
    /// Index of the key in the layer (0-based, the order of the request's array).
    pub key: usize,
    /// The keycode as the request wrote it.
    pub keycode: String,
    /// The compiler's message (`'LM_VALD' undeclared here (not in a function)`).
    pub message: String,
}

/// Where a job's time went, in seconds, phase by phase; a phase the job did not go through is
/// absent. The build's own phases are read from when QMK's status lines appear in its output
/// (`Compiling keymap with`, then one `Compiling:` line per unit as it is done, `Linking:`;
/// `oven::worker::build::build_phases`), so they add up to `compile_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Phases {
    /// Submission to the start of the job (queue wait; includes a worker's one-off preparation
    /// of the base source archive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<f64>,
    /// Preparing the build directory: the job directory, the tree overlay, the keymap file, the
    /// warm-build preparation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare: Option<f64>,
    /// The qmk CLI until it starts make (its start-up, reading the keymap and the keyboard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<f64>,
    /// make's parse and QMK's generation step, until the first unit is compiled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generate: Option<f64>,
    /// Compiling, until the last unit is done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<f64>,
    /// Linking and the firmware file (hex/bin, size check, copy), until the build exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<f64>,
    /// Storing the firmware, the keymap and the log (or copying them, for a cached result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<f64>,
    /// Composing and storing the job's source archive.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_archive: Option<f64>,
}

impl Phases {
    /// `(name, seconds)` of every phase present, in the order a job goes through them; the
    /// names are the JSON field names.
    pub fn present(&self) -> Vec<(&'static str, f64)> {
        [
            ("queue", self.queue),
            ("prepare", self.prepare),
            ("startup", self.startup),
            ("generate", self.generate),
            ("compile", self.compile),
            ("link", self.link),
            ("store", self.store),
            ("source_archive", self.source_archive),
        ]
        .into_iter()
        .filter_map(|(n, v)| Some((n, v?)))
        .collect()
    }
}

impl JobResult {
    /// The name a browser saves this job's file `key_name` under (`Content-Disposition`):
    /// the keymap name as the user typed it (`dz60_mine.v2.hex`, `dz60_clavier_é.hex`), where
    /// the stored file names keep to `[A-Za-z0-9._-]` (`keymap::names::ascii_stem`). Names
    /// other than the firmware, keymap and source archive come back unchanged.
    pub fn download_name(&self, key_name: &str) -> String {
        use crate::keymap::names::display_stem;
        let folder = self.keyboard_folder.as_deref().unwrap_or(&self.keyboard);
        let kb_dashed = self.keyboard.replace('/', "-");
        if !self.firmware_filename.is_empty() && key_name == self.firmware_filename {
            let ext = key_name.rsplit_once('.').map_or("bin", |(_, e)| e);
            format!("{}.{ext}", display_stem(folder, &self.keymap))
        } else if key_name == self.keymap_archive {
            format!("{kb_dashed}-{}.json", self.keymap)
        } else if key_name == self.source_archive {
            format!("qmk_firmware-{kb_dashed}-{}.zip", self.keymap)
        } else {
            key_name.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job() -> Job {
        Job::queued(
            JobId::new(),
            serde_json::json!({}),
            "h".into(),
            Millis(1_000),
            Duration::from_secs(86_400),
        )
    }

    #[test]
    fn job_id_accepts_only_canonical_uuid4() {
        let id = JobId::new();
        assert_eq!(id.to_string().parse::<JobId>(), Ok(id));
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "00000000-0000-1000-8000-000000000000", // version 1
            &id.to_string().to_uppercase(),
            &id.to_string().replace('-', ""),
        ] {
            assert_eq!(bad.parse::<JobId>(), Err(InvalidJobId), "{bad}");
        }
    }

    #[test]
    fn start_finish_lifecycle() {
        let j = job();
        let running = Transition::Start {
            at: Millis(2_000),
            lease_until: Millis(5_000),
        }
        .apply(&j)
        .unwrap();
        assert_eq!((running.state, running.attempt), (JobState::Running, 1));
        assert_eq!(running.is_failed(), None);
        let result = JobResult {
            returncode: 2,
            ..Default::default()
        };
        let done = Transition::Finish {
            at: Millis(3_000),
            attempt: 1,
            result,
        }
        .apply(&running)
        .unwrap();
        assert_eq!(done.state, JobState::Finished);
        assert_eq!(done.is_failed(), Some(true));
        assert_eq!(done.lease_until, None);
    }

    #[test]
    fn redelivery_cannot_restart_a_live_or_finished_job() {
        let running = Transition::Start {
            at: Millis(2_000),
            lease_until: Millis(5_000),
        }
        .apply(&job())
        .unwrap();
        let again = Transition::Start {
            at: Millis(4_000),
            lease_until: Millis(9_000),
        }
        .apply(&running);
        assert_eq!(again.unwrap_err().current.state, JobState::Running);
        // The lease ran out: another worker takes over, and the first one can no longer finish.
        let taken = Transition::Start {
            at: Millis(6_000),
            lease_until: Millis(9_000),
        }
        .apply(&running)
        .unwrap();
        assert_eq!(taken.attempt, 2);
        let stale = Transition::Finish {
            at: Millis(7_000),
            attempt: 1,
            result: JobResult::default(),
        };
        assert!(stale.apply(&taken).is_err());
        let done = Transition::Finish {
            at: Millis(7_000),
            attempt: 2,
            result: JobResult::default(),
        }
        .apply(&taken)
        .unwrap();
        assert!(Transition::Start {
            at: Millis(99_000),
            lease_until: Millis(99_999)
        }
        .apply(&done)
        .is_err());
        assert!(Transition::Fail {
            at: Millis(99_000),
            reason: "x".into()
        }
        .apply(&done)
        .is_err());
    }

    #[test]
    fn only_the_current_attempt_renews_its_lease() {
        let running = Transition::Start {
            at: Millis(2_000),
            lease_until: Millis(5_000),
        }
        .apply(&job())
        .unwrap();
        let renew = |attempt, until| Transition::Renew {
            attempt,
            lease_until: Millis(until),
        };
        let renewed = renew(1, 9_000).apply(&running).unwrap();
        assert_eq!(
            (renewed.state, renewed.attempt, renewed.lease_until),
            (JobState::Running, 1, Some(Millis(9_000)))
        );
        // While renewed, a redelivered message cannot take the job.
        assert!(Transition::Start {
            at: Millis(6_000),
            lease_until: Millis(9_999)
        }
        .apply(&renewed)
        .is_err());
        assert!(renew(2, 9_000).apply(&running).is_err());
        assert!(renew(0, 9_000).apply(&job()).is_err());
        // Taken over after the lease ran out: the old holder can no longer renew.
        let taken = Transition::Start {
            at: Millis(10_000),
            lease_until: Millis(20_000),
        }
        .apply(&renewed)
        .unwrap();
        assert!(renew(1, 30_000).apply(&taken).is_err());
        let done = Transition::Finish {
            at: Millis(11_000),
            attempt: 2,
            result: JobResult::default(),
        }
        .apply(&taken)
        .unwrap();
        assert!(renew(2, 30_000).apply(&done).is_err());
    }

    #[test]
    fn requeue_needs_the_same_attempt_with_its_lease_over() {
        let running = Transition::Start {
            at: Millis(2_000),
            lease_until: Millis(5_000),
        }
        .apply(&job())
        .unwrap();
        let requeue = |at, attempt| Transition::Requeue {
            at: Millis(at),
            attempt,
        };
        // The holder is alive (lease not over): the reaper must leave it.
        assert!(requeue(5_000, 1).apply(&running).is_err());
        assert!(requeue(6_000, 2).apply(&running).is_err());
        let queued = requeue(6_000, 1).apply(&running).unwrap();
        assert_eq!(
            (queued.state, queued.attempt, queued.lease_until),
            (JobState::Queued, 1, None)
        );
        assert!(requeue(7_000, 1).apply(&queued).is_err());
        let again = Transition::Start {
            at: Millis(8_000),
            lease_until: Millis(9_000),
        }
        .apply(&queued)
        .unwrap();
        assert_eq!(again.attempt, 2);
    }

    #[test]
    fn queued_job_can_fail_from_the_dead_letter_queue() {
        let failed = Transition::Fail {
            at: Millis(2_000),
            reason: "gave up".into(),
        }
        .apply(&job())
        .unwrap();
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.is_failed(), Some(true));
        assert_eq!(failed.error.as_deref(), Some("gave up"));
    }
}
