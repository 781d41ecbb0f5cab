//! `oven verify`: checks that a firmware an Oven handed out is the one its source builds.
//!
//! Given a job (its id and the Oven that built it, or a URL of the job), it reads the job's
//! status document, keymap and firmware through the public API (`GET /v1/compile/{id}`,
//! `/keymap`, `/download`; redirects followed, as the AWS deployment answers downloads with a
//! presigned S3 URL), checks that the served files have the hashes the result records,
//! rebuilds the keymap on this machine's qmk_firmware tree with the same worker code (a
//! throw-away local job store, and a work directory of its own unless one is given), and
//! compares the firmware's SHA-256 with the recorded one. The local tree must be at the job's
//! firmware commit: a build of another commit is not expected to match, so it is refused.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::job::{Job, JobId, JobResult};
use crate::keymap::KeymapRequest;
use crate::ports::{ArtifactKey, JobStore, QueueMessage};
use crate::worker::{source::sha256_hex, tree, Worker, WorkerConfig};

/// Why a verification could not be carried out (a mismatch is a [`Report`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0:?} is neither a job id nor a URL of a job (…/v1/compile/<id>)")]
    Target(String),
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("the job is {0}: only a finished, successful job has a firmware to verify")]
    NotFinished(String),
    #[error("the job's result has no {0}: it was built by an Oven that does not record it")]
    Missing(&'static str),
    #[error("the served {what} does not match the recorded sha256 (recorded {recorded}, served {served})")]
    Served {
        what: &'static str,
        recorded: String,
        served: String,
    },
    #[error("the job's keymap is not a valid request: {0}")]
    Keymap(String),
    #[error("no qmk_firmware tree here (--qmk-home, QMK_HOME or ~/qmk_firmware)")]
    NoTree,
    #[error(
        "the job was built at firmware commit {job}, this tree is at {local}: \
         check that commit out (git -C {home} checkout {job} && git -C {home} submodule update \
         --init --recursive) and run verify again"
    )]
    Commit {
        job: String,
        local: String,
        home: String,
    },
    #[error("the rebuild could not run: {0}")]
    Rebuild(String),
}

/// Which job, on which Oven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Oven's base URL, without a trailing slash (`http://127.0.0.1:8080`).
    pub server: String,
    pub id: JobId,
}

/// `input` as a job: a bare job id (on `default_server`) or any URL containing
/// `/v1/compile/<id>` (the status URL or one of its downloads).
///
/// Errors: [`VerifyError::Target`] for anything else.
pub fn parse_target(input: &str, default_server: &str) -> Result<Target, VerifyError> {
    let bad = || VerifyError::Target(input.to_string());
    let input = input.trim();
    if let Ok(id) = input.parse::<JobId>() {
        return Ok(Target {
            server: default_server.trim_end_matches('/').to_string(),
            id,
        });
    }
    if !(input.starts_with("http://") || input.starts_with("https://")) {
        return Err(bad());
    }
    let at = input.find("/v1/compile/").ok_or_else(bad)?;
    let rest = &input[at + "/v1/compile/".len()..];
    let id = rest
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .parse::<JobId>()
        .map_err(|_| bad())?;
    Ok(Target {
        server: input[..at].to_string(),
        id,
    })
}

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The tree to rebuild in (`--qmk-home`); else QMK_HOME, `qmk config`, ~/qmk_firmware.
    pub qmk_home: Option<PathBuf>,
    /// A work directory to keep (warm builds across runs); else a temporary one.
    pub work_dir: Option<PathBuf>,
    /// The build command; else `OVEN_QMK_BIN` or `qmk` (see [`WorkerConfig::from_env`]).
    pub qmk: Option<PathBuf>,
}

/// What verification found.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub target: Target,
    pub keyboard: String,
    pub keymap: String,
    pub firmware_commit: String,
    pub build_date: Option<String>,
    /// The sha256 the job's result records, which the served firmware also has.
    pub recorded_sha256: String,
    /// The sha256 of the firmware rebuilt here.
    pub rebuilt_sha256: String,
    pub rebuilt_bytes: u64,
    pub rebuild_seconds: f64,
    /// Toolchains of the job and of this machine that differ (name, job's, ours): the first
    /// suspect when the hashes differ.
    pub toolchain_differences: Vec<(String, String, String)>,
    /// The rebuilt firmware, for a look at the bytes when they differ.
    pub rebuilt_path: Option<PathBuf>,
}

