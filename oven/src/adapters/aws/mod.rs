//! The AWS adapters used by the Lambda functions: the job table on DynamoDB ([`DynamoJobStore`]),
//! the queue on SQS ([`SqsQueue`]), artifacts on S3 ([`S3Artifacts`]).
//!
//! Clients come from the environment ([`AwsClients::from_env`]): credentials, region, and
//! `AWS_ENDPOINT_URL` (moto in tests). Resource names come from [`AwsConfig::from_env`].
//! [`provision`] creates the resources the way `template.yaml` declares them, for tests,
//! `oven provision` and development against an emulator; [`runner`] is the worker of `oven
//! serve --backend aws`. Failures read as one sentence saying what to check ([`errors`]).

mod dynamo;
pub mod errors;
pub mod provision;
pub mod runner;
mod s3;
mod sqs;

pub use dynamo::{DynamoJobStore, STATE_LEASE_INDEX};
pub use s3::{S3Artifacts, MIN_PART, PRESIGN_EXPIRY};
pub use sqs::SqsQueue;

use crate::config;

/// The AWS SDK clients, configured once per process.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
}

impl AwsClients {
    /// Loads the SDK configuration from the environment. With `AWS_ENDPOINT_URL` set (an
    /// emulator), S3 is addressed path-style.
    pub async fn from_env() -> AwsClients {
        let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let path_style = std::env::var_os(config::AWS_ENDPOINT_URL).is_some();
        let s3_conf = aws_sdk_s3::config::Builder::from(&conf)
            .force_path_style(path_style)
            .build();
        AwsClients {
            dynamodb: aws_sdk_dynamodb::Client::new(&conf),
            sqs: aws_sdk_sqs::Client::new(&conf),
            s3: aws_sdk_s3::Client::from_conf(s3_conf),
        }
    }
}

/// A required environment variable is not set (or not Unicode).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {0} is not set")]
pub struct MissingVar(pub &'static str);

/// The names of the AWS resources, from the environment ([`crate::config`] names them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsConfig {
    pub job_table: String,
    pub queue_url: String,
    pub artifact_bucket: String,
    /// Only the compile function needs it (it fails jobs whose messages reach it).
    pub dlq_arn: Option<String>,
    /// Only `metadata-gen` and the keyboards routes need it.
    pub keyboards_bucket: Option<String>,
}

impl AwsConfig {
    /// Reads the resource names; the job table, queue and artifact bucket are required.
    pub fn from_env() -> Result<AwsConfig, MissingVar> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `get` (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<AwsConfig, MissingVar> {
        let required = |name: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(MissingVar(name))
        };
        let optional = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Ok(AwsConfig {
            job_table: required(config::JOB_TABLE)?,
            queue_url: required(config::QUEUE_URL)?,
            artifact_bucket: required(config::ARTIFACT_BUCKET)?,
            dlq_arn: optional(config::DLQ_ARN),
            keyboards_bucket: optional(config::KEYBOARDS_BUCKET),
        })
    }
}

/// The three AWS adapters.
#[derive(Clone, Debug)]
pub struct AwsStorage {
    pub jobs: DynamoJobStore,
    pub queue: SqsQueue,
    pub artifacts: S3Artifacts,
}

impl AwsStorage {
    pub fn new(clients: &AwsClients, config: &AwsConfig) -> AwsStorage {
        AwsStorage {
            jobs: DynamoJobStore::new(clients.dynamodb.clone(), &config.job_table),
            queue: SqsQueue::new(clients.sqs.clone(), &config.queue_url),
            artifacts: S3Artifacts::new(clients.s3.clone(), &config.artifact_bucket),
        }
    }

    /// Clients and names from the environment.
    pub async fn from_env() -> Result<AwsStorage, MissingVar> {
        let config = AwsConfig::from_env()?;
        Ok(Self::new(&AwsClients::from_env().await, &config))
    }
}

/// An SDK error of `backend` (`s3`, `dynamodb`, `sqs`) as a [`crate::ports::BackendError`]
/// whose message says what to check (see [`errors`]); prefer [`resource_error`], which names
/// the bucket, table or queue.
#[allow(dead_code)] // for calls that name no resource; every current one does
fn sdk_error<E, R>(
    backend: &'static str,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> crate::ports::BackendError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    errors::backend_error(errors::Resource::Service(backend), e)
}

/// An SDK error of a call on `resource` as a [`crate::ports::BackendError`] (see [`errors`]).
fn resource_error<E, R>(
    resource: errors::Resource<'_>,
    e: aws_sdk_s3::error::SdkError<E, R>,
) -> crate::ports::BackendError
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    errors::backend_error(resource, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn config_names_the_missing_variable() {
        let mut env: HashMap<&str, &str> = HashMap::from([
            (config::JOB_TABLE, "jobs"),
            (config::QUEUE_URL, "http://q"),
            (config::ARTIFACT_BUCKET, "art"),
        ]);
        let get = |env: &HashMap<&str, &str>, n: &str| env.get(n).map(|v| v.to_string());
        let c = AwsConfig::from_lookup(|n| get(&env, n)).unwrap();
        assert_eq!(c.job_table, "jobs");
        assert_eq!(c.dlq_arn, None);
        env.insert(config::QUEUE_URL, " ");
        assert_eq!(
            AwsConfig::from_lookup(|n| get(&env, n)),
            Err(MissingVar(config::QUEUE_URL))
        );
        env.remove(config::JOB_TABLE);
        let err = AwsConfig::from_lookup(|n| get(&env, n)).unwrap_err();
        assert!(err.to_string().contains("OVEN_JOB_TABLE"), "{err}");
    }
}
