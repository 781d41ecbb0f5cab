//! The storage conformance suite on the local adapters (SQLite in a temporary directory, files),
//! plus what only the local adapters do: one-transaction submit, reopening, purging.

use std::time::Duration;

use oven::adapters::conformance as c;
use oven::adapters::local::{
    LocalDbOptions, LocalStorage, CHECKPOINT_EVERY, CHECKPOINT_FRAMES, DB_FILE,
};
use oven::job::JobId;
use oven::ports::{JobQueue, JobStore, QueueMessage};
use oven::time::Millis;

const VISIBILITY: Duration = Duration::from_secs(1);
const MAX_RECEIVES: u32 = 2;

fn options() -> LocalDbOptions {
    LocalDbOptions {
        visibility_timeout: VISIBILITY,
        max_receives: MAX_RECEIVES,
        fsync_every_commit: true,
        ..LocalDbOptions::default()
    }
}

fn open() -> (tempfile::TempDir, LocalStorage) {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::open_with(dir.path(), options()).unwrap();
    (dir, s)
}

#[tokio::test]
async fn create_get_duplicate() {
    let (_d, s) = open();
    c::create_get_duplicate(&s.db).await;
}

#[tokio::test]
async fn transitions() {
    let (_d, s) = open();
    c::transitions(&s.db).await;
}

#[tokio::test]
async fn lease_expired_restart() {
    let (_d, s) = open();
    c::lease_expired_restart(&s.db).await;
}

#[tokio::test]
async fn lease_renewal() {
    let (_d, s) = open();
    c::lease_renewal(&s.db).await;
}

#[tokio::test]
async fn requeue_lapsed() {
    let (_d, s) = open();
    c::requeue_lapsed(&s.db).await;
}

#[tokio::test]
async fn queue_extend_visibility() {
    let (_d, s) = open();
    c::queue_extend_visibility(&s.db, VISIBILITY).await;
}

#[tokio::test]
async fn expiry_hides_jobs() {
    let (_d, s) = open();
    c::expiry_hides_jobs(&s.db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_start_has_one_winner() {
    let (_d, s) = open();
    c::competing_starts_have_one_winner(&s.db, c::Competition::Concurrent).await;
}

#[tokio::test]
async fn queue_send_receive_ack() {
    let (_d, s) = open();
    c::queue_send_receive_ack(&s.db).await;
}

#[tokio::test]
async fn queue_visibility_redelivery() {
    let (_d, s) = open();
    c::queue_visibility_redelivery(&s.db, VISIBILITY).await;
}

#[tokio::test]
async fn queue_long_poll_wakes_up() {
    let (_d, s) = open();
    c::queue_long_poll_wakes_up(&s.db).await;
}

#[tokio::test]
async fn queue_dead_letter() {
    let (_d, s) = open();
    let db = s.db.clone();
    c::queue_dead_letter(&s.db, VISIBILITY, MAX_RECEIVES, || async {
        let listed = db.dead_letters().await.unwrap();
        let taken = db.take_dead_letters(100).await.unwrap();
        assert_eq!(listed, taken);
        assert!(db.dead_letters().await.unwrap().is_empty());
        taken.into_iter().map(|d| d.message.job_id).collect()
    })
    .await;
}

#[tokio::test]
async fn artifacts_put_get_size() {
    let (_d, s) = open();
    c::artifacts_put_get_size(&s.artifacts).await;
}

#[tokio::test]
async fn artifacts_compose() {
    let (_d, s) = open();
    c::artifacts_compose(&s.artifacts, true).await;
}

#[tokio::test]
async fn artifacts_download() {
    let (_d, s) = open();
    c::artifacts_download(&s.artifacts).await;
}

// --- local only ---------------------------------------------------------------------------------

#[tokio::test]
async fn submit_stores_job_and_message_together() {
    let (_d, s) = open();
    let job = c::new_job();
    s.db.submit(&job).await.unwrap();
    assert_eq!(s.db.get(job.id).await.unwrap(), Some(job.clone()));
    let got = s.db.receive(10, Duration::from_secs(1)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.job_id, job.id);
    // A duplicate id queues nothing.
    assert!(s.db.submit(&job).await.is_err());
    assert!(s.db.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(s.db.waiting().await.unwrap(), 0);
}

#[tokio::test]
async fn queue_and_jobs_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let job = c::new_job();
    let other = JobId::new();
    {
        let s = LocalStorage::open_with(dir.path(), options()).unwrap();
        s.db.submit(&job).await.unwrap();
        s.db.send(&QueueMessage { job_id: other }).await.unwrap();
        // One message is in flight when the process stops.
        let got = s.db.receive(1, Duration::ZERO).await.unwrap();
        assert_eq!(got[0].message.job_id, job.id);
    }
    // The writer thread ends when the last handle drops; give it a moment to close the file.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = LocalStorage::open_with(dir.path(), options()).unwrap();
    assert_eq!(s.db.get(job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(s.db.waiting().await.unwrap(), 1);
    let got = s.db.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(got[0].message.job_id, other);
    // The in-flight one comes back after its visibility timeout, counted twice.
    let got = s.db.receive(1, VISIBILITY * 3).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].message.job_id, got[0].receive_count), (job.id, 2));
}

#[tokio::test]
async fn stale_receipt_does_not_delete_a_redelivered_message() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LocalDbOptions {
        max_receives: 5,
        ..options()
    };
    let s = LocalStorage::open_with(dir.path(), opts).unwrap();
    s.db.send(&QueueMessage {
        job_id: JobId::new(),
    })
    .await
    .unwrap();
    let first = s.db.receive(1, Duration::ZERO).await.unwrap();
    let second = s.db.receive(1, VISIBILITY * 3).await.unwrap();
    assert_eq!(second[0].receive_count, 2);
    s.db.ack(&first[0].receipt).await.unwrap();
    // Still there: the stale ack did nothing; the current receipt deletes it.
    tokio::time::sleep(VISIBILITY + Duration::from_millis(200)).await;
    assert_eq!(s.db.waiting().await.unwrap(), 1);
    let third = s.db.receive(1, Duration::ZERO).await.unwrap();
    s.db.ack(&third[0].receipt).await.unwrap();
    assert!(s.db.ack("not-a-receipt").await.is_err());
}

