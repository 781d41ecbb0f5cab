//! Minimal port implementations for the worker tests until the local adapters are merged: the
//! job table applies the real state machine ([`Transition::apply`]) under a mutex, the queue is
//! a list with receipts, artifacts are real files in a temporary directory.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use oven::job::{Job, JobId, Transition};
use oven::ports::*;
use oven::time::Millis;

#[derive(Default)]
pub struct MemStore {
    jobs: Mutex<HashMap<JobId, Job>>,
}

#[async_trait]
impl JobStore for MemStore {
    async fn create(&self, job: &Job) -> Result<(), CreateError> {
        let mut jobs = self.jobs.lock().unwrap();
        if jobs.contains_key(&job.id) {
            return Err(CreateError::Exists(job.id));
        }
        jobs.insert(job.id, job.clone());
        Ok(())
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>, BackendError> {
        Ok(self.jobs.lock().unwrap().get(&id).cloned())
    }
    async fn transition(&self, id: JobId, t: Transition) -> Result<Job, TransitionError> {
        let mut jobs = self.jobs.lock().unwrap();
        let job = jobs.get(&id).ok_or(TransitionError::NotFound(id))?;
        let next = t.apply(job)?;
        jobs.insert(id, next.clone());
        Ok(next)
    }
    async fn expired_leases(&self, before: Millis, limit: usize) -> Result<Vec<Job>, BackendError> {
        let jobs = self.jobs.lock().unwrap();
        let mut v: Vec<Job> = jobs
            .values()
            .filter(|j| {
                j.state == oven::job::JobState::Running && j.lease_until.is_some_and(|l| l < before)
            })
            .cloned()
            .collect();
        v.sort_by_key(|j| j.lease_until);
        v.truncate(limit);
        Ok(v)
    }
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

#[derive(Default)]
pub struct MemQueue {
    inner: Mutex<(
        u64,
        VecDeque<(String, QueueMessage)>,
        HashMap<String, QueueMessage>,
    )>,
    notify: tokio::sync::Notify,
}

#[async_trait]
impl JobQueue for MemQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), BackendError> {
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        let r = g.0.to_string();
        g.1.push_back((r, message.clone()));
        drop(g);
        self.notify.notify_one();
        Ok(())
    }
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            {
                let mut g = self.inner.lock().unwrap();
                let mut out = Vec::new();
                while out.len() < max {
                    let Some((r, m)) = g.1.pop_front() else { break };
                    g.2.insert(r.clone(), m.clone());
                    out.push(Delivery {
                        message: m,
                        receipt: r,
                        receive_count: 1,
                    });
                }
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                return Ok(vec![]);
            }
        }
    }
    async fn ack(&self, receipt: &str) -> Result<(), BackendError> {
        self.inner.lock().unwrap().2.remove(receipt);
        Ok(())
    }
    async fn waiting(&self) -> Result<u64, BackendError> {
        Ok(self.inner.lock().unwrap().1.len() as u64)
    }
}

pub struct DirArtifacts {
    pub root: PathBuf,
}

impl DirArtifacts {
    pub fn path(&self, key: &ArtifactKey) -> PathBuf {
        self.root.join(key.as_str())
    }
}

fn be(e: std::io::Error) -> BackendError {
    BackendError::new("dir", e)
}

#[async_trait]
impl ArtifactStore for DirArtifacts {
    async fn put(
        &self,
        key: &ArtifactKey,
        body: ArtifactBody,
        _meta: &ArtifactMeta,
    ) -> Result<(), BackendError> {
        let p = self.path(key);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(be)?;
        match body {
            ArtifactBody::Bytes(b) => std::fs::write(&p, &b).map_err(be),
            ArtifactBody::File(f) => std::fs::copy(&f, &p).map(|_| ()).map_err(be),
        }
    }
    async fn compose(
        &self,
        key: &ArtifactKey,
        parts: Vec<Part>,
        _meta: &ArtifactMeta,
    ) -> Result<(), ArtifactError> {
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Bytes(b) => out.extend_from_slice(&b),
                Part::Copy { from, range } => {
                    let data = std::fs::read(self.path(&from))
                        .map_err(|_| ArtifactError::NotFound(from.as_str().into()))?;
                    out.extend_from_slice(&data[range.start as usize..range.end as usize]);
                }
            }
        }
        let p = self.path(key);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(be)?;
        std::fs::write(&p, out).map_err(be)?;
        Ok(())
    }
    async fn size(&self, key: &ArtifactKey) -> Result<Option<u64>, BackendError> {
        Ok(std::fs::metadata(self.path(key)).ok().map(|m| m.len()))
    }
    async fn get(&self, key: &ArtifactKey) -> Result<Bytes, ArtifactError> {
        std::fs::read(self.path(key))
            .map(Bytes::from)
            .map_err(|_| ArtifactError::NotFound(key.as_str().into()))
    }
    async fn download(
        &self,
        key: &ArtifactKey,
        meta: &ArtifactMeta,
    ) -> Result<Download, ArtifactError> {
        let p = self.path(key);
        let len = std::fs::metadata(&p)
            .map_err(|_| ArtifactError::NotFound(key.as_str().into()))?
            .len();
        Ok(Download::File {
            path: p,
            meta: meta.clone(),
            len,
        })
    }
}

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
