//! Keymap names as users type them, and the file names derived from them.
//!
//! The Configurator's Compile button sends the typed name lower-cased with spaces and `/`
//! replaced, so dots, apostrophes, `+` and non-ASCII letters arrive. QMK's schema takes any
//! string of 1 to 250 characters (`text_identifier`, `data/schemas/definitions.jsonschema`);
//! the upstream API refused only `/` (contract §4.4). Oven builds every job under its own
//! internal name (`worker::BUILD_KEYMAP`), so the user's name never reaches make or a path:
//! it is only shown, and file names are derived from it here.

/// Longest keymap name, in characters (QMK's `text_identifier`).
pub const MAX_KEYMAP_CHARS: usize = 250;

/// Checks a keymap name: 1 to [`MAX_KEYMAP_CHARS`] characters, no `/` (the contract's 422),
/// no control characters (they have no place in a name a file is saved under).
pub fn check_keymap(km: &str) -> Result<(), String> {
    if km.is_empty() {
        return Err("must not be empty".into());
    }
    if km.chars().count() > MAX_KEYMAP_CHARS {
        return Err(format!("longer than {MAX_KEYMAP_CHARS} characters"));
    }
    if let Some((at, c)) = km.char_indices().find(|(_, c)| c.is_control()) {
        return Err(format!(
            "{} is not a keymap name: control character U+{:04X} at byte {at}",
            super::quote(km),
            c as u32
        ));
    }
    Ok(())
}

/// `s` as a file-name component of `[A-Za-z0-9._-]` (what artifact keys allow): every other
/// character becomes `_`. Never empty, never `.` or `..`.
pub fn ascii_component(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match out.as_str() {
        "" | "." | ".." => out.replace('.', "_") + "_",
        _ => out,
    }
}

/// QMK's target name `<keyboard with / as _>_<keymap>`, as the user would call the file
/// (keymap name kept as typed).
pub fn display_stem(keyboard: &str, keymap: &str) -> String {
    format!("{}_{}", keyboard.replace('/', "_"), keymap)
}

/// [`display_stem`] restricted to artifact-key characters.
pub fn ascii_stem(keyboard: &str, keymap: &str) -> String {
    ascii_component(&display_stem(keyboard, keymap))
}

/// `Content-Disposition` for a download (RFC 6266): `attachment; filename="<ASCII>"`, plus
/// `filename*=UTF-8''<percent-encoded>` (RFC 8187) when the name is not plain ASCII, so
/// browsers save `mine.v2`, `d'or` or `clavier_é` under the name the user typed.
pub fn content_disposition(file_name: &str) -> String {
    let fallback: String = file_name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if fallback == file_name {
        return format!("attachment; filename=\"{fallback}\"");
    }
    let mut encoded = String::new();
    for b in file_name.bytes() {
        // RFC 8187 attr-char.
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurator_names_are_accepted_and_give_safe_file_names() {
        for km in ["mine.v2", "d'or", "a+b", "clavier_é", "..", "x y"] {
            assert_eq!(check_keymap(km), Ok(()), "{km}");
            let stem = ascii_stem("dz60", km);
            assert!(
                crate::ports::ArtifactKey::new(format!("{stem}.hex")).is_ok(),
                "{stem}"
            );
        }
        assert_eq!(ascii_stem("ferris/0_1", "mine.v2"), "ferris_0_1_mine.v2");
        assert_eq!(ascii_stem("dz60", "clavier_é"), "dz60_clavier__");
        assert_eq!(ascii_component(".."), "___");
        for bad in ["", "a\nb", "a\u{0}b", "a\u{85}b"] {
            assert!(check_keymap(bad).is_err(), "{bad:?}");
        }
        assert!(check_keymap(&"k".repeat(250)).is_ok());
        assert!(check_keymap(&"é".repeat(251)).is_err());
    }

    #[test]
    fn content_disposition_follows_rfc_6266() {
        assert_eq!(
            content_disposition("dz60_default.hex"),
            "attachment; filename=\"dz60_default.hex\""
        );
        assert_eq!(
            content_disposition("dz60_clavier_é.hex"),
            "attachment; filename=\"dz60_clavier__.hex\"; filename*=UTF-8''dz60_clavier_%C3%A9.hex"
        );
        assert_eq!(
            content_disposition("a\"b\\c\nd%.hex"),
            "attachment; filename=\"a_b_c_d_.hex\"; filename*=UTF-8''a%22b%5Cc%0Ad%25.hex"
        );
        // Every value is a valid header value.
        for n in ["x\r\ny", "é", "\u{7f}"] {
            assert!(http::HeaderValue::from_str(&content_disposition(n)).is_ok());
        }
    }
}
