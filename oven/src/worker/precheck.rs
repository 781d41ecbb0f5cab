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
use std::path::Path;

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

/// Reads the layouts along `keyboard`'s folder path; deeper files override shallower ones.
pub fn layouts(home: &Path, keyboard: &str) -> Layouts {
    let mut out = Layouts::default();
    let mut dir = home.join("keyboards");
    for segment in keyboard.split('/') {
        dir.push(segment);
        for file in ["info.json", "keyboard.json"] {
            let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            let Ok(doc) = crate::hjson::parse(&text) else {
                continue;
            };
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
    }
    out
}

/// What the files along a keyboard's folder path say about its layer limit.
#[derive(Debug, Default)]
struct LayerSettings {
    /// `features.via` of its info.json / keyboard.json files or `VIA_ENABLE` of its rules.mk
    /// files (deeper files win).
    via: Option<bool>,
    /// The same for `features.dynamic_keymap` / `DYNAMIC_KEYMAP_ENABLE`.
    dynamic_keymap: Option<bool>,
    /// `dynamic_keymap.layer_count` of the JSON files or `DYNAMIC_KEYMAP_LAYER_COUNT` of config.h.
    layer_count: Option<usize>,
    /// `LAYER_STATE_8BIT` / `16BIT` / `32BIT` defined in a config.h: 8, 16, 32.
    layer_state_bits: Vec<usize>,
    /// Something the line reader cannot follow (a `MAX_LAYER` of its own, a computed count, a
    /// conditional rules.mk setting): then only the build can tell.
    unknown: bool,
}

/// `value` of a rules.mk `NAME = value` (also `:=`, `+=`, `?=`) line naming `name`.
fn rules_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(name)?;
    let rest = rest.trim_start();
    let rest = ["=", ":=", "?=", "+="]
        .iter()
        .find_map(|op| rest.strip_prefix(op))?;
    Some(rest.split('#').next().unwrap_or("").trim())
}

fn layer_settings(home: &Path, keyboard: &str) -> LayerSettings {
    let mut out = LayerSettings::default();
    let mut dir = home.join("keyboards");
    for segment in keyboard.split('/') {
        dir.push(segment);
        for file in ["info.json", "keyboard.json"] {
            let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
                continue;
            };
            let Ok(doc) = crate::hjson::parse(&text) else {
                continue;
            };
            let feature = |f: &str| {
                doc.pointer(&format!("/features/{f}"))
                    .and_then(Value::as_bool)
            };
            out.via = feature("via").or(out.via);
            out.dynamic_keymap = feature("dynamic_keymap").or(out.dynamic_keymap);
            if let Some(n) = doc
                .pointer("/dynamic_keymap/layer_count")
                .and_then(Value::as_u64)
            {
                out.layer_count = Some(n as usize);
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("rules.mk")) {
            for line in text.lines() {
                for (name, slot) in [
                    ("VIA_ENABLE", &mut out.via),
                    ("DYNAMIC_KEYMAP_ENABLE", &mut out.dynamic_keymap),
                ] {
                    match rules_value(line, name) {
                        Some("yes") => *slot = Some(true),
                        Some("no") => *slot = Some(false),
                        Some(_) => out.unknown = true,
                        None => {}
                    }
                }
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("config.h")) {
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["#define", "LAYER_STATE_8BIT", ..] => out.layer_state_bits.push(8),
                    ["#define", "LAYER_STATE_16BIT", ..] => out.layer_state_bits.push(16),
                    ["#define", "LAYER_STATE_32BIT", ..] => out.layer_state_bits.push(32),
                    ["#define", "MAX_LAYER", ..] => out.unknown = true,
                    ["#define", "DYNAMIC_KEYMAP_LAYER_COUNT", n] => match n.parse() {
                        Ok(n) => out.layer_count = Some(n),
                        Err(_) => out.unknown = true,
                    },
                    ["#define", "DYNAMIC_KEYMAP_LAYER_COUNT", ..] => out.unknown = true,
                    _ => {}
                }
            }
        }
    }
    out
}

/// How many layers a keymap may have on keyboard folder `keyboard` with the request's own
/// `config` (QMK's `MAX_LAYER`, checked by `quantum/keymap_introspection.c`; the rule is
/// `quantum/action_layer.h`'s): with the dynamic keymap (VIA turns it on,
/// `builddefs/common_features.mk`) its layer count (4 by default); otherwise 8, 16 or 32 by
/// `LAYER_STATE_8BIT` / `16BIT` / `32BIT` (checked in that order), 16 when none is defined.
/// `None` when the files say something the reader cannot follow: the build decides.
pub fn layer_limit(home: &Path, keyboard: &str, request: &Value) -> Option<LayerLimit> {
    let kb = layer_settings(home, keyboard);
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

    let known = layouts(home, keyboard);
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

    let limit = layer_limit(home, keyboard, request);
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
