//! Recovery from dead, restarted and stalled workers, with real builds (the fakeqmk fixture's
//! `fakepause` keyboard: a 4 s pause, then a real avr-gcc build), on both adapter sets: SQLite
//! and files, and DynamoDB, SQS and S3 on moto server (`scripts/test.sh` starts it; without
//! `AWS_ENDPOINT_URL` the moto variants skip, unless `OVEN_TEST_MOTO` is set, when they fail).
//!
//! Each scenario is one function taking a [`World`]; `both!` runs it on each adapter set.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oven::adapters::aws::{provision, AwsClients, AwsStorage};
use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::job::{Job, JobId, JobState, Transition};
use oven::ports::{
    ArtifactStore, BackendError, CreateError, Delivery, JobQueue, JobStore, QueueMessage,
    TransitionError,
};
use oven::time::Millis;
use oven::worker::{batch, cache, LeaseLost, Processed, Worker, WorkerConfig, WorkerError};

/// One adapter set, fresh and empty, and a scratch directory for the workers.
struct World {
    dir: tempfile::TempDir,
    store: Arc<dyn JobStore>,
    queue: Arc<dyn JobQueue>,
    artifacts: Arc<dyn ArtifactStore>,
}

impl World {
    fn local() -> World {
        let dir = tempfile::tempdir().unwrap();
        let options = LocalDbOptions {
            fsync_every_commit: false,
            ..Default::default()
        };
        let s = LocalStorage::open_with(&dir.path().join("data"), options).unwrap();
        let db = Arc::new(s.db.clone());
        World {
            dir,
            store: db.clone(),
            queue: db,
            artifacts: Arc::new(s.artifacts),
        }
    }

    async fn moto(test: &str) -> Option<World> {
        if std::env::var_os(oven::config::AWS_ENDPOINT_URL).is_none() {
            assert!(
                std::env::var_os(oven::config::TEST_MOTO).is_none(),
                "{} is set but {} is not: start moto (scripts/test.sh does)",
                oven::config::TEST_MOTO,
                oven::config::AWS_ENDPOINT_URL
            );
            eprintln!("skipping {test} on moto: no AWS_ENDPOINT_URL (scripts/test.sh sets it)");
            return None;
        }
        let clients = AwsClients::from_env().await;
        let suffix = &JobId::new().to_string()[..8];
        let prefix = format!("oven-rec-{}-{suffix}", test.replace('_', "-"));
        let prefix = prefix[prefix.len().saturating_sub(40)..].trim_start_matches('-');
        // The queue's own visibility timeout is long (as on AWS): only the worker's heartbeat
        // makes a dead worker's message come back soon.
        let conf = provision::ensure_all(&clients, prefix, Duration::from_secs(120), 5)
            .await
            .unwrap();
        let s = AwsStorage::new(&clients, &conf);
        Some(World {
            dir: tempfile::tempdir().unwrap(),
            store: Arc::new(s.jobs),
            queue: Arc::new(s.queue),
            artifacts: Arc::new(s.artifacts),
        })
    }

    /// Stores the job, then sends its message (as the submit route does on AWS).
    async fn submit(&self, keymap_name: &str) -> JobId {
        let request = super::keymap(
            "fakepause",
            keymap_name,
            "LAYOUT",
            serde_json::json!([["KC_A", "KC_B"]]),
        );
        let id = JobId::new();
        let hash = cache::request_hash(&request).unwrap_or_default();
        let job = Job::queued(
            id,
            request,
            hash,
            Millis::now(),
            Duration::from_secs(86_400),
        );
        match self.store.create(&job).await {
            Ok(()) => {}
            Err(CreateError::Exists(_)) => unreachable!("fresh id"),
            Err(e) => panic!("{e}"),
        }
        self.queue.send(&QueueMessage { job_id: id }).await.unwrap();
        id
    }

