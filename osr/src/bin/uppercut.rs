//! The `uppercut` command line. See `uppercut --help`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match uppercut_osr::cli::main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("uppercut: {e}");
            ExitCode::from(2)
        }
    }
}
