//! A set of experiment results: one [`Report`] per experiment, read from a folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use uppercut_experiments::report::{Report, Row};

use crate::error::{Error, Result};

/// The experiments of the paper, in the order `reproduce` runs them: `(name, what it measures)`.
/// Experiment `NAME` is the binary `exp-NAME` and writes `results/NAME.json`.
pub const EXPERIMENTS: [(&str, &str); 8] = [
    ("kernels", "the kernel suite natively and under the JIT"),
    (
        "overhead",
        "never-firing OSR metadata, per site kind and metadata strategy",
    ),
    (
        "transfer",
        "transfer cost per frame, lazy vs eager, by live values and depth",
    ),
    ("compile", "time to transfer: IR work, codegen, linking"),
    ("tierup", "tier-up from O0 vs pure O0 and pure O2"),
    (
        "httpd",
        "the web server specialised on its configuration under load",
    ),
    (
        "deopt",
        "deoptimisation on redefinition, by recursion depth",
    ),
    (
        "startup",
        "lazy compilation's startup, version reuse and steady state",
    ),
];

/// The results of one run of the experiments.
#[derive(Debug, Clone, Default)]
pub struct Results {
    reports: BTreeMap<String, Report>,
    dir: PathBuf,
}

impl Results {
    /// Reads every experiment's results from `dir` (`dir/NAME.json`); an experiment without a
    /// file is an error.
    pub fn read(dir: &Path) -> Result<Results> {
        let mut reports = BTreeMap::new();
        for (name, _) in EXPERIMENTS {
            let path = Report::path_in(dir, name);
            if !path.is_file() {
                return Err(Error::MissingResults {
                    experiment: name.to_owned(),
                    path,
                });
            }
            reports.insert(name.to_owned(), Report::read(&path)?);
        }
        Ok(Results {
            reports,
            dir: dir.to_owned(),
        })
    }

    /// Results made of the given reports (for tests and partial renders).
    pub fn from_reports(reports: impl IntoIterator<Item = Report>) -> Results {
        Results {
            reports: reports
                .into_iter()
                .map(|r| (r.experiment.clone(), r))
                .collect(),
            dir: PathBuf::new(),
        }
    }

    /// The folder they were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The report of `experiment`; `item` names what needs it, for the error.
    pub fn report(&self, experiment: &str, item: &str) -> Result<&Report> {
        self.reports
            .get(experiment)
            .ok_or_else(|| Error::missing(item, format!("`{experiment}` experiment")))
    }

    /// Every report, by experiment name.
    pub fn reports(&self) -> impl Iterator<Item = &Report> {
        self.reports.values()
    }

    /// The one row of `experiment` matching `key`.
    pub fn row(&self, experiment: &str, key: &[(&str, &str)], item: &str) -> Result<&Row> {
        self.report(experiment, item)?
            .find(key)
            .ok_or_else(|| Error::missing(item, format!("`{experiment}` row {key:?}")))
    }

    /// Value `value` of the row of `experiment` matching `key`.
    pub fn value(
        &self,
        experiment: &str,
        key: &[(&str, &str)],
        value: &str,
        item: &str,
    ) -> Result<f64> {
        self.row(experiment, key, item)?
            .get(value)
            .ok_or_else(|| Error::missing(item, format!("`{value}` in `{experiment}` row {key:?}")))
    }
}
