//! The merged keycode specs (`constants/keycodes_<ver>.json`, `keycodes_<lang>_<ver>.json`):
//! each version is the cumulative merge of every version up to it, base file plus fragments.

use crate::info::deep_update;
use crate::json;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::path::Path;

type Obj = Map<String, Value>;

/// `<prefix>_<d>.<d>.<d><suffix>` → the version, single digits only (QMK's glob).
fn version_of(file: &str, prefix: &str, suffix: &str) -> Option<String> {
    let rest = file
        .strip_prefix(prefix)?
        .strip_prefix('_')?
        .strip_suffix(suffix)?;
    let b = rest.as_bytes();
    let ok = b.len() == 5
        && b[0].is_ascii_digit()
        && b[1] == b'.'
        && b[2].is_ascii_digit()
        && b[3] == b'.'
        && b[4].is_ascii_digit();
    ok.then(|| rest.to_owned())
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Versions available for `prefix` in `dir`, newest first.
fn versions(dir: &Path, prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = file_names(dir)
        .iter()
        .filter_map(|f| version_of(f, prefix, ".hjson"))
        .collect();
    v.sort_by(|a, b| b.cmp(a));
    v
}

/// QMK's `merge_ordered_dicts`: `!delete!` removes, `!reset!` replaces, lists append.
fn merge_ordered(dicts: Vec<Obj>) -> Obj {
    let mut result = Obj::new();
    for d in dicts {
        for (k, v) in d {
            add_entry(&mut result, k, v);
        }
    }
    result
}

fn add_entry(target: &mut Obj, k: String, v: Value) {
    match v {
        Value::Object(nv) if target.contains_key(&k) => {
            let merged = if nv.contains_key("!reset!") {
                nv
            } else {
                let old = match target.get(&k) {
                    Some(Value::Object(o)) => o.clone(),
                    _ => Obj::new(),
                };
                merge_ordered(vec![old, nv])
            };
            let mut merged = merged;
            merged.shift_remove("!reset!");
            target.insert(k, Value::Object(merged));
        }
        Value::Array(nv) if target.contains_key(&k) => {
            if nv.first().and_then(Value::as_str) == Some("!reset!") {
                target.insert(k, Value::Array(nv[1..].to_vec()));
            } else if let Some(Value::Array(old)) = target.get_mut(&k) {
                old.extend(nv);
            }
        }
        Value::String(s) if s == "!delete!" => {
            target.shift_remove(&k);
        }
        other => {
            target.insert(k, other);
        }
    }
}

fn sort_object(v: Option<&Value>) -> Value {
    let mut entries: Vec<(String, Value)> = v
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(entries.into_iter().collect())
}

/// Builds one merged spec.
fn load_spec(dir: &Path, prefix: &str, version: &str) -> Result<Obj, json::LoadError> {
    let mut all = versions(dir, prefix);
    all.reverse();
    let upto: Vec<&String> = all.iter().take_while(|v| v.as_str() <= version).collect();
    let names = file_names(dir);

    // Files grouped by fragment type, "_" (the base files) first.
    let mut groups: Vec<(String, Vec<String>)> = vec![("_".into(), Vec::new())];
    for v in &upto {
        groups[0].1.push(format!("{prefix}_{v}.hjson"));
        let frag_prefix = format!("{prefix}_{v}_");
        for n in &names {
            if let Some(frag) = n
                .strip_prefix(&frag_prefix)
                .and_then(|r| r.strip_suffix(".hjson"))
            {
                match groups.iter_mut().find(|(g, _)| g == frag) {
                    Some((_, files)) => files.push(n.clone()),
                    None => groups.push((frag.to_owned(), vec![n.clone()])),
                }
            }
        }
    }
    let mut spec = Obj::new();
    for (_, files) in groups {
        let mut specs = Vec::new();
        for f in files {
            if let Value::Object(o) = json::load(&dir.join(f))? {
                specs.push(o);
            }
        }
        deep_update(&mut spec, merge_ordered(specs));
    }
    spec.insert("version".into(), Value::String(version.to_owned()));
    let kc = sort_object(spec.get("keycodes"));
    spec.insert("keycodes".into(), kc);
    let ranges = sort_object(spec.get("ranges"));
    spec.insert("ranges".into(), ranges);
    Ok(spec)
}

/// Every merged spec: (output file name, content).
pub fn merged_specs(keycodes_dir: &Path) -> Result<Vec<(String, Obj)>, json::LoadError> {
    let mut out = Vec::new();
    for v in versions(keycodes_dir, "keycodes") {
        out.push((
            format!("keycodes_{v}.json"),
            load_spec(keycodes_dir, "keycodes", &v)?,
        ));
    }
    let extras = keycodes_dir.join("extras");
    // QMK takes the language as the second `_` token of the file name.
    let langs: BTreeSet<String> = file_names(&extras)
        .iter()
        .filter(|f| f.starts_with("keycodes_"))
        .filter(|f| {
            f.strip_suffix(".hjson")
                .and_then(|s| s.rsplit_once('_'))
                .is_some_and(|(_, v)| version_of(&format!("x_{v}"), "x", "").is_some())
        })
        .filter_map(|f| f.split('_').nth(1).map(str::to_owned))
        .collect();
    for lang in langs {
        let prefix = format!("keycodes_{lang}");
        for v in versions(&extras, &prefix) {
            out.push((
                format!("keycodes_{lang}_{v}.json"),
                load_spec(&extras, &prefix, &v)?,
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Obj {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_rules() {
        let m = merge_ordered(vec![
            obj(json!({"a": {"x": 1, "y": 2}, "l": [1], "d": 5, "r": {"k": 1}})),
            obj(json!({"a": {"y": 3}, "l": [2], "d": "!delete!", "r": {"!reset!": true, "n": 2}})),
        ]);
        assert_eq!(
            Value::Object(m),
            json!({"a": {"x": 1, "y": 3}, "l": [1, 2], "r": {"n": 2}})
        );
    }

    #[test]
    fn versions_are_single_digit_globs() {
        assert_eq!(
            version_of("keycodes_0.0.1.hjson", "keycodes", ".hjson").as_deref(),
            Some("0.0.1")
        );
        assert_eq!(
            version_of("keycodes_0.0.10.hjson", "keycodes", ".hjson"),
            None
        );
        assert_eq!(
            version_of("keycodes_0.0.1_audio.hjson", "keycodes", ".hjson"),
            None
        );
    }
}
