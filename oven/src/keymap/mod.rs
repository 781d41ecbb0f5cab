//! The keymap request of `POST /v1/compile`, validated as code.
//!
//! Everything a client sends ends up in generated C, make or header text (contract §8.1 S1,
//! S2), so this module accepts only what it can prove harmless: an allow-list grammar for
//! keycodes ([`keycode`]), strict patterns for `keyboard` and `layout`, size limits
//! everywhere, and for each field of QMK's keymap schema (`data/schemas/keymap.jsonschema`)
//! either a validation that keeps it data ([`extras`], [`config`]) or a refusal with a reason.
//!
//! Field rules (the README's table lists them too):
//! - `keyboard`: lower-case path segments of `[a-z0-9_-]` joined by `/`, no empty segment, no
//!   `.` at all, at most [`MAX_KEYBOARD_LEN`] bytes. Aliases are resolved by the worker.
//! - `keymap`: any name of 1 to 250 characters without `/` or control characters
//!   ([`names`]); it is only shown, never used as a path.
//! - `layout`: `LAYOUT` or `LAYOUT_[0-9A-Za-z_]*`, at most [`MAX_LAYOUT_LEN`] bytes.
//! - `layers`: 1 to [`MAX_LAYERS`] arrays of 0 to [`MAX_KEYS_PER_LAYER`] keycode strings.
//! - `macros`, `encoders`, `dip_switches`, `config`, `host_language`, `converter`: see
//!   [`extras`] and [`config`].
//! - inert: `version` (integer 0..=2^31-1), `author`, `notes`, `documentation` (strings of at
//!   most [`MAX_TEXT_LEN`] bytes, no NUL), `commit`, `shortcuts`. A missing `documentation`
//!   gets the default text (contract §4.4 step 6).
//! - refused with a reason: `keycodes` and `modules` (they bring C code or declarations a JSON
//!   keymap cannot use safely), `branch` (Oven builds at one firmware commit), and any field
//!   QMK's schema does not know.
//!
//! The normalised request (keycodes re-printed without spaces, `config` keys sorted, fields in
//! a fixed order) is what the worker compiles and what [`KeymapRequest::content_hash`] hashes
//! for result caching.

pub mod config;
mod config_paths;
pub mod extras;
pub mod keycode;
pub mod names;

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub use extras::{DipSwitch, EncoderEntry, MacroAction, MacroFragment};
use keycode::canonical_keycode;
pub use keycode::{normalize_keycode, parse_keycode, KeycodeError};
pub use names::check_keymap;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
pub const MAX_KEYBOARD_LEN: usize = 128;
pub const MAX_LAYOUT_LEN: usize = 64;
pub const MAX_LAYERS: usize = 32;
pub const MAX_KEYS_PER_LAYER: usize = 512;
/// Longest keycode string (an "Any" key holds user text such as `LCTL(LSFT(LALT(KC_DEL)))`).
pub const MAX_KEYCODE_LEN: usize = 128;
/// Deepest nesting of function forms in one keycode.
pub const MAX_KEYCODE_DEPTH: usize = 8;
/// Longest `notes`, `documentation` or `author`.
pub const MAX_TEXT_LEN: usize = 16 * 1024;

/// The optional fields Oven accepts besides keyboard/keymap/layout/layers.
pub const OPTIONAL_FIELDS: &[&str] = &[
    "author",
    "commit",
    "config",
    "converter",
    "dip_switches",
    "documentation",
    "encoders",
    "host_language",
    "macros",
    "notes",
    "shortcuts",
    "version",
];

/// Fields refused on purpose, with the reason given to the client.
pub const REFUSED_FIELDS: &[(&str, &str)] = &[
    (
        "keycodes",
        "custom keycode declarations need C code to do anything, which a JSON keymap cannot carry",
    ),
    (
        "modules",
        "community modules add C code from outside the keymap to the build",
    ),
    (
        "branch",
        "Oven builds every job at one firmware commit (result.firmware_commit); branches are not offered",
    ),
];

