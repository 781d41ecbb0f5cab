//! Waiting-time estimates for queued jobs: the workers record recent compile durations in the
//! artifact store (`stats/compile-seconds.json`, shared by every worker and the status route),
//! and [`eta`] turns the queue depth and their median into a position and a start time.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::job::{Job, JobState};
use crate::ports::{
    ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError, JobQueue,
};
use crate::time::Millis;

/// How many recent durations are kept.
const KEEP: usize = 20;
/// What to assume before any compile was recorded.
const DEFAULT_SECONDS: f64 = 30.0;

fn stats_key() -> Result<ArtifactKey, BackendError> {
    ArtifactKey::new("stats/compile-seconds.json").map_err(|e| BackendError::new("stats", e))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stats {
    recent: Vec<f64>,
}

async fn load(artifacts: &dyn ArtifactStore) -> Result<Stats, BackendError> {
    match artifacts.get(&stats_key()?).await {
        Ok(b) => Ok(serde_json::from_slice(&b).unwrap_or_default()),
        Err(ArtifactError::NotFound(_)) => Ok(Stats::default()),
        Err(ArtifactError::Backend(e)) => Err(e),
    }
}

/// Adds one compile duration (last writer wins between workers: these are estimates).
pub async fn record(artifacts: &dyn ArtifactStore, seconds: f64) -> Result<(), BackendError> {
    let mut stats = load(artifacts).await?;
    stats.recent.push(seconds);
    let excess = stats.recent.len().saturating_sub(KEEP);
    stats.recent.drain(..excess);
    let body = serde_json::to_vec(&stats).map_err(|e| BackendError::new("stats", e))?;
    artifacts
        .put(
            &stats_key()?,
            ArtifactBody::Bytes(Bytes::from(body)),
            &ArtifactMeta {
                content_type: "application/json".into(),
                file_name: "compile-seconds.json".into(),
            },
        )
        .await
}

/// The median of recent compile durations, in seconds.
pub async fn median_compile_seconds(artifacts: &dyn ArtifactStore) -> Result<f64, BackendError> {
    let mut v = load(artifacts).await?.recent;
    v.retain(|x| x.is_finite() && *x >= 0.0);
    if v.is_empty() {
        return Ok(DEFAULT_SECONDS);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[v.len() / 2])
}

/// Where a queued job stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Eta {
    /// Jobs waiting, this one included (the queue does not say which are ahead, so this is
    /// an upper bound).
    pub queue_position: u64,
    pub estimated_start: Millis,
    /// The median compile duration the estimate uses.
    pub median_compile_seconds: f64,
}

/// An estimate for a queued job, `None` for any other state. `workers` is how many compiles
/// run at once (1 for `oven serve`; the Lambda concurrency limit on AWS).
pub async fn eta(
    queue: &dyn JobQueue,
    artifacts: &dyn ArtifactStore,
    job: &Job,
    workers: u32,
    now: Millis,
) -> Result<Option<Eta>, BackendError> {
    if job.state != JobState::Queued {
        return Ok(None);
    }
    let waiting = queue.waiting().await?;
    let median = median_compile_seconds(artifacts).await?;
    Ok(Some(estimate(waiting, median, workers, now)))
}

/// The estimate from the queue depth and the median compile time.
fn estimate(waiting: u64, median: f64, workers: u32, now: Millis) -> Eta {
    let waiting = waiting.max(1);
    let ahead = waiting - 1;
    let secs = (ahead as f64 / f64::from(workers.max(1))).ceil() * median;
    Eta {
        queue_position: waiting,
        estimated_start: now.plus(std::time::Duration::from_secs_f64(secs)),
        median_compile_seconds: median,
    }
}

/// [`eta`] as the status route's [`QueueInsight`](crate::http::QueueInsight): queued jobs show
/// `jobs_ahead` and `eta_seconds`. Queue depth and median are read at most once a second, not
/// on every poll (counting a long local queue is not free, and clients poll every few
/// seconds). A backend error leaves the fields out rather than failing the poll.
pub struct EtaInsight {
    queue: std::sync::Arc<dyn JobQueue>,
    artifacts: std::sync::Arc<dyn ArtifactStore>,
    workers: u32,
    /// When the inputs were read, the queue depth, the median compile seconds.
    inputs: tokio::sync::Mutex<Option<(std::time::Instant, u64, f64)>>,
}

impl EtaInsight {
    /// `workers`: compiles that run at once (1 for `oven serve`).
    pub fn new(
        queue: std::sync::Arc<dyn JobQueue>,
        artifacts: std::sync::Arc<dyn ArtifactStore>,
        workers: u32,
    ) -> Self {
        EtaInsight {
            queue,
            artifacts,
            workers,
            inputs: tokio::sync::Mutex::new(None),
        }
    }

    async fn inputs(&self) -> Result<(u64, f64), BackendError> {
        let mut inputs = self.inputs.lock().await;
        if let Some((at, waiting, median)) = *inputs {
            if at.elapsed() < std::time::Duration::from_secs(1) {
                return Ok((waiting, median));
            }
        }
        let waiting = self.queue.waiting().await?;
        let median = median_compile_seconds(&*self.artifacts).await?;
        *inputs = Some((std::time::Instant::now(), waiting, median));
        Ok((waiting, median))
    }
}

#[async_trait::async_trait]
impl crate::http::QueueInsight for EtaInsight {
    async fn position(&self, job: &Job) -> Option<crate::http::QueuePosition> {
        if job.state != JobState::Queued {
            return None;
        }
        match self.inputs().await {
            Ok((waiting, median)) => {
                let now = Millis::now();
                let e = estimate(waiting, median, self.workers, now);
                Some(crate::http::QueuePosition {
                    jobs_ahead: e.queue_position - 1,
                    eta_seconds: Some(e.estimated_start.seconds_since(now).max(0.0)),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "queue position");
                None
            }
        }
    }
}
