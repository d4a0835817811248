//! Experiment 5, tier-up: each kernel of the suite started at O0 with tier-up, against pure O0
//! and pure O2, all from the same clang `-O0` IR, as child processes of the `uppercut` binary
//! ([`harness::uppercut`]):
//!
//! | config | command |
//! |---|---|
//! | `O0` | `uppercut run -O0 K.ll ARGS` |
//! | `O0+sites` | `uppercut run -O0 --osr=tier --osr-threshold=9223372036854775807 K.ll ARGS` |
//! | `tier` | `uppercut run -O0 --osr=tier --osr-stats=json K.ll ARGS` |
//! | `O2` | `uppercut run -O2 K.ll ARGS` |
//! | `tier+sites` | `uppercut run -O0 --osr=tier --osr-tiered=sites --osr-stats=json K.ll ARGS` |
//!
//! `tier` is the command line's tier-up policy ([`uppercut_osr::policy::TierUp`]): functions
//! count their calls and loop headers their passes, from 1000 per 100 instructions of the
//! function; a count that runs out has the function compiled at O2 in the background (final
//! code: no counters, no call sites) and relinked; a frame that stays in one long call moves at
//! the next pass of an outermost loop header. `tier+sites` is the same with O2 code that keeps
//! every site. `O0+sites` is tier-up's starting point without ever tiering: the same
//! instrumented O0 code and OSR runtime, with counters that never run out. It separates what
//! tier-up itself gains from what instrumentation changes at O0 (see below).
//!
//! Then the corpus programs ([`PROGRAMS`], SQLite from its `-O0` bitcode, built by
//! `experiments/corpus/build.sh`) in `O0`, `tier` and `O2`: a few seconds of work, and the
//! trivial session that calls 751 functions briefly (the quick run takes that one only).
//!
//! **The IR.** [`Clang::compile_ir`] at O0 runs `clang -O0 -S -emit-llvm`, which marks every
//! function `optnone noinline`; that is what the kernels' differential tests run under
//! `--osr=tier` too. No `-Xclang -disable-O0-optnone` is needed: a version asked for at O1 and
//! above drops clang's `optnone` and the `noinline` paired with it (`release_optnone` in
//! `core/src/ir/mod.rs`), so `-O2` and tier-up's O2 versions are optimised. But OSR
//! instrumentation also lifts `optnone` and runs SROA and mem2reg on every function before it
//! places sites (`instrument::select`), so tier-up (and `O0+sites`) starts from O0 code whose
//! locals are registers, while pure `O0` keeps clang's stack slots: part of what `tier` gains
//! over `O0` is that promotion, not tier-up. `kept_pct` is the fraction of pure O2's gain over
//! pure O0 that tier-up keeps, `100 * (T_O0 - T_tier) / (T_O0 - T_O2)`, as asked;
//! `kept_from_start_pct` is the same from tier-up's own starting point,
//! `100 * (T_O0+sites - T_tier) / (T_O0+sites - T_O2)`. Each is left out (with a note) when
//! pure O2 is less than 10% faster than its starting point: then it is mostly noise (at the
//! quick run's small sizes, compiling at O2 costs more than it gains). Tier-up's O2 versions are compiled one
//! function per unit, so unlike pure O2 they cannot inline across functions.
//!
//! Every run's stdout must equal the native `clang -O2` executable's with the same arguments,
//! with exit status 0, or the experiment fails; the `--osr-stats` line (`uppercut: osr
//! transitions=.. frames=.. recompiles=.. ... max_stall_us=..`) is parsed from `tier`'s
//! stderr. Repetitions are interleaved across the four configurations. Times are CPU times
//! (user and system, all threads: [`cputime::children`]) of whole processes, because the
//! machines these run on are shared and wall time counts other processes' turns (wall times
//! are recorded beside them). They include loading and compiling the module (tens of
//! milliseconds), which is why the sizes are chosen so that pure O2 runs about half a
//! second; tier-up's compilations run on its compiler thread while the guest waits, and
//! count once.
//!
//! Rows: key `kernel`, `config` (`O0`, `O0+sites`, `tier`, `O2`, `tier+sites`); values
//! `median_ms` and `min_ms` (CPU time), `wall_ms` (the median wall time),
//! `context_switches_count` (the median, all threads), `speedup` (`O0`'s median over this
//! one's); on `tier` also `kept_pct`, `kept_from_start_pct`, `vs_best` (its time over the better
//! of `O0` and `O2`), and the medians of the stats: `transitions_count`, `frames_count`,
//! `recompiles_count`, `max_stall_ms`. Summary rows `kernel=all`: on `tier`, `speedup` (the
//! geometric mean), `vs_best` (the median) and `max_vs_best`, `kept_pct` (the median),
//! `min_kept_pct`, `kept_count` (the kernels that have a `kept_pct`), `kept_from_start_pct`
//! (the median); on `O0+sites`, `O2` and `tier+sites`, `speedup` (the geometric mean). A corpus
//! program's rows are keyed by its name (`sqlite-long`, `sqlite-short`) in `O0`, `tier` and
//! `O2`, with `median_ms` and `speedup`, and on `tier` `vs_best`, `vs_o0`, `recompiles_count`
//! and `max_stall_ms`.
//!
//! `cargo run --release -p uppercut-experiments --bin exp-tierup -- [--quick] [--out FILE]`
//! (build the `uppercut` binary first: `cargo build --release -p uppercut-osr`).

