//! Creates the AWS resources as `template.yaml` declares them (job table with its lease index
//! and TTL, queue with a dead-letter queue, buckets), for tests, `oven provision` and
//! development against an emulator or a dev account. Production resources come from the SAM
//! template, never from here.

use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::errors::Resource;
use super::{resource_error, AwsClients, AwsConfig, MissingVar, STATE_LEASE_INDEX};
use crate::config;
use crate::ports::BackendError;

/// The job table: key `id`, index [`STATE_LEASE_INDEX`] on (`state`, `lease_until`), TTL on
/// `expires_at_s`. An existing table is left as it is.
pub async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Result<(), BackendError> {
    let key = |attr: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(attr)
            .key_type(kind)
            .build()
            .map_err(|e| BackendError::new("dynamodb", e))
    };
    let attr = |attr: &str, t| {
        AttributeDefinition::builder()
            .attribute_name(attr)
            .attribute_type(t)
            .build()
            .map_err(|e| BackendError::new("dynamodb", e))
    };
    let index = GlobalSecondaryIndex::builder()
        .index_name(STATE_LEASE_INDEX)
        .key_schema(key("state", KeyType::Hash)?)
        .key_schema(key("lease_until", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .map_err(|e| BackendError::new("dynamodb", e))?;
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key("id", KeyType::Hash)?)
        .attribute_definitions(attr("id", ScalarAttributeType::S)?)
        .attribute_definitions(attr("state", ScalarAttributeType::S)?)
        .attribute_definitions(attr("lease_until", ScalarAttributeType::N)?)
        .global_secondary_indexes(index)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => return Err(resource_error(Resource::Table(name), e)),
    }
    client
        .wait_until_table_exists()
        .table_name(name)
        .wait(Duration::from_secs(120))
        .await
        .map_err(|e| BackendError::new("dynamodb", e))?;
    client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at_s")
                .build()
                .map_err(|e| BackendError::new("dynamodb", e))?,
        )
        .send()
        .await
        .map_err(|e| resource_error(Resource::Table(name), e))?;
    Ok(())
}

/// A queue and its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queues {
    pub queue_url: String,
    pub dlq_url: String,
    pub dlq_arn: String,
}

/// Creates `<name>` with the given visibility timeout, redriving to `<name>-dlq` after
/// `max_receives` receives.
pub async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    visibility: Duration,
    max_receives: u32,
) -> Result<Queues, BackendError> {
    ensure_queues(
        client,
        name,
        &format!("{name}-dlq"),
        visibility,
        max_receives,
    )
    .await
}

/// Creates queue `name` redriving to `dlq_name` after `max_receives` receives; both with the
/// given visibility timeout (the compile function consumes both). Existing queues with the same
/// attributes are returned as they are.
pub async fn ensure_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    dlq_name: &str,
    visibility: Duration,
    max_receives: u32,
) -> Result<Queues, BackendError> {
    let dlq_url = client
        .create_queue()
        .queue_name(dlq_name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.as_secs().to_string(),
        )
        .send()
        .await
        .map_err(|e| resource_error(Resource::Queue(dlq_name), e))?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| resource_error(Resource::Queue(&dlq_url), e))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| BackendError::new("sqs", "dead-letter queue has no ARN"))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receives.to_string(),
    });
    let queue_url = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility.as_secs().to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(|e| resource_error(Resource::Queue(name), e))?
        .queue_url()
        .unwrap_or_default()
        .to_string();
    // The rest of template.yaml's settings, set (not created with) so that queues an older
    // provision made, with fewer attributes, are brought in step rather than refused.
    for (url, settings) in [
        (
            &queue_url,
            &[
                (
                    QueueAttributeName::MessageRetentionPeriod,
                    JOB_RETENTION_SECS,
                ),
                (QueueAttributeName::ReceiveMessageWaitTimeSeconds, 20),
            ][..],
        ),
        (
            &dlq_url,
            &[(
                QueueAttributeName::MessageRetentionPeriod,
                DLQ_RETENTION_SECS,
            )][..],
        ),
    ] {
        let mut call = client.set_queue_attributes().queue_url(url);
        for (k, v) in settings {
            call = call.attributes(k.clone(), v.to_string());
        }
        call.send()
            .await
            .map_err(|e| resource_error(Resource::Queue(url), e))?;
    }
    Ok(Queues {
        queue_url,
        dlq_url,
        dlq_arn,
    })
}

