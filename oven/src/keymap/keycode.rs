//! The keycode grammar: the allow-list every string that reaches generated C as a keycode
//! passes (layers, encoders, dip switches). QMK's generator (`lib/python/qmk/keymap.py`)
//! pastes keycodes into keymap.c verbatim, so this grammar is what keeps a keymap data.

use super::{show_char, MAX_KEYCODE_DEPTH, MAX_KEYCODE_LEN};

/// Why a keycode string does not parse; `at` is a byte offset into the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeycodeError {
    #[error("empty")]
    Empty,
    #[error("longer than {MAX_KEYCODE_LEN} bytes")]
    TooLong,
    #[error("nested deeper than {MAX_KEYCODE_DEPTH} levels at {at}")]
    TooDeep { at: usize },
    #[error("unexpected {} at {at}", show_char(*found))]
    Unexpected { found: char, at: usize },
    #[error("unexpected end at {at}")]
    UnexpectedEnd { at: usize },
}

/// Checks a keycode string against the allow-list grammar:
///
/// ```text
/// keycode := ws expr ws END
/// expr    := term (ws '|' ws term)*
/// term    := number | ident (ws '(' ws expr (ws ',' ws expr)* ws ')')?
/// ident   := [A-Za-z_][A-Za-z0-9_]*
/// number  := '0' [xX] [0-9A-Fa-f]+ | [0-9]+
/// ws      := ' '*
/// ```
///
/// Spaces may only stand between tokens, and two tokens are always separated by punctuation,
/// so a keycode without its spaces is the same keycode: that is its canonical form.
pub fn parse_keycode(s: &str) -> Result<(), KeycodeError> {
    if s.len() > MAX_KEYCODE_LEN {
        return Err(KeycodeError::TooLong);
    }
    if s.trim_matches(' ').is_empty() {
        return Err(KeycodeError::Empty);
    }
    let mut p = Parser {
        s: s.as_bytes(),
        src: s,
        pos: 0,
    };
    p.ws();
    p.expr(0)?;
    p.ws();
    if p.pos < p.s.len() {
        return Err(p.unexpected());
    }
    Ok(())
}

/// Checks `s` with [`parse_keycode`] and returns its canonical form (spaces removed), reusing
/// the string when it already is canonical.
pub fn normalize_keycode(s: String) -> Result<String, KeycodeError> {
    parse_keycode(&s)?;
    Ok(canonical_keycode(s))
}

/// The canonical form of a keycode that parsed.
pub(crate) fn canonical_keycode(s: String) -> String {
    if s.contains(' ') {
        s.replace(' ', "")
    } else {
        s
    }
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> KeycodeError {
        match self.src[self.pos..].chars().next() {
            Some(found) => KeycodeError::Unexpected {
                found,
                at: self.pos,
            },
            None => KeycodeError::UnexpectedEnd { at: self.pos },
        }
    }

    fn expr(&mut self, depth: usize) -> Result<(), KeycodeError> {
        self.term(depth)?;
        self.ws();
        while self.peek() == Some(b'|') {
            self.pos += 1;
            self.ws();
            self.term(depth)?;
            self.ws();
        }
        Ok(())
    }

    fn term(&mut self, depth: usize) -> Result<(), KeycodeError> {
        let start = self.pos;
        match self.peek() {
            Some(b'0'..=b'9') => {
                if self.s[start..].len() > 1
                    && self.s[start] == b'0'
                    && matches!(self.s[start + 1], b'x' | b'X')
                {
                    self.pos += 2;
                    let digits = self.pos;
                    while self.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
                        self.pos += 1;
                    }
                    if self.pos == digits {
                        return Err(self.unexpected());
                    }
                } else {
                    while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                        self.pos += 1;
                    }
                }
                // `1KC_A` or `0x1g` are not numbers.
                if self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(self.unexpected());
                }
                Ok(())
            }
            Some(b) if b.is_ascii_alphabetic() || b == b'_' => {
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    self.pos += 1;
                }
                self.ws();
                if self.peek() != Some(b'(') {
                    return Ok(());
                }
                if depth + 1 > MAX_KEYCODE_DEPTH {
                    return Err(KeycodeError::TooDeep { at: self.pos });
                }
                self.pos += 1;
                self.ws();
                self.expr(depth + 1)?;
                loop {
                    self.ws();
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            self.ws();
                            self.expr(depth + 1)?;
                        }
                        Some(b')') => {
                            self.pos += 1;
                            break;
                        }
                        _ => return Err(self.unexpected()),
                    }
                }
                Ok(())
            }
            _ => Err(self.unexpected()),
        }
    }
}
