//! Measures the compile worker end to end (driven by bench/compile.sh, which also times the raw
//! build command on the same keymaps for comparison).
//!
//! compile_bench <qmk_home> <qmk program> <base keymap.json> <out dir>
//!
//! Writes three variants of the keymap (one key changed each) to <out dir>/variant<i>.json and
//! prints `name seconds` lines: the first job of a cold worker, the median of the three variant
//! jobs (a new keymap for a keyboard the worker has built), an identical resubmission (cache),
//! and the median cost of composing one job's source archive (and of its sha256 within it).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oven::adapters::local::{LocalDbOptions, LocalStorage};
use oven::job::{Job, JobId};
use oven::ports::{ArtifactKey, JobStore, QueueMessage};
use oven::time::Millis;
use oven::worker::{cache, source, Worker, WorkerConfig};
use serde_json::{json, Value};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, home, qmk, base, out] = &args[..] else {
        eprintln!("usage: compile_bench <qmk_home> <qmk> <keymap.json> <out dir>");
        std::process::exit(2);
    };
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out).unwrap();
    let base: Value = serde_json::from_slice(&std::fs::read(base).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let storage =
        LocalStorage::open_with(&dir.path().join("data"), LocalDbOptions::default()).unwrap();
    let store = Arc::new(storage.db.clone());
    let artifacts = Arc::new(storage.artifacts.clone());
    let cfg = WorkerConfig {
        qmk_home: Some(PathBuf::from(home)),
        qmk: PathBuf::from(qmk),
        path: std::env::var("PATH").unwrap(),
        work_root: dir.path().join("work"),
        public_url: "http://127.0.0.1".into(),
        compile_timeout: Duration::from_secs(900),
        lease: oven::worker::DEFAULT_LEASE,
        heartbeat: oven::worker::DEFAULT_HEARTBEAT,
        retry_after: oven::worker::RETRY_AFTER,
        jobs: 2,
        log_cap: 1 << 20,
        max_attempts: 3,
        source_archives: true,
        qmk_client: None,
    };
    let worker = Worker::new(store.clone(), store.clone(), artifacts.clone(), cfg);
    let run = |req: Value| {
        let (store, worker, storage) = (store.clone(), &worker, &storage);
        async move {
            let id = JobId::new();
            let hash = cache::request_hash(&req).unwrap_or_default();
            let job = Job::queued(id, req, hash, Millis::now(), Duration::from_secs(3600));
            let t = Instant::now();
            storage.db.submit(&job).await.unwrap();
            worker.process(&QueueMessage { job_id: id }).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            let r = store.get(id).await.unwrap().unwrap().result.unwrap();
            assert_eq!(r.returncode, 0, "{}", r.output);
            (secs, r)
        }
    };

    let (cold, _) = run(base.clone()).await;
    println!("worker_first_job {cold:.3}");
    let keys = ["KC_X", "KC_Y", "KC_Z"];
    let mut warm = Vec::new();
    let mut last = None;
    for (i, k) in keys.iter().enumerate() {
        let mut v = base.clone();
        v["keymap"] = json!(format!("bench{i}"));
        v["layers"][0][0] = json!(k);
        std::fs::write(
            out.join(format!("variant{i}.json")),
            serde_json::to_vec_pretty(&v).unwrap(),
        )
        .unwrap();
        let (secs, _) = run(v.clone()).await;
        warm.push(secs);
        last = Some(v);
    }
    println!("worker_new_keymap_median {:.3}", median(warm));
    let (cached, r) = run(last.unwrap()).await;
    assert_eq!(r.cached, Some(true));
    println!("worker_identical_resubmission {cached:.3}");

    let commit = r.firmware_commit.unwrap();
    // Stored by the jobs above: found, not rebuilt.
    let based = source::ensure_base(
        &*artifacts,
        std::path::Path::new(home),
        &commit,
        &dir.path().join("scratch"),
    )
    .await
    .unwrap();
    let idx = based.index.clone();
    let mut costs = Vec::new();
    let mut hashing = Vec::new();
    for _ in 0..5 {
        let id = JobId::new();
        let files = [source::JobFile {
            name: "keymap.json".into(),
            data: serde_json::to_vec(&base).unwrap().into(),
        }];
        let key = ArtifactKey::for_job(id, "src.zip").unwrap();
        let t = Instant::now();
        source::compose_job_archive(&*artifacts, &commit, &based, &files, &key, "src.zip")
            .await
            .unwrap();
        costs.push(t.elapsed().as_secs_f64());
        // Of which: its sha256, continued from the stored state of the base entries.
        let (local, tail) = source::job_parts(&idx, &files);
        let t = Instant::now();
        assert!(source::job_archive_sha256(&based, &local, &tail).is_some());
        hashing.push(t.elapsed().as_secs_f64());
    }
    println!("source_archive_per_job_median {:.3}", median(costs));
    println!(
        "source_archive_sha256_per_job_median {:.4}",
        median(hashing)
    );
    // The baseline: the same archive as one full copy of the base ranges (copy_file_range on
    // Linux) plus fsync, which is what composing by copy costs.
    let base_path = artifacts.path(&ArtifactKey::new(format!("sources/{commit}.zip")).unwrap());
    let mut copies = Vec::new();
    for _ in 0..5 {
        use std::io::{Seek, Write};
        let t = Instant::now();
        let mut out = tempfile::NamedTempFile::new_in(dir.path()).unwrap();
        let mut src = std::fs::File::open(&base_path).unwrap();
        std::io::copy(&mut (&mut src).take(idx.cd_offset), out.as_file_mut()).unwrap();
        out.as_file_mut().write_all(b"job entries").unwrap();
        src.seek(std::io::SeekFrom::Start(idx.cd_offset)).unwrap();
        std::io::copy(&mut src.take(idx.cd_size), out.as_file_mut()).unwrap();
        out.as_file().sync_all().unwrap();
        copies.push(t.elapsed().as_secs_f64());
    }
    println!("source_archive_by_copy_median {:.3}", median(copies));
    println!(
        "source_archive_base_bytes {}",
        std::fs::metadata(
            artifacts.path(&ArtifactKey::new(format!("sources/{commit}.zip")).unwrap())
        )
        .unwrap()
        .len()
    );
}
