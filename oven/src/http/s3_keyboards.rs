//! [`KeyboardIndex`] on S3: the keyboards bucket holds published trees under versioned
//! prefixes and a small pointer object, [`POINTER_KEY`] = `{"prefix":"releases/<id>"}`, naming
//! the current one (metadata-gen's publish writes the tree first, then swaps the pointer, so a
//! reader never sees half a tree).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::keyboards::{KeyboardIndex, KeyboardIndexError, KEYBOARD_LIST};
use crate::ports::BackendError;

/// The pointer object at the root of the keyboards bucket.
pub const POINTER_KEY: &str = "current.json";
/// How long a read list is reused (each read is two S3 GETs).
const CACHE_FOR: Duration = Duration::from_secs(60);
const BACKEND: &str = "s3-keyboards";

#[derive(Deserialize)]
struct Pointer {
    prefix: String,
}

pub struct S3KeyboardIndex {
    client: Client,
    bucket: String,
    cache: Mutex<Option<(Instant, Bytes)>>,
}

impl S3KeyboardIndex {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3KeyboardIndex {
            client,
            bucket: bucket.into(),
            cache: Mutex::new(None),
        }
    }

    /// The object, or `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, BackendError> {
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match res {
            Ok(out) => {
                let body = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| BackendError::new(BACKEND, e))?;
                Ok(Some(body.into_bytes()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(BackendError::new(
                BACKEND,
                aws_sdk_s3::error::DisplayErrorContext(e),
            )),
        }
    }

    async fn fetch(&self) -> Result<Bytes, KeyboardIndexError> {
        let pointer = self
            .get(POINTER_KEY)
            .await?
            .ok_or(KeyboardIndexError::NotPublished)?;
        let Pointer { prefix } = serde_json::from_slice(&pointer)
            .map_err(|e| BackendError::new(BACKEND, format!("{POINTER_KEY} is not valid: {e}")))?;
        let prefix = prefix.trim_end_matches('/');
        let confined = !prefix.is_empty()
            && !prefix.starts_with('/')
            && prefix
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != "..");
        if !confined {
            return Err(BackendError::new(
                BACKEND,
                format!("{POINTER_KEY} names a bad prefix {prefix:?}"),
            )
            .into());
        }
        self.get(&format!("{prefix}/{KEYBOARD_LIST}"))
            .await?
            .ok_or(KeyboardIndexError::NotPublished)
    }
}

#[async_trait]
impl KeyboardIndex for S3KeyboardIndex {
    async fn keyboard_list(&self) -> Result<Bytes, KeyboardIndexError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, bytes)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return Ok(bytes.clone());
            }
        }
        let bytes = self.fetch().await?;
        *cache = Some((Instant::now(), bytes.clone()));
        Ok(bytes)
    }
}
