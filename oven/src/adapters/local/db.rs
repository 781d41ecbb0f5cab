//! The local job table and job queue, in one SQLite database (WAL mode).
//!
//! Writes go through ONE writer thread that commits in groups: callers send requests over a
//! channel; the thread takes every request waiting (up to [`MAX_BATCH`]), applies them all in one
//! `BEGIN IMMEDIATE` transaction, commits once, then answers each caller through a oneshot.
//! Durability is chosen by [`LocalDbOptions::fsync_every_commit`]: `synchronous = NORMAL` by
//! default (answered writes survive a process crash at once, a power cut after the next
//! checkpoint, at most [`CHECKPOINT_EVERY`] later), or `FULL` (every group fsyncs before its
//! callers are answered; the fsync is shared by the whole group). The writer checkpoints
//! between groups, small and often ([`CHECKPOINT_FRAMES`]), so no caller waits behind a long
//! one.
//!
//! Reads (`get`, `expired_leases`, `waiting`) run on a small pool of read-only connections,
//! directly on the calling task: a primary-key lookup takes microseconds, far less than handing
//! it to a blocking thread would, and WAL readers never wait for the writer.
//!
//! The queue is a table beside the jobs, so [`LocalDb::submit`] stores a job and its message in
//! one transaction.

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, Transaction};
use tokio::sync::{oneshot, Notify};

use crate::job::{Job, JobId, JobState, Transition};
use crate::ports::{
    BackendError, CreateError, Delivery, JobQueue, JobStore, QueueMessage, TransitionError,
};
use crate::time::Millis;

const BACKEND: &str = "sqlite";
/// Most requests applied in one transaction; bounds how long the first caller of a group waits.
pub const MAX_BATCH: usize = 1024;
/// How often the writer copies the WAL into the database file (at most; only after commits).
/// Under `synchronous = NORMAL` this bounds what a power cut can lose.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(25);
/// The writer also checkpoints as soon as the WAL holds this many frames (pages of 4 KiB,
/// so 1 MiB), whatever the time. The writer waits for its checkpoints and a checkpoint's cost
/// grows with the pages it copies, so this bounds the stall that submits queued behind it see:
/// at 13,000 submits/s the 25 ms interval alone let 2,300 frames pile up and each checkpoint
/// took 7 ms, the submit p99 (bench/api-load.sh: 8.4 ms); at 256 frames a checkpoint takes
/// about 1 ms and the p99 is 3.8 ms, at the same throughput (bench/results/api-load.txt).
pub const CHECKPOINT_FRAMES: u32 = 256;
/// Read-only connections kept for reuse; more are opened when needed and then dropped.
const MAX_IDLE_READERS: usize = 8;

/// How the local queue and database behave.
#[derive(Debug, Clone)]
pub struct LocalDbOptions {
    /// How long a received message stays invisible before it is delivered again.
    pub visibility_timeout: Duration,
    /// A message that has been received this many times and comes back once more goes to the
    /// dead-letter table instead (SQS `maxReceiveCount`).
    pub max_receives: u32,
    /// `true`: `synchronous = FULL`: every commit fsyncs the WAL before its callers are
    /// answered, so an answered write survives a power cut; each group waits for a disk flush.
    /// `false` (default): `NORMAL`: an answered write survives a crash or kill of the process
    /// at once (it is in the WAL, in the OS page cache) and a power cut or kernel crash after
    /// the next checkpoint, at most [`CHECKPOINT_EVERY`] later, when the WAL is fsynced.
    /// `oven serve` uses FULL, so every accepted job is on disk before its submit is answered
    /// (`--bench-no-fsync`, for bench/api-load.sh's comparison only, turns it off).
    pub fsync_every_commit: bool,
    /// The writer checkpoints at least this often while there are commits to copy
    /// (default [`CHECKPOINT_EVERY`]).
    pub checkpoint_every: Duration,
    /// ... and as soon as the WAL holds this many frames (default [`CHECKPOINT_FRAMES`]).
    pub checkpoint_frames: u32,
}

