//! The build invocation: one job's `qmk compile` in the writable overlay of the tree, with the
//! arguments and the cleared environment builds get, the warm-keymap shortcut, and the firmware
//! file it produced. Nothing here touches the job store or the artifact store: the orchestration
//! in [`super`] turns a [`BuildOutcome`] into a job result and [`super::artifacts`] stores it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use super::builddate::BuildDate;
use super::{builddate, runner, tree, WorkerConfig};
use crate::job::Phases;

/// The name every job is built under, so a keyboard's object files and ccache entries are
/// reused from one job to the next; the firmware is renamed to the user's keymap name after.
pub const BUILD_KEYMAP: &str = "oven_build";

/// What the tree offers a build, computed once per worker.
#[derive(Debug, Clone)]
pub struct TreeInfo {
    pub home: PathBuf,
    pub commit: String,
    /// The commit's time in seconds since the epoch ([`tree::firmware_commit_time`]).
    pub commit_time: Option<i64>,
    pub toolchains: std::collections::BTreeMap<String, String>,
    /// Which builds use ccache, and its seed.
    pub ccache: CcachePolicy,
    /// `qmk compile` arguments memoising QMK's `cc-option` probe (see [`super::ccoption`]);
    /// none when the tree has another probe or `OVEN_CC_OPTION_MEMO=0`.
    pub cc_option: Vec<String>,
    /// The tree's keyboard aliases, read once.
    pub aliases: std::sync::Arc<tree::Aliases>,
}

/// Whether `tool` is a file in one of `path`'s directories (a PATH value).
fn on_path(path: &str, tool: &str) -> bool {
    path.split(':')
        .any(|d| !d.is_empty() && Path::new(d).join(tool).is_file())
}

impl TreeInfo {
    /// What the tree at `home` offers, read once (its commit and date, the toolchains on the
    /// build PATH, ccache, the cc-option memo, the alias map).
    pub fn load(home: &Path, cfg: &WorkerConfig) -> TreeInfo {
        TreeInfo {
            home: home.to_path_buf(),
            commit: tree::firmware_commit(home),
            commit_time: tree::firmware_commit_time(home),
            toolchains: tree::toolchains(&cfg.path, &cfg.qmk),
            ccache: CcachePolicy::from_env(on_path(&cfg.path, "ccache")),
            cc_option: if std::env::var(crate::config::CC_OPTION_MEMO).is_ok_and(|v| v == "0") {
                Vec::new()
            } else {
                super::ccoption::qmk_args(home)
            },
            aliases: std::sync::Arc::new(tree::load_aliases(home)),
        }
    }
}

impl TreeInfo {
    /// The date builds on this tree are stamped with: the commit's (the epoch if unknown).
    pub fn build_date(&self) -> BuildDate {
        BuildDate::from_epoch(self.commit_time.unwrap_or(0))
    }
}

/// The firmware file a successful build left.
#[derive(Debug, Clone)]
pub struct Firmware {
    /// `hex`, `bin` or `uf2` (see [`tree::FIRMWARE_EXTENSIONS`]).
    pub ext: String,
    pub bytes: Bytes,
}

/// How one build ended.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub status: runner::BuildStatus,
    /// The capped log, with the shared build name already replaced by the user's keymap name.
    pub log: String,
    pub elapsed: Duration,
    /// Present only when the build exited 0 and its firmware file was found.
    pub firmware: Option<Firmware>,
    /// The keymap.c the build generated (to trace compiler errors back to the request).
    pub keymap_c: Option<String>,
    /// `prepare` and the build's own phases (`startup`, `generate`, `compile`, `link`).
    pub phases: Phases,
}

