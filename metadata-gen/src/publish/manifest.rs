//! The published state: the pointer object (`<prefix>/current.json`) that names the live
//! release, the manifest that lists each release's objects by content hash, and the diff of a
//! built tree against the live release.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::tree::LocalTree;

/// Version of the manifest format, so a future change can be told apart.
pub const MANIFEST_FORMAT: u32 = 1;

/// `<prefix>/current.json`. Readers use only `prefix`: the live tree is `<prefix>/v1/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// Key prefix of the live release, e.g. `keyboards/releases/20261121T113636Z-ab12cd34ef56`
    /// (no trailing slash).
    pub prefix: String,
    /// The release id (last segment of `prefix`).
    pub release: String,
    /// Key of the release's manifest.
    pub manifest: String,
    /// The release this one replaced; kept so readers that read the old pointer can finish.
    #[serde(default)]
    pub previous: Option<String>,
    /// RFC 1123 time of the switch.
    pub published_at: String,
}

/// One object of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    /// The ETag S3 returned when the object was written; the stable mirror compares it.
    #[serde(default)]
    pub etag: Option<String>,
}

/// `<prefix>/manifests/<release>.json`: every object of a release, by key relative to the
/// release root (`v1/keyboard_list.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub release: String,
    pub files: BTreeMap<String, Entry>,
}

/// What a built tree changes relative to the live release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Compares by content hash and Content-Type (a new type needs a new object too).
    pub fn between(live: Option<&Manifest>, local: &LocalTree) -> Diff {
        let empty = BTreeMap::new();
        let live_files = live.map_or(&empty, |m| &m.files);
        let mut diff = Diff::default();
        for (key, file) in local {
            match live_files.get(key) {
                None => diff.added.push(key.clone()),
                Some(e)
                    if e.sha256 == file.sha256
                        && e.content_type == super::tree::content_type(key) =>
                {
                    diff.unchanged.push(key.clone())
                }
                Some(_) => diff.changed.push(key.clone()),
            }
        }
        diff.removed = live_files
            .keys()
            .filter(|k| !local.contains_key(*k))
            .cloned()
            .collect();
        diff
    }
}

/// Release id: UTC time (sortable, readable) plus the start of the tree's hash.
pub fn release_id(now: std::time::SystemTime, local: &LocalTree) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (key, file) in local {
        h.update(key.as_bytes());
        h.update([0]);
        h.update(file.sha256.as_bytes());
        h.update([0]);
    }
    let tree_hash = hex::encode(h.finalize());
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{}-{}", utc_stamp(secs), &tree_hash[..12])
}

/// `YYYYMMDDTHHMMSSZ` for Unix seconds (civil-from-days, proleptic Gregorian).
fn utc_stamp(secs: u64) -> String {
    let (year, month, day, hh, mm, ss) = crate::civil::utc(secs as i64);
    format!("{year:04}{month:02}{day:02}T{hh:02}{mm:02}{ss:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publish::tree::LocalFile;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2022-04-03 18:04:13 UTC.
        assert_eq!(utc_stamp(1_649_009_053), "20220403T180413Z");
        // A leap day.
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }

    fn local(files: &[(&str, &str)]) -> LocalTree {
        files
            .iter()
            .map(|(k, h)| {
                (
                    k.to_string(),
                    LocalFile {
                        path: k.into(),
                        sha256: h.to_string(),
                        size: 1,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn diff_sorts_keys_into_added_changed_removed() {
        let live = Manifest {
            format: MANIFEST_FORMAT,
            release: "r".into(),
            files: [("v1/a.json", "1"), ("v1/b.json", "2"), ("v1/c.json", "3")]
                .iter()
                .map(|(k, h)| {
                    (
                        k.to_string(),
                        Entry {
                            sha256: h.to_string(),
                            size: 1,
                            content_type: "application/json".into(),
                            etag: None,
                        },
                    )
                })
                .collect(),
        };
        let tree = local(&[("v1/a.json", "1"), ("v1/b.json", "9"), ("v1/d.json", "4")]);
        let diff = Diff::between(Some(&live), &tree);
        assert_eq!(diff.unchanged, ["v1/a.json"]);
        assert_eq!(diff.changed, ["v1/b.json"]);
        assert_eq!(diff.added, ["v1/d.json"]);
        assert_eq!(diff.removed, ["v1/c.json"]);
        assert!(!diff.is_empty());
        assert!(Diff::between(
            Some(&live),
            &local(&[("v1/a.json", "1"), ("v1/b.json", "2"), ("v1/c.json", "3")])
        )
        .is_empty());
    }

    #[test]
    fn release_id_depends_on_content() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_649_009_053);
        let a = release_id(t, &local(&[("v1/a.json", "1")]));
        let b = release_id(t, &local(&[("v1/a.json", "2")]));
        assert!(a.starts_with("20220403T180413Z-"));
        assert_ne!(a, b);
    }
}
