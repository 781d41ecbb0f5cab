//! The date every firmware is stamped with: the firmware commit's time, never the clock, so two
//! builds of one request on one commit are byte-identical and the date changes with the firmware.
//!
//! QMK puts a date into firmware in two ways:
//! - `QMK_BUILDDATE` in the generated `version.h` (`qmk generate-version-h`, run by
//!   `builddefs/build_keyboard.mk` on every make: the wall clock, or `1970-01-01-00:00:00` with
//!   `SKIP_VERSION`). `quantum/via.c` derives VIA's EEPROM marker from its year, month and day,
//!   so a firmware with a new date resets stale VIA settings and one with the same date keeps
//!   them;
//! - the compiler's `__DATE__` and `__TIME__` (`quantum/command.c`, some keyboards).
//!
//! Oven keeps `SKIP_VERSION=yes` (a `version.h` that does not change from build to build, so
//! warm builds stay warm) and pins both to the commit's time:
//! - `SOURCE_DATE_EPOCH` in the build environment (GCC 7 and later take `__DATE__`/`__TIME__`
//!   from it);
//! - a header force-included in every unit that defines `__DATE__`/`__TIME__` for compilers
//!   that ignore `SOURCE_DATE_EPOCH` (Debian's avr-gcc 5.4), with
//!   `-Wno-builtin-macro-redefined`;
//! - a `version.h` in a directory first on the include path: the tree's own `qmk
//!   generate-version-h --skip-all` output with `QMK_BUILDDATE` replaced.
//!
//! The last two go through make's `EXTRAFLAGS`, QMK's documented hook for extra compiler flags
//! (`builddefs/common_rules.mk`: `ALL_CFLAGS = $(MCUFLAGS) $(CFLAGS) $(EXTRAFLAGS)`, before every
//! `-I` of the tree; nothing in the tree assigns it). The files live under the worker's own
//! scratch directory and are written only when their content changes; no part of a request
//! reaches them.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{runner, WorkerConfig};

/// A build date: seconds since the Unix epoch, shown in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildDate(i64);

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

impl BuildDate {
    /// The commit's time (`git log -1 --format=%ct`); negative times count as the epoch.
    pub fn from_epoch(secs: i64) -> Self {
        BuildDate(secs.max(0))
    }

    pub fn epoch(self) -> i64 {
        self.0
    }

    /// (day, month name, year, `HH:MM:SS`), from the RFC 1123 form `Sun, 19 Jul 2026 20:55:20 GMT`.
    fn parts(self) -> (u32, &'static str, String, String) {
        let t = UNIX_EPOCH + Duration::from_secs(self.0 as u64);
        let s = httpdate::fmt_http_date(t);
        let f: Vec<&str> = s.split(' ').collect();
        let day = f.get(1).and_then(|d| d.parse().ok()).unwrap_or(1);
        let month = MONTHS
            .iter()
            .find(|m| f.get(2) == Some(*m))
            .copied()
            .unwrap_or("Jan");
        let year = f.get(3).map_or("1970", |y| y).to_string();
        let time = f.get(4).map_or("00:00:00", |t| t).to_string();
        (day, month, year, time)
    }

    /// QMK's `QMK_BUILDDATE` form, `%Y-%m-%d-%H:%M:%S` (`2026-07-19-20:55:20`).
    pub fn qmk(self) -> String {
        let (day, month, year, time) = self.parts();
        let m = MONTHS.iter().position(|x| *x == month).unwrap_or(0) + 1;
        format!("{year}-{m:02}-{day:02}-{time}")
    }

    /// The compiler's `__DATE__` form, `Mmm dd yyyy` with a space-padded day (`Jul  9 2026`).
    pub fn c_date(self) -> String {
        let (day, month, year, _) = self.parts();
        format!("{month} {day:>2} {year}")
    }

    /// The compiler's `__TIME__` form, `HH:MM:SS`.
    pub fn c_time(self) -> String {
        self.parts().3
    }