    /// A worker of its own scratch directory `name` (another machine, or another Lambda).
    fn worker(&self, name: &str, lease: Duration, heartbeat: Duration) -> Worker {
        self.worker_over(self.store.clone(), name, lease, heartbeat)
    }

    fn worker_over(
        &self,
        store: Arc<dyn JobStore>,
        name: &str,
        lease: Duration,
        heartbeat: Duration,
    ) -> Worker {
        let cfg = WorkerConfig {
            qmk_home: Some(super::fixture().join("qmk_firmware")),
            qmk: super::fixture().join("bin/qmk"),
            path: std::env::var("PATH").unwrap(),
            work_root: self.dir.path().join(name),
            public_url: "https://oven.example".into(),
            compile_timeout: Duration::from_secs(120),
            lease,
            heartbeat,
            retry_after: oven::worker::RETRY_AFTER,
            jobs: 2,
            log_cap: 1 << 20,
            max_attempts: 3,
            source_archives: true,
            qmk_client: None,
        };
        Worker::new(store, self.queue.clone(), self.artifacts.clone(), cfg)
    }

    async fn job(&self, id: JobId) -> Job {
        self.store.get(id).await.unwrap().expect("job exists")
    }

    async fn receive_one(&self) -> Delivery {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut got = self.queue.receive(1, Duration::from_secs(1)).await.unwrap();
            if let Some(d) = got.pop() {
                return d;
            }
            assert!(Instant::now() < deadline, "no message arrived");
        }
    }

    /// Runs `worker` over the queue (receive, process, acknowledge; and reap, if `reap`)
    /// until job `id` ends; panics after `within`.
    async fn work_until_done(
        &self,
        worker: &Worker,
        id: JobId,
        reap: bool,
        within: Duration,
    ) -> Job {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(id).await;
            if job.state.is_terminal() {
                return job;
            }
            assert!(Instant::now() < deadline, "not done in {within:?}: {job:?}");
            // As the worker loops do: a lease lost on the way is picked up again.
            if reap {
                worker.reap().await.unwrap();
            }
            for d in self.queue.receive(1, Duration::from_secs(1)).await.unwrap() {
                match worker.process_delivery(&d.message, Some(&d.receipt)).await {
                    Ok(_) => self.queue.ack(&d.receipt).await.unwrap(),
                    Err(e) => eprintln!("not acknowledged: {e}"),
                }
            }
        }
    }
}

/// Processes whose working directory is under `root`, a worker's work root: its builds (they
/// run in its tree overlay). Linux `/proc`.
fn build_processes(root: &Path) -> Vec<u32> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(entry.path().join("cwd")) {
            if cwd.starts_with(&root) {
                out.push(pid);
            }
        }
    }
    out
}

async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job store whose lease renewals fail: the worker's heartbeat stalls while the worker
/// itself lives on (a hung heartbeat, a partition between the worker and the table).
struct StalledHeartbeat(Arc<dyn JobStore>);

