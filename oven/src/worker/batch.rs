//! One SQS batch as the compile Lambda receives it, independent of the Lambda event types: each
//! record is processed in turn (builds share the warm build directory), records from the
//! dead-letter queue fail their job, and the ids of records to deliver again are returned (the
//! function reports them as partial batch failures).

use crate::ports::QueueMessage;

use super::Worker;

/// What the worker needs from one SQS record.
#[derive(Debug, Clone)]
pub struct Record {
    pub message_id: String,
    pub body: String,
    pub event_source_arn: Option<String>,
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
            worker.process(&message).await.map(Some)
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
