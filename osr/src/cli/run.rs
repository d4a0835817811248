//! `uppercut run`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Mutex;

use clap::ArgAction;

use uppercut_core::{
    CompileMode, Engine, EngineOptions, Instrumentation, OptLevel, PerfMode, Readiness,
};

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
    Text,
    Json,
}

/// What `uppercut run` was asked to do. Every option takes its value after `=`, but for `-O`
/// (lli's `-O2`) and `--load` (`--load PLUGIN.so` or `--load=PLUGIN.so`); the first argument
/// that is not an option is the program, and everything after it is the guest's, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub(crate) struct RunArgs {
    /// `-O0`..`-O3`: the level of the first compilation.
    #[arg(short = 'O', value_name = "N", default_value = "2", value_parser = opt_level)]
    pub(crate) opt_level: OptLevel,
    /// `--load PLUGIN.so`, repeatable: shared libraries that register callbacks.
    #[arg(long = "load", value_name = "PLUGIN.so", allow_hyphen_values = true)]
    pub(crate) plugins: Vec<PathBuf>,
    /// `--osr=off|tier|stress=SEED`.
    #[arg(
        long,
        value_name = "MODE",
        require_equals = true,
        default_value = "off",
        value_parser = osr_mode
    )]
    pub(crate) osr: OsrMode,
    /// `--osr-specialize=GLOBAL`, repeatable.
    #[arg(
        long = "osr-specialize",
        value_name = "GLOBAL",
        require_equals = true,
        value_parser = non_empty::<String>("--osr-specialize needs a global's name")
    )]
    pub(crate) specialise: Vec<String>,
    /// `--osr-stats[=text|json]`: `None` prints no statistics.
    #[arg(
        long,
        value_name = "FORMAT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "text",
        value_parser = stats_format
    )]
    pub(crate) osr_stats: Option<StatsFormat>,
    /// `--osr-log=FILE`.
    #[arg(
        long,
        value_name = "FILE",
        require_equals = true,
        value_parser = non_empty::<PathBuf>("--osr-log needs a file")
    )]
    pub(crate) osr_log: Option<PathBuf>,
    /// `--osr-log-format=json|chrome`.
    #[arg(
        long,
        value_name = "FORMAT",
        require_equals = true,
        default_value = "json",
        value_parser = prefixed::<LogFormat>("--osr-log-format")
    )]
    pub(crate) osr_log_format: LogFormat,
    /// `--osr-threshold=N`: passes of a loop header before its site fires.
    #[arg(
        long = "osr-threshold",
        value_name = "N",
        require_equals = true,
        value_parser = threshold
    )]
    pub(crate) threshold: Option<i64>,
    /// `--osr-transfer=lazy|eager`.
    #[arg(
        long = "osr-transfer",
        value_name = "MODE",
        require_equals = true,
        default_value = "lazy",
        value_parser = prefixed::<TransferMode>("--osr-transfer")
    )]
    pub(crate) transfer: TransferMode,
    /// `--osr-compile=sync|background`: whether OSR compiles in the background.
    #[arg(
        long = "osr-compile",
        value_name = "MODE",
        require_equals = true,
        default_value = "background",
        action = ArgAction::Set,
        value_parser = background
    )]
    pub(crate) background: bool,
    /// `--osr-tiered=final|sites`: what tiered-up code keeps of its sites.
    #[arg(
        long = "osr-tiered",
        value_name = "CODE",
        require_equals = true,
        default_value = "final",
        value_parser = tiered
    )]
    pub(crate) tiered: Readiness,
    /// `--osr-continuations=per-site|multi`.
    #[arg(
        long = "osr-continuations",
        value_name = "KIND",
        require_equals = true,
        default_value = "per-site",
        value_parser = prefixed::<ContinuationKind>("--osr-continuations")
    )]
    pub(crate) continuations: ContinuationKind,
    /// `--compile=lazy|eager`.
    #[arg(
        long,
        value_name = "MODE",
        require_equals = true,
        default_value = "lazy",
        value_parser = compile_mode
    )]
    pub(crate) compile: CompileMode,
    /// `--perf=off|map|jitdump`; `None`: `$UPPERCUT_PERF` decides ([`RunArgs::perf`]).
    #[arg(
        long = "perf",
        value_name = "MODE",
        require_equals = true,
        value_parser = prefixed::<PerfMode>("--perf")
    )]
    pub(crate) perf_option: Option<PerfMode>,
    /// `--gdb=on|off`: whether units are registered with GDB's JIT interface.
    #[arg(
        long,
        value_name = "on|off",
        require_equals = true,
        default_value = "on",
        action = ArgAction::Set,
        value_parser = on_off
    )]
    pub(crate) gdb: bool,
    /// `--dump-code=DIR`.
    #[arg(
        long,
        value_name = "DIR",
        require_equals = true,
        value_parser = non_empty::<PathBuf>("--dump-code needs a folder")
    )]
    pub(crate) dump_code: Option<PathBuf>,
    /// The program and its arguments. One argument list, not two, so that from the program on
    /// nothing is read as an option, not even `--`.
    #[arg(
        value_name = "FILE.ll|FILE.bc [ARGS...]",
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    program: Vec<String>,
}