#[async_trait]
impl JobStore for StalledHeartbeat {
    async fn create(&self, job: &Job) -> Result<(), CreateError> {
        self.0.create(job).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, BackendError> {
        self.0.get(id).await
    }
    async fn transition(&self, id: JobId, t: Transition) -> Result<Job, TransitionError> {
        if matches!(t, Transition::Renew { .. }) {
            return Err(BackendError::new("stalled", "heartbeat cannot reach the table").into());
        }
        self.0.transition(id, t).await
    }
    async fn expired_leases(&self, before: Millis, limit: usize) -> Result<Vec<Job>, BackendError> {
        self.0.expired_leases(before, limit).await
    }
    async fn ping(&self) -> Result<(), BackendError> {
        self.0.ping().await
    }
}

/// The lease of the worker that dies or stalls: short, so the tests are.
const LEASE: Duration = Duration::from_secs(2);
const BEAT: Duration = Duration::from_millis(400);
/// The lease of the healthy worker that takes over: longer, so a loaded test machine cannot
/// make it lose the job too.
const SAFE_LEASE: Duration = Duration::from_secs(10);
const SAFE_BEAT: Duration = Duration::from_secs(1);

/// A worker dies mid-compile (its task dropped, as when a Lambda or `oven serve` dies): its
/// build process dies with it, and the message it kept invisible comes back once the lease is
/// over, so another worker finishes the job, without any reaper.
async fn killed_during_compile(w: World) {
    let id = w.submit("killed").await;
    let a = Arc::new(w.worker("a", LEASE, BEAT));
    let d = w.receive_one().await;
    let task = tokio::spawn({
        let a = a.clone();
        async move { a.process_delivery(&d.message, Some(&d.receipt)).await }
    });
    let a_root = w.dir.path().join("a");
    wait_for("a build process", Duration::from_secs(30), || {
        !build_processes(&a_root).is_empty()
    })
    .await;
    let held = w.job(id).await;
    assert_eq!((held.state, held.attempt), (JobState::Running, 1));
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    let killed = Instant::now();
    wait_for(
        "the build to die with its worker",
        Duration::from_secs(5),
        || build_processes(&a_root).is_empty(),
    )
    .await;

    let b = w.worker("b", SAFE_LEASE, SAFE_BEAT);
    // No reaper: the dead worker's own message comes back.
    let done = w
        .work_until_done(&b, id, false, Duration::from_secs(60))
        .await;
    eprintln!(
        "killed_during_compile: finished {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!((done.state, done.attempt), (JobState::Finished, 2));
    let r = done.result.unwrap();
    assert_eq!(r.returncode, 0, "{}", r.output);
    assert_eq!(r.firmware_filename, "fakepause_killed.hex");
}

/// `oven serve` restarts while its previous run held a job under a long lease: the new run,
/// knowing it is the only worker, gives the lease up and queues the job again at once.
async fn restart_requeues_at_once(w: World) {
    let long = Duration::from_secs(300);
    let id = w.submit("restarted").await;
    let before = w.worker("run1", long, BEAT);
    let d = w.receive_one().await;
    let work = async { before.process_delivery(&d.message, Some(&d.receipt)).await };
    let run1 = w.dir.path().join("run1");
    tokio::select! {
        r = work => panic!("the build should still run: {r:?}"),
        () = wait_for("a build process", Duration::from_secs(30), || {
            !build_processes(&run1).is_empty()
        }) => {}
    }
    drop(before); // the previous run is gone
    let restarted = Instant::now();
    let after = w.worker("run2", long, BEAT);
    assert_eq!(after.release_orphaned_leases().await.unwrap(), [id]);
    assert_eq!(after.reap().await.unwrap(), 1);
    let queued = w.job(id).await;
    assert_eq!((queued.state, queued.attempt), (JobState::Queued, 1));
    let done = w
        .work_until_done(&after, id, true, Duration::from_secs(60))
        .await;
    let took = restarted.elapsed();
    eprintln!("restart_requeues_at_once: finished {took:?} after the restart");
    assert_eq!((done.state, done.attempt), (JobState::Finished, 2));
    assert_eq!(done.result.unwrap().returncode, 0);
    // Nowhere near the 300 s lease the previous run held.
    assert!(took < Duration::from_secs(60), "{took:?}");
}

/// A compile twice as long as the lease stays with its worker: the heartbeat renews the
/// lease, so a redelivered message (or another worker's reaper) finds the job held and leaves
/// it, and the job finishes at its first attempt.
async fn lease_renewed_during_a_long_compile(w: World) {
    // Renewals go through moto's DynamoDB, which can take most of a second on a loaded
    // 2-core machine: the lease leaves room for that (the fixture's build pauses 4 s).
    let lease = Duration::from_secs(2);
    let beat = Duration::from_millis(250);
    let id = w.submit("long").await;
    let a = w.worker("a", lease, beat);
    let other = w.worker("b", lease, beat);
    let d = w.receive_one().await;
    let msg = d.message.clone();
    let building = a.process_delivery(&d.message, Some(&d.receipt));
    let meddling = async {
        // (checks made, when the last one found the job held)
        let mut seen = (0, Duration::ZERO);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let job = w.job(id).await;
            match job.state {
                // Not started yet (the worker prepares the base source archive first).
                JobState::Queued => continue,
                JobState::Running => {}
                _ => return seen,
            }
            assert_eq!(job.attempt, 1);
            // How long since this worker took the job.
            let at = Duration::from_millis((Millis::now().0 - job.started_at.unwrap().0) as u64);
            // The message delivered again, to another worker: the job is held, nothing built.
            // (It may finish between the read above and this delivery, on a loaded machine:
            // then it is a duplicate of the finished job, still nothing built.)
            match other.process(&msg).await.unwrap() {
                Processed::Duplicate(JobState::Running) => {}
                Processed::Duplicate(JobState::Finished) => return seen,
                p => panic!("a redelivery to another worker while the job ran gave {p:?}"),
            }
            assert_eq!(other.reap().await.unwrap(), 0);
            seen = (seen.0 + 1, at);
        }
    };
    let (built, (checks, last_held)) = tokio::join!(building, meddling);
    assert_eq!(
        built.unwrap(),
        Processed::Finished {
            returncode: 0,
            cached: false
        }
    );
    w.queue.ack(&d.receipt).await.unwrap();
    // Still held well after its first lease would have run out.
    assert!(checks >= 2, "{checks} checks");
    assert!(
        last_held > lease + lease / 2,
        "the compile should outlast the lease: last held at {last_held:?}"
    );
    let done = w.job(id).await;
    assert_eq!((done.state, done.attempt), (JobState::Finished, 1));
}

/// A worker lives on but its heartbeat stops (renewals fail). Its message is gone, so only
/// the scheduled reaper can help: once the lease is over the worker stops its build, the
/// reaper (the compile function's scheduled invocation, here every second instead of every
/// minute) queues the job again, and another worker finishes it.
async fn stalled_heartbeat_is_reaped(w: World) {
    let lease = Duration::from_millis(1_500);
    let beat = Duration::from_millis(300);
    let id = w.submit("stalled").await;
    let stalled: Arc<dyn JobStore> = Arc::new(StalledHeartbeat(w.store.clone()));
    let a = w.worker_over(stalled, "a", lease, beat);
    let b = w.worker("b", SAFE_LEASE, SAFE_BEAT);
    // The message is lost: acknowledged without the job being done.
    let d = w.receive_one().await;
    w.queue.ack(&d.receipt).await.unwrap();
    let t0 = Instant::now();
    let stuck = a.process(&d.message);
    let schedule = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            batch::scheduled(&b).await.unwrap();
            if w.job(id).await.state == JobState::Queued {
                return t0.elapsed();
            }
            assert!(t0.elapsed() < Duration::from_secs(60), "never requeued");
        }
    };
    let (outcome, requeued_after) = tokio::join!(stuck, schedule);
    match outcome {
        Err(WorkerError::LeaseLost(LeaseLost::Expired)) => {}
        other => panic!("the stalled worker should give up: {other:?}"),
    }
    assert!(build_processes(&w.dir.path().join("a")).is_empty());
    eprintln!("stalled_heartbeat_is_reaped: requeued {requeued_after:?} after the start");
    assert!(requeued_after < Duration::from_secs(60));
    let done = w
        .work_until_done(&b, id, true, Duration::from_secs(60))
        .await;
    assert_eq!((done.state, done.attempt), (JobState::Finished, 2));
    assert_eq!(done.result.unwrap().returncode, 0);
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(World::local()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                if let Some(w) = World::moto(stringify!($name)).await {
                    super::$name(w).await;
                }
            }
        }
    };
}

both!(killed_during_compile);
both!(restart_requeues_at_once);
both!(lease_renewed_during_a_long_compile);
both!(stalled_heartbeat_is_reaped);
