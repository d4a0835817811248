//! Compiling C guest programs with clang 19: to textual LLVM IR for `uppercut run`, and to a
//! native executable to compare against.
//!
//! ```no_run
//! use uppercut_core::OptLevel;
//! use uppercut_experiments::{Clang, kernels};
//!
//! let clang = Clang::find()?;
//! let kernel = kernels::kernel("nbody").unwrap();
//! let ir = clang.compile_ir(kernel.name, kernel.source, OptLevel::O2)?;
//! let exe = clang.compile_native(kernel.name, kernel.source, OptLevel::O2)?;
//! // `uppercut run ir.path() ...` must print what `exe.path() ...` prints.
//! # Ok::<(), uppercut_experiments::Error>(())
//! ```
//!
//! Each artefact lives in a temporary folder of its own, removed when the [`Artifact`] is
//! dropped. The commands are those of Uppercut's differential tests:
//!
//! ```text
//! clang-19 -On -pthread -S -emit-llvm NAME.c -o NAME.ll
//! clang-19 -On -pthread NAME.c -o NAME -lm
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;
use uppercut_core::OptLevel;

use crate::error::{Error, Output, Result};

/// The environment variable that names the clang to use instead of probing `clang-19`, then
/// `clang`.
pub const CLANG_ENV: &str = "UPPERCUT_CLANG";

/// A clang 19 that runs.
#[derive(Debug, Clone)]
pub struct Clang {
    command: PathBuf,
    version: String,
}

/// A compiled file in a temporary folder of its own, deleted on drop.
#[derive(Debug)]
pub struct Artifact {
    dir: TempDir,
    path: PathBuf,
}

impl Artifact {
    /// The compiled file: `NAME.ll` or the executable `NAME`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder holding it (and the `NAME.c` it was compiled from).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Clang {
    /// `$UPPERCUT_CLANG` if set (and nothing else), else the first of `clang-19` and `clang`
    /// on the `PATH` that runs and reports version 19. [`Error::ClangNotFound`] says what was
    /// tried and why each was passed over.
    pub fn find() -> Result<Clang> {
        let candidates: Vec<PathBuf> = match std::env::var_os(CLANG_ENV) {
            Some(path) => vec![path.into()],
            None => vec!["clang-19".into(), "clang".into()],
        };
        let mut tried = Vec::new();
        for candidate in candidates {
            match Clang::at(&candidate) {
                Ok(clang) => return Ok(clang),
                Err(why) => tried.push((candidate.display().to_string(), why)),
            }
        }
        Err(Error::ClangNotFound { tried })
    }

    /// The clang run as `command`, if it runs and reports version 19; else why not.
    fn at(command: &Path) -> std::result::Result<Clang, String> {
        let out = Command::new(command)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("`--version` failed ({})", out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let version = stdout.lines().next().unwrap_or("").trim().to_owned();
        if !version.contains("clang version 19") {
            return Err(format!("reports `{version}`, not clang 19"));
        }
        Ok(Clang {
            command: command.to_owned(),
            version,
        })
    }

    /// The command that runs it.
    pub fn command(&self) -> &Path {
        &self.command
    }

    /// The first line of its `--version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Compiles C `source` to textual LLVM IR at `opt` (`NAME.ll`).
    pub fn compile_ir(&self, name: &str, source: &str, opt: OptLevel) -> Result<Artifact> {
        self.compile(name, source, opt, Output::LlvmIr)
    }

    /// Compiles and links C `source` (with libm and pthreads) into a native executable at
    /// `opt` (`NAME`).
    pub fn compile_native(&self, name: &str, source: &str, opt: OptLevel) -> Result<Artifact> {
        self.compile(name, source, opt, Output::Executable)
    }

    /// The warnings `-Wall -Wextra` finds in `source` (empty when it is clean); an error if
    /// clang rejects it.
    pub fn warnings(&self, name: &str, source: &str) -> Result<String> {
        let dir = scratch(name, source)?;
        let out = Command::new(&self.command)
            .args(["-Wall", "-Wextra", "-fsyntax-only"])
            .arg(dir.path().join(format!("{name}.c")))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::io(format!("running {}", self.command.display()), e))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(stderr)
        } else {
            Err(Error::ClangFailed {
                name: name.to_owned(),
                output: Output::SyntaxCheck,
                opt: OptLevel::O0,
                status: out.status,
                stderr,
            })
        }
    }

    fn compile(&self, name: &str, source: &str, opt: OptLevel, output: Output) -> Result<Artifact> {
        let dir = scratch(name, source)?;
        let path = match output {
            Output::LlvmIr => dir.path().join(format!("{name}.ll")),
            Output::Executable | Output::SyntaxCheck => dir.path().join(name),
        };
        let mut command = Command::new(&self.command);
        command
            .arg(format!("-O{}", opt.as_u8()))
            .arg("-pthread")
            .arg(dir.path().join(format!("{name}.c")))
            .arg("-o")
            .arg(&path)
            .stdin(Stdio::null());
        match output {
            Output::LlvmIr => command.args(["-S", "-emit-llvm"]),
            Output::Executable => command.arg("-lm"),
            Output::SyntaxCheck => command.arg("-fsyntax-only"),
        };
        let out = command
            .output()
            .map_err(|e| Error::io(format!("running {}", self.command.display()), e))?;
        if !out.status.success() {
            return Err(Error::ClangFailed {
                name: name.to_owned(),
                output,
                opt,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(Artifact { dir, path })
    }
}

/// A new temporary folder holding `NAME.c`.
fn scratch(name: &str, source: &str) -> Result<TempDir> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !plain {
        return Err(Error::InvalidConfig {
            reason: format!("`{name}` is not a plain file name (letters, digits, `_`, `-`)"),
        });
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("uppercut-{name}-"))
        .tempdir()
        .map_err(|e| Error::io("creating a temporary folder", e))?;
    let file = dir.path().join(format!("{name}.c"));
    std::fs::write(&file, source)
        .map_err(|e| Error::io(format!("writing {}", file.display()), e))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_plain() {
        assert!(matches!(
            scratch("../x", "int main(void) { return 0; }"),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(scratch("", ""), Err(Error::InvalidConfig { .. })));
        let dir = scratch("ok_name-1", "int x;").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ok_name-1.c")).unwrap(),
            "int x;"
        );
    }

    #[test]
    fn a_missing_command_is_passed_over_with_its_reason() {
        let why = Clang::at(Path::new("/nonexistent/clang-19")).unwrap_err();
        assert!(why.contains("No such file"), "{why}");
    }
}