impl Default for LocalDbOptions {
    fn default() -> Self {
        LocalDbOptions {
            // A compile may take up to the default 300 s limit; a little more before retrying.
            visibility_timeout: Duration::from_secs(
                crate::config::DEFAULT_COMPILE_TIMEOUT_SECS + 60,
            ),
            max_receives: 3,
            fsync_every_commit: false,
            checkpoint_every: CHECKPOINT_EVERY,
            checkpoint_frames: CHECKPOINT_FRAMES,
        }
    }
}

/// A message that was received too often and given up on (the local dead-letter queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message: QueueMessage,
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create data directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot start the database writer thread: {0}")]
    Thread(std::io::Error),
}

type Reply<T> = oneshot::Sender<T>;

/// A write, as sent to the writer thread.
enum Op {
    /// A new job's row (serialised by the caller) and whether to queue its message.
    Create(Box<JobRow>, bool, Reply<Result<(), CreateError>>),
    /// Boxed: a finishing transition carries the whole result document.
    Transition(JobId, Box<Transition>, Reply<Result<Job, TransitionError>>),
    Send(JobId, Reply<Result<(), BackendError>>),
    Receive(usize, Reply<Result<Vec<Delivery>, BackendError>>),
    Ack(i64, u32, Reply<Result<(), BackendError>>),
    /// Message id, receive count of the receipt, visible again at (ms).
    Extend(i64, u32, i64, Reply<Result<(), BackendError>>),
    TakeDead(usize, Reply<Result<Vec<DeadLetter>, BackendError>>),
    Purge(Millis, usize, Reply<Result<Vec<JobId>, BackendError>>),
}

/// An answer computed inside the transaction, sent once it has committed.
#[allow(clippy::large_enum_variant)] // short-lived, one per request
enum Answer {
    Create(Reply<Result<(), CreateError>>, Result<(), CreateError>),
    Transition(
        Reply<Result<Job, TransitionError>>,
        Result<Job, TransitionError>,
    ),
    Unit(Reply<Result<(), BackendError>>),
    Receive(Reply<Result<Vec<Delivery>, BackendError>>, Vec<Delivery>),
    Dead(
        Reply<Result<Vec<DeadLetter>, BackendError>>,
        Vec<DeadLetter>,
    ),
    Ids(Reply<Result<Vec<JobId>, BackendError>>, Vec<JobId>),
}

impl Answer {
    fn send(self) {
        // A caller that gave up (dropped its future) no longer needs its answer.
        match self {
            Answer::Create(tx, r) => drop(tx.send(r)),
            Answer::Transition(tx, r) => drop(tx.send(r)),
            Answer::Unit(tx) => drop(tx.send(Ok(()))),
            Answer::Receive(tx, v) => drop(tx.send(Ok(v))),
            Answer::Dead(tx, v) => drop(tx.send(Ok(v))),
            Answer::Ids(tx, v) => drop(tx.send(Ok(v))),
        }
    }

    fn fail(self, err: &str) {
        let e = || BackendError::new(BACKEND, err);
        match self {
            Answer::Create(tx, _) => drop(tx.send(Err(e().into()))),
            Answer::Transition(tx, _) => drop(tx.send(Err(e().into()))),
            Answer::Unit(tx) => drop(tx.send(Err(e()))),
            Answer::Receive(tx, _) => drop(tx.send(Err(e()))),
            Answer::Dead(tx, _) => drop(tx.send(Err(e()))),
            Answer::Ids(tx, _) => drop(tx.send(Err(e()))),
        }
    }
}

struct Inner {
    path: PathBuf,
    writer: mpsc::Sender<Op>,
    readers: Mutex<Vec<Connection>>,
    /// Woken after a commit that sent messages, so long-polling receivers look again.
    sent: Notify,
    options: LocalDbOptions,
}