/// Why a request was refused: the HTTP status and the message of the contract's error shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct RequestError {
    pub code: u16,
    pub message: String,
    /// Where the message is the contract's fixed text (422 `Buzz off hacker.`, 400 `Invalid
    /// JSON data!`): which field or what of the body, and why.
    pub detail: Option<String>,
}

impl RequestError {
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        RequestError {
            code: 400,
            message: message.into(),
            detail: None,
        }
    }

    /// The contract's 400 for a body that is not a keymap object, with the reason in `detail`.
    fn invalid_json(detail: impl Into<String>) -> Self {
        RequestError {
            detail: Some(detail.into()),
            ..RequestError::bad(INVALID_JSON)
        }
    }

    fn hacker(detail: impl Into<String>) -> Self {
        RequestError {
            code: 422,
            message: HACKER.to_string(),
            detail: Some(detail.into()),
        }
    }
}

/// The contract's message for falsy or unparsable JSON.
pub const INVALID_JSON: &str = "Invalid JSON data!";
/// The contract's message for a hostile keyboard or keymap.
pub const HACKER: &str = "Buzz off hacker.";

/// A validated compile request. Serialised, it is the keymap.json the worker hands to
/// `qmk compile` (absent options are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeymapRequest {
    pub keyboard: String,
    pub keymap: String,
    pub layout: String,
    pub layers: Vec<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoders: Option<Vec<Vec<EncoderEntry>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dip_switches: Option<Vec<DipSwitch>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macros: Option<Vec<Vec<MacroFragment>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converter: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortcuts: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    pub documentation: String,
}

