//! The qmk_firmware tree the worker builds in: finding it, naming its commit, the toolchains
//! next to it, which keyboard folder a name resolves to (QMK's aliases), and where a build's
//! firmware file landed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// The message a user sees when the machine has no tree (the local runner without setup).
pub const NO_TREE_MESSAGE: &str =
    "No qmk_firmware tree found: run `oven setup` (or start with `oven serve --setup`), or pass --qmk-home";

/// Firmware extensions QMK produces, in the order they are looked for.
pub const FIRMWARE_EXTENSIONS: [&str; 3] = ["hex", "bin", "uf2"];

fn is_tree(p: &Path) -> bool {
    p.join("keyboards").is_dir()
}

/// The tree: `explicit` (`--qmk-home`), else `QMK_HOME`, else `qmk config user.qmk_home`, else
/// `~/qmk_firmware`. `None` when none of them is a qmk_firmware tree.
pub fn find_qmk_home(explicit: Option<&Path>) -> Option<PathBuf> {
    find_qmk_home_in(explicit, None)
}

/// As [`find_qmk_home`], with `setup_tree` (the tree `oven setup` completed in the data
/// directory, [`crate::setup::Layout::ready_tree`]) searched after `QMK_HOME`: it was made for
/// Oven, at the commit Oven is tested with, so it wins over the user's own checkouts.
pub fn find_qmk_home_in(explicit: Option<&Path>, setup_tree: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return is_tree(p).then(|| p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(crate::config::QMK_HOME).map(PathBuf::from) {
        if is_tree(&p) {
            return Some(p);
        }
    }
    if let Some(p) = setup_tree.filter(|p| is_tree(p)) {
        return Some(p.to_path_buf());
    }
    if let Ok(out) = std::process::Command::new("qmk")
        .args(["config", "user.qmk_home"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        // Prints `user.qmk_home=/path`.
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(v) = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("user.qmk_home="))
        {
            let p = PathBuf::from(v.trim());
            if out.status.success() && is_tree(&p) {
                return Some(p);
            }
        }
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)?
        .join("qmk_firmware");
    is_tree(&home).then_some(home)
}

/// The tree's commit: `git rev-parse HEAD` where a `.git` exists, else the first line of
/// `version.txt` (what the container image writes after dropping `.git`), else `"unknown"`.
pub fn firmware_commit(home: &Path) -> String {
    if home.join(".git").exists() {
        if let Ok(out) = std::process::Command::new("git")
            .arg("-C")
            .arg(home)
            .args(["rev-parse", "HEAD"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && is_commitish(&s) {
                return s;
            }
        }
    }
    std::fs::read_to_string(home.join("version.txt"))
        .ok()
        .and_then(|t| t.lines().next().map(|l| l.trim().to_string()))
        .filter(|s| is_commitish(s))
        .unwrap_or_else(|| "unknown".to_string())
}

/// The tree commit's time, in seconds since the Unix epoch (the committer date, `git log -1
/// --format=%ct`) where a `.git` exists, else the second line of `version.txt` (the container
/// image writes `%H` and `%ct` there before dropping `.git`). `None` when neither says. Builds
/// are stamped with this date (see [`super::builddate`]), so it must come from the tree, never
/// from the clock or a request.
pub fn firmware_commit_time(home: &Path) -> Option<i64> {
    if home.join(".git").exists() {
        if let Ok(out) = std::process::Command::new("git")
            .arg("-C")
            .arg(home)
            .args(["log", "-1", "--format=%ct"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        {
            let t = String::from_utf8_lossy(&out.stdout).trim().parse::<i64>();
            if let (true, Ok(t)) = (out.status.success(), t) {
                return Some(t).filter(|t| *t >= 0);
            }
        }
    }
    std::fs::read_to_string(home.join("version.txt"))
        .ok()?
        .lines()
        .nth(1)?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|t| *t >= 0)
}

fn is_commitish(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Versions of the compilers and the qmk CLI found on `path` (a PATH value), by tool name.
pub fn toolchains(path: &str, qmk: &Path) -> BTreeMap<String, String> {
    let compilers = ["avr-gcc", "arm-none-eabi-gcc", "riscv32-unknown-elf-gcc"]
        .into_iter()
        .map(|tool| (tool, Path::new(tool), "-dumpversion"));
    compilers
        .chain(std::iter::once(("qmk", qmk, "--version")))
        .filter_map(|(name, program, flag)| Some((name.to_string(), version(program, flag, path)?)))
        .collect()
}

/// What `program flag` prints on success, trimmed; `None` if it is missing or fails.
fn version(program: &Path, flag: &str, path: &str) -> Option<String> {
    let out = std::process::Command::new(program)
        .arg(flag)
        .env_clear()
        .env("PATH", path)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !v.is_empty()).then_some(v)
}

/// QMK's keyboard aliases (`data/mappings/keyboard_aliases.hjson`): old names and bare
/// folders mapped to the folder QMK builds (`"handwired/ferris"` -> `"ferris/0_1"`).
pub type Aliases = std::collections::HashMap<String, String>;

/// Reads the tree's alias map; an absent or unreadable file is an empty map (the tree then
/// simply has no aliases, as old trees did not).
pub fn load_aliases(home: &Path) -> Aliases {
    let Ok(text) = std::fs::read_to_string(home.join("data/mappings/keyboard_aliases.hjson"))
    else {
        return Aliases::new();
    };
    let Ok(serde_json::Value::Object(map)) = crate::hjson::parse(&text) else {
        tracing::warn!("keyboard_aliases.hjson does not parse; no aliases");
        return Aliases::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| Some((k, v.get("target")?.as_str()?.to_string())))
        .collect()
}

/// Whether `keyboard` is a folder QMK can build: it holds a `keyboard.json`
/// (`lib/python/qmk/path.py::is_keyboard`). Trees from before keyboard.json mark a keyboard
/// with an `info.json` in a folder that has no keyboard below it.
pub fn is_keyboard(home: &Path, keyboard: &str) -> bool {
    let dir = home.join("keyboards").join(keyboard);
    if dir.join("keyboard.json").is_file() {
        return true;
    }
    dir.join("info.json").is_file()
        && std::fs::read_dir(&dir).is_ok_and(|entries| {
            !entries.flatten().any(|e| {
                let p = e.path();
                p.is_dir() && (p.join("info.json").is_file() || p.join("keyboard.json").is_file())
            })
        })
}

/// The folder QMK builds for `keyboard` (`lib/python/qmk/keyboard.py::keyboard_folder`):
/// aliases followed until they stop, then the folder must be a keyboard. `None` for an
/// unknown keyboard. A name (given or read from the alias file) that could escape the tree
/// ([`safe_keyboard_name`]) is unknown too.
pub fn resolve_keyboard(home: &Path, aliases: &Aliases, keyboard: &str) -> Option<String> {
    let mut kb = keyboard.to_string();
    // QMK loops until an alias points at itself; a bound keeps a cyclic file from hanging us.
    for _ in 0..16 {
        match aliases.get(&kb) {
            Some(target) if target != &kb => kb = target.clone(),
            _ => break,
        }
    }
    // A target may end in `/` (`matchstickworks/southpad/rev2/`): QMK keeps it as written
    // (it becomes part of the firmware's file name), so it is kept here too.
    let folder = kb.strip_suffix('/').unwrap_or(&kb);
    (safe_keyboard_name(keyboard) && safe_keyboard_name(folder) && is_keyboard(home, folder))
        .then_some(kb)
}

/// Keyboards below `prefix` (`planck` -> `planck/rev6`, ...), at most `limit`, for the
/// message about an unknown keyboard.
pub fn keyboards_below(home: &Path, prefix: &str, limit: usize) -> Vec<String> {
    let mut found = Vec::new();
    if !safe_keyboard_name(prefix) {
        return found;
    }
    let mut stack = vec![prefix.to_string()];
    while let Some(kb) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(home.join("keyboards").join(&kb)) else {
            continue;
        };
        let mut subs: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(|n| format!("{kb}/{n}")))
            .filter(|n| !n.ends_with("/keymaps"))
            .collect();
        subs.sort();
        for s in subs.into_iter().rev() {
            if is_keyboard(home, &s) {
                found.push(s);
            } else {
                stack.push(s);
            }
        }
        if found.len() >= limit {
            break;
        }
    }
    found.sort();
    found.truncate(limit);
    found
}

/// Keyboard names as they may reach a path: `a-z0-9_-` segments joined by `/`.
pub fn safe_keyboard_name(kb: &str) -> bool {
    !kb.is_empty()
        && kb.len() <= 128
        && kb.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        })
}

