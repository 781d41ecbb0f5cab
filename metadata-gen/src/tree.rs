//! One pass over a qmk_firmware checkout: which folders hold keyboards, keymaps, readmes and
//! data files, and each of those files parsed exactly once (shared by every keyboard below it).

use crate::json;
use crate::legacy::{self, ConfigH};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// What a folder under `keyboards/` contains, as far as generate-api cares.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub files: Vec<String>,
    pub subdirs: Vec<String>,
}

impl Listing {
    pub fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }
}

/// A parsed data file: the value, or why it could not be read.
pub type Parsed = Result<Arc<Value>, String>;

/// A keyboard.json/info.json: parsed once up front when several keyboards share it, else read
/// by the one keyboard that needs it (so the whole tree is never held in memory at once).
#[derive(Debug)]
pub enum DataFile {
    Cached(Parsed),
    Deferred(std::path::PathBuf),
}

impl DataFile {
    pub fn get(&self) -> Parsed {
        match self {
            DataFile::Cached(p) => p.clone(),
            DataFile::Deferred(path) => parse_json_file(path),
        }
    }
}

/// The parsed files of one folder under `keyboards/`.
#[derive(Debug, Default)]
pub struct Folder {
    pub info_json: Option<DataFile>,
    pub keyboard_json: Option<DataFile>,
    pub config_h: Option<ConfigH>,
    pub rules_mk: Option<String>,
    pub has_readme: bool,
    /// `<folder>.c`, when present.
    pub keyboard_c: Option<std::path::PathBuf>,
    /// `keymaps/<name>/` folders: (name, has keymap.json, has keymap.c).
    pub keymaps: Vec<(String, bool, bool)>,
}

/// The scanned checkout.
pub struct Tree {
    /// Folder path relative to `keyboards/` ("" is `keyboards/` itself) → parsed contents.
    pub folders: HashMap<String, Folder>,
    /// Keyboard names (folders with a keyboard.json, outside `keymaps/`), sorted.
    pub keyboards: Vec<String>,
    /// `layouts/<group>/<layout>/<keymap>` folders: (group/layout, keymap, has json, has c).
    pub community_keymaps: Vec<(String, String, bool, bool)>,
    /// Names under `layouts/default/`.
    pub default_layouts: Vec<String>,
}

const WANTED: [&str; 7] = [
    "info.json",
    "keyboard.json",
    "config.h",
    "rules.mk",
    "readme.md",
    "keymap.json",
    "keymap.c",
];

fn list_dir(path: &Path) -> std::io::Result<Listing> {
    let mut out = Listing::default();
    // `<folder>.c` may hold the LED table (g_led_config).
    let own_c = path
        .file_name()
        .map(|n| format!("{}.c", n.to_string_lossy()));
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type()?;
        let is_dir = ft.is_dir() || (ft.is_symlink() && entry.path().is_dir());
        if is_dir {
            out.subdirs.push(name);
        } else if WANTED.contains(&name.as_str()) || own_c.as_deref() == Some(name.as_str()) {
            out.files.push(name);
        }
    }
    out.subdirs.sort();
    Ok(out)
}

/// Lists every folder below `base` (relative names), in parallel.
fn walk(base: &Path, rel: String) -> Vec<(String, Listing)> {
    let path = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(&rel)
    };
    let Ok(listing) = list_dir(&path) else {
        return Vec::new();
    };
    let children: Vec<String> = listing
        .subdirs
        .iter()
        .map(|s| {
            if rel.is_empty() {
                s.clone()
            } else {
                format!("{rel}/{s}")
            }
        })
        .collect();
    let mut out: Vec<(String, Listing)> = children
        .into_par_iter()
        .flat_map_iter(|c| walk(base, c))
        .collect();
    out.push((rel, listing));
    out
}

fn parse_json_file(path: &Path) -> Parsed {
    json::load(path).map(Arc::new).map_err(|e| e.to_string())
}