impl KeymapRequest {
    /// Validates a request body (bytes as received).
    pub fn from_body(body: &[u8]) -> Result<Self, RequestError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(RequestError {
                code: 413,
                message: format!("request body too large (limit {MAX_BODY_BYTES} bytes)"),
                detail: None,
            });
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(RequestError::invalid_json(
                "the request body is empty: POST a keymap.json object",
            ));
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| RequestError::bad(format!("{INVALID_JSON} {e}")))?;
        Self::from_value(value)
    }

    /// Validates an already parsed JSON value, in the contract's order of checks.
    pub fn from_value(value: Value) -> Result<Self, RequestError> {
        let is_falsy = match &value {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
        };
        if is_falsy {
            // The original refuses every falsy JSON value with this message (contract §4.4).
            return Err(RequestError::invalid_json(format!(
                "the body is {value}: a keymap.json object with keyboard, keymap, layout and \
                 layers is expected"
            )));
        }
        let Value::Object(mut obj) = value else {
            return Err(RequestError::bad(format!(
                "{INVALID_JSON} expected a JSON object"
            )));
        };

        // Contract step 4 before step 5: the original's cheap hostility test comes first.
        if let Some(Value::String(kb)) = obj.get("keyboard") {
            if kb.contains('.') {
                return Err(RequestError::hacker(format!(
                    "keyboard: {} contains '.'",
                    quote(kb)
                )));
            }
        }
        if let Some(Value::String(km)) = obj.get("keymap") {
            if km.contains('/') {
                return Err(RequestError::hacker(format!(
                    "keymap: {} contains '/'",
                    quote(km)
                )));
            }
        }
        let missing: Vec<&str> = ["keyboard", "keymap", "layout", "layers"]
            .into_iter()
            .filter(|k| obj.get(*k).is_none_or(Value::is_null))
            .collect();
        if !missing.is_empty() {
            return Err(RequestError::bad(format!(
                "Invalid or missing keys: {}",
                missing.join(", ")
            )));
        }
        if let Some((field, why)) = REFUSED_FIELDS
            .iter()
            .find(|(f, _)| obj.get(*f).is_some_and(|v| !v.is_null()))
        {
            return Err(RequestError::bad(format!("{field}: not accepted: {why}")));
        }
        if let Some(extra) = obj.keys().find(|k| {
            !matches!(k.as_str(), "keyboard" | "keymap" | "layout" | "layers")
                && !OPTIONAL_FIELDS.contains(&k.as_str())
                && !REFUSED_FIELDS.iter().any(|(f, _)| f == k)
        }) {
            return Err(RequestError::bad(format!(
                "{}: field not accepted (not in QMK's keymap schema; Oven accepts keyboard, \
                 keymap, layout, layers, {})",
                clip(extra),
                OPTIONAL_FIELDS.join(", ")
            )));
        }

        let keyboard = take_string(&mut obj, "keyboard")?;
        check_keyboard(&keyboard).map_err(|e| RequestError::hacker(format!("keyboard: {e}")))?;
        let keymap = take_string(&mut obj, "keymap")?;
        check_keymap(&keymap).map_err(|e| RequestError::bad(format!("keymap: {e}")))?;
        let layout = take_string(&mut obj, "layout")?;
        check_layout(&layout).map_err(|e| RequestError::bad(format!("layout: {e}")))?;
        let layers = check_layers(obj.remove("layers").unwrap_or(Value::Null))?;

        let mut take = |k: &str| obj.remove(k).filter(|v| !v.is_null());
        let version = match take("version") {
            None => None,
            // JSON Schema counts `1.0` as an integer too (the OpenAPI document says integer).
            Some(Value::Number(n)) => match integral(&n).and_then(|v| u32::try_from(v).ok()) {
                Some(v) if v <= i32::MAX as u32 => Some(v),
                _ => {
                    return Err(RequestError::bad(
                        "version: must be an integer from 0 to 2147483647",
                    ))
                }
            },
            Some(_) => return Err(RequestError::bad("version: must be an integer")),
        };
        let encoders = take("encoders").map(extras::encoders).transpose()?;
        let dip_switches = take("dip_switches").map(extras::dip_switches).transpose()?;
        let macros = take("macros").map(extras::macros).transpose()?;
        let config = take("config").map(config::config).transpose()?;
        let host_language = take("host_language")
            .map(|v| extras::host_language(&v))
            .transpose()?;
        let converter = take("converter")
            .map(|v| extras::converter(&v))
            .transpose()?;
        let commit = take("commit").map(|v| extras::commit(&v)).transpose()?;
        let shortcuts = take("shortcuts").map(extras::shortcuts).transpose()?;
        let author = take_text(&mut obj, "author")?;
        let notes = take_text(&mut obj, "notes")?;
        let documentation = take_text(&mut obj, "documentation")?
            .unwrap_or_else(|| default_documentation(&keyboard, &keymap));

        Ok(KeymapRequest {
            keyboard,
            keymap,
            layout,
            layers,
            encoders,
            dip_switches,
            macros,
            config,
            host_language,
            converter,
            commit,
            shortcuts,
            version,
            author,
            notes,
            documentation,
        })
    }

    /// The normalised request as JSON (what the job stores and the worker compiles).
    pub fn to_value(&self) -> Value {
        // A struct of strings, numbers, vectors and validated JSON always serialises.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The normalised request as JSON and its content hash (the submit hot path).
    pub fn into_parts(self) -> (Value, String) {
        let hash = self.content_hash();
        (self.to_value(), hash)
    }

    /// Canonical JSON: fixed field order, compact, keycodes normalised, config keys sorted.
    pub fn canonical_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// sha256 (lower-case hex) of [`Self::canonical_json`]: equal requests, equal hashes.
    pub fn content_hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_json()))
    }
}

/// The `documentation` of the keymap skeleton (`GET /v1/skeletons/keymap`), without the
/// original's stray quotes (contract §4.2).
pub const SKELETON_DOCUMENTATION: &str = "This file is a QMK Configurator export. You can import this at <https://config.qmk.fm>. It can also be used directly with QMK's source code.\n\nTo setup your QMK environment check out the tutorial: <https://docs.qmk.fm/#/newbs>\n\nYou can convert this file to a keymap.c using this command: `qmk json2c {keymap}`\n\nYou can compile this keymap using this command: `qmk compile {keymap}`\n";

