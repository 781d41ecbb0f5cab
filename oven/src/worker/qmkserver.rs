//! The qmk fork server: the `qmk` commands make runs during a build, served by one long-lived
//! Python process that has imported the qmk CLI once.
//!
//! A QMK build runs the qmk CLI about twenty times from make (`$(QMK_BIN) generate-rules-mk`,
//! `json2c`, `generate-config-h`, `generate-version-h`, ... in
//! `builddefs/build_keyboard.mk`), most of them one after the other while make parses, and
//! each spends 0.3-0.5 s of CPU importing `qmk.cli` before doing any work: that is most of a
//! build's `generate` phase. The server (`qmk_forkserver.py`, embedded here) runs what the
//! `qmk` script runs before dispatching (`qmk_cli.script_qmk.main`) and then forks once per
//! command; the fork runs that same `main()` with the command's argv, working directory,
//! environment and standard file descriptors. The firmware is the same byte for byte
//! (`bench/first-build.py` compares it with raw `qmk compile` of the same JSON).
//!
//! Wiring: the worker passes `-e QMK_BIN=<work>/qmkserver/bin/qmk` to `qmk compile` (QMK's own
//! variable; `lib/python/qmk/build_targets.py` sets `QMK_BIN="qmk"` and a later command-line
//! definition wins). That path is a symlink to the worker's own binary, which runs
//! [`client_main`] when started under the name `qmk` ([`run_if_client`], first thing in
//! `main`); the worker runs its own `qmk compile` through it too. The client hands its argv, directory, environment and fds 0-2 to the server and
//! exits with the command's status. Whenever the server cannot serve a command exactly as a
//! fresh `qmk` would run it (no server, a directory or import-time environment other than the
//! server's, a non-UTF-8 argument), the client `exec`s the real `qmk` instead: slower, never
//! different.
//!
//! The server runs confined as builds are (no capabilities, no new privileges, its own process
//! group), with an empty HOME of its own; a command's processes die with its client, so a
//! stopped build leaves nothing running.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

/// The name the worker's binary answers to as the client ([`run_if_client`]).
pub const CLIENT_NAME: &str = "qmk";
/// Environment of a build: the server's socket.
pub const SOCKET_ENV: &str = "OVEN_QMK_SERVER";
/// Environment of a build: the real qmk CLI, for commands the server declines.
pub const REAL_ENV: &str = "OVEN_QMK_REAL";
/// Set to `0` to build without the server (for A/B benchmarks).
pub const ENABLE_ENV: &str = "OVEN_QMK_FORK_SERVER";
/// The server's answer when it declines a command (the client runs the real qmk).
const DECLINE: u32 = u32::MAX;
const SERVER_PY: &str = include_str!("qmk_forkserver.py");
/// How long the server may take to import the qmk CLI and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the server could not be started; builds then run the qmk CLI as usual.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("qmk fork server: cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("qmk fork server: {0} is not a Python script (no `#!` line naming an interpreter)")]
    NotPython(PathBuf),
    #[error("qmk fork server did not start: {0}")]
    NotReady(String),
}

/// In `main`, before anything else: when this process was started as `qmk` (through the
/// symlink the worker gives make as QMK_BIN), it is the client: returns its exit status.
pub fn run_if_client() -> Option<i32> {
    let argv0 = std::env::args_os().next()?;
    if Path::new(&argv0).file_name()? != CLIENT_NAME {
        return None;
    }
    Some(client_main(std::env::args_os().collect()))
}

