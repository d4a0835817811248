//! `uppercut stackmaps FILE.o`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;

/// What `uppercut stackmaps` was asked to print.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub(crate) struct StackmapsArgs {
    /// The object file whose `.llvm_stackmaps` section is printed.
    #[arg(value_name = "FILE.o")]
    file: PathBuf,
}

pub(crate) fn main(args: StackmapsArgs) -> Result<ExitCode, CliError> {
    let file = args.file.display();
    let bytes =
        std::fs::read(&args.file).map_err(|e| CliError(format!("cannot read {file}: {e}")))?;
    let text = uppercut_stackmaps::dump_object_file(&bytes)
        .map_err(|e| CliError(format!("{file}: {e}")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
