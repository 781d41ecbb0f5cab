//! Shared helpers of the metadata-gen integration tests: the QMK corpus and running the binary.
//!
//! The corpus (a data-only slice of qmk_firmware and what `qmk generate-api` wrote for it, see
//! `tests/data/README.md`) is committed compressed, so the tests run from any clone; set
//! `OVEN_QMK_DATA` to test against another copy with the same layout.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// The corpus folder (with `firmware/` and `reference/`), unpacked once per test binary.
pub fn corpus() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("OVEN_QMK_DATA") {
            return PathBuf::from(dir);
        }
        let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/qmk-data.tar.xz");
        // A fresh folder per test binary: binaries run in parallel and must not share a half
        // unpacked tree.
        let dest = tempfile::Builder::new()
            .prefix("qmk-data-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir for the corpus")
            .keep();
        let status = std::process::Command::new("tar")
            .arg("-xJf")
            .arg(&archive)
            .arg("-C")
            .arg(&dest)
            .status()
            .expect("run tar");
        assert!(status.success(), "unpacking {} failed", archive.display());
        let dir = dest.join("qmk-data");
        assert!(
            dir.join("firmware/data").is_dir() && dir.join("reference/v1").is_dir(),
            "the corpus archive lacks firmware/ or reference/"
        );
        dir
    })
    .clone()
}

/// Runs `metadata-gen build`.
pub fn build(qmk_home: &Path, out: &Path, extra: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_metadata-gen"))
        .arg("build")
        .arg("--qmk-home")
        .arg(qmk_home)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run metadata-gen")
}

/// Every file under `root`, by its path below it.
#[allow(dead_code)] // each test binary compiles this module; not all of them walk trees
pub fn files(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out
}
