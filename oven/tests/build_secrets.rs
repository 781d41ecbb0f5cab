//! A build cannot read the worker's secrets: on Lambda the worker's own environment holds the
//! role's keys, and a same-user process can read `/proc/<pid>/environ`. This test is its own
//! process because it makes that process non-dumpable.

use std::time::Duration;

use oven::worker::runner::{self, BuildSpec, BuildStatus};

/// A build that prints its parent's (the worker's) initial environment.
fn read_parent_environ() -> BuildSpec {
    BuildSpec {
        program: "/bin/sh".into(),
        args: vec!["-c".into(), "tr '\\0' '\\n' < /proc/$PPID/environ".into()],
        cwd: std::env::temp_dir(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        timeout: Duration::from_secs(20),
        log_cap: 1 << 20,
    }
}

#[tokio::test]
async fn a_build_cannot_read_the_worker_environment() {
    // Something from this process's own initial environment (what /proc/<pid>/environ shows).
    let own = std::fs::read("/proc/self/environ").expect("own environ");
    let marker = own
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).to_string())
        .find(|v| v.starts_with("PATH=") || v.contains('='))
        .expect("a variable in the initial environment");

    // Control: a plain child of an unprotected process does see it, so the check can fail.
    let plain = std::process::Command::new("/bin/sh")
        .args(["-c", "tr '\\0' '\\n' < /proc/$PPID/environ"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains(&marker),
        "control: an unprotected child reads its parent's environment"
    );

    runner::protect_worker_secrets();
    let out = runner::run(&read_parent_environ()).await.unwrap();
    assert!(
        !out.log.contains(&marker),
        "the build read the worker's environment: {}",
        out.log
    );
    assert_ne!(out.status, BuildStatus::Exited(0), "{}", out.log);
    assert!(out.log.contains("Permission denied"), "{}", out.log);
}
