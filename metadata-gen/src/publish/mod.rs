//! `metadata-gen publish`: puts a built keyboards tree in a bucket so that no reader ever sees a
//! half-published tree.
//!
//! Layout under `<prefix>/` (an empty prefix means the bucket root):
//!
//! * `releases/<id>/v1/...` — one complete, never-modified tree per release. Objects whose
//!   content did not change are server-side copied from the live release, never re-uploaded.
//! * `manifests/<id>.json` — key → SHA-256, size, Content-Type, ETag of each object of a release.
//! * `current.json` — `{"prefix":"<prefix>/releases/<id>", ...}`, written LAST: the switch.
//!   A single PUT is atomic, so readers that resolve through it see the old or the new tree.
//! * `v1/...` — the stable mirror browsers read (`${KB}/v1/keyboard_list.json`), brought up to
//!   date after the switch by server-side copies: leaves first, the `v1/*.json` indexes after,
//!   deletions last, so every key an index names exists when the index is readable.
//!
//! After the switch, releases other than the new and the previous one (in-flight readers may
//! still be on it) are deleted, including leftovers of interrupted publishes.

pub mod manifest;
pub mod store;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use manifest::{Diff, Entry, Manifest, Pointer, MANIFEST_FORMAT};
use store::{Condition, Headers};
use tree::LocalTree;

/// Objects under `releases/<id>/` never change, but browsers may reach them through a rewrite
/// of a stable URL, so browsers get a short lifetime and shared caches a long one.
pub const RELEASE_CACHE_CONTROL: &str = "public, max-age=300, s-maxage=31536000, immutable";
/// Stable mirror keys change on every publish.
pub const MIRROR_CACHE_CONTROL: &str = "public, max-age=300";
/// The pointer and manifests must be re-read every time.
pub const POINTER_CACHE_CONTROL: &str = "no-cache";

/// Default number of S3 requests in flight.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// Command-line arguments of `metadata-gen publish`.
#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// A built tree (the directory that contains `v1/keyboard_list.json`).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Destination bucket.
    #[arg(long, value_name = "B", env = oven::config::KEYBOARDS_BUCKET)]
    pub bucket: String,
    /// Key prefix inside the bucket (none: the bucket root).
    #[arg(long, value_name = "P", default_value = "")]
    pub prefix: String,
    /// Print what would change and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not maintain the stable `<prefix>/v1/...` mirror (when a CDN rewrite serves the
    /// current release instead).
    #[arg(long)]
    pub no_mirror: bool,
    /// S3 requests in flight.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=256))]
    pub concurrency: usize,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("--from {0}: not a built tree (no v1/keyboard_list.json inside)")]
    NotATree(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: file name is not valid UTF-8 or not inside the tree")]
    BadPath(PathBuf),
    #[error("the built tree has a top-level `{0}`, a name reserved for release bookkeeping")]
    ReservedName(String),
    #[error("--prefix {0:?}: must not contain empty, `.` or `..` segments")]
    BadPrefix(String),
    /// `message` is one sentence saying what to check; `detail` the SDK's whole error.
    #[error("S3 {op} {key}: {message}")]
    S3 {
        op: &'static str,
        key: String,
        message: String,
        detail: String,
    },
    #[error(
        "{0} changed while publishing (another publish ran?): nothing was switched, run again"
    )]
    Raced(String),
    #[error(
        "release {release} is incomplete after upload ({missing} objects missing); not switched"
    )]
    Incomplete { release: String, missing: usize },
    #[error("published state {key} is unreadable: {reason}")]
    BadState { key: String, reason: String },
}

/// Where a tree is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
}

impl Target {
    pub fn new(bucket: &str, prefix: &str) -> Result<Self, PublishError> {
        let trimmed = prefix.trim_matches('/');
        if !trimmed.is_empty()
            && trimmed
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(PublishError::BadPrefix(prefix.to_string()));
        }
        Ok(Target {
            bucket: bucket.to_string(),
            prefix: trimmed.to_string(),
        })
    }

    /// The bucket key of `rel` under the prefix.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    pub fn pointer_key(&self) -> String {
        self.key("current.json")
    }

    pub fn release_prefix(&self, id: &str) -> String {
        self.key(&format!("releases/{id}"))
    }

    pub fn manifest_key(&self, id: &str) -> String {
        self.key(&format!("manifests/{id}.json"))
    }
}

/// How to publish.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    pub mirror: bool,
    pub concurrency: usize,
    /// Draw a progress bar (only ever when stderr is a terminal).
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            mirror: true,
            concurrency: DEFAULT_CONCURRENCY,
            progress: false,
        }
    }
}

