//! Artifacts on S3.
//!
//! Objects carry their `Content-Type` and `Content-Disposition: attachment; filename="..."`.
//! Downloads are presigned GETs ([`PRESIGN_EXPIRY`]) that also override the response headers,
//! so the browser saves the right name whatever the object holds. [`ArtifactStore::compose`]
//! is a multipart upload whose large [`Part::Copy`] ranges are `UploadPartCopy`s inside S3: a
//! big base source archive is never downloaded or re-uploaded by the worker.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::errors::Resource;
use crate::ports::{
    ArtifactBody, ArtifactError, ArtifactKey, ArtifactMeta, ArtifactStore, BackendError, Download,
    Part,
};

const BACKEND: &str = "s3";
/// S3's smallest multipart part (all but the last).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// How long a download link works.
pub const PRESIGN_EXPIRY: Duration = Duration::from_secs(2 * 3600);

#[derive(Clone, Debug)]
pub struct S3Artifacts {
    client: Client,
    bucket: String,
}

fn backend(e: impl std::fmt::Display) -> BackendError {
    BackendError::new(BACKEND, e)
}

pub use crate::keymap::names::content_disposition;

/// One part of a multipart upload, after planning.
#[derive(Debug)]
enum Planned {
    Copy {
        from: ArtifactKey,
        range: Range<u64>,
    },
    Data(Vec<Part>),
}

/// Groups `parts` into multipart parts: copy ranges of at least [`MIN_PART`] stay copies; smaller
/// pieces are merged into data parts (read and uploaded), each at least [`MIN_PART`] except the
/// last. A data part that would be too small before a large copy borrows the copy's head.
fn plan(parts: Vec<Part>) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut pending: Vec<Part> = Vec::new();
    let mut pending_len = 0u64;
    for part in parts {
        match part {
            Part::Bytes(b) => {
                if !b.is_empty() {
                    pending_len += b.len() as u64;
                    pending.push(Part::Bytes(b));
                }
            }
            Part::Copy { from, range } => {
                let len = range.end.saturating_sub(range.start);
                if len == 0 {
                    continue;
                }
                let need = if pending_len == 0 || pending_len >= MIN_PART {
                    0
                } else {
                    MIN_PART - pending_len
                };
                if len >= need + MIN_PART {
                    let split = range.start + need;
                    if need > 0 {
                        pending.push(Part::Copy {
                            from: from.clone(),
                            range: range.start..split,
                        });
                    }
                    if !pending.is_empty() {
                        out.push(Planned::Data(std::mem::take(&mut pending)));
                    }
                    pending_len = 0;
                    out.push(Planned::Copy {
                        from,
                        range: split..range.end,
                    });
                } else {
                    pending_len += len;
                    pending.push(Part::Copy { from, range });
                }
            }
        }
    }
    if !pending.is_empty() {
        out.push(Planned::Data(pending));
    }
    out
}

