//! Problems the tree shows before anything is compiled: a layout the keyboard does not have, a
//! layer whose length differs from the layout's key count, more layers than the firmware can
//! switch, a host language or converter the tree does not ship. Each would otherwise cost a
//! whole compile and end in a gcc message; here it ends in milliseconds, in a sentence the
//! Configurator shows in its status pane (it shows a failed job's `output`, but only
//! "Unexpected error" for a 4xx).
//!
//! The rules come from QMK: layouts and `layout_aliases` from the keyboard's `info.json` /
//! `keyboard.json` files along its folder path (`lib/python/qmk/info.py`), the layer limit
//! from the dynamic keymap's layer count or `LAYER_STATE_8BIT` / `16BIT` / `32BIT`
//! (`quantum/action_layer.h`, 16 when none is set; see [`layer_limit`]), host
//! languages from `quantum/keymap_extras/`, converters from `platforms/*/converters/`.
//! Where the tree says nothing (a keyboard without data-driven layouts), nothing is refused:
//! the build decides, as `qmk compile` would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Why a request was refused before compiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The result's `failure` class.
    pub failure: &'static str,
    /// The explanation, first in the result's `output`.
    pub message: String,
}

fn reject(failure: &'static str, message: String) -> Result<(), Rejection> {
    Err(Rejection { failure, message })
}

/// The layouts of a keyboard folder: name -> key count, and the layout aliases.
#[derive(Debug, Default)]
pub struct Layouts {
    pub keys: BTreeMap<String, usize>,
    pub aliases: BTreeMap<String, String>,
}

/// The keyboard's folders, from `keyboards/<first segment>` down to its own.
fn folders(home: &Path, keyboard: &str) -> Vec<PathBuf> {
    let mut dir = home.join("keyboards");
    keyboard
        .split('/')
        .map(|segment| {
            dir.push(segment);
            dir.clone()
        })
        .collect()
}

/// The info.json / keyboard.json documents of `folders`, shallow first (unreadable ones left
/// out), read once for every check.
fn json_docs(folders: &[PathBuf]) -> Vec<Value> {
    folders
        .iter()
        .flat_map(|dir| ["info.json", "keyboard.json"].map(|f| dir.join(f)))
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| crate::hjson::parse(&text).ok())
        .collect()
}

/// The layouts of `docs` (see [`json_docs`]); deeper files override shallower ones.
fn layouts_of(docs: &[Value]) -> Layouts {
    let mut out = Layouts::default();
    for doc in docs {
        if let Some(Value::Object(layouts)) = doc.get("layouts") {
            for (name, l) in layouts {
                if let Some(Value::Array(keys)) = l.get("layout") {
                    out.keys.insert(name.clone(), keys.len());
                }
            }
        }
        if let Some(Value::Object(aliases)) = doc.get("layout_aliases") {
            for (from, to) in aliases {
                if let Some(to) = to.as_str() {
                    out.aliases.insert(from.clone(), to.to_string());
                }
            }
        }
    }
    out
}

/// What the files along a keyboard's folder path say about its layer limit.
#[derive(Debug, Default)]
struct LayerSettings {
    /// `VIA_ENABLE`: the keyboard's rules.mk files (the last assignment wins), else
    /// `features.via` of its info.json / keyboard.json files (the deepest wins). QMK reads every
    /// rules.mk first and the JSON-derived rules with `?=` after (`builddefs/build_keyboard.mk`,
    /// `lib/python/qmk/cli/generate/rules_mk.py`), so a rules.mk always beats the JSON.
    via: Option<bool>,
    /// The same for `DYNAMIC_KEYMAP_ENABLE` / `features.dynamic_keymap`.
    dynamic_keymap: Option<bool>,
    /// `DYNAMIC_KEYMAP_LAYER_COUNT` of a config.h, else `dynamic_keymap.layer_count` of the
    /// JSON (its generated header only defines what is not yet defined).
    layer_count: Option<usize>,
    /// `LAYER_STATE_8BIT` / `16BIT` / `32BIT` defined in a config.h: 8, 16, 32.
    layer_state_bits: Vec<usize>,
    /// Something the line readers cannot follow (a `MAX_LAYER` of its own, a computed count, a
    /// setting under `#if`, `#undef`, a rules.mk conditional or `-D` flag): the build decides.
    unknown: bool,
}

