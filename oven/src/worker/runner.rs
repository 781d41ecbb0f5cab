//! Runs one build command the way hostile input must be run: a cleared environment (no cloud
//! credentials reach the compiler), no capabilities and no way to read the worker's own
//! environment ([`protect_worker_secrets`]), its own process group (a timeout kills every child, not just
//! the CLI), a wall-clock limit, and a cap on the captured log (head and tail are kept). It also
//! notes when given marker lines first appear in the output ([`run_marked`]), which is how a build's
//! phases are timed without touching the build itself.

use std::io::Read;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    /// The complete environment of the child; nothing else is inherited.
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    /// Bytes of log kept at most (half from the start, half from the end).
    pub log_cap: usize,
}

/// How the build ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildStatus {
    Exited(i32),
    /// Killed by a signal it did not get from us.
    Signaled(i32),
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct BuildOutput {
    pub status: BuildStatus,
    /// stdout and stderr interleaved, lossily decoded, capped.
    pub log: String,
    /// Bytes the build wrote in all (more than `log.len()` when capped).
    pub log_bytes: u64,
    pub elapsed: Duration,
    /// For each marker given to [`run_marked`], in order: the time from the start of the child
    /// until the first line holding it within its first [`MARK_WINDOW`] bytes was read, and
    /// until the last such line was; `None` if no line did.
    pub marks: Vec<Option<Mark>>,
}

/// When a marker's lines were read, since the start of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub first: Duration,
    pub last: Duration,
}

/// How many bytes at the start of each output line are searched for markers: QMK's own status
/// lines start with them (`Compiling: `, `Linking: `), a compiler's message about a file named
/// like one does not.
pub const MARK_WINDOW: usize = 48;

/// Finds the first line holding each marker, across reads that split lines anywhere.
struct Marker {
    markers: Vec<&'static str>,
    found: Vec<Option<Mark>>,
    /// The start of the current line (up to [`MARK_WINDOW`] bytes).
    line: Vec<u8>,
    /// The current line was already checked (its window filled before its end).
    checked: bool,
    started: Instant,
}

