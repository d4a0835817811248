//! The crate's error type.

use std::fmt;
use std::path::PathBuf;

use crate::code_memory::CodeMemoryError;

/// Everything that can go wrong in the JIT engine.
///
/// Each variant carries the offending name, path or address, so that a command line can print
/// one line that says what is wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The guest file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest IR or bitcode did not parse.
    InvalidIr {
        /// Where the IR came from (a path or a buffer name).
        origin: String,
        /// LLVM's diagnostic.
        message: String,
    },
    /// The guest module (or a version built from it) failed LLVM's verifier.
    Verify {
        /// The module.
        module: String,
        /// LLVM's diagnostic.
        message: String,
    },
    /// The guest module defines no function of this name.
    NoSuchFunction(String),
    /// The guest module has no `main`.
    NoMain,
    /// `main` has a signature that cannot be called as `main(argc, argv, envp)`.
    BadMainSignature(String),
    /// An external declaration resolves to nothing: not a guest function, not a host binding,
    /// not a process symbol. Compiling it would leave a call to address 0.
    UnresolvedSymbol(String),
    /// A binding names an address of 0.
    NullBinding(String),
    /// The optimisation pipeline failed.
    Optimise {
        /// The pipeline text.
        pipeline: String,
        /// LLVM's diagnostic.
        message: String,
    },
    /// MCJIT could not compile or finalise a unit.
    Codegen {
        /// The unit.
        unit: String,
        /// The diagnostic.
        message: String,
    },
    /// Code memory could not be allocated, placed, protected or patched.
    CodeMemory(CodeMemoryError),
    /// The stackmap section that a compiled unit produced did not parse.
    StackMaps {
        /// The unit.
        unit: String,
        /// The parser's error.
        source: uppercut_stackmaps::Error,
    },
    /// A function's entry cannot be redirected to a new version.
    Relink {
        /// The function.
        function: String,
        /// Why.
        reason: String,
    },
    /// A unit cannot be retired ([`Engine::retire_unit`](crate::Engine::retire_unit)).
    Retire {
        /// The unit.
        unit: crate::UnitId,
        /// Why.
        reason: String,
    },
    /// A hypercall named a callback that nobody registered.
    UnknownCallback(String),
    /// A callback name is not valid (empty, or contains a NUL byte).
    InvalidCallbackName(String),
    /// A hypercall's handler panicked; the guest was stopped.
    CallbackPanicked {
        /// The callback's name.
        name: String,
        /// The panic message.
        message: String,
    },
    /// A hypercall's handler returned an error that stops the guest.
    CallbackFailed {
        /// The callback's name.
        name: String,
        /// The handler's message.
        message: String,
    },
    /// A plugin could not be loaded.
    Plugin {
        /// The library.
        path: PathBuf,
        /// `dlerror()`'s text.
        message: String,
    },
    /// A guest function was called with more arguments than the entry primitive passes.
    TooManyArguments(usize),
    /// A continuation was asked for at a site the function does not have.
    NoSuchSite {
        /// The function.
        function: String,
        /// The site.
        site: crate::types::SiteId,
        /// Why it cannot be found or used.
        reason: String,
    },
    /// The request needs OSR instrumentation, which the engine was created without, or a
    /// global that cannot be specialised on.
    Osr(String),
    /// A function compiled lazily, on its first call, could not be compiled: the guest was
    /// stopped at that call.
    LazyCompile {
        /// The function.
        function: String,
        /// Why.
        source: Box<Error>,
    },
    /// What [`EngineOptions::perf`](crate::EngineOptions::perf) asks for cannot be had.
    Profiler(String),
    /// The folder of [`EngineOptions::dump_code`](crate::EngineOptions::dump_code) cannot be
    /// made.
    DumpCode {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Error::InvalidIr { origin, message } => {
                write!(
                    f,
                    "invalid IR or bitcode in {origin}: {}",
                    one_line(message)
                )
            }
            Error::Verify { module, message } => {
                write!(f, "module {module} is not valid IR: {}", one_line(message))
            }
            Error::NoSuchFunction(name) => write!(f, "no function named `{name}` in the guest"),
            Error::NoMain => write!(f, "the guest defines no `main` function"),
            Error::BadMainSignature(sig) => write!(f, "`main` has an unsupported signature: {sig}"),
            Error::UnresolvedSymbol(name) => write!(
                f,
                "unresolved symbol `{name}`: not defined by the guest, not bound by the host, not found in the process"
            ),
            Error::NullBinding(name) => write!(f, "cannot bind `{name}` to address 0"),
            Error::Optimise { pipeline, message } => {
                write!(
                    f,
                    "optimisation pipeline `{pipeline}` failed: {}",
                    one_line(message)
                )
            }
            Error::Codegen { unit, message } => {
                write!(
                    f,
                    "code generation for {unit} failed: {}",
                    one_line(message)
                )
            }
            Error::CodeMemory(e) => write!(f, "code memory: {e}"),
            Error::StackMaps { unit, source } => write!(f, "stackmaps of {unit}: {source}"),
            Error::LazyCompile { function, source } => {
                write!(f, "compiling `{function}` on its first call: {source}")
            }
            Error::Profiler(why) => write!(f, "cannot show the guest to perf: {why}"),
            Error::DumpCode { path, source } => {
                write!(f, "cannot dump code into {}: {source}", path.display())
            }
            Error::Relink { function, reason } => write!(f, "cannot relink `{function}`: {reason}"),
            Error::Retire { unit, reason } => write!(f, "cannot retire {unit}: {reason}"),
            Error::UnknownCallback(name) => write!(f, "unknown callback `{name}`"),
            Error::InvalidCallbackName(name) => write!(f, "invalid callback name {name:?}"),
            Error::CallbackPanicked { name, message } => {
                write!(f, "callback `{name}` panicked: {}", one_line(message))
            }
            Error::CallbackFailed { name, message } => {
                write!(f, "callback `{name}` failed: {}", one_line(message))
            }
            Error::Plugin { path, message } => {
                write!(
                    f,
                    "cannot load plugin {}: {}",
                    path.display(),
                    one_line(message)
                )
            }
            Error::TooManyArguments(n) => {
                write!(f, "a guest call takes at most 6 integer arguments, got {n}")
            }
            Error::NoSuchSite {
                function,
                site,
                reason,
            } => write!(f, "no continuation of `{function}` at {site}: {reason}"),
            Error::Osr(message) => write!(f, "osr: {message}"),
        }
    }
}

/// LLVM diagnostics span lines; an error line must not.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. } | Error::DumpCode { source, .. } => Some(source),
            Error::CodeMemory(e) => Some(e),
            Error::StackMaps { source, .. } => Some(source),
            Error::LazyCompile { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<CodeMemoryError> for Error {
    fn from(e: CodeMemoryError) -> Self {
        Error::CodeMemory(e)
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
