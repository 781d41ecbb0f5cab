//! Local storage throughput: submits (job create + queue send, durable) and status reads with
//! 16 concurrent tasks, the group-commit [`LocalDb`] side by side with a naive baseline that
//! runs one transaction per call on a mutex-guarded connection via `spawn_blocking`.
//!
//! Run: `cargo bench -p oven --bench storage` (or `bench/storage.sh`). Optional arguments:
//! `<operations per case> <concurrent tasks>` after `--`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oven::adapters::local::{LocalDb, LocalDbOptions};
use oven::job::{Job, JobId};
use oven::ports::{JobQueue, JobStore, QueueMessage};
use oven::time::Millis;
use rusqlite::{params, Connection};

fn job() -> Job {
    Job::queued(
        JobId::new(),
        serde_json::json!({"keyboard": "dz60", "keymap": "default", "layout": "LAYOUT_60_ansi",
            "layers": [vec!["KC_A"; 64], vec!["KC_TRNS"; 64]]}),
        "3f1d2c9a0b".into(),
        Millis::now(),
        Duration::from_secs(48 * 3600),
    )
}

/// The baseline: what a straightforward adapter does.
struct Naive(Arc<Mutex<Connection>>);

impl Naive {
    fn open(path: &Path) -> Naive {
        let c = Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT, request TEXT, request_hash TEXT,
               created_at INTEGER, expires_at INTEGER, attempt INTEGER);
             CREATE TABLE queue (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT,
               visible_at INTEGER, receive_count INTEGER DEFAULT 0);",
        )
        .unwrap();
        Naive(Arc::new(Mutex::new(c)))
    }

    async fn create(&self, job: &Job) {
        let c = self.0.clone();
        let j = job.clone();
        tokio::task::spawn_blocking(move || {
            c.lock()
                .unwrap()
                .prepare_cached("INSERT INTO jobs VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .unwrap()
                .execute(params![
                    j.id.to_string(),
                    j.state.as_str(),
                    j.request.to_string(),
                    j.request_hash,
                    j.created_at.0,
                    j.expires_at.0,
                    j.attempt
                ])
                .unwrap();
        })
        .await
        .unwrap();
    }

    async fn send(&self, id: JobId) {
        let c = self.0.clone();
        tokio::task::spawn_blocking(move || {
            c.lock()
                .unwrap()
                .prepare_cached("INSERT INTO queue (job_id, visible_at) VALUES (?1, ?2)")
                .unwrap()
                .execute(params![id.to_string(), Millis::now().0])
                .unwrap();
        })
        .await
        .unwrap();
    }

    async fn get(&self, id: JobId) -> bool {
        // Same pragmas, same data; one connection behind a mutex, one blocking task per call.
        let c = self.0.clone();
        tokio::task::spawn_blocking(move || {
            c.lock()
                .unwrap()
                .prepare_cached("SELECT request FROM jobs WHERE id = ?1")
                .unwrap()
                .query_row(params![id.to_string()], |r| r.get::<_, String>(0))
                .ok()
                // Parse it, as a real adapter must, to compare like with like.
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .is_some()
        })
        .await
        .unwrap()
    }
}

/// CPU time used by this process so far (user + system), from /proc (Linux; `None` elsewhere).
/// On a shared machine throughput depends on how much CPU the OS grants; CPU per operation
/// does not.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

