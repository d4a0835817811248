//! Finding the clang 19 that compiles guest programs: shared by the integration tests
//! (`tests/all/support.rs`) and the benchmarks (through `benches/common/mod.rs`), which include
//! this file.

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The environment variable that names the clang to use.
pub(crate) const CLANG_ENV: &str = "UPPERCUT_CLANG";

/// `$UPPERCUT_CLANG`, else `clang-19`, else LLVM 19's own folder: the first that runs and says
/// it is clang 19. `Err` lists what was tried.
pub(crate) fn find_clang() -> Result<PathBuf, Vec<PathBuf>> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = std::env::var_os(CLANG_ENV) {
        candidates.push(path.into());
    }
    candidates.push("clang-19".into());
    candidates.push("/usr/lib/llvm-19/bin/clang".into());
    for candidate in &candidates {
        let works = Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|out| {
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("clang version 19")
            });
        if works {
            return Ok(candidate.clone());
        }
    }
    Err(candidates)
}
