//! Golden test: building the QMK corpus must reproduce `qmk generate-api`'s reference output,
//! every file: JSON equal key order included (`last_updated` aside; constants_metadata's
//! `constants` as an unordered map, its order being the filesystem's), other files byte for byte.

mod common;

use serde_json::Value;
use std::path::Path;

fn without_timestamp(bytes: &[u8]) -> Value {
    let mut v: Value = serde_json::from_slice(bytes).unwrap();
    if let Value::Object(m) = &mut v {
        m.shift_remove("last_updated");
    }
    v
}

/// Why two files differ, or None when they match.
fn compare(rel: &Path, expected: &[u8], actual: &[u8]) -> Option<String> {
    if rel.extension().is_some_and(|e| e == "json") {
        let (e, a) = (without_timestamp(expected), without_timestamp(actual));
        let same = if rel == Path::new("v1/constants_metadata.json") {
            e == a // serde_json maps compare without regard to order
        } else {
            serde_json::to_string(&e).unwrap() == serde_json::to_string(&a).unwrap()
        };
        (!same).then(|| "JSON differs".to_owned())
    } else {
        (expected != actual).then(|| "bytes differ".to_owned())
    }
}

#[test]
fn corpus_matches_generate_api_reference() {
    let corpus = common::corpus();
    let out = tempfile::tempdir().unwrap();
    let run = common::build(&corpus.join("firmware"), out.path(), &[]);
    assert!(
        run.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );

    let reference = corpus.join("reference");
    let expected = common::files(&reference);
    let actual = common::files(out.path());
    let mut problems = Vec::new();
    let mut equal = 0;
    for rel in &expected {
        let want = std::fs::read(reference.join(rel)).unwrap();
        match std::fs::read(out.path().join(rel)) {
            Err(_) => problems.push(format!("{}: missing", rel.display())),
            Ok(got) => match compare(rel, &want, &got) {
                None => equal += 1,
                Some(why) => problems.push(format!("{}: {why}", rel.display())),
            },
        }
    }
    for extra in actual.difference(&expected) {
        problems.push(format!("{}: not in the reference", extra.display()));
    }
    println!("golden: {equal}/{} files equal", expected.len());
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(equal, expected.len());
}

#[test]
fn no_trailing_newline_and_ascii_only() {
    let corpus = common::corpus();
    let out = tempfile::tempdir().unwrap();
    let run = common::build(&corpus.join("firmware"), out.path(), &[]);
    assert!(run.status.success());
    let text = std::fs::read(out.path().join("v1/keyboard_list.json")).unwrap();
    assert!(text.starts_with(b"{\"last_updated\":\""));
    assert!(!text.ends_with(b"\n"));
    let all = std::fs::read(out.path().join("v1/keyboards.json")).unwrap();
    assert!(all.iter().all(u8::is_ascii));
}
