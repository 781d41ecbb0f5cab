//! The router over the local adapters: the local database is both the job table and the queue,
//! and stores a job and its queue message in one transaction (one durable write per submit
//! instead of two).

use std::sync::Arc;

use async_trait::async_trait;

use super::{ApiConfig, App, SubmitError, Submitter};
use crate::adapters::local::{LocalDb, LocalStorage};
use crate::job::Job;

#[async_trait]
impl Submitter for LocalDb {
    async fn submit(&self, job: &Job) -> Result<(), SubmitError> {
        LocalDb::submit(self, job)
            .await
            .map_err(|e| SubmitError::Store(e.to_string()))
    }
}

impl App {
    /// The API over local storage, submitting with [`LocalDb::submit`].
    pub fn local(storage: &LocalStorage, config: ApiConfig) -> App {
        let db = Arc::new(storage.db.clone());
        let mut app = App::new(
            db.clone(),
            db.clone(),
            Arc::new(storage.artifacts.clone()),
            config,
        );
        app.submitter = Some(db);
        app
    }
}
