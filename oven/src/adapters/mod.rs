//! Implementations of the [ports](crate::ports): `local` (SQLite, a durable SQLite queue, a
//! directory) for `oven serve`, and `aws` (DynamoDB, SQS, S3) for the Lambda functions.
//!
//! Both sets pass the same tests, in [`conformance`], so the router and the worker cannot tell
//! them apart.

pub mod aws;
pub mod local;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
