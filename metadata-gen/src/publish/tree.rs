//! The local side of a publish: walks a built tree, hashes every file and decides the HTTP
//! headers each object is served with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::PublishError;

/// Top-level names a built tree must not use: they hold the release machinery next to the
/// stable mirror under the same prefix.
pub const RESERVED_NAMES: [&str; 3] = ["releases", "manifests", "current.json"];

/// One file of the built tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Where it is on disk.
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    pub size: u64,
}

/// A built tree: relative key (`/`-separated, e.g. `v1/keyboard_list.json`) → file.
pub type LocalTree = BTreeMap<String, LocalFile>;

/// The file every built tree has; its absence means `--from` points at the wrong folder (an
/// empty tree would otherwise publish as "every keyboard removed").
pub const REQUIRED_FILE: &str = "v1/keyboard_list.json";

/// Reads and hashes every regular file under `root`, which must contain `v1/keyboard_list.json`.
pub fn scan(root: &Path) -> Result<LocalTree, PublishError> {
    if !root.join(REQUIRED_FILE).is_file() {
        return Err(PublishError::NotATree(root.to_path_buf()));
    }
    let mut tree = LocalTree::new();
    walk(root, root, &mut tree)?;
    Ok(tree)
}

fn walk(root: &Path, dir: &Path, tree: &mut LocalTree) -> Result<(), PublishError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PublishError::Io { path, source }
    };
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        // Follows symlinks on purpose: the published object is what the link points to.
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if meta.is_dir() {
            walk(root, &path, tree)?;
        } else if meta.is_file() {
            let key = relative_key(root, &path)?;
            if dir == root && RESERVED_NAMES.contains(&key.as_str()) {
                return Err(PublishError::ReservedName(key));
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let sha256 = hex::encode(Sha256::digest(&bytes));
            tree.insert(
                key,
                LocalFile {
                    path,
                    sha256,
                    size: meta.len(),
                },
            );
        }
    }
    if dir == root {
        if let Some(name) = RESERVED_NAMES
            .iter()
            .find(|name| tree.keys().any(|k| k.starts_with(&format!("{name}/"))))
        {
            return Err(PublishError::ReservedName((*name).to_string()));
        }
    }
    Ok(())
}

fn relative_key(root: &Path, path: &Path) -> Result<String, PublishError> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| PublishError::BadPath(path.to_path_buf()))?;
    let mut parts = Vec::new();
    for part in rel.components() {
        match part {
            std::path::Component::Normal(s) => match s.to_str() {
                Some(s) => parts.push(s),
                None => return Err(PublishError::BadPath(path.to_path_buf())),
            },
            _ => return Err(PublishError::BadPath(path.to_path_buf())),
        }
    }
    Ok(parts.join("/"))
}

/// The Content-Type an object is served with, from its file name.
pub fn content_type(key: &str) -> &'static str {
    let ext = key
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match ext.as_deref() {
        Some("json") => "application/json",
        Some("jsonschema") => "application/schema+json",
        Some("md") => "text/markdown; charset=utf-8",
        Some("hjson") | Some("txt") => "text/plain; charset=utf-8",
        Some("h") | Some("c") => "text/x-c; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Index files: the top-level `v1/*.json` documents that name other objects. The stable mirror
/// writes them after everything they can point to.
pub fn is_index(key: &str) -> bool {
    key.strip_prefix("v1/")
        .is_some_and(|rest| !rest.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_follow_extensions() {
        assert_eq!(content_type("v1/keyboard_list.json"), "application/json");
        assert_eq!(
            content_type("v1/keyboards/planck/rev6/readme.md"),
            "text/markdown; charset=utf-8"
        );
        assert_eq!(
            content_type("v1/schemas/keyboard.jsonschema"),
            "application/schema+json"
        );
        assert_eq!(content_type("README.MD"), "text/markdown; charset=utf-8");
        assert_eq!(content_type("v1/odd"), "application/octet-stream");
        assert_eq!(content_type("v1.d/odd"), "application/octet-stream");
    }

    #[test]
    fn index_files_are_directly_in_v1() {
        assert!(is_index("v1/keyboard_list.json"));
        assert!(!is_index("v1/keyboards/planck/info.json"));
        assert!(!is_index("readme.md"));
    }

    #[test]
    fn scan_rejects_a_directory_without_a_keyboard_list() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(scan(dir.path()), Err(PublishError::NotATree(_))));
        std::fs::create_dir_all(dir.path().join("v1")).unwrap();
        assert!(matches!(scan(dir.path()), Err(PublishError::NotATree(_))));
    }

    #[test]
    fn scan_rejects_reserved_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join(REQUIRED_FILE), "{}").unwrap();
        std::fs::create_dir_all(dir.path().join("releases/x")).unwrap();
        std::fs::write(dir.path().join("releases/x/a.json"), "{}").unwrap();
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(err, PublishError::ReservedName(ref n) if n == "releases"));
    }

    #[test]
    fn scan_hashes_files_with_slash_keys() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("v1/keyboards/a")).unwrap();
        std::fs::write(dir.path().join("v1/keyboards/a/info.json"), "abc").unwrap();
        std::fs::write(dir.path().join(REQUIRED_FILE), "{}").unwrap();
        let tree = scan(dir.path()).unwrap();
        let file = &tree["v1/keyboards/a/info.json"];
        assert_eq!(
            file.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(file.size, 3);
        assert_eq!(tree.len(), 2);
    }
}