/// Every ancestor folder of `kb` from the top (`a`, `a/b`, `a/b/c`), plus "".
pub fn ancestors(kb: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut acc = String::new();
    for part in kb.split('/') {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

impl Tree {
    /// Scans `root/keyboards` and `root/layouts`, then parses what the keyboards need.
    pub fn scan(root: &Path) -> Tree {
        let kb_base = root.join("keyboards");
        let listings: HashMap<String, Listing> =
            walk(&kb_base, String::new()).into_iter().collect();

        let mut keyboards: Vec<String> = listings
            .iter()
            .filter(|(rel, l)| {
                !rel.is_empty() && l.has("keyboard.json") && !rel.split('/').any(|p| p == "keymaps")
            })
            .map(|(rel, _)| rel.clone())
            .collect();
        keyboards.sort();

        let mut needed: Vec<String> = keyboards.iter().flat_map(|k| ancestors(k)).collect();
        needed.sort();
        needed.dedup();

        // How many keyboards each folder serves: files serving one are read on demand.
        let mut served: HashMap<&str, usize> = HashMap::new();
        for kb in &keyboards {
            let mut end = kb.len();
            loop {
                *served.entry(&kb[..end]).or_default() += 1;
                match kb[..end].rfind('/') {
                    Some(i) => end = i,
                    None => break,
                }
            }
        }
        let folders: HashMap<String, Folder> = needed
            .into_par_iter()
            .map(|rel| {
                let shared = served.get(rel.as_str()).copied().unwrap_or(0) > 1;
                let folder = Self::load_folder(&kb_base, &rel, &listings, shared);
                (rel, folder)
            })
            .collect();

        let (community_keymaps, default_layouts) = Self::scan_layouts(&root.join("layouts"));

        Tree {
            folders,
            keyboards,
            community_keymaps,
            default_layouts,
        }
    }

    fn load_folder(
        base: &Path,
        rel: &str,
        listings: &HashMap<String, Listing>,
        shared: bool,
    ) -> Folder {
        let mut f = Folder::default();
        let Some(l) = listings.get(rel) else {
            return f;
        };
        let dir = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        // The top `keyboards/` folder only matters for its readme (a fallback).
        f.has_readme = l.has("readme.md");
        if rel.is_empty() {
            return f;
        }
        let data_file = |name: &str| {
            let path = dir.join(name);
            if shared {
                DataFile::Cached(parse_json_file(&path))
            } else {
                DataFile::Deferred(path)
            }
        };
        if l.has("info.json") {
            f.info_json = Some(data_file("info.json"));
        }
        if l.has("keyboard.json") {
            f.keyboard_json = Some(data_file("keyboard.json"));
        }
        let own_c = format!("{}.c", rel.rsplit('/').next().unwrap_or_default());
        if l.has(&own_c) {
            f.keyboard_c = Some(dir.join(own_c));
        }
        if l.has("config.h") {
            f.config_h = std::fs::read_to_string(dir.join("config.h"))
                .ok()
                .map(|t| legacy::parse_config_h(&t));
        }
        if l.has("rules.mk") {
            f.rules_mk = std::fs::read_to_string(dir.join("rules.mk")).ok();
        }
        if l.subdirs.iter().any(|s| s == "keymaps") {
            let km_rel = format!("{rel}/keymaps");
            if let Some(km) = listings.get(&km_rel) {
                for name in &km.subdirs {
                    if let Some(k) = listings.get(&format!("{km_rel}/{name}")) {
                        f.keymaps
                            .push((name.clone(), k.has("keymap.json"), k.has("keymap.c")));
                    }
                }
            }
        }
        f
    }

    fn scan_layouts(base: &Path) -> (Vec<(String, String, bool, bool)>, Vec<String>) {
        let mut keymaps = Vec::new();
        let mut defaults = Vec::new();
        let Ok(groups) = list_dir(base) else {
            return (keymaps, defaults);
        };
        for group in &groups.subdirs {
            let Ok(layouts) = list_dir(&base.join(group)) else {
                continue;
            };
            for layout in &layouts.subdirs {
                if group == "default" {
                    defaults.push(layout.clone());
                }
                let Ok(kms) = list_dir(&base.join(group).join(layout)) else {
                    continue;
                };
                for km in &kms.subdirs {
                    if let Ok(k) = list_dir(&base.join(group).join(layout).join(km)) {
                        keymaps.push((
                            format!("{group}/{layout}"),
                            km.clone(),
                            k.has("keymap.json"),
                            k.has("keymap.c"),
                        ));
                    }
                }
            }
        }
        (keymaps, defaults)
    }

    /// The folder record for `rel` (empty when it was not scanned).
    pub fn folder(&self, rel: &str) -> Option<&Folder> {
        self.folders.get(rel)
    }
}
