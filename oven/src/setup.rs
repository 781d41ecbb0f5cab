//! `oven setup`: everything `oven serve` needs to compile real firmware, in Oven's data directory.
//!
//! Layout under the data directory (default `.oven`):
//!
//! | path | what |
//! |---|---|
//! | `qmk_firmware/` | qmk_firmware at [`QMK_FIRMWARE_COMMIT`] (a git checkout, submodules included) |
//! | `venv/` | a Python virtual environment with the `qmk` CLI and the tree's `requirements.txt` |
//! | `setup.json` | written last: the tree is complete ([`Layout::ready_tree`]) |
//!
//! Each step checks what is there first and changes only what is not right, so a second run
//! changes nothing (not even an mtime) and an interrupted run resumes at the step it stopped in.
//! The work is done by the tools made for it: `git` (fetch, submodules, `url.<base>.insteadOf`
//! for mirrors), `python3 -m venv` and pip. Toolchains are checked, not installed, unless asked
//! (`--install-toolchains`): the package manager command for this system is printed instead.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

/// The qmk_firmware commit Oven is tested with. The compile image pins the same one
/// (`functions/compile/Dockerfile`, `ARG QMK_COMMIT`); a test keeps the two equal.
pub const QMK_FIRMWARE_COMMIT: &str = "95b9016a3b1f7bb90ccee8c0d841d77232ac9541";
/// Where qmk_firmware comes from unless `--from` names a mirror.
pub const QMK_FIRMWARE_URL: &str = "https://github.com/qmk/qmk_firmware.git";
/// The `qmk` CLI version installed from PyPI (the compile image pins the same; a test checks).
pub const QMK_CLI_VERSION: &str = "1.2.0";
/// The prefix of qmk_firmware's submodule URLs, what `--submodule-base` replaces.
pub const SUBMODULE_URL_PREFIX: &str = "https://github.com/";

/// Options of `oven setup` (and of `oven serve --setup`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SetupOptions {
    /// Git source of qmk_firmware: a URL or a local path (a mirror). Default: GitHub.
    #[arg(long = "from", value_name = "URL")]
    pub from: Option<String>,
    /// The commit to check out (40 hex digits). Default: the one Oven is tested with.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Fetch submodules from BASE instead of https://github.com/ (a mirror laid out as
    /// BASE/qmk/lufa ...): git's `url.BASE.insteadOf=https://github.com/`.
    #[arg(long, value_name = "URL")]
    pub submodule_base: Option<String>,
    /// Extra git configuration for every git command, repeatable (`-c KEY=VALUE`), e.g.
    /// `url./srv/mirror/lufa.git.insteadOf=https://github.com/qmk/lufa`.
    #[arg(long = "git-config", value_name = "KEY=VALUE")]
    pub git_config: Vec<String>,
    /// Check out SHA in submodule PATH instead of the commit the tree pins, repeatable: for
    /// mirrors that lack a pinned commit.
    #[arg(long = "submodule-rev", value_name = "PATH=SHA")]
    pub submodule_rev: Vec<String>,
    /// Leave submodule PATH (nested ones as `lib/x/ext/y`) out, repeatable.
    #[arg(long = "skip-submodule", value_name = "PATH")]
    pub skip_submodule: Vec<String>,
    /// Use this qmk CLI (linked into the venv) instead of installing `qmk` from PyPI.
    #[arg(long, value_name = "PATH")]
    pub qmk_cli: Option<PathBuf>,
    /// Install Python packages only from DIR (pip `--no-index --find-links DIR`), offline.
    #[arg(long, value_name = "DIR")]
    pub find_links: Option<PathBuf>,
    /// Run the package manager to install missing toolchains (as root, or through sudo).
    #[arg(long)]
    pub install_toolchains: bool,
}

/// Why setup stopped. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0}")]
    Missing(String),
    #[error("`{command}` failed ({status}){hint}")]
    Command {
        command: String,
        status: String,
        hint: String,
    },
    #[error("{dir} exists and is not a git checkout of qmk_firmware: move it away or use another --data-dir")]
    NotACheckout { dir: String },
    #[error("{dir} has local changes ({files}): commit or discard them, then run setup again")]
    Dirty { dir: String, files: String },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Where setup puts things, under one data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
}

impl Layout {
    pub fn new(data_dir: &Path) -> Self {
        Layout {
            data_dir: data_dir.to_path_buf(),
        }
    }
    pub fn tree(&self) -> PathBuf {
        self.data_dir.join("qmk_firmware")
    }
    pub fn venv(&self) -> PathBuf {
        self.data_dir.join("venv")
    }
    pub fn venv_bin(&self) -> PathBuf {
        self.venv().join("bin")
    }
    /// The venv's `qmk`: the build command for [`Layout::tree`].
    pub fn qmk(&self) -> PathBuf {
        self.venv_bin().join("qmk")
    }
    fn marker(&self) -> PathBuf {
        self.data_dir.join("setup.json")
    }
    fn venv_stamp(&self) -> PathBuf {
        self.venv().join("oven-setup.json")
    }
    /// The tree, once a setup run has completed it (`setup.json` written), else `None`.
    pub fn ready_tree(&self) -> Option<PathBuf> {
        (self.marker().is_file() && self.tree().join("keyboards").is_dir())
            .then(|| absolute(&self.tree()))
    }
    /// `PATH` for builds in the setup tree: the venv's bin first, then `path`.
    pub fn build_path(&self, path: &str) -> String {
        let bin = absolute(&self.venv_bin());
        if path.is_empty() {
            bin.display().to_string()
        } else {
            format!("{}:{path}", bin.display())
        }
    }
}