impl S3Artifacts {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Artifacts {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether the bucket exists and these credentials reach it (`HeadBucket`), so a wrong
    /// name shows at start-up rather than when a job stores its firmware. Errors: one sentence
    /// naming the bucket and `var`, the variable it came from (see [`super::errors`]).
    pub async fn ping(&self, var: &'static str) -> Result<(), BackendError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                let bucket = Resource::BucketOf {
                    name: &self.bucket,
                    var,
                };
                super::resource_error(bucket, e)
            })
    }

    /// Bytes `range` of `key`.
    async fn read_range(
        &self,
        key: &ArtifactKey,
        range: &Range<u64>,
    ) -> Result<Bytes, ArtifactError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| get_error(&self.bucket, key, e))?;
        let data = out.body.collect().await.map_err(backend)?.into_bytes();
        if data.len() as u64 != range.end - range.start {
            return Err(backend(format!(
                "range {}..{} of {} is outside the object",
                range.start,
                range.end,
                key.as_str()
            ))
            .into());
        }
        Ok(data)
    }

    /// The bytes of a data part: its byte pieces and small copied ranges, in order.
    async fn gather(&self, parts: Vec<Part>) -> Result<Vec<u8>, ArtifactError> {
        let mut buf = Vec::new();
        for p in parts {
            match p {
                Part::Bytes(b) => buf.extend_from_slice(&b),
                Part::Copy { from, range } => {
                    buf.extend_from_slice(&self.read_range(&from, &range).await?)
                }
            }
        }
        Ok(buf)
    }

    async fn put_bytes(
        &self,
        key: &ArtifactKey,
        body: ByteStream,
        meta: &ArtifactMeta,
    ) -> Result<(), BackendError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(&meta.content_type)
            .content_disposition(content_disposition(&meta.file_name))
            .body(body)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| super::resource_error(Resource::Bucket(&self.bucket), e))
    }

    async fn upload_parts(
        &self,
        key: &ArtifactKey,
        upload_id: &str,
        planned: Vec<Planned>,
    ) -> Result<Vec<CompletedPart>, ArtifactError> {
        let mut done = Vec::with_capacity(planned.len());
        for (i, p) in planned.into_iter().enumerate() {
            let number = i as i32 + 1;
            let etag = match p {
                Planned::Copy { from, range } => {
                    let out = self
                        .client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(key.as_str())
                        .upload_id(upload_id)
                        .part_number(number)
                        // Keys are [A-Za-z0-9._/-] only: nothing to URL-encode.
                        .copy_source(format!("{}/{}", self.bucket, from.as_str()))
                        .copy_source_range(format!("bytes={}-{}", range.start, range.end - 1))
                        .send()
                        .await
                        .map_err(|e| {
                            if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) {
                                ArtifactError::NotFound(from.as_str().to_string())
                            } else {
                                super::resource_error(Resource::Bucket(&self.bucket), e).into()
                            }
                        })?;
                    out.copy_part_result()
                        .and_then(|r| r.e_tag())
                        .map(str::to_string)
                }
                Planned::Data(parts) => {
                    let data = self.gather(parts).await?;
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key.as_str())
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(data))
                        .send()
                        .await
                        .map_err(|e| super::resource_error(Resource::Bucket(&self.bucket), e))?;
                    out.e_tag().map(str::to_string)
                }
            };
            let etag = etag
                .ok_or_else(|| backend(format!("part {number} of {} has no ETag", key.as_str())))?;
            done.push(
                CompletedPart::builder()
                    .part_number(number)
                    .e_tag(etag)
                    .build(),
            );
        }
        Ok(done)
    }
}

fn get_error<R: std::fmt::Debug + 'static>(
    bucket: &str,
    key: &ArtifactKey,
    e: aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError, R>,
) -> ArtifactError {
    if e.as_service_error().is_some_and(|e| e.is_no_such_key()) {
        ArtifactError::NotFound(key.as_str().to_string())
    } else {
        super::resource_error(Resource::Bucket(bucket), e).into()
    }
}

#[async_trait]
impl ArtifactStore for S3Artifacts {
    async fn put(
        &self,
        key: &ArtifactKey,
        body: ArtifactBody,
        meta: &ArtifactMeta,
    ) -> Result<(), BackendError> {
        let stream = match body {
            ArtifactBody::Bytes(b) => ByteStream::from(b),
            ArtifactBody::File(path) => ByteStream::from_path(&path)
                .await
                .map_err(|e| backend(format!("{}: {e}", path.display())))?,
        };
        self.put_bytes(key, stream, meta).await
    }

