//! Reproducible firmware: the same request on the same firmware commit gives the same bytes in
//! any work directory, stamped with the commit's date (QMK_BUILDDATE, __DATE__, __TIME__), and
//! a tree at another commit date gives another firmware. The fakeqmk fixture keeps those dates
//! in flash as QMK does, and its avr-gcc 5.4 ignores SOURCE_DATE_EPOCH, so an unpinned date
//! (1970, or the clock) fails these tests.

use std::path::Path;

use oven::ports::QueueMessage;
use oven::worker::builddate::BuildDate;
use serde_json::json;

use super::{fixture, good, keymap, Env};
use oven_tests::check_intel_hex;

/// The fixture's `version.txt` commit time (2023-11-14 22:13:20 UTC).
const FIXTURE_COMMIT_TIME: i64 = 1_700_000_000;

fn stamp(epoch: i64) -> String {
    let d = BuildDate::from_epoch(epoch);
    format!("BUILDDATE:{} BUILD: {} {}", d.qmk(), d.c_date(), d.c_time())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

pub(super) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Builds `req` with `env`'s worker (configured by `cfg`) and returns the result and firmware.
async fn build(
    env: &Env,
    cfg: oven::worker::WorkerConfig,
    req: serde_json::Value,
) -> (oven::job::JobResult, Vec<u8>) {
    let worker = env.worker(cfg);
    let id = env.submit(req).await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_eq!(r.returncode, 0, "{}", r.output);
    let fw = env.artifact(id, &r.firmware_filename);
    (r, fw)
}

#[tokio::test]
async fn same_request_in_two_work_directories_gives_identical_firmware() {
    let (a, b) = (Env::new(), Env::new());
    let (ra, fa) = build(&a, a.cfg(), good()).await;
    // A second apart at least: an unpinned __TIME__ would differ.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (rb, fb) = build(&b, b.cfg(), good()).await;
    assert_ne!(a.cfg().work_root, b.cfg().work_root);
    assert_eq!(fa, fb, "two builds of one request differ");
    let data = check_intel_hex(std::str::from_utf8(&fa).unwrap());
    let expected = stamp(FIXTURE_COMMIT_TIME);
    assert!(
        contains(&data, expected.as_bytes()),
        "firmware lacks {expected:?}"
    );
    assert_eq!(ra.build_date.as_deref(), Some("2023-11-14-22:13:20"));
    assert_eq!(ra.build_date, rb.build_date);
    assert_eq!(ra.firmware_sha256, rb.firmware_sha256);
    assert_eq!(ra.request_hash, rb.request_hash);
}

#[tokio::test]
async fn build_date_follows_the_firmware_commit_and_builds_stay_warm() {
    let env = Env::new();
    let tree = env.dir.path().join("tree");
    copy_tree(&fixture().join("qmk_firmware"), &tree);
    // Another commit, three years earlier.
    let other = 1_600_000_000;
    std::fs::write(
        tree.join("version.txt"),
        format!("fakeqmk0000000000000000000000000000000002\n{other}\n"),
    )
    .unwrap();
    let mut cfg = env.cfg();
    cfg.qmk_home = Some(tree);
    let (r, fw) = build(&env, cfg.clone(), good()).await;
    let data = check_intel_hex(std::str::from_utf8(&fw).unwrap());
    assert!(contains(&data, stamp(other).as_bytes()));
    assert!(!contains(&data, stamp(FIXTURE_COMMIT_TIME).as_bytes()));
    assert_eq!(r.build_date.as_deref(), Some("2020-09-13-12:26:40"));
    assert_eq!(
        BuildDate::from_epoch(other).via_marker(),
        [0x20, 0x09, 0x13]
    );

    // The same tree, another keymap: the date files are unchanged, so only the unit that
    // includes keymap.c compiles.
    let (r2, _) = build(
        &env,
        cfg,
        keymap(
            "fakekb",
            "other",
            "LAYOUT_ortho_2x2",
            json!([["KC_Z", "KC_Y", "KC_X", "KC_W"]]),
        ),
    )
    .await;
    assert!(
        r2.output.contains("Compiling: quantum/introspection.c"),
        "{}",
        r2.output
    );
    assert!(
        !r2.output.contains("Compiling: quantum/main.c"),
        "{}",
        r2.output
    );
}

fn sha256(data: &[u8]) -> String {
    oven::worker::source::sha256_hex(data)
}

#[tokio::test]
async fn results_carry_hashes_of_what_the_downloads_serve_and_the_flash_budget() {
    let env = Env::new();
    let (r, fw) = build(&env, env.cfg(), good()).await;
    let id: oven::job::JobId = r.id.parse().unwrap();
    assert_eq!(r.firmware_sha256, Some(sha256(&fw)));
    assert_eq!(
        r.keymap_sha256,
        Some(sha256(&env.artifact(id, &r.keymap_archive)))
    );
    assert_eq!(
        r.source_archive_sha256,
        Some(sha256(&env.artifact(id, &r.source_archive)))
    );
    assert_eq!(
        r.request_hash,
        oven::worker::cache::request_hash(&good()),
        "the cache key's content hash"
    );
    let flash = r.flash.clone().expect("flash budget");
    assert_eq!(flash.max_bytes, 28672);
    assert!(
        flash.used_bytes > 100 && flash.used_bytes < 28672,
        "{flash:?}"
    );
    assert_eq!(flash.free_bytes, Some(28672 - flash.used_bytes));
    assert_eq!(flash.over_bytes, None);

    // Served from the cache: the same files, so the same hashes.
    let worker = env.worker(env.cfg());
    let again = env.submit(good()).await;
    worker
        .process(&QueueMessage { job_id: again })
        .await
        .unwrap();
    let cached = env.result(again).await;
    assert_eq!(cached.cached, Some(true));
    assert_eq!(
        cached.source_archive_sha256,
        Some(sha256(&env.artifact(again, &cached.source_archive)))
    );
    assert_eq!(cached.firmware_sha256, r.firmware_sha256);
}

#[tokio::test]
async fn keymap_errors_lead_the_output_and_an_overflow_says_by_how_much() {
    let env = Env::new();
    let worker = env.worker(env.cfg());
    let bad = keymap(
        "fakekb",
        "bad",
        "LAYOUT_ortho_2x2",
        json!([
            ["KC_A", "KC_B", "KC_C", "KC_D"],
            ["KC_A", "LM_VALD", "KC_C", "LCTL(KC_NOPE)"]
        ]),
    );
    let id = env.submit(bad).await;
    worker.process(&QueueMessage { job_id: id }).await.unwrap();
    let r = env.result(id).await;
    assert_eq!(r.failure.as_deref(), Some("compile_error"));
    assert!(
        r.output
            .starts_with("layers[1][1]: 'LM_VALD' undeclared here (not in a function)\n"),
        "{}",
        r.output
    );
    let errors = r.keymap_errors.expect("located errors");
    let at: Vec<_> = errors
        .iter()
        .map(|e| (e.layer, e.key, e.keycode.as_str()))
        .collect();
    assert_eq!(at, [(1, 1, "LM_VALD"), (1, 3, "LCTL(KC_NOPE)")]);
    // The compiler's own log follows.
    assert!(r.output.contains("keymap.c:"), "{}", r.output);

    let big = env
        .submit(keymap("fakebig", "b", "LAYOUT", json!([["KC_A", "KC_B"]])))
        .await;
    worker.process(&QueueMessage { job_id: big }).await.unwrap();
    let r = env.result(big).await;
    assert_eq!(r.failure.as_deref(), Some("firmware_too_large"));
    let flash = r.flash.expect("flash budget of a failed build");
    assert_eq!(flash.max_bytes, 64);
    assert_eq!(flash.over_bytes, Some(flash.used_bytes - 64));
    assert!(flash.percent > 100);
    assert_eq!(flash.free_bytes, None);
}

/// Opt-in (`OVEN_QMK_HOME=<qmk_firmware tree>`, `qmk` and avr-gcc on PATH): a VIA-enabled
/// dz60 keymap built in two work directories gives the same firmware, stamped with the tree
/// commit's date (so VIA's EEPROM marker follows the firmware commit). The request carries
/// `config` (VIA on), which the API refuses but the worker builds as given.
#[tokio::test]
async fn real_tree_via_firmware_is_reproducible() {
    let Some(home) = std::env::var_os(oven::config::TEST_QMK_HOME) else {
        eprintln!("skipped: set OVEN_QMK_HOME to a qmk_firmware tree");
        return;
    };
    let home = std::path::PathBuf::from(home);
    let mut layer: Vec<&str> = vec!["KC_A"; 61];
    layer[14] = "KC_TAB";
    let mut req = keymap("dz60", "via_repro", "LAYOUT_60_ansi", json!([layer]));
    req["config"] = json!({"features": {"via": true}});
    let mut firmwares = Vec::new();
    for _ in 0..2 {
        let env = Env::new();
        let mut cfg = env.cfg();
        cfg.qmk_home = Some(home.clone());
        cfg.qmk = "qmk".into();
        cfg.compile_timeout = std::time::Duration::from_secs(900);
        cfg.source_archives = false;
        let (r, fw) = build(&env, cfg, req.clone()).await;
        assert!(r.output.contains("via.c"), "VIA not built: {}", r.output);
        let date = oven::worker::tree::firmware_commit_time(&home).map(BuildDate::from_epoch);
        assert_eq!(r.build_date, date.map(|d| d.qmk()));
        eprintln!(
            "{}: {} bytes, sha256 {}, build date {:?}, VIA marker {:02x?}",
            r.firmware_filename,
            fw.len(),
            r.firmware_sha256.as_deref().unwrap_or(""),
            r.build_date,
            date.map(|d| d.via_marker())
        );
        firmwares.push(fw);
    }
    assert_eq!(firmwares[0], firmwares[1]);
}
