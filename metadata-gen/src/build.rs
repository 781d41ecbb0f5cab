//! `metadata-gen build`: writes the `v1/` API tree (plus the root readme) from a qmk_firmware
//! checkout, file for file what `qmk generate-api` writes, using every core.

use crate::info::{self, Mappings};
use crate::json;
use crate::keycodes;
use crate::schema::Schemas;
use crate::tree::{self, Tree};
use anyhow::Context;
use clap::Args;
use rayon::prelude::*;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

type Obj = Map<String, Value>;

/// Arguments of `metadata-gen build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The qmk_firmware checkout (its `data/`, `keyboards/` and `layouts/` are read).
    #[arg(long)]
    pub qmk_home: PathBuf,
    /// Output folder; replaced entirely (gets `readme.md` and `v1/`).
    #[arg(long)]
    pub out: PathBuf,
    /// How many keyboards may fail (be left out) before the build fails: a count or a
    /// percentage of all keyboards, e.g. `5` or `1%`.
    #[arg(long, default_value = "0")]
    pub max_failures: FailureLimit,
    /// The time every `last_updated` field says: `now` (the clock, as `qmk generate-api`),
    /// `commit` (the checkout's commit time, so a rebuild of the same commit is byte for byte
    /// the same and `publish` uploads nothing), or seconds since the Unix epoch. Without it,
    /// `SOURCE_DATE_EPOCH` when set (reproducible-builds.org), else the clock.
    #[arg(long)]
    pub last_updated: Option<LastUpdated>,
}

/// What `last_updated` stamps say ([`BuildArgs::last_updated`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LastUpdated {
    Now,
    Commit,
    /// Seconds since the Unix epoch.
    At(i64),
}

impl FromStr for LastUpdated {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "now" => Ok(LastUpdated::Now),
            "commit" => Ok(LastUpdated::Commit),
            t => t
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .map(LastUpdated::At)
                .ok_or_else(|| {
                    format!(
                        "--last-updated: expected now, commit or seconds since the Unix epoch, \
                         got {s:?}"
                    )
                }),
        }
    }
}

impl LastUpdated {
    /// The choice when `--last-updated` is not given: `SOURCE_DATE_EPOCH` (`source_date_epoch`,
    /// its value) when set, else the clock.
    pub fn by_default(source_date_epoch: Option<&str>) -> anyhow::Result<LastUpdated> {
        match source_date_epoch {
            None => Ok(LastUpdated::Now),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|t| *t >= 0)
                .map(LastUpdated::At)
                .with_context(|| {
                    format!("SOURCE_DATE_EPOCH: expected seconds since the Unix epoch, got {v:?}")
                }),
        }
    }

    /// The stamp for a build of the checkout at `qmk_home`, as `qmk generate-api` formats it.
    /// Errors: `commit` on a checkout with neither `.git` nor `version.txt`.
    pub fn stamp(self, qmk_home: &Path) -> anyhow::Result<String> {
        let secs = match self {
            LastUpdated::Now => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()) as i64,
            LastUpdated::At(t) => t,
            LastUpdated::Commit => oven::worker::tree::firmware_commit_time(qmk_home)
                .with_context(|| {
                    format!(
                        "--last-updated commit: {} has no commit time (neither a git checkout \
                         nor a version.txt)",
                        qmk_home.display()
                    )
                })?,
        };
        Ok(datetime(secs))
    }
}

/// A failure threshold: an absolute count or a percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailureLimit {
    Count(usize),
    Percent(f64),
}

impl FromStr for FailureLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("--max-failures: expected a count like 5 or a percentage like 1%, got {s:?}")
        };
        match s.strip_suffix('%') {
            Some(p) => p
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=100.0).contains(p))
                .map(FailureLimit::Percent)
                .ok_or_else(bad),
            None => s
                .trim()
                .parse::<usize>()
                .map(FailureLimit::Count)
                .map_err(|_| bad()),
        }
    }
}