    /// VIA's EEPROM marker for this date, as `quantum/via.c` computes it from `QMK_BUILDDATE`:
    /// the low nibbles of the year's last two digits, the month and the day, two per byte.
    pub fn via_marker(self) -> [u8; 3] {
        let p = self.qmk().into_bytes();
        let b = |i: usize| ((p[i] & 0x0F) << 4) | (p[i + 1] & 0x0F);
        [b(2), b(5), b(8)]
    }
}

/// What a build adds to pin its date: the `qmk compile` arguments and environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Pin {
    pub date: BuildDate,
    /// `-e EXTRAFLAGS=...` for `qmk compile`.
    pub args: Vec<String>,
    /// `SOURCE_DATE_EPOCH`.
    pub env: Vec<(String, String)>,
}

/// Characters a path may have to go into make's `EXTRAFLAGS` unquoted (make hands it to sh).
fn shell_safe(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-' | b'+'))
}

/// Writes `text` to `path` unless it already holds it (an unchanged mtime keeps objects warm).
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == text) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// `version.h` as the tree generates it, with `QMK_BUILDDATE` set to `date`. `None` if the
/// text has no such define (then nothing needs replacing and the tree's own file is used).
pub fn restamp_version_h(generated: &str, date: BuildDate) -> Option<String> {
    let mut found = false;
    let mut out: Vec<String> = Vec::new();
    for line in generated.lines() {
        if line.trim_start().starts_with("#define QMK_BUILDDATE ") {
            found = true;
            out.push(format!("#define QMK_BUILDDATE \"{}\"", date.qmk()));
        } else {
            out.push(line.to_string());
        }
    }
    found.then(|| out.join("\n") + "\n")
}

