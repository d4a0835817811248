//! `uppercut run`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Mutex;

use uppercut_core::{CompileMode, Engine, EngineOptions, Instrumentation, OptLevel};

use super::CliError;
use crate::policy::{Policies, Policy, Specialise, Stress, TierUp};
use crate::runtime::{ContinuationKind, Osr, OsrOptions, TransferMode};

/// `--osr=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OsrMode {
    Off,
    Tier,
    Stress(u64),
}

/// What `uppercut run` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunArgs {
    pub(crate) opt_level: OptLevel,
    pub(crate) plugins: Vec<PathBuf>,
    pub(crate) osr: OsrMode,
    pub(crate) specialise: Vec<String>,
    pub(crate) osr_stats: bool,
    pub(crate) threshold: Option<i64>,
    pub(crate) transfer: TransferMode,
    pub(crate) background: bool,
    pub(crate) continuations: ContinuationKind,
    pub(crate) compile: CompileMode,
    pub(crate) file: PathBuf,
    pub(crate) guest_args: Vec<String>,
}

fn parse_osr(value: &str) -> Result<OsrMode, CliError> {
    match value {
        "off" => Ok(OsrMode::Off),
        "tier" => Ok(OsrMode::Tier),
        _ => match value.strip_prefix("stress=") {
            Some(seed) => seed.parse().map(OsrMode::Stress).map_err(|_| {
                CliError(format!(
                    "--osr=stress needs a seed (a non-negative integer), got `{seed}`"
                ))
            }),
            None if value == "stress" => Err(CliError(
                "--osr=stress needs a seed: --osr=stress=SEED".to_owned(),
            )),
            None => Err(CliError(format!(
                "unknown --osr mode `{value}` (expected off, tier or stress=SEED)"
            ))),
        },
    }
}