/// The documentation text the original inserts when the client sends none (contract §4.4).
fn default_documentation(keyboard: &str, keymap: &str) -> String {
    let file = format!("{}.json", names::display_stem(keyboard, keymap));
    SKELETON_DOCUMENTATION.replace("{keymap}", &file)
}

/// `n` as an integer if it is one: JSON Schema (and so the OpenAPI document) counts `7.0` as
/// the integer 7. `None` for a fraction or beyond 2^53.
pub(crate) fn integral(n: &serde_json::Number) -> Option<i64> {
    // 2^53 - 1: the integers every JSON reader holds exactly (the OpenAPI bound too).
    const MAX: i64 = 9_007_199_254_740_991;
    let i = match n.as_i64() {
        Some(i) => i,
        None => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() <= MAX as f64)
            .map(|f| f as i64)?,
    };
    (-MAX..=MAX).contains(&i).then_some(i)
}

fn take_string(obj: &mut Map<String, Value>, key: &str) -> Result<String, RequestError> {
    match obj.remove(key) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(RequestError::bad(format!("{key}: must be a string"))),
    }
}

fn take_text(obj: &mut Map<String, Value>, key: &str) -> Result<Option<String>, RequestError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            if s.len() > MAX_TEXT_LEN {
                Err(RequestError::bad(format!(
                    "{key}: longer than {MAX_TEXT_LEN} bytes"
                )))
            } else if s.contains('\0') {
                Err(RequestError::bad(format!(
                    "{key}: contains a NUL character"
                )))
            } else {
                Ok(Some(s))
            }
        }
        Some(_) => Err(RequestError::bad(format!("{key}: must be a string"))),
    }
}

/// A string shown in an error: JSON-quoted and cut short, so messages stay small and safe.
pub(crate) fn quote(s: &str) -> String {
    serde_json::to_string(&clip(s)).unwrap_or_default()
}

pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 40;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Position (byte offset) of the first offending character, shown as `'c' at N`.
fn unexpected(s: &str, at: usize) -> String {
    match s[at..].chars().next() {
        Some(c) => format!("unexpected {} at {at}", show_char(c)),
        None => format!("unexpected end at {at}"),
    }
}

pub(crate) fn show_char(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// Checks a keyboard name: `[a-z0-9_-]+` segments joined by single `/`.
pub fn check_keyboard(kb: &str) -> Result<(), String> {
    if kb.is_empty() {
        return Err("must not be empty".into());
    }
    if kb.len() > MAX_KEYBOARD_LEN {
        return Err(format!("longer than {MAX_KEYBOARD_LEN} bytes"));
    }
    let mut prev_slash = true;
    for (i, b) in kb.bytes().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => prev_slash = false,
            b'/' if !prev_slash => prev_slash = true,
            _ => {
                return Err(format!(
                    "{} is not a keyboard name: {}",
                    quote(kb),
                    unexpected(kb, i)
                ))
            }
        }
    }
    if prev_slash {
        return Err(format!(
            "{} is not a keyboard name: ends with '/'",
            quote(kb)
        ));
    }
    Ok(())
}

/// Checks a layout macro name: `LAYOUT` or `LAYOUT_[0-9A-Za-z_]*`.
pub fn check_layout(layout: &str) -> Result<(), String> {
    if layout.len() > MAX_LAYOUT_LEN {
        return Err(format!("longer than {MAX_LAYOUT_LEN} bytes"));
    }
    let ok = layout == "LAYOUT"
        || layout
            .strip_prefix("LAYOUT_")
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a layout macro (LAYOUT or LAYOUT_[0-9A-Za-z_]*)",
            quote(layout)
        ))
    }
}