/// Prepares the date pin of `date` for builds in `qmk_home` (the writable overlay) with the
/// build environment `env`: `<cfg.work_root>/builddate/<commit>-<epoch>/` with `oven_date.h`
/// and, when the tree's `qmk generate-version-h` runs, `version.h`. Cheap once the files exist.
///
/// Errors: I/O errors of the scratch directory, or a scratch path with characters make would
/// split (`InvalidInput`; the work directory is the operator's, never a request's).
pub async fn prepare(
    cfg: &WorkerConfig,
    commit: &str,
    date: BuildDate,
    qmk_home: &Path,
    env: &[(String, String)],
) -> std::io::Result<Pin> {
    let safe_commit: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    let dir: PathBuf = cfg
        .work_root
        .join("builddate")
        .join(format!("{safe_commit}-{}", date.epoch()));
    let dir_s = dir.display().to_string();
    if !shell_safe(&dir_s) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("work directory {dir_s:?} has characters make cannot take in EXTRAFLAGS"),
        ));
    }
    std::fs::create_dir_all(&dir)?;
    write_if_changed(
        &dir.join("oven_date.h"),
        &format!(
            "/* Oven: the firmware commit's date, for compilers that ignore SOURCE_DATE_EPOCH. */\n\
             #pragma once\n#define __DATE__ \"{}\"\n#define __TIME__ \"{}\"\n",
            date.c_date(),
            date.c_time()
        ),
    )?;
    let version_h = dir.join("version.h");
    // Decided once per directory: a version.h appearing later would not rebuild the objects
    // whose dependency files name the tree's own.
    let none = dir.join("version.h.none");
    if !version_h.is_file() && !none.is_file() {
        let generated = dir.join("version.h.qmk");
        let spec = runner::BuildSpec {
            program: cfg.qmk.clone(),
            args: vec![
                "generate-version-h".into(),
                "--skip-all".into(),
                "-q".into(),
                "-o".into(),
                generated.display().to_string(),
            ],
            cwd: qmk_home.to_path_buf(),
            env: env.to_vec(),
            timeout: Duration::from_secs(60),
            log_cap: 64 * 1024,
        };
        let ran = runner::run(&spec).await;
        match std::fs::read_to_string(&generated)
            .ok()
            .and_then(|t| restamp_version_h(&t, date))
        {
            Some(text) => write_if_changed(&version_h, &text)?,
            None => {
                let log = ran.map(|o| o.log).unwrap_or_else(|e| e.to_string());
                tracing::warn!(
                    log,
                    "no version.h to restamp: QMK_BUILDDATE stays the tree's"
                );
                std::fs::write(&none, &log)?;
            }
        }
        let _ = std::fs::remove_file(&generated);
    }
    Ok(Pin {
        date,
        args: vec![
            "-e".into(),
            format!(
                "EXTRAFLAGS=-I{dir_s} -include {dir_s}/oven_date.h -Wno-builtin-macro-redefined"
            ),
        ],
        env: vec![("SOURCE_DATE_EPOCH".into(), date.epoch().to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_qmk_and_the_compiler() {
        // 95b9016a3b's committer date.
        let d = BuildDate::from_epoch(1_784_494_520);
        assert_eq!(d.qmk(), "2026-07-19-20:55:20");
        assert_eq!(d.c_date(), "Jul 19 2026");
        assert_eq!(d.c_time(), "20:55:20");
        assert_eq!(d.via_marker(), [0x26, 0x07, 0x19]);
        let early = BuildDate::from_epoch(1_700_000_000 - 13 * 86_400);
        assert_eq!(early.qmk(), "2023-11-01-22:13:20");
        assert_eq!(early.c_date(), "Nov  1 2023");
        assert_eq!(BuildDate::from_epoch(-5).qmk(), "1970-01-01-00:00:00");
    }

    #[test]
    fn only_the_build_date_line_is_replaced() {
        let qmk = "#pragma once\n\n#define QMK_VERSION \"NA\"\n\
                   #define QMK_BUILDDATE \"1970-01-01-00:00:00\"\n#define QMK_GIT_HASH  \"NA\"\n";
        let out = restamp_version_h(qmk, BuildDate::from_epoch(1_784_494_520)).unwrap();
        assert_eq!(
            out,
            "#pragma once\n\n#define QMK_VERSION \"NA\"\n\
             #define QMK_BUILDDATE \"2026-07-19-20:55:20\"\n#define QMK_GIT_HASH  \"NA\"\n"
        );
        assert_eq!(restamp_version_h("#pragma once\n", BuildDate(0)), None);
    }

    #[tokio::test]
    async fn without_a_version_h_generator_only_the_compiler_date_is_pinned() {
        let d = tempfile::tempdir().unwrap();
        let cfg = WorkerConfig {
            qmk: "/bin/false".into(),
            work_root: d.path().join("work"),
            ..WorkerConfig::from_env(Some(d.path()))
        };
        let date = BuildDate::from_epoch(1_784_494_520);
        let pin = prepare(&cfg, "abc", date, d.path(), &[]).await.unwrap();
        let dir = d.path().join("work/builddate/abc-1784494520");
        assert_eq!(
            pin.args,
            [
                "-e".to_string(),
                format!(
                    "EXTRAFLAGS=-I{0} -include {0}/oven_date.h -Wno-builtin-macro-redefined",
                    dir.display()
                )
            ]
        );
        assert_eq!(
            pin.env,
            [("SOURCE_DATE_EPOCH".to_string(), "1784494520".to_string())]
        );
        assert!(std::fs::read_to_string(dir.join("oven_date.h"))
            .unwrap()
            .contains("#define __DATE__ \"Jul 19 2026\""));
        assert!(!dir.join("version.h").exists());
        assert!(dir.join("version.h.none").exists(), "the decision sticks");
        // A second build changes nothing (warm objects stay warm).
        let t = std::fs::metadata(dir.join("oven_date.h"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            prepare(&cfg, "abc", date, d.path(), &[]).await.unwrap(),
            pin
        );
        let t2 = std::fs::metadata(dir.join("oven_date.h"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(t, t2);
    }

    #[test]
    fn paths_make_would_split_are_refused() {
        assert!(shell_safe("/tmp/oven/builddate/abc-1"));
        for bad in ["/tmp/a b", "/tmp/$(x)", "/tmp/'", "", "/tmp/a;b"] {
            assert!(!shell_safe(bad), "{bad}");
        }
    }
}
