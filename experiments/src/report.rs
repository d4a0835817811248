//! Machine-readable results: what every experiment binary writes.
//!
//! A [`Report`] is one experiment's run: the [`Environment`] it ran in (CPU, kernel, LLVM,
//! clang, rustc, the commit and whether the tree was dirty), its settings, and its
//! measurements as flat [`Row`]s. A row is a *key* (strings naming what was measured:
//! `kernel=nbody`, `config=tier`) and *values* (numbers, each name ending in its unit:
//! `median_ns`, `ratio`, `requests_per_s`). Every experiment uses the same shape, so the paper
//! generator and the check mode (`reproduce --check`) read them all with one parser.
//!
//! A report names the values that are comparable between two runs on the same machine
//! ([`Report::checked`]: ratios and instruction counts, not raw wall times) and the tolerance
//! within which they should agree ([`Report::tolerance`]).
//!
//! ```
//! use uppercut_experiments::report::{Report, Row};
//!
//! let mut report = Report::new("example", "An example", true);
//! report.setting("repetitions", 5);
//! report.push(Row::new().key("kernel", "nbody").value("ratio", 1.02));
//! report.check("ratio", 0.10);
//! let json = report.to_json();
//! let back = Report::from_json(&json).unwrap();
//! assert_eq!(back.rows[0].get("ratio"), Some(1.02));
//! assert_eq!(back.rows[0].key_of("kernel"), Some("nbody"));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The version of the report format; a reader refuses another.
pub const FORMAT: u32 = 1;

/// Where and with what an experiment ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// The CPU's model name (`/proc/cpuinfo`).
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cores: usize,
    /// `uname -sr` of the running kernel.
    pub kernel: String,
    /// The LLVM version Uppercut's JIT is linked against.
    pub llvm: String,
    /// The first line of `clang --version` of the clang that compiled the guests, if one ran.
    pub clang: String,
    /// `rustc --version` on the `PATH` (the compiler that built this binary, in a normal
    /// checkout).
    pub rustc: String,
    /// The git commit of the source tree (`git rev-parse HEAD`), or `unknown`.
    pub commit: String,
    /// Whether the tree had uncommitted changes to tracked files.
    pub dirty: bool,
    /// `release` or `debug`: how this binary was built.
    pub profile: String,
    /// Seconds since the Unix epoch when the report was made.
    pub unix_time: u64,
}

