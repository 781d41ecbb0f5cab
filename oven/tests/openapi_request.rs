//! The OpenAPI document's request schema against the server's own checks (`oven::keymap`):
//! what the document calls valid must be accepted, what it calls invalid refused, so that a
//! client (or schemathesis, `scripts/api-fuzz.sh`) generating requests from the document gets
//! no surprise. The keycode pattern spells the keycode grammar out to a fixed depth of
//! parentheses (regular expressions cannot count); it is rebuilt here to check it.

use oven::keymap::{parse_keycode, KeymapRequest};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Levels of parentheses the document's keycode pattern spells out.
const PATTERN_DEPTH: usize = 2;

fn spec() -> Value {
    serde_json::from_str(oven::http::OPENAPI_JSON).unwrap()
}

/// A validator of `components/schemas/<name>`, with the document's components in reach.
fn validator(name: &str) -> jsonschema::Validator {
    let mut root = spec();
    let schema = root["components"]["schemas"][name].clone();
    root.as_object_mut().unwrap().remove("paths");
    for (k, v) in schema.as_object().unwrap() {
        root[k] = v.clone();
    }
    jsonschema::validator_for(&root).unwrap()
}

/// The grammar of `oven::keymap::parse_keycode` as a regular expression, to `depth` levels.
fn term(depth: usize) -> String {
    const NUM: &str = "(?:0[xX][0-9A-Fa-f]+|[0-9]+)";
    const IDENT: &str = "[A-Za-z_][A-Za-z0-9_]*";
    if depth == 0 {
        return format!("(?:{NUM}|{IDENT})");
    }
    // Inside parentheses `expr (',' expr)*` is a list of terms separated by `|` or `,`.
    let t = term(depth - 1);
    format!(r"(?:{NUM}|{IDENT}(?: *\( *{t}(?: *[,|] *{t})* *\))?)")
}

fn keycode_pattern(depth: usize) -> String {
    let t = term(depth);
    format!(r"^ *{t}(?: *\| *{t})* *$")
}

fn nesting(s: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                max = max.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[test]
fn the_keycode_pattern_is_the_grammar() {
    let doc = spec();
    let schema = &doc["components"]["schemas"]["Keycode"];
    assert_eq!(schema["pattern"], keycode_pattern(PATTERN_DEPTH));
    assert_eq!(
        schema["maxLength"],
        json!(oven::keymap::MAX_KEYCODE_LEN),
        "maxLength"
    );
    let v = validator("Keycode");
    for good in [
        "KC_A",
        "MO(1)",
        "LT(2, KC_SPC)",
        "MT(MOD_LCTL | MOD_LSFT,KC_ESC)",
        "ANY(LSFT(KC_1))",
        " 0x1F ",
        "KC_A|KC_B",
    ] {
        assert!(v.is_valid(&json!(good)), "{good}");
        assert!(parse_keycode(good).is_ok(), "{good}");
    }
    for bad in [
        "", " ", "1KC", "A(", "A()", "(A)", "A,B", "0x", "0x1g", "KC-A", "A(B;C)",
    ] {
        assert!(!v.is_valid(&json!(bad)), "{bad}");
        assert!(parse_keycode(bad).is_err(), "{bad}");
    }
    // Deeper than the pattern: the server accepts it, the document does not claim it.
    assert!(parse_keycode("A(B(C(D)))").is_ok());
    assert!(!v.is_valid(&json!("A(B(C(D)))")));
}

static KEYCODE: std::sync::LazyLock<jsonschema::Validator> =
    std::sync::LazyLock::new(|| validator("Keycode"));

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn pattern_and_parser_agree(s in "[A_0x1(),| ]{0,14}") {
        let valid = KEYCODE.is_valid(&json!(s));
        let parsed = parse_keycode(&s).is_ok();
        if nesting(&s) <= PATTERN_DEPTH {
            prop_assert_eq!(valid, parsed, "{:?}", s);
        } else {
            prop_assert!(!valid, "{:?}", s);
        }
    }
}

#[test]
fn schema_valid_requests_are_accepted_and_invalid_ones_refused() {
    let v = validator("KeymapRequest");
    let base = json!({"keyboard": "clueboard/66/rev3", "keymap": "mine", "layout": "LAYOUT_all",
        "layers": [["KC_A", "LT(1, KC_B)"], []]});
    let with = |k: &str, val: Value| {
        let mut r = base.clone();
        r[k] = val;
        r
    };
    let accepted = [
        base.clone(),
        with("version", json!(7.0)),
        with("version", json!(null)),
        with("notes", json!(null)),
        with("author", json!("é".repeat(100))),
        with("keymap", json!("clavier_é.v2")),
        with("config", json!({})),
        with(
            "config",
            json!({"tapping": {"term": 200.0}, "features": {"oled": true}}),
        ),
        with(
            "macros",
            json!([["Hi \"there\"\n", {"action": "tap", "keycodes": ["LCTL", "A"]}, {"action": "delay", "duration": 50}]]),
        ),
        with("encoders", json!([[{"ccw": "KC_VOLD", "cw": "KC_VOLU"}]])),
        with("commit", json!("6b60089fc704e4fc6bb75686b725a19da6a92fa9")),
        with("host_language", json!("german")),
    ];
    for r in accepted {
        assert!(v.is_valid(&r), "document refuses {r}");
        assert!(
            KeymapRequest::from_value(r.clone()).is_ok(),
            "server refuses {r}"
        );
    }
    let refused = [
        with("version", json!(1.5)),
        with("version", json!(-1)),
        with("notes", json!("a\u{0}b")),
        with("keyboard", json!("a//b")),
        with("keyboard", json!("")),
        with("keymap", json!("")),
        with("layout", json!("layout_x")),
        with("layers", json!([])),
        with("layers", json!([["KC_A("]])),
        with("keymap", json!("a\nb")),
        with("config", json!({"usb": {"manufacturer": "x"}})),
        with("config", json!({"ws2812": {"rgbw": {}}})),
        with("macros", json!([["ends with a quote\""]])),
        with("macros", json!([[{"action": "tap"}]])),
        with("macros", json!([[{"action": "delay"}]])),
        with("encoders", json!([[{"ccw": "KC_A;", "cw": "KC_B"}]])),
        with("modules", json!(["qmk/hello"])),
    ];
    for r in refused {
        assert!(!v.is_valid(&r), "document accepts {r}");
        assert!(
            KeymapRequest::from_value(r.clone()).is_err(),
            "server accepts {r}"
        );
    }
}
