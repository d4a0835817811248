//! Drives the `uppercut` command line from Rust: runs an LLVM IR file as `uppercut run` does.
//!
//! `cargo run -p uppercut-osr --example run_program -- prog.ll [ARGS...]`

fn main() -> std::process::ExitCode {
    let mut args = vec!["run".to_owned()];
    args.extend(std::env::args().skip(1));
    match uppercut_osr::cli::main(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("uppercut: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
