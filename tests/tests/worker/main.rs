//! The compile worker with real compiles: the fakeqmk fixture (tests/fixtures/fakeqmk, a
//! qmk-like CLI building keymaps with avr-gcc) and, opt-in, a real qmk_firmware tree named by
//! `OVEN_QMK_HOME`.

mod faults;
mod recovery;
mod repro;
mod verify;

use oven_tests::check_intel_hex;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oven::adapters::local::{LocalDb, LocalDbOptions, LocalStorage};
use oven::job::{Job, JobId, JobResult, JobState, Transition};
use oven::ports::{
    ArtifactKey, ArtifactMeta, ArtifactStore, Download, JobQueue, JobStore, QueueMessage,
};
use oven::time::Millis;
use oven::worker::{cache, Processed, Worker, WorkerConfig};
use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/fakeqmk")
}

/// A worker's world on the local adapters: SQLite job table and queue, artifact directory.
struct Env {
    dir: tempfile::TempDir,
    storage: LocalStorage,
    store: Arc<LocalDb>,
    queue: Arc<LocalDb>,
}

impl Env {
    fn new() -> Env {
        Self::with_options(LocalDbOptions {
            fsync_every_commit: false,
            ..Default::default()
        })
    }

    fn with_options(options: LocalDbOptions) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open_with(&dir.path().join("data"), options).unwrap();
        let db = Arc::new(storage.db.clone());
        Env {
            dir,
            storage,
            store: db.clone(),
            queue: db,
        }
    }

    fn cfg(&self) -> WorkerConfig {
        WorkerConfig {
            qmk_home: Some(fixture().join("qmk_firmware")),
            qmk: fixture().join("bin/qmk"),
            path: std::env::var("PATH").unwrap(),
            work_root: self.dir.path().join("work"),
            public_url: "https://oven.example".into(),
            compile_timeout: Duration::from_secs(120),
            lease: oven::worker::DEFAULT_LEASE,
            heartbeat: oven::worker::DEFAULT_HEARTBEAT,
            retry_after: Duration::from_millis(300),
            jobs: 2,
            log_cap: 1 << 20,
            max_attempts: 3,
            source_archives: true,
            qmk_client: None,
        }
    }

    fn worker(&self, cfg: WorkerConfig) -> Worker {
        Worker::new(
            self.store.clone(),
            self.queue.clone(),
            Arc::new(self.storage.artifacts.clone()),
            cfg,
        )
    }

    async fn submit(&self, request: Value) -> JobId {
        let id = JobId::new();
        let hash = cache::request_hash(&request).unwrap_or_default();
        let job = Job::queued(
            id,
            request,
            hash,
            Millis::now(),
            Duration::from_secs(86_400),
        );
        self.storage.db.submit(&job).await.unwrap();
        id
    }

    async fn job(&self, id: JobId) -> Job {
        self.store.get(id).await.unwrap().unwrap()
    }

    async fn result(&self, id: JobId) -> JobResult {
        let job = self.job(id).await;
        assert_eq!(job.state, JobState::Finished, "{job:?}");
        job.result.unwrap()
    }

    fn artifact(&self, id: JobId, name: &str) -> Vec<u8> {
        std::fs::read(
            self.storage
                .artifacts
                .path(&ArtifactKey::for_job(id, name).unwrap()),
        )
        .unwrap()
    }
}

fn keymap(keyboard: &str, km: &str, layout: &str, layers: Value) -> Value {
    json!({"version": 1, "keyboard": keyboard, "keymap": km, "layout": layout, "layers": layers})
}

fn good() -> Value {
    keymap(
        "fakekb",
        "mine",
        "LAYOUT_ortho_2x2",
        json!([
            ["KC_A", "KC_B", "MO(1)", "ANY(LCTL(KC_C))"],
            ["KC_1", "_______", "KC_TRNS", "KC_NO"]
        ]),
    )
}