impl Environment {
    /// The environment of this process, read now. Nothing here fails: what cannot be read is
    /// `unknown`.
    pub fn current() -> Environment {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let git = |args: &[&str]| {
            command_line(
                "git",
                &[&["-C"], &[&*source.to_string_lossy()], args].concat(),
            )
        };
        let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
            .map(|s| !s.is_empty())
            .unwrap_or(false);
        Environment {
            cpu: cpu_model().unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: command_line("uname", &["-sr"]).unwrap_or_else(|| "unknown".into()),
            llvm: uppercut_core::llvm_version(),
            clang: String::new(),
            rustc: command_line("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
            commit,
            dirty,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// The trimmed stdout of a command that succeeded, else `None`.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One measurement: what was measured (the key) and the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// What was measured, e.g. `{"kernel": "nbody", "config": "tier"}`.
    pub key: BTreeMap<String, String>,
    /// The numbers, each name ending in its unit (`_ns`, `_ms`, `_bytes`, `ratio`, `count`).
    pub values: BTreeMap<String, f64>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Row {
        Row::default()
    }

    /// Adds a key component.
    pub fn key(mut self, name: &str, value: impl ToString) -> Row {
        self.key.insert(name.to_owned(), value.to_string());
        self
    }

    /// Adds a value.
    pub fn value(mut self, name: &str, value: f64) -> Row {
        self.values.insert(name.to_owned(), value);
        self
    }

    /// A value by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// A key component by name.
    pub fn key_of(&self, name: &str) -> Option<&str> {
        self.key.get(name).map(String::as_str)
    }

    /// Whether every `(name, value)` of `want` is in the key.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.key_of(k) == Some(v))
    }

    /// The key as `a=1,b=2` (sorted by name), for messages.
    pub fn key_text(&self) -> String {
        let parts: Vec<String> = self.key.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.join(",")
    }
}

/// A value that [`Report::check`] compares between runs, with its tolerance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checked {
    /// The value's name in the rows.
    pub value: String,
    /// The largest relative difference (0.10 = 10%) that is not flagged.
    pub tolerance: f64,
    /// Differences smaller than this in absolute terms are never flagged (a 0.3% overhead
    /// that becomes 0.6% has doubled, but has not moved).
    #[serde(default)]
    pub floor: f64,
}

/// One experiment's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The format version ([`FORMAT`]).
    pub format: u32,
    /// The experiment's short name, e.g. `overhead`; also the results file's stem.
    pub experiment: String,
    /// A one-line title.
    pub title: String,
    /// Whether this was the quick configuration.
    pub quick: bool,
    /// Where it ran.
    pub environment: Environment,
    /// Its settings (sizes, repetitions, thresholds), as JSON values.
    pub settings: BTreeMap<String, serde_json::Value>,
    /// The measurements.
    pub rows: Vec<Row>,
    /// The values that a check compares, with their tolerances.
    pub checked: Vec<Checked>,
    /// Observations the experiment made while running (one line each).
    pub notes: Vec<String>,
    /// Seconds the whole experiment took.
    pub seconds: f64,
}

