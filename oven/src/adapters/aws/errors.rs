//! AWS failures as an operator reads them: one sentence saying what failed and what to check
//! (the bucket, table or queue name, the credentials, the region, the endpoint), instead of the
//! SDK's debug structure. The SDK's whole error chain goes to the log as a `warn` line under
//! [`DETAIL_TARGET`] (in the JSON log on Lambda; the CLIs show it with `-v`).
//!
//! Codes are the services' own (S3 `NoSuchBucket`, DynamoDB `ResourceNotFoundException`, SQS
//! `AWS.SimpleQueueService.NonExistentQueue` / `QueueDoesNotExist`, the IAM/signature codes);
//! failures before a response (no connection, timeout, no credentials) are the SDK's
//! dispatch, timeout and construction failures.

use std::fmt;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::config;
use crate::ports::BackendError;

/// The `tracing` target of the detail lines; CLIs turn it off unless asked (`-v`).
pub const DETAIL_TARGET: &str = "oven::aws::detail";

/// What an AWS call was about: it decides what the sentence tells the reader to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// An S3 bucket, by name.
    Bucket(&'a str),
    /// An S3 bucket `name` that variable `var` names (`OVEN_ARTIFACT_BUCKET`, ...).
    BucketOf { name: &'a str, var: &'static str },
    /// A DynamoDB table, by name.
    Table(&'a str),
    /// An SQS queue, by URL or name.
    Queue(&'a str),
    /// The dead-letter queue `name`, named by `OVEN_DLQ_ARN` = `arn`.
    DeadLetterQueue { name: &'a str, arn: &'a str },
    /// A service with no resource named: `"s3"`, `"dynamodb"` or `"sqs"` (other names are
    /// shown as they are).
    Service(&'static str),
}

impl Resource<'_> {
    fn service(&self) -> &'static str {
        match self {
            Resource::Bucket(_) | Resource::BucketOf { .. } => "S3",
            Resource::Table(_) => "DynamoDB",
            Resource::Queue(_) | Resource::DeadLetterQueue { .. } => "SQS",
            Resource::Service("s3") => "S3",
            Resource::Service("dynamodb") => "DynamoDB",
            Resource::Service("sqs") => "SQS",
            Resource::Service(other) => other,
        }
    }

    /// The `BackendError::backend` of the adapters (`s3`, `dynamodb`, `sqs`).
    fn backend(&self) -> &'static str {
        match self {
            Resource::Bucket(_) | Resource::BucketOf { .. } => "s3",
            Resource::Table(_) => "dynamodb",
            Resource::Queue(_) | Resource::DeadLetterQueue { .. } => "sqs",
            Resource::Service(s) => s,
        }
    }

    /// What to check to find the resource: the name and where Oven reads it from.
    fn check(&self) -> String {
        match self {
            Resource::Bucket(b) => format!("the bucket name `{b}`"),
            Resource::BucketOf { name, var } => format!("the bucket name `{name}` ({var})"),
            Resource::Table(t) => format!("the table name `{t}` ({})", config::JOB_TABLE),
            Resource::Queue(q) => format!("the queue URL `{q}` ({})", config::QUEUE_URL),
            Resource::DeadLetterQueue { arn, .. } => {
                format!("the dead-letter queue ARN `{arn}` ({})", config::DLQ_ARN)
            }
            Resource::Service(_) => "the resource names (OVEN_* variables)".into(),
        }
    }
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Bucket(b) | Resource::BucketOf { name: b, .. } => {
                write!(f, "S3 bucket `{b}`")
            }
            Resource::Table(t) => write!(f, "DynamoDB table `{t}`"),
            Resource::Queue(q) => write!(f, "SQS queue `{q}`"),
            Resource::DeadLetterQueue { name, .. } => write!(f, "SQS dead-letter queue `{name}`"),
            Resource::Service(_) => write!(f, "{}", self.service()),
        }
    }
}

/// What went wrong, in the terms of what to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The bucket, table or queue does not exist there.
    Missing,
    /// No credentials, or credentials the service does not accept.
    Credentials,
    /// The credentials are valid but may not do this (IAM).
    Denied,
    /// Nothing answered, or not in time, or not like AWS (endpoint, region, network).
    Unreachable,
    /// The service refused the request for another reason (its code is in the sentence).
    Other,
}

/// An AWS failure explained: [`sentence`](Self::sentence) for people, `detail` (the SDK's
/// whole error chain) for the log.
#[derive(Debug, Clone)]
pub struct Explained {
    pub cause: Cause,
    pub sentence: String,
    pub detail: String,
}

/// Where requests went: the endpoint override, else the region.
fn target() -> String {
    match std::env::var(config::AWS_ENDPOINT_URL) {
        Ok(url) if !url.is_empty() => format!("the endpoint {url} ({})", config::AWS_ENDPOINT_URL),
        _ => match std::env::var("AWS_REGION").or_else(|_| std::env::var("AWS_DEFAULT_REGION")) {
            Ok(r) if !r.is_empty() => format!("region {r}"),
            _ => "no region (AWS_REGION is not set)".into(),
        },
    }
}

const MISSING_CODES: &[&str] = &[
    "NoSuchBucket",
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidSignatureException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "MissingAuthenticationToken",
    "IncompleteSignature",
];
const DENIED_CODES: &[&str] = &["AccessDenied", "AccessDeniedException"];