/// What a publish did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub dry_run: bool,
    pub diff: Diff,
    /// The release now live (`None` on a dry run).
    pub release: Option<String>,
    /// Whether `current.json` was rewritten (false when nothing changed).
    pub switched: bool,
    pub uploaded: usize,
    pub copied: usize,
    pub mirror_updated: usize,
    pub mirror_deleted: usize,
    pub releases_deleted: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.diff;
        if self.dry_run {
            writeln!(f, "dry run: nothing written")?;
            for (sign, keys) in [("+", &d.added), ("~", &d.changed), ("-", &d.removed)] {
                for key in keys {
                    writeln!(f, "{sign} {key}")?;
                }
            }
        }
        writeln!(
            f,
            "{} added, {} changed, {} removed, {} unchanged",
            d.added.len(),
            d.changed.len(),
            d.removed.len(),
            d.unchanged.len()
        )?;
        if self.dry_run {
            return Ok(());
        }
        match (&self.release, self.switched) {
            (Some(r), true) => writeln!(
                f,
                "release {r} is live ({} uploaded, {} copied server-side)",
                self.uploaded, self.copied
            )?,
            (Some(r), false) => writeln!(f, "release {r} is live and up to date")?,
            (None, _) => {}
        }
        writeln!(
            f,
            "mirror: {} updated, {} deleted",
            self.mirror_updated, self.mirror_deleted
        )?;
        writeln!(f, "old releases deleted: {}", self.releases_deleted.len())
    }
}

/// The CLI entry point: AWS configuration from the environment, summary on stdout.
pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    let target = Target::new(&args.bucket, &args.prefix)?;
    let client = store::client_from_env().await;
    let options = Options {
        dry_run: args.dry_run,
        mirror: !args.no_mirror,
        concurrency: args.concurrency,
        progress: true,
    };
    let report = publish(&client, &target, &args.from, &options).await?;
    print!("{report}");
    Ok(())
}

/// Publishes the built tree at `from` to `target`.
pub async fn publish(
    client: &Client,
    target: &Target,
    from: &Path,
    options: &Options,
) -> Result<Report, PublishError> {
    let root = from.to_path_buf();
    let local = tokio::task::spawn_blocking(move || tree::scan(&root))
        .await
        .map_err(|e| PublishError::Io {
            path: from.to_path_buf(),
            source: std::io::Error::other(e),
        })??;

    let (live, pointer_condition) = read_live(client, target).await?;
    let live_manifest = live.as_ref().map(|(_, m)| m);
    let diff = Diff::between(live_manifest, &local);
    let mut report = Report {
        dry_run: options.dry_run,
        diff,
        ..Report::default()
    };
    if options.dry_run {
        return Ok(report);
    }

    let (pointer, manifest) = match live {
        Some((pointer, manifest)) if report.diff.is_empty() => (pointer, manifest),
        live => {
            let (pointer, manifest) = build_release(
                client,
                target,
                &local,
                live.as_ref(),
                pointer_condition,
                options,
                &mut report,
            )
            .await?;
            report.switched = true;
            (pointer, manifest)
        }
    };
    report.release = Some(pointer.release.clone());

    if options.mirror {
        let removed = report.diff.removed.clone();
        sync_mirror(
            client,
            target,
            &pointer,
            &manifest,
            &removed,
            options,
            &mut report,
        )
        .await?;
    }
    report.releases_deleted = collect_garbage(client, target, &pointer).await?;
    Ok(report)
}

/// The live pointer and its manifest, and the condition under which the pointer may be
/// replaced (it must not have changed since it was read). A pointer or manifest that is
/// missing or unreadable counts as no live release: the next publish uploads everything.
async fn read_live(
    client: &Client,
    target: &Target,
) -> Result<(Option<(Pointer, Manifest)>, Condition), PublishError> {
    let key = target.pointer_key();
    let (pointer, condition) = match store::get_json_tagged::<Pointer>(client, &target.bucket, &key)
        .await
    {
        Ok(Some((pointer, etag))) => (pointer, etag.map_or(Condition::Always, Condition::IfMatch)),
        Ok(None) => return Ok((None, Condition::IfAbsent)),
        Err(PublishError::BadState { .. }) => {
            tracing::warn!(%key, "live pointer unreadable; publishing every object");
            return Ok((None, Condition::Always));
        }
        Err(e) => return Err(e),
    };
    match store::get_json::<Manifest>(client, &target.bucket, &pointer.manifest).await {
        Ok(Some(m)) if m.format == MANIFEST_FORMAT => Ok((Some((pointer, m)), condition)),
        Ok(_) | Err(PublishError::BadState { .. }) => {
            tracing::warn!(
                manifest = %pointer.manifest,
                "live manifest missing or unreadable; publishing every object"
            );
            Ok((None, condition))
        }
        Err(e) => Err(e),
    }
}

