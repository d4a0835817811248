//! `uppercut run`.

use std::path::PathBuf;
use std::process::ExitCode;

use uppercut_core::{Engine, EngineOptions, OptLevel};

use super::CliError;

/// What `uppercut run` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunArgs {
    pub(crate) opt_level: OptLevel,
    pub(crate) plugins: Vec<PathBuf>,
    pub(crate) file: PathBuf,
    pub(crate) guest_args: Vec<String>,
}

pub(crate) fn parse(args: &[String]) -> Result<RunArgs, CliError> {
    let mut opt_level = OptLevel::O2;
    let mut plugins = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-O0" | "-O1" | "-O2" | "-O3" => opt_level = arg.parse().map_err(CliError)?,
            "--load" => {
                let path = args
                    .get(i + 1)
                    .ok_or_else(|| CliError("--load needs a shared library path".to_owned()))?;
                plugins.push(PathBuf::from(path));
                i += 1;
            }
            _ if arg.starts_with("--load=") => plugins.push(PathBuf::from(&arg["--load=".len()..])),
            "--" => {
                i += 1;
                break;
            }
            _ if arg.starts_with('-') && arg != "-" => {
                return Err(CliError(format!(
                    "unknown option `{arg}` for `uppercut run`"
                )));
            }
            _ => break,
        }
        i += 1;
    }
    let file = args
        .get(i)
        .ok_or_else(|| CliError("`uppercut run` needs a FILE.ll or FILE.bc".to_owned()))?;
    Ok(RunArgs {
        opt_level,
        plugins,
        file: PathBuf::from(file),
        guest_args: args[i + 1..].to_vec(),
    })
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode, CliError> {
    let run = parse(args)?;
    for plugin in &run.plugins {
        uppercut_core::load_plugin(plugin)?;
    }
    let options = EngineOptions {
        opt_level: run.opt_level,
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(&run.file, options)?;
    let program = run.file.display().to_string();
    // The Rust runtime ignores SIGPIPE; a C program starts with the default (die on a closed
    // pipe), and may inspect or rely on it.
    // SAFETY: resetting one signal's disposition before any guest code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // On success this exits the process with main's result, after the guest's atexit handlers
    // and destructors, with its stdio flushed, as natively.
    Err(engine.exec_main(&program, &run.guest_args).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_stop_at_the_file() {
        let run = parse(&strings(&["-O0", "--load", "p.so", "x.ll", "-O3", "a"])).unwrap();
        assert_eq!(run.opt_level, OptLevel::O0);
        assert_eq!(run.plugins, vec![PathBuf::from("p.so")]);
        assert_eq!(run.file, PathBuf::from("x.ll"));
        assert_eq!(run.guest_args, strings(&["-O3", "a"]));
    }

    #[test]
    fn bad_usage_is_an_error() {
        assert!(parse(&strings(&[])).is_err());
        assert!(parse(&strings(&["--load"])).is_err());
        assert!(parse(&strings(&["-O7", "x.ll"])).is_err());
        assert!(parse(&strings(&["--frobnicate", "x.ll"])).is_err());
        let run = parse(&strings(&["--", "-x.ll"])).unwrap();
        assert_eq!(run.file, PathBuf::from("-x.ll"));
    }
}
