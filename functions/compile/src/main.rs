//! The compile function: an SQS-triggered container-image Lambda. It builds the worker from its
//! environment (see `oven::config`) once per execution environment and hands each batch to
//! `oven::worker::batch`, reporting records to retry as partial batch failures (the event
//! source mapping must enable `ReportBatchItemFailures`). Records from the dead-letter queue
//! (event source ARN = `OVEN_DLQ_ARN`) fail their job.
//!
//! It is also invoked every minute by an EventBridge schedule (`Reaper` in `template.yaml`):
//! then it only runs the reaper, which queues again the jobs whose worker stopped renewing
//! its lease, so a dead worker's job is recovered even when no other job comes in.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use oven::adapters::aws::AwsStorage;
use oven::worker::{batch, Worker, WorkerConfig};
use serde_json::Value;

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

/// What invoked the function.
#[derive(Debug)]
enum Invocation {
    Sqs(SqsEvent),
    /// An EventBridge scheduled event (`"detail-type": "Scheduled Event"`).
    Schedule,
}

fn invocation(event: Value) -> Result<Invocation, Error> {
    let scheduled = event.get("source").and_then(Value::as_str) == Some("aws.events")
        && event.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event");
    if scheduled {
        return Ok(Invocation::Schedule);
    }
    if event.get("Records").is_some() {
        return Ok(Invocation::Sqs(serde_json::from_value(event)?));
    }
    Err("neither an SQS batch nor a scheduled event".into())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    oven::telemetry::init();
    let cfg = WorkerConfig::from_env(None);
    let storage = AwsStorage::from_env().await?;
    let worker = Arc::new(Worker::new(
        Arc::new(storage.jobs),
        Arc::new(storage.queue),
        Arc::new(storage.artifacts),
        cfg,
    ));
    let dlq_arn = std::env::var(oven::config::DLQ_ARN).ok();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (worker, dlq_arn) = (worker.clone(), dlq_arn.clone());
        async move {
            match invocation(event.payload)? {
                Invocation::Schedule => {
                    // An error fails the invocation: it shows in the function's Errors metric.
                    batch::scheduled(&worker).await?;
                    Ok(Value::Null)
                }
                Invocation::Sqs(sqs) => {
                    let failed = batch::handle(&worker, dlq_arn.as_deref(), &records(sqs)).await;
                    // Between schedules, each batch also takes over jobs whose worker died (a
                    // Query on the lease index, usually empty).
                    if let Err(e) = worker.reap().await {
                        tracing::warn!(error = %e, "reaper");
                    }
                    Ok::<_, Error>(serde_json::to_value(response(failed))?)
                }
            }
        }
    }))
    .await
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
