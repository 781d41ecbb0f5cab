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
    pub ccache: bool,
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
    /// build PATH, ccache, the alias map).
    pub fn load(home: &Path, cfg: &WorkerConfig) -> TreeInfo {
        TreeInfo {
            home: home.to_path_buf(),
            commit: tree::firmware_commit(home),
            commit_time: tree::firmware_commit_time(home),
            toolchains: tree::toolchains(&cfg.path, &cfg.qmk),
            ccache: on_path(&cfg.path, "ccache"),
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
    job_dir: &Path,
    request: &Value,
    keyboard_folder: &str,
    user_keymap: &str,
) -> Result<BuildOutcome, runner::RunError> {
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
    if tree.ccache {
        args.extend(["-e".into(), "USE_CCACHE=yes".into()]);
        env.push((
            "CCACHE_DIR".into(),
            cfg.work_root.join("ccache").display().to_string(),
        ));
        // Jobs differ in paths only through the per-job directory; hash contents, not paths.
        env.push(("CCACHE_NOHASHDIR".into(), "1".into()));
        // __DATE__ and __TIME__ are pinned below: they need not defeat the cache.
        env.push(("CCACHE_SLOPPINESS".into(), "time_macros".into()));
    }
    // The firmware commit's date instead of 1970 or the clock (see `builddate`).
    let pin = builddate::prepare(cfg, &tree.commit, tree.build_date(), &qmk_home, &env).await?;
    args.extend(pin.args);
    env.extend(pin.env);
    args.push(build_json.display().to_string());
    if prime_warm_keymap(cfg, &qmk_home, &build_dir, &target, &build_req, &env).await {
        tracing::info!("warm build: only the keymap is recompiled");
    }
    let spec = runner::BuildSpec {
        program: cfg.qmk.clone(),
        args,
        cwd: job_dir.to_path_buf(),
        env,
        timeout: cfg.compile_timeout,
        log_cap: cfg.log_cap,
    };
    let out = runner::run(&spec).await?;
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
        log: out.log.replace(BUILD_KEYMAP, user_keymap),
        elapsed: out.elapsed,
        firmware,
    })
}

/// QMK's JSON path regenerates config.h and keymap.h whenever keymap.json is newer than
/// them, and then recompiles every unit. When a previous build of this keyboard (same build
/// name) differs only in `layers`, those headers are still right: generate keymap.c here
/// with the same `qmk json2c` make would run, and put the new keymap.json in place with an
/// older time stamp, so make recompiles the keymap alone. If anything does not fit, nothing
/// is changed and the normal (slower, equally correct) build runs. Returns whether it primed.
async fn prime_warm_keymap(
    cfg: &WorkerConfig,
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
        program: cfg.qmk.clone(),
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
        // First build of this keyboard: QMK's flags depend on whether the generated
        // config.h exists when make starts (`-include .../src/config.h`), so without it now
        // the *next* build would see new flags and recompile everything. Generating the
        // files up front keeps the flags stable from the first build on.
        let staged = src.join("first.json.oven");
        if std::fs::create_dir_all(&src).is_ok()
            && serde_json::to_vec(build_req)
                .ok()
                .is_some_and(|j| std::fs::write(&staged, j).is_ok())
        {
            for (command, output) in [
                ("generate-config-h", "config.h"),
                ("generate-keymap-h", "keymap.h"),
                ("json2c", "keymap.c"),
            ] {
                let _ = runner::run(&generate(command, output, &staged)).await;
            }
            let _ = std::fs::remove_file(&staged);
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