/// template.yaml's `MessageRetentionPeriod` of the job queue (1 day) and of the dead-letter
/// queue (14 days), in seconds.
pub const JOB_RETENTION_SECS: u32 = 86_400;
pub const DLQ_RETENTION_SECS: u32 = 1_209_600;

/// Creates bucket `name` unless this account already has it, with template.yaml's public
/// access block and lifecycle: objects expire after `expire_days` (the artifact bucket's
/// `RetentionDays`; `None` for the keyboards bucket, whose old releases the publisher
/// deletes), and unfinished multipart uploads are aborted after a day.
pub async fn ensure_bucket(
    client: &aws_sdk_s3::Client,
    name: &str,
    expire_days: Option<i32>,
) -> Result<(), BackendError> {
    use aws_sdk_s3::types::{
        AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
        LifecycleExpiration, LifecycleRule, LifecycleRuleFilter, PublicAccessBlockConfiguration,
    };
    match client.create_bucket().bucket(name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) => {}
        Err(e) => return Err(resource_error(Resource::Bucket(name), e)),
    }
    client
        .put_public_access_block()
        .bucket(name)
        .public_access_block_configuration(
            PublicAccessBlockConfiguration::builder()
                .block_public_acls(true)
                .block_public_policy(true)
                .ignore_public_acls(true)
                .restrict_public_buckets(true)
                .build(),
        )
        .send()
        .await
        .map_err(|e| resource_error(Resource::Bucket(name), e))?;
    let mut rule = LifecycleRule::builder()
        .status(ExpirationStatus::Enabled)
        .filter(LifecycleRuleFilter::builder().prefix("").build())
        .abort_incomplete_multipart_upload(
            AbortIncompleteMultipartUpload::builder()
                .days_after_initiation(1)
                .build(),
        );
    rule = match expire_days {
        Some(days) => rule
            .id("expire-after-retention")
            .expiration(LifecycleExpiration::builder().days(days).build()),
        None => rule.id("abort-multipart"),
    };
    let rule = rule.build().map_err(|e| BackendError::new("s3", e))?;
    client
        .put_bucket_lifecycle_configuration()
        .bucket(name)
        .lifecycle_configuration(
            BucketLifecycleConfiguration::builder()
                .rules(rule)
                .build()
                .map_err(|e| BackendError::new("s3", e))?,
        )
        .send()
        .await
        .map_err(|e| resource_error(Resource::Bucket(name), e))?;
    Ok(())
}

/// template.yaml's `RetentionDays` for a retention of `hours` ([`config::RETENTION_HOURS`]):
/// whole days, at least one.
pub fn retention_days(hours: u64) -> i32 {
    hours.div_ceil(24).clamp(1, i32::MAX as u64) as i32
}

/// The artifact bucket's expiry from the environment ([`config::RETENTION_HOURS`], default
/// [`config::DEFAULT_RETENTION_HOURS`]).
fn env_retention_days() -> i32 {
    let hours = std::env::var(config::RETENTION_HOURS)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(config::DEFAULT_RETENTION_HOURS);
    retention_days(hours)
}

