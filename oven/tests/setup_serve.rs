//! From nothing to firmware: `oven setup --from <mirror>` into an empty data directory, again
//! (which must change nothing), then `oven serve` with no `--qmk-home` compiles a keymap.
//!
//! The mirror is made here: a qmk_firmware-like repository (the fakeqmk fixture tree, a
//! `requirements.txt`, one submodule whose URL is GitHub's, as in qmk_firmware) and the
//! submodule's repository under `mirror/qmk/`, reached through `--submodule-base`. Python
//! packages come from a wheel built here (`--find-links`), the qmk CLI is the fakeqmk fixture
//! (`--qmk-cli`), which builds with the real avr-gcc.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fakeqmk")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=oven",
            "-c",
            "user.email=oven@example.invalid",
        ])
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A wheel of one pure-Python module, `ovenfixture` (`VALUE = 42`), in `dir`.
fn write_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::create(dir.join("ovenfixture-0.1-py3-none-any.whl")).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let files = [
        ("ovenfixture/__init__.py", "VALUE = 42\n"),
        (
            "ovenfixture-0.1.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: ovenfixture\nVersion: 0.1\n",
        ),
        (
            "ovenfixture-0.1.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: oven-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
    ];
    let mut record = String::new();
    for (name, text) in files {
        zip.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(text.as_bytes()).unwrap();
        record.push_str(&format!("{name},,\n"));
    }
    record.push_str("ovenfixture-0.1.dist-info/RECORD,,\n");
    zip.start_file(
        "ovenfixture-0.1.dist-info/RECORD",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(record.as_bytes()).unwrap();
    zip.finish().unwrap();
}

/// The mirror: `root/mirror/qmk/{qmk_firmware,fixturelib}`; returns the superproject's commit.
fn make_mirror(root: &Path) -> String {
    let lib = root.join("mirror/qmk/fixturelib");
    std::fs::create_dir_all(&lib).unwrap();
    git(&lib, &["init", "-q"]);
    std::fs::write(lib.join("README"), "a submodule of the fixture tree\n").unwrap();
    git(&lib, &["add", "."]);
    git(&lib, &["commit", "-qm", "fixturelib"]);
    let lib_commit = git(&lib, &["rev-parse", "HEAD"]);

    let top = root.join("mirror/qmk/qmk_firmware");
    copy_tree(&fixture().join("qmk_firmware"), &top);
    std::fs::write(
        top.join("requirements.txt"),
        "# as QMK's\novenfixture==0.1\n",
    )
    .unwrap();
    std::fs::write(
        top.join(".gitmodules"),
        "[submodule \"lib/fixturelib\"]\n\tpath = lib/fixturelib\n\turl = https://github.com/qmk/fixturelib\n",
    )
    .unwrap();
    git(&top, &["init", "-q"]);
    git(&top, &["add", "."]);
    git(
        &top,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{lib_commit},lib/fixturelib"),
        ],
    );
    git(&top, &["commit", "-qm", "fixture qmk_firmware"]);
    git(&top, &["rev-parse", "HEAD"])
}

/// Every path under `dir` with its kind, size, mtime and link target: what "changes nothing"
/// is checked against.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            let mtime = m
                .modified()
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap();
            let link = std::fs::read_link(e.path()).ok();
            out.insert(
                e.path(),
                format!("{:?} {} {mtime:?} {link:?}", m.file_type(), m.len()),
            );
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

/// `oven` run in `home` (also its HOME), with the default data directory `.oven` as a user
/// following the README would have it.
fn oven(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oven"));
    c.current_dir(home);
    // Nothing of this machine's QMK setup may be found instead of the data directory's.
    c.env_remove("QMK_HOME")
        .env_remove("OVEN_QMK_BIN")
        .env("HOME", home)
        .stdin(Stdio::null());
    c
}

