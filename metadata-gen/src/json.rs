//! JSON in and out the way `qmk generate-api` does it: every input is read as hjson (duplicate
//! keys rejected, integral floats turned into integers), and output is written like Python's
//! `json.dumps` (ASCII only, insertion order, compact or default separators, no trailing newline).

use serde_json::{Number, Value};
use std::path::{Path, PathBuf};

/// A file that could not be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid hjson: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Parses hjson (a superset of JSON) text.
pub fn parse_hjson(text: &str) -> Result<Value, String> {
    oven::hjson::parse(text).map_err(|e| e.to_string())
}

/// Reads and parses one hjson/json file.
pub fn load(path: &Path) -> Result<Value, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_hjson(&text).map_err(|message| LoadError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Python's `json.dumps(v, separators=(',', ':'))`.
pub fn to_compact(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v, ",", ":");
    out
}

/// Python's `json.dumps(v)` (separators `", "` and `": "`).
pub fn to_default(v: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_value(&mut out, v, ", ", ": ");
    out
}

fn write_value(out: &mut String, v: &Value, item_sep: &str, key_sep: &str) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_value(out, item, item_sep, key_sep);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_string(out, k);
                out.push_str(key_sep);
                write_value(out, item, item_sep, key_sep);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&python_float_repr(f));
    }
}

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 or from 1e16 on.
pub fn python_float_repr(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // `{:e}` gives the shortest round-trip digits, e.g. "1.5e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let sign = if negative { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within `digits`
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{frac}e{esign}{:02}", exp.abs())
    }
}

/// A JSON string literal, Python-style (ASCII only).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(&mut out, s);
    out
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_python() {
        assert_eq!(python_float_repr(0.5), "0.5");
        assert_eq!(python_float_repr(1.25), "1.25");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(0.00001), "1e-05");
        assert_eq!(python_float_repr(1.5e16), "1.5e+16");
        assert_eq!(python_float_repr(-2.75), "-2.75");
        assert_eq!(python_float_repr(123456.5), "123456.5");
    }

    #[test]
    fn integral_floats_become_ints_and_duplicates_fail() {
        let v = parse_hjson("{a: 1.0, b: 1e2, c: -0, d: 0.25}").unwrap();
        assert_eq!(to_compact(&v), r#"{"a":1,"b":100,"c":0,"d":0.25}"#);
        let err = parse_hjson(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn ascii_escapes_are_lowercase_and_order_is_kept() {
        let v =
            parse_hjson("{\"z\": \"\u{201c}q\u{201d} \u{1f600}\\u007f\", \"a\": [1, {}]}").unwrap();
        assert_eq!(
            to_compact(&v),
            r#"{"z":"\u201cq\u201d \ud83d\ude00\u007f","a":[1,{}]}"#
        );
        assert_eq!(
            to_default(&v),
            r#"{"z": "\u201cq\u201d \ud83d\ude00\u007f", "a": [1, {}]}"#
        );
    }

    #[test]
    fn braceless_root_and_empty_file() {
        assert_eq!(to_compact(&parse_hjson("").unwrap()), "{}");
        assert_eq!(to_compact(&parse_hjson("// only\n").unwrap()), "{}");
        assert_eq!(
            to_compact(&parse_hjson("a: 1\nb: x\n").unwrap()),
            r#"{"a":1,"b":"x"}"#
        );
    }

    #[test]
    fn multiline_strings_and_comments() {
        let v =
            parse_hjson("{\n  // c\n  a: '''\n    x\n    y\n    '''\n  b: text here\n}").unwrap();
        assert_eq!(v["a"], "x\ny");
        assert_eq!(v["b"], "text here");
    }
}
