//! Problems the tree shows before anything is compiled: a layout the keyboard does not have, a
//! layer whose length differs from the layout's key count, more layers than the firmware can
//! switch, a host language or converter the tree does not ship. Each would otherwise cost a
//! whole compile and end in a gcc message; here it ends in milliseconds, in a sentence the
//! Configurator shows in its status pane (it shows a failed job's `output`, but only
//! "Unexpected error" for a 4xx).
//!
//! The rules come from QMK: layouts and `layout_aliases` from the keyboard's `info.json` /
//! `keyboard.json` files along its folder path (`lib/python/qmk/info.py`), the layer limit
//! from `LAYER_STATE_8BIT` / `LAYER_STATE_16BIT` (`quantum/action_layer.h`, 32 otherwise), host
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

/// How many layers the keyboard's firmware can switch (`layer_state_t`'s width).
pub fn max_layers(home: &Path, keyboard: &str) -> usize {
    let mut dir = home.join("keyboards");
    let mut max = 32;
    for segment in keyboard.split('/') {
        dir.push(segment);
        if let Ok(text) = std::fs::read_to_string(dir.join("config.h")) {
            for line in text.lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["#define", "LAYER_STATE_8BIT", ..] => max = max.min(8),
                    ["#define", "LAYER_STATE_16BIT", ..] => max = max.min(16),
                    _ => {}
                }
            }
        }
    }
    max
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

    let max = max_layers(home, keyboard);
    if layers.len() > max {
        return reject(
            "too_many_layers",
            format!(
                "The keymap has {} layers, but {keyboard} can use at most {max}.",
                layers.len()
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
            "The keymap has 9 layers, but fam/rev1 can use at most 8."
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