/// What a run did: the steps that changed something, and the toolchains still missing.
#[derive(Debug, Default)]
pub struct Report {
    pub changed: Vec<String>,
    pub missing_toolchains: Vec<String>,
}

/// A parsed, checked set of options.
struct Plan {
    source: String,
    commit: String,
    git_config: Vec<String>,
    revs: BTreeMap<String, String>,
    skip: Vec<String>,
    qmk_cli: Option<PathBuf>,
    find_links: Option<PathBuf>,
}

fn is_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn invalid(field: &'static str, reason: impl Into<String>) -> SetupError {
    SetupError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A local source (a path, or a `file:` URL): git refuses `file` transport for submodules unless
/// told otherwise (CVE-2022-39253), so a run given one allows it.
fn is_local(url: &str) -> bool {
    url.starts_with("file:") || !url.contains(':')
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Paths stay stable whatever directory git runs in: an existing local path becomes absolute.
fn normalise_source(s: &str) -> String {
    if !s.contains("://") && Path::new(s).exists() {
        std::fs::canonicalize(s)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| s.to_string())
    } else {
        s.to_string()
    }
}

impl Plan {
    fn new(o: &SetupOptions) -> Result<Plan, SetupError> {
        let commit = o
            .commit
            .clone()
            .unwrap_or_else(|| QMK_FIRMWARE_COMMIT.to_string())
            .to_ascii_lowercase();
        if !is_sha(&commit) {
            return Err(invalid(
                "--commit",
                format!("{commit:?} is not a 40-hex commit id"),
            ));
        }
        let source = normalise_source(o.from.as_deref().unwrap_or(QMK_FIRMWARE_URL));
        let mut git_config = Vec::new();
        let mut local = o.from.as_deref().is_some_and(is_local);
        if let Some(base) = &o.submodule_base {
            let base = normalise_source(base);
            local |= is_local(&base);
            let sep = if base.ends_with('/') { "" } else { "/" };
            git_config.push(format!("url.{base}{sep}.insteadOf={SUBMODULE_URL_PREFIX}"));
        }
        for kv in &o.git_config {
            match kv.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                    local |= k.starts_with("url.") && is_local(&k[4..]);
                    git_config.push(kv.clone());
                }
                _ => return Err(invalid("--git-config", format!("{kv:?} is not KEY=VALUE"))),
            }
        }
        if local {
            git_config.push("protocol.file.allow=always".into());
        }
        let mut revs = BTreeMap::new();
        for kv in &o.submodule_rev {
            let Some((p, sha)) = kv.split_once('=') else {
                return Err(invalid(
                    "--submodule-rev",
                    format!("{kv:?} is not PATH=SHA"),
                ));
            };
            if !is_sha(sha) {
                return Err(invalid(
                    "--submodule-rev",
                    format!("{sha:?} (for {p}) is not a 40-hex commit id"),
                ));
            }
            revs.insert(p.trim_matches('/').to_string(), sha.to_ascii_lowercase());
        }
        let skip = o
            .skip_submodule
            .iter()
            .map(|p| p.trim_matches('/').to_string())
            .collect();
        let qmk_cli = match &o.qmk_cli {
            Some(p) => Some(
                std::fs::canonicalize(p)
                    .map_err(|e| invalid("--qmk-cli", format!("{}: {e}", p.display())))?,
            ),
            None => None,
        };
        let find_links = match &o.find_links {
            Some(p) if p.is_dir() => Some(absolute(p)),
            Some(p) => {
                return Err(invalid(
                    "--find-links",
                    format!("{} is not a directory", p.display()),
                ))
            }
            None => None,
        };
        Ok(Plan {
            source,
            commit,
            git_config,
            revs,
            skip,
            qmk_cli,
            find_links,
        })
    }

    /// `git -c ... -C dir`.
    fn git(&self, dir: &Path) -> Command {
        let mut c = Command::new("git");
        for kv in &self.git_config {
            c.arg("-c").arg(kv);
        }
        c.arg("-C").arg(dir).stdin(Stdio::null());
        // Checks must not write (a plain `git status` refreshes the index).
        c.env("GIT_OPTIONAL_LOCKS", "0");
        c.env("GIT_TERMINAL_PROMPT", "0");
        c
    }
}

