//! QMK's `cc-option` probe, run once per distinct probe in a make process instead of once per
//! compiled unit.
//!
//! `builddefs/support.mk` defines `cc-option` as a `$(shell ...)` that compiles and links an
//! empty program with the flag under test and prints `$(1)` when that works, `$(2)` when not.
//! The tree calls it in recursively expanded variables (`platforms/avr/platform.mk`:
//! `COMPILEFLAGS`, three calls; `builddefs/common_rules.mk`: `CFLAGS`, two), which make expands
//! for every unit it compiles: about 5 compiler and linker runs per AVR unit (375 for `dz60`),
//! 2 per ARM unit.
//!
//! A probe's answer depends only on `$(CC)` and its three arguments, so the worker overrides
//! `cc-option` on make's command line (`qmk compile -e cc-option=...`; QMK appends `-e` values to
//! its make command as `VAR=value`, make's command-line variables beat makefile assignments and
//! reach sub-makes through `MAKEFLAGS`) with the same probe, memoised for the make process: the
//! first call with a given `$(CC)`, `$(1)`, `$(2)`, `$(3)` runs QMK's exact shell text and
//! stores its output with `$(eval)` in a variable named after those four values; later calls
//! return the stored text. Not one flag changes: the stored text is the probe's own output.
//!
//! The override is passed only when the tree's `support.mk` still defines `cc-option` as the
//! probe here ([`PROBE`]); a tree with another probe keeps its own.

use std::path::Path;

/// QMK's probe (`builddefs/support.mk`, the `cc-option` definition) as make reads it: its
/// backslash-newlines joined into single spaces.
pub const PROBE: &str = "$(shell if { echo 'int main(){return 0;}' | $(CC) $(1) $(3) \
     -Wl,--unresolved-symbols=ignore-all -o /dev/null -x c /dev/null >/dev/null 2>&1; }; \
     then echo \"$(1)\"; else echo \"$(2)\"; fi)";

/// The name of the variable a probe's output is stored in: `__oven_ccopt` followed by `$(CC)`,
/// `$(1)`, `$(2)`, `$(3)`, each with `~` escaped as `~t`, joined by `~1`, `~2`, `~3`, and then
/// the characters `$(eval)` would read as syntax (`$`, `:`, `=`, `#`, space) escaped as `~d`,
/// `~c`, `~e`, `~h`, `~s`. Distinct arguments give distinct names. Other whitespace (tab,
/// newline) stays and makes the name more than one word: such calls are not memoised.
fn key() -> String {
    let t = |arg: &str| format!("$(subst ~,~t,{arg})");
    let mut key = format!(
        "{}~1{}~2{}~3{}",
        t("$(CC)"),
        t("$(1)"),
        t("$(2)"),
        t("$(3)")
    );
    for (from, to) in [
        ("$$", "~d"),
        (":", "~c"),
        ("=", "~e"),
        ("#", "~h"),
        ("$() ", "~s"),
    ] {
        key = format!("$(subst {from},{to},{key})");
    }
    format!("__oven_ccopt{key}")
}

/// The memoised `cc-option`, one line of make text: a call whose key is more than one word runs
/// [`PROBE`] directly; otherwise the key's variable is defined on first use as `$()` + the
/// probe's output + `$()`, with `~`, `#` and `$` escaped as `~t`, `~h`, `~d` (`$(eval)` reads
/// `#` as a comment, `\#` differently after a backslash, and `$` as a reference), and every
/// call unescapes it: the output byte for byte, leading and trailing spaces included.
pub fn definition() -> String {
    let key = key();
    let k = "$(__oven_ccopt_k)";
    format!(
        "$(if $(word 2,{key}),{PROBE},$(foreach __oven_ccopt_k,{key},\
         $(if $(filter undefined,$(flavor {k})),\
         $(eval {k} = $$()$(subst $$,~d,$(subst #,~h,$(subst ~,~t,{PROBE})))$$()))\
         $(subst ~t,~,$(subst ~d,$$,$(subst ~h,#,$({k}))))))"
    )
}

