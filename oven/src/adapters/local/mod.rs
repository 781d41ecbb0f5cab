//! The local adapters used by `oven serve`: the job table and the queue in one SQLite database
//! ([`LocalDb`]), artifacts as files ([`LocalArtifacts`]), all under one data directory:
//!
//! ```text
//! <data dir>/oven.sqlite3 (+ -wal, -shm)   jobs, queue, dead letters
//! <data dir>/artifacts/<key>                artifacts
//! <data dir>/tmp/                           artifact writes in progress
//! ```

mod artifacts;
mod db;

use std::path::{Path, PathBuf};

pub use artifacts::LocalArtifacts;
pub use db::{
    DeadLetter, LocalDb, LocalDbOptions, OpenError, CHECKPOINT_EVERY, CHECKPOINT_FRAMES, MAX_BATCH,
};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "oven.sqlite3";

/// The three local adapters over one data directory.
#[derive(Clone)]
pub struct LocalStorage {
    /// The job table ([`crate::ports::JobStore`]) and the queue ([`crate::ports::JobQueue`]).
    pub db: LocalDb,
    pub artifacts: LocalArtifacts,
    pub data_dir: PathBuf,
}

impl LocalStorage {
    /// Opens (creating if needed) the storage under `data_dir` with default options.
    pub fn open(data_dir: &Path) -> Result<LocalStorage, OpenError> {
        Self::open_with(data_dir, LocalDbOptions::default())
    }

    pub fn open_with(data_dir: &Path, options: LocalDbOptions) -> Result<LocalStorage, OpenError> {
        let db = LocalDb::open(&data_dir.join(DB_FILE), options)?;
        let artifacts = LocalArtifacts::open(data_dir).map_err(|source| OpenError::Dir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        Ok(LocalStorage {
            db,
            artifacts,
            data_dir: data_dir.to_path_buf(),
        })
    }
}
