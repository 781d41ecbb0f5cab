//! The compile worker of `oven serve --backend aws`: the same loop as the local runner, over
//! SQS, DynamoDB and S3, plus a consumer of the dead-letter queue that fails its jobs (what the
//! compile function's second event source does on Lambda). Several such processes can share
//! one table, queue and bucket: every state change is a conditional write.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError;

use super::errors::Resource;
use super::{resource_error, AwsClients, AwsConfig, AwsStorage, SqsQueue};
use crate::ports::{BackendError, JobQueue};
use crate::worker::{Worker, WorkerConfig};

/// The dead-letter queue's name: the last segment of `OVEN_DLQ_ARN`, else `<queue>-dlq` (what
/// `oven provision` creates).
pub fn dlq_name(names: &AwsConfig) -> String {
    match &names.dlq_arn {
        // An ARN ends in `:<name>`; a queue URL given instead ends in `/<name>`.
        Some(arn) => arn
            .rsplit([':', '/'])
            .next()
            .unwrap_or_default()
            .to_string(),
        None => {
            let queue = names.queue_url.trim_end_matches('/');
            format!("{}-dlq", queue.rsplit('/').next().unwrap_or_default())
        }
    }
}

/// The dead-letter queue's URL, or `None` when `OVEN_DLQ_ARN` is unset and `<queue>-dlq` does
/// not exist. Errors: the queue `OVEN_DLQ_ARN` names does not exist, or SQS cannot be asked.
async fn dlq_url(clients: &AwsClients, names: &AwsConfig) -> Result<Option<String>, BackendError> {
    let name = dlq_name(names);
    match clients.sqs.get_queue_url().queue_name(&name).send().await {
        Ok(out) => Ok(out.queue_url().map(str::to_string)),
        Err(e)
            if names.dlq_arn.is_none()
                && e.as_service_error()
                    .is_some_and(GetQueueUrlError::is_queue_does_not_exist) =>
        {
            Ok(None)
        }
        Err(e) => Err(match &names.dlq_arn {
            Some(arn) => resource_error(Resource::DeadLetterQueue { name: &name, arn }, e),
            None => resource_error(Resource::Queue(&name), e),
        }),
    }
}

/// Starts the worker on the AWS adapters and the dead-letter consumer; returns when both run.
/// Errors: the dead-letter queue cannot be found (see [`dlq_name`]).
pub async fn spawn_worker(
    clients: &AwsClients,
    names: &AwsConfig,
    cfg: WorkerConfig,
) -> Result<tokio::task::JoinHandle<()>, BackendError> {
    if cfg.qmk_home.is_none() {
        tracing::warn!("{}", crate::worker::tree::NO_TREE_MESSAGE);
    }
    let dlq = dlq_url(clients, names).await?;
    if dlq.is_none() {
        tracing::warn!(
            queue = %dlq_name(names),
            "no dead-letter queue: jobs whose messages are dead-lettered are failed only by the \
             reaper (`oven provision` creates the queue)"
        );
    }
    let storage = AwsStorage::new(clients, names);
    let worker = Arc::new(Worker::new(
        Arc::new(storage.jobs),
        Arc::new(storage.queue),
        Arc::new(storage.artifacts),
        cfg,
    ));
    let dead = worker.clone();
    let dlq = dlq.map(|url| SqsQueue::new(clients.sqs.clone(), url));
    worker.prepare_in_background();
    Ok(tokio::spawn(async move {
        let drain = async move {
            let Some(dlq) = dlq else { return };
            loop {
                let letters = match dlq.receive(10, Duration::from_secs(20)).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "dead-letter queue");
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        continue;
                    }
                };
                for l in letters {
                    match dead.fail_dead_letter(&l.message).await {
                        Ok(()) => {
                            if let Err(e) = dlq.ack(&l.receipt).await {
                                tracing::warn!(error = %e, "dead-letter ack");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(job = %l.message.job_id, error = %e, "dead letter")
                        }
                    }
                }
            }
        };
        tokio::join!(worker.run(), drain);
    }))
}
