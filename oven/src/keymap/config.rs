//! The keymap's `config` object: keyboard settings QMK's generators write into the build's
//! `config.h` (`qmk generate-config-h`) and `rules.mk` (`qmk generate-rules-mk`).
//!
//! Only what is provably inert is let through: a leaf whose dotted path is in
//! [`CONFIG_PATHS`] (the `data/mappings` entries QMK renders as a number or a boolean) with a
//! JSON integer or boolean of that kind, and `features.<snake_case>` booleans (rendered as
//! `<NAME>_ENABLE = yes|no`). Strings, arrays and every other path are refused with the path
//! named: they would be pasted into generated C or make text.

use serde_json::{Map, Value};

pub use super::config_paths::CONFIG_PATHS;
use super::{clip, RequestError};

/// How QMK renders a config value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `#define NAME <integer>` (value types `int` and `hex`).
    Int,
    /// `#define NAME true|false`, a bare `#define NAME`, or `NAME = yes|no` (types `bool`,
    /// `flag`).
    Bool,
}

/// Nesting of `config` objects accepted (the deepest mapped path has 4 segments).
const MAX_DEPTH: usize = 6;
/// Leaves accepted in one `config`.
const MAX_LEAVES: usize = 256;

fn kind_of(path: &str) -> Option<Kind> {
    CONFIG_PATHS
        .binary_search_by(|(p, _, _)| (*p).cmp(path))
        .ok()
        .map(|i| CONFIG_PATHS[i].1)
}

/// Whether `path` names a group of settings: `features`, or a prefix of a table path.
fn is_group(path: &str) -> bool {
    if path == "features" {
        return true;
    }
    let prefix = format!("{path}.");
    let i = CONFIG_PATHS.partition_point(|(p, _, _)| *p < prefix.as_str());
    CONFIG_PATHS
        .get(i)
        .is_some_and(|(p, _, _)| p.starts_with(&prefix))
}

fn is_snake_case(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// Validates `config`; returns it with every object's keys sorted (so equal settings hash
/// equally whatever order they were sent in).
pub fn config(v: Value) -> Result<Map<String, Value>, RequestError> {
    let Value::Object(o) = v else {
        return Err(RequestError::bad("config: must be an object"));
    };
    let mut leaves = 0;
    walk("config", "", o, 0, &mut leaves)
}

fn walk(
    field: &str,
    prefix: &str,
    o: Map<String, Value>,
    depth: usize,
    leaves: &mut usize,
) -> Result<Map<String, Value>, RequestError> {
    if depth >= MAX_DEPTH {
        return Err(RequestError::bad(format!("{field}: nested too deeply")));
    }
    let mut entries: Vec<(String, Value)> = o.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = Map::new();
    for (key, value) in entries {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let here = format!("config.{}", clip(&path));
        let value = match value {
            Value::Object(inner) if is_group(&path) => {
                Value::Object(walk(&here, &path, inner, depth + 1, leaves)?)
            }
            Value::Object(_) => {
                return Err(RequestError::bad(format!(
                    "{here}: not accepted here (a setting, not a group of settings)"
                )))
            }
            leaf => {
                *leaves += 1;
                if *leaves > MAX_LEAVES {
                    return Err(RequestError::bad(format!(
                        "config: more than {MAX_LEAVES} settings"
                    )));
                }
                check_leaf(&here, &path, leaf)?
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn check_leaf(field: &str, path: &str, v: Value) -> Result<Value, RequestError> {
    let kind = match path.strip_prefix("features.") {
        Some(name) if is_snake_case(name) => Some(Kind::Bool),
        Some(_) => {
            return Err(RequestError::bad(format!(
                "{field}: not a feature name (snake_case)"
            )))
        }
        None => kind_of(path),
    };
    match (kind, &v) {
        (Some(Kind::Bool), Value::Bool(_)) => Ok(v),
        // JSON Schema counts `200.0` as an integer: it is one, written as QMK reads it.
        (Some(Kind::Int), Value::Number(n)) => match super::integral(n) {
            Some(i) => Ok(Value::from(i)),
            None => Err(RequestError::bad(format!(
                "{field}: must be an integer of at most 2^53 - 1"
            ))),
        },
        (Some(Kind::Bool), _) => Err(RequestError::bad(format!("{field}: must be true or false"))),
        (Some(Kind::Int), _) => Err(RequestError::bad(format!(
            "{field}: must be an integer of at most 2^53 - 1"
        ))),
        (None, _) => Err(RequestError::bad(format!(
            "{field}: not accepted (Oven accepts the config settings QMK renders as a number \
             or a boolean, and features.<name>: true|false; see the README)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The OpenAPI document's `KeymapConfig` states exactly the table (clients and schemathesis
    /// generate requests from it).
    #[test]
    fn the_openapi_config_schema_is_the_table() {
        let doc: Value = serde_json::from_str(include_str!("../http/openapi.json")).unwrap();
        let mut found = Vec::new();
        fn walk(prefix: &str, s: &Value, found: &mut Vec<(String, Kind)>) {
            for (k, v) in s["properties"].as_object().unwrap() {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match v["type"].as_str() {
                    Some("integer") => found.push((path, Kind::Int)),
                    Some("boolean") => found.push((path, Kind::Bool)),
                    _ if path == "features" => {}
                    _ => walk(&path, v, found),
                }
            }
        }
        walk(
            "",
            &doc["components"]["schemas"]["KeymapConfig"],
            &mut found,
        );
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let table: Vec<(String, Kind)> = CONFIG_PATHS
            .iter()
            .map(|(p, k, _)| (p.to_string(), *k))
            .collect();
        assert_eq!(found, table);
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(CONFIG_PATHS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn configurator_settings_pass_and_come_back_sorted() {
        let c = config(json!({
            "tapping": {"term": 200, "permissive_hold": true, "force_hold": true},
            "features": {"rgblight": false, "oled": true},
            "encoder": {"enabled": true},
            "rgblight": {"hue_steps": 8, "sleep": true},
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"encoder":{"enabled":true},"features":{"oled":true,"rgblight":false},"rgblight":{"hue_steps":8,"sleep":true},"tapping":{"force_hold":true,"permissive_hold":true,"term":200}}"#
        );
    }

    #[test]
    fn strings_unknown_paths_and_wrong_kinds_are_refused_by_path() {
        let e = |v| config(v).unwrap_err().message;
        assert!(e(json!({"tapping": {"term": "200) evil("}}))
            .starts_with("config.tapping.term: must be an integer"));
        assert!(e(json!({"usb": {"manufacturer": "x"}}))
            .starts_with("config.usb.manufacturer: not accepted"));
        assert!(e(json!({"features": {"Bad-Name": true}}))
            .starts_with("config.features.Bad-Name: not a feature"));
        assert!(e(json!({"features": {"oled": 1}}))
            .starts_with("config.features.oled: must be true or false"));
        assert!(e(json!({"tapping": {"term": 1.5}})).contains("must be an integer"));
        assert!(e(json!({"tapping": {"term": 9007199254740992u64}})).contains("must be an integer"));
        assert!(e(json!([])).starts_with("config: must be an object"));
        // A setting given as an object is not a group (schemathesis found `ws2812.rgbw: {}`).
        assert!(
            e(json!({"ws2812": {"rgbw": {}}})).starts_with("config.ws2812.rgbw: not accepted here")
        );
        assert!(e(json!({"nothing": {}})).starts_with("config.nothing: not accepted here"));
        assert!(config(json!({"ws2812": {}, "features": {}})).is_ok());
    }
}