pub(crate) fn parse(args: &[String]) -> Result<RunArgs, CliError> {
    let mut opt_level = OptLevel::O2;
    let mut plugins = Vec::new();
    let mut osr = OsrMode::Off;
    let mut specialise = Vec::new();
    let mut osr_stats = false;
    let mut threshold = None;
    let mut transfer = TransferMode::Lazy;
    let mut background = false;
    let mut continuations = ContinuationKind::PerSite;
    let mut compile = CompileMode::Lazy;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-O0" | "-O1" | "-O2" | "-O3" => opt_level = arg.parse().map_err(CliError)?,
            "--osr-stats" => osr_stats = true,
            _ if arg.starts_with("--osr=") => osr = parse_osr(&arg["--osr=".len()..])?,
            _ if arg.starts_with("--osr-specialize=") => {
                let global = &arg["--osr-specialize=".len()..];
                if global.is_empty() {
                    return Err(CliError(
                        "--osr-specialize needs a global's name".to_owned(),
                    ));
                }
                specialise.push(global.to_owned());
            }
            "--compile=lazy" => compile = CompileMode::Lazy,
            "--compile=eager" => compile = CompileMode::Eager,
            _ if arg.starts_with("--compile=") => {
                return Err(CliError(format!(
                    "unknown --compile mode `{}` (expected lazy or eager)",
                    &arg["--compile=".len()..]
                )));
            }
            "--osr-compile=sync" => background = false,
            "--osr-compile=background" => background = true,
            _ if arg.starts_with("--osr-compile=") => {
                return Err(CliError(format!(
                    "unknown --osr-compile mode `{}` (expected sync or background)",
                    &arg["--osr-compile=".len()..]
                )));
            }
            _ if arg.starts_with("--osr-continuations=") => {
                continuations = arg["--osr-continuations=".len()..]
                    .parse()
                    .map_err(|e| CliError(format!("--osr-continuations: {e}")))?;
            }
            _ if arg.starts_with("--osr-transfer=") => {
                transfer = arg["--osr-transfer=".len()..]
                    .parse()
                    .map_err(|e| CliError(format!("--osr-transfer: {e}")))?;
            }
            _ if arg.starts_with("--osr-threshold=") => {
                let value = &arg["--osr-threshold=".len()..];
                threshold = Some(value.parse::<i64>().ok().filter(|&n| n > 0).ok_or_else(
                    || {
                        CliError(format!(
                            "--osr-threshold needs a positive count, got `{value}`"
                        ))
                    },
                )?);
            }
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
        osr,
        specialise,
        osr_stats,
        threshold,
        transfer,
        background,
        continuations,
        compile,
        file: PathBuf::from(file),
        guest_args: args[i + 1..].to_vec(),
    })
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode, CliError> {
    let run = parse(args)?;
    for plugin in &run.plugins {
        uppercut_core::load_plugin(plugin)?;
    }
    let instrument = match run.osr {
        OsrMode::Off if run.specialise.is_empty() => None,
        OsrMode::Off => Some(Instrumentation {
            loop_sites: false,
            entry_sites: false,
            store_sites: run.specialise.clone(),
            initial_count: i64::MAX,
            shadow_discovery: false,
        }),
        OsrMode::Tier => Some(Instrumentation {
            loop_sites: true,
            entry_sites: false,
            store_sites: run.specialise.clone(),
            initial_count: run.threshold.unwrap_or(TIER_THRESHOLD),
            shadow_discovery: false,
        }),
        OsrMode::Stress(seed) => Some(Instrumentation {
            loop_sites: true,
            entry_sites: true,
            store_sites: run.specialise.clone(),
            initial_count: run.threshold.unwrap_or(1 + (seed % 4) as i64),
            shadow_discovery: false,
        }),
    };
    let options = EngineOptions {
        opt_level: run.opt_level,
        instrument,
        compile: run.compile,
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(&run.file, options)?;
    if !run.specialise.is_empty() {
        let osr = engine.osr().expect("instrumented above");
        for global in &run.specialise {
            match osr.global(global).map(|g| &g.specialisable) {
                Some(Ok(_)) => {}
                Some(Err(why)) => {
                    return Err(CliError(format!(
                        "--osr-specialize={global}: cannot specialise on it: {why}"
                    )));
                }
                None => {
                    return Err(CliError(format!(
                        "--osr-specialize={global}: the guest defines no such global variable"
                    )));
                }
            }
        }
    }
    let mut policies: Vec<Box<dyn Policy>> = Vec::new();
    if !run.specialise.is_empty() {
        policies.push(Box::new(Specialise::new(run.specialise.clone())));
    }
    match run.osr {
        OsrMode::Off => {}
        OsrMode::Tier => policies.push(Box::new(TierUp {
            background: run.background,
            ..TierUp::default()
        })),
        OsrMode::Stress(seed) => policies.push(Box::new(Stress::new(seed))),
    }
    let osr = if policies.is_empty() {
        None
    } else {
        let options = OsrOptions {
            continuations: run.continuations,
            transfer: run.transfer,
            scrub: true,
            ..OsrOptions::default()
        };
        Some(
            Osr::install_with(&engine, Policies(policies), options)
                .map_err(|e| CliError(e.to_string()))?,
        )
    };
    if run.osr_stats {
        *STATS.lock().unwrap_or_else(|e| e.into_inner()) = Some(osr.clone());
        // SAFETY: registers a plain function; exit handlers run in reverse order, so this one
        // (registered before any guest code) runs after the guest's own. `quick_exit` runs only
        // the `at_quick_exit` list; whichever runs first prints.
        unsafe {
            libc::atexit(print_stats);
            at_quick_exit(print_stats);
        }
    }
    let program = run.file.display().to_string();
    // The Rust runtime ignores SIGPIPE; a C program starts with the default (die on a closed
    // pipe), and may inspect or rely on it.
    // SAFETY: resetting one signal's disposition before any guest code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // On success this exits the process with main's result, after the guest's atexit handlers
    // and destructors, with its stdio flushed, as natively.
    Err(engine.exec_main(&program, &run.guest_args).into())
}

unsafe extern "C" {
    /// In glibc's `libc_nonshared.a`, like `atexit`.
    fn at_quick_exit(f: extern "C" fn()) -> libc::c_int;
}

/// Loop iterations before `--osr=tier` moves a loop to O2.
const TIER_THRESHOLD: i64 = 1000;

/// The OSR runtime whose counts `--osr-stats` prints at exit (`Some(None)`: OSR is off).
static STATS: Mutex<Option<Option<Osr>>> = Mutex::new(None);

extern "C" fn print_stats() {
    let osr = STATS.lock().unwrap_or_else(|e| e.into_inner()).take();
    let stats = osr.flatten().map(|o| o.stats()).unwrap_or_default();
    eprintln!(
        "uppercut: osr transitions={} frames={} recompiles={} caught_up={} background={} \
         max_stall_us={}",
        stats.transitions,
        stats.frames,
        stats.recompiles,
        stats.caught_up,
        stats.background,
        stats.max_stall.as_micros()
    );
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
    fn osr_options() {
        let run = parse(&strings(&[
            "--osr=stress=7",
            "--osr-specialize=config",
            "--osr-stats",
            "x.ll",
        ]))
        .unwrap();
        assert_eq!(run.osr, OsrMode::Stress(7));
        assert_eq!(run.specialise, strings(&["config"]));
        assert!(run.osr_stats);
        assert_eq!(
            parse(&strings(&["--osr=tier", "x.ll"])).unwrap().osr,
            OsrMode::Tier
        );
        assert_eq!(
            parse(&strings(&["--osr=off", "x.ll"])).unwrap().osr,
            OsrMode::Off
        );
    }

    #[test]
    fn bad_usage_is_an_error() {
        assert!(parse(&strings(&[])).is_err());
        assert!(parse(&strings(&["--load"])).is_err());
        assert!(parse(&strings(&["-O7", "x.ll"])).is_err());
        assert!(parse(&strings(&["--frobnicate", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr=fast", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr=stress", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr=stress=x", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr-specialize=", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr-threshold=0", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr-transfer=soon", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr-compile=later", "x.ll"])).is_err());
        assert!(parse(&strings(&["--osr-continuations=few", "x.ll"])).is_err());
        assert_eq!(
            parse(&strings(&["--osr-continuations=multi", "x.ll"]))
                .unwrap()
                .continuations,
            ContinuationKind::MultiEntry
        );
        assert!(
            parse(&strings(&["--osr-compile=background", "x.ll"]))
                .unwrap()
                .background
        );
        assert_eq!(
            parse(&strings(&["--osr-transfer=eager", "x.ll"]))
                .unwrap()
                .transfer,
            TransferMode::Eager
        );
        let run = parse(&strings(&["--", "-x.ll"])).unwrap();
        assert_eq!(run.file, PathBuf::from("-x.ll"));
    }
}