/// `value` of a rules.mk `NAME = value` line (also `:=`, `+=`, `?=`, whose operator is
/// returned too) naming `name`.
fn rules_value<'a>(line: &'a str, name: &str) -> Option<(&'static str, &'a str)> {
    let rest = line.trim_start().strip_prefix(name)?.trim_start();
    let (op, rest) = ["?=", ":=", "+=", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|r| (*op, r)))?;
    Some((op, rest.split('#').next().unwrap_or("").trim()))
}

/// The names this reader follows in a config.h, and what a line does to them.
const LAYER_MACROS: [&str; 5] = [
    "LAYER_STATE_8BIT",
    "LAYER_STATE_16BIT",
    "LAYER_STATE_32BIT",
    "MAX_LAYER",
    "DYNAMIC_KEYMAP_LAYER_COUNT",
];

/// Reads one config.h into `out`: plain top-level `#define`s of [`LAYER_MACROS`] count;
/// anything else that touches them (under `#if`, `#undef`, inside a comment block it cannot
/// be sure of) makes the result unknown.
fn read_config_h(text: &str, out: &mut LayerSettings) {
    let mut depth = 0usize;
    let mut in_comment = false;
    for raw in text.lines() {
        // Drop /* ... */ spans (a define inside one is not a define).
        let mut line = String::new();
        let mut rest = raw;
        loop {
            if in_comment {
                match rest.find("*/") {
                    Some(i) => {
                        rest = &rest[i + 2..];
                        in_comment = false;
                    }
                    None => break,
                }
            } else {
                match rest.find("/*") {
                    Some(i) => {
                        line.push_str(&rest[..i]);
                        rest = &rest[i + 2..];
                        in_comment = true;
                    }
                    None => {
                        line.push_str(rest);
                        break;
                    }
                }
            }
        }
        let line = line.split("//").next().unwrap_or("");
        let Some(directive) = line.trim_start().strip_prefix('#') else {
            continue;
        };
        let words: Vec<&str> = directive.split_whitespace().collect();
        match words.as_slice() {
            [w, ..] if w.starts_with("if") => depth += 1,
            ["endif", ..] => depth = depth.saturating_sub(1),
            ["define" | "undef", name, ..] if LAYER_MACROS.contains(name) && depth > 0 => {
                out.unknown = true
            }
            ["undef", name, ..] if LAYER_MACROS.contains(name) => out.unknown = true,
            ["define", "LAYER_STATE_8BIT", ..] => out.layer_state_bits.push(8),
            ["define", "LAYER_STATE_16BIT", ..] => out.layer_state_bits.push(16),
            ["define", "LAYER_STATE_32BIT", ..] => out.layer_state_bits.push(32),
            ["define", "MAX_LAYER", ..] => out.unknown = true,
            ["define", "DYNAMIC_KEYMAP_LAYER_COUNT", n] => match n.parse() {
                Ok(n) => out.layer_count = Some(n),
                Err(_) => out.unknown = true,
            },
            ["define", "DYNAMIC_KEYMAP_LAYER_COUNT", ..] => out.unknown = true,
            _ => {}
        }
    }
}

