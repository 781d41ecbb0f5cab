//! An hjson reader that behaves like hjson-py, the parser QMK reads every data file with:
//! quoteless keys and strings, `'''` multiline strings, `#`, `//` and `/* */` comments,
//! optional commas, a braceless root object. Numbers written with a fraction or exponent that
//! are integral become integers; duplicate keys are errors.
//! (deser-hjson reads `version: 0.0.1` as a failed number, so the XAP specs need this.)

use serde_json::{Map, Number, Value};

/// A parse failure with its 1-based line and column.
#[derive(Debug, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct HjsonError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

type R<T> = Result<T, HjsonError>;

/// Parses one hjson document.
pub fn parse(text: &str) -> R<Value> {
    let mut p = Parser {
        s: text.as_bytes(),
        text,
        pos: 0,
    };
    p.skip_ws();
    let value = match p.peek() {
        None => Value::Object(Map::new()),
        Some(b'{') | Some(b'[') => p.value()?,
        Some(_) => {
            // A braceless root object, or else a single value.
            let save = p.pos;
            match p.members(None) {
                Ok(m) => Value::Object(m),
                Err(e) => {
                    p.pos = save;
                    p.value().map_err(|_| e)?
                }
            }
        }
    };
    p.skip_ws();
    if p.pos < p.s.len() {
        return Err(p.err("unexpected content after the value"));
    }
    Ok(value)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn err(&self, message: &str) -> HjsonError {
        let before = &self.s[..self.pos.min(self.s.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = self.pos
            - before
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1)
            + 1;
        HjsonError {
            message: message.to_owned(),
            line,
            column,
        }
    }

    /// Skips whitespace and comments.
    fn skip_ws(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_ascii_whitespace() => self.pos += 1,
                Some(b'#') => self.skip_line(),
                Some(b'/') if self.s.get(self.pos + 1) == Some(&b'/') => self.skip_line(),
                Some(b'/') if self.s.get(self.pos + 1) == Some(&b'*') => {
                    match self.text[self.pos + 2..].find("*/") {
                        Some(i) => self.pos += 2 + i + 2,
                        None => self.pos = self.s.len(),
                    }
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.peek() {
            if c == b'\n' {
                return;
            }
            self.pos += 1;
        }
    }

    fn value(&mut self) -> R<Value> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("unexpected end of input, expected a value")),
            Some(b'{') => {
                self.pos += 1;
                Ok(Value::Object(self.members(Some(b'}'))?))
            }
            Some(b'[') => {
                self.pos += 1;
                self.array()
            }
            Some(b'"') => {
                self.pos += 1;
                Ok(Value::String(self.quoted(b'"')?))
            }
            Some(b'\'') => {
                if self.s[self.pos..].starts_with(b"'''") {
                    Ok(Value::String(self.multiline()?))
                } else {
                    self.pos += 1;
                    Ok(Value::String(self.quoted(b'\'')?))
                }
            }
            Some(_) => self.quoteless(),
        }
    }

    /// Object members up to `close` (or the end of input for a braceless root).
    fn members(&mut self, close: Option<u8>) -> R<Map<String, Value>> {
        let mut out = Map::new();
        loop {
            self.skip_ws();
            match (self.peek(), close) {
                (None, None) => return Ok(out),
                (None, Some(_)) => return Err(self.err("unexpected end of input in an object")),
                (Some(c), Some(cl)) if c == cl => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => {}
            }
            let key = self.key()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a key"));
            }
            self.pos += 1;
            let v = self.value()?;
            if out.contains_key(&key) {
                return Err(self.err(&format!("duplicate key: {key:?}")));
            }
            out.insert(key, v);
            self.skip_ws();
            if self.peek() == Some(b',') {
                self.pos += 1;
            }
        }
    }

    fn array(&mut self) -> R<Value> {
        let mut out = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(self.err("unexpected end of input in an array")),
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(out));
                }
                _ => {}
            }
            out.push(self.value()?);
            self.skip_ws();
            if self.peek() == Some(b',') {
                self.pos += 1;
            }
        }
    }

    fn key(&mut self) -> R<String> {
        match self.peek() {
            Some(b'"') => {
                self.pos += 1;
                return self.quoted(b'"');
            }
            Some(b'\'') => {
                self.pos += 1;
                return self.quoted(b'\'');
            }
            _ => {}
        }
        let begin = self.pos;
        let mut space: Option<usize> = None;
        loop {
            match self.peek() {
                None => return Err(self.err("bad key name (end of input)")),
                Some(b':') => {
                    if self.pos == begin {
                        return Err(self.err("found ':' but no key name"));
                    }
                    return match space {
                        Some(sp) if sp != self.pos - 1 => {
                            Err(self.err("found whitespace in a key name (use quotes)"))
                        }
                        _ => Ok(self.text[begin..self.pos].trim_end().to_owned()),
                    };
                }
                Some(c) if c.is_ascii_whitespace() => {
                    if space.is_none_or(|sp| sp == self.pos - 1) {
                        space = Some(self.pos);
                    }
                }
                Some(b'{' | b'}' | b'[' | b']' | b',') => {
                    return Err(self.err("found a punctuator where a key name was expected"))
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> R<u32> {
        let h = self
            .text
            .get(self.pos..self.pos + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.pos += 4;
        Ok(h)
    }

    fn quoted(&mut self, quote: u8) -> R<String> {
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c == quote || c == b'\\' {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                _ => {
                    self.pos += 1;
                    let esc = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.pos += 1;
                    match esc {
                        b'"' => out.push('"'),
                        b'\'' => out.push('\''),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{08}'),
                        b'f' => out.push('\u{0c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi)
                                && self.s[self.pos..].starts_with(b"\\u")
                            {
                                self.pos += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                hi
                            };
                            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
            }
        }
    }

    /// `'''` string: the opening quote's column is the indentation removed from each line.
    fn multiline(&mut self) -> R<String> {
        let line_start = self.s[..self.pos]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let indent = self.pos - line_start;
        self.pos += 3;
        while let Some(c) = self.peek() {
            if c > b' ' || c == b'\n' {
                break;
            }
            self.pos += 1;
        }
        if self.peek() == Some(b'\n') {
            self.pos += 1;
            self.skip_indent(indent);
        }
        let mut out = String::new();
        let mut triple = 0;
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated multiline string"));
            };
            if c == b'\'' {
                triple += 1;
                self.pos += 1;
                if triple == 3 {
                    if out.ends_with('\n') {
                        out.pop();
                    }
                    return Ok(out);
                }
                continue;
            }
            while triple > 0 {
                out.push('\'');
                triple -= 1;
            }
            if c == b'\n' {
                out.push('\n');
                self.pos += 1;
                self.skip_indent(indent);
            } else {
                let ch_len = self.text[self.pos..]
                    .chars()
                    .next()
                    .map_or(1, char::len_utf8);
                if c != b'\r' {
                    out.push_str(&self.text[self.pos..self.pos + ch_len]);
                }
                self.pos += ch_len;
            }
        }
    }

    fn skip_indent(&mut self, mut n: usize) {
        while n > 0 {
            match self.peek() {
                Some(c) if c <= b' ' && c != b'\n' => {
                    self.pos += 1;
                    n -= 1;
                }
                _ => return,
            }
        }
    }

    /// A quoteless value: a keyword or number when one ends at a terminator, else the line.
    fn quoteless(&mut self) -> R<Value> {
        let begin = self.pos;
        let first = self.s[begin];
        if matches!(first, b'{' | b'}' | b'[' | b']' | b',' | b':') {
            return Err(self.err("found a punctuator where a value was expected"));
        }
        loop {
            let c = self.peek();
            let eol = matches!(c, None | Some(b'\n') | Some(b'\r'));
            let term = eol
                || matches!(c, Some(b',' | b'}' | b']' | b'#'))
                || (c == Some(b'/') && matches!(self.s.get(self.pos + 1), Some(b'/' | b'*')));
            if term {
                let chunk = self.text[begin..self.pos].trim();
                match chunk {
                    "null" if first == b'n' => return Ok(Value::Null),
                    "true" if first == b't' => return Ok(Value::Bool(true)),
                    "false" if first == b'f' => return Ok(Value::Bool(false)),
                    _ => {}
                }
                if first == b'-' || first.is_ascii_digit() {
                    if let Some(n) = number(&self.text[begin..self.pos]) {
                        return Ok(n);
                    }
                }
                if eol {
                    return Ok(Value::String(chunk.to_owned()));
                }
            }
            self.pos += 1;
        }
    }
}

/// A JSON number (surrounding spaces/tabs allowed), integral floats as integers.
fn number(raw: &str) -> Option<Value> {
    let t = raw.trim_matches([' ', '\t']);
    let b = t.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if int_digits == 0 || (int_digits > 1 && b[int_start] == b'0') {
        return None;
    }
    let mut is_float = false;
    if b.get(i) == Some(&b'.') {
        let s = i + 1;
        i = s;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
        is_float = true;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return None;
        }
        is_float = true;
    }
    if i != b.len() {
        return None;
    }
    if !is_float {
        if let Ok(n) = t.parse::<i64>() {
            return Some(Value::Number(n.into()));
        }
        if let Ok(n) = t.parse::<u64>() {
            return Some(Value::Number(n.into()));
        }
    }
    let f: f64 = t.parse().ok()?;
    if f.fract() == 0.0 && f.abs() < 9.0e18 {
        Some(Value::Number(Number::from(f as i64)))
    } else {
        Number::from_f64(f).map(Value::Number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoteless_values_and_numbers() {
        let v = parse("{\n version: 0.0.1\n n: 1.0\n e: 1e2\n z: -0\n f: 0.25 # c\n s: a, b\n t: true\n l: [1, 2.5,\n x\n]\n}").unwrap();
        assert_eq!(
            v,
            json!({"version": "0.0.1", "n": 1, "e": 100, "z": 0, "f": 0.25, "s": "a, b", "t": true, "l": [1, 2.5, "x"]})
        );
    }

    #[test]
    fn multiline_indent_is_removed() {
        let v =
            parse("{\n    a:\n        '''\n        # Title\n          indented\n        '''\n}")
                .unwrap();
        assert_eq!(v["a"], "# Title\n  indented");
    }

    #[test]
    fn errors() {
        assert!(parse("{\"a\": 1, \"a\": 2}")
            .unwrap_err()
            .message
            .contains("duplicate"));
        assert!(parse("{\"a\": 1").is_err());
        assert!(parse("{a b: 1}").is_err());
    }

    #[test]
    fn escapes_and_single_quotes() {
        let v = parse(r#"{"a": "x\"\u00e9\ud83d\ude00", 'b': 'it\'s'}"#).unwrap();
        assert_eq!(v["a"], "x\"é😀");
        assert_eq!(v["b"], "it's");
    }
}
