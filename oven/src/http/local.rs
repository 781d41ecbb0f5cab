//! The local database stores a job and its queue message in one transaction: one durable
//! write per submit instead of two.

use async_trait::async_trait;

use super::{SubmitError, Submitter};
use crate::adapters::local::LocalDb;
use crate::job::Job;

#[async_trait]
impl Submitter for LocalDb {
    async fn submit(&self, job: &Job) -> Result<(), SubmitError> {
        LocalDb::submit(self, job)
            .await
            .map_err(|e| SubmitError::Store(e.to_string()))
    }
}
