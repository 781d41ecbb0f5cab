//! The compile function: an SQS-triggered container-image Lambda. It builds the worker from its
//! environment (see `oven::config`) once per execution environment and hands each batch to
//! `oven::worker::batch`, reporting records to retry as partial batch failures (the event
//! source mapping must enable `ReportBatchItemFailures`). Records from the dead-letter queue
//! (event source ARN = `OVEN_DLQ_ARN`) fail their job.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{service_fn, Error, LambdaEvent};
use oven::adapters::aws::AwsStorage;
use oven::worker::{batch, Worker, WorkerConfig};

fn records(event: SqsEvent) -> Vec<batch::Record> {
    event
        .records
        .into_iter()
        .map(|r| batch::Record {
            message_id: r.message_id.unwrap_or_default(),
            body: r.body.unwrap_or_default(),
            event_source_arn: r.event_source_arn,
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
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let (worker, dlq_arn) = (worker.clone(), dlq_arn.clone());
        async move {
            let failed = batch::handle(&worker, dlq_arn.as_deref(), &records(event.payload)).await;
            // Nothing else runs on a schedule on AWS: each invocation also takes over jobs whose
            // worker died (a Query on the lease index, usually empty).
            if let Err(e) = worker.reap().await {
                tracing::warn!(error = %e, "reaper");
            }
            Ok::<_, Error>(response(failed))
        }
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