/// The last error of the `source()` chain: the SDK's outer layers only say "dispatch failure".
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(next) = e.source() {
        e = next;
    }
    e.to_string()
}

/// Explains `err`, a failed call on `resource`.
pub fn explain<E, R>(resource: Resource<'_>, err: &SdkError<E, R>) -> Explained
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let detail = DisplayErrorContext(err).to_string();
    let service = resource.service();
    let creds = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE";
    let (cause, sentence) = match err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or("no error code");
            let message = err.message().unwrap_or("");
            // HeadBucket answers a bare 404, code `NotFound` (HeadObject's 404 is a missing
            // object, which its caller handles before this).
            let is_bucket = matches!(resource, Resource::Bucket(_) | Resource::BucketOf { .. });
            let missing_bucket = code == "NotFound" && is_bucket;
            if MISSING_CODES.contains(&code) || missing_bucket {
                // Tables and queues are Oven's alone; buckets may be anyone's.
                let hint = match resource {
                    Resource::Bucket(_) | Resource::BucketOf { .. } => "",
                    _ => " (`oven provision` creates them on an empty account or emulator)",
                };
                (
                    Cause::Missing,
                    format!(
                        "{resource} does not exist at {}: check {} and the region{hint}",
                        target(),
                        resource.check()
                    ),
                )
            } else if CREDENTIAL_CODES.contains(&code) {
                (
                    Cause::Credentials,
                    format!(
                        "{service} did not accept the credentials ({code}) at {}: check {creds}",
                        target()
                    ),
                )
            } else if DENIED_CODES.contains(&code) {
                (
                    Cause::Denied,
                    format!(
                        "{service} denied access to {resource} ({code}): check that the \
                         credentials' IAM policy allows it, and {}",
                        resource.check()
                    ),
                )
            } else {
                let message = if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                };
                (
                    Cause::Other,
                    format!("{service} refused a request on {resource} ({code}{message})"),
                )
            }
        }
        // Credentials are resolved before anything is sent; their absence surfaces here.
        SdkError::DispatchFailure(_) | SdkError::ConstructionFailure(_)
            if detail.to_ascii_lowercase().contains("credential") =>
        {
            (
                Cause::Credentials,
                format!("no AWS credentials were found for {service}: set {creds}"),
            )
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => (
            Cause::Unreachable,
            format!(
                "could not reach {service} at {} (for {resource}; {}): check AWS_ENDPOINT_URL, \
                 AWS_REGION and the network",
                target(),
                innermost(err)
            ),
        ),
        SdkError::ResponseError(_) => (
            Cause::Unreachable,
            format!(
                "{} did not answer like {service} (for {resource}): check AWS_ENDPOINT_URL \
                 and AWS_REGION",
                target()
            ),
        ),
        _ => (
            Cause::Other,
            format!(
                "the {service} request on {resource} failed before an answer: {}",
                innermost(err)
            ),
        ),
    };
    Explained {
        cause,
        sentence,
        detail,
    }
}

/// [`explain`], the detail logged under [`DETAIL_TARGET`], as a [`BackendError`] whose
/// message is the sentence.
pub fn backend_error<E, R>(resource: Resource<'_>, err: SdkError<E, R>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug + 'static,
{
    let e = explain(resource, &err);
    tracing::warn!(target: DETAIL_TARGET, detail = %e.detail, "{}", e.sentence);
    BackendError::new(resource.backend(), e.sentence)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;

    fn service_error(code: &str) -> SdkError<GetObjectError, ()> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("the service's words")
            .build();
        SdkError::service_error(GetObjectError::generic(meta), ())
    }

    #[test]
    fn codes_become_what_to_check() {
        let e = explain(Resource::Bucket("kb"), &service_error("NoSuchBucket"));
        assert_eq!(e.cause, Cause::Missing);
        assert!(
            e.sentence.contains("S3 bucket `kb` does not exist"),
            "{}",
            e.sentence
        );
        assert!(!e.sentence.contains('\n'));
        let e = explain(
            Resource::Table("jobs"),
            &service_error("ResourceNotFoundException"),
        );
        assert_eq!(e.cause, Cause::Missing);
        assert!(e.sentence.contains("OVEN_JOB_TABLE"), "{}", e.sentence);
        let e = explain(
            Resource::Queue("q"),
            &service_error("AWS.SimpleQueueService.NonExistentQueue"),
        );
        assert_eq!(e.cause, Cause::Missing);
        assert!(e.sentence.contains("OVEN_QUEUE_URL"), "{}", e.sentence);
        let e = explain(Resource::Bucket("kb"), &service_error("InvalidAccessKeyId"));
        assert_eq!(e.cause, Cause::Credentials);
        assert!(e.sentence.contains("AWS_ACCESS_KEY_ID"), "{}", e.sentence);
        let e = explain(Resource::Bucket("kb"), &service_error("AccessDenied"));
        assert_eq!(e.cause, Cause::Denied);
        let e = explain(Resource::Bucket("kb"), &service_error("SlowDown"));
        assert_eq!(e.cause, Cause::Other);
        assert!(
            e.sentence.contains("SlowDown: the service's words"),
            "{}",
            e.sentence
        );
    }
}