impl RunArgs {
    /// The program's file.
    pub(crate) fn file(&self) -> &Path {
        Path::new(&self.program[0])
    }

    /// The guest's arguments (after its own name).
    pub(crate) fn guest_args(&self) -> &[String] {
        &self.program[1..]
    }

    /// `--perf`, else `$UPPERCUT_PERF`, else off.
    pub(crate) fn perf(&self) -> Result<PerfMode, CliError> {
        match self.perf_option {
            Some(mode) => Ok(mode),
            None => PerfMode::from_env().map_err(CliError),
        }
    }
}

/// `-O`'s value: `2` in `-O2`.
fn opt_level(value: &str) -> Result<OptLevel, String> {
    value
        .parse()
        .ok()
        .and_then(OptLevel::from_u8)
        .ok_or_else(|| {
            format!("unknown optimisation level `-O{value}` (expected -O0, -O1, -O2 or -O3)")
        })
}

fn osr_mode(value: &str) -> Result<OsrMode, String> {
    match value {
        "off" => Ok(OsrMode::Off),
        "tier" => Ok(OsrMode::Tier),
        "stress" => Err("--osr=stress needs a seed: --osr=stress=SEED".to_owned()),
        _ => match value.strip_prefix("stress=") {
            Some(seed) => seed.parse().map(OsrMode::Stress).map_err(|_| {
                format!("--osr=stress needs a seed (a non-negative integer), got `{seed}`")
            }),
            None => Err(format!(
                "unknown --osr mode `{value}` (expected off, tier or stress=SEED)"
            )),
        },
    }
}

fn stats_format(value: &str) -> Result<StatsFormat, String> {
    match value {
        "text" => Ok(StatsFormat::Text),
        "json" => Ok(StatsFormat::Json),
        _ => Err(format!(
            "unknown --osr-stats format `{value}` (expected text or json)"
        )),
    }
}

fn threshold(value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("--osr-threshold needs a positive count, got `{value}`"))
}

fn tiered(value: &str) -> Result<Readiness, String> {
    match value {
        "final" => Ok(Readiness::Final),
        "sites" => Ok(Readiness::Sites),
        _ => Err(format!(
            "unknown --osr-tiered code `{value}` (expected final or sites)"
        )),
    }
}

fn background(value: &str) -> Result<bool, String> {
    match value {
        "sync" => Ok(false),
        "background" => Ok(true),
        _ => Err(format!(
            "unknown --osr-compile mode `{value}` (expected sync or background)"
        )),
    }
}

fn compile_mode(value: &str) -> Result<CompileMode, String> {
    match value {
        "lazy" => Ok(CompileMode::Lazy),
        "eager" => Ok(CompileMode::Eager),
        _ => Err(format!(
            "unknown --compile mode `{value}` (expected lazy or eager)"
        )),
    }
}

fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!(
            "unknown --gdb setting `{value}` (expected on or off)"
        )),
    }
}

/// A value parser through `T`'s `FromStr`, whose errors are prefixed with `option`.
fn prefixed<T: FromStr<Err = String>>(
    option: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |value| value.parse().map_err(|e| format!("{option}: {e}"))
}

/// A value parser that refuses an empty value with `error`.
fn non_empty<T: for<'a> From<&'a str>>(
    error: &'static str,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |value| {
        if value.is_empty() {
            Err(error.to_owned())
        } else {
            Ok(T::from(value))
        }
    }
}