#[tokio::test]
async fn compiles_and_stores_firmware_keymap_source_and_log() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let id = env.submit(good()).await;
    let out = worker.process(&QueueMessage { job_id: id }).await.unwrap();
    assert_eq!(
        out,
        Processed::Finished {
            returncode: 0,
            cached: false
        }
    );
    let job = env.job(id).await;
    assert_eq!(job.attempt, 1);
    assert_eq!(job.is_failed(), Some(false));
    let r = job.result.unwrap();
    assert_eq!(r.firmware_filename, "fakekb_mine.hex");
    assert_eq!(r.keymap_archive, "fakekb-mine.json");
    assert_eq!(r.source_archive, "qmk_firmware-fakekb-mine.zip");
    assert_eq!(r.command, ["qmk", "compile", "fakekb-mine.json"]);
    assert_eq!(r.id, id.to_string());
    assert_eq!(
        r.firmware_binary_url,
        Some(vec![format!(
            "https://oven.example/v1/compile/{id}/download"
        )])
    );
    assert_eq!(
        r.firmware_source_url,
        Some(vec![format!("https://oven.example/v1/compile/{id}/source")])
    );
    assert_eq!(
        r.firmware_commit.as_deref(),
        Some("fakeqmk0000000000000000000000000000000001")
    );
    assert!(r.toolchains.as_ref().unwrap().contains_key("avr-gcc"));
    assert_eq!(
        r.toolchains
            .as_ref()
            .unwrap()
            .get("qmk")
            .map(String::as_str),
        Some("1.1.8-fakeqmk")
    );
    assert!(r.compile_seconds.unwrap() > 0.0);
    assert!(r.queue_seconds.unwrap() >= 0.0);
    assert_eq!(r.failure, None);
    // The log speaks of the user's keymap, not the shared build name.
    assert!(r.output.contains("fakekb:mine"), "{}", r.output);
    assert!(!r.output.contains("oven_build"));
    let keymap_json: Value = serde_json::from_str(&r.keymap_json).unwrap();
    assert_eq!(keymap_json, good());

    let fw = env.artifact(id, "fakekb_mine.hex");
    assert_eq!(r.firmware_size, Some(fw.len() as u64));
    let data = check_intel_hex(std::str::from_utf8(&fw).unwrap());
    // KC_A (0x0004) then KC_B (0x0005) as little-endian words: the keymap is in flash.
    assert!(
        data.windows(4).any(|w| w == [0x04, 0x00, 0x05, 0x00]),
        "keymap not found in the firmware"
    );
    let stored: Value = serde_json::from_slice(&env.artifact(id, "fakekb-mine.json")).unwrap();
    assert_eq!(stored, good());
    assert!(String::from_utf8(env.artifact(id, "build.log"))
        .unwrap()
        .contains("Compiling"));

    let zip_bytes = env.artifact(id, "qmk_firmware-fakekb-mine.zip");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut s = String::new();
    z.by_name("quantum/main.c")
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.contains("pgm_read_word"));
    let mut hex = Vec::new();
    z.by_name("fakekb_mine.hex")
        .unwrap()
        .read_to_end(&mut hex)
        .unwrap();
    assert_eq!(hex, fw);
    assert!(z.by_name("fakekb-mine.json").is_ok());
}

#[tokio::test]
async fn failed_builds_are_finished_results_with_a_class() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let cases = [
        (
            keymap(
                "fakekb",
                "c",
                "LAYOUT_ortho_2x2",
                json!([["KC_A", "KC_NOPE", "KC_C", "KC_D"]]),
            ),
            "compile_error",
            "KC_NOPE",
        ),
        (
            keymap(
                "fakekb",
                "l",
                "LAYOUT_missing",
                json!([["KC_A", "KC_B", "KC_C", "KC_D"]]),
            ),
            "unknown_layout",
            "LAYOUT_missing",
        ),
        (
            keymap("fakekb", "s", "LAYOUT_ortho_2x2", json!([[1, 2, 3, 4]])),
            "schema_rejected",
            "Invalid JSON keymap",
        ),
        (
            keymap("fakebig", "b", "LAYOUT", json!([["KC_A", "KC_B"]])),
            "firmware_too_large",
            "too large",
        ),
        (
            keymap("no_such_board", "x", "LAYOUT", json!([["KC_A"]])),
            "unknown_keyboard",
            "Unknown keyboard!",
        ),
    ];
    for (req, class, needle) in cases {
        let id = env.submit(req).await;
        worker.process(&QueueMessage { job_id: id }).await.unwrap();
        let r = env.result(id).await;
        assert_ne!(r.returncode, 0, "{class}");
        assert_eq!(r.failure.as_deref(), Some(class), "{}", r.output);
        assert!(r.output.contains(needle), "{class}: {}", r.output);
        assert_eq!(r.firmware_filename, "");
        assert_eq!(r.firmware_binary_url, None);
        assert_eq!(env.job(id).await.is_failed(), Some(true));
    }
}

#[tokio::test]
async fn timeout_kills_the_build_and_finishes_the_job() {
    let env = Env::new();
    let mut cfg = env.cfg();
    cfg.compile_timeout = Duration::from_secs(2);
    let worker = env.worker(cfg);
    let id = env
        .submit(keymap("fakeslow", "t", "LAYOUT", json!([["KC_A", "KC_B"]])))
        .await;
    let t = std::time::Instant::now();
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    let r = env.result(id).await;
    assert_eq!(r.returncode, oven::worker::returncode::TIMEOUT);
    assert_eq!(r.failure.as_deref(), Some("timeout"));
    assert!(r.output.contains("stopped after 2 s"));
}

#[tokio::test]
async fn oversize_log_is_capped_head_and_tail() {
    let env = Env::new();
    let mut cfg = env.cfg();
    cfg.log_cap = 64 * 1024;
    let worker = env.worker(cfg);
    let id = env
        .submit(keymap("fakeloud", "n", "LAYOUT", json!([["KC_A", "KC_B"]])))
        .await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_eq!(r.returncode, 0, "{}", r.output);
    assert!(r.output.len() < 66 * 1024, "{}", r.output.len());
    assert!(r.output.contains("bytes of build output omitted"));
    // The end of the log (the part that says what happened) survives.
    assert!(r.output.contains("Copying fakeloud_n.hex"), "tail lost");
}