/// Reads one rules.mk into `via` / `dynamic_keymap` (rules.mk order: later lines win, `?=`
/// only sets what is unset).
fn read_rules_mk(text: &str, rules: &mut [Option<bool>; 2], out: &mut LayerSettings) {
    let mut depth = 0usize;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if ["ifeq", "ifneq", "ifdef", "ifndef"].contains(&first) {
            depth += 1;
        } else if first == "endif" {
            depth = depth.saturating_sub(1);
        }
        for (i, name) in ["VIA_ENABLE", "DYNAMIC_KEYMAP_ENABLE"].iter().enumerate() {
            let Some((op, value)) = rules_value(line, name) else {
                continue;
            };
            if depth > 0 {
                // Set under a make conditional: not followed.
                out.unknown = true;
                continue;
            }
            let v = match value {
                "yes" => Some(true),
                "no" => Some(false),
                _ => None,
            };
            match (op, v) {
                (_, None) | ("+=", _) => out.unknown = true,
                ("?=", Some(v)) => {
                    rules[i].get_or_insert(v);
                }
                (_, Some(v)) => rules[i] = Some(v),
            }
        }
        // Flags that define the layer macros on the command line.
        if LAYER_MACROS.iter().any(|m| line.contains(m)) {
            out.unknown = true;
        }
    }
}

fn layer_settings(folders: &[PathBuf], docs: &[Value]) -> LayerSettings {
    let mut out = LayerSettings::default();
    let mut json: [Option<bool>; 2] = [None, None];
    let mut json_count = None;
    for doc in docs {
        for (i, f) in ["via", "dynamic_keymap"].iter().enumerate() {
            if let Some(on) = doc
                .pointer(&format!("/features/{f}"))
                .and_then(Value::as_bool)
            {
                json[i] = Some(on);
            }
        }
        if let Some(n) = doc
            .pointer("/dynamic_keymap/layer_count")
            .and_then(Value::as_u64)
        {
            json_count = Some(n as usize);
        }
    }
    let mut rules: [Option<bool>; 2] = [None, None];
    for dir in folders {
        if let Ok(text) = std::fs::read_to_string(dir.join("rules.mk")) {
            read_rules_mk(&text, &mut rules, &mut out);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("config.h")) {
            read_config_h(&text, &mut out);
        }
        // These come after the keymap's own settings, so they would override the keymap's
        // `config` too: not followed when they touch the layer settings at all.
        for file in ["post_rules.mk", "post_config.h"] {
            if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
                let names = ["VIA_ENABLE", "DYNAMIC_KEYMAP_ENABLE"];
                if LAYER_MACROS.iter().chain(&names).any(|m| text.contains(m)) {
                    out.unknown = true;
                }
            }
        }
    }
    out.via = rules[0].or(json[0]);
    out.dynamic_keymap = rules[1].or(json[1]);
    out.layer_count = out.layer_count.or(json_count);
    out
}

/// How many layers a keymap may have on keyboard folder `keyboard` with the request's own
/// `config` (QMK's `MAX_LAYER`, checked by `quantum/keymap_introspection.c`; the rule is
/// `quantum/action_layer.h`'s): with the dynamic keymap (VIA turns it on,
/// `builddefs/common_features.mk`) its layer count (4 by default); otherwise 8, 16 or 32 by
/// `LAYER_STATE_8BIT` / `16BIT` / `32BIT` (checked in that order), 16 when none is defined.
/// `None` when the files say something the reader cannot follow: the build decides.
pub fn layer_limit(home: &Path, keyboard: &str, request: &Value) -> Option<LayerLimit> {
    let folders = folders(home, keyboard);
    layer_limit_of(&folders, &json_docs(&folders), request)
}

