//! One SQS batch as the compile Lambda receives it, independent of the Lambda event types: each
//! record is processed in turn (builds share the warm build directory), records from the
//! dead-letter queue fail their job, and the ids of records to deliver again are returned (the
//! function reports them as partial batch failures). While a record's job runs, the worker's
//! heartbeat extends the record's visibility through its receipt handle, so a record whose
//! invocation dies comes back within a lease rather than after the queue's visibility timeout.
//!
//! [`scheduled`] is the other kind of invocation: the `Reaper` schedule of `template.yaml`
//! (every minute), which queues again the jobs whose worker stopped renewing its lease, even
//! when no other job arrives.

use crate::ports::QueueMessage;

use super::Worker;

/// What the worker needs from one SQS record.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub event_source_arn: Option<String>,
    /// The SQS receipt handle, to extend the record's visibility while its job runs.
    pub receipt_handle: Option<String>,
}

/// Processes `records`; returns the message ids that failed and must come back.
pub async fn handle(worker: &Worker, dlq_arn: Option<&str>, records: &[Record]) -> Vec<String> {
    let mut failed = Vec::new();
    for r in records {
        let message: QueueMessage = match serde_json::from_str(&r.body) {
            Ok(m) => m,
            Err(e) => {
                // Redelivery cannot fix a malformed body; drop it instead of looping.
                tracing::error!(message_id = %r.message_id, error = %e, "unreadable queue message");
                continue;
            }
        };
        let from_dlq = dlq_arn.is_some_and(|arn| r.event_source_arn.as_deref() == Some(arn));
        let outcome = if from_dlq {
            worker.fail_dead_letter(&message).await.map(|()| None)
        } else {
            worker
                .process_delivery(&message, r.receipt_handle.as_deref())
                .await
                .map(Some)
        };
        match outcome {
            Ok(p) => tracing::info!(job = %message.job_id, outcome = ?p, from_dlq, "processed"),
            Err(e) => {
                tracing::error!(job = %message.job_id, error = %e, "will be delivered again");
                failed.push(r.message_id.clone());
            }
        }
    }
    failed
}

/// A scheduled invocation: reaps until no lapsed lease is left (in rounds of at most 50 jobs,
/// at most 20 rounds). Returns how many jobs were requeued or failed.
pub async fn scheduled(worker: &Worker) -> Result<usize, super::WorkerError> {
    let mut total = 0;
    for _ in 0..20 {
        let n = worker.reap().await?;
        total += n;
        if n < 50 {
            break;
        }
    }
    tracing::info!(jobs = total, "scheduled reaper");
    Ok(total)
}
