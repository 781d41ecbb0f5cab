//! The optional fields of QMK's keymap schema (`data/schemas/keymap.jsonschema`) that Oven
//! accepts, each validated so that it stays data when QMK's generators turn it into C, make or
//! header text:
//!
//! - `macros` (QMK JSON macros): text fragments come out as exactly the bytes given (QMK escapes
//!   `\`, `"`, tab and newlines in `lib/python/qmk/keymap.py::_generate_macros_function`), action
//!   keycodes are identifiers (QMK pastes them as `X_<keycode>` unescaped), durations integers.
//! - `encoders`, `dip_switches`: every entry through the keycode grammar ([`super::keycode`]).
//! - `config`: only paths that QMK renders as a number or a boolean ([`super::config`]).
//! - `host_language`, `converter`: identifiers (they become `#include "keymap_<x>.h"` and
//!   `CONVERT_TO=<x>`); whether the tree has them is checked before the build (worker).
//! - `commit`, `shortcuts`: Configurator bookkeeping that QMK ignores.

use serde::Serialize;
use serde_json::{Map, Value};

use super::keycode::{canonical_keycode, parse_keycode};
use super::{quote, RequestError, MAX_LAYERS};

/// QMK has 32 macro keycodes (`QK_MACRO_0` to `QK_MACRO_31`, `quantum/keycodes.h`).
pub const MAX_MACROS: usize = 32;
/// Fragments in one macro.
pub const MAX_MACRO_FRAGMENTS: usize = 256;
/// Characters of one macro text fragment (the OpenAPI document's maxLength).
pub const MAX_MACRO_TEXT: usize = 1024;
/// Encoders (or dip switches) per layer.
pub const MAX_ENCODERS: usize = 32;
/// Longest `host_language`, `converter`, action keycode or `commit`.
pub const MAX_IDENT_LEN: usize = 64;

/// One piece of a QMK JSON macro.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MacroFragment {
    /// Typed as given (`SEND_STRING("...")`).
    Text(String),
    Action(MacroAction),
}

/// `{"action": ..., "keycodes": [...], "duration": N}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MacroAction {
    /// `beep`, `delay`, `down`, `tap` or `up`.
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keycodes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

/// `{"ccw": keycode, "cw": keycode}`: one encoder on one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EncoderEntry {
    pub ccw: String,
    pub cw: String,
}

/// `{"off": keycode, "on": keycode}`: one dip switch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DipSwitch {
    pub off: String,
    pub on: String,
}

fn bad(msg: impl Into<String>) -> RequestError {
    RequestError::bad(msg)
}

/// An identifier of `[A-Za-z0-9_]`, 1 to `max` bytes, starting as `first` allows.
fn check_ident(
    field: &str,
    v: &Value,
    max: usize,
    first: fn(u8) -> bool,
    rest: fn(u8) -> bool,
    what: &str,
) -> Result<String, RequestError> {
    let Value::String(s) = v else {
        return Err(bad(format!("{field}: must be a string")));
    };
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max || !first(b[0]) || !b[1..].iter().all(|&c| rest(c)) {
        return Err(bad(format!(
            "{field}: {} is not {what} (at most {max} bytes)",
            quote(s)
        )));
    }
    Ok(s.clone())
}

fn lower_or_digit(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'
}

fn ident_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `host_language`: `[a-z0-9_]+`, the `<lang>` of `quantum/keymap_extras/keymap_<lang>.h`.
pub fn host_language(v: &Value) -> Result<String, RequestError> {
    check_ident(
        "host_language",
        v,
        MAX_IDENT_LEN,
        lower_or_digit,
        lower_or_digit,
        "a host language name ([a-z0-9_], as in quantum/keymap_extras/keymap_<name>.h)",
    )
}

