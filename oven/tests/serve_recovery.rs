//! The `oven` binary killed mid-compile and started again (issue 11's scenario): `oven serve`
//! with the fakeqmk fixture (a real avr-gcc build behind qmk's interface), three jobs
//! submitted over HTTP, SIGKILL while the first one compiles, then `oven serve` on the same
//! data directory. The interrupted job must finish within 60 s of the restart, not when its
//! lease would have run out. Also checks that the log, written to a file, has no colour codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/fakeqmk")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, port: u16, log: &Path) -> Server {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_oven"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data)
        .arg("--qmk-home")
        .arg(fixture().join("qmk_firmware"))
        .env(oven::config::QMK_BIN, fixture().join("bin/qmk"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let server = Server { child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(port, &["/v1/healthcheck"]).is_none() {
        assert!(Instant::now() < deadline, "oven serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// The JSON body of a successful request, or `None` when the server does not answer.
fn curl(port: u16, args: &[&str]) -> Option<Value> {
    let (path, rest) = args.split_first().unwrap();
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "10"])
        .args(rest)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn submit(port: u16, keymap: &str) -> String {
    let body = json!({"version": 1, "keyboard": "fakepause", "keymap": keymap,
        "layout": "LAYOUT", "layers": [["KC_A", "KC_B"]]})
    .to_string();
    let answer = curl(
        port,
        &[
            "/v1/compile",
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data",
            &body,
        ],
    )
    .expect("submit");
    answer["job_id"].as_str().unwrap().to_owned()
}

fn status(port: u16, id: &str) -> String {
    let s = curl(port, &[&format!("/v1/compile/{id}")]).expect("status");
    s["status"].as_str().unwrap().to_owned()
}

/// Processes whose working directory is under `root` (builds run in the worker's tree overlay).
fn build_processes(root: &Path) -> usize {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .filter(|cwd| cwd.starts_with(&root))
        .count()
}

fn wait(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_mid_compile_the_job_finishes_soon_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let port = free_port();

    let mut first = serve(&data, port, &log);
    let ids: Vec<String> = ["one", "two", "three"]
        .iter()
        .map(|k| submit(port, k))
        .collect();
    // The worker's tree overlay, where builds run.
    let jobs = data.join("work/qmk_firmware");
    wait("the first build", Duration::from_secs(60), || {
        status(port, &ids[0]) == "running" && build_processes(&jobs) > 0
    });
    // SIGKILL: no chance to clean up, as in the scenario of the issue.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let port = free_port();
    let restarted = Instant::now();
    let _second = serve(&data, port, &log);
    wait(
        "the interrupted job to finish",
        Duration::from_secs(60),
        || status(port, &ids[0]) == "finished",
    );
    let took = restarted.elapsed();
    eprintln!("interrupted job finished {took:?} after the restart");
    wait("the other jobs", Duration::from_secs(60), || {
        ids.iter().all(|id| status(port, id) == "finished")
    });
    for id in &ids {
        let s = curl(port, &[&format!("/v1/compile/{id}")]).unwrap();
        assert_eq!(s["result"]["returncode"], 0, "{s}");
    }
    let interrupted = curl(port, &[&format!("/v1/compile/{}", ids[0])]).unwrap();
    assert!(
        interrupted["result"]["firmware_filename"] == "fakepause_one.hex",
        "{interrupted}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("requeuing jobs the previous run was building"),
        "{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a log file:\n{text}"
    );
}
