//! The storage conformance suite: one set of test bodies, generic over the ports, that every
//! adapter set must pass (`oven/tests/storage_local.rs` runs it on SQLite and files,
//! `oven/tests/storage_aws.rs` on DynamoDB, SQS and S3 served by moto).
//!
//! Each function panics on the first broken expectation. They take fresh, empty adapters.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::job::{Job, JobId, JobResult, JobState, Transition};
use crate::ports::{
    ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, CreateError, Download,
    JobQueue, JobStore, Part, QueueMessage, TransitionError,
};
use crate::time::Millis;

const DAY: Duration = Duration::from_secs(86_400);

/// A queued job created now, expiring in a day.
pub fn new_job() -> Job {
    Job::queued(
        JobId::new(),
        json!({"keyboard": "dz60", "keymap": "default", "layers": [["KC_A", "KC_B"]]}),
        "hash-1".into(),
        Millis::now(),
        DAY,
    )
}

fn result(returncode: i32) -> JobResult {
    JobResult {
        keyboard: "dz60".into(),
        keymap: "default".into(),
        returncode,
        output: "Compiling...\nok".into(),
        firmware_filename: "dz60_default.hex".into(),
        command: vec!["qmk".into(), "compile".into()],
        compile_seconds: Some(12.5),
        ..Default::default()
    }
}

fn start(at: i64, lease: i64) -> Transition {
    Transition::Start {
        at: Millis(at),
        lease_until: Millis(lease),
    }
}

fn conflict_state(r: Result<Job, TransitionError>) -> Job {
    match r {
        Err(TransitionError::Conflict(c)) => *c.current,
        other => panic!("expected a conflict, got {other:?}"),
    }
}

pub async fn create_get_duplicate(store: &impl JobStore) {
    let job = new_job();
    assert_eq!(store.get(job.id).await.unwrap(), None);
    store.create(&job).await.unwrap();
    assert_eq!(store.get(job.id).await.unwrap(), Some(job.clone()));
    let mut again = job.clone();
    again.request_hash = "other".into();
    match store.create(&again).await {
        Err(CreateError::Exists(id)) => assert_eq!(id, job.id),
        other => panic!("duplicate create: {other:?}"),
    }
    // The first one is untouched.
    assert_eq!(store.get(job.id).await.unwrap(), Some(job));
    store.ping().await.unwrap();
}