/// The local job table and queue. Cheap to clone; implements [`JobStore`] and [`JobQueue`].
#[derive(Clone)]
pub struct LocalDb {
    inner: Arc<Inner>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    lease_until INTEGER,
    attempt INTEGER NOT NULL,
    result TEXT,
    error TEXT,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_until);
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at);
-- AUTOINCREMENT: ids are never reused, so a stale receipt cannot delete a newer message.
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (visible_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at INTEGER NOT NULL
);
";

const JOB_COLUMNS: &str = "id, state, request, request_hash, created_at, started_at, \
    finished_at, lease_until, attempt, result, error, expires_at";

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, e)
}

impl LocalDb {
    /// Opens (creating if needed) the database file `path` and starts its writer thread.
    pub fn open(path: &Path, options: LocalDbOptions) -> Result<LocalDb, OpenError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(sqlite)?;
        let sync = if options.fsync_every_commit {
            "FULL"
        } else {
            "NORMAL"
        };
        // No automatic checkpoints: they would run inside a commit, before its callers are
        // answered. The writer checkpoints between groups instead (see `Writer::run`).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;
             PRAGMA wal_autocheckpoint = 0;"
        ))
        .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        conn.set_prepared_statement_cache_capacity(32);

        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            writer: tx,
            readers: Mutex::new(Vec::new()),
            sent: Notify::new(),
            options,
        });
        // The thread holds only a weak handle: dropping the last LocalDb closes the channel,
        // which ends the thread.
        let weak = Arc::downgrade(&inner);
        let visibility = inner.options.visibility_timeout;
        let max_receives = inner.options.max_receives;
        let checkpoint_every = inner.options.checkpoint_every;
        let checkpoint_frames = inner.options.checkpoint_frames;
        std::thread::Builder::new()
            .name("oven-sqlite-writer".into())
            .spawn(move || {
                conn.wal_hook(Some(count_wal_frames));
                Writer {
                    conn,
                    checkpoint_every,
                    checkpoint_frames,
                    visibility,
                    max_receives,
                }
                .run(rx, weak)
            })
            .map_err(OpenError::Thread)?;
        // Open one reader now, so a broken file fails here rather than at the first request.
        let reader = open_reader(path).map_err(sqlite)?;
        if let Ok(mut pool) = inner.readers.lock() {
            pool.push(reader);
        }
        Ok(LocalDb { inner })
    }

    pub fn options(&self) -> &LocalDbOptions {
        &self.inner.options
    }

    async fn call<T>(
        &self,
        op: impl FnOnce(Reply<T>) -> Op,
        closed: impl FnOnce(BackendError) -> T,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        if self.inner.writer.send(op(tx)).is_err() {
            return closed(backend("the writer thread has stopped"));
        }
        match rx.await {
            Ok(v) => v,
            Err(_) => closed(backend("the writer thread dropped a request")),
        }
    }

    /// Stores a new job and queues its message in ONE transaction: after this returns `Ok`
    /// both are durable, and neither exists without the other. Equivalent to
    /// [`JobStore::create`] followed by [`JobQueue::send`], at the cost of one write.
    pub async fn submit(&self, job: &Job) -> Result<(), CreateError> {
        let row = Box::new(JobRow::new(job).map_err(|e| CreateError::from(backend(e)))?);
        self.call(|tx| Op::Create(row, true, tx), |e| Err(e.into()))
            .await
    }

    /// Takes up to `limit` messages from the dead-letter table (deleting them); the worker fails
    /// their jobs, as the AWS worker does for messages from the SQS dead-letter queue.
    pub async fn take_dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, BackendError> {
        self.call(|tx| Op::TakeDead(limit, tx), Err).await
    }

    /// The messages in the dead-letter table, without taking them.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, BackendError> {
        self.read(|c| {
            let mut st = c.prepare_cached(
                "SELECT job_id, receive_count FROM dead_letters ORDER BY id LIMIT 10000",
            )?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, n) = row?;
                out.push(DeadLetter {
                    message: QueueMessage {
                        job_id: parse_id(&id)?,
                    },
                    receive_count: n,
                });
            }
            Ok(out)
        })
    }

    /// Deletes up to `limit` jobs whose `expires_at` is not after `now`; returns their ids so
    /// their artifacts can be deleted too.
    pub async fn purge_expired(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<JobId>, BackendError> {
        self.call(|tx| Op::Purge(now, limit, tx), Err).await
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, BackendError> {
        let pooled = self.inner.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => open_reader(&self.inner.path).map_err(backend)?,
        };
        let out = f(&conn).map_err(backend);
        if let Ok(mut pool) = self.inner.readers.lock() {
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
        out
    }

    /// When the next in-flight message becomes visible again, if any is in flight.
    fn next_visible(&self) -> Result<Option<Millis>, BackendError> {
        self.read(|c| {
            c.prepare_cached("SELECT MIN(visible_at) FROM queue")?
                .query_row([], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.map(Millis))
        })
    }
}

/// A receipt is `<message id>.<receive count>`.
fn parse_receipt(receipt: &str) -> Result<(i64, u32), BackendError> {
    receipt
        .split_once('.')
        .and_then(|(id, n)| Some((id.parse::<i64>().ok()?, n.parse::<u32>().ok()?)))
        .ok_or_else(|| backend(format!("malformed receipt {receipt:?}")))
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(Duration::from_secs(5))?;
    c.set_prepared_statement_cache_capacity(16);
    Ok(c)
}

fn parse_id(s: &str) -> rusqlite::Result<JobId> {
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let id: String = r.get(0)?;
    let state: String = r.get(1)?;
    let request: String = r.get(2)?;
    let result: Option<String> = r.get(9)?;
    Ok(Job {
        id: parse_id(&id)?,
        state: state.parse::<JobState>().map_err(conversion)?,
        request: serde_json::from_str(&request).map_err(conversion)?,
        request_hash: r.get(3)?,
        created_at: Millis(r.get(4)?),
        started_at: r.get::<_, Option<i64>>(5)?.map(Millis),
        finished_at: r.get::<_, Option<i64>>(6)?.map(Millis),
        lease_until: r.get::<_, Option<i64>>(7)?.map(Millis),
        attempt: r.get(8)?,
        result: match result {
            Some(s) => Some(serde_json::from_str(&s).map_err(conversion)?),
            None => None,
        },
        error: r.get(10)?,
        expires_at: Millis(r.get(11)?),
    })
}

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection ([`count_wal_frames`]).
    /// Only the writer thread's connection has the hook, so on that thread this is its WAL.
    static WAL_FRAMES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// SQLite's WAL hook (`sqlite3_wal_hook`), called after each commit with the frames now in the
/// WAL. Installing it also replaces SQLite's own auto-checkpoint, which is off here anyway.
fn count_wal_frames(_: &rusqlite::hooks::Wal, frames: std::os::raw::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|n| n.set(u32::try_from(frames).unwrap_or(0)));
    Ok(())
}