/// The command as a user would type it, without the `-c` options every git call carries.
fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    let mut args = c.get_args().peekable();
    while let Some(a) = args.next() {
        if a == "-c" {
            args.next();
            continue;
        }
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `c` with its output shown (progress), failing with `hint` appended.
fn run(mut c: Command, hint: &str) -> Result<(), SetupError> {
    let command = describe(&c);
    let status = c.status().map_err(|e| SetupError::Io(command.clone(), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(SetupError::Command {
            command,
            status: status.to_string(),
            hint: hint.to_string(),
        })
    }
}

/// Runs `c` quietly and returns its trimmed stdout when it succeeds.
fn output(mut c: Command) -> Option<String> {
    let out = c.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn say(out: &mut dyn Write, line: impl AsRef<str>) {
    let _ = writeln!(out, "{}", line.as_ref());
    let _ = out.flush();
}

/// Runs every step into `data_dir`, printing progress to `out` (git and pip print their own to
/// the inherited stderr/stdout). Errors: [`SetupError`], each naming what to do.
pub fn run_setup(
    data_dir: &Path,
    opts: &SetupOptions,
    out: &mut dyn Write,
) -> Result<Report, SetupError> {
    let started = Instant::now();
    let plan = Plan::new(opts)?;
    let layout = Layout::new(data_dir);
    let mut report = Report::default();
    if output({
        let mut c = Command::new("git");
        c.arg("--version");
        c
    })
    .is_none()
    {
        return Err(SetupError::Missing(format!(
            "git is not installed{}",
            install_hint(&["git"])
        )));
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| SetupError::Io(data_dir.display().to_string(), e))?;

    say(
        out,
        format!(
            "oven setup: [1/4] qmk_firmware {} from {} into {}",
            &plan.commit[..12],
            plan.source,
            layout.tree().display()
        ),
    );
    tree_step(&plan, &layout.tree(), out, &mut report)?;

    say(out, "oven setup: [2/4] submodules");
    submodules(&plan, &layout.tree(), "", out, &mut report)?;

    say(
        out,
        format!(
            "oven setup: [3/4] Python environment {}",
            layout.venv().display()
        ),
    );
    venv_step(&plan, &layout, out, &mut report)?;

    say(out, "oven setup: [4/4] toolchains");
    toolchain_step(&layout, opts.install_toolchains, out, &mut report)?;

    let marker = serde_json::json!({
        "commit": plan.commit,
        "source": plan.source,
        "submodule_revs": plan.revs,
        "skipped_submodules": plan.skip,
    });
    let text = serde_json::to_string_pretty(&marker).unwrap_or_default() + "\n";
    if std::fs::read_to_string(layout.marker()).ok().as_deref() != Some(text.as_str()) {
        std::fs::write(layout.marker(), text)
            .map_err(|e| SetupError::Io(layout.marker().display().to_string(), e))?;
        report.changed.push("setup.json".into());
    }

    let secs = started.elapsed().as_secs_f64();
    let changed = if report.changed.is_empty() {
        "nothing changed".to_string()
    } else {
        format!("changed: {}", report.changed.join(", "))
    };
    say(
        out,
        format!(
            "oven setup: done in {secs:.0} s, {changed}; qmk_firmware {}, venv {}",
            human(dir_size(&layout.tree())),
            human(dir_size(&layout.venv()))
        ),
    );
    if !report.missing_toolchains.is_empty() {
        say(
            out,
            format!(
                "oven setup: still missing: {} (keyboards needing them fail to build)",
                report.missing_toolchains.join(", ")
            ),
        );
    }
    Ok(report)
}

/// The superproject: a git checkout at the commit, fetched (depth 1) only when missing.
fn tree_step(
    plan: &Plan,
    dir: &Path,
    out: &mut dyn Write,
    report: &mut Report,
) -> Result<(), SetupError> {
    let io = |e| SetupError::Io(dir.display().to_string(), e);
    // An empty directory is fine to start in; anything else is someone else's.
    if dir.exists()
        && !dir.join(".git").exists()
        && std::fs::read_dir(dir).map_err(io)?.next().is_some()
    {
        return Err(SetupError::NotACheckout {
            dir: dir.display().to_string(),
        });
    }
    if !dir.join(".git").exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut c = plan.git(dir);
        c.args(["init", "-q"]);
        run(c, "")?;
        report.changed.push("git init".into());
    }
    let remote = output({
        let mut c = plan.git(dir);
        c.args(["config", "--get", "remote.origin.url"]);
        c
    });
    if remote.as_deref() != Some(plan.source.as_str()) {
        let mut c = plan.git(dir);
        match remote {
            None => c.args(["remote", "add", "origin", &plan.source]),
            Some(_) => c.args(["remote", "set-url", "origin", &plan.source]),
        };
        run(c, "")?;
        report.changed.push("remote origin".into());
    }
    let head = output({
        let mut c = plan.git(dir);
        c.args(["rev-parse", "-q", "--verify", "HEAD^{commit}"]);
        c
    });
    let dirty = |dir: &Path| -> Option<String> {
        let mut c = plan.git(dir);
        c.args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--ignore-submodules=all",
        ]);
        let text = output(c)?;
        // `XY path` lines (the first one's leading space is trimmed away with the output's).
        let files: Vec<&str> = text
            .lines()
            .map(|l| {
                l.trim_start()
                    .split_once(' ')
                    .map_or(l, |(_, p)| p.trim_start())
            })
            .collect();
        (!files.is_empty()).then(|| {
            let more = files.len().saturating_sub(5);
            let mut s = files[..files.len().min(5)].join(", ");
            if more > 0 {
                s.push_str(&format!(" and {more} more"));
            }
            s
        })
    };
    if head.as_deref() == Some(plan.commit.as_str()) {
        match dirty(dir) {
            Some(files) => say(
                out,
                format!(
                    "  at {}, with local changes (kept): {files}",
                    &plan.commit[..12]
                ),
            ),
            None => say(out, format!("  at {}: ok", &plan.commit[..12])),
        }
        return Ok(());
    }
    if head.is_some() {
        if let Some(files) = dirty(dir) {
            return Err(SetupError::Dirty {
                dir: dir.display().to_string(),
                files,
            });
        }
    }
    let have = output({
        let mut c = plan.git(dir);
        c.args(["cat-file", "-e", &format!("{}^{{commit}}", plan.commit)]);
        c
    })
    .is_some();
    if !have {
        say(out, format!("  fetching {} (depth 1)", plan.source));
        let mut c = plan.git(dir);
        c.args([
            "fetch",
            "--depth",
            "1",
            "--progress",
            "origin",
            &plan.commit,
        ]);
        run(
            c,
            ": is the source reachable and does it have the commit? (--from takes a mirror)",
        )?;
    }
    say(out, format!("  checking out {}", &plan.commit[..12]));
    let mut c = plan.git(dir);
    c.args(["checkout", "-q", "--detach"]);
    if head.is_none() {
        // Nothing was ever checked out here: files left by an interrupted checkout are ours.
        c.arg("--force");
    }
    c.arg(&plan.commit);
    run(c, "")?;
    report.changed.push("qmk_firmware checkout".into());
    Ok(())
}