    async fn compose(
        &self,
        key: &ArtifactKey,
        parts: Vec<Part>,
        meta: &ArtifactMeta,
    ) -> Result<(), ArtifactError> {
        let planned = plan(parts);
        if !planned.iter().any(|p| matches!(p, Planned::Copy { .. })) {
            // Small enough to assemble here: one PutObject.
            let mut data = Vec::new();
            for p in planned {
                if let Planned::Data(parts) = p {
                    data.extend(self.gather(parts).await?);
                }
            }
            return Ok(self.put_bytes(key, ByteStream::from(data), meta).await?);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(&meta.content_type)
            .content_disposition(content_disposition(&meta.file_name))
            .send()
            .await
            .map_err(|e| super::resource_error(Resource::Bucket(&self.bucket), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| backend("CreateMultipartUpload returned no upload id"))?
            .to_string();
        let finished = match self.upload_parts(key, &upload_id, planned).await {
            Ok(parts) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map(|_| ())
                .map_err(|e| super::resource_error(Resource::Bucket(&self.bucket), e).into()),
            Err(e) => Err(e),
        };
        if finished.is_err() {
            // Parts of an abandoned upload are billed until aborted.
            let abort = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = abort {
                tracing::warn!(key = key.as_str(), error = %aws_sdk_s3::error::DisplayErrorContext(e), "abort multipart upload failed");
            }
        }
        finished
    }

    async fn size(&self, key: &ArtifactKey) -> Result<Option<u64>, BackendError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) => Err(super::resource_error(Resource::Bucket(&self.bucket), e)),
        }
    }

    async fn get(&self, key: &ArtifactKey) -> Result<Bytes, ArtifactError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| get_error(&self.bucket, key, e))?;
        Ok(out.body.collect().await.map_err(backend)?.into_bytes())
    }

    async fn download(
        &self,
        key: &ArtifactKey,
        meta: &ArtifactMeta,
    ) -> Result<Download, ArtifactError> {
        // A link to a missing object would be an S3 error page in the browser: answer 404 here.
        if self.size(key).await?.is_none() {
            return Err(ArtifactError::NotFound(key.as_str().to_string()));
        }
        let presigning = PresigningConfig::expires_in(PRESIGN_EXPIRY).map_err(backend)?;
        let req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .response_content_type(&meta.content_type)
            .response_content_disposition(content_disposition(&meta.file_name))
            .presigned(presigning)
            .await
            .map_err(|e| super::resource_error(Resource::Bucket(&self.bucket), e))?;
        Ok(Download::Redirect(req.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> ArtifactKey {
        ArtifactKey::new(k).unwrap()
    }

    fn total(p: &[Part]) -> u64 {
        p.iter()
            .map(|p| match p {
                Part::Bytes(b) => b.len() as u64,
                Part::Copy { range, .. } => range.end - range.start,
            })
            .sum()
    }

    #[test]
    fn plan_keeps_large_copies_and_merges_small_pieces() {
        let big = MIN_PART * 2;
        let planned = plan(vec![
            Part::Copy {
                from: key("base"),
                range: 0..big,
            },
            Part::Bytes(Bytes::from_static(b"x")),
            Part::Copy {
                from: key("base"),
                range: 10..20,
            },
            Part::Bytes(Bytes::from_static(b"y")),
        ]);
        assert_eq!(planned.len(), 2);
        assert!(
            matches!(&planned[0], Planned::Copy { from, range } if *from == key("base") && *range == (0..big))
        );
        match &planned[1] {
            Planned::Data(p) => assert_eq!(total(p), 12),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plan_fills_a_small_leading_part_from_the_next_copy() {
        let planned = plan(vec![
            Part::Bytes(Bytes::from_static(b"head")),
            Part::Copy {
                from: key("base"),
                range: 100..100 + 3 * MIN_PART,
            },
        ]);
        assert_eq!(planned.len(), 2);
        match &planned[0] {
            Planned::Data(p) => assert_eq!(total(p), MIN_PART),
            other => panic!("{other:?}"),
        }
        let want = 100 + MIN_PART - 4..100 + 3 * MIN_PART;
        assert!(
            matches!(&planned[1], Planned::Copy { range, .. } if *range == want),
            "{planned:?}"
        );
        // A copy too small to lend and still be a part is read whole.
        let planned = plan(vec![
            Part::Bytes(Bytes::from_static(b"head")),
            Part::Copy {
                from: key("base"),
                range: 0..MIN_PART + 1,
            },
        ]);
        assert!(matches!(&planned[..], [Planned::Data(p)] if total(p) == MIN_PART + 5));
    }

    #[test]
    fn every_part_but_the_last_is_big_enough() {
        let m = MIN_PART;
        let cases: Vec<Vec<u64>> = vec![
            vec![1, m, 1, 2 * m, m - 1, m + 1, 3, 6 * m],
            vec![m, m, m, 1],
            vec![2 * m + 7, 2 * m + 7, 5],
        ];
        for lens in cases {
            let parts: Vec<Part> = lens
                .iter()
                .enumerate()
                .map(|(i, &l)| {
                    if i % 3 == 2 {
                        Part::Bytes(Bytes::from(vec![0u8; l.min(64) as usize]))
                    } else {
                        Part::Copy {
                            from: key("b"),
                            range: 0..l,
                        }
                    }
                })
                .collect();
            let want = total(&parts);
            let planned = plan(parts);
            let sizes: Vec<u64> = planned
                .iter()
                .map(|p| match p {
                    Planned::Copy { range, .. } => range.end - range.start,
                    Planned::Data(p) => total(p),
                })
                .collect();
            assert_eq!(sizes.iter().sum::<u64>(), want, "{sizes:?}");
            for s in &sizes[..sizes.len() - 1] {
                assert!(*s >= MIN_PART, "{sizes:?}");
            }
        }
    }
}