/// The one thread that writes.
struct Writer {
    conn: Connection,
    checkpoint_every: Duration,
    checkpoint_frames: u32,
    visibility: Duration,
    max_receives: u32,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Op>, db: std::sync::Weak<Inner>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_checkpoint = Instant::now();
        // Commits since the last checkpoint.
        let mut dirty = false;
        loop {
            let first = if dirty {
                // Idle with commits not yet checkpointed: wait no longer than the next one is due.
                let due = self
                    .checkpoint_every
                    .saturating_sub(last_checkpoint.elapsed());
                match rx.recv_timeout(due) {
                    Ok(op) => Some(op),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        self.checkpoint();
                        return;
                    }
                }
            } else {
                match rx.recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                }
            };
            if let Some(first) = first {
                batch.push(first);
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let sent = self.apply_batch(&mut batch);
                dirty = true;
                if sent {
                    if let Some(db) = db.upgrade() {
                        db.sent.notify_waiters();
                    }
                }
            }
            let wal_full = WAL_FRAMES.with(|n| n.get()) >= self.checkpoint_frames;
            if dirty && (wal_full || last_checkpoint.elapsed() >= self.checkpoint_every) {
                self.checkpoint();
                last_checkpoint = Instant::now();
                dirty = false;
            }
        }
    }

    /// Copies the WAL into the database file, after answering callers. With
    /// `synchronous = NORMAL` this is when commits become safe from power loss: SQLite fsyncs
    /// the WAL before copying it. Run by the only writer, the checkpoint sees no commit in
    /// between and completes, so the next commit restarts the WAL from its beginning (it
    /// stays bounded, and is rewritten in place, which fsyncs faster than growing it).
    fn checkpoint(&self) {
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "sqlite checkpoint failed");
        }
    }

    /// Applies and commits `batch`, answers every caller; true if messages were sent.
    fn apply_batch(&mut self, batch: &mut Vec<Op>) -> bool {
        let mut answers = Vec::with_capacity(batch.len());
        let mut sent = false;
        let (visibility, max_receives) = (self.visibility, self.max_receives);
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let now = Millis::now();
            for op in batch.drain(..) {
                answers.push(match op {
                    Op::Create(row, with_message, reply) => {
                        let r = insert_job(&tx, &row)?;
                        if r.is_ok() && with_message {
                            enqueue(&tx, row.id, now)?;
                            sent = true;
                        }
                        Answer::Create(reply, r)
                    }
                    Op::Transition(id, t, reply) => {
                        Answer::Transition(reply, transition(&tx, id, &t, now)?)
                    }
                    Op::Send(id, reply) => {
                        enqueue(&tx, id, now)?;
                        sent = true;
                        Answer::Unit(reply)
                    }
                    Op::Receive(max, reply) => {
                        Answer::Receive(reply, receive(&tx, max, now, visibility, max_receives)?)
                    }
                    Op::Ack(id, count, reply) => {
                        tx.prepare_cached(
                            "DELETE FROM queue WHERE id = ?1 AND receive_count = ?2",
                        )?
                        .execute(params![id, count])?;
                        Answer::Unit(reply)
                    }
                    Op::Extend(id, count, until, reply) => {
                        // Only the latest receipt counts: after a redelivery the message
                        // belongs to its new receiver.
                        tx.prepare_cached(
                            "UPDATE queue SET visible_at = ?3 WHERE id = ?1 AND receive_count = ?2",
                        )?
                        .execute(params![id, count, until])?;
                        Answer::Unit(reply)
                    }
                    Op::TakeDead(limit, reply) => Answer::Dead(reply, take_dead(&tx, limit)?),
                    Op::Purge(before, limit, reply) => {
                        Answer::Ids(reply, purge(&tx, before, limit)?)
                    }
                });
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => answers.into_iter().for_each(Answer::send),
            Err(e) => {
                // The transaction rolled back (dropping it does): nobody's write happened.
                let msg = e.to_string();
                tracing::error!(error = %msg, "sqlite write batch failed");
                answers.into_iter().for_each(|a| a.fail(&msg));
                // Requests not reached before the error were drained but not answered: their
                // senders drop, and those callers see "dropped a request".
                batch.clear();
                sent = false;
            }
        }
        sent
    }
}