/// The submodule paths `.gitmodules` of `dir` declares, in file order.
fn submodule_paths(plan: &Plan, dir: &Path) -> Vec<String> {
    if !dir.join(".gitmodules").is_file() {
        return Vec::new();
    }
    let mut c = plan.git(dir);
    c.args([
        "config",
        "-f",
        ".gitmodules",
        "--get-regexp",
        r"^submodule\..*\.path$",
    ]);
    output(c)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, p)| p.trim().to_string()))
        .collect()
}

/// Every submodule of `dir` (recursively) at its pinned commit, or the `--submodule-rev` one.
fn submodules(
    plan: &Plan,
    dir: &Path,
    prefix: &str,
    out: &mut dyn Write,
    report: &mut Report,
) -> Result<(), SetupError> {
    for path in submodule_paths(plan, dir) {
        let full = if prefix.is_empty() {
            path.clone()
        } else {
            format!("{prefix}/{path}")
        };
        if plan.skip.contains(&full) {
            say(out, format!("  {full}: skipped (--skip-submodule)"));
            continue;
        }
        let pinned = output({
            let mut c = plan.git(dir);
            c.args(["ls-tree", "HEAD", "--", &path]);
            c
        })
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        .filter(|s| is_sha(s));
        let Some(pinned) = pinned else {
            say(
                out,
                format!("  {full}: declared but not in the tree, skipped"),
            );
            continue;
        };
        let want = plan.revs.get(&full).cloned().unwrap_or(pinned.clone());
        let sub = dir.join(&path);
        let head = sub.join(".git").exists().then(|| {
            output({
                let mut c = plan.git(&sub);
                c.args(["rev-parse", "-q", "--verify", "HEAD"]);
                c
            })
        });
        if head.flatten().as_deref() == Some(want.as_str()) {
            say(out, format!("  {full} {}: ok", &want[..12]));
        } else if want == pinned {
            say(out, format!("  {full} {}: fetching", &want[..12]));
            let mut c = plan.git(dir);
            c.args([
                "submodule",
                "update",
                "--init",
                "--depth",
                "1",
                "--progress",
                "--",
                &path,
            ]);
            run(
                c,
                &format!(
                    ": if your mirror lacks commit {pinned} of {full}, name one it has with \
                     --submodule-rev {full}=SHA, or leave it out with --skip-submodule {full}"
                ),
            )?;
            report.changed.push(full.clone());
        } else {
            say(
                out,
                format!(
                    "  {full} {} (--submodule-rev, pinned {}): fetching",
                    &want[..12],
                    &pinned[..12]
                ),
            );
            if !sub.join(".git").exists() {
                // Clones the submodule; its checkout of the pinned commit fails, as expected.
                let mut c = plan.git(dir);
                c.args(["submodule", "update", "--init", "--depth", "1", "--", &path]);
                let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
                if !sub.join(".git").exists() {
                    return Err(SetupError::Missing(format!(
                        "could not clone submodule {full} (is its URL reachable? see --submodule-base)"
                    )));
                }
            }
            let have = output({
                let mut c = plan.git(&sub);
                c.args(["cat-file", "-e", &format!("{want}^{{commit}}")]);
                c
            })
            .is_some();
            if !have {
                let mut c = plan.git(&sub);
                c.args(["fetch", "--depth", "1", "--progress", "origin", &want]);
                run(c, &format!(": {full} has no commit {want}"))?;
            }
            let mut c = plan.git(&sub);
            c.args(["checkout", "-q", "--detach", &want]);
            run(c, "")?;
            report.changed.push(full.clone());
        }
        submodules(plan, &sub, &full, out, report)?;
    }
    Ok(())
}