impl FailureLimit {
    /// Whether `failed` of `total` keyboards is still acceptable.
    pub fn allows(self, failed: usize, total: usize) -> bool {
        match self {
            FailureLimit::Count(n) => failed <= n,
            FailureLimit::Percent(p) => (failed as f64) <= (total as f64) * p / 100.0,
        }
    }
}

/// What a build produced.
#[derive(Debug)]
pub struct Summary {
    pub keyboards: usize,
    pub failures: Vec<(String, String)>,
    pub files: usize,
}

/// `secs` (since the Unix epoch) as `qmk generate-api` writes `last_updated`:
/// `strftime("%Y-%m-%d %H:%M:%S %Z", gmtime(secs))`.
pub fn datetime(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = metadata_gen::civil::utc(secs);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} GMT")
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Every file below `dir`, relative, sorted.
fn files_below(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for entry in
            std::fs::read_dir(&abs).with_context(|| format!("listing {}", abs.display()))?
        {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            if entry.path().is_dir() {
                stack.push(child);
            } else {
                out.push(child);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies `data/` into `v1/`: .hjson → compact .json, .jsonschema re-serialised, rest verbatim.
fn copy_data(data: &Path, v1: &Path) -> anyhow::Result<usize> {
    let files = files_below(data)?;
    files.par_iter().try_for_each(|rel| -> anyhow::Result<()> {
        let src = data.join(rel);
        let dst = v1.join(rel);
        match rel.extension().and_then(|e| e.to_str()) {
            Some("hjson") => write(
                &dst.with_extension("json"),
                json::to_compact(&json::load(&src)?),
            ),
            Some("jsonschema") => write(&dst, json::to_default(&json::load(&src)?)),
            _ => {
                let bytes =
                    std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                write(&dst, bytes)
            }
        }
    })?;
    Ok(files.len())
}

fn load_object(path: &Path) -> anyhow::Result<Obj> {
    match json::load(path)? {
        Value::Object(o) => Ok(o),
        _ => anyhow::bail!("{}: expected an object", path.display()),
    }
}

/// The keymaps QMK lists for a keyboard: JSON keymaps in its folder and every parent, plus
/// those of the community layouts it supports; (name, path), sorted by path components.
fn keymaps_of(tree: &Tree, kb: &str, info: &Obj) -> Vec<(String, String)> {
    let mut found: Vec<(Vec<String>, String, bool)> = Vec::new();
    for dir in tree::ancestors(kb).into_iter().skip(1) {
        if let Some(f) = tree.folder(&dir) {
            for (name, has_json, has_c) in &f.keymaps {
                if *has_json {
                    let path = format!("keyboards/{dir}/keymaps/{name}");
                    found.push((
                        path.split('/').map(str::to_owned).collect(),
                        name.clone(),
                        *has_c,
                    ));
                }
            }
        }
    }
    let community: Vec<&str> = info
        .get("community_layouts")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (group_layout, km, has_json, has_c) in &tree.community_keymaps {
        let layout = group_layout.rsplit('/').next().unwrap_or_default();
        if *has_json && community.contains(&layout) {
            let path = format!("layouts/{group_layout}/{km}");
            found.push((
                path.split('/').map(str::to_owned).collect(),
                km.clone(),
                *has_c,
            ));
        }
    }
    found.sort();
    found.dedup();
    found
        .into_iter()
        .filter(|(_, _, has_c)| !has_c)
        .map(|(parts, name, _)| (name, parts.join("/")))
        .collect()
}

/// One keyboard's output, kept as text so the whole tree's objects never sit in memory.
struct Resolved {
    json: String,
    usb: Option<Obj>,
    keymaps: Vec<String>,
    readme: Option<String>,
}

/// Adds the keymap list to a resolved info object and turns it into its output text.
fn resolve(tree: &Tree, kb: &str, mut info: Obj) -> Resolved {
    let mut km = Obj::new();
    let mut keymaps = Vec::new();
    for (name, path) in keymaps_of(tree, kb, &info) {
        let mut entry = Obj::new();
        entry.insert(
            "url".into(),
            Value::String(format!(
                "https://raw.githubusercontent.com/qmk/qmk_firmware/master/{path}/keymap.json"
            )),
        );
        entry.insert("path".into(), Value::String(format!("{path}/keymap.json")));
        // A later path with the same name wins; the first keeps its position.
        km.insert(name, Value::Object(entry));
    }
    for entry in km.values() {
        if let Some(p) = entry.get("path").and_then(Value::as_str) {
            keymaps.push(p.to_owned());
        }
    }
    info.insert("keymaps".into(), Value::Object(km));
    let usb = info.get("usb").and_then(Value::as_object).cloned();
    Resolved {
        json: json::to_compact(&Value::Object(info)),
        usb,
        keymaps,
        readme: readme_of(tree, kb),
    }
}

fn readme_of(tree: &Tree, kb: &str) -> Option<String> {
    tree::ancestors(kb)
        .into_iter()
        .rev()
        .find(|d| tree.folder(d).is_some_and(|f| f.has_readme))
        .map(|d| {
            if d.is_empty() {
                "keyboards/readme.md".to_owned()
            } else {
                format!("keyboards/{d}/readme.md")
            }
        })
}

fn progress(len: usize, what: &str) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        let pb = indicatif::ProgressBar::new(len as u64);
        pb.set_message(what.to_owned());
        pb
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// Runs the whole build.
pub fn build(args: &BuildArgs) -> anyhow::Result<Summary> {
    let home = &args.qmk_home;
    let data = home.join("data");
    anyhow::ensure!(
        data.is_dir() && home.join("keyboards").is_dir(),
        "{} is not a qmk_firmware checkout (no data/ or keyboards/)",
        home.display()
    );
    let out = &args.out;
    let v1 = out.join("v1");
    let when = match args.last_updated {
        Some(w) => w,
        // An empty SOURCE_DATE_EPOCH counts as unset, as most tools read it.
        None => LastUpdated::by_default(
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .filter(|v| !v.trim().is_empty())
                .as_deref(),
        )?,
    };
    let now = when.stamp(home)?;

    // Resolution first: nothing is written when too many keyboards fail.
    let maps = Mappings {
        defaults: load_object(&data.join("mappings/defaults.hjson"))?,
        info_config: load_object(&data.join("mappings/info_config.hjson"))?,
        info_rules: load_object(&data.join("mappings/info_rules.hjson"))?,
        schemas: Schemas::load(&data.join("schemas"))?,
    };
    let aliases = json::load(&data.join("mappings/keyboard_aliases.hjson"))?;
    let tree = Tree::scan(home);

    let pb = progress(tree.keyboards.len(), "keyboards");
    let results: Vec<(String, Result<Resolved, info::KeyboardError>, Vec<String>)> = tree
        .keyboards
        .par_iter()
        .map(|kb| {
            let mut log = Vec::new();
            let r =
                info::info_json(&tree, &maps, kb, &mut log).map(|info| resolve(&tree, kb, info));
            pb.inc(1);
            (kb.clone(), r, log)
        })
        .collect();
    pb.finish_and_clear();

    let mut done: Vec<(String, Resolved)> = Vec::new();
    let mut failures = Vec::new();
    for (kb, r, log) in results {
        for l in log {
            eprintln!("warning: {kb}: {l}");
        }
        match r {
            Ok(res) => done.push((kb, res)),
            Err(e) => {
                eprintln!("error: {kb}: {e}");
                failures.push((kb, e.to_string()));
            }
        }
    }
    let total = tree.keyboards.len();
    anyhow::ensure!(
        args.max_failures.allows(failures.len(), total),
        "{} of {total} keyboards failed (limit {:?}); nothing written",
        failures.len(),
        args.max_failures
    );

    // Only now is the previous output replaced.
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }

    // Static parts: the API readme at the root and data/ under v1/.
    let mut files = 0;
    let templates = data.join("templates/api");
    if templates.is_dir() {
        for rel in files_below(&templates)? {
            let bytes = std::fs::read(templates.join(&rel))?;
            write(&out.join(&rel), bytes)?;
            files += 1;
        }
    }
    files += copy_data(&data, &v1)?;

    // Per keyboard: info.json, readme.md; keymaps are shared, so collected and written once.
    let stamp_prefix = format!("{{\"last_updated\":{},", json::quote(&now));
    done.par_iter()
        .try_for_each(|(kb, res)| -> anyhow::Result<()> {
            let dir = v1.join("keyboards").join(kb);
            let text = format!(
                "{stamp_prefix}\"keyboards\":{{{}:{}}}}}",
                json::quote(kb),
                res.json
            );
            write(&dir.join("info.json"), text)?;
            if let Some(readme) = &res.readme {
                let bytes = std::fs::read(home.join(readme))
                    .with_context(|| format!("reading {readme}"))?;
                write(&dir.join("readme.md"), bytes)?;
            }
            Ok(())
        })?;
    files += done.len() + done.iter().filter(|(_, r)| r.readme.is_some()).count();
    let keymap_paths: BTreeSet<&String> = done.iter().flat_map(|(_, r)| &r.keymaps).collect();
    keymap_paths
        .par_iter()
        .try_for_each(|p| -> anyhow::Result<()> {
            let v = json::load(&home.join(p))?;
            write(&v1.join(p), json::to_compact(&v))
        })?;
    files += keymap_paths.len();

    // USB ids: vid → pid → keyboard → usb object, in keyboard order.
    let mut usb_list = Obj::new();
    for (kb, res) in &done {
        let Some(usb) = &res.usb else {
            continue;
        };
        let key = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let vid = usb.get("vid").map(key);
        let pid = usb.get("pid").map(key);
        if let Some(vid) = &vid {
            usb_list
                .entry(vid.clone())
                .or_insert_with(|| Value::Object(Obj::new()));
        }
        if let (Some(vid), Some(pid)) = (&vid, &pid) {
            if let Some(Value::Object(pids)) = usb_list.get_mut(vid) {
                let kbs = pids
                    .entry(pid.clone())
                    .or_insert_with(|| Value::Object(Obj::new()));
                if let Value::Object(kbs) = kbs {
                    kbs.insert(kb.clone(), Value::Object(usb.clone()));
                }
            }
        }
    }

    // Keycode specs replace constants/keycodes/.
    for (name, spec) in keycodes::merged_specs(&data.join("constants/keycodes"))? {
        write(
            &v1.join("constants").join(name),
            json::to_compact(&Value::Object(spec)),
        )?;
        files += 1;
    }
    let consumed = v1.join("constants/keycodes");
    if consumed.is_dir() {
        files -= files_below(&consumed)?.len();
        std::fs::remove_dir_all(&consumed)?;
    }

    let keyboard_list: Vec<Value> = done.iter().map(|(k, _)| Value::String(k.clone())).collect();
    // keyboards.json is every info object in a row: assembled from the already-written text.
    let mut all = String::with_capacity(
        done.iter()
            .map(|(k, r)| k.len() + r.json.len() + 4)
            .sum::<usize>()
            + 64,
    );
    all.push_str(&stamp_prefix);
    all.push_str("\"keyboards\":{");
    for (i, (kb, res)) in done.iter().enumerate() {
        if i > 0 {
            all.push(',');
        }
        all.push_str(&json::quote(kb));
        all.push(':');
        all.push_str(&res.json);
    }
    all.push_str("}}");
    let stamp = |key: &str, v: Value| {
        let mut o = Obj::new();
        o.insert("last_updated".into(), Value::String(now.clone()));
        o.insert(key.into(), v);
        json::to_compact(&Value::Object(o))
    };
    let mut metadata = Obj::new();
    metadata.insert("last_updated".into(), Value::String(now.clone()));
    metadata.insert("keyboards".into(), Value::Array(keyboard_list.clone()));
    metadata.insert("keyboard_aliases".into(), aliases.clone());
    metadata.insert("usb".into(), Value::Object(usb_list.clone()));

    let constants = list_constants(&v1.join("constants"))?;
    let globals = [
        ("keyboards.json", all),
        ("usb.json", stamp("usb", Value::Object(usb_list))),
        (
            "keyboard_list.json",
            stamp("keyboards", Value::Array(keyboard_list)),
        ),
        ("keyboard_aliases.json", stamp("keyboard_aliases", aliases)),
        (
            "keyboard_metadata.json",
            json::to_compact(&Value::Object(metadata)),
        ),
        (
            "constants_metadata.json",
            stamp("constants", Value::Object(constants)),
        ),
    ];
    for (name, text) in globals {
        write(&v1.join(name), text)?;
        files += 1;
    }

    Ok(Summary {
        keyboards: done.len(),
        failures,
        files,
    })
}

/// `constants/**/<name>_<d>.<d>.<d>.json` → name → sorted versions.
fn list_constants(dir: &Path) -> anyhow::Result<Obj> {
    let mut found: HashMap<String, Vec<String>> = HashMap::new();
    let mut order = Vec::new();
    for rel in files_below(dir)? {
        let Some(stem) = rel
            .file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_suffix(".json"))
        else {
            continue;
        };
        let Some((name, version)) = stem.rsplit_once('_') else {
            continue;
        };
        let b = version.as_bytes();
        let is_version = b.len() == 5
            && b[1] == b'.'
            && b[3] == b'.'
            && [b[0], b[2], b[4]].iter().all(u8::is_ascii_digit);
        if !is_version {
            continue;
        }
        if !found.contains_key(name) {
            order.push(name.to_owned());
        }
        found
            .entry(name.to_owned())
            .or_default()
            .push(version.to_owned());
    }
    let mut out = Obj::new();
    for name in order {
        let mut versions = found.remove(&name).unwrap_or_default();
        versions.sort();
        out.insert(
            name,
            Value::Array(versions.into_iter().map(Value::String).collect()),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_limits() {
        assert_eq!("3".parse::<FailureLimit>().unwrap(), FailureLimit::Count(3));
        assert_eq!(
            "1.5%".parse::<FailureLimit>().unwrap(),
            FailureLimit::Percent(1.5)
        );
        assert!("x".parse::<FailureLimit>().is_err());
        assert!("200%".parse::<FailureLimit>().is_err());
        assert!(FailureLimit::Count(0).allows(0, 10));
        assert!(!FailureLimit::Count(0).allows(1, 10));
        assert!(FailureLimit::Percent(10.0).allows(1, 10));
        assert!(!FailureLimit::Percent(5.0).allows(1, 10));
    }

    #[test]
    fn datetime_shape() {
        assert_eq!(datetime(1_649_009_053), "2022-04-03 18:04:13 GMT");
        let s = LastUpdated::Now.stamp(Path::new(".")).unwrap();
        assert_eq!(s.len(), "2026-11-21 10:35:23 GMT".len(), "{s}");
        assert!(s.ends_with(" GMT"));
    }

    #[test]
    fn last_updated_choices() {
        assert_eq!("now".parse(), Ok(LastUpdated::Now));
        assert_eq!("commit".parse(), Ok(LastUpdated::Commit));
        assert_eq!("0".parse(), Ok(LastUpdated::At(0)));
        assert!("-1".parse::<LastUpdated>().is_err());
        assert!("yesterday"
            .parse::<LastUpdated>()
            .unwrap_err()
            .contains("--last-updated"));
        assert_eq!(LastUpdated::by_default(None).unwrap(), LastUpdated::Now);
        assert_eq!(
            LastUpdated::by_default(Some("1649009053")).unwrap(),
            LastUpdated::At(1_649_009_053)
        );
        assert!(LastUpdated::by_default(Some("commit")).is_err());
        assert!(LastUpdated::by_default(Some("x")).is_err());
        let none = tempfile::tempdir().unwrap();
        let err = LastUpdated::Commit
            .stamp(none.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no commit time"), "{err}");
        std::fs::write(none.path().join("version.txt"), "abc\n1649009053\n").unwrap();
        assert_eq!(
            LastUpdated::Commit.stamp(none.path()).unwrap(),
            "2022-04-03 18:04:13 GMT"
        );
    }
}
