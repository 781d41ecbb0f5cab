//! The few S3 operations a publish needs, over the AWS SDK, with errors that name the key.

use aws_sdk_s3::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, MetadataDirective, ObjectIdentifier};
use aws_sdk_s3::Client;
use oven::adapters::aws::errors;
use serde::de::DeserializeOwned;

use super::PublishError;

/// User metadata key carrying the object's SHA-256 (served as `x-amz-meta-sha256`).
pub const SHA256_METADATA: &str = "sha256";

/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// An S3 client configured from the environment. Path-style addressing is forced when an
/// endpoint override (`AWS_ENDPOINT_URL`, e.g. a local emulator) is configured, because
/// virtual-host names such as `bucket.localhost` do not resolve there.
pub async fn client_from_env() -> Client {
    let conf = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let mut builder = aws_sdk_s3::config::Builder::from(&conf);
    if conf.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    Client::from_conf(builder.build())
}

/// A failed S3 call: one sentence saying what to check (bucket, credentials, region,
/// endpoint), the SDK's whole error kept as the detail (`metadata-gen -v` prints it).
fn s3_err<E, R>(op: &'static str, bucket: &str, key: &str, err: SdkError<E, R>) -> PublishError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let e = errors::explain(errors::Resource::Bucket(bucket), &err);
    PublishError::S3 {
        op,
        key: key.to_string(),
        message: e.sentence,
        detail: e.detail,
    }
}

/// A request that could not be built (a bug, not an operator's problem).
fn build_err(op: &'static str, key: &str, err: BuildError) -> PublishError {
    PublishError::S3 {
        op,
        key: key.to_string(),
        message: err.to_string(),
        detail: DisplayErrorContext(err).to_string(),
    }
}

/// Reads a JSON object; `None` when the key does not exist.
pub async fn get_json<T: DeserializeOwned>(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<T>, PublishError> {
    Ok(get_json_tagged(client, bucket, key).await?.map(|(v, _)| v))
}

/// Reads a JSON object and its ETag; `None` when the key does not exist.
pub async fn get_json_tagged<T: DeserializeOwned>(
    client: &Client,
    bucket: &str,
    key: &str,
) -> Result<Option<(T, Option<String>)>, PublishError> {
    let out = match client.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => out,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
        Err(err) => return Err(s3_err("GetObject", bucket, key, err)),
    };
    let etag = out.e_tag.clone();
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| PublishError::S3 {
            op: "GetObject",
            key: key.to_string(),
            message: format!("the download from S3 broke off ({e}): check the network"),
            detail: DisplayErrorContext(e).to_string(),
        })?
        .into_bytes();
    serde_json::from_slice(&bytes)
        .map(|v| Some((v, etag)))
        .map_err(|e| PublishError::BadState {
            key: key.to_string(),
            reason: e.to_string(),
        })
}

/// A precondition on a write (S3 conditional writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    /// Only if the object still has this ETag.
    IfMatch(String),
    /// Only if no object has the key yet.
    IfAbsent,
}

/// How an object is written.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    pub content_type: &'a str,
    pub cache_control: &'a str,
    pub sha256: &'a str,
}

/// Uploads one object; returns its ETag.
pub async fn put(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    headers: Headers<'_>,
) -> Result<Option<String>, PublishError> {
    put_if(client, bucket, key, body, headers, Condition::Always).await
}

/// Uploads one object if `condition` holds; a failed precondition is [`PublishError::Raced`].
pub async fn put_if(
    client: &Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    headers: Headers<'_>,
    condition: Condition,
) -> Result<Option<String>, PublishError> {
    let (if_match, if_none_match) = match condition {
        Condition::Always => (None, None),
        Condition::IfMatch(etag) => (Some(etag), None),
        Condition::IfAbsent => (None, Some("*".to_string())),
    };
    let out = client
        .put_object()
        .set_if_match(if_match)
        .set_if_none_match(if_none_match)
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .content_type(headers.content_type)
        .cache_control(headers.cache_control)
        .metadata(SHA256_METADATA, headers.sha256)
        .send()
        .await
        .map_err(|e| {
            // 412: the precondition failed; 409: a concurrent conditional write won.
            let status = e.raw_response().map(|r| r.status().as_u16());
            if matches!(status, Some(412) | Some(409)) {
                PublishError::Raced(key.to_string())
            } else {
                s3_err("PutObject", bucket, key, e)
            }
        })?;
    Ok(out.e_tag)
}

/// Copies an object inside the bucket (no bytes leave S3), replacing its headers.
pub async fn copy(
    client: &Client,
    bucket: &str,
    from: &str,
    to: &str,
    headers: Headers<'_>,
) -> Result<Option<String>, PublishError> {
    let out = client
        .copy_object()
        .bucket(bucket)
        .key(to)
        .copy_source(format!("{bucket}/{}", encode_key(from)))
        .metadata_directive(MetadataDirective::Replace)
        .content_type(headers.content_type)
        .cache_control(headers.cache_control)
        .metadata(SHA256_METADATA, headers.sha256)
        .send()
        .await
        .map_err(|e| s3_err("CopyObject", bucket, to, e))?;
    Ok(out.copy_object_result.and_then(|r| r.e_tag))
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` as the separator.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub etag: Option<String>,
}

/// Every object under `prefix`.
pub async fn list(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<Listed>, PublishError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_err("ListObjectsV2", bucket, prefix, e))?;
        for obj in page.contents.unwrap_or_default() {
            if let Some(key) = obj.key {
                out.push(Listed {
                    key,
                    etag: obj.e_tag,
                });
            }
        }
    }
    Ok(out)
}

/// The "folders" directly under `prefix` (which ends with `/`), without the prefix.
pub async fn list_dirs(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, PublishError> {
    let mut out = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .delimiter("/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_err("ListObjectsV2", bucket, prefix, e))?;
        for cp in page.common_prefixes.unwrap_or_default() {
            if let Some(name) = cp
                .prefix
                .as_deref()
                .and_then(|p| p.strip_prefix(prefix))
                .and_then(|p| p.strip_suffix('/'))
            {
                out.push(name.to_string());
            }
        }
    }
    Ok(out)
}

/// Deletes keys in batches; fails if S3 reports any key it could not delete.
pub async fn delete_many(
    client: &Client,
    bucket: &str,
    keys: &[String],
) -> Result<(), PublishError> {
    for batch in keys.chunks(DELETE_BATCH) {
        let ids = batch
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| build_err("DeleteObjects", &batch[0], e))?;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| build_err("DeleteObjects", &batch[0], e))?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| s3_err("DeleteObjects", bucket, &batch[0], e))?;
        if let Some(err) = out.errors.unwrap_or_default().into_iter().next() {
            return Err(PublishError::S3 {
                op: "DeleteObjects",
                key: err.key.unwrap_or_default(),
                message: err.message.unwrap_or_default(),
                detail: format!("code {}", err.code.unwrap_or_default()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_keys_are_percent_encoded() {
        assert_eq!(encode_key("a/b c+d.json"), "a/b%20c%2Bd.json");
        assert_eq!(
            encode_key("v1/keyboards/x_y-z/info.json"),
            "v1/keyboards/x_y-z/info.json"
        );
    }
}