use std::process::Command;
use std::time::Duration;

use uppercut_core::OptLevel;
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::osr_stats::OsrCounts;
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result, Size, corpus, cputime, kernels};

fn main() {
    harness::main(
        "tierup",
        "Tier-up: O0 with hot-loop OSR to O2 against pure O0 and pure O2",
        run,
    )
}

/// The configurations, in the order they run within a repetition, with their `uppercut run`
/// flags.
const CONFIGS: [(&str, &[&str]); 5] = [
    ("O0", &["-O0"]),
    (
        "O0+sites",
        &["-O0", "--osr=tier", "--osr-threshold=9223372036854775807"],
    ),
    ("tier", &["-O0", "--osr=tier", "--osr-stats=json"]),
    ("O2", &["-O2"]),
    (
        "tier+sites",
        &[
            "-O0",
            "--osr=tier",
            "--osr-tiered=sites",
            "--osr-stats=json",
        ],
    ),
];

/// Index of `tier` in [`CONFIGS`].
const TIER: usize = 2;

/// The configurations real programs run in (no `O0+sites`: each run takes seconds).
const PROGRAM_CONFIGS: [(&str, &[&str]); 3] = [
    ("O0", &["-O0"]),
    ("tier", &["-O0", "--osr=tier", "--osr-stats=json"]),
    ("O2", &["-O2"]),
];

/// Real programs from the corpus (`experiments/corpus/build.sh`), from their clang `-O0`
/// bitcode: `(name, program, arguments)`. `sqlite-long` is a few seconds of work (inserts, an
/// index, queries); `sqlite-short` the trivial session, which calls 751 distinct functions
/// briefly, as a test suite does.
const PROGRAMS: [(&str, &str, &[&str]); 2] = [
    ("sqlite-long", "sqlite", &["100000"]),
    ("sqlite-short", "sqlite", &[]),
];

/// Arguments of each kernel in the full run: pure O2 about 0.5 s, pure O0 one to two seconds,
/// on a 2-core x86-64 VM (a kernel's full size in `kernels.rs` is for O2 alone and would take
/// minutes at O0).
const FULL: [(&str, &[&str]); 9] = [
    ("fannkuch", &["10"]),
    ("nbody", &["8000000"]),
    ("spectralnorm", &["2000"]),
    ("mandelbrot", &["2500"]),
    ("fasta", &["3000000"]),
    ("binarytrees", &["17"]),
    ("nsieve", &["11"]),
    ("matmul", &["900"]),
    ("interp", &["80000"]),
];

