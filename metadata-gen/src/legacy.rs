//! Legacy `config.h` and `rules.mk` files: the tiny parsers QMK uses for them, and the
//! conversion of their values into info.json values driven by `data/mappings/info_*.hjson`.

use indexmap::IndexMap;
use serde_json::{Map, Value};

/// A `#define` value: a bare `#define X` is `True`, `#undef` of a valued define is `False`.
#[derive(Debug, Clone, PartialEq)]
pub enum Define {
    Flag(bool),
    Text(String),
}

/// The defines of one or more config.h files, in first-definition order.
pub type ConfigH = IndexMap<String, Define>;
/// The variables of one or more rules.mk files, in first-assignment order.
pub type RulesMk = IndexMap<String, String>;

/// Removes `/* ... */` comments (non-greedy, across lines).
fn strip_block_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("/*") {
        match rest[start + 2..].find("*/") {
            Some(end) => {
                out.push_str(&rest[..start]);
                rest = &rest[start + 2 + end + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// Removes a `//` or `/*` comment that follows whitespace, up to the end of the line.
fn strip_line_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b'/'
            && i + 1 < bytes.len()
            && (bytes[i + 1] == b'/' || bytes[i + 1] == b'*')
            && (bytes[i - 1] as char).is_whitespace()
        {
            // The comment owns the whitespace run in front of it too.
            let mut s = i;
            while s > 0 && (bytes[s - 1] as char).is_whitespace() {
                s -= 1;
            }
            return &line[..s];
        }
    }
    line
}

/// Parses the `#define`/`#undef` lines of one config.h.
pub fn parse_config_h(text: &str) -> ConfigH {
    let mut out = ConfigH::new();
    let joined = text.replace("\\\n", "");
    let text = strip_block_comments(&joined);
    for line in text.split('\n') {
        let line = strip_line_comment(line).trim();
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["#define", name] => {
                out.insert((*name).to_owned(), Define::Flag(true));
            }
            ["#define", name, rest @ ..] => {
                out.insert((*name).to_owned(), Define::Text(rest.join(" ")));
            }
            ["#undef", name] => {
                if let Some(v) = out.get(*name) {
                    if *v == Define::Flag(true) {
                        out.shift_remove(*name);
                    } else {
                        out.insert((*name).to_owned(), Define::Flag(false));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Applies one rules.mk file's assignments on top of `rules` (`=`, `+=`, `?=`).
pub fn apply_rules_mk(text: &str, rules: &mut RulesMk) {
    for raw in text.split('\n') {
        if raw.trim().starts_with('#') {
            continue;
        }
        let line = match raw.find('#') {
            Some(i) => raw[..i].trim(),
            None => raw,
        };
        if !line.contains('=') {
            continue;
        }
        if let Some((k, v)) = line.split_once("+=") {
            let (k, v) = (k.trim().to_owned(), v.trim());
            match rules.get_mut(&k) {
                Some(existing) => {
                    existing.push(' ');
                    existing.push_str(v);
                }
                None => {
                    rules.insert(k, v.to_owned());
                }
            }
        } else if let Some((k, v)) = line.split_once("?=") {
            rules
                .entry(k.trim().to_owned())
                .or_insert_with(|| v.trim().to_owned());
        } else if let Some((k, v)) = line.split_once('=') {
            // QMK keeps the ':' of ':=' in the name (its attempt to drop it is a no-op).
            rules.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
}

/// A legacy value as QMK sees it: a string, or a bare define's boolean.
#[derive(Debug, Clone)]
pub enum Raw<'a> {
    Text(&'a str),
    Flag(bool),
}

impl<'a> From<&'a Define> for Raw<'a> {
    fn from(d: &'a Define) -> Self {
        match d {
            Define::Flag(b) => Raw::Flag(*b),
            Define::Text(s) => Raw::Text(s),
        }
    }
}

const TRUE_VALUES: [&str; 4] = ["true", "1", "on", "yes"];

/// Python's `int(str)`: optional sign, digits, underscores between digits, surrounding spaces.
pub fn py_int(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    let ok = !digits.is_empty()
        && !digits.starts_with('_')
        && !digits.ends_with('_')
        && !digits.contains("__")
        && digits.chars().all(|c| c.is_ascii_digit() || c == '_');
    let parsed = if ok {
        t.replace('_', "").parse::<i64>().ok()
    } else {
        None
    };
    parsed.ok_or_else(|| format!("invalid literal for int() with base 10: '{s}'"))
}

fn split_array(v: &str) -> Vec<&str> {
    v.split(',').collect()
}

/// Converts a config.h/rules.mk value to JSON according to the mapping's `value_type`.
pub fn to_json(value_type: &str, raw: Raw<'_>) -> Result<Value, String> {
    let text = match raw {
        Raw::Text(t) => t,
        Raw::Flag(b) => {
            return match value_type {
                "bool" | "flag" | "raw" | "mapping" => Ok(Value::Bool(b)),
                "int" => Ok(Value::from(i64::from(b))),
                _ => Err(format!("cannot convert a bare define to {value_type}")),
            };
        }
    };
    if let Some(rest) = value_type.strip_prefix("array") {
        if value_type.matches('.').count() > 1 {
            return Err(format!("Conversion of {value_type} not possible"));
        }
        let cleaned = text.replace(['{', '}'], "");
        let cleaned = cleaned.trim();
        return if rest == ".int" {
            split_array(cleaned)
                .into_iter()
                .map(|p| py_int(p).map(Value::from))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        } else {
            Ok(Value::Array(
                split_array(cleaned)
                    .into_iter()
                    .map(|p| Value::String(p.trim().to_owned()))
                    .collect(),
            ))
        };
    }
    match value_type {
        "bool" | "flag" => Ok(Value::Bool(TRUE_VALUES.contains(&text))),
        "hex" => Ok(Value::String(format!(
            "0x{}",
            text.get(2..).unwrap_or("").to_uppercase()
        ))),
        "list" => Ok(Value::Array(
            text.split_whitespace()
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        )),
        "int" => py_int(text).map(Value::from),
        "str" => Ok(Value::String(
            text.trim_matches('"')
                .replace("\\\"", "\"")
                .replace("\\\\", "\\"),
        )),
        "bcd_version" => {
            let part = |a: usize, b: usize| {
                text.get(a..b)
                    .ok_or_else(|| format!("bad bcd version {text:?}"))
                    .and_then(py_int)
            };
            Ok(Value::String(format!(
                "{}.{}.{}",
                part(2, 4)?,
                part(4, 5)?,
                part(5, 6)?
            )))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// Reads a dotted path (`a.b.0`), indexing arrays with numeric segments.
pub fn dotted_get<'v>(root: &'v Map<String, Value>, path: &str) -> Option<&'v Value> {
    let mut segs = path.split('.');
    let mut cur = root.get(segs.next()?)?;
    for seg in segs {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Writes a dotted path, creating objects on the way (an existing array is indexed or extended).
pub fn dotted_set(root: &mut Map<String, Value>, path: &str, value: Value) {
    let segs: Vec<&str> = path.split('.').collect();
    set_in_map(root, &segs, value);
}

fn set_in_map(map: &mut Map<String, Value>, segs: &[&str], value: Value) {
    let Some((first, rest)) = segs.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert((*first).to_owned(), value);
        return;
    }
    // Like dotty_dict: a missing container followed by a numeric segment is a list.
    let numeric = rest.first().is_some_and(|s| s.parse::<usize>().is_ok());
    let slot = map.entry((*first).to_owned()).or_insert_with(|| {
        if numeric {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    });
    set_in_value(slot, rest, value);
}

fn set_in_value(slot: &mut Value, segs: &[&str], value: Value) {
    match slot {
        Value::Array(a) => {
            if let (Some((first, rest)), Ok(i)) = (
                segs.split_first(),
                segs.first()
                    .map_or(Err(()), |s| s.parse::<usize>().map_err(|_| ())),
            ) {
                let _ = first;
                if i >= a.len() {
                    a.resize(i + 1, Value::Null);
                }
                if rest.is_empty() {
                    a[i] = value;
                } else {
                    set_in_value(&mut a[i], rest, value);
                }
            }
        }
        Value::Object(m) => set_in_map(m, segs, value),
        other => {
            *other = Value::Object(Map::new());
            if let Value::Object(m) = other {
                set_in_map(m, segs, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_h_defines_undefs_and_comments() {
        let c = parse_config_h(
            "#pragma once\n/* block\n #define HIDDEN 1 */\n#define MATRIX_ROWS 5 // rows\n#define EE_HANDS\n#define LONG \\\n  a b\n#define GONE 3\n#undef GONE\n#define FLAGGY\n#undef FLAGGY\n",
        );
        assert_eq!(c.get("MATRIX_ROWS"), Some(&Define::Text("5".into())));
        assert_eq!(c.get("EE_HANDS"), Some(&Define::Flag(true)));
        assert_eq!(c.get("LONG"), Some(&Define::Text("a b".into())));
        assert_eq!(c.get("GONE"), Some(&Define::Flag(false)));
        assert!(!c.contains_key("FLAGGY"));
        assert!(!c.contains_key("HIDDEN"));
    }

    #[test]
    fn rules_mk_assignment_kinds() {
        let mut r = RulesMk::new();
        apply_rules_mk(
            "# comment\nMCU = atmega32u4\nSRC += a.c\nSRC += b.c # trailing\nBOOTLOADER ?= caterina\nBOOTLOADER ?= halfkay\n",
            &mut r,
        );
        assert_eq!(r["MCU"], "atmega32u4");
        assert_eq!(r["SRC"], "a.c b.c");
        assert_eq!(r["BOOTLOADER"], "caterina");
    }

    #[test]
    fn value_types_convert_like_qmk() {
        assert_eq!(to_json("int", Raw::Text("12")).unwrap(), 12);
        assert!(to_json("int", Raw::Text("0x10"))
            .unwrap_err()
            .contains("base 10"));
        assert_eq!(to_json("hex", Raw::Text("0xfeed")).unwrap(), "0xFEED");
        assert_eq!(to_json("bool", Raw::Text("yes")).unwrap(), true);
        assert_eq!(to_json("flag", Raw::Flag(true)).unwrap(), true);
        assert_eq!(
            to_json("array.int", Raw::Text("{ 1, 2,3 }")).unwrap(),
            serde_json::json!([1, 2, 3])
        );
        assert_eq!(
            to_json("array", Raw::Text("{ B1, B2 }")).unwrap(),
            serde_json::json!(["B1", "B2"])
        );
        assert!(to_json("array.array.int", Raw::Text("{{1}}")).is_err());
        assert_eq!(
            to_json("str", Raw::Text("\"Some \\\"kb\\\" x\"")).unwrap(),
            "Some \"kb\" x"
        );
        // Python's strip('"') also eats the quote of a trailing `\"`.
        assert_eq!(
            to_json("str", Raw::Text("\"a \\\"b\\\"\"")).unwrap(),
            "a \"b\\"
        );
        assert_eq!(
            to_json("bcd_version", Raw::Text("0x0102")).unwrap(),
            "1.0.2"
        );
        assert_eq!(
            to_json("list", Raw::Text("a  b c")).unwrap(),
            serde_json::json!(["a", "b", "c"])
        );
    }

    #[test]
    fn dotted_paths() {
        let mut m = Map::new();
        dotted_set(&mut m, "usb.vid", Value::from("0x1234"));
        dotted_set(&mut m, "audio.pins.0", Value::from("B5"));
        dotted_set(&mut m, "audio.pins.1", Value::from("B6"));
        assert_eq!(
            Value::Object(m.clone()),
            serde_json::json!({"usb": {"vid": "0x1234"}, "audio": {"pins": ["B5", "B6"]}})
        );
        assert_eq!(dotted_get(&m, "audio.pins.0"), Some(&Value::from("B5")));
        assert_eq!(dotted_get(&m, "usb.pid"), None);
    }
}

/// A number during `compute`: Python keeps ints exact and `/` always gives a float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// QMK's `compute()`: the arithmetic of config.h values such as `MATRIX_ROWS 6*2`
/// (`+ - * / ** ^` with Python precedence; `^` is xor).
pub fn compute(expr: &str) -> Result<Value, String> {
    let tokens: Vec<char> = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let mut p = Calc {
        t: &tokens,
        i: 0,
        expr,
    };
    let n = p.xor()?;
    if p.i != tokens.len() {
        return Err(format!("cannot compute {expr:?}"));
    }
    Ok(match n {
        Num::Int(i) => Value::from(i),
        Num::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
    })
}

struct Calc<'a> {
    t: &'a [char],
    i: usize,
    expr: &'a str,
}

impl Calc<'_> {
    fn bad(&self) -> String {
        format!("cannot compute {:?}", self.expr)
    }
    fn peek(&self) -> Option<char> {
        self.t.get(self.i).copied()
    }
    fn xor(&mut self) -> Result<Num, String> {
        let mut l = self.sum()?;
        while self.peek() == Some('^') {
            self.i += 1;
            let r = self.sum()?;
            l = match (l, r) {
                (Num::Int(a), Num::Int(b)) => Num::Int(a ^ b),
                _ => return Err(self.bad()),
            };
        }
        Ok(l)
    }
    fn sum(&mut self) -> Result<Num, String> {
        let mut l = self.product()?;
        while let Some(op @ ('+' | '-')) = self.peek() {
            self.i += 1;
            let r = self.product()?;
            l = match (l, r, op) {
                (Num::Int(a), Num::Int(b), '+') => {
                    Num::Int(a.checked_add(b).ok_or_else(|| self.bad())?)
                }
                (Num::Int(a), Num::Int(b), _) => {
                    Num::Int(a.checked_sub(b).ok_or_else(|| self.bad())?)
                }
                (a, b, '+') => Num::Float(a.f() + b.f()),
                (a, b, _) => Num::Float(a.f() - b.f()),
            };
        }
        Ok(l)
    }
    fn product(&mut self) -> Result<Num, String> {
        let mut l = self.unary()?;
        loop {
            match self.peek() {
                Some('*') if self.t.get(self.i + 1) != Some(&'*') => {
                    self.i += 1;
                    let r = self.unary()?;
                    l = match (l, r) {
                        (Num::Int(a), Num::Int(b)) => {
                            Num::Int(a.checked_mul(b).ok_or_else(|| self.bad())?)
                        }
                        (a, b) => Num::Float(a.f() * b.f()),
                    };
                }
                Some('/') => {
                    self.i += 1;
                    let r = self.unary()?;
                    if r.f() == 0.0 {
                        return Err("division by zero".into());
                    }
                    l = Num::Float(l.f() / r.f());
                }
                _ => return Ok(l),
            }
        }
    }
    fn unary(&mut self) -> Result<Num, String> {
        if self.peek() == Some('-') {
            self.i += 1;
            return Ok(match self.unary()? {
                Num::Int(i) => Num::Int(-i),
                Num::Float(f) => Num::Float(-f),
            });
        }
        self.power()
    }
    fn power(&mut self) -> Result<Num, String> {
        let base = self.atom()?;
        if self.peek() == Some('*') && self.t.get(self.i + 1) == Some(&'*') {
            self.i += 2;
            let exp = self.unary()?;
            return Ok(match (base, exp) {
                (Num::Int(b), Num::Int(e)) if e >= 0 => Num::Int(
                    u32::try_from(e)
                        .ok()
                        .and_then(|e| b.checked_pow(e))
                        .ok_or_else(|| self.bad())?,
                ),
                (b, e) => Num::Float(b.f().powf(e.f())),
            });
        }
        Ok(base)
    }
    fn atom(&mut self) -> Result<Num, String> {
        if self.peek() == Some('(') {
            self.i += 1;
            let v = self.xor()?;
            if self.peek() != Some(')') {
                return Err(self.bad());
            }
            self.i += 1;
            return Ok(v);
        }
        let start = self.i;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '_')
        {
            self.i += 1;
        }
        let lit: String = self.t[start..self.i]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        if lit.is_empty() {
            return Err(self.bad());
        }
        if lit.contains('.') {
            lit.parse::<f64>().map(Num::Float).map_err(|_| self.bad())
        } else {
            lit.parse::<i64>().map(Num::Int).map_err(|_| self.bad())
        }
    }
}

#[cfg(test)]
mod compute_tests {
    use super::compute;
    use serde_json::json;

    #[test]
    fn arithmetic_like_python() {
        assert_eq!(compute("6*2").unwrap(), json!(12));
        assert_eq!(compute(" 14 ").unwrap(), json!(14));
        assert_eq!(compute("(5+1)*2").unwrap(), json!(12));
        assert_eq!(compute("2**6").unwrap(), json!(64));
        assert_eq!(compute("2^6").unwrap(), json!(4));
        assert_eq!(compute("-2**2").unwrap(), json!(-4));
        assert_eq!(compute("6/2").unwrap(), json!(3.0));
        assert!(compute("ROWS*2").is_err());
    }
}
