//! The qmk fork server (`oven::worker::qmkserver`) with the real client (this package's `oven`
//! binary, called as `qmk`) against a small qmk CLI of the same shape as the real one: a
//! `qmk_cli.script_qmk.main()` that sets up, chdirs to QMK_HOME and calls `milc.cli()`, on the
//! real milc (the qmk CLI's argument library), counting its imports. Commands must come out exactly as a fresh `qmk` would run them (output
//! on the caller's fds, exit status, directory, environment), with the CLI imported once;
//! what the server cannot serve the real CLI runs; a stopped client stops its command.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use oven::worker::qmkserver::{QmkServer, REAL_ENV, SOCKET_ENV};

/// A qmk-shaped CLI on the real milc: subcommands declared with `@cli.argument` at import
/// (one option, `-j/--parallel`, backed by the config as `qmk compile -j` is), and a `main()`
/// that does what `qmk_cli.script_qmk.main` does around `milc.cli()`.
const SCRIPT_QMK: &str = r#"
import os, sys, time
import milc
with open(os.path.join(os.environ["IMPORT_LOG_DIR"], "imports.log"), "a") as f:
    f.write("imported\n")
milc.cli.milc_options(version="0.0.1")

@milc.cli.entrypoint("a qmk-shaped CLI")
def qmk_main(cli):
    cli.print_help()

@milc.cli.argument("-j", "--parallel", type=int, default=1, help="jobs")
@milc.cli.argument("words", nargs="*", arg_only=True, help="words")
@milc.cli.subcommand("echo")
def echo(cli):
    print(" ".join(cli.args.words), os.getcwd(), os.environ.get("FOO"), os.environ["ORIG_CWD"],
          cli.config.echo.parallel, sep="|")
    print("to stderr", file=sys.stderr)
    return True

@milc.cli.argument("code", type=int, arg_only=True, help="status")
@milc.cli.subcommand("fail")
def fail(cli):
    return cli.args.code

@milc.cli.subcommand("nothing")
def nothing(cli):
    return False

@milc.cli.argument("pidfile", arg_only=True, help="pid file")
@milc.cli.subcommand("hang")
def hang(cli):
    open(cli.args.pidfile, "w").write(str(os.getpid()))
    time.sleep(60)

def main():
    os.environ["ORIG_CWD"] = os.getcwd()
    os.chdir(os.environ["QMK_HOME"])
    rc = milc.cli()
    if rc is False:
        exit(1)
    elif rc is not True and isinstance(rc, int):
        exit(rc)
    exit(0)
"#;

/// A Python with milc (`scripts/test.sh` sets it to its venv's, where it installs milc).
fn python() -> Option<String> {
    let python = std::env::var("OVEN_TEST_PYTHON").ok();
    if python.is_none() {
        eprintln!("skipped: set OVEN_TEST_PYTHON to a python3 with milc (scripts/test.sh does)");
    }
    python
}

struct Fixture {
    dir: tempfile::TempDir,
    home: PathBuf,
    qmk: PathBuf,
    env: Vec<(String, String)>,
}