fn receive(
    tx: &Transaction<'_>,
    max: usize,
    now: Millis,
    visibility: Duration,
    max_receives: u32,
) -> rusqlite::Result<Vec<Delivery>> {
    let mut out = Vec::new();
    let visible_again = now.plus(visibility).0;
    // Loop because dead-lettered messages free room for more within `max`.
    while out.len() < max {
        let rows: Vec<(i64, String, u32, i64)> = tx
            .prepare_cached(
                "SELECT id, job_id, receive_count, sent_at FROM queue \
                     WHERE visible_at <= ?1 ORDER BY visible_at, id LIMIT ?2",
            )?
            .query_map(params![now.0, (max - out.len()) as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            break;
        }
        for (id, job_id, count, sent_at) in rows {
            if count >= max_receives {
                tx.prepare_cached(
                    "INSERT INTO dead_letters (id, job_id, sent_at, receive_count, dead_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, job_id, sent_at, count, now.0])?;
                tx.prepare_cached("DELETE FROM queue WHERE id = ?1")?
                    .execute(params![id])?;
                continue;
            }
            let count = count + 1;
            tx.prepare_cached(
                "UPDATE queue SET receive_count = ?2, visible_at = ?3 WHERE id = ?1",
            )?
            .execute(params![id, count, visible_again])?;
            // A row with a malformed id cannot come from `send`; skip rather than fail all.
            if let Ok(job_id) = job_id.parse() {
                out.push(Delivery {
                    message: QueueMessage { job_id },
                    receipt: format!("{id}.{count}"),
                    receive_count: count,
                });
            }
        }
    }
    Ok(out)
}

/// A job as its `jobs` row: built on the caller's thread, so that the one writer thread only
/// binds strings (serialising the request and freeing its JSON tree there took a third of the
/// writer's time under bench/api-load.sh).
struct JobRow {
    id: JobId,
    state: &'static str,
    request: String,
    request_hash: String,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    lease_until: Option<i64>,
    attempt: u32,
    result: Option<String>,
    error: Option<String>,
    expires_at: i64,
}

impl JobRow {
    fn new(job: &Job) -> Result<JobRow, serde_json::Error> {
        Ok(JobRow {
            id: job.id,
            state: job.state.as_str(),
            request: serde_json::to_string(&job.request)?,
            request_hash: job.request_hash.clone(),
            created_at: job.created_at.0,
            started_at: job.started_at.map(|m| m.0),
            finished_at: job.finished_at.map(|m| m.0),
            lease_until: job.lease_until.map(|m| m.0),
            attempt: job.attempt,
            result: job.result.as_ref().map(serde_json::to_string).transpose()?,
            error: job.error.clone(),
            expires_at: job.expires_at.0,
        })
    }
}

fn insert_job(tx: &Transaction<'_>, row: &JobRow) -> rusqlite::Result<Result<(), CreateError>> {
    let n = tx
        .prepare_cached(
            "INSERT INTO jobs (id, state, request, request_hash, created_at, started_at, \
             finished_at, lease_until, attempt, result, error, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            row.id.to_string(),
            row.state,
            row.request,
            row.request_hash,
            row.created_at,
            row.started_at,
            row.finished_at,
            row.lease_until,
            row.attempt,
            row.result,
            row.error,
            row.expires_at,
        ])?;
    Ok(if n == 0 {
        Err(CreateError::Exists(row.id))
    } else {
        Ok(())
    })
}

fn enqueue(tx: &Transaction<'_>, id: JobId, now: Millis) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO queue (job_id, sent_at, visible_at) VALUES (?1, ?2, ?2)")?
        .execute(params![id.to_string(), now.0])?;
    Ok(())
}

fn select_job(c: &Connection, id: JobId, now: Millis) -> rusqlite::Result<Option<Job>> {
    c.prepare_cached(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND expires_at > ?2"
    ))?
    .query_row(params![id.to_string(), now.0], job_from_row)
    .optional()
}