pub async fn transitions(store: &impl JobStore) {
    let job = new_job();
    let t0 = job.created_at.0;
    store.create(&job).await.unwrap();

    let running = store
        .transition(job.id, start(t0 + 10, t0 + 60_000))
        .await
        .unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.attempt, 1);
    assert_eq!(running.started_at, Some(Millis(t0 + 10)));
    assert_eq!(running.lease_until, Some(Millis(t0 + 60_000)));
    assert_eq!(store.get(job.id).await.unwrap(), Some(running.clone()));

    // A redelivered message while the lease holds: conflict carrying the job as stored.
    let current = conflict_state(store.transition(job.id, start(t0 + 20, t0 + 90_000)).await);
    assert_eq!(current, running);

    // A finish for another attempt is refused.
    let stale = Transition::Finish {
        at: Millis(t0 + 30),
        attempt: 2,
        result: result(0),
    };
    assert_eq!(
        conflict_state(store.transition(job.id, stale).await),
        running
    );

    let finish = Transition::Finish {
        at: Millis(t0 + 40),
        attempt: 1,
        result: result(0),
    };
    let done = store.transition(job.id, finish).await.unwrap();
    assert_eq!(done.state, JobState::Finished);
    assert_eq!(done.lease_until, None);
    assert_eq!(done.finished_at, Some(Millis(t0 + 40)));
    assert_eq!(done.result, Some(result(0)));
    assert_eq!(store.get(job.id).await.unwrap(), Some(done.clone()));

    // Terminal: nothing applies any more.
    assert_eq!(
        conflict_state(
            store
                .transition(job.id, start(t0 + 999_999, t0 + 1_999_999))
                .await
        ),
        done
    );
    let fail = Transition::Fail {
        at: Millis(t0 + 50),
        reason: "late".into(),
    };
    assert_eq!(conflict_state(store.transition(job.id, fail).await), done);

    // A queued job fails (dead-letter queue); a failed one stays failed.
    let other = new_job();
    store.create(&other).await.unwrap();
    let fail = Transition::Fail {
        at: Millis(t0 + 5),
        reason: "gave up after 3 attempts".into(),
    };
    let failed = store.transition(other.id, fail.clone()).await.unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("gave up after 3 attempts"));
    assert_eq!(failed.is_failed(), Some(true));
    assert_eq!(store.get(other.id).await.unwrap(), Some(failed.clone()));
    assert_eq!(
        conflict_state(store.transition(other.id, fail).await),
        failed
    );

    // A running job fails too (deadline).
    let third = new_job();
    store.create(&third).await.unwrap();
    store.transition(third.id, start(t0, t0 + 1)).await.unwrap();
    let failed = store
        .transition(
            third.id,
            Transition::Fail {
                at: Millis(t0 + 2),
                reason: "timeout".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!((failed.state, failed.lease_until), (JobState::Failed, None));

    // Unknown job.
    let missing = JobId::new();
    match store.transition(missing, start(t0, t0 + 1)).await {
        Err(TransitionError::NotFound(id)) => assert_eq!(id, missing),
        other => panic!("transition of a missing job: {other:?}"),
    }
}

pub async fn lease_expired_restart(store: &impl JobStore) {
    let job = new_job();
    let t0 = job.created_at.0;
    store.create(&job).await.unwrap();
    let first = store
        .transition(job.id, start(t0, t0 + 1_000))
        .await
        .unwrap();
    assert_eq!(first.attempt, 1);

    // The reaper sees it once the lease has passed, and not before.
    let early = store.expired_leases(Millis(t0 + 1_000), 10).await.unwrap();
    assert!(early.iter().all(|j| j.id != job.id), "{early:?}");
    let late = store.expired_leases(Millis(t0 + 1_001), 10).await.unwrap();
    assert_eq!(
        late.iter().filter(|j| j.id == job.id).count(),
        1,
        "{late:?}"
    );

    // Another worker takes over; the first worker's finish is then stale.
    let second = store
        .transition(job.id, start(t0 + 2_000, t0 + 9_000))
        .await
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(second.lease_until, Some(Millis(t0 + 9_000)));
    let stale = Transition::Finish {
        at: Millis(t0 + 2_500),
        attempt: 1,
        result: result(0),
    };
    assert_eq!(
        conflict_state(store.transition(job.id, stale).await),
        second
    );
    let done = store
        .transition(
            job.id,
            Transition::Finish {
                at: Millis(t0 + 3_000),
                attempt: 2,
                result: result(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(done.is_failed(), Some(true));
    let late = store.expired_leases(Millis(t0 + 99_999), 10).await.unwrap();
    assert!(late.iter().all(|j| j.id != job.id), "{late:?}");
}

fn renew(attempt: u32, lease: i64) -> Transition {
    Transition::Renew {
        attempt,
        lease_until: Millis(lease),
    }
}

/// The heartbeat: the holder of the current attempt moves its lease on, nobody else can; a
/// renewed lease keeps redelivered messages and the reaper away; a lease moved into the past
/// gives the job up at once.
pub async fn lease_renewal(store: &impl JobStore) {
    let job = new_job();
    let t0 = job.created_at.0;
    store.create(&job).await.unwrap();
    // Not running yet: nothing to renew.
    assert_eq!(
        conflict_state(store.transition(job.id, renew(0, t0 + 5_000)).await),
        job
    );
    store
        .transition(job.id, start(t0, t0 + 1_000))
        .await
        .unwrap();
    let renewed = store
        .transition(job.id, renew(1, t0 + 30_000))
        .await
        .unwrap();
    assert_eq!(
        (renewed.state, renewed.attempt, renewed.lease_until),
        (JobState::Running, 1, Some(Millis(t0 + 30_000)))
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(renewed.clone()));
    // Past the first lease, before the renewed one: nobody may take it, the reaper skips it.
    let late = store.expired_leases(Millis(t0 + 20_000), 10).await.unwrap();
    assert!(late.iter().all(|j| j.id != job.id), "{late:?}");
    assert_eq!(
        conflict_state(
            store
                .transition(job.id, start(t0 + 20_000, t0 + 50_000))
                .await
        ),
        renewed
    );
    // Another attempt's heartbeat is refused.
    assert_eq!(
        conflict_state(store.transition(job.id, renew(2, t0 + 90_000)).await),
        renewed
    );
    // Given up (a lease in the past): the reaper sees it at once and a worker takes over;
    // the old holder can then neither renew nor finish.
    let released = store
        .transition(job.id, renew(1, t0 + 10_000))
        .await
        .unwrap();
    assert_eq!(released.lease_until, Some(Millis(t0 + 10_000)));
    let late = store.expired_leases(Millis(t0 + 10_001), 10).await.unwrap();
    assert_eq!(late.iter().filter(|j| j.id == job.id).count(), 1);
    let second = store
        .transition(job.id, start(t0 + 10_001, t0 + 40_000))
        .await
        .unwrap();
    assert_eq!(second.attempt, 2);
    assert_eq!(
        conflict_state(store.transition(job.id, renew(1, t0 + 99_000)).await),
        second
    );
    let stale_finish = Transition::Finish {
        at: Millis(t0 + 12_000),
        attempt: 1,
        result: result(0),
    };
    assert_eq!(
        conflict_state(store.transition(job.id, stale_finish).await),
        second
    );
    let done = store
        .transition(
            job.id,
            Transition::Finish {
                at: Millis(t0 + 13_000),
                attempt: 2,
                result: result(0),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        conflict_state(store.transition(job.id, renew(2, t0 + 99_000)).await),
        done
    );
    let missing = JobId::new();
    match store.transition(missing, renew(1, t0)).await {
        Err(TransitionError::NotFound(id)) => assert_eq!(id, missing),
        other => panic!("renewal of a missing job: {other:?}"),
    }
}

/// The reaper hands a job whose lease is over back to the queue; never a live one, never
/// another attempt's; queued, it leaves the reaper's view.
pub async fn requeue_lapsed(store: &impl JobStore) {
    let job = new_job();
    let t0 = job.created_at.0;
    store.create(&job).await.unwrap();
    let running = store
        .transition(job.id, start(t0, t0 + 1_000))
        .await
        .unwrap();
    let requeue = |at: i64, attempt| Transition::Requeue {
        at: Millis(at),
        attempt,
    };
    assert_eq!(
        conflict_state(store.transition(job.id, requeue(t0 + 1_000, 1)).await),
        running
    );
    assert_eq!(
        conflict_state(store.transition(job.id, requeue(t0 + 2_000, 2)).await),
        running
    );
    let queued = store
        .transition(job.id, requeue(t0 + 1_001, 1))
        .await
        .unwrap();
    assert_eq!(
        (queued.state, queued.attempt, queued.lease_until),
        (JobState::Queued, 1, None)
    );
    assert_eq!(store.get(job.id).await.unwrap(), Some(queued.clone()));
    let late = store.expired_leases(Millis(i64::MAX), 100).await.unwrap();
    assert!(late.iter().all(|j| j.id != job.id), "{late:?}");
    assert_eq!(
        conflict_state(store.transition(job.id, requeue(t0 + 3_000, 1)).await),
        queued
    );
    let again = store
        .transition(job.id, start(t0 + 4_000, t0 + 9_000))
        .await
        .unwrap();
    assert_eq!((again.state, again.attempt), (JobState::Running, 2));
}

pub async fn expiry_hides_jobs(store: &impl JobStore) {
    let now = Millis::now();
    let mut old = new_job();
    old.created_at = Millis(now.0 - 3 * 86_400_000);
    old.expires_at = Millis(now.0 - 1_000);
    store.create(&old).await.unwrap();
    assert_eq!(store.get(old.id).await.unwrap(), None);
    match store.transition(old.id, start(now.0, now.0 + 1_000)).await {
        Err(TransitionError::NotFound(id)) => assert_eq!(id, old.id),
        other => panic!("transition of an expired job: {other:?}"),
    }
    let fresh = new_job();
    store.create(&fresh).await.unwrap();
    assert!(store.get(fresh.id).await.unwrap().is_some());
}

/// How competing workers send their Start transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Competition {
    /// All at once: the store must serialise them itself.
    Concurrent,
    /// One after another: checks the condition alone. For moto server, whose DynamoDB
    /// evaluates a condition and applies the update without holding the item in between, so
    /// two concurrent requests can both pass (real DynamoDB applies each atomically).
    Sequential,
}

/// Many workers start one job: exactly one wins, the others see it running.
pub async fn competing_starts_have_one_winner(store: &impl JobStore, how: Competition) {
    let job = new_job();
    let t0 = job.created_at.0;
    store.create(&job).await.unwrap();
    let attempts = (0..24).map(|i| store.transition(job.id, start(t0 + i, t0 + 60_000 + i)));
    let outcomes = match how {
        Competition::Concurrent => futures::future::join_all(attempts).await,
        Competition::Sequential => {
            let mut out = Vec::new();
            for a in attempts {
                out.push(a.await);
            }
            out
        }
    };
    let mut wins = 0;
    for o in outcomes {
        match o {
            Ok(j) => {
                wins += 1;
                assert_eq!(j.attempt, 1);
            }
            Err(TransitionError::Conflict(c)) => {
                assert_eq!(c.current.state, JobState::Running);
                assert_eq!(c.current.attempt, 1);
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn receive_n(
    queue: &impl JobQueue,
    n: usize,
    within: Duration,
) -> Vec<crate::ports::Delivery> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.min(Duration::from_secs(1));
        got.extend(queue.receive(10, wait).await.unwrap());
    }
    got
}

pub async fn queue_send_receive_ack(queue: &impl JobQueue) {
    let ids: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for id in &ids {
        queue.send(&QueueMessage { job_id: *id }).await.unwrap();
    }
    assert_eq!(queue.waiting().await.unwrap(), 3);
    let got = receive_n(queue, 3, Duration::from_secs(10)).await;
    let mut got_ids: Vec<JobId> = got.iter().map(|d| d.message.job_id).collect();
    got_ids.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got_ids, want);
    assert!(got.iter().all(|d| d.receive_count == 1), "{got:?}");
    // In flight: not waiting, not delivered again.
    assert_eq!(queue.waiting().await.unwrap(), 0);
    assert!(queue
        .receive(10, Duration::from_millis(200))
        .await
        .unwrap()
        .is_empty());
    for d in &got {
        queue.ack(&d.receipt).await.unwrap();
    }
    assert_eq!(queue.waiting().await.unwrap(), 0);
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

/// `visibility` is the queue's visibility timeout.
pub async fn queue_visibility_redelivery(queue: &impl JobQueue, visibility: Duration) {
    let id = JobId::new();
    queue.send(&QueueMessage { job_id: id }).await.unwrap();
    let first = receive_n(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert_eq!((first[0].message.job_id, first[0].receive_count), (id, 1));
    // Not acked: it comes back after the visibility timeout, counted.
    let t = Instant::now();
    let again = receive_n(queue, 1, visibility + Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "not redelivered");
    assert!(t.elapsed() + Duration::from_millis(300) >= visibility / 2);
    assert_eq!((again[0].message.job_id, again[0].receive_count), (id, 2));
    queue.ack(&again[0].receipt).await.unwrap();
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    assert!(queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
}

/// The worker's heartbeat keeps its message invisible past the queue's visibility timeout
/// (`visibility`, at most 2 s here), and a zero timeout hands a message back at once.
pub async fn queue_extend_visibility(queue: &impl JobQueue, visibility: Duration) {
    let held = JobId::new();
    queue.send(&QueueMessage { job_id: held }).await.unwrap();
    let got = receive_n(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    let extended = visibility + Duration::from_secs(3);
    queue
        .extend_visibility(&got[0].receipt, extended)
        .await
        .unwrap();
    let t = Instant::now();
    tokio::time::sleep(visibility + Duration::from_millis(800)).await;
    assert!(
        queue.receive(10, Duration::ZERO).await.unwrap().is_empty(),
        "came back despite the extension"
    );
    let again = receive_n(queue, 1, extended + Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "never came back");
    assert!(t.elapsed() + Duration::from_millis(1_100) >= extended);
    assert_eq!((again[0].message.job_id, again[0].receive_count), (held, 2));
    queue.ack(&again[0].receipt).await.unwrap();

    let handed_back = JobId::new();
    queue
        .send(&QueueMessage {
            job_id: handed_back,
        })
        .await
        .unwrap();
    let got = receive_n(queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    queue
        .extend_visibility(&got[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(queue, 1, Duration::from_secs(2)).await;
    assert_eq!(
        again.len(),
        1,
        "a zero timeout should make it visible at once"
    );
    assert_eq!(
        (again[0].message.job_id, again[0].receive_count),
        (handed_back, 2)
    );
    queue.ack(&again[0].receipt).await.unwrap();
}

/// A receiver waiting on an empty queue is woken by a send, long before its wait ends.
pub async fn queue_long_poll_wakes_up(queue: &impl JobQueue) {
    let id = JobId::new();
    let t = Instant::now();
    let (got, ()) = tokio::join!(queue.receive(1, Duration::from_secs(15)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        queue.send(&QueueMessage { job_id: id }).await.unwrap();
    });
    let got = got.unwrap();
    let waited = t.elapsed();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.job_id, id);
    assert!(waited >= Duration::from_millis(450), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    queue.ack(&got[0].receipt).await.unwrap();
}

/// After `max_receives` deliveries without an ack, the message goes to the dead letters, which
/// `dead` returns (the local dead-letter table; the SQS dead-letter queue).
pub async fn queue_dead_letter<F, Fut>(
    queue: &impl JobQueue,
    visibility: Duration,
    max_receives: u32,
    dead: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Vec<JobId>>,
{
    let id = JobId::new();
    queue.send(&QueueMessage { job_id: id }).await.unwrap();
    for n in 1..=max_receives {
        let got = receive_n(queue, 1, visibility + Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "delivery {n}");
        assert_eq!((got[0].message.job_id, got[0].receive_count), (id, n));
    }
    tokio::time::sleep(visibility + Duration::from_millis(300)).await;
    assert!(queue
        .receive(10, Duration::from_millis(500))
        .await
        .unwrap()
        .is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dead = dead().await;
        if dead.contains(&id) {
            break;
        }
        assert!(Instant::now() < deadline, "never dead-lettered: {dead:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn meta(name: &str, content_type: &str) -> ArtifactMeta {
    ArtifactMeta {
        content_type: content_type.into(),
        file_name: name.into(),
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub async fn artifacts_put_get_size(store: &impl ArtifactStore) {
    let id = JobId::new();
    let key = ArtifactKey::for_job(id, "dz60_default.hex").unwrap();
    let m = meta("dz60_default.hex", "application/octet-stream");
    assert_eq!(store.size(&key).await.unwrap(), None);
    assert!(matches!(
        store.get(&key).await,
        Err(ArtifactError::NotFound(_))
    ));
    assert!(matches!(
        store.download(&key, &m).await,
        Err(ArtifactError::NotFound(_))
    ));

    store
        .put(
            &key,
            ArtifactBody::Bytes(Bytes::from_static(b":100000")),
            &m,
        )
        .await
        .unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        Bytes::from_static(b":100000")
    );
    assert_eq!(store.size(&key).await.unwrap(), Some(7));
    // Overwrite replaces.
    let data = pattern(100_000, 7);
    store
        .put(&key, ArtifactBody::Bytes(Bytes::from(data.clone())), &m)
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), data);
    assert_eq!(store.size(&key).await.unwrap(), Some(100_000));

    // From a file on disk.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("src.zip");
    let data = pattern(70_000, 3);
    std::fs::write(&path, &data).unwrap();
    let key = ArtifactKey::new(format!("sources/{}.zip", JobId::new())).unwrap();
    store
        .put(
            &key,
            ArtifactBody::File(path),
            &meta("src.zip", "application/zip"),
        )
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), data);

    // Keys that would escape their place cannot even be made.
    for bad in ["../x", "a/../../b", "/etc/passwd", "a b", ""] {
        assert!(ArtifactKey::new(bad).is_err(), "{bad}");
    }
}

/// `big`: the base archive is > 5 MiB and a copied range too (S3 `UploadPartCopy`).
pub async fn artifacts_compose(store: &impl ArtifactStore, big: bool) {
    let base_len = if big {
        6 * 1024 * 1024 + 12_345
    } else {
        40_000
    };
    let base = pattern(base_len, 11);
    let base_key = ArtifactKey::new(format!("sources/base-{}.zip", JobId::new())).unwrap();
    let zip = meta("base.zip", "application/zip");
    store
        .put(
            &base_key,
            ArtifactBody::Bytes(Bytes::from(base.clone())),
            &zip,
        )
        .await
        .unwrap();

    let id = JobId::new();
    let key = ArtifactKey::for_job(id, "source.zip").unwrap();
    let head = base_len - 1000;
    let parts = vec![
        Part::Copy {
            from: base_key.clone(),
            range: 0..head as u64,
        },
        Part::Bytes(Bytes::from_static(b"--the keymap--")),
        Part::Copy {
            from: base_key.clone(),
            range: 100..350,
        },
        Part::Bytes(Bytes::from_static(b"--central directory--")),
    ];
    let mut want = base[..head].to_vec();
    want.extend_from_slice(b"--the keymap--");
    want.extend_from_slice(&base[100..350]);
    want.extend_from_slice(b"--central directory--");
    store
        .compose(
            &key,
            parts,
            &meta("dz60_default_source.zip", "application/zip"),
        )
        .await
        .unwrap();
    assert_eq!(store.size(&key).await.unwrap(), Some(want.len() as u64));
    let got = store.get(&key).await.unwrap();
    assert!(got == want, "composed bytes differ");

    // Only small parts, starting with bytes.
    let key2 = ArtifactKey::for_job(id, "small.bin").unwrap();
    let parts = vec![
        Part::Bytes(Bytes::from_static(b"AB")),
        Part::Copy {
            from: base_key.clone(),
            range: 5..9,
        },
    ];
    store.compose(&key2, parts, &zip).await.unwrap();
    let mut want = b"AB".to_vec();
    want.extend_from_slice(&base[5..9]);
    assert_eq!(store.get(&key2).await.unwrap(), want);

    // A missing source is NotFound, and nothing is stored.
    let key3 = ArtifactKey::for_job(id, "broken.zip").unwrap();
    let missing = ArtifactKey::new(format!("sources/missing-{}.zip", JobId::new())).unwrap();
    let parts = vec![Part::Copy {
        from: missing,
        range: 0..10,
    }];
    match store.compose(&key3, parts, &zip).await {
        Err(ArtifactError::NotFound(_)) => {}
        other => panic!("compose from a missing source: {other:?}"),
    }
    assert_eq!(store.size(&key3).await.unwrap(), None);
}

/// The concatenated bytes of local file ranges (what the local runner streams).
pub fn read_pieces(pieces: &[crate::ports::FilePiece]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pieces {
        let data = std::fs::read(&p.path).unwrap();
        out.extend_from_slice(&data[p.range.start as usize..p.range.end as usize]);
    }
    out
}

/// Fetches `url` with curl (a presigned URL, as a browser would): (status, headers by
/// lower-cased name, body). Shared with the end-to-end tests of the AWS path.
pub fn curl(url: &str) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("h");
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-D"])
        .arg(&headers)
        .arg(url)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = std::fs::read_to_string(&headers).unwrap();
    let mut lines = text.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let hs = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, hs, out.stdout)
}

pub async fn artifacts_download(store: &impl ArtifactStore) {
    let missing = ArtifactKey::for_job(JobId::new(), "none.hex").unwrap();
    let m = meta("none.hex", "application/octet-stream");
    assert!(matches!(
        store.download(&missing, &m).await,
        Err(ArtifactError::NotFound(_))
    ));

    let id = JobId::new();
    let key = ArtifactKey::for_job(id, "firmware.hex").unwrap();
    let m = meta("dz60_default.hex", "application/octet-stream");
    let data = pattern(5_000, 9);
    // Stored under other headers: what `download` is given is what the browser gets.
    let stored = meta("stored.txt", "text/plain");
    store
        .put(
            &key,
            ArtifactBody::Bytes(Bytes::from(data.clone())),
            &stored,
        )
        .await
        .unwrap();
    match store.download(&key, &m).await.unwrap() {
        Download::File { path, meta, len } => {
            assert_eq!(meta, m);
            assert_eq!(len, 5_000);
            assert_eq!(std::fs::read(path).unwrap(), data);
        }
        Download::Pieces { pieces, meta, len } => {
            assert_eq!(meta, m);
            assert_eq!(len, 5_000);
            assert_eq!(read_pieces(&pieces), data);
        }
        Download::Redirect(url) => {
            let (status, headers, body) = tokio::task::spawn_blocking(move || curl(&url))
                .await
                .unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, data);
            let h = |n: &str| headers.get(n).cloned();
            assert_eq!(
                h("content-type").as_deref(),
                Some("application/octet-stream")
            );
            assert_eq!(
                h("content-disposition").as_deref(),
                Some("attachment; filename=\"dz60_default.hex\"")
            );
        }
    }

    // A keymap name as the Configurator sends it: the browser saves the typed name (RFC 6266
    // `filename*`), the stored key stays ASCII.
    let typed = meta("dz60_clavier_é'v2.hex", "application/octet-stream");
    match store.download(&key, &typed).await.unwrap() {
        Download::File { meta, .. } | Download::Pieces { meta, .. } => assert_eq!(meta, typed),
        Download::Redirect(url) => {
            let (status, headers, _) = tokio::task::spawn_blocking(move || curl(&url))
                .await
                .unwrap();
            assert_eq!(status, 200);
            let cd = headers.get("content-disposition").cloned();
            assert_eq!(
                cd.as_deref(),
                Some(crate::keymap::names::content_disposition("dz60_clavier_é'v2.hex").as_str())
            );
        }
    }
}