fn progress_bar(len: usize, message: &'static str, enabled: bool) -> ProgressBar {
    if !enabled || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// Writes every object of a new release, its manifest, then the pointer.
async fn build_release(
    client: &Client,
    target: &Target,
    local: &LocalTree,
    live: Option<&(Pointer, Manifest)>,
    pointer_condition: Condition,
    options: &Options,
    report: &mut Report,
) -> Result<(Pointer, Manifest), PublishError> {
    let id = manifest::release_id(std::time::SystemTime::now(), local);
    let release_prefix = target.release_prefix(&id);

    // Any live object with the same content can be the copy source, not only the same key.
    let mut by_hash: HashMap<&str, String> = HashMap::new();
    if let Some((pointer, m)) = live {
        for (key, e) in &m.files {
            by_hash
                .entry(e.sha256.as_str())
                .or_insert_with(|| format!("{}/{key}", pointer.prefix));
        }
    }

    let bar = progress_bar(local.len(), "release", options.progress);
    let bucket = target.bucket.as_str();
    let jobs = local.iter().map(|(key, file)| {
        let source = by_hash.get(file.sha256.as_str()).cloned();
        let dest = format!("{release_prefix}/{key}");
        let bar = &bar;
        async move {
            let content_type = tree::content_type(key);
            let headers = Headers {
                content_type,
                cache_control: RELEASE_CACHE_CONTROL,
                sha256: &file.sha256,
            };
            let (etag, copied) = match source {
                Some(from) => (
                    store::copy(client, bucket, &from, &dest, headers).await?,
                    true,
                ),
                None => {
                    let body =
                        tokio::fs::read(&file.path)
                            .await
                            .map_err(|source| PublishError::Io {
                                path: file.path.clone(),
                                source,
                            })?;
                    (
                        store::put(client, bucket, &dest, body, headers).await?,
                        false,
                    )
                }
            };
            bar.inc(1);
            let entry = Entry {
                sha256: file.sha256.clone(),
                size: file.size,
                content_type: content_type.to_string(),
                etag,
            };
            Ok::<_, PublishError>((key.clone(), entry, copied))
        }
    });
    let written: Vec<(String, Entry, bool)> = futures::stream::iter(jobs)
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;
    bar.finish_and_clear();

    let mut files = BTreeMap::new();
    for (key, entry, copied) in written {
        if copied {
            report.copied += 1;
        } else {
            report.uploaded += 1;
        }
        files.insert(key, entry);
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        release: id.clone(),
        files,
    };
    // Every write succeeded and S3 reads are strongly consistent; one listing still guards the
    // switch against a key this code failed to write.
    let present: BTreeSet<String> = store::list(client, bucket, &format!("{release_prefix}/"))
        .await?
        .into_iter()
        .filter_map(|o| {
            o.key
                .strip_prefix(&format!("{release_prefix}/"))
                .map(str::to_string)
        })
        .collect();
    let missing = manifest
        .files
        .keys()
        .filter(|k| !present.contains(*k))
        .count();
    if missing > 0 {
        return Err(PublishError::Incomplete {
            release: id,
            missing,
        });
    }
    let manifest_key = target.manifest_key(&id);
    put_json(client, target, &manifest_key, &manifest, Condition::Always).await?;

    let pointer = Pointer {
        prefix: release_prefix,
        release: id,
        manifest: manifest_key,
        previous: live.map(|(p, _)| p.prefix.clone()),
        published_at: oven::time::Millis::now().http_date(),
    };
    // The switch. Everything the pointer names exists before this line runs; the condition
    // makes a publish that raced another one fail instead of silently undoing it.
    put_json(
        client,
        target,
        &target.pointer_key(),
        &pointer,
        pointer_condition,
    )
    .await?;
    Ok((pointer, manifest))
}

async fn put_json<T: serde::Serialize>(
    client: &Client,
    target: &Target,
    key: &str,
    value: &T,
    condition: Condition,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| PublishError::BadState {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    let sha256 = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&body))
    };
    store::put_if(
        client,
        &target.bucket,
        key,
        body,
        Headers {
            content_type: "application/json",
            cache_control: POINTER_CACHE_CONTROL,
            sha256: &sha256,
        },
        condition,
    )
    .await?;
    Ok(())
}

