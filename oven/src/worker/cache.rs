//! The result cache: an identical request compiled at the same firmware commit gives the same
//! firmware, so the first successful job's result is reused.
//!
//! An entry is a small JSON at `cache/<request hash>-<commit>.json` naming the first job and its
//! result. A hit copies that job's artifacts to the new job's keys (a server-side copy), so each
//! job's downloads live exactly as long as the job. Only successes are cached: a failure may come
//! from a timeout on a busy machine, and a retry should really retry.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::job::{JobId, JobResult};
use crate::keymap::KeymapRequest;
use crate::ports::{ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError};

/// A cached successful result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub job_id: JobId,
    pub result: JobResult,
    /// Artifacts of `job_id`: file name and content type, to copy for a new job.
    pub artifacts: Vec<(String, String)>,
}

/// The content hash of a stored request, as [`KeymapRequest::content_hash`] defines it (the
/// API stores it with the job at submit; this is for jobs that arrive without one). `None` when
/// the request does not validate: such a job is never served from the cache.
pub fn request_hash(request: &Value) -> Option<String> {
    let body = serde_json::to_vec(request).ok()?;
    KeymapRequest::from_body(&body)
        .ok()
        .map(|r| r.content_hash())
}

/// The cache key, or `None` when hash or commit cannot name one.
pub fn key(request_hash: &str, commit: &str) -> Option<ArtifactKey> {
    if request_hash.is_empty() || commit == "unknown" {
        return None;
    }
    ArtifactKey::new(format!("cache/{request_hash}-{commit}.json")).ok()
}

pub async fn lookup(
    artifacts: &dyn ArtifactStore,
    key: &ArtifactKey,
) -> Result<Option<CacheEntry>, BackendError> {
    match artifacts.get(key).await {
        // An unreadable entry is a miss: it gets rewritten by the next success.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(ArtifactError::NotFound(_)) => Ok(None),
        Err(ArtifactError::Backend(e)) => Err(e),
    }
}

pub async fn store(
    artifacts: &dyn ArtifactStore,
    key: &ArtifactKey,
    entry: &CacheEntry,
) -> Result<(), BackendError> {
    let json = serde_json::to_vec(entry).map_err(|e| BackendError::new("cache", e))?;
    artifacts
        .put(
            key,
            crate::ports::ArtifactBody::Bytes(Bytes::from(json)),
            &ArtifactMeta {
                content_type: "application/json".into(),
                file_name: "cache.json".into(),
            },
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_the_requests_content_hash_whatever_the_key_order() {
        let a: Value = serde_json::from_str(
            r#"{"keyboard":"dz60","keymap":"mine","layout":"LAYOUT","layers":[["KC_A"]]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"layers":[["KC_A"]],"layout":"LAYOUT","keymap":"mine","keyboard":"dz60"}"#,
        )
        .unwrap();
        let c: Value = serde_json::from_str(
            r#"{"keyboard":"dz60","keymap":"mine","layout":"LAYOUT","layers":[["KC_B"]]}"#,
        )
        .unwrap();
        let ha = request_hash(&a).unwrap();
        assert_eq!(Some(&ha), request_hash(&b).as_ref());
        assert_ne!(Some(&ha), request_hash(&c).as_ref());
        assert_eq!(request_hash(&serde_json::json!({"keyboard": "../x"})), None);
    }
}