/// QMK's status lines that mark the phases of a build: the CLI's `Ψ Compiling keymap with
/// gmake ...` (lib/python/qmk/build_targets.py) when make starts, then make's `MSG_COMPILING`,
/// `MSG_ASSEMBLING`, the archiver's line and `MSG_LINKING` (builddefs/message.mk, printed by
/// builddefs/common_rules.mk). QMK runs make with `--output-sync=target`, so a unit's line
/// appears when that unit is *done*: the first unit's line ends generation (and its own
/// compile), the last unit's line is when linking can start.
const PHASE_MARKERS: [&str; 5] = [
    "Compiling keymap with",
    "Compiling:",
    "Assembling:",
    "Archiving:",
    "Linking:",
];

/// The build's phases from when its [`PHASE_MARKERS`] lines were read (`marks`, in that order)
/// and its whole duration: `startup` until make starts, `generate` until the first unit is
/// done, `compile` until the last one is, `link` (linking, the firmware file, its size check
/// and copy) to the end. A phase whose marker never came (a failed build, one that compiled
/// nothing) is absent and its time counts in the phase before, so the phases present always
/// add up to `elapsed`.
pub fn build_phases(marks: &[Option<runner::Mark>], elapsed: Duration) -> Phases {
    let get = |i: usize| marks.get(i).copied().flatten();
    let units = (1..=3).filter_map(get);
    let first_unit = units.clone().map(|m| m.first).min();
    let last_unit = units.map(|m| m.last).max();
    // Link starts with the last unit done; without any unit, when the link line came.
    let link = last_unit.or(get(4).map(|m| m.first));
    let make = get(0).map(|m| m.first);
    // Phase starts in order; a start earlier than the previous one is out of order, so dropped.
    let mut starts: Vec<(usize, Duration)> = vec![(0, Duration::ZERO)];
    for (i, t) in [(1, make), (2, first_unit), (3, link)] {
        if let Some(t) = t.filter(|t| *t <= elapsed) {
            if t >= starts.last().map_or(Duration::ZERO, |s| s.1) {
                starts.push((i, t));
            }
        }
    }
    let mut out = [None; 4];
    for (k, (i, t)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(elapsed, |s| s.1);
        out[*i] = Some((end - *t).as_secs_f64());
    }
    Phases {
        startup: out[0],
        generate: out[1],
        compile: out[2],
        link: out[3],
        ..Default::default()
    }
}