/// The time limit of one run.
const TIMEOUT: Duration = Duration::from_secs(180);

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let reps = if args.quick { 3 } else { 5 };
    let clang = Clang::find()?;
    let uppercut = harness::uppercut()?;
    report.environment.clang = clang.version().to_owned();
    report.setting("repetitions", reps);
    report.setting(
        "configs",
        CONFIGS
            .iter()
            .map(|(name, flags)| format!("{name}: uppercut run {}", flags.join(" ")))
            .collect::<Vec<_>>(),
    );
    report.setting(
        "ir",
        "clang -O0 -S -emit-llvm (optnone noinline, as clang emits)",
    );
    report.setting("tier_threshold", 1000);
    report.setting(
        "tier_threshold_scaling",
        "each function's counts start at 1000 per 100 instructions (--osr=tier's \
         Instrumentation::scale_counts_by_size)",
    );
    let mut sizes = serde_json::Map::new();
    for k in kernels::kernels() {
        sizes.insert(
            k.name.to_owned(),
            serde_json::json!(kernel_args(k, args.quick)),
        );
    }
    report.setting("sizes", &sizes);

    let progress = Progress::new(
        args,
        "tierup",
        kernels::kernels().len() * reps * CONFIGS.len(),
    );
    for k in kernels::kernels() {
        let kargs = kernel_args(k, args.quick);
        let native = clang.compile_native(k.name, k.source, OptLevel::O2)?;
        let ir = clang.compile_ir(k.name, k.source, OptLevel::O0)?;
        let expected = harness::run_timed(Command::new(native.path()).args(&kargs), TIMEOUT)?;
        if !expected.status.success() {
            return Err(measurement(format!(
                "{} natively: {} ({})",
                k.name,
                expected.status,
                expected.stderr.trim()
            )));
        }
        let mut stats: Vec<OsrCounts> = Vec::new();
        let mut wall_ms: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
        let mut switches: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
        let indices: Vec<usize> = (0..CONFIGS.len()).collect();
        let samples = harness::interleave(&indices, reps, |&i| {
            let (config, flags) = CONFIGS[i];
            let mut command = Command::new(&uppercut);
            command.arg("run").args(flags).arg(ir.path()).args(&kargs);
            let (before, switched) = (cputime::children(), cputime::children_context_switches());
            let t = harness::run_timed(&mut command, TIMEOUT)?;
            let cpu = cputime::children().saturating_sub(before);
            switches[i].push(cputime::children_context_switches().saturating_sub(switched) as f64);
            wall_ms[i].push(t.wall.as_secs_f64() * 1e3);
            progress.step(&format!("{} {config}", k.name));
            if !t.status.success() || t.stdout != expected.stdout {
                return Err(measurement(format!(
                    "{} under `uppercut run {}` exited {} and printed {:?}, natively {:?} ({})",
                    k.name,
                    flags.join(" "),
                    t.status,
                    t.stdout,
                    expected.stdout,
                    t.stderr.trim()
                )));
            }
            if flags.contains(&"--osr-stats=json") && i == TIER {
                stats.push(OsrCounts::parse(&t.stderr).ok_or_else(|| {
                    measurement(format!(
                        "{}: no --osr-stats line in {:?}",
                        k.name,
                        t.stderr.trim()
                    ))
                })?);
            }
            Ok(cpu.as_secs_f64() * 1e3)
        })?;
        let medians: Vec<f64> = samples.iter().map(|s| harness::median(s)).collect();
        let (t_o0, t_start, t_tier, t_o2) = (medians[0], medians[1], medians[TIER], medians[3]);
        for (i, (config, _)) in CONFIGS.iter().enumerate() {
            let mut row = Row::new()
                .key("kernel", k.name)
                .key("config", config)
                .value("median_ms", medians[i])
                .value("wall_ms", harness::median(&wall_ms[i]))
                .value("context_switches_count", harness::median(&switches[i]))
                .value(
                    "min_ms",
                    samples[i].iter().copied().fold(f64::INFINITY, f64::min),
                )
                .value("speedup", t_o0 / medians[i]);
            if i == TIER {
                row = row.value("vs_best", t_tier / t_o0.min(t_o2));
                if let Some(kept) = kept(t_o0, t_tier, t_o2) {
                    row = row.value("kept_pct", kept);
                }
                if let Some(kept) = kept(t_start, t_tier, t_o2) {
                    row = row.value("kept_from_start_pct", kept);
                }
                for (name, value) in [
                    ("transitions", "transitions_count"),
                    ("frames", "frames_count"),
                    ("recompiles", "recompiles_count"),
                ] {
                    row = row.value(value, stat_median(&stats, name));
                }
                row = row.value("max_stall_ms", stat_median(&stats, "max_stall_us") / 1e3);
            }
            report.push(row);
        }
        if kept(t_o0, t_tier, t_o2).is_none() {
            report.note(format!(
                "{}: pure O2 is not {:.0}% faster than pure O0 at this size (compilation \
                 dominates): no kept_pct",
                k.name,
                MIN_GAIN * 100.0
            ));
        }
        if stats.iter().any(|s| s.get("frames") == Some(0)) {
            report.note(format!(
                "{}: a tier run moved no frame (its hot loops finished before firing, or \
                 their frames could not move)",
                k.name
            ));
        }
    }
    programs(args, report, &uppercut, reps)?;
    summarise(report);
    notes(report);
    // CPU-time medians of 5 runs of whole processes moved by a few percent between runs on a
    // shared 2-core VM; `kept_pct` divides by a difference and moves more.
    report.check_with_floor("speedup", 0.10, 0.05);
    report.check_with_floor("kept_pct", 0.25, 15.0);
    Ok(())
}