/// QMK's build target name: `<keyboard with / as _>_<keymap>`.
pub fn target_name(keyboard: &str, keymap: &str) -> String {
    format!("{}_{}", keyboard.replace('/', "_"), keymap)
}

/// A writable stand-in for a (possibly read-only) tree: `dest` holds a symlink to every
/// top-level entry of `home` except `.build`. `qmk` runs make in its QMK_HOME and copies the
/// firmware there, so the root must be writable; everything below it stays shared and is never
/// copied. Idempotent.
pub fn overlay(home: &Path, dest: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(home)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".build" {
            continue;
        }
        let link = dest.join(&name);
        let target = home.join(&name);
        match std::fs::read_link(&link) {
            Ok(t) if t == target => continue,
            Ok(_) => std::fs::remove_file(&link)?,
            Err(_) if link.exists() => continue,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)?;
    }
    Ok(dest.to_path_buf())
}

/// The firmware file a build of `target` produced: `<target>.{hex,bin,uf2}` in the first of
/// `dirs` holding one, as a regular file (symlinks are refused: they could point anywhere).
pub fn find_firmware(dirs: &[&Path], target: &str) -> Option<PathBuf> {
    for dir in dirs {
        for ext in FIRMWARE_EXTENSIONS {
            let p = dir.join(format!("{target}.{ext}"));
            if let Ok(m) = std::fs::symlink_metadata(&p) {
                if m.file_type().is_file() {
                    return Some(p);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_is_found_by_name_and_symlinks_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("aaa_other.hex"), b"x").unwrap();
        assert_eq!(find_firmware(&[d.path()], "kb_km"), None);
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("kb_km.hex")).unwrap();
        assert_eq!(find_firmware(&[d.path()], "kb_km"), None);
        std::fs::write(d.path().join("kb_km.bin"), b"x").unwrap();
        assert_eq!(
            find_firmware(&[d.path()], "kb_km"),
            Some(d.path().join("kb_km.bin"))
        );
    }

    #[test]
    fn overlay_links_the_top_level_only() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir_all(home.join("keyboards/kb")).unwrap();
        std::fs::create_dir_all(home.join(".build")).unwrap();
        std::fs::write(home.join("Makefile"), "all:").unwrap();
        let o = overlay(&home, &d.path().join("o")).unwrap();
        assert!(o.join("keyboards/kb").is_dir());
        assert_eq!(
            std::fs::read_link(o.join("Makefile")).unwrap(),
            home.join("Makefile")
        );
        assert!(!o.join(".build").exists());
        // The root is ours: writing there leaves the tree untouched.
        std::fs::write(o.join("kb_x.hex"), "x").unwrap();
        assert!(!home.join("kb_x.hex").exists());
        assert_eq!(overlay(&home, &o).unwrap(), o);
    }

    #[test]
    fn commit_time_comes_from_version_txt_without_git() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(firmware_commit_time(d.path()), None);
        std::fs::write(d.path().join("version.txt"), "abc123\n").unwrap();
        assert_eq!(firmware_commit_time(d.path()), None);
        std::fs::write(d.path().join("version.txt"), "abc123\n1784494520\n").unwrap();
        assert_eq!(firmware_commit_time(d.path()), Some(1_784_494_520));
        assert_eq!(firmware_commit(d.path()), "abc123");
        std::fs::write(d.path().join("version.txt"), "abc123\n-5\n").unwrap();
        assert_eq!(firmware_commit_time(d.path()), None);
    }

    #[test]
    fn names_that_could_escape_are_refused() {
        assert!(safe_keyboard_name("planck/rev6"));
        for bad in ["", "../x", "a//b", "/abs", "a/./b", "a b", "a\\b"] {
            assert!(!safe_keyboard_name(bad), "{bad}");
        }
        assert_eq!(target_name("planck/rev6", "x"), "planck_rev6_x");
    }
}