#[tokio::test]
async fn redelivery_builds_nothing_twice() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let id = env.submit(good()).await;
    let msg = QueueMessage { job_id: id };
    worker.process(&msg).await.unwrap();
    let first = env.job(id).await;
    let fw = env
        .storage
        .artifacts
        .path(&ArtifactKey::for_job(id, "fakekb_mine.hex").unwrap());
    let mtime = std::fs::metadata(&fw).unwrap().modified().unwrap();
    assert_eq!(
        worker.process(&msg).await.unwrap(),
        Processed::Duplicate(JobState::Finished)
    );
    assert_eq!(env.job(id).await, first);
    assert_eq!(std::fs::metadata(&fw).unwrap().modified().unwrap(), mtime);

    // Someone else holds a live lease: leave the job alone.
    let id2 = env.submit(good()).await;
    let now = Millis::now();
    env.store
        .transition(
            id2,
            Transition::Start {
                at: now,
                lease_until: now.plus(Duration::from_secs(600)),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        worker.process(&QueueMessage { job_id: id2 }).await.unwrap(),
        Processed::Duplicate(JobState::Running)
    );
    let j = env.job(id2).await;
    assert_eq!((j.state, j.attempt), (JobState::Running, 1));

    assert_eq!(
        worker
            .process(&QueueMessage {
                job_id: JobId::new()
            })
            .await
            .unwrap(),
        Processed::Missing
    );
}

#[tokio::test]
async fn identical_resubmission_is_served_from_the_cache() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let a = env.submit(good()).await;
    worker.process(&QueueMessage { job_id: a }).await.unwrap();
    let b = env.submit(good()).await;
    let t = std::time::Instant::now();
    assert_eq!(
        worker.process(&QueueMessage { job_id: b }).await.unwrap(),
        Processed::Finished {
            returncode: 0,
            cached: true
        }
    );
    eprintln!("cached job took {:?}", t.elapsed());
    let (ra, rb) = (env.result(a).await, env.result(b).await);
    assert_eq!(rb.cached, Some(true));
    assert_eq!(rb.id, b.to_string());
    assert_eq!(
        rb.firmware_binary_url,
        Some(vec![format!(
            "https://oven.example/v1/compile/{b}/download"
        )])
    );
    assert_eq!(ra.firmware_filename, rb.firmware_filename);
    // The second job has its own copies (they expire with it).
    assert_eq!(
        env.artifact(a, "fakekb_mine.hex"),
        env.artifact(b, "fakekb_mine.hex")
    );
    assert_eq!(
        env.artifact(a, "qmk_firmware-fakekb-mine.zip"),
        env.artifact(b, "qmk_firmware-fakekb-mine.zip")
    );

    // A different keymap is compiled, and failures are never served from the cache.
    let mut other = good();
    other["layers"][0][0] = json!("KC_Z");
    let c = env.submit(other).await;
    assert_eq!(
        worker.process(&QueueMessage { job_id: c }).await.unwrap(),
        Processed::Finished {
            returncode: 0,
            cached: false
        }
    );
    let bad = keymap(
        "fakekb",
        "bad",
        "LAYOUT_ortho_2x2",
        json!([["KC_A", "KC_NOPE", "KC_C", "KC_D"]]),
    );
    let d1 = env.submit(bad.clone()).await;
    worker.process(&QueueMessage { job_id: d1 }).await.unwrap();
    let d2 = env.submit(bad).await;
    let out = worker.process(&QueueMessage { job_id: d2 }).await.unwrap();
    assert!(
        matches!(out, Processed::Finished { cached: false, .. }),
        "{out:?}"
    );
}

#[tokio::test]
async fn dead_letter_fails_the_job_with_a_reason() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let id = env.submit(good()).await;
    worker
        .fail_dead_letter(&QueueMessage { job_id: id })
        .await
        .unwrap();
    let j = env.job(id).await;
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains("try again"));
    // A dead letter for a finished job changes nothing.
    let id2 = env.submit(good()).await;
    worker.process(&QueueMessage { job_id: id2 }).await.unwrap();
    worker
        .fail_dead_letter(&QueueMessage { job_id: id2 })
        .await
        .unwrap();
    assert_eq!(env.job(id2).await.state, JobState::Finished);
}

#[tokio::test]
async fn reaper_requeues_vanished_jobs_then_gives_up() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let id = env.submit(good()).await;
    // The original message is consumed by a worker that then dies with the lease running out.
    let d = env.queue.receive(1, Duration::ZERO).await.unwrap();
    env.queue.ack(&d[0].receipt).await.unwrap();
    let past = Millis(Millis::now().0 - 10_000);
    env.store
        .transition(
            id,
            Transition::Start {
                at: past,
                lease_until: Millis(past.0 + 1),
            },
        )
        .await
        .unwrap();
    assert_eq!(worker.reap().await.unwrap(), 1);
    assert_eq!(env.queue.waiting().await.unwrap(), 1);
    let d = env.queue.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(d[0].message.job_id, id);
    worker.process(&d[0].message).await.unwrap();
    let j = env.job(id).await;
    assert_eq!((j.state, j.attempt), (JobState::Finished, 2));

    // After max_attempts starts the reaper fails the job instead.
    let id2 = env.submit(good()).await;
    let base = Millis::now().0 - 10_000;
    for i in 0..3 {
        let past = Millis(base + i * 100);
        env.store
            .transition(
                id2,
                Transition::Start {
                    at: past,
                    lease_until: Millis(past.0 + 1),
                },
            )
            .await
            .unwrap();
    }
    worker.reap().await.unwrap();
    let j = env.job(id2).await;
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains("stopped responding"));
}

