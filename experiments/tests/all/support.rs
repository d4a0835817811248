//! Shared helpers: the `uppercut` binary, clang, and running a command under a time limit.
//!
//! # Finding `uppercut`
//!
//! Cargo gives a test the paths of its own package's binaries only (`CARGO_BIN_EXE_*`), and
//! `uppercut` belongs to `uppercut-osr`. So, once per test run (behind a `OnceLock`):
//!
//! 1. if `UPPERCUT_BIN` is set, that file is used as it is;
//! 2. otherwise the test runs `cargo build -p uppercut-osr --bin uppercut` (a no-op when it is
//!    up to date) with the same profile and target folder as the test itself, both read off
//!    the test executable's path (`<target>/<profile>/deps/all-HASH`), and uses
//!    `<target>/<profile>/uppercut`. Building every time, rather than only when the file is
//!    missing, keeps a stale `uppercut` from being tested after `core/` or `osr/` changed.
//!
//! Cargo is `$CARGO` (set by `cargo test`), else `cargo` on the `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use uppercut_experiments::Clang;
use uppercut_experiments::osr_stats::OsrCounts;

/// Environment variable naming an `uppercut` binary to use instead of building one.
pub(crate) const UPPERCUT_BIN_ENV: &str = "UPPERCUT_BIN";

/// The time limit of one guest run.
pub(crate) const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The `uppercut` binary (see the module docs).
pub(crate) fn uppercut() -> &'static Path {
    static UPPERCUT: OnceLock<PathBuf> = OnceLock::new();
    UPPERCUT.get_or_init(|| locate_uppercut().unwrap_or_else(|why| panic!("{why}")))
}

fn locate_uppercut() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(UPPERCUT_BIN_ENV) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not in <target>/<profile>/deps", exe.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("{} has no profile name", profile_dir.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(&cargo);
    command
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "uppercut-osr",
            "--bin",
            "uppercut",
        ])
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {cargo:?} to build uppercut: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`cargo build -p uppercut-osr --bin uppercut` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let path = profile_dir.join("uppercut");
    if !path.is_file() {
        return Err(format!(
            "built uppercut, but {} is not there",
            path.display()
        ));
    }
    Ok(path)
}

/// clang 19 (the test fails with the reason when there is none).
pub(crate) fn clang() -> &'static Clang {
    static CLANG: OnceLock<Clang> = OnceLock::new();
    CLANG.get_or_init(|| Clang::find().unwrap_or_else(|e| panic!("{e}")))
}

/// How a command ended and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `command` with empty stdin, capturing its output; kills it and panics after
/// [`RUN_TIMEOUT`].
pub(crate) fn run(mut command: Command) -> Outcome {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    let drain = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            from.read_to_end(&mut bytes)
                .expect("reading a child's output");
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped")));
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().expect("killing a child that timed out");
            child.wait().expect("reaping a killed child");
            panic!("{shown} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// One count of an `--osr-stats` line; panics if the line or the count is missing.
pub(crate) fn osr_stat(stderr: &str, name: &str) -> u64 {
    let stats =
        OsrCounts::parse(stderr).unwrap_or_else(|| panic!("no --osr-stats line in {stderr:?}"));
    stats
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` in the --osr-stats line {stats:?}"))
}

/// `stderr` without its `--osr-stats` line.
pub(crate) fn without_stats(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("uppercut: osr "))
        .map(|l| format!("{l}\n"))
        .collect()
}
