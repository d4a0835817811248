//! The crate's error type.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use uppercut_core::OptLevel;

/// What clang was asked to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Textual LLVM IR (`-S -emit-llvm`).
    LlvmIr,
    /// A native executable.
    Executable,
    /// Nothing: a syntax and warnings check (`-fsyntax-only`).
    SyntaxCheck,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Output::LlvmIr => "LLVM IR",
            Output::Executable => "an executable",
            Output::SyntaxCheck => "a syntax check",
        })
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// No clang 19 was found: each command tried, with why it was passed over.
    ClangNotFound {
        /// `(command, reason)` for each candidate, in the order tried.
        tried: Vec<(String, String)>,
    },
    /// clang ran and rejected a source file.
    ClangFailed {
        /// The source's name (without `.c`).
        name: String,
        /// What was being built.
        output: Output,
        /// The optimisation level asked for.
        opt: OptLevel,
        /// clang's exit status.
        status: ExitStatus,
        /// What clang printed on stderr.
        stderr: String,
    },
    /// An operating-system operation failed.
    Io {
        /// What was being done, e.g. `connecting to 127.0.0.1:8080`.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// An HTTP response broke the protocol (bad status line, header or framing).
    MalformedResponse {
        /// What was wrong with it.
        reason: String,
    },
    /// A server process did not start as expected (it exited, or did not print
    /// `listening on PORT`).
    ServerStart {
        /// What happened instead, with whatever it printed on stderr.
        reason: String,
    },
    /// A child process did not finish in time (and was killed).
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long it was given.
        after: Duration,
    },
    /// A configuration that cannot run, e.g. a load with no connections.
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A results file that is not a report of this format.
    InvalidResults {
        /// What is wrong with it.
        reason: String,
    },
    /// A program the experiment needs (the `uppercut` binary) is not there.
    MissingProgram {
        /// Which, and how to get it.
        reason: String,
    },
    /// An experiment observed something that invalidates its measurement (a guest printed
    /// something else than natively, a request failed where none may).
    Measurement {
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`] with its context.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::MalformedResponse`].
    pub(crate) fn malformed(reason: impl Into<String>) -> Error {
        Error::MalformedResponse {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ClangNotFound { tried } => {
                f.write_str("no clang 19 found (set UPPERCUT_CLANG to one);")?;
                for (command, why) in tried {
                    write!(f, " `{command}`: {why};")?;
                }
                Ok(())
            }
            Error::ClangFailed {
                name,
                output,
                opt,
                status,
                stderr,
            } => write!(
                f,
                "clang -{opt} failed to compile `{name}.c` to {output} ({status}): {}",
                stderr.trim_end()
            ),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
            Error::MalformedResponse { reason } => write!(f, "malformed HTTP response: {reason}"),
            Error::ServerStart { reason } => write!(f, "server did not start: {reason}"),
            Error::Timeout { what, after } => {
                write!(
                    f,
                    "{what} did not finish within {:.1} s",
                    after.as_secs_f64()
                )
            }
            Error::InvalidConfig { reason } => write!(f, "invalid configuration: {reason}"),
            Error::InvalidResults { reason } => write!(f, "invalid results: {reason}"),
            Error::MissingProgram { reason } => f.write_str(reason),
            Error::Measurement { reason } => write!(f, "measurement failed: {reason}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