/// `converter`: QMK's pattern `^[a-z][0-9a-z_]*$`.
pub fn converter(v: &Value) -> Result<String, RequestError> {
    check_ident(
        "converter",
        v,
        MAX_IDENT_LEN,
        |b| b.is_ascii_lowercase(),
        lower_or_digit,
        "a converter name ([a-z][0-9a-z_]*)",
    )
}

/// `commit`: the firmware commit the Configurator's keymap was made with (QMK ignores it).
pub fn commit(v: &Value) -> Result<String, RequestError> {
    check_ident(
        "commit",
        v,
        MAX_IDENT_LEN,
        ident_char,
        ident_char,
        "a commit id ([A-Za-z0-9_])",
    )
}

/// `shortcuts`: what the Configurator keeps there; QMK ignores it. Kept only when it is an
/// object of at most 16 KiB of JSON.
pub fn shortcuts(v: Value) -> Result<Value, RequestError> {
    match &v {
        Value::Object(_) if serde_json::to_vec(&v).map_or(0, |b| b.len()) <= 16 * 1024 => Ok(v),
        Value::Object(_) => Err(bad("shortcuts: larger than 16 KiB")),
        _ => Err(bad("shortcuts: must be an object")),
    }
}

fn keycode(field: &str, v: Value) -> Result<String, RequestError> {
    let Value::String(code) = v else {
        return Err(bad(format!("{field}: must be a keycode string")));
    };
    if let Err(e) = parse_keycode(&code) {
        return Err(bad(format!(
            "{field}: {} is not a keycode: {e}",
            quote(&code)
        )));
    }
    Ok(canonical_keycode(code))
}

/// Takes the two keycode fields `a` and `b` of an object and nothing else.
fn keycode_pair(field: &str, v: Value, a: &str, b: &str) -> Result<(String, String), RequestError> {
    let Value::Object(mut o) = v else {
        return Err(bad(format!("{field}: must be an object {{{a}, {b}}}")));
    };
    if let Some(k) = o.keys().find(|k| k.as_str() != a && k.as_str() != b) {
        return Err(bad(format!(
            "{field}.{}: not accepted (only {a} and {b})",
            super::clip(k)
        )));
    }
    let x = o
        .remove(a)
        .ok_or_else(|| bad(format!("{field}.{a}: missing")))?;
    let y = o
        .remove(b)
        .ok_or_else(|| bad(format!("{field}.{b}: missing")))?;
    Ok((
        keycode(&format!("{field}.{a}"), x)?,
        keycode(&format!("{field}.{b}"), y)?,
    ))
}

fn array(field: &str, v: Value, max: usize) -> Result<Vec<Value>, RequestError> {
    let Value::Array(a) = v else {
        return Err(bad(format!("{field}: must be an array")));
    };
    if a.len() > max {
        return Err(bad(format!("{field}: more than {max} entries")));
    }
    Ok(a)
}

/// `encoders`: per layer, `{ccw, cw}` per encoder.
pub fn encoders(v: Value) -> Result<Vec<Vec<EncoderEntry>>, RequestError> {
    let mut out = Vec::new();
    for (l, layer) in array("encoders", v, MAX_LAYERS)?.into_iter().enumerate() {
        let mut entries = Vec::new();
        for (i, e) in array(&format!("encoders[{l}]"), layer, MAX_ENCODERS)?
            .into_iter()
            .enumerate()
        {
            let (ccw, cw) = keycode_pair(&format!("encoders[{l}][{i}]"), e, "ccw", "cw")?;
            entries.push(EncoderEntry { ccw, cw });
        }
        out.push(entries);
    }
    Ok(out)
}

/// `dip_switches`: `{off, on}` per switch.
pub fn dip_switches(v: Value) -> Result<Vec<DipSwitch>, RequestError> {
    array("dip_switches", v, MAX_ENCODERS)?
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let (off, on) = keycode_pair(&format!("dip_switches[{i}]"), e, "off", "on")?;
            Ok(DipSwitch { off, on })
        })
        .collect()
}