#[tokio::test]
async fn without_a_tree_every_job_finishes_with_the_setup_hint() {
    let env = Env::new();
    let mut cfg = env.cfg();
    cfg.qmk_home = None;
    let worker = env.worker(cfg);
    let id = env.submit(good()).await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_ne!(r.returncode, 0);
    assert_eq!(r.output, oven::worker::tree::NO_TREE_MESSAGE);
    assert!(r.output.contains("oven setup"), "{}", r.output);
}

#[tokio::test]
async fn the_base_source_archive_is_made_when_the_worker_starts() {
    // Not in the first job, which would show `queued` meanwhile (54 s on moto's S3 once).
    use oven::ports::ArtifactStore;
    let env = Env::new();
    let commit = oven::worker::tree::firmware_commit(&fixture().join("qmk_firmware"));
    let key = oven::worker::source::base_key(&commit).unwrap();
    assert_eq!(env.storage.artifacts.size(&key).await.unwrap(), None);
    let handle = oven::worker::spawn_local(&env.storage, env.cfg()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.storage.artifacts.size(&key).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "no base archive without a job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.abort();
}

#[tokio::test]
async fn local_worker_loop_submit_to_download() {
    let env = Env::new();
    let handle = oven::worker::spawn_local(&env.storage, env.cfg()).unwrap();
    let id = env.submit(good()).await;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let j = env.job(id).await;
        if seen.last() != Some(&j.state) {
            seen.push(j.state);
        }
        if j.state.is_terminal() || std::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.abort();
    assert_eq!(seen.first(), Some(&JobState::Queued), "{seen:?}");
    assert_eq!(seen.last(), Some(&JobState::Finished), "{seen:?}");
    assert!(seen.contains(&JobState::Running), "{seen:?}");
    let r = env.result(id).await;
    // What the download route does: ask the artifact store for the firmware.
    let key = ArtifactKey::for_job(id, &r.firmware_filename).unwrap();
    let meta = ArtifactMeta {
        content_type: "application/octet-stream".into(),
        file_name: r.firmware_filename.clone(),
    };
    let Download::File { path, len, .. } =
        env.storage.artifacts.download(&key, &meta).await.unwrap()
    else {
        panic!("local artifacts are served as files");
    };
    let hex = std::fs::read(path).unwrap();
    assert_eq!(hex.len() as u64, len);
    check_intel_hex(std::str::from_utf8(&hex).unwrap());
    assert_eq!(env.queue.waiting().await.unwrap(), 0);
}

#[tokio::test]
async fn local_dead_letters_fail_their_jobs() {
    let env = Env::with_options(LocalDbOptions {
        fsync_every_commit: false,
        visibility_timeout: Duration::from_millis(50),
        max_receives: 1,
        ..Default::default()
    });
    let id = env.submit(good()).await;
    // Received and never acknowledged (a worker that died): after the visibility timeout the
    // message has used up its receives and goes to the dead-letter table.
    assert_eq!(env.queue.receive(1, Duration::ZERO).await.unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(env
        .queue
        .receive(1, Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
    let handle = oven::worker::spawn_local(&env.storage, env.cfg()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !env.job(id).await.state.is_terminal() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.abort();
    let j = env.job(id).await;
    assert_eq!(j.state, JobState::Failed, "{j:?}");
    assert!(j.error.unwrap().contains("try again"));
}

/// Opt-in: `OVEN_QMK_HOME=<qmk_firmware tree>` (with `qmk` and the AVR and ARM toolchains on
/// PATH) compiles dz60 (AVR) and planck/rev6 (ARM) from Configurator-style keymaps.
#[tokio::test]
async fn real_tree_compiles_avr_and_arm() {
    let Some(home) = std::env::var_os(oven::config::TEST_QMK_HOME) else {
        eprintln!("skipped: set OVEN_QMK_HOME to a qmk_firmware tree to compile real keyboards");
        return;
    };
    let env = Env::new();
    let mut cfg = env.cfg();
    cfg.qmk_home = Some(PathBuf::from(home));
    cfg.qmk = "qmk".into();
    cfg.compile_timeout = Duration::from_secs(900);
    cfg.source_archives = false;
    let worker = env.worker(cfg);
    let dz60 = keymap(
        "dz60",
        "oven_test",
        "LAYOUT_60_ansi",
        json!([[
            "KC_ESC", "KC_1", "KC_2", "KC_3", "KC_4", "KC_5", "KC_6", "KC_7", "KC_8", "KC_9",
            "KC_0", "KC_MINS", "KC_EQL", "KC_BSPC", "KC_TAB", "KC_Q", "KC_W", "KC_E", "KC_R",
            "KC_T", "KC_Y", "KC_U", "KC_I", "KC_O", "KC_P", "KC_LBRC", "KC_RBRC", "KC_BSLS",
            "KC_CAPS", "KC_A", "KC_S", "KC_D", "KC_F", "KC_G", "KC_H", "KC_J", "KC_K", "KC_L",
            "KC_SCLN", "KC_QUOT", "KC_ENT", "KC_LSFT", "KC_Z", "KC_X", "KC_C", "KC_V", "KC_B",
            "KC_N", "KC_M", "KC_COMM", "KC_DOT", "KC_SLSH", "KC_RSFT", "KC_LCTL", "KC_LGUI",
            "KC_LALT", "KC_SPC", "KC_RALT", "KC_RGUI", "MO(1)", "KC_RCTL"
        ]]),
    );
    // The same keyboard again with one key changed: the warm path must still build *this*
    // keymap (a stale keymap.c would give the first firmware again).
    let mut dz60_b = dz60.clone();
    dz60_b["keymap"] = json!("oven_test_b");
    dz60_b["layers"][0][0] = json!("KC_GRV");
    let planck_row: Vec<&str> = vec!["KC_A"; 47];
    let planck = keymap(
        "planck/rev6",
        "oven_test",
        "LAYOUT_planck_mit",
        json!([planck_row]),
    );
    let mut firmwares = Vec::new();
    for (req, file) in [
        (dz60, "dz60_oven_test.hex"),
        (dz60_b, "dz60_oven_test_b.hex"),
        (planck, "planck_rev6_oven_test.bin"),
    ] {
        let id = env.submit(req).await;
        worker.process(&QueueMessage { job_id: id }).await.unwrap();
        let r = env.result(id).await;
        assert_eq!(r.returncode, 0, "{}", r.output);
        assert_eq!(r.firmware_filename, file);
        let fw = env.artifact(id, file);
        if file.ends_with(".hex") {
            check_intel_hex(std::str::from_utf8(&fw).unwrap());
        } else {
            assert!(fw.len() > 10_000);
        }
        let units = r.output.matches("Compiling: ").count();
        eprintln!(
            "{file}: {:.1} s compile, {units} units compiled",
            r.compile_seconds.unwrap()
        );
        firmwares.push(fw);
    }
    assert_ne!(
        firmwares[0], firmwares[1],
        "second dz60 keymap gave the first firmware"
    );
}

#[tokio::test]
async fn lambda_batch_fails_dead_letters_and_reports_infrastructure_errors() {
    use oven::worker::batch::{handle, Record};
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let dlq = "arn:aws:sqs:us-east-1:000000000000:oven-dlq";
    let (ok, dead) = (env.submit(good()).await, env.submit(good()).await);
    let rec = |mid: &str, id: JobId, arn: &str| Record {
        message_id: mid.into(),
        body: serde_json::to_string(&QueueMessage { job_id: id }).unwrap(),
        event_source_arn: Some(arn.into()),
        receipt_handle: None,
    };
    let records = [
        rec("m1", ok, "arn:aws:sqs:us-east-1:000000000000:oven-jobs"),
        rec("m2", dead, dlq),
        Record {
            message_id: "m3".into(),
            body: "not json".into(),
            event_source_arn: None,
            receipt_handle: None,
        },
    ];
    assert!(handle(&worker, Some(dlq), &records).await.is_empty());
    assert_eq!(env.job(ok).await.state, JobState::Finished);
    assert_eq!(env.job(dead).await.state, JobState::Failed);

    // The artifact store is down: the job is not finished, the record comes back.
    let broken = Worker::new(
        env.store.clone(),
        env.queue.clone(),
        Arc::new(faults::DownArtifacts),
        env.cfg(),
    );
    let id = env.submit(good()).await;
    let failed = handle(
        &broken,
        Some(dlq),
        &[rec("m4", id, "arn:aws:sqs:x:1:oven-jobs")],
    )
    .await;
    assert_eq!(failed, ["m4"]);
    assert!(!env.job(id).await.state.is_terminal());
}

#[tokio::test]
async fn a_record_failed_by_the_infrastructure_comes_back_after_retry_after() {
    // A wrong or unreachable bucket is not the job's fault: the record must come back soon
    // (and reach the dead-letter queue after its receives), not stay away for the queue's
    // whole visibility timeout with the job shown `queued` (found on moto with a wrong
    // OVEN_ARTIFACT_BUCKET).
    use oven::worker::batch::{handle, Record};
    let env = Env::new();
    let cfg = env.cfg();
    let retry_after = cfg.retry_after;
    let broken = Worker::new(
        env.store.clone(),
        env.queue.clone(),
        Arc::new(faults::DownArtifacts),
        cfg,
    );
    let id = env.submit(good()).await;
    let d = env.queue.receive(1, Duration::from_secs(1)).await.unwrap();
    assert_eq!(d.len(), 1);
    let record = Record {
        message_id: "m1".into(),
        body: serde_json::to_string(&d[0].message).unwrap(),
        event_source_arn: None,
        receipt_handle: Some(d[0].receipt.clone()),
    };
    assert_eq!(handle(&broken, None, &[record]).await, ["m1"]);
    assert!(!env.job(id).await.state.is_terminal());
    let back = Instant::now();
    let again = loop {
        let d = env
            .queue
            .receive(1, Duration::from_millis(100))
            .await
            .unwrap();
        if !d.is_empty() {
            break d;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "the record did not come back"
        );
    };
    assert_eq!(again[0].message.job_id, id);
    assert_eq!(again[0].receive_count, 2);
    assert!(back.elapsed() < retry_after * 10, "{:?}", back.elapsed());
}

/// The name a browser saves artifact `name` of job `id` under.
async fn saved_as(env: &Env, id: JobId, name: &str) -> String {
    env.result(id).await.download_name(name)
}

#[tokio::test]
async fn keyboard_aliases_build_and_the_result_names_both_keyboards() {
    // `fakealias` is an alias of `fakekb` in the fixture's keyboard_aliases.hjson, as
    // `handwired/ferris` is of `ferris/0_1` in QMK's: the build writes `fakekb_<keymap>.hex`.
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let mut req = good();
    req["keyboard"] = json!("fakealias");
    req["keymap"] = json!("mine.v2");
    let id = env.submit(req).await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_eq!(r.returncode, 0, "{}", r.output);
    assert_eq!(r.keyboard, "fakealias");
    assert_eq!(r.keyboard_folder.as_deref(), Some("fakekb"));
    assert_eq!(r.keymap, "mine.v2");
    assert_eq!(r.firmware_filename, "fakekb_mine.v2.hex");
    assert!(env.artifact(id, &r.firmware_filename).starts_with(b":"));
    assert_eq!(
        saved_as(&env, id, &r.firmware_filename).await,
        "fakekb_mine.v2.hex"
    );
}

#[tokio::test]
async fn keymap_names_the_configurator_sends_are_built_and_saved_under_their_own_name() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    for (km, key, saved) in [
        ("clavier_é", "fakekb_clavier__.hex", "fakekb_clavier_é.hex"),
        ("d'or+1", "fakekb_d_or_1.hex", "fakekb_d'or+1.hex"),
    ] {
        let mut req = good();
        req["keymap"] = json!(km);
        let id = env.submit(req).await;
        worker.process(&QueueMessage { job_id: id }).await.unwrap();
        let r = env.result(id).await;
        assert_eq!(r.returncode, 0, "{km}: {}", r.output);
        assert_eq!(r.keymap, km);
        assert_eq!(r.firmware_filename, key);
        assert_eq!(saved_as(&env, id, key).await, saved);
        // The log names the user's keymap, never the internal build name.
        assert!(
            !r.output.contains(oven::worker::BUILD_KEYMAP),
            "{}",
            r.output
        );
    }
}

#[tokio::test]
async fn misfits_the_tree_shows_fail_at_once_without_a_compile() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let four = json!(["KC_A", "KC_B", "KC_C", "KC_D"]);
    let cases = [
        (
            keymap(
                "fakedd",
                "k",
                "LAYOUT_ortho_1x4",
                json!([four, ["KC_A", "KC_B"]]),
            ),
            "layer_size",
            "Layer 1 has 2 keys, but LAYOUT_ortho_1x4 on fakedd has 4",
        ),
        (
            keymap("fakedd", "k", "LAYOUT_60_ansi", json!([four])),
            "unknown_layout",
            "The layout LAYOUT_60_ansi does not exist for fakedd. Its layouts: LAYOUT_ortho_1x4.",
        ),
        (
            keymap("fake", "k", "LAYOUT", json!([four])),
            "unknown_keyboard",
            "Unknown keyboard! fake is not a keyboard of qmk_firmware",
        ),
    ];
    for (req, class, first) in cases {
        let id = env.submit(req).await;
        worker.process(&QueueMessage { job_id: id }).await.unwrap();
        let r = env.result(id).await;
        assert_eq!(r.failure.as_deref(), Some(class), "{}", r.output);
        assert!(r.output.starts_with(first), "{class}: {}", r.output);
        assert_eq!(r.compile_seconds, None, "{class}: no compile was spent");
    }
    // The bare folder names its keyboards.
    let id = env
        .submit(keymap("fake", "k", "LAYOUT", json!([four])))
        .await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    assert!(env
        .result(id)
        .await
        .output
        .ends_with("Keyboards in that folder: fake/rev1."));
    // A layout alias of the keyboard fits.
    let id = env
        .submit(keymap("fakedd", "k", "LAYOUT", json!([four])))
        .await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_eq!(r.returncode, 0, "{}", r.output);
}

#[tokio::test]
async fn misfits_are_answered_at_submit_without_queueing() {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use oven::http::{ApiConfig, App, SubmitCheck};
    use tower::ServiceExt;

    let env = Env::new();
    let mut app = App::local(
        &env.storage,
        ApiConfig::new("https://oven.example", "https://keyboards.example"),
    );
    app.submit_check =
        oven::worker::SubmitPrecheck::new(&env.cfg()).map(|c| Arc::new(c) as Arc<dyn SubmitCheck>);
    let router = oven::http::router(app);
    let call = |method: &str, uri: String, body: Value| {
        let router = router.clone();
        let req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(if body.is_null() {
                Body::empty()
            } else {
                Body::from(body.to_string())
            })
            .unwrap();
        async move {
            let res = router.oneshot(req).await.unwrap();
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let misfit = keymap(
        "fakedd",
        "k",
        "LAYOUT_ortho_1x4",
        json!([["KC_A", "KC_B", "KC_C", "KC_D"], ["KC_A"]]),
    );
    let sub = call("POST", "/v1/compile".into(), misfit).await;
    assert_eq!(sub["enqueued"], true, "{sub}");
    let id = sub["job_id"].as_str().unwrap().to_string();
    // No worker runs: the answer is there at once, and nothing was queued.
    let doc = call("GET", format!("/v1/compile/{id}"), Value::Null).await;
    assert_eq!(doc["status"], "finished", "{doc}");
    assert_eq!(doc["is_failed"], true);
    assert_eq!(doc["result"]["failure"], "layer_size");
    assert!(doc["result"]["output"]
        .as_str()
        .unwrap()
        .starts_with("Layer 1 has 1 key, but LAYOUT_ortho_1x4 on fakedd has 4"));
    assert_eq!(env.queue.waiting().await.unwrap(), 0);
    // A keymap that fits is queued as always.
    let fits = keymap(
        "fakedd",
        "k",
        "LAYOUT",
        json!([["KC_A", "KC_B", "KC_C", "KC_D"]]),
    );
    let sub = call("POST", "/v1/compile".into(), fits).await;
    let doc = call(
        "GET",
        format!("/v1/compile/{}", sub["job_id"].as_str().unwrap()),
        Value::Null,
    )
    .await;
    assert_eq!(doc["status"], "queued", "{doc}");
    assert_eq!(env.queue.waiting().await.unwrap(), 1);
}

/// Every alias of a real tree resolves to the folder QMK's own `keyboard_folder` gives, and
/// every layout of the Configurator's bundled keymaps on that tree passes the pre-compile
/// checks: nothing QMK builds is refused (opt-in: OVEN_QMK_HOME, with `qmk` on PATH).
#[test]
fn real_tree_aliases_resolve_as_qmk_resolves_them() {
    let Some(home) = std::env::var_os(oven::config::TEST_QMK_HOME).map(PathBuf::from) else {
        eprintln!("skipped: set OVEN_QMK_HOME to a qmk_firmware tree");
        return;
    };
    // The qmk CLI's own interpreter has QMK's Python dependencies.
    let qmk = std::process::Command::new("sh")
        .args(["-c", "command -v qmk"])
        .output()
        .unwrap();
    let qmk = String::from_utf8(qmk.stdout).unwrap().trim().to_string();
    let shebang = std::fs::read_to_string(&qmk).unwrap();
    let python = shebang
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("#!")
        .trim();
    let script = r#"
import json, os, sys
sys.path.insert(0, 'lib/python')
from milc import cli
import qmk.keyboard
out = {}
for a in qmk.keyboard.keyboard_alias_definitions():
    try:
        out[a] = qmk.keyboard.keyboard_folder(a)
    except Exception:
        out[a] = None
print(json.dumps(out))
"#;
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .current_dir(&home)
        .env("ORIG_CWD", &home)
        .env("QMK_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let qmk_says: std::collections::BTreeMap<String, Option<String>> =
        serde_json::from_slice(&out.stdout).unwrap();
    let aliases = oven::worker::tree::load_aliases(&home);
    assert_eq!(aliases.len(), qmk_says.len());
    let mut differ = Vec::new();
    for (alias, folder) in &qmk_says {
        let ours = oven::worker::tree::resolve_keyboard(&home, &aliases, alias);
        if &ours != folder {
            differ.push(format!("{alias}: qmk {folder:?}, oven {ours:?}"));
        }
    }
    assert!(differ.is_empty(), "{} differ: {:?}", differ.len(), differ);
    eprintln!("{} aliases resolve as QMK resolves them", qmk_says.len());
}

/// Builds `requests` one after the other on `worker`; the firmware and result of each.
async fn build_each(env: &Env, worker: &Worker, requests: &[Value]) -> Vec<(Vec<u8>, JobResult)> {
    let mut out = Vec::new();
    for req in requests {
        let id = env.submit(req.clone()).await;
        worker.process(&QueueMessage { job_id: id }).await.unwrap();
        let r = env.result(id).await;
        assert_eq!(r.returncode, 0, "{}", r.output);
        assert_ne!(r.cached, Some(true));
        out.push((env.artifact(id, &r.firmware_filename), r));
    }
    out
}

/// Each request built alone by a new worker on a new work directory: the clean build.
async fn build_each_clean(cfg: impl Fn(&Env) -> WorkerConfig, requests: &[Value]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for req in requests {
        let env = Env::new();
        let worker = env.worker(cfg(&env));
        out.push(
            build_each(&env, &worker, std::slice::from_ref(req))
                .await
                .remove(0)
                .0,
        );
    }
    out
}

/// The warm path (one worker, one build directory: a new keymap of a keyboard built before
/// recompiles only what includes keymap.c) gives byte for byte the firmware a clean build of
/// the same keymap gives, for keymaps that differ in their layers only (primed), in their
/// layout (not primed: everything is regenerated) and back.
#[tokio::test]
async fn warm_path_builds_what_a_clean_build_builds() {
    let layers =
        |a: &str, b: &str| json!([["KC_A", a, "MO(1)", "KC_D"], ["KC_1", "KC_2", b, "KC_4"]]);
    let requests = vec![
        keymap("fakekb", "one", "LAYOUT_ortho_2x2", layers("KC_B", "KC_3")),
        keymap("fakekb", "two", "LAYOUT_ortho_2x2", layers("KC_X", "KC_3")),
        keymap(
            "fakekb",
            "three",
            "LAYOUT_ortho_2x2",
            layers("KC_X", "KC_Y"),
        ),
        keymap(
            "fakekb",
            "four",
            "LAYOUT_all",
            json!([["KC_A", "KC_B", "KC_C", "KC_D", "KC_E", "KC_F"]]),
        ),
        keymap("fakekb", "five", "LAYOUT_ortho_2x2", layers("KC_Q", "KC_3")),
        keymap(
            "fakekb",
            "six",
            "LAYOUT_ortho_2x2",
            json!([["KC_A", "KC_B", "KC_C", "KC_D"]]),
        ),
    ];
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let warm = build_each(&env, &worker, &requests).await;
    let clean = build_each_clean(|e| e.cfg(), &requests).await;
    for (i, ((fw, r), clean)) in warm.iter().zip(&clean).enumerate() {
        assert_eq!(
            fw, clean,
            "keymap {i}: warm and clean firmware differ\n{}",
            r.output
        );
        let units = r.output.matches("Compiling: ").count();
        let primed = i > 0 && requests[i]["layout"] == requests[i - 1]["layout"];
        // The warm path recompiles the unit including keymap.c alone; the others rebuild all.
        assert_eq!(
            units,
            if primed { 1 } else { 2 },
            "keymap {i}:\n{}",
            r.output
        );
        assert!(!r.output.contains("Generating:") || !primed, "{}", r.output);
    }
    for i in 1..warm.len() {
        assert_ne!(
            warm[i].0,
            warm[i - 1].0,
            "keymaps {i} and {} built the same",
            i - 1
        );
    }
}

/// Opt-in (`OVEN_QMK_HOME`, as `real_tree_compiles_avr_and_arm`): the same comparison on a
/// real tree, three dz60 keymaps differing in their layers, then in their layout.
#[tokio::test]
async fn real_tree_warm_path_builds_what_a_clean_build_builds() {
    let Some(home) = std::env::var_os(oven::config::TEST_QMK_HOME) else {
        eprintln!("skipped: set OVEN_QMK_HOME to a qmk_firmware tree to compile real keyboards");
        return;
    };
    let home = PathBuf::from(home);
    let cfg = move |env: &Env| {
        let mut cfg = env.cfg();
        cfg.qmk_home = Some(home.clone());
        cfg.qmk = "qmk".into();
        cfg.compile_timeout = Duration::from_secs(900);
        cfg.source_archives = false;
        cfg
    };
    let row = |first: &str| {
        let mut keys = vec!["KC_A"; 61];
        keys[0] = first;
        keys[59] = "MO(1)";
        json!([keys, vec!["KC_TRNS"; 61]])
    };
    let mut hhkb = vec!["KC_B"; 60];
    hhkb[0] = "KC_ESC";
    let requests = vec![
        keymap("dz60", "one", "LAYOUT_60_ansi", row("KC_ESC")),
        keymap("dz60", "two", "LAYOUT_60_ansi", row("KC_GRV")),
        keymap("dz60", "three", "LAYOUT_60_hhkb", json!([hhkb])),
    ];
    let env = Env::new();
    let worker = env.worker(cfg(&env));
    let warm = build_each(&env, &worker, &requests).await;
    let clean = build_each_clean(cfg, &requests).await;
    for (i, ((fw, r), clean)) in warm.iter().zip(&clean).enumerate() {
        assert_eq!(
            fw, clean,
            "keymap {i}: warm and clean firmware differ\n{}",
            r.output
        );
        eprintln!(
            "keymap {i}: {} units compiled warm, {:.1} s",
            r.output.matches("Compiling: ").count(),
            r.compile_seconds.unwrap_or(0.0)
        );
    }
    assert_ne!(warm[0].0, warm[1].0);
}

/// Every built job's result says where its time went: all phases present for a full build,
/// the build's own four adding up to `compile_seconds`; a cached result has its own wait and
/// copy only.
#[tokio::test]
async fn results_carry_their_phases() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let built = build_each(&env, &worker, &[good()]).await.remove(0).1;
    let p = built.phases.clone().expect("phases");
    let names: Vec<&str> = p.present().iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "queue",
            "prepare",
            "startup",
            "generate",
            "compile",
            "link",
            "store",
            "source_archive"
        ]
    );
    let build: f64 = [p.startup, p.generate, p.compile, p.link]
        .iter()
        .map(|v| v.unwrap())
        .sum();
    assert!(
        (build - built.compile_seconds.unwrap()).abs() < 1e-6,
        "{p:?}"
    );
    assert!(p.present().iter().all(|(_, v)| *v >= 0.0));
    let id = env.submit(good()).await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let hit = env.result(id).await;
    assert_eq!(hit.cached, Some(true));
    let names: Vec<&str> = hit
        .phases
        .unwrap()
        .present()
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(names, ["queue", "store"]);
}
