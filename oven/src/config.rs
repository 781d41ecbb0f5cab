//! The names of the environment variables Oven reads, in one place.
//!
//! `template.yaml` sets these on each function; a test compares the two, so a variable the code
//! reads can never be missing from a deployed function.

/// Absolute base URL of the API as browsers reach it; result URLs are built from it.
pub const PUBLIC_URL: &str = "OVEN_PUBLIC_URL";
/// Base URL of the keyboards site (what the Configurator calls `VITE_KEYBOARDS_URL`).
pub const KEYBOARDS_URL: &str = "OVEN_KEYBOARDS_URL";
/// DynamoDB job table name.
pub const JOB_TABLE: &str = "OVEN_JOB_TABLE";
/// SQS compile queue URL.
pub const QUEUE_URL: &str = "OVEN_QUEUE_URL";
/// ARN of the dead-letter queue: messages from it turn their job `failed`.
pub const DLQ_ARN: &str = "OVEN_DLQ_ARN";
/// S3 bucket for firmware, keymaps, source archives and logs.
pub const ARTIFACT_BUCKET: &str = "OVEN_ARTIFACT_BUCKET";
/// S3 bucket holding the published keyboards tree.
pub const KEYBOARDS_BUCKET: &str = "OVEN_KEYBOARDS_BUCKET";
/// How long jobs and artifacts are kept, in hours.
pub const RETENTION_HOURS: &str = "OVEN_RETENTION_HOURS";
/// How many compiles run at once (the compile function's maximum concurrency): the status
/// route's queue-time estimate divides by it.
pub const COMPILE_CONCURRENCY: &str = "OVEN_COMPILE_CONCURRENCY";
/// Wall-clock limit of one compile, in seconds.
pub const COMPILE_TIMEOUT_SECS: &str = "OVEN_COMPILE_TIMEOUT_SECS";
/// The qmk_firmware tree the worker compiles in (the qmk CLI's own variable). Set by the
/// compile image (Dockerfile `ENV`), not by `template.yaml`.
pub const QMK_HOME: &str = "QMK_HOME";
/// Log filter for `telemetry::init` (`tracing_subscriber::EnvFilter` syntax, e.g.
/// `info,oven=debug`); optional, defaults to `info`.
pub const LOG: &str = "OVEN_LOG";

// What each deployed function reads, so `tests/template.rs` can check `template.yaml` sets
// exactly these on it. Optional variables with defaults (`LOG`) and variables the image sets
// (`QMK_HOME`) are not listed. Keep each list in step with the function's `main.rs`.

/// Every HTTP function: they serve one router whose state holds all three adapters, so each
/// builds the job table, the queue, the artifact store and the keyboard index (IAM, not the
/// environment, limits what each may do with them).
const HTTP_ENV: &[&str] = &[
    PUBLIC_URL,
    KEYBOARDS_URL,
    RETENTION_HOURS,
    JOB_TABLE,
    QUEUE_URL,
    ARTIFACT_BUCKET,
    KEYBOARDS_BUCKET,
    COMPILE_CONCURRENCY,
];
/// `functions/submit` (POST /v1/compile).
pub const SUBMIT_ENV: &[&str] = HTTP_ENV;
/// `functions/status` (GET /v1, job status, skeletons, converters, keyboards routes).
pub const STATUS_ENV: &[&str] = HTTP_ENV;
/// `functions/download` (GET /v1/compile/{id}/download|hex|keymap|source).
pub const DOWNLOAD_ENV: &[&str] = HTTP_ENV;
/// `functions/compile` (the SQS worker; the reaper re-queues, hence the queue).
pub const COMPILE_ENV: &[&str] = &[
    PUBLIC_URL,
    JOB_TABLE,
    QUEUE_URL,
    ARTIFACT_BUCKET,
    DLQ_ARN,
    RETENTION_HOURS,
    COMPILE_TIMEOUT_SECS,
];

/// Writable scratch directory of the compile worker (job directories, build state, ccache);
/// default `<temp dir>/oven`. On Lambda only /tmp is writable.
pub const WORK_DIR: &str = "OVEN_WORK_DIR";
/// A read-only ccache directory seeded ahead of time (`scripts/seed-ccache.sh`), which builds use
/// as ccache's second level when it exists; unset: no seed.
pub const CCACHE_SEED: &str = "OVEN_CCACHE_SEED";
/// `0`: builds never use ccache; `1`: every build does (when it is on PATH); otherwise only
/// builds of the keyboards the seed lists ([`crate::worker::build::CcachePolicy`]).
pub const CCACHE: &str = "OVEN_CCACHE";
/// `0`: builds run QMK's `cc-option` probe per unit, as QMK does (for A/B benchmarks; see
/// `worker::ccoption`).
pub const CC_OPTION_MEMO: &str = "OVEN_CC_OPTION_MEMO";
/// `1`: builds also write to the [`CCACHE_SEED`] directory (what `scripts/seed-ccache.sh` sets
/// while it makes one); otherwise they only read it.
pub const CCACHE_SEED_WRITE: &str = "OVEN_CCACHE_SEED_WRITE";
/// The build command the worker runs (default `qmk`, found on PATH).
pub const QMK_BIN: &str = "OVEN_QMK_BIN";
/// Tests only: a real qmk_firmware tree for the opt-in real-compile tests and bench/compile.sh.
pub const TEST_QMK_HOME: &str = "OVEN_QMK_HOME";

/// Default retention: twice the 24 h the contract asks as a minimum.
pub const DEFAULT_RETENTION_HOURS: u64 = 48;
/// Default compile time limit.
pub const DEFAULT_COMPILE_TIMEOUT_SECS: u64 = 300;

/// The AWS SDK's endpoint override (moto in tests, `oven serve` against an emulator); when set,
/// S3 is addressed path-style because emulators do not serve virtual-hosted buckets.
pub const AWS_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";
/// Set to `1` by `scripts/test.sh`: tests that need moto then fail instead of skipping.
pub const TEST_MOTO: &str = "OVEN_TEST_MOTO";