/// Keymaps converted from C sometimes split one keycode at its comma over two entries
/// (`"LT(2"`, `"KC_MUTE)"`: the Configurator's own bundled werk_technica/one default). QMK
/// joins a layer's entries with `, ` into the layout macro's arguments, so it builds them as
/// the one keycode `LT(2, KC_MUTE)`. Returns how many entries from the start of `rest` join
/// into one keycode of the grammar (2 to 8), if any do.
fn split_keycode(rest: &[String]) -> Option<usize> {
    let mut joined = rest.first()?.clone();
    for (i, next) in rest.iter().enumerate().skip(1).take(7) {
        joined.push(',');
        joined.push_str(next);
        if joined.len() > MAX_KEYCODE_LEN {
            return None;
        }
        if parse_keycode(&joined).is_ok() {
            return Some(i + 1);
        }
    }
    None
}

/// How many keys a layer fills in QMK's layout macro: its entries joined with `,` and counted
/// at parenthesis depth 0 (a keycode split over entries, see [`split_keycode`], counts once).
pub fn layer_key_count(layer: &[Value]) -> usize {
    if layer.is_empty() {
        return 0;
    }
    let mut depth = 0i32;
    let mut count = 1;
    for (i, entry) in layer.iter().enumerate() {
        if i > 0 && depth == 0 {
            count += 1;
        }
        for b in entry.as_str().unwrap_or("").bytes() {
            match b {
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
        }
    }
    count
}

fn check_layers(value: Value) -> Result<Vec<Vec<String>>, RequestError> {
    let Value::Array(layers) = value else {
        return Err(RequestError::bad("layers: must be an array of arrays"));
    };
    if layers.is_empty() {
        return Err(RequestError::bad("layers: must not be empty"));
    }
    if layers.len() > MAX_LAYERS {
        return Err(RequestError::bad(format!(
            "layers: more than {MAX_LAYERS} layers"
        )));
    }
    let mut out = Vec::with_capacity(layers.len());
    for (l, layer) in layers.into_iter().enumerate() {
        let Value::Array(keys) = layer else {
            return Err(RequestError::bad(format!(
                "layers[{l}]: must be an array of keycode strings"
            )));
        };
        if keys.len() > MAX_KEYS_PER_LAYER {
            return Err(RequestError::bad(format!(
                "layers[{l}]: more than {MAX_KEYS_PER_LAYER} keys"
            )));
        }
        let mut strings = Vec::with_capacity(keys.len());
        for (k, key) in keys.into_iter().enumerate() {
            let Value::String(code) = key else {
                return Err(RequestError::bad(format!(
                    "layers[{l}][{k}]: must be a keycode string"
                )));
            };
            strings.push(code);
        }
        let mut codes = Vec::with_capacity(strings.len());
        let mut k = 0;
        while k < strings.len() {
            let n = match parse_keycode(&strings[k]) {
                Ok(()) => 1,
                Err(e) => split_keycode(&strings[k..]).ok_or_else(|| {
                    RequestError::bad(format!(
                        "layers[{l}][{k}]: {} is not a keycode: {e}",
                        quote(&strings[k])
                    ))
                })?,
            };
            for code in &strings[k..k + n] {
                codes.push(canonical_keycode(code.clone()));
            }
            k += n;
        }
        out.push(codes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn req() -> Value {
        json!({
            "keyboard": "clueboard/66/rev3",
            "keymap": "my_awesome-keymap",
            "layout": "LAYOUT_all",
            "layers": [["KC_A", "MO(1)", "LT(2, KC_SPC)"], ["KC_TRNS", "MT(MOD_LCTL | MOD_LSFT,KC_ESC)", "ANY(LSFT(KC_1))"]],
            "version": 1,
            "notes": "",
            "documentation": "doc"
        })
    }

    fn err(v: Value) -> RequestError {
        KeymapRequest::from_value(v).unwrap_err()
    }

    #[test]
    fn accepts_configurator_request_and_normalises_keycodes() {
        let r = KeymapRequest::from_value(req()).unwrap();
        assert_eq!(r.layers[0][2], "LT(2,KC_SPC)");
        assert_eq!(r.layers[1][1], "MT(MOD_LCTL|MOD_LSFT,KC_ESC)");
        assert_eq!(r.version, Some(1));
        assert_eq!(r.documentation, "doc");
        let v = r.to_value();
        assert_eq!(v["keyboard"], "clueboard/66/rev3");
        assert!(v.get("author").is_none());
        let hash = r.content_hash();
        assert_eq!(r.into_parts(), (v, hash));
    }

    #[test]
    fn hash_ignores_spacing_but_not_content() {
        let a = KeymapRequest::from_value(req()).unwrap();
        let mut spaced = req();
        spaced["layers"][0][2] = json!("LT( 2 ,KC_SPC )");
        let b = KeymapRequest::from_value(spaced).unwrap();
        assert_eq!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash().len(), 64);
        let mut other = req();
        other["layers"][0][0] = json!("KC_B");
        let c = KeymapRequest::from_value(other).unwrap();
        assert_ne!(a.content_hash(), c.content_hash());
    }

    #[test]
    fn contract_messages() {
        for falsy in [
            json!({}),
            json!([]),
            json!(null),
            json!(0),
            json!(""),
            json!(false),
        ] {
            let e = err(falsy.clone());
            assert_eq!((e.code, e.message.as_str()), (400, INVALID_JSON));
            let detail = e.detail.unwrap();
            assert!(
                detail.starts_with(&format!("the body is {falsy}: a keymap.json object")),
                "{detail}"
            );
        }
        let e = KeymapRequest::from_body(b"").unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, INVALID_JSON));
        assert_eq!(
            e.detail.unwrap(),
            "the request body is empty: POST a keymap.json object"
        );
        let e = KeymapRequest::from_body(b"{nope").unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.starts_with(INVALID_JSON), "{}", e.message);

        let mut v = req();
        v["keyboard"] = json!("../etc");
        let e = err(v);
        assert_eq!((e.code, e.message.as_str()), (422, HACKER));
        assert!(e.detail.unwrap().starts_with("keyboard:"));
        let mut v = req();
        v["keymap"] = json!("a/b");
        assert_eq!(err(v).code, 422);

        let mut v = req();
        v.as_object_mut().unwrap().remove("layout");
        v.as_object_mut().unwrap().remove("layers");
        let e = err(v);
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "Invalid or missing keys: layout, layers")
        );
    }

    #[test]
    fn hostile_names_are_refused() {
        for kb in ["a//b", "/a", "a/", "A", "a b", "a$b", "a\\b", "x\u{0}y"] {
            let mut v = req();
            v["keyboard"] = json!(kb);
            assert_eq!(err(v).code, 422, "{kb}");
        }
        // Keymap names are shown, never used as paths: QMK's names are accepted...
        for km in [
            "$(shell id)",
            "mine.v2",
            "d'or",
            "a+b",
            "clavier_é",
            "a b",
            "k\"m",
            "..",
        ] {
            let mut v = req();
            v["keymap"] = json!(km);
            assert_eq!(KeymapRequest::from_value(v).unwrap().keymap, km);
        }
        // ...but not control characters, empty or over-long ones (400, naming the field).
        for km in ["", "a\nb", "x\u{0}y", &"x".repeat(251)] {
            let mut v = req();
            v["keymap"] = json!(km);
            let e = err(v);
            assert_eq!(e.code, 400, "{km:?}");
            assert!(e.message.starts_with("keymap: "), "{}", e.message);
        }
        for layout in ["layout", "LAYOUTX", "LAYOUT_a b", "LAYOUT()"] {
            let mut v = req();
            v["layout"] = json!(layout);
            assert_eq!(err(v).code, 400, "{layout}");
        }
    }

    #[test]
    fn keycode_errors_name_position() {
        let mut v = req();
        v["layers"][1][2] = json!("KC_A;");
        assert_eq!(
            err(v).message,
            r#"layers[1][2]: "KC_A;" is not a keycode: unexpected ';' at 4"#
        );
        for bad in [
            "KC_A\"; #include",
            "MO(",
            "MO()",
            "MO(1",
            "MO(1))",
            "KC_A|",
            "|KC_A",
            "1KC",
            "0x",
            "0xZZ",
            "KC_A KC_B",
            "a(b)(c)",
            "__asm__(\".incbin\")",
            "LT(1,,KC_A)",
            "KC_A\n",
            "KC_\u{e9}",
            "",
            "   ",
        ] {
            assert!(parse_keycode(bad).is_err(), "{bad:?}");
        }
        for good in [
            "KC_A",
            "_x",
            "0",
            "0x7E00",
            "A(B(C(D)))",
            "KC_A|KC_B|3",
            " KC_A ",
        ] {
            assert!(parse_keycode(good).is_ok(), "{good:?}");
        }
        let deep = format!("{}KC_A{}", "F(".repeat(9), ")".repeat(9));
        assert!(matches!(
            parse_keycode(&deep),
            Err(KeycodeError::TooDeep { .. })
        ));
        assert_eq!(parse_keycode(&"A".repeat(129)), Err(KeycodeError::TooLong));
    }

    #[test]
    fn limits_and_types() {
        let mut v = req();
        v["layers"] = json!(vec![vec!["KC_A"]; 33]);
        assert!(err(v).message.contains("more than 32 layers"));
        let mut v = req();
        v["layers"] = json!([vec!["KC_A"; 513]]);
        assert!(err(v).message.contains("more than 512 keys"));
        let mut v = req();
        v["layers"] = json!([[1]]);
        assert_eq!(err(v).message, "layers[0][0]: must be a keycode string");
        let mut v = req();
        v["layers"] = json!([]);
        assert_eq!(err(v).code, 400);
        let mut v = req();
        v["keyboard"] = json!(["a"]);
        assert_eq!(err(v).message, "keyboard: must be a string");
        let mut v = req();
        v["version"] = json!(-1);
        assert!(err(v).message.starts_with("version:"));
        for bad in [json!(1.5), json!(2147483648.0), json!(-1.0)] {
            let mut v = req();
            v["version"] = bad;
            assert!(err(v).message.starts_with("version:"));
        }
        // An integral float is an integer to JSON Schema, so to the OpenAPI document too.
        let mut v = req();
        v["version"] = json!(7.0);
        assert_eq!(KeymapRequest::from_value(v).unwrap().version, Some(7));
        let mut v = req();
        v["notes"] = json!("x".repeat(MAX_TEXT_LEN + 1));
        assert!(err(v).message.starts_with("notes:"));
        for field in [
            "branch", "config", "macros", "encoders", "keycodes", "modules", "whatever",
        ] {
            let mut v = req();
            v[field] = json!("x");
            let e = err(v);
            assert_eq!(e.code, 400);
            assert!(e.message.starts_with(&format!("{field}:")), "{}", e.message);
        }
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert_eq!(KeymapRequest::from_body(&big).unwrap_err().code, 413);
        // Deep JSON nesting is serde_json's recursion limit, not a stack overflow.
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(
            KeymapRequest::from_body(deep.as_bytes()).unwrap_err().code,
            413
        );
        let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        assert_eq!(
            KeymapRequest::from_body(deep.as_bytes()).unwrap_err().code,
            400
        );
    }

    #[test]
    fn every_field_of_the_configurator_bundle_is_accepted() {
        // Shapes from qmk/qmk_configurator public/keymaps (splitkb_aurora_corne_rev1,
        // binepad_kn01, blu_vimclutch, novelkeys_nk65_v1).
        let mut v = req();
        v["commit"] = json!("6b60089fc704e4fc6bb75686b725a19da6a92fa9");
        v["author"] = json!("qmk");
        v["config"] = json!({"features": {"oled": true, "rgb_matrix": true, "rgblight": false},
            "encoder": {"enabled": true}, "tapping": {"term": 200, "force_hold": true}});
        v["encoders"] = json!([[{"ccw": "KC_VOLD", "cw": "KC_VOLU"}]]);
        v["macros"] =
            json!([[{"action": "tap", "keycodes": ["ESC"]}, {"action": "delay", "duration": 50}]]);
        v["host_language"] = json!("german");
        v["shortcuts"] = json!({});
        let r = KeymapRequest::from_value(v).unwrap();
        let out = r.to_value();
        assert_eq!(
            out["macros"][0][1],
            json!({"action": "delay", "duration": 50})
        );
        assert_eq!(out["encoders"][0][0]["cw"], "KC_VOLU");
        assert_eq!(out["config"]["tapping"]["term"], 200);
        assert_eq!(out["host_language"], "german");
        assert_eq!(out["commit"], "6b60089fc704e4fc6bb75686b725a19da6a92fa9");
        // Settings in another order are the same request.
        let mut w = req();
        w["commit"] = json!("6b60089fc704e4fc6bb75686b725a19da6a92fa9");
        w["author"] = json!("qmk");
        w["config"] = json!({"tapping": {"force_hold": true, "term": 200}, "encoder": {"enabled": true},
            "features": {"rgblight": false, "rgb_matrix": true, "oled": true}});
        w["encoders"] = json!([[{"cw": "KC_VOLU", "ccw": "KC_VOLD"}]]);
        w["macros"] =
            json!([[{"keycodes": ["ESC"], "action": "tap"}, {"duration": 50, "action": "delay"}]]);
        w["host_language"] = json!("german");
        w["shortcuts"] = json!({});
        assert_eq!(
            KeymapRequest::from_value(w).unwrap().content_hash(),
            r.content_hash()
        );
    }

    #[test]
    fn a_keycode_split_at_its_comma_is_one_key_as_qmk_builds_it() {
        // As in the Configurator's werk_technica_one_default.json.
        let mut v = req();
        v["layers"] = json!([["KC_A", "LT(2", " KC_MUTE)", "KC_B"]]);
        let r = KeymapRequest::from_value(v).unwrap();
        assert_eq!(r.layers[0], ["KC_A", "LT(2", "KC_MUTE)", "KC_B"]);
        let layer: Vec<Value> = r.layers[0].iter().map(|s| json!(s)).collect();
        assert_eq!(layer_key_count(&layer), 3);
        // Only a join that is a keycode of the grammar is taken.
        for bad in [
            json!([["LT(2", "KC_A;)"]]),
            json!([["LT(2"]]),
            json!([["KC_A)", "LT(1"]]),
        ] {
            let mut v = req();
            v["layers"] = bad;
            assert_eq!(err(v).code, 400);
        }
    }

    #[test]
    fn missing_documentation_gets_default() {
        let mut v = req();
        v.as_object_mut().unwrap().remove("documentation");
        let r = KeymapRequest::from_value(v).unwrap();
        assert!(r
            .documentation
            .contains("qmk compile clueboard_66_rev3_my_awesome-keymap.json"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = KeymapRequest::from_body(&body);
        }

        #[test]
        fn arbitrary_keycodes_never_panic_and_accepted_ones_are_safe(s in "\\PC{0,40}") {
            if let Ok(out) = normalize_keycode(s.clone()) {
                prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b"_(),|".contains(&b)), "{}", out);
                // Printing is a fixed point of parsing.
                prop_assert_eq!(normalize_keycode(out.clone()).unwrap(), out);
            }
        }

        #[test]
        fn grammar_like_keycodes_never_panic(s in "[A-Z_0-9x(),| ;\"#]{0,60}") {
            let _ = parse_keycode(&s);
        }

        #[test]
        fn arbitrary_json_requests_never_panic(
            kb in "\\PC{0,20}", km in "\\PC{0,20}", layout in "\\PC{0,12}",
            keys in proptest::collection::vec("\\PC{0,12}", 0..8),
        ) {
            let v = json!({"keyboard": kb, "keymap": km, "layout": layout, "layers": [keys]});
            if let Ok(r) = KeymapRequest::from_value(v) {
                prop_assert!(check_keyboard(&r.keyboard).is_ok());
                prop_assert!(!r.keymap.contains(['$', '(', '.', '/']));
            }
        }
    }
}
