//! `uppercut run`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Mutex;

use uppercut_core::{CompileMode, Engine, EngineOptions, Instrumentation, OptLevel, PerfMode};

use super::CliError;
use crate::log::{LogFormat, OsrLog};
use crate::policy::{Policies, Policy, Specialise, Stress, TierUp};
use crate::runtime::{ContinuationKind, Osr, OsrOptions, OsrStats, TransferMode};
use tracing_subscriber::layer::SubscriberExt;

/// `--osr=...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OsrMode {
    Off,
    Tier,
    Stress(u64),
}

/// `--osr-stats[=text|json]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatsFormat {
    Off,
    Text,
    Json,
}

/// What `uppercut run` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunArgs {
    pub(crate) opt_level: OptLevel,
    pub(crate) plugins: Vec<PathBuf>,
    pub(crate) osr: OsrMode,
    pub(crate) specialise: Vec<String>,
    pub(crate) osr_stats: StatsFormat,
    pub(crate) osr_log: Option<PathBuf>,
    pub(crate) osr_log_format: LogFormat,
    pub(crate) threshold: Option<i64>,
    pub(crate) transfer: TransferMode,
    pub(crate) background: bool,
    pub(crate) continuations: ContinuationKind,
    pub(crate) compile: CompileMode,
    pub(crate) perf: PerfMode,
    pub(crate) gdb: bool,
    pub(crate) dump_code: Option<PathBuf>,
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
    let mut osr_stats = StatsFormat::Off;
    let mut osr_log = None;
    let mut osr_log_format = LogFormat::JsonLines;
    let mut threshold = None;
    let mut transfer = TransferMode::Lazy;
    let mut background = false;
    let mut continuations = ContinuationKind::PerSite;
    let mut compile = CompileMode::Lazy;
    let mut perf = None;
    let mut gdb = true;
    let mut dump_code = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        match arg {
            "-O0" | "-O1" | "-O2" | "-O3" => opt_level = arg.parse().map_err(CliError)?,
            "--osr-stats" | "--osr-stats=text" => osr_stats = StatsFormat::Text,
            "--osr-stats=json" => osr_stats = StatsFormat::Json,
            _ if arg.starts_with("--osr-stats=") => {
                return Err(CliError(format!(
                    "unknown --osr-stats format `{}` (expected text or json)",
                    &arg["--osr-stats=".len()..]
                )));
            }
            _ if arg.starts_with("--osr-log=") => {
                let path = &arg["--osr-log=".len()..];
                if path.is_empty() {
                    return Err(CliError("--osr-log needs a file".to_owned()));
                }
                osr_log = Some(PathBuf::from(path));
            }
            _ if arg.starts_with("--osr-log-format=") => {
                osr_log_format = arg["--osr-log-format=".len()..]
                    .parse()
                    .map_err(|e| CliError(format!("--osr-log-format: {e}")))?;
            }
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
            _ if arg.starts_with("--perf=") => {
                perf = Some(
                    arg["--perf=".len()..]
                        .parse()
                        .map_err(|e| CliError(format!("--perf: {e}")))?,
                );
            }
            _ if arg.starts_with("--dump-code=") => {
                let dir = &arg["--dump-code=".len()..];
                if dir.is_empty() {
                    return Err(CliError("--dump-code needs a folder".to_owned()));
                }
                dump_code = Some(PathBuf::from(dir));
            }
            "--gdb=on" => gdb = true,
            "--gdb=off" => gdb = false,
            _ if arg.starts_with("--gdb=") => {
                return Err(CliError(format!(
                    "unknown --gdb setting `{}` (expected on or off)",
                    &arg["--gdb=".len()..]
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
    let perf = match perf {
        Some(mode) => mode,
        None => PerfMode::from_env().map_err(CliError)?,
    };
    Ok(RunArgs {
        opt_level,
        plugins,
        osr,
        specialise,
        osr_stats,
        osr_log,
        osr_log_format,
        threshold,
        transfer,
        background,
        continuations,
        compile,
        perf,
        gdb,
        dump_code,
        file: PathBuf::from(file),
        guest_args: args[i + 1..].to_vec(),
    })
}

pub(crate) fn main(args: &[String]) -> Result<ExitCode, CliError> {
    let run = parse(args)?;
    for plugin in &run.plugins {
        uppercut_core::load_plugin(plugin)?;
    }
    // The log starts first: it sees the guest's load and every compilation.
    let log = match &run.osr_log {
        Some(path) => {
            let log = OsrLog::create(path, run.osr_log_format).map_err(|e| {
                CliError(format!("--osr-log: cannot create {}: {e}", path.display()))
            })?;
            let subscriber = tracing_subscriber::registry().with(log.layer());
            tracing::subscriber::set_global_default(subscriber)
                .map_err(|e| CliError(format!("--osr-log: cannot install the log: {e}")))?;
            Some(log)
        }
        None => None,
    };
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
        perf: run.perf,
        debugger: run.gdb,
        dump_code: run.dump_code.clone(),
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
    if run.osr_stats != StatsFormat::Off || log.is_some() {
        *AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()) = Some(ExitReport {
            osr: osr.clone(),
            stats: run.osr_stats,
            log,
        });
        // SAFETY: registers a plain function; exit handlers run in reverse order, so this one
        // (registered before any guest code) runs after the guest's own. `quick_exit` runs only
        // the `at_quick_exit` list; whichever runs first reports.
        unsafe {
            libc::atexit(report_at_exit);
            at_quick_exit(report_at_exit);
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

/// What is reported when the guest exits: `--osr-stats` and the end of `--osr-log`.
struct ExitReport {
    /// `None`: OSR is off (every count is 0).
    osr: Option<Osr>,
    stats: StatsFormat,
    log: Option<OsrLog>,
}

static AT_EXIT: Mutex<Option<ExitReport>> = Mutex::new(None);

extern "C" fn report_at_exit() {
    let Some(report) = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let stats = report.osr.map(|o| o.stats()).unwrap_or_default();
    let json = stats_json(&stats);
    match report.stats {
        StatsFormat::Off => {}
        StatsFormat::Text => eprintln!(
            // New counts go at the end: scripts read the first ones by position.
            "uppercut: osr transitions={} frames={} recompiles={} caught_up={} background={} \
             max_stall_us={} patched={}",
            stats.transitions,
            stats.frames,
            stats.recompiles,
            stats.caught_up,
            stats.background,
            stats.max_stall.as_micros(),
            stats.patched
        ),
        StatsFormat::Json => eprintln!("uppercut: osr {}", serde_json::Value::Object(json.clone())),
    }
    if let Some(log) = report.log {
        log.write("stats", json);
        log.finish();
    }
}

/// Every count of `stats` as a JSON object.
fn stats_json(stats: &OsrStats) -> serde_json::Map<String, serde_json::Value> {
    let value = serde_json::json!({
        "transitions": stats.transitions,
        "frames": stats.frames,
        "patched": stats.patched,
        "refused": stats.refused,
        "recompiles": stats.recompiles,
        "sites": stats.sites,
        "background": stats.background,
        "caught_up": stats.caught_up,
        "max_stall_us": stats.max_stall.as_micros() as u64,
        "total_stall_us": stats.total_stall.as_micros() as u64,
    });
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a JSON object literal"),
    }
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
        assert_eq!(run.osr_stats, StatsFormat::Text);
        let run = parse(&strings(&[
            "--osr-stats=json",
            "--osr-log=log.json",
            "--osr-log-format=chrome",
            "--perf=map",
            "--gdb=off",
            "--dump-code=code",
            "x.ll",
        ]))
        .unwrap();
        assert_eq!(run.dump_code, Some(PathBuf::from("code")));
        assert_eq!(run.osr_stats, StatsFormat::Json);
        assert_eq!(run.osr_log, Some(PathBuf::from("log.json")));
        assert_eq!(run.osr_log_format, LogFormat::Chrome);
        assert_eq!(run.perf, PerfMode::Map);
        assert!(!run.gdb);
        for bad in [
            "--osr-stats=xml",
            "--osr-log=",
            "--osr-log-format=csv",
            "--perf=yes",
            "--gdb=maybe",
            "--dump-code=",
        ] {
            assert!(parse(&strings(&[bad, "x.ll"])).is_err(), "{bad}");
        }
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
