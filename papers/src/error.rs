//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while reproducing the paper.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing results, or the experiments' own failure.
    Experiments(uppercut_experiments::Error),
    /// An experiment binary is not where `reproduce` looks for it.
    MissingBinary {
        /// The path looked at.
        path: PathBuf,
    },
    /// An experiment binary failed.
    ExperimentFailed {
        /// The experiment.
        experiment: String,
        /// Its exit status, or why it could not start.
        status: String,
    },
    /// The results of an experiment that the paper needs are not there.
    MissingResults {
        /// The experiment.
        experiment: String,
        /// Where they were looked for.
        path: PathBuf,
    },
    /// A table, figure or value asked for rows the results do not have.
    MissingData {
        /// The table, figure or value.
        item: String,
        /// What was missing.
        what: String,
    },
    /// A placeholder of the paper's template is malformed or names nothing.
    Template {
        /// The template's line (1-based).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A figure could not be drawn.
    Figure {
        /// The SVG file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bad command line.
    Usage(String),
    /// A file operation failed.
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn missing(item: &str, what: impl Into<String>) -> Error {
        Error::MissingData {
            item: item.to_owned(),
            what: what.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Experiments(e) => e.fmt(f),
            Error::MissingBinary { path } => write!(
                f,
                "no experiment binary {}: build them with `cargo build --release -p uppercut-osr \
                 -p uppercut-experiments --bins` (scripts/reproduce does)",
                path.display()
            ),
            Error::ExperimentFailed { experiment, status } => {
                write!(f, "experiment `{experiment}` failed: {status}")
            }
            Error::MissingResults { experiment, path } => write!(
                f,
                "no results of experiment `{experiment}` at {}",
                path.display()
            ),
            Error::MissingData { item, what } => write!(f, "`{item}`: the results have no {what}"),
            Error::Template { line, reason } => write!(f, "paper template, line {line}: {reason}"),
            Error::Figure { path, reason } => write!(f, "drawing {}: {reason}", path.display()),
            Error::Usage(s) => f.write_str(s),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Experiments(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<uppercut_experiments::Error> for Error {
    fn from(e: uppercut_experiments::Error) -> Error {
        Error::Experiments(e)
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