/// Reads `uppercut run`'s arguments (those after `run`).
#[cfg(test)]
pub(crate) fn parse(args: &[String]) -> Result<RunArgs, CliError> {
    let args: Vec<String> = std::iter::once("run".to_owned())
        .chain(args.iter().cloned())
        .collect();
    match super::parse(&args) {
        Ok(super::Cli {
            command: super::Command::Run(run),
        }) => Ok(run),
        Ok(other) => panic!("not `run`: {other:?}"),
        Err(e) => Err(super::one_line(&e, &args)),
    }
}

pub(crate) fn main(run: RunArgs) -> Result<ExitCode, CliError> {
    let perf = run.perf()?;
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
            ..Instrumentation::default()
        }),
        OsrMode::Tier => Some(Instrumentation {
            loop_sites: true,
            entry_sites: true,
            store_sites: run.specialise.clone(),
            initial_count: run.threshold.unwrap_or(TIER_THRESHOLD),
            scale_counts_by_size: true,
            ..Instrumentation::default()
        }),
        OsrMode::Stress(seed) => Some(Instrumentation {
            loop_sites: true,
            entry_sites: true,
            store_sites: run.specialise.clone(),
            initial_count: run.threshold.unwrap_or(1 + (seed % 4) as i64),
            ..Instrumentation::default()
        }),
    };
    // Tier-up's optimised code keeps no sites unless asked to: values in registers would only
    // slow down its first tier's compilation.
    if run.osr == OsrMode::Tier && run.tiered == Readiness::Final && run.specialise.is_empty() {
        uppercut_core::prefer_deopt_values_in_registers(false);
    }
    let options = EngineOptions {
        opt_level: run.opt_level,
        instrument,
        compile: run.compile,
        perf,
        debugger: run.gdb,
        dump_code: run.dump_code.clone(),
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(run.file(), options)?;
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
        OsrMode::Tier => {
            let mut tier = TierUp::default();
            tier.background = run.background;
            tier.readiness = run.tiered;
            policies.push(Box::new(tier));
        }
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
    if run.osr_stats.is_some() || log.is_some() {
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
    let program = run.file().display().to_string();
    // The Rust runtime ignores SIGPIPE; a C program starts with the default (die on a closed
    // pipe), and may inspect or rely on it.
    // SAFETY: resetting one signal's disposition before any guest code runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    // On success this exits the process with main's result, after the guest's atexit handlers
    // and destructors, with its stdio flushed, as natively.
    Err(engine.exec_main(&program, run.guest_args()).into())
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
    /// `None`: `--osr-stats` was not given.
    stats: Option<StatsFormat>,
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
        None => {}
        Some(StatsFormat::Text) => eprintln!(
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
        Some(StatsFormat::Json) => {
            eprintln!("uppercut: osr {}", serde_json::Value::Object(json.clone()))
        }
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
        "storms": stats.storms,
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
        assert_eq!(run.file(), Path::new("x.ll"));
        assert_eq!(run.guest_args(), strings(&["-O3", "a"]));
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
        assert_eq!(run.osr_stats, Some(StatsFormat::Text));
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
        assert_eq!(run.osr_stats, Some(StatsFormat::Json));
        assert_eq!(run.osr_log, Some(PathBuf::from("log.json")));
        assert_eq!(run.osr_log_format, LogFormat::Chrome);
        assert_eq!(run.perf_option, Some(PerfMode::Map));
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
        assert_eq!(run.file(), Path::new("-x.ll"));
    }

    #[test]
    fn everything_after_the_file_is_the_guests() {
        let run = parse(&strings(&[
            "--osr=tier",
            "x.ll",
            "--osr=stress=1",
            "-x",
            "--",
            "--load",
            "-O3",
            "--help",
        ]))
        .unwrap();
        assert_eq!(run.osr, OsrMode::Tier);
        assert!(run.plugins.is_empty());
        assert_eq!(run.file(), Path::new("x.ll"));
        assert_eq!(
            run.guest_args(),
            strings(&["--osr=stress=1", "-x", "--", "--load", "-O3", "--help"])
        );
        let run = parse(&strings(&["x.ll", "--", "a"])).unwrap();
        assert_eq!(run.guest_args(), strings(&["--", "a"]));
        let run = parse(&strings(&["-", "a"])).unwrap();
        assert_eq!(run.file(), Path::new("-"));
        assert_eq!(run.guest_args(), strings(&["a"]));
    }

    #[test]
    fn levels_are_spelled_as_lli_spells_them() {
        assert_eq!(parse(&strings(&["x.ll"])).unwrap().opt_level, OptLevel::O2);
        for (arg, level) in [
            ("-O0", OptLevel::O0),
            ("-O1", OptLevel::O1),
            ("-O2", OptLevel::O2),
            ("-O3", OptLevel::O3),
        ] {
            assert_eq!(parse(&strings(&[arg, "x.ll"])).unwrap().opt_level, level);
        }
        let run = parse(&strings(&["-O", "3", "x.ll"])).unwrap();
        assert_eq!(run.opt_level, OptLevel::O3);
        // The last one counts, as for every option that is not repeatable.
        let run = parse(&strings(&["-O3", "-O1", "--osr=tier", "--osr=off", "x.ll"])).unwrap();
        assert_eq!((run.opt_level, run.osr), (OptLevel::O1, OsrMode::Off));
        let e = parse(&strings(&["-O4", "x.ll"])).unwrap_err();
        assert!(e.0.contains("`-O4`"), "{e}");
    }

    #[test]
    fn stats_take_an_optional_value_after_an_equals_sign() {
        let run = parse(&strings(&["x.ll"])).unwrap();
        assert_eq!(run.osr_stats, None);
        // Without a value, the next argument is not taken for one.
        let run = parse(&strings(&["--osr-stats", "x.ll", "json"])).unwrap();
        assert_eq!(run.osr_stats, Some(StatsFormat::Text));
        assert_eq!(run.file(), Path::new("x.ll"));
        assert_eq!(run.guest_args(), strings(&["json"]));
        let run = parse(&strings(&["--osr-stats=text", "x.ll"])).unwrap();
        assert_eq!(run.osr_stats, Some(StatsFormat::Text));
        let run = parse(&strings(&["--osr-stats=json", "x.ll"])).unwrap();
        assert_eq!(run.osr_stats, Some(StatsFormat::Json));
        for bad in ["--osr-stats=", "--osr-stats=xml"] {
            let e = parse(&strings(&[bad, "x.ll"])).unwrap_err();
            assert!(e.0.contains("--osr-stats"), "{e}");
        }
    }

    #[test]
    fn plugins_and_specialisations_repeat() {
        let run = parse(&strings(&[
            "--load",
            "a.so",
            "--load=b.so",
            "--osr-specialize=x",
            "--osr-specialize=y",
            "x.ll",
        ]))
        .unwrap();
        assert_eq!(
            run.plugins,
            vec![PathBuf::from("a.so"), PathBuf::from("b.so")]
        );
        assert_eq!(run.specialise, strings(&["x", "y"]));
    }

    #[test]
    fn values_follow_an_equals_sign() {
        let e = parse(&strings(&["--osr", "tier", "x.ll"])).unwrap_err();
        assert!(e.0.contains("--osr"), "{e}");
        let e = parse(&strings(&["--gdb", "off", "x.ll"])).unwrap_err();
        assert!(e.0.contains("--gdb"), "{e}");
        let run = parse(&strings(&[
            "--compile=eager",
            "--osr-threshold=7",
            "--gdb=on",
            "x.ll",
        ]))
        .unwrap();
        assert_eq!(run.compile, CompileMode::Eager);
        assert_eq!(run.threshold, Some(7));
        assert!(run.gdb);
    }

    #[test]
    fn errors_are_one_line_naming_the_option() {
        for (args, needle) in [
            (
                &["--frobnicate", "x.ll"][..],
                "unknown option `--frobnicate`",
            ),
            (&["-x", "x.ll"][..], "unknown option `-x`"),
            (&[][..], "needs a FILE.ll or FILE.bc"),
            (&["--load"][..], "--load needs a shared library path"),
            (&["--osr=fast", "x.ll"][..], "unknown --osr mode `fast`"),
            (
                &["--perf=yes", "x.ll"][..],
                "--perf: unknown perf mode `yes`",
            ),
        ] {
            let e = parse(&strings(args)).unwrap_err();
            assert!(e.0.contains(needle), "{args:?}: {e}");
            assert_eq!(e.0.lines().count(), 1, "{args:?}: {e}");
        }
    }
}