/// A worker binary's `main`: the client when started as `qmk` ([`run_if_client`], before any
/// runtime exists), else `run` on a multi-threaded tokio runtime.
pub fn main_or_client<T, E, F>(run: impl FnOnce() -> F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
    E: From<std::io::Error>,
{
    if let Some(code) = run_if_client() {
        std::process::exit(code);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

/// The client: the command served by the server, or the real qmk `exec`ed in its place.
/// Returns the command's exit status (0-255), 127 when not even the real qmk can run.
pub fn client_main(argv: Vec<OsString>) -> i32 {
    if let Some(code) = serve(&argv) {
        return code;
    }
    let Some(real) = std::env::var_os(REAL_ENV) else {
        eprintln!("qmk (Oven client): no server and no {REAL_ENV}");
        return 127;
    };
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&real).args(&argv[1..]).exec();
    eprintln!(
        "qmk (Oven client): cannot run {}: {err}",
        real.to_string_lossy()
    );
    127
}

/// The command run by the server: `Some(status)`, or `None` when it was not run there.
fn serve(argv: &[OsString]) -> Option<i32> {
    let socket = std::env::var_os(SOCKET_ENV)?;
    let argv: Vec<&str> = argv.iter().map(|a| a.to_str()).collect::<Option<_>>()?;
    let cwd = std::env::current_dir().ok()?;
    let mut env = serde_json::Map::new();
    for (k, v) in std::env::vars_os() {
        env.insert(k.into_string().ok()?, v.into_string().ok()?.into());
    }
    let request = serde_json::json!({ "argv": argv, "cwd": cwd.to_str()?, "env": env });
    let body = serde_json::to_vec(&request).ok()?;
    let mut stream = UnixStream::connect(socket).ok()?;
    send_with_stdio(&stream, &(body.len() as u32).to_be_bytes()).ok()?;
    // From here on the command may have started: no falling back to the real qmk.
    if stream.write_all(&body).is_err() {
        return Some(lost());
    }
    let mut status = [0u8; 4];
    match stream.read_exact(&mut status) {
        Ok(()) => match u32::from_be_bytes(status) {
            DECLINE => None,
            code => Some((code & 0xFF) as i32),
        },
        Err(_) => Some(lost()),
    }
}

fn lost() -> i32 {
    eprintln!("qmk (Oven client): the fork server ended before the command did");
    1
}

/// Sends `header` with this process's fds 0, 1 and 2 attached (SCM_RIGHTS).
fn send_with_stdio(stream: &UnixStream, header: &[u8]) -> std::io::Result<()> {
    use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::AsFd;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let fds = [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()];
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("control buffer too small"));
    }
    let sent = sendmsg(
        stream,
        &[std::io::IoSlice::new(header)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != header.len() {
        return Err(std::io::Error::other("short send"));
    }
    Ok(())
}

/// A running server, for one tree (its overlay) and one worker.
pub struct QmkServer {
    child: tokio::process::Child,
    socket: PathBuf,
    client: PathBuf,
    real: PathBuf,
}

impl QmkServer {
    /// Starts the server under `dir` (its socket, script, HOME and log; the client symlink
    /// `dir/bin/qmk` to `client_exe`) for the tree overlay `qmk_home`, with `env` (a build's
    /// environment; HOME is replaced by the server's own). `real_qmk` is the qmk script;
    /// its `#!` interpreter runs the server. Waits until it listens.
    pub async fn start(
        dir: &Path,
        client_exe: &Path,
        real_qmk: &Path,
        qmk_home: &Path,
        env: &[(String, String)],
    ) -> Result<QmkServer, ServerError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ServerError::Io { path, source }
        };
        let bin = dir.join("bin");
        let home = dir.join("home");
        for d in [&bin, &home] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let script = dir.join("qmk_forkserver.py");
        std::fs::write(&script, SERVER_PY).map_err(io(&script))?;
        let client = bin.join(CLIENT_NAME);
        let _ = std::fs::remove_file(&client);
        std::os::unix::fs::symlink(client_exe, &client).map_err(io(&client))?;
        let socket = dir.join("qmk.sock");
        let _ = std::fs::remove_file(&socket);
        let log_path = dir.join("server.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let interpreter =
            shebang(real_qmk).ok_or_else(|| ServerError::NotPython(real_qmk.into()))?;

        let mut cmd = tokio::process::Command::new(&interpreter[0]);
        cmd.args(&interpreter[1..])
            .arg(&script)
            .arg(&socket)
            .arg(real_qmk)
            .current_dir(qmk_home)
            .env_clear()
            .envs(env.iter().filter(|(k, _)| k != "HOME").map(|(k, v)| (k, v)))
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the hook only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                super::runner::drop_privileges();
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(io(&interpreter[0]))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let ready = tokio::time::timeout(
            START_TIMEOUT,
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if !matches!(ready, Ok(Ok(_)) if line.trim() == "ready") {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            let why = if tail.is_empty() {
                "no output".to_string()
            } else {
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            };
            return Err(ServerError::NotReady(why));
        }
        Ok(QmkServer {
            child,
            socket,
            client,
            real: real_qmk.to_path_buf(),
        })
    }

    /// Whether the server process is still there.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// How a build reaches this server (see [`Wiring`]).
    pub fn build_wiring(&self) -> Wiring {
        Wiring {
            client: self.client.clone(),
            env: vec![
                (SOCKET_ENV.into(), self.socket.display().to_string()),
                (REAL_ENV.into(), self.real.display().to_string()),
            ],
        }
    }
}

/// How a build reaches the server: `client` is the program to run in place of `qmk` (make's
/// QMK_BIN, and the worker's own `qmk compile`, run from the tree's root as make runs its
/// commands), `env` what the build's environment gains.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub client: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Wiring {
    /// `qmk compile` arguments that send make's qmk commands to the server.
    pub fn make_args(&self) -> [String; 2] {
        ["-e".into(), format!("QMK_BIN={}", self.client.display())]
    }
}

impl Drop for QmkServer {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            super::runner::kill_group(pid);
        }
    }
}

