//! Running the experiment binaries.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use uppercut_experiments::report::Report;

use crate::error::{Error, Result};

/// The experiment binaries: `exp-NAME` in `dir` (by default the folder of the running
/// `reproduce`, where cargo puts every binary of the workspace).
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries beside the running executable.
    pub fn beside_self() -> Result<Binaries> {
        let exe = std::env::current_exe().map_err(|e| Error::io("finding this executable", e))?;
        let dir = exe.parent().map(Path::to_owned).unwrap_or_default();
        Ok(Binaries { dir })
    }

    /// The binaries in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Binaries {
        Binaries { dir: dir.into() }
    }

    /// The path of `exp-NAME`, if it is there.
    pub fn experiment(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("exp-{name}"));
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingBinary { path })
        }
    }

    /// Runs experiment `name` (quick or full), writing its results into `results_dir`. Its
    /// progress bar goes to this process's stderr (drawn only when that is a terminal); its
    /// one-line summary is discarded.
    pub fn run(&self, name: &str, quick: bool, results_dir: &Path) -> Result<PathBuf> {
        let binary = self.experiment(name)?;
        let out = Report::path_in(results_dir, name);
        let mut command = Command::new(&binary);
        command.arg("--out").arg(&out);
        if quick {
            command.arg("--quick");
        }
        let status = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .map_err(|e| Error::ExperimentFailed {
                experiment: name.to_owned(),
                status: format!("could not start {}: {e}", binary.display()),
            })?;
        if !status.success() {
            return Err(Error::ExperimentFailed {
                experiment: name.to_owned(),
                status: format!("{status} (its message is above)"),
            });
        }
        Ok(out)
    }
}