fn fixture(python: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("qmk_cli")).unwrap();
    std::fs::write(site.join("qmk_cli/__init__.py"), "").unwrap();
    std::fs::write(site.join("qmk_cli/script_qmk.py"), SCRIPT_QMK).unwrap();
    let qmk = dir.path().join("qmk");
    std::fs::write(
        &qmk,
        format!("#!{python}\nimport sys\nfrom qmk_cli.script_qmk import main\nsys.exit(main())\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&qmk, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("qmk_firmware");
    std::fs::create_dir_all(&home).unwrap();
    let env = vec![
        ("PATH".into(), std::env::var("PATH").unwrap()),
        ("LANG".into(), "C.UTF-8".into()),
        ("QMK_HOME".into(), home.display().to_string()),
        ("PYTHONPATH".into(), site.display().to_string()),
        ("IMPORT_LOG_DIR".into(), dir.path().display().to_string()),
        // milc's config file under HOME: none.
        ("HOME".into(), dir.path().join("home").display().to_string()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
    ];
    Fixture {
        dir,
        home,
        qmk,
        env,
    }
}

impl Fixture {
    fn imports(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("imports.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    async fn server(&self) -> QmkServer {
        QmkServer::start(
            &self.dir.path().join("server"),
            Path::new(env!("CARGO_BIN_EXE_oven")),
            &self.qmk,
            &self.home,
            &self.env,
        )
        .await
        .expect("server starts")
    }

    /// `qmk ARGS` as make would run it: through the client named by the wiring.
    fn client(&self, server: &QmkServer, args: &[&str]) -> Command {
        let wiring = server.build_wiring();
        assert_eq!(
            wiring.make_args()[1],
            format!("QMK_BIN={}", wiring.client.display())
        );
        let mut cmd = Command::new(&wiring.client);
        cmd.args(args)
            .current_dir(&self.home)
            .env_clear()
            .envs(self.env.iter().cloned())
            .envs(wiring.env)
            .env("FOO", "bar");
        cmd
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn commands_run_as_a_fresh_qmk_would_with_one_import() {
    let Some(python) = python() else { return };
    let f = fixture(&python);
    let server = f.server().await;
    assert_eq!(f.imports(), 1, "the server imports the CLI once");
    let home = f.home.display().to_string();

    // An option backed by the config, given or not: milc's import-time view of the command
    // line is redone for each command (`-j 2` of `qmk compile` was lost without it).
    for (round, (args, parallel)) in [
        (&["echo", "a", "b c"][..], 1),
        (&["echo", "-j", "3", "a", "b c"][..], 3),
        (&["echo", "--parallel=2", "a", "b c"][..], 2),
        (&["echo", "a", "b c"][..], 1),
    ]
    .into_iter()
    .enumerate()
    {
        let out = f.client(&server, args).output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout} {stderr}");
        assert_eq!(
            stdout,
            format!("a b c|{home}|bar|{home}|{parallel}\n"),
            "round {round}"
        );
        assert_eq!(stderr, "to stderr\n");
    }
    let out = f.client(&server, &["fail", "7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    let out = f.client(&server, &["nothing"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "False is exit 1, as in the qmk script"
    );
    assert_eq!(f.imports(), 1, "served commands import nothing");

    // Another directory than the server's: the real CLI runs it (and imports again).
    let elsewhere = f.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = f
        .client(&server, &["echo", "x"])
        .current_dir(&elsewhere)
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert_eq!(stdout, format!("x|{home}|bar|{}|1\n", elsewhere.display()));
    assert_eq!(f.imports(), 2);

    // An import-time variable the server saw otherwise: declined too.
    let out = f
        .client(&server, &["echo", "y"])
        .env("BUILD_DIR", "/elsewhere")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(f.imports(), 3);

    // No server at all: the real CLI.
    let out = f
        .client(&server, &["fail", "3"])
        .env(SOCKET_ENV, f.dir.path().join("absent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(f.imports(), 4);
    // Neither: a clear failure, not a hang.
    let out = f
        .client(&server, &["fail", "3"])
        .env(SOCKET_ENV, f.dir.path().join("absent.sock"))
        .env_remove(REAL_ENV)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
}

#[tokio::test]
async fn a_stopped_client_stops_its_command() {
    let Some(python) = python() else { return };
    let f = fixture(&python);
    let server = f.server().await;
    let pidfile = f.dir.path().join("hang.pid");
    let mut client = f
        .client(&server, &["hang", pidfile.to_str().unwrap()])
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    let alive = |pid: i32| Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid);
    assert!(alive(pid));
    client.kill().unwrap();
    client.wait().unwrap();
    let t = Instant::now();
    while alive(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the command outlived its client"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server still serves.
    let out = f.client(&server, &["fail", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test]
async fn the_server_ends_with_its_worker() {
    let Some(python) = python() else { return };
    let f = fixture(&python);
    drop(f.server().await); // writes the server's script
    let script = f.dir.path().join("server/qmk_forkserver.py");
    // A stand-in worker: a shell that starts the server (its output elsewhere, so that a
    // server that stays does not hold the test's pipes), then is killed without cleaning up.
    let socket = f.dir.path().join("second.sock");
    let mut worker = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{python} {} {} {} >/dev/null 2>&1 & echo $!; sleep 60",
            script.display(),
            socket.display(),
            f.qmk.display()
        ))
        .current_dir(&f.home)
        .env_clear()
        .envs(f.env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(worker.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    let t = Instant::now();
    while !socket.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap();
    worker.wait().unwrap();
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && !zombie(pid) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the server outlived its worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test]
async fn a_cli_that_is_not_python_gives_a_reason() {
    let f = fixture("/usr/bin/python3");
    let not_python = f.dir.path().join("qmk-binary");
    std::fs::write(&not_python, "\x7fELF").unwrap();
    let err = QmkServer::start(
        &f.dir.path().join("server"),
        Path::new(env!("CARGO_BIN_EXE_oven")),
        &not_python,
        &f.home,
        &f.env,
    )
    .await
    .err()
    .expect("no server");
    assert!(err.to_string().contains("not a Python script"), "{err}");
}