/// The interpreter (and its arguments) of a script's `#!` line.
fn shebang(script: &Path) -> Option<Vec<PathBuf>> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let first = std::str::from_utf8(&head[..n]).ok()?.lines().next()?;
    let words: Vec<PathBuf> = first
        .strip_prefix("#!")?
        .split_whitespace()
        .map(PathBuf::from)
        .collect();
    (!words.is_empty()).then_some(words)
}

/// A path's file on `path` (a PATH value) when it is a bare name.
pub fn resolve_on_path(program: &Path, path: &str) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// The worker's server, started on its first build and again if it dies; a server that
/// cannot start is not retried (builds run the qmk CLI as usual, which a log line says once).
#[derive(Default)]
pub struct Slot(tokio::sync::Mutex<SlotState>);

#[derive(Default)]
enum SlotState {
    #[default]
    Idle,
    Running(Box<QmkServer>),
    Failed,
}

impl Slot {
    /// The wiring for a build in `qmk_home` with environment `env` (see
    /// [`QmkServer::build_wiring`]), or `None` to build without the server.
    pub async fn wiring(
        &self,
        cfg: &super::WorkerConfig,
        qmk_home: &Path,
        env: &[(String, String)],
    ) -> Option<Wiring> {
        let client = cfg.qmk_client.as_ref()?;
        if std::env::var(ENABLE_ENV).is_ok_and(|v| v == "0") {
            return None;
        }
        let mut state = self.0.lock().await;
        if let SlotState::Running(server) = &mut *state {
            if server.is_running() {
                return Some(server.build_wiring());
            }
            tracing::warn!("qmk fork server exited; starting it again");
        }
        if matches!(*state, SlotState::Failed) {
            return None;
        }
        let Some(real) = resolve_on_path(&cfg.qmk, &cfg.path) else {
            *state = SlotState::Failed;
            return None;
        };
        let dir = cfg.work_root.join("qmkserver");
        match QmkServer::start(&dir, client, &real, qmk_home, env).await {
            Ok(server) => {
                let wiring = server.build_wiring();
                *state = SlotState::Running(Box::new(server));
                Some(wiring)
            }
            Err(e) => {
                tracing::warn!("{e}; builds run the qmk CLI for each command");
                *state = SlotState::Failed;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interpreter_comes_from_the_shebang() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("qmk");
        std::fs::write(&s, "#!/opt/venv/bin/python3 -E\nimport sys\n").unwrap();
        assert_eq!(
            shebang(&s).unwrap(),
            [PathBuf::from("/opt/venv/bin/python3"), PathBuf::from("-E")]
        );
        std::fs::write(&s, "\x7fELF").unwrap();
        assert_eq!(shebang(&s), None);
    }

    #[test]
    fn bare_names_are_found_on_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("qmk"), "").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(
            resolve_on_path(Path::new("qmk"), &path),
            Some(dir.path().join("qmk"))
        );
        assert_eq!(resolve_on_path(Path::new("nothere"), &path), None);
        assert_eq!(
            resolve_on_path(Path::new("/x/qmk"), &path),
            Some(PathBuf::from("/x/qmk"))
        );
    }
}