impl Report {
    pub fn matches(&self) -> bool {
        self.recorded_sha256 == self.rebuilt_sha256
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "job       {} on {}", self.target.id, self.target.server)?;
        writeln!(f, "keymap    {}:{}", self.keyboard, self.keymap)?;
        writeln!(
            f,
            "firmware  commit {}, build date {}",
            self.firmware_commit,
            self.build_date.as_deref().unwrap_or("(not recorded)")
        )?;
        writeln!(
            f,
            "recorded  sha256 {} (the served firmware has it)",
            self.recorded_sha256
        )?;
        writeln!(
            f,
            "rebuilt   sha256 {} ({} bytes, {:.1} s)",
            self.rebuilt_sha256, self.rebuilt_bytes, self.rebuild_seconds
        )?;
        for (name, theirs, ours) in &self.toolchain_differences {
            writeln!(f, "toolchain {name}: job {theirs}, here {ours}")?;
        }
        if self.matches() {
            write!(f, "MATCH: the firmware is what its source builds")
        } else {
            write!(f, "MISMATCH: the firmware differs from the rebuild")?;
            if let Some(p) = &self.rebuilt_path {
                write!(f, " (rebuilt firmware kept at {})", p.display())?;
            }
            Ok(())
        }
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<Bytes>,
>;

fn client() -> Result<Client, VerifyError> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| VerifyError::Http {
            url: "(TLS setup)".into(),
            reason: e.to_string(),
        })?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