impl Marker {
    fn new(markers: &[&'static str], started: Instant) -> Self {
        Marker {
            markers: markers.to_vec(),
            found: vec![None; markers.len()],
            line: Vec::with_capacity(MARK_WINDOW),
            checked: false,
            started,
        }
    }

    fn check_line(&mut self) {
        if self.checked {
            return;
        }
        self.checked = true;
        let now = self.started.elapsed();
        for (m, found) in self.markers.iter().zip(self.found.iter_mut()) {
            if self.line.windows(m.len()).any(|w| w == m.as_bytes()) {
                let first = found.map_or(now, |f| f.first);
                *found = Some(Mark { first, last: now });
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.markers.is_empty() {
            return;
        }
        for &b in bytes {
            if b == b'\n' {
                self.check_line();
                self.line.clear();
                self.checked = false;
            } else if !self.checked {
                self.line.push(b);
                if self.line.len() >= MARK_WINDOW {
                    self.check_line();
                }
            }
        }
    }

    fn finish(mut self) -> Vec<Option<Mark>> {
        if !self.line.is_empty() {
            self.check_line();
        }
        self.found
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("build I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A byte sink keeping the first and last `cap / 2` bytes of what it is given.
struct CappedLog {
    head: Vec<u8>,
    tail: std::collections::VecDeque<u8>,
    half: usize,
    total: u64,
}

impl CappedLog {
    fn new(cap: usize) -> Self {
        CappedLog {
            head: Vec::new(),
            tail: std::collections::VecDeque::new(),
            half: (cap / 2).max(1),
            total: 0,
        }
    }

    fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        if self.head.len() < self.half {
            let n = (self.half - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(self.half);
        self.tail.drain(..excess);
    }

    fn finish(self) -> (String, u64) {
        let kept = self.head.len() as u64 + self.tail.len() as u64;
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.total > kept {
            out.push_str(&format!(
                "\n[... {} bytes of build output omitted ...]\n",
                self.total - kept
            ));
        }
        let tail: Vec<u8> = self.tail.into_iter().collect();
        out.push_str(&String::from_utf8_lossy(&tail));
        (out, self.total)
    }
}

pub(super) fn kill_group(pgid: u32) {
    // SAFETY: killpg only sends a signal; a vanished group yields ESRCH, which is fine.
    unsafe {
        libc::killpg(pgid as libc::pid_t, libc::SIGKILL);
    }
}

/// Makes this process's memory and environment unreadable to its builds: the worker's own
/// environment holds the cloud role's keys on Lambda, and any process of the same user can
/// otherwise read `/proc/<pid>/environ` (or attach with ptrace). A non-dumpable process's
/// `/proc` entries need `CAP_SYS_PTRACE`, which builds never have (see [`run`]). Idempotent;
/// the worker calls it when it starts.
pub fn protect_worker_secrets() {
    // SAFETY: prctl with integer arguments only changes this process's dumpable flag.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

/// In the child, before exec: no new privileges (setuid programs gain nothing), and no
/// capabilities at all, so that a build started by a root worker (a container without user
/// separation) cannot read the worker's `/proc` entries either. Only async-signal-safe calls;
/// failures are ignored (an unprivileged child has nothing to drop).
pub(super) fn drop_privileges() {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl and capset with valid pointers to local, correctly laid out structs.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        for cap in 0..64 {
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        let header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        libc::syscall(libc::SYS_capset, &header, data.as_ptr());
    }
}

/// Kills the build's process group when dropped armed: the caller abandoned the build (dropped
/// the future of [`run`]) because its worker lost the lease or is stopping, and `kill_on_drop`
/// alone would reach only the direct child, not `make` and the compilers under it.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            kill_group(p);
        }
    }
}

/// Runs `spec` to completion, timeout or not. Errors are only failures to run it at all.
pub async fn run(spec: &BuildSpec) -> Result<BuildOutput, RunError> {
    run_marked(spec, &[]).await
}

/// [`run`], noting when each of `markers` first appears in the output (see
/// [`BuildOutput::marks`]).
pub async fn run_marked(
    spec: &BuildSpec,
    markers: &[&'static str],
) -> Result<BuildOutput, RunError> {
    let started = Instant::now();
    let (reader, writer) = std::io::pipe()?;
    let writer2 = writer.try_clone()?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: the hook only makes async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(|| {
            drop_privileges();
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    // Our copies of the pipe's write end must go, or the reader never sees end-of-file.
    drop(cmd);
    let mut child = spawned.map_err(|source| RunError::Spawn {
        program: spec.program.display().to_string(),
        source,
    })?;
    let pgid = child.id();
    let mut guard = GroupGuard(pgid);

    let cap = spec.log_cap;
    let mut marker = Marker::new(markers, started);
    let reading = tokio::task::spawn_blocking(move || {
        let mut log = CappedLog::new(cap);
        let mut reader = reader;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    marker.push(&buf[..n]);
                    log.push(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let (log, bytes) = log.finish();
        (log, bytes, marker.finish())
    });

    let status = match tokio::time::timeout(spec.timeout, child.wait()).await {
        Ok(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => BuildStatus::Exited(c),
                (None, Some(s)) => BuildStatus::Signaled(s),
                (None, None) => BuildStatus::Exited(-1),
            }
        }
        Ok(Err(e)) => {
            if let Some(p) = pgid {
                kill_group(p);
            }
            return Err(RunError::Io(e));
        }
        Err(_) => {
            if let Some(p) = pgid {
                kill_group(p);
            }
            let _ = child.wait().await;
            BuildStatus::TimedOut
        }
    };
    // Whatever the build left running in the background goes too (it would hold the log pipe).
    drop(std::mem::replace(&mut guard, GroupGuard(None)));
    let elapsed = started.elapsed();
    let (mut log, log_bytes, marks) =
        match tokio::time::timeout(Duration::from_secs(10), reading).await {
            Ok(Ok(done)) => done,
            // A process that left our group still holds the pipe: give up on the rest of the log.
            _ => (
                "[build output unavailable: a build process outlived the build]\n".to_string(),
                0,
                vec![None; markers.len()],
            ),
        };
    if status == BuildStatus::TimedOut {
        log.push_str(&format!(
            "\n[Oven: the build was stopped after {} s]\n",
            spec.timeout.as_secs()
        ));
    }
    Ok(BuildOutput {
        status,
        log,
        log_bytes,
        elapsed,
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration, cap: usize) -> BuildSpec {
        BuildSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            cwd: std::env::temp_dir(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            timeout,
            log_cap: cap,
        }
    }

    #[tokio::test]
    async fn environment_is_cleared_and_streams_merged() {
        std::env::set_var("OVEN_RUNNER_SECRET", "s3cr3t");
        let out = run(&sh(
            "env; echo to-stderr >&2; exit 3",
            Duration::from_secs(10),
            1 << 20,
        ))
        .await
        .unwrap();
        assert_eq!(out.status, BuildStatus::Exited(3));
        assert!(out.log.contains("to-stderr"));
        assert!(out.log.contains("PATH=/usr/bin:/bin"));
        assert!(!out.log.contains("s3cr3t"), "{}", out.log);
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        // The grandchild would write the marker after 3 s unless the group is killed.
        let script = format!("(sleep 3; touch {}) & sleep 30", marker.display());
        let t = Instant::now();
        let out = run(&sh(&script, Duration::from_millis(500), 1 << 20))
            .await
            .unwrap();
        assert_eq!(out.status, BuildStatus::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn an_abandoned_build_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        let script = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let spec = sh(&script, Duration::from_secs(60), 1 << 20);
        // The worker drops the build when its lease is lost.
        let abandoned = tokio::time::timeout(Duration::from_millis(300), run(&spec)).await;
        assert!(abandoned.is_err(), "the build should still be running");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            !marker.exists(),
            "a build process outlived its abandoned build"
        );
    }

    #[tokio::test]
    async fn markers_are_timed_at_the_first_and_last_lines_holding_them() {
        // "Compiling:" twice, 0.3 s apart; "Linking:" in two writes (split mid-marker) after a
        // pause; "Absent" never; "Late:" only past the line's search window; "Tail:" on a last
        // line without a newline.
        let pad = "x".repeat(MARK_WINDOW);
        let script = format!(
            "echo 'Compiling: a.c'; sleep 0.3; echo 'Compiling: b.c'; sleep 0.3; printf 'Lin'; \
             sleep 0.1; echo 'king: kb.elf'; echo '{pad}Late: no'; printf 'Tail: no newline'"
        );
        let out = run_marked(
            &sh(&script, Duration::from_secs(20), 1 << 20),
            &["Compiling:", "Linking:", "Absent", "Late:", "Tail:"],
        )
        .await
        .unwrap();
        assert_eq!(out.status, BuildStatus::Exited(0));
        let [compiling, linking, absent, late, tail] = out.marks[..] else {
            panic!("{:?}", out.marks)
        };
        let (compiling, linking) = (compiling.unwrap(), linking.unwrap());
        assert!(
            compiling.first < Duration::from_millis(300),
            "{compiling:?}"
        );
        assert!(compiling.last >= compiling.first + Duration::from_millis(300));
        assert_eq!(linking.first, linking.last);
        assert!(linking.first >= compiling.last + Duration::from_millis(300));
        assert!(linking.last <= out.elapsed);
        assert_eq!((absent, late), (None, None));
        assert!(tail.is_some());
        // Without markers nothing is searched, and the log is the same.
        let plain = run(&sh(&script, Duration::from_secs(20), 1 << 20))
            .await
            .unwrap();
        assert!(plain.marks.is_empty());
        assert_eq!(plain.log, out.log);
    }

    #[tokio::test]
    async fn log_keeps_head_and_tail() {
        let out = run(&sh(
            "echo FIRST; yes middle-line | head -c 3000000; echo; echo LAST",
            Duration::from_secs(20),
            64 * 1024,
        ))
        .await
        .unwrap();
        assert_eq!(out.status, BuildStatus::Exited(0));
        assert!(out.log.starts_with("FIRST\n"));
        assert!(out.log.trim_end().ends_with("LAST"));
        assert!(out.log.len() < 70 * 1024);
        assert!(out.log_bytes > 3_000_000);
        assert!(out.log.contains("bytes of build output omitted"));
    }
}