/// Builds `request` (a validated, normalised keymap.json) in `job_dir`, under [`BUILD_KEYMAP`];
/// `keyboard_folder` is the folder QMK resolves the request's keyboard to (it names the
/// firmware file), `user_keymap` the name shown in the log instead of the build name.
///
/// Errors: [`runner::RunError::Spawn`] when the build command cannot start, I/O errors of the
/// work directory otherwise. A failing build is an `Ok` outcome with its status.
pub async fn build(
    cfg: &WorkerConfig,
    tree: &TreeInfo,
    qmk_server: &super::qmkserver::Slot,
    job_dir: &Path,
    request: &Value,
    keyboard_folder: &str,
    user_keymap: &str,
) -> Result<BuildOutcome, runner::RunError> {
    let prepare = std::time::Instant::now();
    let mut build_req = request.clone();
    if let Some(obj) = build_req.as_object_mut() {
        obj.insert("keymap".into(), Value::String(BUILD_KEYMAP.into()));
    }
    let build_json = job_dir.join("keymap.json");
    std::fs::write(
        &build_json,
        serde_json::to_vec(&build_req).map_err(|e| std::io::Error::other(e.to_string()))?,
    )?;

    // The overlay's root is ours, so QMK's default `.build` there is writable and survives
    // from job to job (warm object files). Overriding BUILD_DIR instead breaks QMK's JSON
    // keymap path (its generated rules.mk goes missing).
    let qmk_home = tree::overlay(&tree.home, &cfg.work_root.join("qmk_firmware"))?;
    let build_dir = qmk_home.join(".build");
    let target = tree::target_name(keyboard_folder, BUILD_KEYMAP);
    // Every job builds under the same name: an old firmware file must not pass for this one.
    for ext in tree::FIRMWARE_EXTENSIONS {
        let _ = std::fs::remove_file(qmk_home.join(format!("{target}.{ext}")));
        let _ = std::fs::remove_file(build_dir.join(format!("{target}.{ext}")));
    }
    let home_dir = job_dir.join("home");
    std::fs::create_dir_all(&build_dir)?;
    std::fs::create_dir_all(&home_dir)?;
    let mut args = vec![
        "compile".to_string(),
        // `-j N` as two arguments: qmk ignores the joined `-jN` form and builds serially.
        "-j".into(),
        cfg.jobs.to_string(),
        "-e".into(),
        "SKIP_GIT=yes".into(),
        // version.h would carry the build time: every build would recompile everything.
        "-e".into(),
        "SKIP_VERSION=yes".into(),
    ];
    let mut env = vec![
        ("PATH".to_string(), cfg.path.clone()),
        ("HOME".into(), home_dir.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("QMK_HOME".into(), qmk_home.display().to_string()),
        ("SKIP_GIT".into(), "yes".into()),
        ("TMPDIR".into(), job_dir.display().to_string()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
    ];
    if tree.ccache.used_for(keyboard_folder) {
        args.extend(["-e".into(), "USE_CCACHE=yes".into()]);
        let seed = tree.ccache.seed.as_ref();
        env.extend(ccache_env(
            &cfg.work_root,
            seed.map(|s| (s.dir.as_path(), s.write)),
        ));
    }
    // make's qmk commands, this `qmk compile` and the warm path's `json2c` through the fork
    // server when there is one (`qmkserver`), from the tree's root as make runs them.
    let mut qmk = cfg.qmk.clone();
    if let Some(wiring) = qmk_server.wiring(cfg, &qmk_home, &env).await {
        args.extend(wiring.make_args());
        env.extend(wiring.env);
        qmk = wiring.client;
    }
    // The firmware commit's date instead of 1970 or the clock (see `builddate`).
    let pin = builddate::prepare(cfg, &tree.commit, tree.build_date(), &qmk_home, &env).await?;
    args.extend(pin.args);
    env.extend(pin.env);
    // QMK's cc-option probe once per distinct flag instead of once per unit (see `ccoption`).
    args.extend(tree.cc_option.iter().cloned());
    args.push(build_json.display().to_string());
    if prime_warm_keymap(&qmk, &qmk_home, &build_dir, &target, &build_req, &env).await {
        tracing::info!("warm build: only the keymap is recompiled");
    }
    let prepare = prepare.elapsed();
    let spec = runner::BuildSpec {
        program: qmk,
        args,
        // The tree's root, as a developer runs `qmk compile` and as make runs qmk's commands.
        cwd: qmk_home.clone(),
        env,
        timeout: cfg.compile_timeout,
        log_cap: cfg.log_cap,
    };
    let out = runner::run_marked(&spec, &PHASE_MARKERS).await?;
    let phases = Phases {
        prepare: Some(prepare.as_secs_f64()),
        ..build_phases(&out.marks, out.elapsed)
    };
    let firmware = match out.status {
        runner::BuildStatus::Exited(0) => {
            match tree::find_firmware(&[&qmk_home, &build_dir, job_dir], &target) {
                Some(p) => Some(Firmware {
                    ext: p
                        .extension()
                        .and_then(|e| e.to_str())
                        .unwrap_or("bin")
                        .to_string(),
                    bytes: Bytes::from(std::fs::read(&p)?),
                }),
                None => None,
            }
        }
        _ => None,
    };
    let keymap_c =
        std::fs::read_to_string(build_dir.join(format!("obj_{target}/src/keymap.c"))).ok();
    Ok(BuildOutcome {
        keymap_c,
        status: out.status,
        // The user's keymap name inside the log, not the shared build name.
        log: super::ccoption::shorten_in_log(&out.log).replace(BUILD_KEYMAP, user_keymap),
        elapsed: out.elapsed,
        firmware,
        phases,
    })
}

/// The file of a seed that lists the keyboard folders it was made with, one per line
/// (`scripts/seed-ccache.sh` writes it).
pub const SEED_KEYBOARDS: &str = "oven-keyboards.txt";

/// Which builds use ccache: decided once per worker ([`TreeInfo::load`]) from the build PATH,
/// [`crate::config::CCACHE`] and the seed.
#[derive(Debug, Clone, Default)]
pub struct CcachePolicy {
    /// ccache is on the build PATH and not turned off (`OVEN_CCACHE=0`).
    pub available: bool,
    /// Every build uses it (`OVEN_CCACHE=1`).
    pub always: bool,
    pub seed: Option<CcacheSeed>,
}

/// The compiler cache seeded ahead of time (the compile image's, made by
/// `scripts/seed-ccache.sh`).
#[derive(Debug, Clone)]
pub struct CcacheSeed {
    /// [`crate::config::CCACHE_SEED`], when it names a directory.
    pub dir: PathBuf,
    /// Builds write to it ([`crate::config::CCACHE_SEED_WRITE`] = `1`, what the seeding does);
    /// otherwise they only read it.
    pub write: bool,
    /// The keyboard folders it was made with ([`SEED_KEYBOARDS`]), read when the worker
    /// starts: a read-only seed does not change under it.
    pub keyboards: std::collections::BTreeSet<String>,
}

impl CcacheSeed {
    /// The seed at `dir` (`None` unless a directory), with its keyboard list.
    pub fn open(dir: PathBuf, write: bool) -> Option<CcacheSeed> {
        if !dir.is_dir() {
            return None;
        }
        let keyboards = std::fs::read_to_string(dir.join(SEED_KEYBOARDS))
            .map(|t| {
                t.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(CcacheSeed {
            dir,
            write,
            keyboards,
        })
    }
}

impl CcachePolicy {
    /// The policy the environment sets, for a build PATH with (`on_path`) or without ccache.
    pub fn from_env(on_path: bool) -> CcachePolicy {
        let setting = std::env::var(crate::config::CCACHE).ok();
        let write = std::env::var(crate::config::CCACHE_SEED_WRITE).is_ok_and(|v| v == "1");
        CcachePolicy {
            available: on_path && setting.as_deref() != Some("0"),
            always: setting.as_deref() == Some("1"),
            seed: std::env::var_os(crate::config::CCACHE_SEED)
                .and_then(|d| CcacheSeed::open(PathBuf::from(d), write)),
        }
    }

    /// Whether a build of `keyboard_folder` uses ccache: when available, and `always`, while
    /// seeding, or when the seed lists the keyboard. Otherwise a build cannot hit (hits need
    /// the keyboard's own flags; make's own incremental build already serves a keyboard's next
    /// jobs) and every miss costs: measured (bench/first-build.md) a first build's compile at
    /// +5-12 % CPU and a warm job at +0.6 s.
    pub fn used_for(&self, keyboard_folder: &str) -> bool {
        self.available
            && (self.always
                || self
                    .seed
                    .as_ref()
                    .is_some_and(|s| s.write || s.keyboards.contains(keyboard_folder)))
    }
}

/// ccache's settings for a build under `work_root`: its own writable cache in
/// `work_root/ccache`, and `seed` (if any: its directory, and whether to write to it) as
/// ccache's second level ("secondary"/"remote" file storage, whose layout differs from a
/// cache directory's: a seed is made by builds writing to it as such), looked up on a miss.
///
/// Hits must survive the per-job directory and a different work root (the seed was made
/// elsewhere): every unit is compiled from the overlay's root with relative paths, the
/// `CCACHE_BASEDIR` rewrites whatever absolute path under the work root a command still holds,
/// and `CCACHE_NOHASHDIR` keeps the working directory out of the hash (it only matters for
/// debug information, which QMK does not build).
///
/// Depend mode (`CCACHE_DEPEND`): a miss runs the compiler once and takes the include files
/// from its `-MMD` output (QMK always passes it), where the default runs the preprocessor a
/// second time to hash its output. Measured on a first build of plx (bench/first-build.md):
/// +5 % CPU over no ccache instead of +14 %. What it gives up, hits between *different*
/// command lines with the same preprocessed text, never happens here: every unit of a QMK
/// build is compiled with its keyboard's `-D`/`-include` flags (0 of 61 units of
/// buildakb/mw60 hit a cache filled by dz60, the same MCU, in preprocessor mode).
pub fn ccache_env(work_root: &Path, seed: Option<(&Path, bool)>) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "CCACHE_DIR".to_string(),
            work_root.join("ccache").display().to_string(),
        ),
        ("CCACHE_NOHASHDIR".into(), "1".into()),
        ("CCACHE_BASEDIR".into(), work_root.display().to_string()),
        ("CCACHE_DEPEND".into(), "1".into()),
        // `__DATE__`/`__TIME__` come from the force-included date header (`builddate`), whose
        // contents are hashed: the clock need not defeat the cache.
        ("CCACHE_SLOPPINESS".into(), "time_macros".into()),
    ];
    if let Some((seed, writable)) = seed {
        // `secondary_storage` up to ccache 4.7, `remote_storage` from 4.8 on; each ignores the
        // other's name.
        let url = format!(
            "file:{}{}",
            seed.display(),
            if writable { "" } else { "|read-only" }
        );
        env.push(("CCACHE_SECONDARY_STORAGE".into(), url.clone()));
        env.push(("CCACHE_REMOTE_STORAGE".into(), url));
    }
    env
}

/// QMK's JSON path regenerates config.h and keymap.h whenever keymap.json is newer than
/// them, and then recompiles every unit. When a previous build of this keyboard (same build
/// name) differs only in `layers`, those headers are still right: generate keymap.c here
/// with the same `qmk json2c` make would run, and put the new keymap.json in place with an
/// older time stamp, so make recompiles the keymap alone. If anything does not fit, nothing
/// is changed and the normal (slower, equally correct) build runs. Returns whether it primed.
async fn prime_warm_keymap(
    qmk: &Path,
    qmk_home: &Path,
    build_dir: &Path,
    target: &str,
    build_req: &Value,
    env: &[(String, String)],
) -> bool {
    let src = build_dir.join(format!("obj_{target}")).join("src");
    let (prev_json, config_h, keymap_h) = (
        src.join("keymap.json"),
        src.join("config.h"),
        src.join("keymap.h"),
    );
    // What make's own rules run to generate these files from keymap.json.
    let generate = |command: &str, output: &str, input: &Path| runner::BuildSpec {
        program: qmk.to_path_buf(),
        args: vec![
            command.into(),
            "--quiet".into(),
            "--output".into(),
            src.join(output).display().to_string(),
            input.display().to_string(),
        ],
        cwd: qmk_home.to_path_buf(),
        env: env.to_vec(),
        timeout: Duration::from_secs(60),
        log_cap: 64 * 1024,
    };
    let Ok(prev) = std::fs::read(&prev_json) else {
        // First build of this keyboard: QMK's flags depend on whether the generated config.h
        // exists when make parses (`-include .../src/config.h`, build_keyboard.mk), so without
        // one now the *next* build would see new flags and recompile everything. An empty one,
        // older than any keymap.json, is enough: the CLI writes keymap.json after this, so make
        // regenerates config.h (and keymap.c, keymap.h) from it before compiling anything, as
        // every object depends on `generated-files`. (Generating the three files here instead
        // cost three extra qmk processes, about a second each.)
        let config_h = src.join("config.h");
        if !config_h.exists() && std::fs::create_dir_all(&src).is_ok() {
            let placed = std::fs::File::create(&config_h)
                .and_then(|f| f.set_modified(std::time::SystemTime::UNIX_EPOCH));
            if placed.is_err() {
                let _ = std::fs::remove_file(&config_h);
            }
        }
        return false;
    };
    let Ok(prev) = serde_json::from_slice::<Value>(&prev) else {
        return false;
    };
    let without_layers = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("layers");
        }
        v
    };
    if without_layers(&prev) != without_layers(build_req) {
        return false;
    }
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(c), Some(k)) = (mtime(&config_h), mtime(&keymap_h)) else {
        return false;
    };
    let Ok(new_json) = serde_json::to_vec(build_req) else {
        return false;
    };
    let staged = src.join("keymap.json.oven");
    if std::fs::write(&staged, &new_json).is_err() {
        return false;
    }
    match runner::run(&generate("json2c", "keymap.c", &staged)).await {
        Ok(out) if out.status == runner::BuildStatus::Exited(0) => {}
        _ => {
            let _ = std::fs::remove_file(&staged);
            return false;
        }
    }
    // keymap.json and keymap.c both older than the headers: make regenerates nothing (a
    // regenerated prerequisite of QMK's `generated-files` rebuilds every object). The
    // objects built from keymap.c are deleted instead, so exactly those are recompiled.
    let older = c.min(k) - Duration::from_secs(2);
    let set_old = |p: &Path| {
        std::fs::File::options()
            .write(true)
            .open(p)
            .and_then(|f| f.set_modified(older))
            .is_ok()
    };
    let placed = std::fs::rename(&staged, &prev_json).is_ok()
        && set_old(&prev_json)
        && set_old(&src.join("keymap.c"))
        && remove_objects_including(&build_dir.join(format!("obj_{target}")), "src/keymap.c");
    if !placed {
        // Fall back to a full generation: fresh time stamps make make redo everything.
        let _ = std::fs::remove_file(&prev_json);
        let _ = std::fs::remove_file(src.join("keymap.c"));
    }
    placed
}