/// The body of `GET url` (2xx), following up to five redirects.
async fn get(client: &Client, url: &str) -> Result<Bytes, VerifyError> {
    let mut url = url.to_string();
    for _ in 0..6 {
        let current = url.clone();
        let err = |reason: String| VerifyError::Http {
            url: current.clone(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e| err(format!("bad URL: {e}")))?;
        let req = http::Request::get(uri.clone())
            .header(http::header::USER_AGENT, "oven-verify")
            .body(http_body_util::Empty::new())
            .map_err(|e| err(e.to_string()))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
            .await
            .map_err(|_| err("no answer in 60 s".into()))?
            .map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        if status.is_redirection() {
            let loc = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| err(format!("{status} without a Location")))?;
            url = if loc.starts_with("http://") || loc.starts_with("https://") {
                loc.to_string()
            } else {
                let (scheme, auth) = (
                    uri.scheme_str().unwrap_or("http"),
                    uri.authority().map_or("", |a| a.as_str()),
                );
                format!("{scheme}://{auth}{loc}")
            };
            continue;
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| err(e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
            return Err(err(format!("{status}: {text}")));
        }
        return Ok(body);
    }
    Err(VerifyError::Http {
        url,
        reason: "too many redirects".into(),
    })
}

/// Verifies `target` (see the module docs). `Ok` carries the comparison, matching or not.
///
/// Errors: [`VerifyError`]: the job cannot be read, is not a finished success, lacks the hashes,
/// serves files that do not match them, or this machine cannot rebuild it at its commit.
pub async fn verify(target: &Target, options: &Options) -> Result<Report, VerifyError> {
    let client = client()?;
    let base = format!("{}/v1/compile/{}", target.server, target.id);
    let status: Value =
        serde_json::from_slice(&get(&client, &base).await?).map_err(|e| VerifyError::Http {
            url: base.clone(),
            reason: format!("not a status document: {e}"),
        })?;
    let state = status["status"].as_str().unwrap_or("unknown").to_string();
    if state != "finished" {
        return Err(VerifyError::NotFinished(state));
    }
    let result: JobResult =
        serde_json::from_value(status["result"].clone()).map_err(|e| VerifyError::Http {
            url: base.clone(),
            reason: format!("not a job result: {e}"),
        })?;
    if result.returncode != 0 {
        return Err(VerifyError::NotFinished(format!(
            "finished with returncode {}",
            result.returncode
        )));
    }
    let recorded = result
        .firmware_sha256
        .clone()
        .ok_or(VerifyError::Missing("firmware_sha256"))?;
    let commit = result
        .firmware_commit
        .clone()
        .ok_or(VerifyError::Missing("firmware_commit"))?;

    // What the Oven serves must be what it recorded.
    let keymap = get(&client, &format!("{base}/keymap")).await?;
    if let Some(k) = &result.keymap_sha256 {
        let served = sha256_hex(&keymap);
        if &served != k {
            return Err(VerifyError::Served {
                what: "keymap",
                recorded: k.clone(),
                served,
            });
        }
    }
    let firmware = get(&client, &format!("{base}/download")).await?;
    let served = sha256_hex(&firmware);
    if served != recorded {
        return Err(VerifyError::Served {
            what: "firmware",
            recorded,
            served,
        });
    }

    // The keymap is about to reach this machine's compiler: the API's own validation first.
    let request =
        KeymapRequest::from_body(&keymap).map_err(|e| VerifyError::Keymap(e.to_string()))?;
    let (request, hash) = request.into_parts();

    let mut cfg = WorkerConfig::from_env(options.qmk_home.as_deref());
    let home = cfg.qmk_home.clone().ok_or(VerifyError::NoTree)?;
    let local = tree::firmware_commit(&home);
    if local != commit {
        return Err(VerifyError::Commit {
            job: commit,
            local,
            home: home.display().to_string(),
        });
    }
    let temp = tempfile::tempdir().map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let work = options
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    cfg.work_root = work.join("work");
    if let Some(q) = &options.qmk {
        cfg.qmk = q.clone();
    }
    cfg.source_archives = false;
    let storage = crate::adapters::local::LocalStorage::open(&work.join("data"))
        .map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let db = Arc::new(storage.db.clone());
    let worker = Worker::new(
        db.clone(),
        db.clone(),
        Arc::new(storage.artifacts.clone()),
        cfg,
    );
    let id = JobId::new();
    let job = Job::queued(
        id,
        request,
        hash,
        crate::time::Millis::now(),
        Duration::from_secs(3600),
    );
    db.create(&job)
        .await
        .map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let started = std::time::Instant::now();
    worker
        .process(&QueueMessage { job_id: id })
        .await
        .map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let rebuild_seconds = started.elapsed().as_secs_f64();
    let done = db
        .get(id)
        .await
        .map_err(|e| VerifyError::Rebuild(e.to_string()))?
        .and_then(|j| j.result)
        .ok_or_else(|| VerifyError::Rebuild("the rebuild left no result".into()))?;
    if done.returncode != 0 {
        let tail: String = done
            .output
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        return Err(VerifyError::Rebuild(format!(
            "the build failed here (returncode {}):\n{tail}",
            done.returncode
        )));
    }
    let key = ArtifactKey::for_job(id, &done.firmware_filename)
        .map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let path = storage.artifacts.path(&key);
    let rebuilt = std::fs::read(&path).map_err(|e| VerifyError::Rebuild(e.to_string()))?;
    let theirs = result.toolchains.clone().unwrap_or_default();
    let ours = done.toolchains.clone().unwrap_or_default();
    let toolchain_differences = theirs
        .iter()
        .filter_map(|(k, v)| {
            let o = ours.get(k).cloned().unwrap_or_else(|| "(missing)".into());
            (o != *v).then(|| (k.clone(), v.clone(), o))
        })
        .collect();
    let mut report = Report {
        target: target.clone(),
        keyboard: result.keyboard.clone(),
        keymap: result.keymap.clone(),
        firmware_commit: commit,
        build_date: result.build_date.clone(),
        recorded_sha256: recorded,
        rebuilt_sha256: sha256_hex(&rebuilt),
        rebuilt_bytes: rebuilt.len() as u64,
        rebuild_seconds,
        toolchain_differences,
        rebuilt_path: None,
    };
    if !report.matches() {
        // Kept for a look at the bytes: beside the work directory, or in the current one.
        let keep = options
            .work_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."))
            .join(format!("rebuilt-{}", done.firmware_filename));
        if std::fs::write(&keep, &rebuilt).is_ok() {
            report.rebuilt_path = Some(keep);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_ids_or_job_urls() {
        let id = JobId::new();
        let t = parse_target(&id.to_string(), "http://127.0.0.1:8080/").unwrap();
        assert_eq!((t.server.as_str(), t.id), ("http://127.0.0.1:8080", id));
        for url in [
            format!("https://oven.example/prod/v1/compile/{id}"),
            format!("https://oven.example/prod/v1/compile/{id}/download"),
            format!("https://oven.example/prod/v1/compile/{id}?x=1"),
        ] {
            let t = parse_target(&url, "unused").unwrap();
            assert_eq!(
                (t.server.as_str(), t.id),
                ("https://oven.example/prod", id),
                "{url}"
            );
        }
        for bad in [
            "nope",
            "ftp://x/v1/compile/1",
            "https://oven.example/v1/compile/not-an-id",
            "https://oven.example/v1/jobs",
        ] {
            assert!(
                matches!(parse_target(bad, "http://x"), Err(VerifyError::Target(_))),
                "{bad}"
            );
        }
    }
}
