//! Shared helpers of the metadata-gen integration tests: locating the QMK corpus
//! (`shared/qmk-data`, which sits beside the repository checkout) and running the binary.

use std::path::{Path, PathBuf};
use std::process::Output;

/// `shared/qmk-data` in the nearest ancestor folder of this crate that has one.
pub fn corpus() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|a| a.join("shared/qmk-data"))
        .find(|p| p.join("firmware/data").is_dir() && p.join("reference/v1").is_dir())
        .unwrap_or_else(|| {
            panic!(
                "the QMK corpus (shared/qmk-data with firmware/ and reference/) was not found beside any ancestor of {}",
                here.display()
            )
        })
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