/// One HTTP/1.0 exchange (the server closes; no chunking): status and body.
fn http(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(bytes)))
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn setup_from_a_mirror_twice_then_serve_compiles() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let commit = make_mirror(root);
    write_wheel(&root.join("wheels"));
    let data = root.join(".oven");
    let setup = |label: &str| {
        let out = oven(root)
            .arg("setup")
            .arg("--from")
            .arg(root.join("mirror/qmk/qmk_firmware"))
            .args(["--commit", &commit])
            .arg("--submodule-base")
            .arg(format!("file://{}", root.join("mirror").display()))
            .arg("--qmk-cli")
            .arg(fixture().join("bin/qmk"))
            .arg("--find-links")
            .arg(root.join("wheels"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{label}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };

    let first = setup("first setup");
    assert!(first.contains("changed: "), "{first}");
    assert!(!first.contains("nothing changed"), "{first}");
    let tree = data.join("qmk_firmware");
    assert_eq!(git(&tree, &["rev-parse", "HEAD"]), commit);
    assert_eq!(
        std::fs::read_to_string(tree.join("lib/fixturelib/README")).unwrap(),
        "a submodule of the fixture tree\n"
    );
    // The requirements went into the venv, from the local wheel.
    let py = Command::new(data.join("venv/bin/python"))
        .args(["-c", "import ovenfixture; print(ovenfixture.VALUE)"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "42");
    assert!(data.join("setup.json").is_file());

    let before = snapshot(&data);
    let second = setup("second setup");
    assert!(second.contains("nothing changed"), "{second}");
    let after = snapshot(&data);
    let differ: Vec<_> = before
        .iter()
        .filter(|(p, v)| after.get(*p) != Some(*v))
        .map(|(p, _)| p)
        .chain(after.keys().filter(|p| !before.contains_key(*p)))
        .collect();
    assert!(differ.is_empty(), "the second run changed {differ:?}");

    // Local changes to the tree are the user's: kept, and named.
    let edited = tree.join("version.txt");
    std::fs::write(&edited, "edited\n").unwrap();
    let third = setup("third setup");
    assert!(
        third.contains("with local changes (kept): version.txt")
            && third.contains("nothing changed"),
        "{third}"
    );
    assert_eq!(std::fs::read_to_string(&edited).unwrap(), "edited\n");
    git(&tree, &["checkout", "-q", "version.txt"]);

    // Serve with no --qmk-home: the data directory's tree and the venv's qmk are used.
    let mut child = oven(root)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut addr = None;
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(a) = line.strip_prefix("oven: API listening on http://") {
            addr = Some(a.to_string());
        }
        let done = line.starts_with("oven: compiling in") || line.contains("No qmk_firmware");
        seen.push(line);
        if done {
            break;
        }
    }
    // Keep the pipe drained so the server never blocks on a full stdout.
    std::thread::spawn(move || lines.for_each(drop));
    let addr = addr.unwrap_or_else(|| panic!("no listen line in {seen:?}"));
    let expected = format!(
        "oven: compiling in {}",
        std::path::absolute(&tree).unwrap().display()
    );
    assert!(seen.contains(&expected), "{seen:?}");

    let (status, body) = http(&addr, "GET", "/v1/healthcheck", None);
    assert_eq!(status, 200);
    let health = json_of(&body);
    // The added fields are in the published schema (which allows no others).
    let spec: Value = serde_json::from_str(oven::http::OPENAPI_JSON).unwrap();
    let mut schema = spec.clone();
    schema["$ref"] = json!("#/components/schemas/Health");
    schema.as_object_mut().unwrap().remove("paths");
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&health)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{health}");
    assert_eq!(health["firmware_commit"], commit.as_str());
    assert_eq!(health["toolchains"]["qmk"], "1.1.8-fakeqmk");
    assert!(health["toolchains"]["avr-gcc"].is_string(), "{health}");
    // Degraded exactly when something is missing, and then it says what.
    let missing: Vec<&String> = health["toolchains"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| v.is_null() && !k.starts_with("riscv"))
        .map(|(k, _)| k)
        .collect();
    let riscv = ["riscv32-unknown-elf-gcc", "riscv64-unknown-elf-gcc"]
        .iter()
        .any(|t| health["toolchains"][t].is_string());
    let reasons = health["reasons"].as_array().unwrap();
    if missing.is_empty() && riscv {
        assert_eq!(health["status_compiler"], "good", "{health}");
        assert!(reasons.is_empty());
    } else {
        assert_eq!(health["status_compiler"], "degraded", "{health}");
        assert_eq!(health["status"], "degraded", "{health}");
        for tool in missing {
            assert!(reasons
                .iter()
                .any(|r| r.as_str().unwrap().contains(tool.as_str())));
        }
        if !riscv {
            assert!(reasons
                .iter()
                .any(|r| r.as_str().unwrap().contains("RISC-V")));
        }
    }

    let request = json!({"version": 1, "keyboard": "fakekb", "keymap": "setup", "layout": "LAYOUT_ortho_2x2",
        "layers": [["KC_A", "KC_B", "MO(1)", "KC_C"], ["KC_1", "KC_2", "KC_TRNS", "KC_NO"]]});
    let (status, body) = http(&addr, "POST", "/v1/compile", Some(&request));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let id = json_of(&body)["job_id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let job = loop {
        let (status, body) = http(&addr, "GET", &format!("/v1/compile/{id}"), None);
        assert_eq!(status, 200);
        let job = json_of(&body);
        if job["status"] == "finished" || job["status"] == "failed" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{job}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(job["status"], "finished", "{job}");
    assert_eq!(job["result"]["returncode"], 0, "{job}");
    assert_eq!(job["result"]["firmware_commit"], commit.as_str(), "{job}");
    let (status, hex) = http(&addr, "GET", &format!("/v1/compile/{id}/download"), None);
    assert_eq!(status, 200);
    let hex = String::from_utf8(hex).unwrap();
    assert!(
        hex.starts_with(':') && hex.trim_end().ends_with(":00000001FF"),
        "{hex}"
    );
    drop(server);
}

/// A `--qmk-home` that is not a tree stops `oven serve` at once, naming the flag and the path,
/// rather than serving with every job failing "no qmk_firmware tree".
#[test]
fn serve_refuses_a_qmk_home_that_is_not_a_tree() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("not-a-tree");
    std::fs::create_dir_all(&missing).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_oven"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(d.path().join("data"))
        .arg("--qmk-home")
        .arg(&missing)
        .env_remove("QMK_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that starts anyway would run forever: stop it and fail.
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("oven serve started with a --qmk-home that is not a tree");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "oven serve started");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--qmk-home") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(err.contains("not a qmk_firmware tree"), "{err}");
}