/// The writer checkpoints by WAL size as well as by time, so a burst of submits never leaves
/// more than about [`CHECKPOINT_FRAMES`] pages in the WAL for the next checkpoint to copy (the
/// stall every queued submit waits out). Time is taken out of it: with an hour between timed
/// checkpoints, 300 submits (each commit writes several pages) fill the WAL well past the bound
/// unless the size trigger works.
#[tokio::test]
async fn wal_stays_small_under_a_burst_of_submits() {
    let dir = tempfile::tempdir().unwrap();
    let frames = 64;
    let opts = LocalDbOptions {
        checkpoint_every: Duration::from_secs(3600),
        checkpoint_frames: frames,
        ..options()
    };
    let s = LocalStorage::open_with(dir.path(), opts).unwrap();
    for _ in 0..300 {
        s.db.submit(&c::new_job()).await.unwrap();
    }
    // A WAL file keeps its largest size until truncated: its length is the high-water mark.
    let wal = std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal"))).unwrap();
    const FRAME: u64 = 4096 + 24;
    // One commit's pages on top of the bound: a job row, its queue row and their index pages.
    let most = (u64::from(frames) + 16) * FRAME + 32;
    assert!(
        wal.len() <= most,
        "WAL reached {} bytes ({} frames), more than {most}",
        wal.len(),
        wal.len() / FRAME
    );
    assert_eq!(s.db.waiting().await.unwrap(), 300);
    // The default bounds are the documented ones.
    let d = LocalDbOptions::default();
    assert_eq!(
        (d.checkpoint_every, d.checkpoint_frames),
        (CHECKPOINT_EVERY, CHECKPOINT_FRAMES)
    );
}

#[tokio::test]
async fn purge_expired_deletes_old_jobs_and_reports_them() {
    let (_d, s) = open();
    let now = Millis::now();
    let mut old = c::new_job();
    old.expires_at = Millis(now.0 - 1);
    let fresh = c::new_job();
    s.db.create(&old).await.unwrap();
    s.db.create(&fresh).await.unwrap();
    let key = oven::ports::ArtifactKey::for_job(old.id, "x.hex").unwrap();
    oven::ports::ArtifactStore::put(
        &s.artifacts,
        &key,
        oven::ports::ArtifactBody::Bytes(bytes::Bytes::from_static(b"x")),
        &oven::ports::ArtifactMeta {
            content_type: "text/plain".into(),
            file_name: "x.hex".into(),
        },
    )
    .await
    .unwrap();
    let purged = s.db.purge_expired(now, 100).await.unwrap();
    assert_eq!(purged, vec![old.id]);
    for id in purged {
        s.artifacts.delete_job(id).await.unwrap();
    }
    assert!(!s.artifacts.path(&key).exists());
    assert!(s.db.get(fresh.id).await.unwrap().is_some());
    assert!(s.db.purge_expired(now, 100).await.unwrap().is_empty());
}