fn transition(
    tx: &Transaction<'_>,
    id: JobId,
    t: &Transition,
    now: Millis,
) -> rusqlite::Result<Result<Job, TransitionError>> {
    let Some(current) = select_job(tx, id, now)? else {
        return Ok(Err(TransitionError::NotFound(id)));
    };
    let next = match t.apply(&current) {
        Ok(next) => next,
        Err(conflict) => return Ok(Err(conflict.into())),
    };
    let result = match &next.result {
        Some(r) => Some(serde_json::to_string(r).map_err(conversion)?),
        None => None,
    };
    tx.prepare_cached(
        "UPDATE jobs SET state = ?2, started_at = ?3, finished_at = ?4, lease_until = ?5, \
         attempt = ?6, result = ?7, error = ?8 WHERE id = ?1",
    )?
    .execute(params![
        id.to_string(),
        next.state.as_str(),
        next.started_at.map(|m| m.0),
        next.finished_at.map(|m| m.0),
        next.lease_until.map(|m| m.0),
        next.attempt,
        result,
        next.error,
    ])?;
    Ok(Ok(next))
}

fn take_dead(tx: &Transaction<'_>, limit: usize) -> rusqlite::Result<Vec<DeadLetter>> {
    let rows: Vec<(i64, String, u32)> = tx
        .prepare_cached("SELECT id, job_id, receive_count FROM dead_letters ORDER BY id LIMIT ?1")?
        .query_map(params![limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, job_id, count) in rows {
        tx.prepare_cached("DELETE FROM dead_letters WHERE id = ?1")?
            .execute(params![id])?;
        if let Ok(job_id) = job_id.parse() {
            out.push(DeadLetter {
                message: QueueMessage { job_id },
                receive_count: count,
            });
        }
    }
    Ok(out)
}

fn purge(tx: &Transaction<'_>, before: Millis, limit: usize) -> rusqlite::Result<Vec<JobId>> {
    let ids: Vec<String> = tx
        .prepare_cached("SELECT id FROM jobs WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2")?
        .query_map(params![before.0, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        tx.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
            .execute(params![id])?;
        if let Ok(id) = id.parse() {
            out.push(id);
        }
    }
    Ok(out)
}

#[async_trait]
impl JobStore for LocalDb {
    async fn create(&self, job: &Job) -> Result<(), CreateError> {
        let row = Box::new(JobRow::new(job).map_err(|e| CreateError::from(backend(e)))?);
        self.call(|tx| Op::Create(row, false, tx), |e| Err(e.into()))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<Job>, BackendError> {
        self.read(|c| select_job(c, id, Millis::now()))
    }

    async fn transition(&self, id: JobId, transition: Transition) -> Result<Job, TransitionError> {
        self.call(
            |tx| Op::Transition(id, Box::new(transition), tx),
            |e| Err(e.into()),
        )
        .await
    }

    async fn expired_leases(&self, before: Millis, limit: usize) -> Result<Vec<Job>, BackendError> {
        let now = Millis::now();
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND lease_until < ?1 \
                 AND expires_at > ?2 ORDER BY lease_until LIMIT ?3"
            ))?
            .query_map(params![before.0, now.0, limit as i64], job_from_row)?
            .collect()
        })
    }

    async fn ping(&self) -> Result<(), BackendError> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())))
    }
}

#[async_trait]
impl JobQueue for LocalDb {
    async fn send(&self, message: &QueueMessage) -> Result<(), BackendError> {
        self.call(|tx| Op::Send(message.job_id, tx), Err).await
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups BEFORE looking, so a send committed in between is not missed.
            let notified = self.inner.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.call(|tx| Op::Receive(max, tx), Err).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Also wake when an in-flight message's visibility timeout ends.
            let mut wake = deadline;
            if let Some(at) = self.next_visible()? {
                let ms = (at.0 - Millis::now().0).max(0) as u64;
                wake = wake.min(now + Duration::from_millis(ms));
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), BackendError> {
        let (id, count) = parse_receipt(receipt)?;
        self.call(|tx| Op::Ack(id, count, tx), Err).await
    }

    async fn extend_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        let (id, count) = parse_receipt(receipt)?;
        let until = Millis::now().plus(timeout).0;
        self.call(|tx| Op::Extend(id, count, until, tx), Err).await
    }

    async fn waiting(&self) -> Result<u64, BackendError> {
        let now = Millis::now();
        self.read(|c| {
            c.prepare_cached("SELECT COUNT(*) FROM queue WHERE visible_at <= ?1")?
                .query_row(params![now.0], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
        })
    }
}