/// Checks a macro text. QMK writes it inside a C string literal after escaping `\`, `"`, tab,
/// CR and LF (CR and CR LF become LF, as with `qmk compile`); every other byte is copied. So
/// refused are: NUL (it would end the string early), the other C0 control bytes and DEL (bytes
/// 1 to 8 are `SEND_STRING`'s own command codes, `quantum/send_string/send_string.h`, so text
/// would turn into key actions).
fn macro_text(field: &str, s: &str) -> Result<(), RequestError> {
    if s.chars().count() > MAX_MACRO_TEXT {
        return Err(bad(format!(
            "{field}: longer than {MAX_MACRO_TEXT} characters"
        )));
    }
    if let Some((at, c)) = s
        .char_indices()
        .find(|&(_, c)| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(bad(format!(
            "{field}: control character U+{:04X} at byte {at} cannot be typed by a macro",
            c as u32
        )));
    }
    // QMK compiles with -Wall -Werror, and gcc warns about every trigraph (`??/` and the like)
    // in a string: the keymap could not build at all.
    if let Some(at) = s
        .as_bytes()
        .windows(3)
        .position(|w| w[0] == b'?' && w[1] == b'?' && b"=/'()!<>-".contains(&w[2]))
    {
        return Err(bad(format!(
            "{field}: the trigraph {} at byte {at} cannot be built (QMK compiles with -Werror \
             and gcc warns about trigraphs); separate the two '?' with another fragment",
            quote(&s[at..at + 3])
        )));
    }
    Ok(())
}

/// `macros`: at most [`MAX_MACROS`] macros, each an array of text fragments and actions.
pub fn macros(v: Value) -> Result<Vec<Vec<MacroFragment>>, RequestError> {
    let mut out = Vec::new();
    for (m, mac) in array("macros", v, MAX_MACROS)?.into_iter().enumerate() {
        let field = format!("macros[{m}]");
        let items = array(&field, mac, MAX_MACRO_FRAGMENTS)?;
        let mut frags = Vec::with_capacity(items.len());
        // Each fragment's index in the request, for messages.
        let mut at = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            at.push(i);
            let field = format!("macros[{m}][{i}]");
            frags.push(match item {
                // Empty texts produce nothing (QMK deletes `""`), and would hide the text
                // that follows from the quote rule below: they are dropped.
                Value::String(s) if s.is_empty() => {
                    at.pop();
                    continue;
                }
                Value::String(s) => {
                    macro_text(&field, &s)?;
                    MacroFragment::Text(s)
                }
                Value::Object(o) => MacroFragment::Action(macro_action(&field, o)?),
                _ => {
                    return Err(bad(format!(
                        "{field}: must be a string or an action object"
                    )))
                }
            });
        }
        check_quote_ending(&field, &frags, &at)?;
        out.push(frags);
    }
    Ok(out)
}

/// QMK joins a macro's pieces and then deletes every `""` (to merge adjacent string literals).
/// A text ending in `"` followed by another text survives that (the escaped quote re-forms),
/// but one that ends in `"` right before an action or at the end of the macro loses its
/// closing quote: the C string then runs on into the code after it. QMK cannot build such a
/// macro safely, so it is refused with the way around it.
fn check_quote_ending(
    field: &str,
    frags: &[MacroFragment],
    at: &[usize],
) -> Result<(), RequestError> {
    for (i, f) in frags.iter().enumerate() {
        let MacroFragment::Text(s) = f else { continue };
        let next_is_text = matches!(frags.get(i + 1), Some(MacroFragment::Text(_)));
        if s.ends_with('"') && !next_is_text {
            return Err(bad(format!(
                "{field}[{}]: a macro text may not end with '\"' before an action or at the \
                 end of the macro (QMK's generator, lib/python/qmk/keymap.py, would break the C \
                 string); put the quote before other text",
                at[i]
            )));
        }
    }
    Ok(())
}