struct Stats {
    cpu_per_op: Option<Duration>,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs `ops` calls of `f` spread over `tasks` concurrent tasks.
async fn measure<F, Fut>(ops: usize, tasks: usize, f: F) -> Stats
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let cpu_start = cpu_time();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = t;
                while i < ops {
                    let s = Instant::now();
                    f(i).await;
                    lat.push(s.elapsed());
                    i += tasks;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::with_capacity(ops);
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    let cpu_per_op = cpu_start
        .zip(cpu_time())
        .map(|(a, b)| b.saturating_sub(a) / ops as u32);
    lat.sort();
    Stats {
        cpu_per_op,
        per_sec: ops as f64 / elapsed.as_secs_f64(),
        p50: lat[lat.len() / 2],
        p99: lat[lat.len() * 99 / 100],
    }
}

fn row(name: &str, s: &Stats, base: Option<&Stats>) {
    let ratio = base.map_or(String::new(), |b| {
        format!("{:>8.1}x", s.per_sec / b.per_sec)
    });
    let cpu = s
        .cpu_per_op
        .map_or("?".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e6));
    println!(
        "{name:<46} {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  cpu {cpu:>6} us/op {ratio}",
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ops = args.first().copied().unwrap_or(20_000);
    let tasks = args.get(1).copied().unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        println!(
            "local storage, {ops} operations per case, {tasks} concurrent tasks, 2 runtime threads, \
             synchronous=FULL (WAL)"
        );

        let naive = Arc::new(Naive::open(&dir.path().join("naive.sqlite3")));
        let n = naive.clone();
        let naive_ops = ops / 4; // the baseline is slow; its rate does not depend on the count
        let base_submit = measure(naive_ops, tasks, move |_| {
            let n = n.clone();
            async move {
                let j = job();
                n.create(&j).await;
                n.send(j.id).await;
            }
        })
        .await;
        row("naive: create + send (2 transactions)", &base_submit, None);

        let db = LocalDb::open(
            &dir.path().join("oven.sqlite3"),
            LocalDbOptions {
                fsync_every_commit: true,
                ..LocalDbOptions::default()
            },
        )
        .unwrap();
        let d = db.clone();
        let submit = measure(ops, tasks, move |_| {
            let d = d.clone();
            async move {
                let j = job();
                d.create(&j).await.unwrap();
                d.send(&QueueMessage { job_id: j.id }).await.unwrap();
            }
        })
        .await;
        row("group commit: JobStore::create + JobQueue::send", &submit, Some(&base_submit));
        let d = db.clone();
        let ids = Arc::new(Mutex::new(Vec::with_capacity(ops)));
        let ids2 = ids.clone();
        let combined = measure(ops, tasks, move |_| {
            let d = d.clone();
            let ids = ids2.clone();
            async move {
                let j = job();
                d.submit(&j).await.unwrap();
                ids.lock().unwrap().push(j.id);
            }
        })
        .await;
        row("group commit: LocalDb::submit (1 write)", &combined, Some(&base_submit));

        let relaxed = LocalDb::open(
            &dir.path().join("normal.sqlite3"),
            LocalDbOptions {
                fsync_every_commit: false,
                ..LocalDbOptions::default()
            },
        )
        .unwrap();
        let r = relaxed.clone();
        let normal_generic = measure(ops, tasks, move |_| {
            let d = r.clone();
            async move {
                let j = job();
                d.create(&j).await.unwrap();
                d.send(&QueueMessage { job_id: j.id }).await.unwrap();
            }
        })
        .await;
        row(
            "synchronous=NORMAL (default): create + send",
            &normal_generic,
            Some(&base_submit),
        );
        let normal = measure(ops, tasks, move |_| {
            let d = relaxed.clone();
            async move {
                d.submit(&job()).await.unwrap();
            }
        })
        .await;
        row("synchronous=NORMAL (default): LocalDb::submit", &normal, Some(&base_submit));

        let ids: Arc<Vec<JobId>> = Arc::new(ids.lock().unwrap().clone());
        let reads = ops * 2;
        let n = naive.clone();
        let nids = ids.clone();
        let base_get = measure(reads, tasks, move |i| {
            let n = n.clone();
            let id = nids[i % nids.len()];
            async move {
                n.get(id).await;
            }
        })
        .await;
        row("naive: get (mutex + spawn_blocking)", &base_get, None);
        let d = db.clone();
        let get = measure(reads, tasks, move |i| {
            let d = d.clone();
            let id = ids[i % ids.len()];
            async move {
                assert!(d.get(id).await.unwrap().is_some());
            }
        })
        .await;
        row("reader pool: JobStore::get", &get, Some(&base_get));
    });
}
