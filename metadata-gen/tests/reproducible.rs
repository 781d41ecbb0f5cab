//! The same checkout builds the same bytes when the `last_updated` stamps are pinned
//! (`--last-updated`, or `SOURCE_DATE_EPOCH`), so `publish` of a rebuild uploads nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every file under `root`, by its path below it, with its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    common::files(root)
        .into_iter()
        .map(|rel| {
            let bytes = std::fs::read(root.join(&rel)).unwrap();
            (rel, bytes)
        })
        .collect()
}

/// Runs `metadata-gen build` of the corpus into a new folder, with `SOURCE_DATE_EPOCH` set to
/// `epoch` (or unset), and returns the tree it wrote.
fn build(epoch: Option<&str>, extra: &[&str]) -> BTreeMap<PathBuf, Vec<u8>> {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metadata-gen"));
    cmd.arg("build")
        .arg("--qmk-home")
        .arg(common::corpus().join("firmware"))
        .arg("--out")
        .arg(out.path())
        .args(extra)
        .env_remove("SOURCE_DATE_EPOCH");
    if let Some(e) = epoch {
        cmd.env("SOURCE_DATE_EPOCH", e);
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    tree(out.path())
}

fn last_updated(files: &BTreeMap<PathBuf, Vec<u8>>) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&files[Path::new("v1/keyboard_list.json")]).unwrap();
    v["last_updated"].as_str().unwrap().to_string()
}

#[test]
fn a_pinned_stamp_makes_rebuilds_byte_identical() {
    let first = build(Some("1649009053"), &[]);
    assert_eq!(last_updated(&first), "2022-04-03 18:04:13 GMT");
    let second = build(Some("1649009053"), &[]);
    assert_eq!(first.len(), second.len());
    let differ: Vec<_> = first
        .iter()
        .filter(|(k, v)| second.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(differ.is_empty(), "rebuild differs in {differ:?}");
    // An empty SOURCE_DATE_EPOCH counts as unset (the clock).
    assert_ne!(
        last_updated(&build(Some(""), &[])),
        "2022-04-03 18:04:13 GMT"
    );
    // The flag wins over the environment.
    let flagged = build(Some("1649009053"), &["--last-updated", "0"]);
    assert_eq!(last_updated(&flagged), "1970-01-01 00:00:00 GMT");
}

#[test]
fn bad_stamps_are_refused_by_name() {
    let out = tempfile::tempdir().unwrap();
    let run = common::build(
        &common::corpus().join("firmware"),
        out.path(),
        &["--last-updated", "yesterday"],
    );
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("--last-updated"), "{err}");
    let run = Command::new(env!("CARGO_BIN_EXE_metadata-gen"))
        .arg("build")
        .arg("--qmk-home")
        .arg(common::corpus().join("firmware"))
        .arg("--out")
        .arg(out.path())
        .env("SOURCE_DATE_EPOCH", "soon")
        .output()
        .unwrap();
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("SOURCE_DATE_EPOCH"), "{err}");
}