/// A large composed artifact is linked, not copied: it reads back right (get, size, download),
/// survives the deletion and replacement of its sources, can itself be composed from (the result
/// cache does that), and is replaced cleanly by a later put or small compose.
#[tokio::test]
async fn large_compose_links_its_sources() {
    use bytes::Bytes;
    use oven::ports::{ArtifactBody, ArtifactKey, ArtifactMeta, ArtifactStore, Download, Part};
    use std::os::unix::fs::MetadataExt;

    let (_d, s) = open();
    let a = &s.artifacts;
    let m = ArtifactMeta {
        content_type: "application/zip".into(),
        file_name: "x.zip".into(),
    };
    let base: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let base_key = ArtifactKey::new("sources/abc.zip").unwrap();
    a.put(
        &base_key,
        ArtifactBody::Bytes(Bytes::from(base.clone())),
        &m,
    )
    .await
    .unwrap();
    let job1 = JobId::new();
    let k1 = ArtifactKey::for_job(job1, "src.zip").unwrap();
    let cd = 2_900_000u64;
    let parts = vec![
        Part::Copy {
            from: base_key.clone(),
            range: 0..cd,
        },
        Part::Bytes(Bytes::from_static(b"JOB")),
        Part::Copy {
            from: base_key.clone(),
            range: cd..base.len() as u64,
        },
        Part::Bytes(Bytes::from_static(b"END")),
    ];
    let mut want = base[..cd as usize].to_vec();
    want.extend_from_slice(b"JOB");
    want.extend_from_slice(&base[cd as usize..]);
    want.extend_from_slice(b"END");
    a.compose(&k1, parts, &m).await.unwrap();

    // Linked: no plain file, and the base's inode has a second name.
    assert!(!a.path(&k1).exists());
    assert_eq!(std::fs::metadata(a.path(&base_key)).unwrap().nlink(), 2);
    assert_eq!(a.size(&k1).await.unwrap(), Some(want.len() as u64));
    assert!(a.get(&k1).await.unwrap() == want);
    match a.download(&k1, &m).await.unwrap() {
        Download::Pieces { pieces, len, .. } => {
            assert_eq!(len, want.len() as u64);
            assert!(c::read_pieces(&pieces) == want);
        }
        other => panic!("expected pieces, got {other:?}"),
    }

    // The base replaced and then deleted: the composed artifact keeps its bytes.
    a.put(
        &base_key,
        ArtifactBody::Bytes(Bytes::from_static(b"new")),
        &m,
    )
    .await
    .unwrap();
    std::fs::remove_file(a.path(&base_key)).unwrap();
    assert!(a.get(&k1).await.unwrap() == want);

    // Composed from a composed artifact (a cache hit), then the first job expires.
    let job2 = JobId::new();
    let k2 = ArtifactKey::for_job(job2, "src.zip").unwrap();
    let whole = vec![Part::Copy {
        from: k1.clone(),
        range: 0..want.len() as u64,
    }];
    a.compose(&k2, whole, &m).await.unwrap();
    let tail = vec![Part::Copy {
        from: k1.clone(),
        range: cd - 2..cd + 5,
    }];
    let k3 = ArtifactKey::for_job(job2, "tail.bin").unwrap();
    a.compose(&k3, tail, &m).await.unwrap();
    assert_eq!(
        a.get(&k3).await.unwrap(),
        want[cd as usize - 2..cd as usize + 5]
    );
    assert!(a.path(&k3).is_file(), "small ranges are copied");
    a.delete_job(job1).await.unwrap();
    assert_eq!(a.size(&k1).await.unwrap(), None);
    assert!(a.get(&k2).await.unwrap() == want);

    // A range past the end is refused; a put replaces the linked version.
    let bad = vec![Part::Copy {
        from: k2.clone(),
        range: 0..want.len() as u64 + 1,
    }];
    let k4 = ArtifactKey::for_job(job2, "bad.zip").unwrap();
    assert!(a.compose(&k4, bad, &m).await.is_err());
    assert_eq!(a.size(&k4).await.unwrap(), None);
    a.put(&k2, ArtifactBody::Bytes(Bytes::from_static(b"plain")), &m)
        .await
        .unwrap();
    assert_eq!(a.get(&k2).await.unwrap(), &b"plain"[..]);
    assert!(matches!(
        a.download(&k2, &m).await.unwrap(),
        Download::File { len: 5, .. }
    ));
}

/// Commits are copied into the database file (checkpointed, which is when they become safe
/// from a power cut under `synchronous = NORMAL`) within a few `CHECKPOINT_EVERY` of a burst of
/// submits: the main database file alone (a copy of it without its WAL) then holds every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_the_database_file_soon_after_a_burst() {
    let (dir, s) = open();
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let db = s.db.clone();
        tasks.push(tokio::spawn(async move { db.submit(&c::new_job()).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let path = dir.path().join(oven::adapters::local::DB_FILE);
    let copy = tempfile::tempdir().unwrap();
    let mut in_file = 0;
    for _ in 0..200 {
        tokio::time::sleep(oven::adapters::local::CHECKPOINT_EVERY).await;
        let main_only = copy.path().join(format!("main-{in_file}.sqlite3"));
        std::fs::copy(&path, &main_only).unwrap();
        in_file = rusqlite::Connection::open(&main_only)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if in_file == 200 {
            break;
        }
    }
    assert_eq!(in_file, 200, "jobs in the database file without its WAL");
    assert_eq!(s.db.waiting().await.unwrap(), 200);
}