/// The venv: created when missing or broken; `qmk` and the tree's requirements installed when
/// what was installed last (the stamp) differs from what is asked now.
fn venv_step(
    plan: &Plan,
    layout: &Layout,
    out: &mut dyn Write,
    report: &mut Report,
) -> Result<(), SetupError> {
    let venv = layout.venv();
    let python = venv.join("bin/python");
    let quiet_python = |args: &[&str]| {
        let mut c = Command::new(&python);
        c.args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        output(c)
    };
    if quiet_python(&["-c", "import sys"]).is_none() {
        say(out, "  creating the virtual environment");
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]);
        if venv.exists() {
            c.arg("--clear");
        }
        c.arg(&venv).stdin(Stdio::null());
        run(
            c,
            &format!(
                ": Python 3 with its venv module is needed{}",
                install_hint(&["python3-venv"])
            ),
        )?;
        report.changed.push("venv".into());
    }
    let requirements = layout.tree().join("requirements.txt");
    let req_hash = std::fs::read(&requirements)
        .map(|b| hex::encode(Sha256::digest(&b)))
        .unwrap_or_else(|_| "none".into());
    let qmk_spec = match &plan.qmk_cli {
        Some(p) => format!("link:{}", p.display()),
        None => format!("qmk=={QMK_CLI_VERSION}"),
    };
    let stamp = serde_json::to_string_pretty(&serde_json::json!({
        "qmk": qmk_spec,
        "requirements_sha256": req_hash,
        "find_links": plan.find_links.as_ref().map(|p| p.display().to_string()),
    }))
    .unwrap_or_default()
        + "\n";
    let qmk_version = || {
        let mut c = Command::new(layout.qmk());
        c.arg("--version")
            .env(
                "PATH",
                layout.build_path(&std::env::var("PATH").unwrap_or_default()),
            )
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null());
        output(c)
    };
    let stamped = std::fs::read_to_string(layout.venv_stamp()).ok().as_deref() == Some(&stamp);
    if stamped {
        if let Some(v) = qmk_version() {
            say(out, format!("  qmk {v} and requirements.txt: ok"));
            return Ok(());
        }
    }
    let mut pip = Command::new(&python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check"]);
    if let Some(dir) = &plan.find_links {
        pip.arg("--no-index").arg("--find-links").arg(dir);
    }
    if requirements.is_file() {
        pip.arg("-r").arg(&requirements);
    }
    if plan.qmk_cli.is_none() {
        pip.arg(&qmk_spec);
    }
    pip.stdin(Stdio::null());
    if requirements.is_file() || plan.qmk_cli.is_none() {
        say(out, format!("  pip install {qmk_spec} -r requirements.txt"));
        run(
            pip,
            ": see pip's message above (--find-links installs offline)",
        )?;
    }
    if let Some(cli) = &plan.qmk_cli {
        let link = layout.qmk();
        if std::fs::read_link(&link).ok().as_deref() != Some(cli.as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(cli, &link)
                .map_err(|e| SetupError::Io(link.display().to_string(), e))?;
        }
    }
    let Some(v) = qmk_version() else {
        return Err(SetupError::Missing(format!(
            "{} --version does not run after the install",
            layout.qmk().display()
        )));
    };
    say(out, format!("  qmk {v}"));
    std::fs::write(layout.venv_stamp(), stamp)
        .map_err(|e| SetupError::Io(layout.venv_stamp().display().to_string(), e))?;
    report.changed.push("python packages".into());
    Ok(())
}