fn layer_limit_of(folders: &[PathBuf], docs: &[Value], request: &Value) -> Option<LayerLimit> {
    let kb = layer_settings(folders, docs);
    if kb.unknown {
        return None;
    }
    let config = request.get("config");
    let feature = |f: &str| {
        config
            .and_then(|c| c.pointer(&format!("/features/{f}")))
            .and_then(Value::as_bool)
    };
    // The keymap's settings come after the keyboard's (its rules are read last).
    let dynamic = feature("via").or(kb.via).unwrap_or(false)
        || feature("dynamic_keymap")
            .or(kb.dynamic_keymap)
            .unwrap_or(false);
    if dynamic {
        let count = config
            .and_then(|c| c.pointer("/dynamic_keymap/layer_count"))
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .or(kb.layer_count)
            .unwrap_or(4);
        return Some(LayerLimit {
            max: count,
            set_by: "the dynamic keymap's layer count (DYNAMIC_KEYMAP_LAYER_COUNT, \
                     config.dynamic_keymap.layer_count; VIA turns the dynamic keymap on)",
        });
    }
    let bits = [8, 16, 32]
        .into_iter()
        .find(|bits| kb.layer_state_bits.contains(bits));
    Some(LayerLimit {
        max: bits.unwrap_or(16),
        set_by: match bits {
            Some(8) => "LAYER_STATE_8BIT in its config.h",
            Some(32) => "LAYER_STATE_32BIT in its config.h",
            Some(_) => "LAYER_STATE_16BIT in its config.h",
            None => "QMK's default layer state width, LAYER_STATE_16BIT",
        },
    })
}

/// A keyboard's layer limit and what sets it ([`layer_limit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerLimit {
    pub max: usize,
    /// The setting, as the refusal names it.
    pub set_by: &'static str,
}