/// Deletes every object under `obj` whose dependency file (`.d`) names `needle`; false if the
/// directory cannot be read.
fn remove_objects_including(obj: &Path, needle: &str) -> bool {
    let mut stack = vec![obj.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return false;
        };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "d")
                && std::fs::read_to_string(&p).is_ok_and(|t| t.contains(needle))
            {
                let _ = std::fs::remove_file(p.with_extension("o"));
            }
        }
    }
    true
}

/// A short class of a failed build, from its log (the strings QMK and gcc print).
pub fn classify_failure(log: &str, layout: &str) -> &'static str {
    let lower = log.to_ascii_lowercase();
    if lower.contains("invalid json keymap") || lower.contains("does not match qmk.keymap") {
        "schema_rejected"
    } else if lower.contains("invalid keyboard") || lower.contains("keyboard not found") {
        "unknown_keyboard"
    } else if lower.contains("firmware is too large")
        || (lower.contains("region `") && lower.contains("overflowed"))
    {
        "firmware_too_large"
    } else if !layout.is_empty()
        && (log.contains(&format!("function '{layout}'"))
            || log.contains(&format!("function ‘{layout}’"))
            || log.contains(&format!("‘{layout}’ undeclared"))
            || log.contains(&format!("'{layout}' undeclared")))
    {
        "unknown_layout"
    } else {
        "compile_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(first: f64, last: f64) -> Option<runner::Mark> {
        Some(runner::Mark {
            first: Duration::from_secs_f64(first),
            last: Duration::from_secs_f64(last),
        })
    }

    #[test]
    fn phases_split_the_build_at_its_markers_and_add_up() {
        // make starts at 1 s; units done from 3 s (an assembler one) to 8 s, an archive at
        // 8.5 s; linked at 9.5 s; end 10 s.
        let p = build_phases(
            &[
                m(1.0, 1.0),
                m(3.5, 7.0),
                m(3.0, 3.0),
                m(8.5, 8.5),
                m(9.5, 9.5),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(
            (p.startup, p.generate, p.compile, p.link),
            (Some(1.0), Some(2.0), Some(5.5), Some(1.5))
        );
        // A build that failed while compiling: no link line, but the last unit still ends
        // the compile phase.
        let p = build_phases(
            &[m(1.0, 1.0), m(3.0, 4.0), None, None, None],
            Duration::from_secs(5),
        );
        assert_eq!((p.compile, p.link), (Some(1.0), Some(1.0)));
        // Nothing recompiled (all objects current): make's work counts as generation.
        let p = build_phases(
            &[m(1.0, 1.0), None, None, None, m(2.5, 2.5)],
            Duration::from_secs(3),
        );
        assert_eq!(
            (p.generate, p.compile, p.link),
            (Some(1.5), None, Some(0.5))
        );
        // The CLI refused the keymap before make: all start-up.
        let p = build_phases(&[None; 5], Duration::from_secs(1));
        assert_eq!((p.startup, p.generate), (Some(1.0), None));
        let total: f64 = build_phases(
            &[m(0.7, 0.7), m(2.1, 6.0), None, None, m(8.3, 8.3)],
            Duration::from_secs(9),
        )
        .present()
        .iter()
        .map(|(_, v)| v)
        .sum();
        assert!((total - 9.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn ccache_is_used_where_it_can_hit() {
        let d = tempfile::tempdir().unwrap();
        let policy = |always, seed| CcachePolicy {
            available: true,
            always,
            seed,
        };
        let read_only = || CcacheSeed::open(d.path().to_path_buf(), false);
        assert!(!policy(false, None).used_for("dz60"), "no seed: no hits");
        assert!(policy(true, None).used_for("dz60"), "OVEN_CCACHE=1");
        let off = CcachePolicy {
            available: false,
            ..policy(true, None)
        };
        assert!(!off.used_for("dz60"), "not on PATH, or OVEN_CCACHE=0");
        assert!(
            !policy(false, read_only()).used_for("dz60"),
            "a seed without a list"
        );
        std::fs::write(d.path().join(SEED_KEYBOARDS), "planck/rev6\ndz60\n").unwrap();
        let listed = policy(false, read_only());
        assert!(listed.used_for("dz60"));
        assert!(listed.used_for("planck/rev6"));
        assert!(!listed.used_for("planck"), "another keyboard");
        let seeding = policy(false, CcacheSeed::open(d.path().to_path_buf(), true));
        assert!(seeding.used_for("x"), "seeding");
        assert!(CcacheSeed::open(d.path().join("absent"), false).is_none());
    }

    #[test]
    fn ccache_keeps_paths_out_of_the_hash_and_reads_a_seed() {
        let env = ccache_env(Path::new("/w"), None);
        let get = |env: &[(String, String)], k: &str| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(get(&env, "CCACHE_DIR").as_deref(), Some("/w/ccache"));
        assert_eq!(get(&env, "CCACHE_BASEDIR").as_deref(), Some("/w"));
        assert_eq!(get(&env, "CCACHE_NOHASHDIR").as_deref(), Some("1"));
        assert_eq!(get(&env, "CCACHE_DEPEND").as_deref(), Some("1"));
        assert_eq!(
            get(&env, "CCACHE_SLOPPINESS").as_deref(),
            Some("time_macros")
        );
        assert_eq!(get(&env, "CCACHE_SECONDARY_STORAGE"), None);
        let env = ccache_env(Path::new("/w"), Some((Path::new("/opt/seed"), false)));
        assert_eq!(
            get(&env, "CCACHE_REMOTE_STORAGE").as_deref(),
            Some("file:/opt/seed|read-only")
        );
        let env = ccache_env(Path::new("/w"), Some((Path::new("/opt/seed"), true)));
        assert_eq!(
            get(&env, "CCACHE_SECONDARY_STORAGE").as_deref(),
            Some("file:/opt/seed")
        );
    }
}