fn toolchain_step(
    layout: &Layout,
    install: bool,
    out: &mut dyn Write,
    report: &mut Report,
) -> Result<(), SetupError> {
    let path = layout.build_path(&std::env::var("PATH").unwrap_or_default());
    let mut found = probe_toolchains(&path);
    let show = |found: &BTreeMap<String, Option<String>>, out: &mut dyn Write| {
        for (tool, v) in found {
            say(
                out,
                format!("  {tool}: {}", v.as_deref().unwrap_or("missing")),
            );
        }
    };
    show(&found, out);
    let mut missing = missing_tools(&found);
    if !missing.is_empty() {
        let os = OsInfo::detect();
        match install_commands(&os, &missing, is_root()) {
            Some(cmds) if install => {
                for cmd in cmds {
                    say(out, format!("  running: {}", cmd.join(" ")));
                    let mut c = Command::new(&cmd[0]);
                    c.args(&cmd[1..])
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .stdin(Stdio::null());
                    run(c, "")?;
                }
                report.changed.push("toolchains".into());
                found = probe_toolchains(&path);
                show(&found, out);
                missing = missing_tools(&found);
            }
            Some(cmds) => {
                let line: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
                say(
                    out,
                    format!(
                        "  missing {}: install with (or run setup with --install-toolchains)\n    {}",
                        missing.join(", "),
                        line.join(" && ")
                    ),
                );
            }
            None => say(
                out,
                format!(
                    "  missing {}: no package known for this system ({}); QMK's prebuilt \
                     toolchains (github.com/qmk/qmk_toolchains) work everywhere",
                    missing.join(", "),
                    os.id
                ),
            ),
        }
    }
    report.missing_toolchains = missing.iter().map(|s| s.to_string()).collect();
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One line for an error message: how to install `packages` here, when known.
fn install_hint(debian_packages: &[&str]) -> String {
    let os = OsInfo::detect();
    match os.manager() {
        Some(PackageManager::Apt) => format!(": apt-get install -y {}", debian_packages.join(" ")),
        _ => String::new(),
    }
}

/// The tools QMK builds with, each with the version flag to probe it. `dfu-suffix` (package
/// dfu-util) is not a flasher here: QMK's make runs it on the .bin of every STM32, APM32 and
/// GD32V DFU keyboard after linking (`builddefs/common_rules.mk`), and those builds fail
/// without it.
const TOOLS: [(&str, &str); 7] = [
    ("avr-gcc", "-dumpversion"),
    ("arm-none-eabi-gcc", "-dumpversion"),
    ("riscv32-unknown-elf-gcc", "-dumpversion"),
    ("riscv64-unknown-elf-gcc", "-dumpversion"),
    ("dfu-suffix", "--version"),
    ("make", "--version"),
    ("git", "--version"),
];

/// What is needed, by the names [`missing_tools`] reports: QMK takes either RISC-V prefix
/// (`platforms/chibios/platform.mk` looks for riscv32-unknown-elf-gcc, then riscv64-).
const RISCV: &str = "riscv64-unknown-elf-gcc";

/// The version of each build tool found on `path` (a PATH value), `None` when missing.
pub fn probe_toolchains(path: &str) -> BTreeMap<String, Option<String>> {
    TOOLS
        .iter()
        .map(|(tool, flag)| {
            let mut c = Command::new(tool);
            c.arg(flag)
                .env_clear()
                .env("PATH", path)
                .stdin(Stdio::null());
            let v = output(c).and_then(|t| t.lines().next().map(str::to_string));
            (tool.to_string(), v.filter(|v| !v.is_empty()))
        })
        .collect()
}

/// The tools of `found` a full set of QMK builds still needs (RISC-V under one name).
pub fn missing_tools(found: &BTreeMap<String, Option<String>>) -> Vec<&'static str> {
    let has = |t: &str| found.get(t).is_some_and(|v| v.is_some());
    let mut missing = Vec::new();
    for t in ["avr-gcc", "arm-none-eabi-gcc", "dfu-suffix", "make", "git"] {
        if !has(t) {
            missing.push(t);
        }
    }
    if !has("riscv32-unknown-elf-gcc") && !has("riscv64-unknown-elf-gcc") {
        missing.push(RISCV);
    }
    missing
}

/// The system, as far as choosing a package manager goes.
#[derive(Debug, Clone, PartialEq)]
pub struct OsInfo {
    /// `ID` of /etc/os-release, or `macos`.
    pub id: String,
    /// `ID_LIKE` of /etc/os-release, split.
    pub like: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PackageManager {
    Apt,
    Dnf,
    Pacman,
    Brew,
}

impl OsInfo {
    /// From `uname` (macOS) and /etc/os-release (Linux).
    pub fn detect() -> OsInfo {
        if cfg!(target_os = "macos") {
            return OsInfo {
                id: "macos".into(),
                like: Vec::new(),
            };
        }
        let text = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .unwrap_or_default();
        OsInfo::parse(&text)
    }