/// The corpus programs ([`PROGRAMS`]; the quick run takes the short one only) in
/// [`PROGRAM_CONFIGS`]: rows keyed `kernel` = the program's name, like the kernels', with
/// `vs_best` (tier-up's time over the better of pure O0 and pure O2) and `vs_o0` on `tier`.
fn programs(
    args: &Args,
    report: &mut Report,
    uppercut: &std::path::Path,
    reps: usize,
) -> Result<()> {
    let picked: Vec<&(&str, &str, &[&str])> = PROGRAMS
        .iter()
        .filter(|(name, _, _)| !args.quick || *name == "sqlite-short")
        .collect();
    let dir = corpus::build(&["sqlite"])?;
    report.setting(
        "programs",
        picked
            .iter()
            .map(|(name, program, a)| format!("{name}: {program}-O0.bc {}", a.join(" ")))
            .collect::<Vec<_>>(),
    );
    let reps = reps.min(3);
    let progress = Progress::new(args, "tierup programs", picked.len() * reps * 3);
    for &&(name, program, pargs) in &picked {
        let ir = corpus::module(&dir, program, "O0");
        let expected = harness::run_timed(
            Command::new(corpus::native(&dir, program)).args(pargs),
            TIMEOUT,
        )?;
        let mut stats: Vec<OsrCounts> = Vec::new();
        let indices: Vec<usize> = (0..PROGRAM_CONFIGS.len()).collect();
        let samples = harness::interleave(&indices, reps, |&i| {
            let (config, flags) = PROGRAM_CONFIGS[i];
            let mut command = Command::new(uppercut);
            command.arg("run").args(flags).arg(&ir).args(pargs);
            let before = cputime::children();
            let t = harness::run_timed(&mut command, TIMEOUT)?;
            let cpu = cputime::children().saturating_sub(before);
            progress.step(&format!("{name} {config}"));
            if !t.status.success() || t.stdout != expected.stdout {
                return Err(measurement(format!(
                    "{name} under `uppercut run {}` exited {} ({})",
                    flags.join(" "),
                    t.status,
                    t.stderr.trim()
                )));
            }
            if config == "tier" {
                stats.push(
                    OsrCounts::parse(&t.stderr)
                        .ok_or_else(|| measurement(format!("{name}: no --osr-stats line")))?,
                );
            }
            Ok(cpu.as_secs_f64() * 1e3)
        })?;
        let medians: Vec<f64> = samples.iter().map(|s| harness::median(s)).collect();
        let (t_o0, t_tier, t_o2) = (medians[0], medians[1], medians[2]);
        for (i, (config, _)) in PROGRAM_CONFIGS.iter().enumerate() {
            let mut row = Row::new()
                .key("kernel", name)
                .key("config", config)
                .value("median_ms", medians[i])
                .value("speedup", t_o0 / medians[i]);
            if *config == "tier" {
                row = row
                    .value("vs_best", t_tier / t_o0.min(t_o2))
                    .value("vs_o0", t_tier / t_o0)
                    .value("recompiles_count", stat_median(&stats, "recompiles"))
                    .value("max_stall_ms", stat_median(&stats, "max_stall_us") / 1e3);
            }
            report.push(row);
        }
    }
    Ok(())
}

