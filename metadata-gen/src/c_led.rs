//! `g_led_config` in a keyboard's `<folder>.c`: the LED matrix/positions/flags table that QMK
//! reads into `rgb_matrix.layout`/`led_matrix.layout` when the JSON data has none.
//! A small C tokenizer stands in for the lexer QMK uses; only what the table needs is recognised.

use serde_json::{Map, Value};

#[derive(Debug, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    /// A number kind QMK's lexer does not pick up (octal).
    OtherNum,
    Name(String),
    Preproc,
    Punct(char),
}

/// Removes comments (keeping string and char literals) and line continuations.
fn preprocess(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            match src[i + 2..].find("*/") {
                Some(e) => i += 2 + e + 2,
                None => i = b.len(),
            }
            out.push(' ');
        } else if b[i] == b'"' || b[i] == b'\'' {
            let q = b[i];
            let s = i;
            i += 1;
            while i < b.len() && b[i] != q {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&src[s..i]);
        } else {
            let ch = src[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out.replace("\\\n", "")
}

fn tokens(src: &str) -> Vec<Tok> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' && line_start {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            out.push(Tok::Preproc);
            continue;
        }
        line_start = false;
        let neg_num = c == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit);
        if c.is_ascii_digit()
            || neg_num
            || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let s = i;
            if neg_num {
                i += 1;
            }
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
            let text = &src[s..i];
            let body = text.trim_end_matches(['l', 'L', 'u', 'U', 'f', 'F']);
            let digits = body.trim_start_matches('-');
            let tok = if let Some(hex) = digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0X"))
            {
                i64::from_str_radix(hex, 16)
                    .map_or(Tok::OtherNum, |v| Tok::Int(if neg_num { -v } else { v }))
            } else if digits.contains(['.', 'e', 'E']) {
                body.parse::<f64>().map_or(Tok::OtherNum, Tok::Float)
            } else if digits.len() > 1 && digits.starts_with('0') {
                Tok::OtherNum
            } else {
                body.parse::<i64>().map_or(Tok::OtherNum, Tok::Int)
            };
            out.push(tok);
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Name(src[s..i].to_owned()));
            continue;
        }
        out.push(Tok::Punct(c as char));
        i += 1;
    }
    out
}

fn coerce(t: &Tok) -> Value {
    match t {
        Tok::Int(i) => Value::from(*i),
        Tok::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Tok::Name(n) => match n.as_str() {
            "LED_FLAG_ALL" => Value::from(0xFF),
            "LED_FLAG_NONE" => Value::from(0x00),
            "LED_FLAG_MODIFIER" => Value::from(0x01),
            "LED_FLAG_UNDERGLOW" => Value::from(0x02),
            "LED_FLAG_KEYLIGHT" => Value::from(0x04),
            "LED_FLAG_INDICATOR" => Value::from(0x08),
            _ => Value::Null,
        },
        _ => Value::Null,
    }
}

/// Finds and reads `g_led_config`: Ok(None) when the file has none, Err when it is malformed.
pub fn find_led_config(src: &str, cols: i64, rows: i64) -> Result<Option<Vec<Value>>, String> {
    let mut matrix: Vec<Vec<Value>> = Vec::new();
    let mut position_raw: Vec<Value> = Vec::new();
    let mut flags: Vec<Value> = Vec::new();
    let (mut found_type, mut found) = (false, false);
    let (mut depth, mut section) = (0, 0);
    let mut row = Vec::new();
    for t in tokens(&preprocess(src)) {
        if !found {
            match &t {
                Tok::Name(n) if n == "led_config_t" => found_type = true,
                Tok::Name(n) if found_type && n == "g_led_config" => found = true,
                _ => {}
            }
            continue;
        }
        match t {
            Tok::Punct(';') => found = false,
            Tok::Punct('{') => {
                depth += 1;
                if depth == 2 {
                    section += 1;
                }
            }
            Tok::Punct('}') => {
                if section == 1 && depth == 3 {
                    matrix.push(std::mem::take(&mut row));
                }
                depth -= 1;
            }
            Tok::Preproc => return Ok(None),
            Tok::Int(_) | Tok::Float(_) | Tok::Name(_) => {
                let v = coerce(&t);
                match (section, depth) {
                    (1, 3) => row.push(v),
                    (2, 3) => position_raw.push(v),
                    (3, 2) => flags.push(v),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if section == 0 {
        return Ok(None);
    }
    let indexes: Vec<&Value> = matrix.iter().flatten().filter(|v| !v.is_null()).collect();
    let positions: Vec<&[Value]> = position_raw.chunks(2).collect();
    if matrix.len() as i64 != rows && matrix.len() as f64 != rows as f64 / 2.0 {
        return Err("Unable to parse g_led_config matrix data".into());
    }
    for (i, r) in matrix.iter().enumerate() {
        if r.len() as i64 != cols {
            return Err(format!(
                "Number of columns in row {i} ({}) does not match matrix ({cols})",
                r.len()
            ));
        }
    }
    if positions.len() != flags.len() {
        return Err(format!(
            "Number of g_led_config physical positions ({}) does not match number of flags ({})",
            positions.len(),
            flags.len()
        ));
    }
    let max = indexes.iter().filter_map(|v| v.as_i64()).max();
    if let Some(m) = max {
        if m >= flags.len() as i64 {
            return Err(format!(
                "LED index {m} is OOB in g_led_config - should be < {}",
                flags.len()
            ));
        }
    }
    if !indexes.iter().all(|v| v.is_i64()) {
        return Err("matrix indexes are not all ints".into());
    }
    if position_raw.len() % 2 != 0 {
        return Err("Malformed g_led_config position data".into());
    }
    let mut leds: Vec<Map<String, Value>> = positions
        .iter()
        .zip(&flags)
        .map(|(p, f)| {
            let mut m = Map::new();
            m.insert("x".into(), p[0].clone());
            m.insert("y".into(), p.get(1).cloned().unwrap_or(Value::Null));
            m.insert("flags".into(), f.clone());
            m
        })
        .collect();
    for (r, cells) in matrix.iter().enumerate() {
        for (c, idx) in cells.iter().enumerate() {
            if let Some(led) = idx.as_u64().and_then(|i| leds.get_mut(i as usize)) {
                led.insert("matrix".into(), serde_json::json!([r, c]));
            }
        }
    }
    Ok(Some(leds.into_iter().map(Value::Object).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_led_table() {
        let src = r#"
#include "quantum.h"
// comment { }
led_config_t g_led_config = { {
    { 0, NO_LED },
    { 1, 2 }
}, {
    { 0, 0 }, { 224, 0 }, /* x, y */ { 112, 64 }
}, {
    LED_FLAG_KEYLIGHT, 4, LED_FLAG_UNDERGLOW
} };
"#;
        let leds = find_led_config(src, 2, 2).unwrap().unwrap();
        assert_eq!(
            Value::Array(leds),
            json!([
                {"x": 0, "y": 0, "flags": 4, "matrix": [0, 0]},
                {"x": 224, "y": 0, "flags": 4, "matrix": [1, 0]},
                {"x": 112, "y": 64, "flags": 2, "matrix": [1, 1]}
            ])
        );
        assert_eq!(find_led_config("int x = 1;", 2, 2).unwrap(), None);
        assert!(find_led_config(src, 3, 2).is_err());
    }
}
