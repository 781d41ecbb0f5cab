//! What a build log says, as data: the flash budget QMK's size check prints, and compiler
//! errors in the generated keymap.c traced back to the request's `layers`.
//!
//! `qmk json2c` (`lib/python/qmk/keymap.py`, `_generate_keymap_table`) writes each layer on one
//! line, `    [N] = LAYOUT(k0, k1, ...)`, with every keycode as the request wrote it (`ANY(x)`
//! becomes `x`). gcc reports `keymap.c:LINE:COL: error: MESSAGE` with a 1-based column of the
//! offending token (bytes for ASCII text, which keymaps are), so the line's text gives the
//! layer and the column the key. The text comes from the generated keymap.c when the worker
//! has it, else from the source line gcc echoes after the message.

use crate::job::{FlashBudget, KeymapError};

/// `s` without ANSI escape sequences (QMK and gcc colour their output).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// `U/M` at the start of `s`.
fn used_max(s: &str) -> Option<(u64, u64)> {
    let s = s.trim_start();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '/'))?;
    let (u, m) = s[..end].split_once('/')?;
    Some((u.parse().ok()?, m.parse().ok()?))
}

/// The flash budget from QMK's size check in `log` (`builddefs/message.mk`): `The firmware size
/// is fine - U/M (P%, F bytes free)`, `... approaching the maximum - U/M ...`, or `The firmware
/// is too large! U/M (O bytes over)`. The last such line counts. `None` when the log has none
/// (ARM builds print no size check) or the maximum is 0.
pub fn flash_budget(log: &str) -> Option<FlashBudget> {
    let text = strip_ansi(log);
    let mut found = None;
    for line in text.lines() {
        let numbers = [
            "The firmware size is fine - ",
            "The firmware size is approaching the maximum - ",
            "The firmware is too large! ",
        ]
        .iter()
        .find_map(|p| line.find(p).map(|at| &line[at + p.len()..]));
        if let Some((used, max)) = numbers.and_then(used_max) {
            if max > 0 {
                found = Some(FlashBudget {
                    used_bytes: used,
                    max_bytes: max,
                    percent: used * 100 / max,
                    free_bytes: (used <= max).then(|| max - used),
                    over_bytes: (used > max).then(|| used - max),
                });
            }
        }
    }
    found
}

/// A `keymap.c:LINE:COL: error: MESSAGE` line: (line, column, message).
fn keymap_error(line: &str) -> Option<(usize, usize, &str)> {
    let at = line.find("keymap.c:")?;
    let rest = &line[at + "keymap.c:".len()..];
    let mut parts = rest.splitn(3, ':');
    let l = parts.next()?.parse().ok()?;
    let c = parts.next()?.parse().ok()?;
    let msg = parts.next()?.trim_start().strip_prefix("error:")?;
    Some((l, c, msg.trim()))
}

/// The source text gcc echoes under a message: the line itself (gcc < 9) or `  15 | text`.
fn echoed(next: &str) -> &str {
    match next.split_once(" | ") {
        Some((n, text)) if n.trim().chars().all(|c| c.is_ascii_digit()) && !n.trim().is_empty() => {
            text
        }
        _ => next,
    }
}

/// The layer a json2c line holds and the key whose text spans the 1-based `column`.
fn layer_and_key(text: &str, column: usize) -> Option<(usize, usize)> {
    let t = text.trim_start();
    let indent = text.len() - t.len();
    let rest = t.strip_prefix('[')?;
    let close = rest.find(']')?;
    let layer: usize = rest[..close].trim().parse().ok()?;
    let open = indent + 1 + close + text[indent + 1 + close..].find('(')?;
    let col = column.checked_sub(1)?;
    // Keys are the arguments of the LAYOUT call, split at top-level commas.
    let (mut depth, mut key, mut start) = (0usize, 0usize, open + 1);
    for (i, b) in text.bytes().enumerate().skip(open + 1) {
        let end_of_key = match b {
            b'(' => {
                depth += 1;
                false
            }
            b')' if depth == 0 => true,
            b')' => {
                depth -= 1;
                false
            }
            b',' => depth == 0,
            _ => false,
        };
        if end_of_key {
            if (start..i).contains(&col) {
                return Some((layer, key));
            }
            if b == b')' {
                return None;
            }
            key += 1;
            start = i + 1;
        }
    }
    None
}

