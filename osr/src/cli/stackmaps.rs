//! `uppercut stackmaps FILE.o`.

use std::process::ExitCode;

use super::CliError;

pub(crate) fn main(args: &[String]) -> Result<ExitCode, CliError> {
    let [file] = args else {
        return Err(CliError("usage: uppercut stackmaps FILE.o".to_owned()));
    };
    let bytes = std::fs::read(file).map_err(|e| CliError(format!("cannot read {file}: {e}")))?;
    let text = uppercut_stackmaps::dump_object_file(&bytes)
        .map_err(|e| CliError(format!("{file}: {e}")))?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
