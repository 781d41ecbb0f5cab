//! Fault injection for the worker tests: an artifact store whose backend is down.

use async_trait::async_trait;
use bytes::Bytes;
use oven::ports::*;

/// An artifact store whose backend is down: every call fails.
pub struct DownArtifacts;

fn down() -> BackendError {
    BackendError::new("down", "connection refused")
}

#[async_trait]
impl ArtifactStore for DownArtifacts {
    async fn put(
        &self,
        _: &ArtifactKey,
        _: ArtifactBody,
        _: &ArtifactMeta,
    ) -> Result<(), BackendError> {
        Err(down())
    }
    async fn compose(
        &self,
        _: &ArtifactKey,
        _: Vec<Part>,
        _: &ArtifactMeta,
    ) -> Result<(), ArtifactError> {
        Err(down().into())
    }
    async fn size(&self, _: &ArtifactKey) -> Result<Option<u64>, BackendError> {
        Err(down())
    }
    async fn get(&self, _: &ArtifactKey) -> Result<Bytes, ArtifactError> {
        Err(down().into())
    }
    async fn download(&self, _: &ArtifactKey, _: &ArtifactMeta) -> Result<Download, ArtifactError> {
        Err(down().into())
    }
}