    /// Parses os-release text (`KEY=value` or `KEY="value"` lines).
    pub fn parse(text: &str) -> OsInfo {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
                .unwrap_or_default()
        };
        OsInfo {
            id: get("ID"),
            like: get("ID_LIKE")
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    pub fn manager(&self) -> Option<PackageManager> {
        let ids = std::iter::once(self.id.as_str()).chain(self.like.iter().map(String::as_str));
        for id in ids {
            match id {
                "debian" | "ubuntu" => return Some(PackageManager::Apt),
                "fedora" | "rhel" | "centos" => return Some(PackageManager::Dnf),
                "arch" => return Some(PackageManager::Pacman),
                "macos" => return Some(PackageManager::Brew),
                _ => {}
            }
        }
        None
    }
}

/// Packages providing `tool` with `manager`, after QMK's own `util/install/*.sh`; empty when the
/// distribution has none QMK can use (RISC-V on Fedora; Arch's riscv64-elf- prefix is not one
/// QMK looks for).
fn packages(manager: PackageManager, tool: &str) -> &'static [&'static str] {
    use PackageManager::*;
    match (manager, tool) {
        (Apt, "avr-gcc") => &["gcc-avr", "binutils-avr", "avr-libc"],
        (Apt, "arm-none-eabi-gcc") => &[
            "gcc-arm-none-eabi",
            "binutils-arm-none-eabi",
            "libnewlib-arm-none-eabi",
        ],
        (Apt, RISCV) => &[
            "gcc-riscv64-unknown-elf",
            "binutils-riscv64-unknown-elf",
            "picolibc-riscv64-unknown-elf",
        ],
        (Dnf, "avr-gcc") => &["avr-gcc", "avr-binutils", "avr-libc"],
        (Dnf, "arm-none-eabi-gcc") => &[
            "arm-none-eabi-gcc-cs",
            "arm-none-eabi-binutils-cs",
            "arm-none-eabi-newlib",
        ],
        (Pacman, "avr-gcc") => &["avr-gcc", "avr-binutils", "avr-libc"],
        (Pacman, "arm-none-eabi-gcc") => &[
            "arm-none-eabi-gcc",
            "arm-none-eabi-binutils",
            "arm-none-eabi-newlib",
        ],
        // QMK's tap brings avr-gcc and arm-none-eabi-gcc with it.
        (Brew, "avr-gcc" | "arm-none-eabi-gcc") => &["qmk/qmk/qmk"],
        (Brew, "make") => &["make"],
        (_, "dfu-suffix") => &["dfu-util"],
        (_, "make") => &["make"],
        (_, "git") => &["git"],
        _ => &[],
    }
}

/// The package manager command(s) installing `missing` on `os` (`sudo` unless `root`); `None`
/// when the system's manager is unknown or has no package for any of them.
pub fn install_commands(os: &OsInfo, missing: &[&str], root: bool) -> Option<Vec<Vec<String>>> {
    let manager = os.manager()?;
    let mut pkgs: Vec<&str> = Vec::new();
    for tool in missing {
        for p in packages(manager, tool) {
            if !pkgs.contains(p) {
                pkgs.push(p);
            }
        }
    }
    if pkgs.is_empty() {
        return None;
    }
    let sudo = |mut v: Vec<String>| {
        if !root && manager != PackageManager::Brew {
            v.insert(0, "sudo".into());
        }
        v
    };
    let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    let mut install = match manager {
        PackageManager::Apt => words("apt-get install -y"),
        PackageManager::Dnf => words("dnf install -y"),
        PackageManager::Pacman => words("pacman -S --needed --noconfirm"),
        PackageManager::Brew => words("brew install"),
    };
    install.extend(pkgs.iter().map(|p| p.to_string()));
    let mut cmds = Vec::new();
    if manager == PackageManager::Apt {
        cmds.push(sudo(words("apt-get update")));
    }
    cmds.push(sudo(install));
    Some(cmds)
}

/// What `/v1/healthcheck` says about compiling: probed once when `oven serve` starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompilerHealth {
    /// The tree's commit; `None` without a tree.
    pub firmware_commit: Option<String>,
    /// Version of each build tool and of the qmk CLI (`qmk`), `None` when missing.
    pub toolchains: BTreeMap<String, Option<String>>,
    /// Why compiles cannot all succeed; empty when they can.
    pub problems: Vec<String>,
}

impl CompilerHealth {
    /// Probes the tree `home` (if any), the build command `qmk` and the tools on `path`.
    pub fn probe(home: Option<&Path>, qmk: &Path, path: &str) -> CompilerHealth {
        let mut toolchains = probe_toolchains(path);
        let qmk_version = {
            let mut c = Command::new(qmk);
            c.arg("--version")
                .env_clear()
                .env("PATH", path)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null());
            output(c).and_then(|t| t.lines().next().map(str::to_string))
        };
        toolchains.insert("qmk".into(), qmk_version.clone());
        let mut problems = Vec::new();
        if home.is_none() {
            problems.push(crate::worker::tree::NO_TREE_MESSAGE.to_string());
        }
        if qmk_version.is_none() {
            problems.push(format!("{} does not run", qmk.display()));
        }
        for tool in missing_tools(&toolchains) {
            problems.push(match tool {
                RISCV => {
                    "no RISC-V toolchain (riscv32-unknown-elf-gcc or riscv64-unknown-elf-gcc): \
                          RISC-V keyboards cannot be built"
                        .to_string()
                }
                t => format!("{t} not found on PATH"),
            });
        }
        CompilerHealth {
            firmware_commit: home.map(crate::worker::tree::firmware_commit),
            toolchains,
            problems,
        }
    }
}

