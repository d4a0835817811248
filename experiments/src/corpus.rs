//! The corpus of real programs (`experiments/corpus/`): SQLite's amalgamation and zstd's
//! library, each with a driver of ours, built by `experiments/corpus/build.sh` into LLVM
//! bitcode at `-O0` and `-O2` and a native `-O2` executable (see the corpus README).
//!
//! ```no_run
//! use uppercut_experiments::corpus;
//!
//! let dir = corpus::build(&["zstd"])?;
//! println!("{}", corpus::module(&dir, "zstd", "O2").display()); // target/corpus/zstd-O2.bc
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::harness;

/// The programs `build.sh` knows.
pub const PROGRAMS: [&str; 2] = ["sqlite", "zstd"];

/// The corpus folder: `<repo>/target/corpus`.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/corpus")
}

/// Builds `programs` (idempotent: `build.sh` skips what is up to date; the first build fetches
/// the sources from crates.io) and returns the corpus folder. A failed build is an error with
/// the last lines `build.sh` printed.
pub fn build(programs: &[&str]) -> Result<PathBuf> {
    let out = dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/build.sh");
    let timed = harness::run_timed(
        Command::new(&script).arg(&out).args(programs),
        Duration::from_secs(1800),
    )?;
    if !timed.status.success() {
        let tail: Vec<&str> = timed.stderr.lines().rev().take(5).collect();
        return Err(Error::Measurement {
            reason: format!(
                "{} failed ({}): {}",
                script.display(),
                timed.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            ),
        });
    }
    Ok(out)
}

/// The linked module of `program` at `opt` (`"O0"` or `"O2"`) in the corpus folder `dir`.
pub fn module(dir: &Path, program: &str, opt: &str) -> PathBuf {
    dir.join(format!("{program}-{opt}.bc"))
}

/// The native `-O2` executable of `program` (the reference output) in `dir`.
pub fn native(dir: &Path, program: &str) -> PathBuf {
    dir.join(format!("{program}-native"))
}