/// Everything Oven needs, named after `prefix` (lower-case letters, digits and dashes), with
/// the given queue behaviour; returns the names as the functions would read them.
pub async fn ensure_all(
    clients: &AwsClients,
    prefix: &str,
    visibility: Duration,
    max_receives: u32,
) -> Result<AwsConfig, BackendError> {
    let table = format!("{prefix}-jobs");
    let artifacts = format!("{prefix}-artifacts");
    let keyboards = format!("{prefix}-keyboards");
    ensure_table(&clients.dynamodb, &table).await?;
    let queues = ensure_queue(
        &clients.sqs,
        &format!("{prefix}-compile"),
        visibility,
        max_receives,
    )
    .await?;
    ensure_bucket(&clients.s3, &artifacts, Some(env_retention_days())).await?;
    ensure_bucket(&clients.s3, &keyboards, None).await?;
    Ok(AwsConfig {
        job_table: table,
        queue_url: queues.queue_url,
        artifact_bucket: artifacts,
        dlq_arn: Some(queues.dlq_arn),
        keyboards_bucket: Some(keyboards),
    })
}

/// template.yaml's queue settings: visibility 6 x the compile function's 600 s timeout, and
/// the dead-letter queue after 3 receives.
pub const TEMPLATE_VISIBILITY: Duration = Duration::from_secs(3600);
pub const TEMPLATE_MAX_RECEIVES: u32 = 3;

/// Why [`from_env`] could not provision.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Missing(#[from] MissingVar),
    #[error("{var}={value:?}: {reason}")]
    BadName {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What [`from_env`] made sure exists.
#[derive(Debug, Clone)]
pub struct Provisioned {
    /// The names as the functions read them; `queue_url` and `dlq_arn` as SQS reports them
    /// (compare with the environment: an emulator may answer another host or account).
    pub names: AwsConfig,
    pub dlq_url: String,
}

/// SQS queue names: 1–80 of `[A-Za-z0-9_-]` (a `.fifo` queue is not what Oven uses).
fn queue_name(var: &'static str, value: &str, name: &str) -> Result<String, ProvisionError> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_string())
    } else {
        Err(ProvisionError::BadName {
            var,
            value: value.to_string(),
            reason: "its last segment must be an SQS queue name (1-80 of A-Z a-z 0-9 - _)",
        })
    }
}

/// Creates, on the endpoint the SDK is configured for, the resources the `OVEN_*` variables
/// name, as template.yaml declares them: the table `OVEN_JOB_TABLE`; the queue named by the
/// last segment of `OVEN_QUEUE_URL` and its dead-letter queue (named by the last segment of
/// `OVEN_DLQ_ARN`, else `<queue>-dlq`); the buckets `OVEN_ARTIFACT_BUCKET` and, when set,
/// `OVEN_KEYBOARDS_BUCKET`. Existing resources are kept.
pub async fn from_env(clients: &AwsClients) -> Result<Provisioned, ProvisionError> {
    let mut names = AwsConfig::from_env()?;
    let queue_url = names.queue_url.trim_end_matches('/').to_string();
    let queue = queue_name(
        config::QUEUE_URL,
        &names.queue_url,
        queue_url.rsplit('/').next().unwrap_or_default(),
    )?;
    // Named as the worker finds it (`runner::dlq_name`), checked against the variable it came from.
    let dlq = match &names.dlq_arn {
        Some(arn) => queue_name(config::DLQ_ARN, arn, &super::runner::dlq_name(&names))?,
        None => queue_name(
            config::QUEUE_URL,
            &names.queue_url,
            &super::runner::dlq_name(&names),
        )?,
    };
    ensure_table(&clients.dynamodb, &names.job_table).await?;
    let queues = ensure_queues(
        &clients.sqs,
        &queue,
        &dlq,
        TEMPLATE_VISIBILITY,
        TEMPLATE_MAX_RECEIVES,
    )
    .await?;
    ensure_bucket(
        &clients.s3,
        &names.artifact_bucket,
        Some(env_retention_days()),
    )
    .await?;
    if let Some(b) = &names.keyboards_bucket {
        ensure_bucket(&clients.s3, b, None).await?;
    }
    names.queue_url = queues.queue_url;
    names.dlq_arn = Some(queues.dlq_arn);
    Ok(Provisioned {
        names,
        dlq_url: queues.dlq_url,
    })
}
