//! The `uppercut` command line, as a library so that tests and embedders can drive it.
//!
//! ```text
//! uppercut run [-O0|-O1|-O2|-O3] [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
//! uppercut stackmaps FILE.o
//! ```
//!
//! Every failure of the tool itself (bad usage, unreadable or invalid input, a missing `main`,
//! an unresolved symbol, an unknown callback) is one line on stderr and exit status 2.

mod run;
mod stackmaps;

use std::process::ExitCode;

/// Usage text.
pub const USAGE: &str = "\
usage: uppercut run [-O0|-O1|-O2|-O3] [--load PLUGIN.so]... FILE.ll|FILE.bc [ARGS...]
       uppercut stackmaps FILE.o

run        runs main(argc, argv) of an LLVM IR or bitcode program under Uppercut's JIT and
           exits with its result, as lli does
stackmaps  prints the .llvm_stackmaps section of an object file as llvm-readobj --stackmap does";

/// A command-line failure: printed as `uppercut: <message>`, exit status 2.
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

impl From<uppercut_core::Error> for CliError {
    fn from(e: uppercut_core::Error) -> Self {
        CliError(e.to_string())
    }
}

/// Runs the command line with `args` (without the program name).
pub fn main(args: &[String]) -> Result<ExitCode, CliError> {
    match args.first().map(String::as_str) {
        Some("run") => run::main(&args[1..]),
        Some("stackmaps") => stackmaps::main(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(CliError(format!(
            "unknown command `{other}` (try `uppercut --help`)"
        ))),
        None => Err(CliError(
            "no command given (try `uppercut run FILE.ll` or `uppercut --help`)".to_owned(),
        )),
    }
}