/// Brings `<prefix>/<key>` up to date with the live release: copies objects whose ETag differs
/// (leaves, then indexes), then deletes keys the release does not have. Comparing against a
/// listing rather than the previous manifest repairs a mirror left behind by an interrupted run.
async fn sync_mirror(
    client: &Client,
    target: &Target,
    pointer: &Pointer,
    manifest: &Manifest,
    removed: &[String],
    options: &Options,
    report: &mut Report,
) -> Result<(), PublishError> {
    // Only the tree's own top-level names are the mirror's: other keys in the bucket are left alone.
    let tops: BTreeSet<&str> = manifest
        .files
        .keys()
        .chain(removed)
        .filter_map(|k| k.split('/').next())
        .collect();
    let mut mirrored: HashMap<String, Option<String>> = HashMap::new();
    for top in tops {
        for obj in store::list(client, &target.bucket, &target.key(top)).await? {
            let rel = match target.prefix.is_empty() {
                true => Some(obj.key.as_str()),
                false => obj
                    .key
                    .strip_prefix(target.prefix.as_str())
                    .and_then(|k| k.strip_prefix('/')),
            };
            let Some(rel) = rel else { continue };
            if rel == top || rel.starts_with(&format!("{top}/")) {
                mirrored.insert(rel.to_string(), obj.etag);
            }
        }
    }

    let stale: Vec<(&String, &Entry)> = manifest
        .files
        .iter()
        .filter(|(key, entry)| match (mirrored.get(*key), &entry.etag) {
            (Some(Some(have)), Some(want)) => have != want,
            _ => true,
        })
        .collect();
    let (indexes, leaves): (Vec<_>, Vec<_>) =
        stale.into_iter().partition(|(key, _)| tree::is_index(key));
    let bar = progress_bar(leaves.len() + indexes.len(), "mirror", options.progress);
    for phase in [leaves, indexes] {
        let jobs = phase.into_iter().map(|(key, entry)| {
            let bar = &bar;
            async move {
                store::copy(
                    client,
                    &target.bucket,
                    &format!("{}/{key}", pointer.prefix),
                    &target.key(key),
                    Headers {
                        content_type: &entry.content_type,
                        cache_control: MIRROR_CACHE_CONTROL,
                        sha256: &entry.sha256,
                    },
                )
                .await?;
                bar.inc(1);
                Ok::<_, PublishError>(())
            }
        });
        let done: Vec<()> = futures::stream::iter(jobs)
            .buffer_unordered(options.concurrency.max(1))
            .try_collect()
            .await?;
        report.mirror_updated += done.len();
    }
    bar.finish_and_clear();

    let gone: Vec<String> = mirrored
        .keys()
        .filter(|rel| !manifest.files.contains_key(*rel))
        .map(|rel| target.key(rel))
        .collect();
    store::delete_many(client, &target.bucket, &gone).await?;
    report.mirror_deleted = gone.len();
    Ok(())
}

/// Deletes every release (and its manifest) except the live one and the one it replaced.
async fn collect_garbage(
    client: &Client,
    target: &Target,
    pointer: &Pointer,
) -> Result<Vec<String>, PublishError> {
    let keep_previous = pointer
        .previous
        .as_deref()
        .and_then(|p| p.rsplit('/').next());
    let releases_dir = format!("{}/", target.key("releases"));
    let mut deleted = Vec::new();
    for id in store::list_dirs(client, &target.bucket, &releases_dir).await? {
        if id == pointer.release || Some(id.as_str()) == keep_previous {
            continue;
        }
        let mut keys: Vec<String> = store::list(
            client,
            &target.bucket,
            &format!("{}/", target.release_prefix(&id)),
        )
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
        keys.push(target.manifest_key(&id));
        store::delete_many(client, &target.bucket, &keys).await?;
        deleted.push(id);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keys_with_and_without_prefix() {
        let root = Target::new("b", "").unwrap();
        assert_eq!(root.pointer_key(), "current.json");
        assert_eq!(root.release_prefix("r1"), "releases/r1");
        let p = Target::new("b", "/kb/site/").unwrap();
        assert_eq!(p.pointer_key(), "kb/site/current.json");
        assert_eq!(p.manifest_key("r1"), "kb/site/manifests/r1.json");
        assert!(matches!(
            Target::new("b", "a//b"),
            Err(PublishError::BadPrefix(_))
        ));
        assert!(matches!(
            Target::new("b", "a/../b"),
            Err(PublishError::BadPrefix(_))
        ));
    }
}