/// Compiler errors of `log` located in the keymap: each names `layers[layer][key]` of the
/// request (`layers`, as submitted) and the compiler's message, with curly quotes made plain.
/// `keymap_c` is the generated keymap.c if the worker has it. Errors elsewhere, or that do not
/// land on a key (a misspelt LAYOUT), are left out; each key and message is named once.
pub fn keymap_errors(
    log: &str,
    keymap_c: Option<&str>,
    layers: &[Vec<String>],
) -> Vec<KeymapError> {
    let text = strip_ansi(log);
    let lines: Vec<&str> = text.lines().collect();
    let source: Vec<&str> = keymap_c.map(|k| k.lines().collect()).unwrap_or_default();
    let mut out: Vec<KeymapError> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((l, c, msg)) = keymap_error(line) else {
            continue;
        };
        let src = source
            .get(l.wrapping_sub(1))
            .copied()
            .or_else(|| lines.get(i + 1).map(|n| echoed(n)));
        let Some((layer, key)) = src.and_then(|s| layer_and_key(s, c)) else {
            continue;
        };
        let Some(keycode) = layers.get(layer).and_then(|l| l.get(key)) else {
            continue;
        };
        let message = msg.replace(['‘', '’'], "'");
        let e = KeymapError {
            layer,
            key,
            keycode: keycode.clone(),
            message,
        };
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// One line per error, `layers[1][14]: 'LM_VALD' undeclared here (not in a function)`, naming
/// the keycode too when the message does not (`... (keycode LT(2,KC_NOPE))`).
pub fn summary(errors: &[KeymapError]) -> String {
    errors
        .iter()
        .map(|e| {
            let mut s = format!("layers[{}][{}]: {}", e.layer, e.key, e.message);
            if !e.message.contains(&format!("'{}'", e.keycode)) {
                s.push_str(&format!(" (keycode {})", e.keycode));
            }
            s.push('\n');
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real dz60 build (qmk_firmware 95b9016a3b, avr-gcc 5.4.0, colours on) of a keymap whose
    /// layer 1 has `LM_VALD` at key 14 and `LT(2,KC_NOPE)` at key 20.
    const GCC5_LOG: &str = include_str!("testdata/gcc5-dz60-undeclared.log");

    fn dz60_layers() -> Vec<Vec<String>> {
        let mut l1 = vec!["KC_TRNS".to_string(); 61];
        l1[14] = "LM_VALD".into();
        l1[20] = "LT(2,KC_NOPE)".into();
        vec![vec!["KC_ESC".to_string(); 61], l1]
    }

    #[test]
    fn gcc5_errors_are_traced_to_layer_and_key() {
        let errors = keymap_errors(GCC5_LOG, None, &dz60_layers());
        assert_eq!(
            errors,
            vec![
                KeymapError {
                    layer: 1,
                    key: 14,
                    keycode: "LM_VALD".into(),
                    message: "'LM_VALD' undeclared here (not in a function)".into(),
                },
                KeymapError {
                    layer: 1,
                    key: 20,
                    keycode: "LT(2,KC_NOPE)".into(),
                    message: "'KC_NOPE' undeclared here (not in a function)".into(),
                },
            ]
        );
        assert_eq!(
            summary(&errors),
            "layers[1][14]: 'LM_VALD' undeclared here (not in a function)\n\
             layers[1][20]: 'KC_NOPE' undeclared here (not in a function) (keycode LT(2,KC_NOPE))\n"
        );
    }

    /// A real planck/rev6 build (arm-none-eabi-gcc 12.2, echo with line numbers) with `LM_VALD`
    /// at layer 1, key 5.
    const GCC12_LOG: &str = include_str!("testdata/gcc12-planck-undeclared.log");

    #[test]
    fn gcc12_errors_are_traced_to_layer_and_key() {
        let mut l1 = vec!["KC_TRNS".to_string(); 47];
        l1[5] = "LM_VALD".into();
        let layers = vec![vec!["KC_A".to_string(); 47], l1];
        let errors = keymap_errors(GCC12_LOG, None, &layers);
        assert_eq!(
            summary(&errors),
            "layers[1][5]: 'LM_VALD' undeclared here (not in a function); did you mean 'RM_VALD'?\n"
        );
    }

    #[test]
    fn the_generated_keymap_c_is_preferred_to_the_echo() {
        // Line 3 of this keymap.c is layer 1; the log's echo is cut off (as with -fno-diagnostics-show-caret).
        let keymap_c = "#include QMK_KEYBOARD_H\n    [0] = LAYOUT(KC_A, KC_B),\n    [1] = LAYOUT(KC_C, ANY_X)\n};\n";
        let log = "./.build/obj_kb_x/src/keymap.c:3:25: error: 'ANY_X' undeclared here\n";
        let layers = vec![
            vec!["KC_A".to_string(), "KC_B".into()],
            vec!["KC_C".to_string(), "ANY(ANY_X)".into()],
        ];
        let errors = keymap_errors(log, Some(keymap_c), &layers);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].layer, errors[0].key), (1, 1));
        assert_eq!(errors[0].keycode, "ANY(ANY_X)");
        assert!(keymap_errors(log, None, &layers).is_empty());
    }

    #[test]
    fn new_gcc_echo_with_line_numbers_and_misses() {
        // gcc 9+ echoes `  15 | text`; a column on the LAYOUT name is no key.
        let text = "    [0] = LAYOUT_x(KC_A, KC_NOPE)";
        let log = format!(
            "keymap.c:9:26: error: 'KC_NOPE' undeclared here (not in a function)\n    9 | {text}\n\
             keymap.c:9:15: error: implicit declaration of function 'LAYOUT_x'\n    9 | {text}\n\
             quantum/quantum.c:9:26: error: 'X' undeclared\n    9 | {text}\n"
        );
        let layers = vec![vec!["KC_A".to_string(), "KC_NOPE".into()]];
        let errors = keymap_errors(&log, None, &layers);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].layer, errors[0].key), (0, 1));
        assert_eq!(layer_and_key(text, 20), Some((0, 0)));
        assert_eq!(layer_and_key(text, 19), None, "the '(' is no key");
        assert_eq!(layer_and_key("int x;", 2), None);
    }

    #[test]
    fn flash_budget_of_a_real_dz60_build() {
        let log = include_str!("testdata/avr-dz60-size-fine.log");
        let b = flash_budget(log).unwrap();
        assert_eq!(
            (b.used_bytes, b.max_bytes, b.percent, b.free_bytes),
            (22302, 28672, 77, Some(6370))
        );
    }

    #[test]
    fn flash_budget_from_qmks_size_check() {
        // builddefs/message.mk and platforms/avr/platform.mk, with QMK's colours.
        let fine = "Checking file size of dz60_x.hex\x1b[0m \
                    \x1b[32;01m[OK]\x1b[0m\n * The firmware size is fine - 23722/28672 (82%, 4950 bytes free)\n";
        assert_eq!(
            flash_budget(fine),
            Some(FlashBudget {
                used_bytes: 23722,
                max_bytes: 28672,
                percent: 82,
                free_bytes: Some(4950),
                over_bytes: None,
            })
        );
        let near =
            " * The firmware size is approaching the maximum - 28000/28672 (97%, 672 bytes free)";
        assert_eq!(flash_budget(near).unwrap().percent, 97);
        let big =
            "\n * \x1b[31;01mThe firmware is too large!\x1b[0m 30000/28672 (1328 bytes over)\n";
        let b = flash_budget(big).unwrap();
        assert_eq!(
            (
                b.used_bytes,
                b.max_bytes,
                b.percent,
                b.free_bytes,
                b.over_bytes
            ),
            (30000, 28672, 104, None, Some(1328))
        );
        assert_eq!(flash_budget("Linking: x.elf [OK]\n"), None);
        assert_eq!(
            flash_budget(" * The firmware size is fine - 10/0 (0%, 0 bytes free)"),
            None
        );
    }

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\x1b[01m\x1b[Ka\x1b[m\x1b[K b\x1b[31;01m!"),
            "a b!"
        );
    }
}