impl Report {
    /// An empty report in the current [`Environment`].
    pub fn new(experiment: &str, title: &str, quick: bool) -> Report {
        Report {
            format: FORMAT,
            experiment: experiment.to_owned(),
            title: title.to_owned(),
            quick,
            environment: Environment::current(),
            settings: BTreeMap::new(),
            rows: Vec::new(),
            checked: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    /// Records a setting.
    pub fn setting(&mut self, name: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.settings.insert(name.to_owned(), value);
    }

    /// Adds a row.
    pub fn push(&mut self, row: Row) {
        self.rows.push(row);
    }

    /// Adds a note.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// Marks `value` as compared by a check, within `tolerance` (relative).
    pub fn check(&mut self, value: &str, tolerance: f64) {
        self.check_with_floor(value, tolerance, 0.0);
    }

    /// Marks `value` as compared by a check, within `tolerance` (relative), ignoring absolute
    /// differences below `floor`.
    pub fn check_with_floor(&mut self, value: &str, tolerance: f64, floor: f64) {
        self.checked.push(Checked {
            value: value.to_owned(),
            tolerance,
            floor,
        });
    }

    /// The rows whose key contains every `(name, value)` of `want`.
    pub fn select<'a>(&'a self, want: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = &'a Row> {
        self.rows.iter().filter(move |r| r.matches(want))
    }

    /// The first row whose key contains every `(name, value)` of `want`.
    pub fn find(&self, want: &[(&str, &str)]) -> Option<&Row> {
        self.rows.iter().find(|r| r.matches(want))
    }

    /// The one value `name` of the first row matching `want`.
    pub fn value(&self, want: &[(&str, &str)], name: &str) -> Option<f64> {
        self.select(want).find_map(|r| r.get(name))
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// Parses a report, refusing another [`FORMAT`].
    pub fn from_json(text: &str) -> Result<Report> {
        let report: Report = serde_json::from_str(text).map_err(|e| Error::InvalidResults {
            reason: e.to_string(),
        })?;
        if report.format != FORMAT {
            return Err(Error::InvalidResults {
                reason: format!("format {} (this build reads {FORMAT})", report.format),
            });
        }
        Ok(report)
    }

    /// Reads a report from a file.
    pub fn read(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Report::from_json(&text).map_err(|e| match e {
            Error::InvalidResults { reason } => Error::InvalidResults {
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        })
    }

    /// Writes the report to `path` (creating its folder).
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        std::fs::write(path, self.to_json() + "\n")
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    /// The default results file of an experiment in `dir`: `dir/<experiment>.json`.
    pub fn path_in(dir: &Path, experiment: &str) -> PathBuf {
        dir.join(format!("{experiment}.json"))
    }
}

/// A difference a check found between two runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Moved {
    /// The row's key, as `a=1,b=2`.
    pub key: String,
    /// The value's name.
    pub value: String,
    /// In the reference run.
    pub reference: f64,
    /// In the new run.
    pub now: f64,
    /// The tolerance it exceeded.
    pub tolerance: f64,
}

impl Moved {
    /// The relative difference from the reference.
    pub fn relative(&self) -> f64 {
        relative(self.reference, self.now)
    }
}

fn relative(reference: f64, now: f64) -> f64 {
    if reference == now {
        0.0
    } else {
        (now - reference).abs() / reference.abs().max(f64::MIN_POSITIVE)
    }
}

/// What a check of one report against a reference found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Values compared.
    pub compared: usize,
    /// Values beyond their tolerance.
    pub moved: Vec<Moved>,
    /// Keys of checked rows present in the reference and missing now.
    pub missing: Vec<String>,
}

/// Compares the checked values of `now` with those of `reference`, row by row (rows are matched
/// by key). The tolerances are the reference's.
pub fn compare(reference: &Report, now: &Report) -> Comparison {
    let mut result = Comparison::default();
    for checked in &reference.checked {
        for old in reference
            .rows
            .iter()
            .filter(|r| r.values.contains_key(&checked.value))
        {
            let Some(new) = now.rows.iter().find(|r| r.key == old.key) else {
                result.missing.push(old.key_text());
                continue;
            };
            let (Some(a), Some(b)) = (old.get(&checked.value), new.get(&checked.value)) else {
                result
                    .missing
                    .push(format!("{} {}", old.key_text(), checked.value));
                continue;
            };
            result.compared += 1;
            if relative(a, b) > checked.tolerance && (a - b).abs() > checked.floor {
                result.moved.push(Moved {
                    key: old.key_text(),
                    value: checked.value.clone(),
                    reference: a,
                    now: b,
                    tolerance: checked.tolerance,
                });
            }
        }
    }
    result.missing.sort();
    result.missing.dedup();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(ratio: f64) -> Report {
        let mut r = Report::new("t", "T", true);
        r.push(
            Row::new()
                .key("k", "a")
                .value("ratio", ratio)
                .value("ns", 5.0),
        );
        r.check_with_floor("ratio", 0.10, 0.01);
        r
    }

    #[test]
    fn compare_flags_only_checked_values_beyond_tolerance() {
        let reference = report(1.00);
        assert!(compare(&reference, &report(1.05)).moved.is_empty());
        let moved = compare(&reference, &report(1.20)).moved;
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].key, "k=a");
        assert!((moved[0].relative() - 0.2).abs() < 1e-9);
        let mut other = report(1.0);
        other.rows[0].values.insert("ns".into(), 500.0);
        assert_eq!(compare(&reference, &other).compared, 1);
        assert!(compare(&reference, &other).moved.is_empty());
    }

    #[test]
    fn compare_reports_missing_rows_and_honours_the_floor() {
        let reference = report(0.002);
        assert!(compare(&reference, &report(0.004)).moved.is_empty());
        let mut empty = report(1.0);
        empty.rows.clear();
        assert_eq!(compare(&reference, &empty).missing, ["k=a"]);
    }

    #[test]
    fn another_format_is_refused() {
        let mut r = report(1.0);
        r.format = FORMAT + 1;
        let err = Report::from_json(&r.to_json()).unwrap_err();
        assert!(err.to_string().contains("format"), "{err}");
        assert!(Report::from_json("{").is_err());
    }
}