/// The least gain of pure O2 over a starting point, as a fraction of the start's time, for
/// which the fraction of it that tier-up keeps is reported (below, it is mostly noise).
const MIN_GAIN: f64 = 0.1;

/// `100 * (start - tier) / (start - o2)`: how much of O2's gain over `start` tier-up keeps;
/// `None` when O2 gains less than [`MIN_GAIN`].
fn kept(start: f64, tier: f64, o2: f64) -> Option<f64> {
    (start - o2 >= MIN_GAIN * start).then(|| 100.0 * (start - tier) / (start - o2))
}

/// A kernel's arguments: its small size in the quick run, [`FULL`] otherwise.
fn kernel_args(k: &kernels::Kernel, quick: bool) -> Vec<String> {
    let args = if quick {
        k.args(Size::Small)
    } else {
        FULL.iter()
            .find(|(name, _)| *name == k.name)
            .map_or(k.args(Size::Small), |(_, a)| a)
    };
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// The median of one count over the runs (NaN if no run had it).
fn stat_median(runs: &[OsrCounts], name: &str) -> f64 {
    let values: Vec<f64> = runs
        .iter()
        .filter_map(|s| s.get(name))
        .map(|v| v as f64)
        .collect();
    harness::median(&values)
}

/// The `kernel=all` rows.
fn summarise(report: &mut Report) {
    let geomean = |xs: &[f64]| (xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp();
    // Over the kernels only (the corpus programs have rows of their own).
    let column = |report: &Report, config: &str, value: &str| -> Vec<f64> {
        report
            .select(&[("config", config)])
            .filter(|r| {
                r.key_of("kernel")
                    .is_some_and(|k| kernels::kernels().iter().any(|kk| kk.name == k))
            })
            .filter_map(|r| r.get(value))
            .collect()
    };
    let kept = column(report, "tier", "kept_pct");
    let from_start = column(report, "tier", "kept_from_start_pct");
    let tier = column(report, "tier", "speedup");
    let vs_best = column(report, "tier", "vs_best");
    let mut summary = Row::new()
        .key("kernel", "all")
        .key("config", "tier")
        .value("speedup", geomean(&tier))
        .value("vs_best", harness::median(&vs_best))
        .value(
            "max_vs_best",
            vs_best.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        );
    // Only over the kernels that have one (no NaN or infinity in a report).
    if !kept.is_empty() {
        summary = summary
            .value("kept_pct", harness::median(&kept))
            .value(
                "min_kept_pct",
                kept.iter().copied().fold(f64::INFINITY, f64::min),
            )
            .value("kept_count", kept.len() as f64);
    }
    if !from_start.is_empty() {
        summary = summary.value("kept_from_start_pct", harness::median(&from_start));
    }
    let mut rows = vec![summary];
    for config in ["O0+sites", "O2", "tier+sites"] {
        rows.push(
            Row::new()
                .key("kernel", "all")
                .key("config", config)
                .value("speedup", geomean(&column(report, config, "speedup"))),
        );
    }
    for row in rows {
        report.push(row);
    }
}

/// Observations worth a line: kernels where tier-up loses to pure O0, or keeps little.
fn notes(report: &mut Report) {
    let mut lines = Vec::new();
    for row in report.select(&[("config", "tier")]) {
        let Some(kernel) = row.key_of("kernel").filter(|k| *k != "all") else {
            continue;
        };
        let (speedup, kept) = (
            row.get("speedup").unwrap_or(f64::NAN),
            row.get("kept_pct").unwrap_or(f64::NAN),
        );
        if speedup < 1.0 || kept < 80.0 {
            let switches = row.get("context_switches_count").unwrap_or(f64::NAN);
            let kept = if kept.is_nan() {
                "no kept_pct".to_owned()
            } else {
                format!("kept {kept:.0}% of O2's gain")
            };
            lines.push(format!(
                "{kernel}: tier-up speedup {speedup:.2}, {kept} ({switches:.0} context switches)"
            ));
        }
    }
    for line in lines {
        report.note(line);
    }
}

/// A [`Error::Measurement`].
fn measurement(reason: impl Into<String>) -> Error {
    Error::Measurement {
        reason: reason.into(),
    }
}
