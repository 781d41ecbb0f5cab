//! The compile function's handler: one SQS batch in, the records to deliver again out (partial
//! batch failures; the event source mapping must enable `ReportBatchItemFailures`). Records from
//! the dead-letter queue (event source ARN = `OVEN_DLQ_ARN`) fail their job. `main.rs` serves
//! it through the Lambda Runtime API; the end-to-end test (`tests/tests/aws_path.rs`) calls the
//! same [`Handler::handle`] on the events SQS delivers.
//!
//! The function is also invoked every minute by an EventBridge schedule (`Reaper` in
//! `template.yaml`): then it only runs the reaper ([`Handler::scheduled`]), which queues again
//! the jobs whose worker stopped renewing its lease, so a dead worker's job is recovered even
//! when no other job comes in. [`invocation`] tells the two apart.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use oven::adapters::aws::{AwsStorage, MissingVar};
use oven::worker::{batch, Worker, WorkerConfig, WorkerError};
use serde_json::Value;

/// What invoked the function.
#[derive(Debug)]
pub enum Invocation {
    Sqs(SqsEvent),
    /// An EventBridge scheduled event (`"detail-type": "Scheduled Event"`).
    Schedule,
}

/// Why an event is neither an SQS batch nor the reaper's schedule.
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    #[error("an SQS event that does not parse: {0}")]
    BadSqs(#[from] serde_json::Error),
    #[error("not an SQS batch nor a scheduled event")]
    Unknown,
}

/// Tells a scheduled event from an SQS batch.
pub fn invocation(event: Value) -> Result<Invocation, InvocationError> {
    let scheduled = event.get("source").and_then(Value::as_str) == Some("aws.events")
        && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if scheduled {
        return Ok(Invocation::Schedule);
    }
    if event.get("Records").is_some() {
        return Ok(Invocation::Sqs(serde_json::from_value(event)?));
    }
    Err(InvocationError::Unknown)
}

/// The worker of one execution environment and the ARN that marks dead-letter records.
#[derive(Clone)]
pub struct Handler {
    pub worker: Arc<Worker>,
    pub dlq_arn: Option<String>,
}

impl Handler {
    pub fn new(worker: Arc<Worker>, dlq_arn: Option<String>) -> Handler {
        Handler { worker, dlq_arn }
    }

    /// The worker on DynamoDB, SQS and S3, all named by the environment (`oven::config`).
    ///
    /// Errors: a required variable (`OVEN_JOB_TABLE`, `OVEN_QUEUE_URL`,
    /// `OVEN_ARTIFACT_BUCKET`) is missing. `qmk_client`: see [`WorkerConfig::qmk_client`]
    /// (the function's own binary).
    pub async fn from_env(qmk_client: Option<std::path::PathBuf>) -> Result<Handler, MissingVar> {
        let cfg = WorkerConfig {
            qmk_client,
            ..WorkerConfig::from_env(None)
        };
        let storage = AwsStorage::from_env().await?;
        let worker = Arc::new(Worker::new(
            Arc::new(storage.jobs),
            Arc::new(storage.queue),
            Arc::new(storage.artifacts),
            cfg,
        ));
        let dlq_arn = std::env::var(oven::config::DLQ_ARN)
            .ok()
            .filter(|v| !v.is_empty());
        Ok(Handler::new(worker, dlq_arn))
    }

    /// The scheduled invocation: reap until no expired lease is left (how many were handled).
    /// An error fails the invocation, so it shows in the function's Errors metric.
    pub async fn scheduled(&self) -> Result<usize, WorkerError> {
        batch::scheduled(&self.worker).await
    }

    /// Processes one batch; the response names the records SQS must deliver again.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        let failed = batch::handle(&self.worker, self.dlq_arn.as_deref(), &records(event)).await;
        // Between schedules, each batch also takes over jobs whose worker died (a Query on the
        // lease index, usually empty).
        if let Err(e) = self.worker.reap().await {
            tracing::warn!(error = %e, "reaper");
        }
        response(failed)
    }
}

fn records(event: SqsEvent) -> Vec<batch::Record> {
    event
        .records
        .into_iter()
        .map(|r| batch::Record {
            message_id: r.message_id.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            event_source_arn: r.event_source_arn,
            receipt_handle: r.receipt_handle,
        })
        .collect()
}

fn response(failed: Vec<String>) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    resp.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_are_told_from_sqs_batches() {
        // As EventBridge sends it for a `rate(1 minute)` rule.
        let scheduled = serde_json::json!({
            "version": "0",
            "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-01-01T00:00:00Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/oven-Reaper"],
            "detail": {}
        });
        assert!(matches!(
            invocation(scheduled).unwrap(),
            Invocation::Schedule
        ));
        let sqs = serde_json::json!({"Records": [{"messageId": "m", "body": "{}"}]});
        match invocation(sqs).unwrap() {
            Invocation::Sqs(e) => assert_eq!(e.records.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(invocation(serde_json::json!({"source": "aws.s3"})).is_err());
    }

    #[test]
    fn sqs_event_and_batch_response_shapes() {
        let event: SqsEvent = serde_json::from_value(serde_json::json!({"Records": [{
            "messageId": "m-1",
            "receiptHandle": "r",
            "body": "{\"job_id\":\"8b0e9e77-8f1c-4f39-9d0a-0a0a0a0a0a0a\"}",
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:1:oven-dlq",
            "awsRegion": "us-east-1"
        }]}))
        .unwrap();
        let r = records(event);
        assert_eq!(r[0].message_id, "m-1");
        assert_eq!(r[0].receipt_handle.as_deref(), Some("r"));
        assert_eq!(
            r[0].event_source_arn.as_deref(),
            Some("arn:aws:sqs:us-east-1:1:oven-dlq")
        );
        let v = serde_json::to_value(response(vec!["m-1".into()])).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]})
        );
    }
}