fn macro_action(field: &str, mut o: Map<String, Value>) -> Result<MacroAction, RequestError> {
    if let Some(k) = o
        .keys()
        .find(|k| !matches!(k.as_str(), "action" | "keycodes" | "duration"))
    {
        return Err(bad(format!(
            "{field}.{}: not accepted (an action has action, keycodes, duration)",
            super::clip(k)
        )));
    }
    let action = match o.remove("action") {
        Some(Value::String(a))
            if matches!(a.as_str(), "beep" | "delay" | "down" | "tap" | "up") =>
        {
            a
        }
        Some(_) => {
            return Err(bad(format!(
                "{field}.action: must be one of beep, delay, down, tap, up"
            )))
        }
        None => return Err(bad(format!("{field}.action: missing"))),
    };
    let keycodes = match o.remove("keycodes") {
        None => None,
        Some(v) => {
            let list = array(&format!("{field}.keycodes"), v, 32)?;
            let mut codes = Vec::with_capacity(list.len());
            for (k, c) in list.iter().enumerate() {
                // Pasted by QMK as `X_<keycode>` inside SEND_STRING: an identifier, nothing else.
                codes.push(check_ident(
                    &format!("{field}.keycodes[{k}]"),
                    c,
                    MAX_IDENT_LEN,
                    ident_char,
                    ident_char,
                    "a keycode name without the KC_ prefix (as in X_<name>)",
                )?);
            }
            Some(codes)
        }
    };
    let duration = match o.remove("duration") {
        None => None,
        Some(Value::Number(n)) => match super::integral(&n) {
            Some(d) if (0..=i64::from(u32::MAX)).contains(&d) => Some(d as u64),
            _ => {
                return Err(bad(format!(
                    "{field}.duration: must be an integer from 0 to {} (milliseconds)",
                    u32::MAX
                )))
            }
        },
        Some(_) => return Err(bad(format!("{field}.duration: must be an integer"))),
    };
    // QMK's generator reads these without checking (a KeyError in `qmk compile`).
    match action.as_str() {
        "delay" if duration.is_none() => {
            return Err(bad(format!("{field}.duration: a delay needs a duration")))
        }
        "down" | "tap" | "up" if keycodes.is_none() => {
            return Err(bad(format!(
                "{field}.keycodes: a {action} action needs keycodes"
            )))
        }
        _ => {}
    }
    Ok(MacroAction {
        action,
        keycodes,
        duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// What QMK's `_generate_macros_function` (`lib/python/qmk/keymap.py`) writes inside
    /// `SEND_STRING(...)` for one macro, re-stated here to check Oven's rules against it.
    fn qmk_send_string_arg(frags: &[MacroFragment]) -> String {
        let mut out = String::new();
        for f in frags {
            match f {
                MacroFragment::Text(s) => {
                    let e = s
                        .replace('\\', "\\\\")
                        .replace("\r\n", "\\n")
                        .replace('\n', "\\n")
                        .replace('\r', "\\n")
                        .replace('\t', "\\t")
                        .replace('"', "\\\"");
                    out.push_str(&format!("\"{e}\""));
                }
                MacroFragment::Action(a) => match a.action.as_str() {
                    "delay" => out.push_str(&format!("SS_DELAY({})", a.duration.unwrap())),
                    "beep" => out.push_str("\"\\a\""),
                    action => {
                        for k in a.keycodes.as_deref().unwrap_or_default() {
                            out.push_str(&format!("SS_{}(X_{k})", action.to_uppercase()));
                        }
                    }
                },
            }
        }
        out.replace("\"\"", "")
    }

    #[derive(Debug, PartialEq)]
    enum Piece {
        Text(String),
        Call(String, String),
    }

    /// Reads C text made only of string literals and `SS_NAME(arg)` calls; `Err` if anything
    /// else (code) appears or a literal is not closed. Adjacent literals are joined, as C does.
    fn parse_c(s: &str) -> Result<Vec<Piece>, String> {
        let b: Vec<char> = s.chars().collect();
        let (mut i, mut out) = (0, Vec::<Piece>::new());
        while i < b.len() {
            if b[i] == '"' {
                i += 1;
                let mut text = String::new();
                loop {
                    match b.get(i) {
                        None => return Err(format!("unterminated string in {s:?}")),
                        Some('"') => break,
                        Some('\\') => {
                            text.push(match b.get(i + 1) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('a') => '\u{7}',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                other => return Err(format!("escape {other:?} in {s:?}")),
                            });
                            i += 2;
                        }
                        Some(c) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
                i += 1;
                match out.last_mut() {
                    Some(Piece::Text(t)) => t.push_str(&text),
                    _ => out.push(Piece::Text(text)),
                }
            } else {
                let rest: String = b[i..].iter().collect();
                let open = rest.find('(').ok_or(format!("code in {s:?}"))?;
                let close = rest.find(')').ok_or(format!("code in {s:?}"))?;
                let (name, arg) = (&rest[..open], &rest[open + 1..close]);
                let ok = name.starts_with("SS_")
                    && name[3..].bytes().all(|c| c.is_ascii_uppercase())
                    && arg.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
                if !ok {
                    return Err(format!("code in {s:?}"));
                }
                out.push(Piece::Call(name.into(), arg.into()));
                i += rest[..=close].chars().count();
            }
        }
        out.retain(|p| p != &Piece::Text(String::new()));
        Ok(out)
    }

    /// What the user asked for, in the same pieces (texts joined, CR as LF like QMK).
    fn intended(frags: &[MacroFragment]) -> Vec<Piece> {
        let mut out = Vec::<Piece>::new();
        let push_text = |out: &mut Vec<Piece>, t: String| match out.last_mut() {
            Some(Piece::Text(x)) => x.push_str(&t),
            _ => out.push(Piece::Text(t)),
        };
        for f in frags {
            match f {
                MacroFragment::Text(s) => {
                    push_text(&mut out, s.replace("\r\n", "\n").replace('\r', "\n"))
                }
                MacroFragment::Action(a) if a.action == "beep" => {
                    push_text(&mut out, "\u{7}".into())
                }
                MacroFragment::Action(a) if a.action == "delay" => out.push(Piece::Call(
                    "SS_DELAY".into(),
                    a.duration.unwrap().to_string(),
                )),
                MacroFragment::Action(a) => {
                    for k in a.keycodes.as_deref().unwrap_or_default() {
                        out.push(Piece::Call(
                            format!("SS_{}", a.action.to_uppercase()),
                            format!("X_{k}"),
                        ));
                    }
                }
            }
        }
        out.retain(|p| p != &Piece::Text(String::new()));
        out
    }

    fn fragment() -> impl Strategy<Value = Value> {
        prop_oneof![
            // Text rich in what C and QMK's escaping care about.
            "[a-z\"\\\\\r\n\t' é%?]{0,6}".prop_map(Value::from),
            Just(json!({"action": "tap", "keycodes": ["LCTL", "A"]})),
            Just(json!({"action": "down", "keycodes": ["LSFT"]})),
            Just(json!({"action": "delay", "duration": 50})),
            Just(json!({"action": "beep"})),
        ]
    }

    proptest! {
        #[test]
        fn accepted_macros_come_out_as_exactly_the_bytes_given(
            frags in proptest::collection::vec(fragment(), 0..6)
        ) {
            if let Ok(macros) = macros(json!([frags])) {
                let c = qmk_send_string_arg(&macros[0]);
                let parsed = parse_c(&c).map_err(TestCaseError::fail)?;
                prop_assert_eq!(parsed, intended(&macros[0]));
            }
        }
    }

    #[test]
    fn a_quote_that_qmk_would_unbalance_is_refused_and_would_have_been_code() {
        let hostile = json!([["x\"", {"action": "tap", "keycodes": ["A"]}], ["); evil(); //"]]);
        let e = macros(hostile).unwrap_err();
        assert!(
            e.message
                .starts_with("macros[0][0]: a macro text may not end with '\"'"),
            "{}",
            e.message
        );
        // What QMK would have generated: the literal runs on past the action.
        let frags = [
            MacroFragment::Text("x\"".into()),
            MacroFragment::Action(MacroAction {
                action: "tap".into(),
                keycodes: Some(vec!["A".into()]),
                duration: None,
            }),
        ];
        assert!(parse_c(&qmk_send_string_arg(&frags)).is_err());
        // A quote followed by more text is fine, and so is one that is not last.
        assert!(macros(json!([["say \"", "hi\""], ["\"quoted\" text"]])).is_err());
        assert!(macros(json!([["say \"", "hi\" now"], ["\"quoted\" text"]])).is_ok());
    }

    #[test]
    fn configurator_macros_and_encoders_pass() {
        let m = macros(json!([
            [{"action": "tap", "keycodes": ["ESC"]}, {"action": "delay", "duration": 50}],
            ["Hello, \"world\"\\n\n", {"action": "beep"}],
        ]))
        .unwrap();
        assert_eq!(m.len(), 2);
        let e = encoders(
            json!([[{"ccw": "KC_VOLD", "cw": "KC_VOLU"}], [{"ccw": "MS_WHLD", "cw": "MS_WHLU"}]]),
        )
        .unwrap();
        assert_eq!(e[1][0].cw, "MS_WHLU");
    }

    #[test]
    fn hostile_macro_and_encoder_pieces_are_refused_by_path() {
        let e = |r: Result<Vec<Vec<MacroFragment>>, RequestError>| r.unwrap_err().message;
        assert!(e(macros(
            json!([[{"action": "tap", "keycodes": ["A)); __asm__(\"x\""]}]])
        ))
        .starts_with("macros[0][0].keycodes[0]: "));
        assert!(e(macros(
            json!([[{"action": "tap", "keycodes": ["A"], "evil": 1}]])
        ))
        .starts_with("macros[0][0].evil: not accepted"));
        assert!(
            e(macros(json!([[{"action": "delay", "duration": "1); x("}]])))
                .starts_with("macros[0][0].duration: must be an integer")
        );
        assert!(e(macros(json!([[{"action": "delay", "duration": 1.5}]])))
            .starts_with("macros[0][0].duration: must be an integer from 0"));
        // JSON Schema's integer 50.0 is QMK's 50.
        let m = macros(json!([[{"action": "delay", "duration": 50.0}]])).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!([[{"action": "delay", "duration": 50}]])
        );
        assert!(e(macros(json!([[{"action": "delay"}]]))).contains("a delay needs a duration"));
        assert!(e(macros(json!([[{"action": "run"}]])))
            .starts_with("macros[0][0].action: must be one of"));
        assert!(e(macros(json!([["a\u{1}b"]]))).contains("U+0001"));
        assert!(e(macros(json!([["a\u{0}b"]]))).contains("U+0000"));
        // gcc -Werror=trigraphs (found building on the real tree); `??` alone is fine.
        assert!(e(macros(json!([["what??/"]]))).contains("trigraph \"??/\" at byte 4"));
        assert!(macros(json!([["what?? no"]])).is_ok());
        assert!(e(macros(Value::Array(vec![json!([]); 33]))).contains("more than 32"));
        let enc = encoders(json!([[{"ccw": "KC_A;", "cw": "KC_B"}]])).unwrap_err();
        assert!(
            enc.message
                .starts_with("encoders[0][0].ccw: \"KC_A;\" is not a keycode"),
            "{}",
            enc.message
        );
        assert!(dip_switches(json!([{"on": "KC_A", "off": "KC_B", "x": 1}])).is_err());
        assert!(host_language(&json!("german")).is_ok());
        assert!(host_language(&json!("../../etc")).is_err());
        assert!(converter(&json!("rp2040_ce")).is_ok());
        assert!(converter(&json!("RP; rm")).is_err());
    }
}