/// What the log shows in place of [`definition`]: QMK's CLI prints make's command line
/// (`Compiling keymap with gmake ... cc-option=...`), where the definition's 900-odd
/// characters would bury the rest of the line.
pub const IN_LOG: &str = "cc-option=<QMK's probe, memoised by Oven>";

/// `log` with the override's text on make's command line shortened to [`IN_LOG`].
pub fn shorten_in_log(log: &str) -> String {
    log.replace(&format!("cc-option={}", definition()), IN_LOG)
}

/// The `cc-option` definition in a makefile's text, as make reads it: the value after
/// `cc-option =`, continuation lines joined with single spaces. `None` without one.
fn defined_in(makefile: &str) -> Option<String> {
    let mut lines = makefile.lines();
    let first = lines.find_map(|l| {
        let rest = l.strip_prefix("cc-option")?.trim_start();
        rest.strip_prefix('=')
    })?;
    let mut value = String::new();
    let mut line = first;
    loop {
        match line.strip_suffix('\\') {
            Some(head) => {
                value.push_str(head.trim());
                value.push(' ');
                line = lines.next().unwrap_or("");
            }
            None => {
                value.push_str(line.trim());
                return Some(value.trim().to_string());
            }
        }
    }
}

/// The `qmk compile` arguments that memoise `cc-option` in a build of the tree at `qmk_home`:
/// `["-e", "cc-option=<definition>"]`, or none when the tree's `builddefs/support.mk` is
/// unreadable or defines another probe than [`PROBE`].
pub fn qmk_args(qmk_home: &Path) -> Vec<String> {
    let support = std::fs::read_to_string(qmk_home.join("builddefs/support.mk")).ok();
    match support.as_deref().and_then(defined_in) {
        Some(probe) if probe == PROBE => {
            vec!["-e".into(), format!("cc-option={}", definition())]
        }
        _ => {
            tracing::debug!("cc-option not memoised: the tree defines another probe");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// QMK's three-line layout of the definition, rebuilt from [`PROBE`].
    fn support_mk(probe: &str) -> String {
        let body = probe
            .strip_prefix("$(shell ")
            .unwrap()
            .replace(" }; then", " }; \\\n\tthen");
        format!("# Helper\ncc-option = $(shell \\\n\t{body}\n\n, := ,\n")
    }

    #[test]
    fn the_log_shows_a_short_name_for_the_override() {
        let line = format!(
            "Compiling keymap with gmake -s KEYBOARD=k cc-option={} x.json",
            definition()
        );
        assert_eq!(
            shorten_in_log(&line),
            format!("Compiling keymap with gmake -s KEYBOARD=k {IN_LOG} x.json")
        );
    }

    #[test]
    fn the_definition_is_one_line_of_balanced_references() {
        let d = definition();
        assert!(!d.contains('\n'));
        let mut depth = 0i32;
        for c in d.chars() {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "a ) closes nothing in {d}");
        }
        assert_eq!(depth, 0);
        // The probe twice: the direct path and the memoised one.
        assert_eq!(d.matches(PROBE).count(), 2);
    }

    #[test]
    fn only_the_known_probe_is_overridden() {
        let d = tempfile::tempdir().unwrap();
        assert!(qmk_args(d.path()).is_empty(), "no support.mk");
        std::fs::create_dir(d.path().join("builddefs")).unwrap();
        let support = d.path().join("builddefs/support.mk");
        std::fs::write(&support, support_mk(PROBE)).unwrap();
        assert_eq!(
            defined_in(&std::fs::read_to_string(&support).unwrap()).as_deref(),
            Some(PROBE)
        );
        assert_eq!(
            qmk_args(d.path()),
            ["-e".to_string(), format!("cc-option={}", definition())]
        );
        let other = PROBE.replace("-o /dev/null", "-Werror -o /dev/null");
        std::fs::write(&support, support_mk(&other)).unwrap();
        assert!(
            qmk_args(d.path()).is_empty(),
            "another probe stays the tree's"
        );
    }

    /// Runs `make` in `dir` with `args`, returning stdout and the fake compiler's calls.
    fn make(dir: &Path, args: &[String]) -> (String, Vec<String>) {
        let log = dir.join("cc.log");
        let _ = std::fs::remove_file(&log);
        let out = Command::new("make")
            .args(["-s", "-r", "-R", "-f", "Makefile"])
            .arg(format!("CC={}", dir.join("cc").display()))
            .args(args)
            .current_dir(dir)
            .env("CCLOG", &log)
            .env_remove("MAKEFLAGS")
            .env_remove("MFLAGS")
            .env_remove("MAKELEVEL")
            .output()
            .expect("GNU make on PATH (the worker's builds need it too)");
        assert!(
            out.status.success(),
            "make {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        (
            String::from_utf8(out.stdout).unwrap(),
            calls.lines().map(str::to_string).collect(),
        )
    }

    #[test]
    fn make_runs_each_probe_once_and_gets_the_unmemoised_flags() {
        let d = tempfile::tempdir().unwrap();
        // A compiler that logs its arguments and refuses any flag starting with -bad.
        let cc = d.path().join("cc");
        std::fs::write(
            &cc,
            "#!/bin/sh\necho \"$*\" >> \"$CCLOG\"\n\
             for a in \"$@\"; do case \"$a\" in -bad*) exit 1;; esac; done\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Seven probes: plain, fallback, comma/=/:/~ and a third argument, `$` in a refused
        // flag, spaces around a flag, `$` and `#` in the output, and a tab (not memoised). A
        // recursive variable expanded by each of four recipes, as QMK's CFLAGS; `top` calls a
        // sub-make with variables on its command line, as QMK's Makefile does.
        let makefile = format!(
            "cc-option = {PROBE}\n, := ,\nMAKEFLAGS += --no-print-directory\n\
             FLAGS = $(call cc-option,-good1) $(call cc-option,-bad1,-fallback) \
             $(call cc-option,-good$(,)x=1:y~1,,-extra) $(call cc-option,-bad$$x,alt) \
             $(call cc-option,  -spaced ) $(call cc-option,-D\\$$x\\#h) \
             $(call cc-option,-goodtab\tx)\n\
             UNITS := u1 u2 u3 u4\nall: $(UNITS)\n$(UNITS):\n\t@echo '$@ [$(FLAGS)]'\n\
             top:\n\t@$(MAKE) -r -R -f Makefile all KEYBOARD=k KEYMAP=m\n"
        );
        std::fs::write(d.path().join("Makefile"), makefile).unwrap();
        let memo = format!("cc-option={}", definition());

        let (plain_out, plain_calls) = make(d.path(), &["all".into()]);
        assert_eq!(plain_calls.len(), 4 * 7, "{plain_calls:#?}");
        assert!(
            plain_out.contains(
                "u4 [-good1 -fallback -good,x=1:y~1 alt   -spaced  -D$x\\#h -goodtab\tx]\n"
            ),
            "{plain_out}"
        );
        let mut distinct = plain_calls.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 7);

        for target in ["all", "top"] {
            let (out, calls) = make(d.path(), &[target.into(), memo.clone()]);
            assert_eq!(out, plain_out, "make {target}: the same flags");
            // Six probes once each; the tab one in every unit.
            assert_eq!(calls.len(), 6 + 4, "make {target}: {calls:#?}");
            let mut seen = calls.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen, distinct, "make {target}: the same probes");
            // The shell split `-goodtab<TAB>x` into two arguments.
            let tab = calls
                .iter()
                .filter(|c| c.starts_with("-goodtab x "))
                .count();
            assert_eq!(tab, 4, "make {target}: {calls:#?}");
        }
    }
}