fn list(names: impl IntoIterator<Item = String>) -> String {
    let names: Vec<String> = names.into_iter().collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Checks a validated request against keyboard folder `keyboard` (already resolved) of the
/// tree at `home`.
pub fn check(home: &Path, keyboard: &str, request: &Value) -> Result<(), Rejection> {
    let layout = request.get("layout").and_then(Value::as_str).unwrap_or("");
    let layers = request
        .get("layers")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);

    let folders = folders(home, keyboard);
    let docs = json_docs(&folders);
    let known = layouts_of(&docs);
    if !known.keys.is_empty() {
        let name = known
            .aliases
            .get(layout)
            .map(String::as_str)
            .unwrap_or(layout);
        let Some(&count) = known.keys.get(name) else {
            return reject(
                "unknown_layout",
                format!(
                    "The layout {layout} does not exist for {keyboard}. Its layouts: {}.",
                    list(known.keys.keys().cloned())
                ),
            );
        };
        for (i, layer) in layers.iter().enumerate() {
            let n = layer
                .as_array()
                .map_or(0, |keys| crate::keymap::layer_key_count(keys));
            if n != count {
                return reject(
                    "layer_size",
                    format!(
                        "Layer {i} has {n} key{}, but {layout} on {keyboard} has {count}: \
                         every layer must have exactly one keycode per key (layers[{i}]).",
                        if n == 1 { "" } else { "s" }
                    ),
                );
            }
        }
    }

    let limit = layer_limit_of(&folders, &docs, request);
    if let Some(limit) = limit.filter(|l| layers.len() > l.max) {
        return reject(
            "too_many_layers",
            format!(
                "The keymap has {} layers, but {keyboard} can use at most {}: {}.",
                layers.len(),
                limit.max,
                limit.set_by
            ),
        );
    }

    if let Some(lang) = request.get("host_language").and_then(Value::as_str) {
        let extras = home.join("quantum/keymap_extras");
        let ok = [format!("keymap_{lang}.h"), format!("sendstring_{lang}.h")]
            .iter()
            .all(|f| extras.join(f).is_file());
        if !ok {
            let mut have: Vec<String> = std::fs::read_dir(&extras)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let n = e.file_name().to_str()?.to_string();
                            let lang = n.strip_prefix("sendstring_")?.strip_suffix(".h")?;
                            extras
                                .join(format!("keymap_{lang}.h"))
                                .is_file()
                                .then(|| lang.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
            have.sort();
            return reject(
                "unknown_host_language",
                format!(
                    "The host language {lang} is not in this firmware (host_language). \
                     Languages with a send-string table: {}.",
                    list(have)
                ),
            );
        }
    }

    if let Some(conv) = request.get("converter").and_then(Value::as_str) {
        let suffix = format!("_to_{conv}");
        let found = std::fs::read_dir(home.join("platforms"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|p| std::fs::read_dir(p.path().join("converters")).ok())
            .flatten()
            .flatten()
            .any(|c| c.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)));
        if !found {
            return reject(
                "unknown_converter",
                format!("The converter {conv} is not in this firmware (converter)."),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let kb = d.path().join("keyboards/fam");
        std::fs::create_dir_all(kb.join("rev1")).unwrap();
        // Layouts in the parent, an override and an alias in the revision, as QMK trees do.
        std::fs::write(
            kb.join("info.json"),
            r#"{"layouts": {"LAYOUT": {"layout": [{"x":0,"y":0},{"x":1,"y":0},{"x":2,"y":0}]}}}"#,
        )
        .unwrap();
        std::fs::write(
            kb.join("rev1/keyboard.json"),
            "{\n // hjson comments are allowed\n \"layouts\": {\"LAYOUT_2\": {\"layout\": [{\"x\":0,\"y\":0},{\"x\":1,\"y\":0}]}},\n \"layout_aliases\": {\"LAYOUT_old\": \"LAYOUT\"}}",
        )
        .unwrap();
        std::fs::write(
            kb.join("rev1/config.h"),
            "#pragma once\n#define LAYER_STATE_8BIT\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("quantum/keymap_extras")).unwrap();
        for f in ["keymap_german.h", "sendstring_german.h", "keymap_french.h"] {
            std::fs::write(d.path().join("quantum/keymap_extras").join(f), "").unwrap();
        }
        d
    }

    fn req(layout: &str, layers: Value) -> Value {
        json!({"keyboard": "fam/rev1", "keymap": "k", "layout": layout, "layers": layers})
    }

    #[test]
    fn a_fitting_keymap_passes_including_through_a_layout_alias() {
        let t = tree();
        let three = json!([["KC_A", "KC_B", "KC_C"]]);
        assert_eq!(
            check(t.path(), "fam/rev1", &req("LAYOUT", three.clone())),
            Ok(())
        );
        assert_eq!(
            check(t.path(), "fam/rev1", &req("LAYOUT_old", three)),
            Ok(())
        );
        assert_eq!(
            check(
                t.path(),
                "fam/rev1",
                &req("LAYOUT_2", json!([["KC_A", "KC_B"]]))
            ),
            Ok(())
        );
    }

    #[test]
    fn each_kind_of_misfit_is_named_in_a_sentence() {
        let t = tree();
        let e = check(t.path(), "fam/rev1", &req("LAYOUT_60", json!([["KC_A"]]))).unwrap_err();
        assert_eq!(e.failure, "unknown_layout");
        assert_eq!(
            e.message,
            "The layout LAYOUT_60 does not exist for fam/rev1. Its layouts: LAYOUT, LAYOUT_2."
        );
        let e = check(
            t.path(),
            "fam/rev1",
            &req(
                "LAYOUT",
                json!([["KC_A", "KC_B", "KC_C"], ["KC_A", "KC_B"]]),
            ),
        )
        .unwrap_err();
        assert_eq!(e.failure, "layer_size");
        assert!(
            e.message
                .starts_with("Layer 1 has 2 keys, but LAYOUT on fam/rev1 has 3"),
            "{}",
            e.message
        );
        let nine = Value::Array(vec![json!(["KC_A", "KC_B", "KC_C"]); 9]);
        let e = check(t.path(), "fam/rev1", &req("LAYOUT", nine)).unwrap_err();
        assert_eq!(e.failure, "too_many_layers");
        assert_eq!(
            e.message,
            "The keymap has 9 layers, but fam/rev1 can use at most 8: LAYER_STATE_8BIT in its \
             config.h."
        );
        let mut r = req("LAYOUT", json!([["KC_A", "KC_B", "KC_C"]]));
        r["host_language"] = json!("german");
        assert_eq!(check(t.path(), "fam/rev1", &r), Ok(()));
        r["host_language"] = json!("french");
        let e = check(t.path(), "fam/rev1", &r).unwrap_err();
        assert_eq!(e.failure, "unknown_host_language");
        assert!(
            e.message
                .ends_with("Languages with a send-string table: german."),
            "{}",
            e.message
        );
    }

    /// A keyboard folder `name` with these files (name -> text).
    fn keyboard(t: &tempfile::TempDir, name: &str, files: &[(&str, &str)]) {
        let dir = t.path().join("keyboards").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
    }

    #[test]
    fn the_layer_limit_follows_action_layer_h() {
        let t = tree();
        let limit = |kb: &str, r: &Value| layer_limit(t.path(), kb, r).map(|l| l.max);
        let none = json!({});
        let with = |config: Value| json!({ "config": config });
        // No setting: LAYER_STATE_16BIT, QMK's default (what 17 layers on dz60 hit).
        keyboard(&t, "plain", &[("keyboard.json", "{}")]);
        assert_eq!(
            layer_limit(t.path(), "plain", &none).map(|l| l.max),
            Some(16)
        );
        assert_eq!(
            layer_limit(t.path(), "fam/rev1", &none).map(|l| l.max),
            Some(8)
        );
        keyboard(&t, "wide", &[("config.h", "#define LAYER_STATE_32BIT\n")]);
        assert_eq!(
            layer_limit(t.path(), "wide", &none).map(|l| l.max),
            Some(32)
        );
        // 8BIT is checked first when a tree defines more than one.
        keyboard(
            &t,
            "both",
            &[(
                "config.h",
                "#define LAYER_STATE_32BIT\n#define LAYER_STATE_8BIT\n",
            )],
        );
        assert_eq!(layer_limit(t.path(), "both", &none).map(|l| l.max), Some(8));
        // The dynamic keymap (VIA turns it on): its layer count, 4 by default, whatever the
        // layer state's width; from the keyboard or from the keymap's own config.
        let via = with(json!({"features": {"via": true}}));
        assert_eq!(layer_limit(t.path(), "plain", &via).map(|l| l.max), Some(4));
        assert_eq!(layer_limit(t.path(), "wide", &via).map(|l| l.max), Some(4));
        let six = with(
            json!({"features": {"dynamic_keymap": true}, "dynamic_keymap": {"layer_count": 6}}),
        );
        assert_eq!(layer_limit(t.path(), "plain", &six).map(|l| l.max), Some(6));
        keyboard(
            &t,
            "vial",
            &[(
                "keyboard.json",
                r#"{"features": {"via": true}, "dynamic_keymap": {"layer_count": 3}}"#,
            )],
        );
        assert_eq!(layer_limit(t.path(), "vial", &none).map(|l| l.max), Some(3));
        let off = with(json!({"features": {"via": false}}));
        assert_eq!(
            layer_limit(t.path(), "vial", &off).map(|l| l.max),
            Some(16),
            "the keymap's rules come last"
        );
        keyboard(
            &t,
            "rules",
            &[
                ("rules.mk", "VIA_ENABLE = yes # comment\n"),
                ("config.h", "#define DYNAMIC_KEYMAP_LAYER_COUNT 10\n"),
            ],
        );
        assert_eq!(
            layer_limit(t.path(), "rules", &none).map(|l| l.max),
            Some(10)
        );
        // What a line reader cannot follow is left to the build.
        keyboard(&t, "own", &[("config.h", "#define MAX_LAYER 5\n")]);
        assert_eq!(layer_limit(t.path(), "own", &none), None);
        keyboard(&t, "cond", &[("rules.mk", "VIA_ENABLE = $(VIA)\n")]);
        assert_eq!(layer_limit(t.path(), "cond", &none), None);
        keyboard(
            &t,
            "sum",
            &[
                ("rules.mk", "VIA_ENABLE = yes\n"),
                ("config.h", "#define DYNAMIC_KEYMAP_LAYER_COUNT (4 + 2)\n"),
            ],
        );
        assert_eq!(layer_limit(t.path(), "sum", &none), None);
        // QMK's precedence: every rules.mk before the JSON's `?=` rules; a config.h count
        // before the JSON's.
        keyboard(&t, "prec", &[("rules.mk", "VIA_ENABLE = no\n")]);
        keyboard(
            &t,
            "prec/child",
            &[("keyboard.json", r#"{"features": {"via": true}}"#)],
        );
        assert_eq!(limit("prec/child", &none), Some(16));
        keyboard(
            &t,
            "cnt",
            &[
                (
                    "keyboard.json",
                    r#"{"features": {"via": true}, "dynamic_keymap": {"layer_count": 3}}"#,
                ),
                (
                    "config.h",
                    "#pragma once\n# define DYNAMIC_KEYMAP_LAYER_COUNT 7\n",
                ),
            ],
        );
        assert_eq!(limit("cnt", &none), Some(7));
        keyboard(
            &t,
            "q",
            &[("rules.mk", "VIA_ENABLE = yes\nVIA_ENABLE ?= no\n")],
        );
        assert_eq!(limit("q", &none), Some(4));
        // Commented out, it is not set.
        keyboard(
            &t,
            "cmt",
            &[(
                "config.h",
                "/* #define LAYER_STATE_8BIT\n */\n// #define LAYER_STATE_8BIT\n",
            )],
        );
        assert_eq!(limit("cmt", &none), Some(16));
        // What the readers cannot be sure of.
        for (name, file, text) in [
            (
                "c1",
                "config.h",
                "#ifdef X\n#define LAYER_STATE_8BIT\n#endif\n",
            ),
            ("c2", "config.h", "#undef LAYER_STATE_16BIT\n"),
            ("c3", "rules.mk", "OPT_DEFS += -DLAYER_STATE_32BIT\n"),
            (
                "c4",
                "rules.mk",
                "ifeq ($(X),y)\n  VIA_ENABLE = yes\nendif\n",
            ),
            ("c5", "post_rules.mk", "VIA_ENABLE = yes\n"),
            (
                "c6",
                "post_config.h",
                "#define DYNAMIC_KEYMAP_LAYER_COUNT 9\n",
            ),
        ] {
            keyboard(&t, name, &[(file, text)]);
            assert_eq!(limit(name, &none), None, "{name}");
        }
        // The check itself: 17 layers on a keyboard without a setting.
        keyboard(
            &t,
            "plain",
            &[(
                "keyboard.json",
                r#"{"layouts": {"LAYOUT": {"layout": [{"x":0,"y":0}]}}}"#,
            )],
        );
        let layers = Value::Array(vec![json!(["KC_A"]); 17]);
        let r = json!({"keyboard": "plain", "keymap": "k", "layout": "LAYOUT", "layers": layers});
        let e = check(t.path(), "plain", &r).unwrap_err();
        assert_eq!(e.failure, "too_many_layers");
        assert_eq!(
            e.message,
            "The keymap has 17 layers, but plain can use at most 16: QMK's default layer state \
             width, LAYER_STATE_16BIT."
        );
        let mut sixteen = r.clone();
        sixteen["layers"] = Value::Array(vec![json!(["KC_A"]); 16]);
        assert_eq!(check(t.path(), "plain", &sixteen), Ok(()));
    }

    #[test]
    fn a_keyboard_without_data_driven_layouts_is_left_to_the_build() {
        let t = tree();
        std::fs::create_dir_all(t.path().join("keyboards/old")).unwrap();
        std::fs::write(t.path().join("keyboards/old/info.json"), "{}").unwrap();
        assert_eq!(
            check(t.path(), "old", &req("LAYOUT_any", json!([["KC_A"]]))),
            Ok(())
        );
    }
}