/// Bytes under `dir` (files and symlinks themselves, not followed); 0 when absent.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn human(bytes: u64) -> String {
    let mb = bytes as f64 / 1e6;
    if mb >= 1000.0 {
        format!("{:.1} GB", mb / 1000.0)
    } else {
        format!("{mb:.0} MB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compile_image_pins_the_same_commit_and_cli() {
        let dockerfile = include_str!("../../functions/compile/Dockerfile");
        let args: Vec<&str> = dockerfile
            .lines()
            .filter_map(|l| l.trim().strip_prefix("ARG QMK_COMMIT="))
            .collect();
        assert_eq!(args, [QMK_FIRMWARE_COMMIT], "Dockerfile ARG QMK_COMMIT");
        let cli: Vec<&str> = dockerfile
            .lines()
            .filter_map(|l| l.trim().strip_prefix("ARG QMK_CLI_VERSION="))
            .collect();
        assert_eq!(cli, [QMK_CLI_VERSION], "Dockerfile ARG QMK_CLI_VERSION");
        assert!(
            dockerfile.contains("qmk==${QMK_CLI_VERSION}"),
            "the Dockerfile installs qmk==${{QMK_CLI_VERSION}}"
        );
    }

    #[test]
    fn os_release_picks_the_package_manager() {
        let ubuntu = OsInfo::parse("NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n");
        assert_eq!(ubuntu.manager(), Some(PackageManager::Apt));
        let mint = OsInfo::parse("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(mint.manager(), Some(PackageManager::Apt));
        let rocky = OsInfo::parse("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(rocky.manager(), Some(PackageManager::Dnf));
        assert_eq!(
            OsInfo::parse("ID=endeavouros\nID_LIKE=arch\n").manager(),
            Some(PackageManager::Pacman)
        );
        assert_eq!(OsInfo::parse("ID=alpine\n").manager(), None);
    }

    #[test]
    fn one_command_per_system_for_what_is_missing() {
        let debian = OsInfo::parse("ID=debian\n");
        let cmds = install_commands(&debian, &["arm-none-eabi-gcc", RISCV], false).unwrap();
        assert_eq!(cmds[0].join(" "), "sudo apt-get update");
        assert_eq!(
            cmds[1].join(" "),
            "sudo apt-get install -y gcc-arm-none-eabi binutils-arm-none-eabi \
             libnewlib-arm-none-eabi gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf \
             picolibc-riscv64-unknown-elf"
        );
        let fedora = OsInfo::parse("ID=fedora\n");
        let cmds = install_commands(&fedora, &["avr-gcc", RISCV], true).unwrap();
        assert_eq!(
            cmds,
            [[
                "dnf",
                "install",
                "-y",
                "avr-gcc",
                "avr-binutils",
                "avr-libc"
            ]]
        );
        assert_eq!(install_commands(&fedora, &[RISCV], true), None);
        let mac = OsInfo {
            id: "macos".into(),
            like: vec![],
        };
        let cmds = install_commands(&mac, &["avr-gcc", "arm-none-eabi-gcc"], false).unwrap();
        assert_eq!(cmds, [["brew", "install", "qmk/qmk/qmk"]]);
    }

    /// Every tool of [`TOOLS`] found, at version "1".
    fn all_tools_found() -> BTreeMap<String, Option<String>> {
        TOOLS
            .iter()
            .map(|(t, _)| (t.to_string(), Some("1".to_string())))
            .collect()
    }

    #[test]
    fn riscv_counts_under_either_prefix() {
        let mut found = all_tools_found();
        found.insert("riscv64-unknown-elf-gcc".into(), None);
        assert!(missing_tools(&found).is_empty());
        found.insert("riscv32-unknown-elf-gcc".into(), None);
        found.insert("avr-gcc".into(), None);
        assert_eq!(missing_tools(&found), ["avr-gcc", RISCV]);
    }

    /// QMK's make runs dfu-suffix on DFU keyboards' .bin files: a system without it cannot
    /// build them (the compile image lacked it: every STM32 DFU keyboard failed with exit 127).
    #[test]
    fn dfu_suffix_is_a_build_tool() {
        let mut found = all_tools_found();
        found.insert("dfu-suffix".into(), None);
        assert_eq!(missing_tools(&found), ["dfu-suffix"]);
        let debian = OsInfo {
            id: "debian".into(),
            like: vec![],
        };
        let cmds = install_commands(&debian, &["dfu-suffix"], true).unwrap();
        assert_eq!(cmds.last().unwrap().last().unwrap(), "dfu-util");
    }

    #[test]
    fn options_are_checked_with_the_field_named() {
        let bad = |o: SetupOptions| Plan::new(&o).err().unwrap().to_string();
        let e = bad(SetupOptions {
            commit: Some("main".into()),
            ..Default::default()
        });
        assert!(e.starts_with("--commit: \"main\""), "{e}");
        let e = bad(SetupOptions {
            submodule_rev: vec!["lib/lufa".into()],
            ..Default::default()
        });
        assert!(e.starts_with("--submodule-rev:"), "{e}");
        let e = bad(SetupOptions {
            git_config: vec!["nonsense".into()],
            ..Default::default()
        });
        assert!(e.starts_with("--git-config:"), "{e}");
        let plan = Plan::new(&SetupOptions {
            submodule_base: Some("file:///srv/mirror".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(plan.commit, QMK_FIRMWARE_COMMIT);
        assert_eq!(plan.source, QMK_FIRMWARE_URL);
        assert_eq!(
            plan.git_config,
            [
                "url.file:///srv/mirror/.insteadOf=https://github.com/",
                "protocol.file.allow=always"
            ]
        );
        // A remote mirror needs no file transport.
        let plan = Plan::new(&SetupOptions {
            submodule_base: Some("https://git.example/mirror/".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            plan.git_config,
            ["url.https://git.example/mirror/.insteadOf=https://github.com/"]
        );
    }
}
