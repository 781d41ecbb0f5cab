//! The job queue on SQS. The body of a message is the JSON of [`QueueMessage`]; the
//! visibility timeout and the redrive policy (dead-letter queue after `maxReceiveCount`) are
//! properties of the queue, set by `template.yaml` (or [`super::provision`]).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;

use super::errors::Resource;
use crate::ports::{BackendError, Delivery, JobQueue, QueueMessage};

const BACKEND: &str = "sqs";
/// SQS limits: 10 messages per receive, 20 s of long polling.
const MAX_MESSAGES: usize = 10;
const MAX_WAIT: Duration = Duration::from_secs(20);
/// SQS limit of a visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Debug)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, e)
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            url: url.into(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// One ReceiveMessage call, long-polling up to `wait` (whole seconds, at most 20).
    async fn receive_once(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, BackendError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, MAX_MESSAGES) as i32)
            .wait_time_seconds(wait.min(MAX_WAIT).as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| super::resource_error(Resource::Queue(&self.url), e))?;
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let (Some(body), Some(receipt)) = (m.body(), m.receipt_handle()) else {
                continue;
            };
            let message: QueueMessage = match serde_json::from_str(body) {
                Ok(v) => v,
                Err(e) => {
                    // Not ours to interpret; left alone it ends in the dead-letter queue.
                    tracing::warn!(body, error = %e, "ignoring a malformed queue message");
                    continue;
                }
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                message,
                receipt: receipt.to_string(),
                receive_count,
            });
        }
        Ok(deliveries)
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), BackendError> {
        let body = serde_json::to_string(message).map_err(backend)?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::resource_error(Resource::Queue(&self.url), e))
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // Long polls are whole seconds of at most 20: poll again until `wait` is used up.
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let got = self.receive_once(max, left).await?;
            if !got.is_empty() || left < Duration::from_secs(1) {
                return Ok(got);
            }
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), BackendError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::resource_error(Resource::Queue(&self.url), e))
    }

    async fn extend_visibility(
        &self,
        receipt: &str,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        // SQS counts whole seconds, up to 12 hours from the receive.
        let secs = timeout
            .as_millis()
            .div_ceil(1000)
            .min(MAX_VISIBILITY.as_secs() as u128) as i32;
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::sdk_error(BACKEND, e))
    }

    async fn waiting(&self) -> Result<u64, BackendError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| super::resource_error(Resource::Queue(&self.url), e))?;
        out.attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| backend("no ApproximateNumberOfMessages in the queue attributes"))
    }
}
