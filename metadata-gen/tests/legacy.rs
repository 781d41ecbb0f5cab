//! Legacy config.h/rules.mk values and failure handling, on small fixture keyboards
//! (tests/fixtures/keyboards) built against the corpus's `data/` folder.

mod common;

use serde_json::{json, Value};
use std::path::Path;

/// A qmk home: the corpus's data/, the fixture keyboards, no community layouts.
fn fixture_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    std::os::unix::fs::symlink(
        common::corpus().join("firmware/data"),
        home.path().join("data"),
    )
    .unwrap();
    std::os::unix::fs::symlink(fixtures.join("keyboards"), home.path().join("keyboards")).unwrap();
    std::fs::create_dir(home.path().join("layouts")).unwrap();
    home
}

fn info(out: &Path, kb: &str) -> Value {
    let text = std::fs::read(out.join(format!("v1/keyboards/{kb}/info.json"))).unwrap();
    let v: Value = serde_json::from_slice(&text).unwrap();
    v["keyboards"][kb].clone()
}

#[test]
fn legacy_values_are_mapped_and_broken_keyboards_left_out() {
    let home = fixture_home();
    let out = tempfile::tempdir().unwrap();
    let run = common::build(home.path(), out.path(), &["--max-failures", "1"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("legacy/broken"),
        "failure not reported: {stderr}"
    );

    let list: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("v1/keyboard_list.json")).unwrap())
            .unwrap();
    assert_eq!(list["keyboards"], json!(["legacy/arm", "legacy/avr"]));
    assert!(!out.path().join("v1/keyboards/legacy/broken").exists());

    let avr = info(out.path(), "legacy/avr");
    assert_eq!(avr["processor"], "atmega32u4");
    assert_eq!(avr["processor_type"], "avr");
    assert_eq!(avr["platform"], "unknown");
    assert_eq!(avr["protocol"], "LUFA");
    assert_eq!(avr["bootloader"], "atmel-dfu");
    assert_eq!(avr["diode_direction"], "COL2ROW");
    // QMK strips every '"' at both ends before unescaping, so the final `\"` loses its quote.
    assert_eq!(avr["manufacturer"], "Old \"Name\\");
    assert_eq!(
        avr["tapping"],
        json!({"term": 175, "permissive_hold": true})
    );
    assert_eq!(avr["rgblight"]["led_count"], 12);
    assert_eq!(
        avr["features"],
        json!({"rgblight": true, "extrakey": false})
    );
    assert_eq!(avr["matrix_size"], json!({"cols": 2, "rows": 2}));
    // rules.mk is applied before config.h, so custom_lite comes first.
    assert_eq!(
        serde_json::to_string(&avr["matrix_pins"]).unwrap(),
        r#"{"custom_lite":true,"cols":["F4","F5"],"rows":["D0","D1"]}"#
    );
    assert_eq!(avr["layouts"]["LAYOUT"]["layout"][3]["x"], json!(1));
    let warnings: Vec<&str> = avr["parse_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"MANUFACTURER in config.h is deprecated in favor of `manufacturer` in info.json and will be removed at a later date"), "{warnings:?}");
    assert!(
        warnings.contains(&"MANUFACTURER in config.h is overwriting manufacturer in info.json"),
        "{warnings:?}"
    );
    assert_eq!(avr["parse_errors"], json!([]));

    let arm = info(out.path(), "legacy/arm");
    assert_eq!(arm["processor_type"], "arm");
    assert_eq!(arm["platform"], "STM32");
    assert_eq!(arm["platform_key"], "chibios");
    assert_eq!(arm["protocol"], "ChibiOS");
    assert_eq!(arm["split"]["transport"]["protocol"], "i2c");
    // Split keyboards: the matrix size counts both halves.
    assert_eq!(arm["matrix_size"], json!({"cols": 2, "rows": 2}));

    let usb: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("v1/usb.json")).unwrap()).unwrap();
    assert_eq!(
        usb["usb"]["0xFEED"]["0x0002"]["legacy/arm"]["pid"],
        "0x0002"
    );
}

#[test]
fn too_many_failures_fail_the_build_and_write_nothing() {
    let home = fixture_home();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("tree");
    let run = common::build(home.path(), &target, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("legacy/broken"), "{stderr}");
    assert!(stderr.contains("1 of 3 keyboards failed"), "{stderr}");
    assert!(!target.join("v1").exists());

    let pct = common::build(home.path(), &target, &["--max-failures", "10%"]);
    assert!(!pct.status.success(), "1 of 3 is over 10%");
    let pct = common::build(home.path(), &target, &["--max-failures", "34%"]);
    assert!(pct.status.success());
}
