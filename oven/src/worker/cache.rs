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
use sha2::{Digest, Sha256};

use crate::job::{JobId, JobResult};
use crate::ports::{ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError};

/// A cached successful result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheEntry {
    pub job_id: JobId,
    pub result: JobResult,
    /// Artifacts of `job_id`: file name and content type, to copy for a new job.
    pub artifacts: Vec<(String, String)>,
}

/// sha256 of the request's canonical JSON (object keys sorted, no spaces), hex. Used only when
/// a job arrives without `request_hash` (the API computes it at submit).
pub fn request_hash(request: &Value) -> String {
    let canonical = serde_json::to_vec(&sorted(request)).unwrap_or_default();
    hex::encode(Sha256::digest(&canonical))
}

/// `v` with every object's keys in sorted order. Needed: with serde_json's `preserve_order`
/// (which another crate of the workspace enables, and features are unified) a map keeps the
/// order it was parsed in.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
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
    fn hash_ignores_key_order_and_whitespace() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":[1,{"y":1,"x":2}]}"#).unwrap();
        let b: Value =
            serde_json::from_str("{ \"a\": [1, {\"x\": 2, \"y\": 1}],\n \"b\": 1 }").unwrap();
        let c: Value = serde_json::from_str(r#"{"b":2,"a":[1,{"y":1,"x":2}]}"#).unwrap();
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_ne!(request_hash(&a), request_hash(&c));
        assert_eq!(request_hash(&a).len(), 64);
    }
}
