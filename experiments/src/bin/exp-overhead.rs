//! Experiment 2, never-firing OSR overhead: what OSR metadata costs when no site ever fires,
//! per site kind and per frame-metadata strategy, at O0 and O2, against the uninstrumented
//! program in the same run.
//!
//! Configurations, for every guest and level (`sites`, `metadata`):
//!
//! - `none`, `none`: no instrumentation (the baseline of the row's `ratio`);
//! - `call`, `statepoint`: call sites only: every call that can reach a hypercall carries a
//!   `"deopt"` bundle and becomes a statepoint with a stack-map record at its return address
//!   (`loop_sites = false`);
//! - `call+loop`, `statepoint`: also a counter at every loop header, started at `i64::MAX` so
//!   that it never runs out (a loop site makes a hypercall, so the functions that hold loops,
//!   and their callers, get call sites too);
//! - `call`, `shadow` and `call+loop`, `shadow`: the same with
//!   [`Instrumentation::shadow_discovery`]: every function with sites also opens a
//!   shadow-stack frame that records its machine frame and stores the id of each site before
//!   its call (the statepoint records stay);
//! - `call+loop`, `statepoint:T`: `call+loop`, `statepoint` with one of the techniques that make
//!   readiness cheap turned off, one row each ([`TECHNIQUES`]): `global-counters` (loop
//!   counters in a global, decremented at every pass), `no-call-graph` (every indirect call a
//!   site), `shadow-locals` (every address-taken local in a shadow-stack frame). What a
//!   technique buys is its row's overhead beyond the `statepoint` row's. The fourth, values left
//!   in callee-saved registers ([`uppercut_core::deopt_values_in_registers`]), is an LLVM option
//!   of the whole process: the setting `deopt_values_in_registers` says which way this run went
//!   (run with `UPPERCUT_DEOPT_IN_REGISTERS=0` for the other).
//!
//! **Guests.** The nine kernels of the suite (`experiments/kernels/*.c`, run through `main`)
//! make no hypercall, and none has an indirect call, so with `loop_sites = false` no call can
//! reach a hypercall: their `sites=call` rows carry zero sites and measure instrumentation
//! with nothing to instrument (the `call_sites_count` value says so). To measure call sites
//! honestly, four guests whose hot calls *can* reach a hypercall, on a path that never runs,
//! are added from the OSR crate's benchmarks (`osr/benches/kernels/`, run through
//! `long kernel(long)`, never printing): `fib` (recursive Fibonacci: every call is a site),
//! `sum_calls` (a non-inlined call per array element), `fnptr` (an indirect call per element)
//! and `frame_stores` (a recursion whose frames already have shadow-stack frames: shadow
//! discovery adds only its stores). They are the worst cases: a call site per a few
//! instructions. The summary rows (`kernel=all`) cover the suite kernels only.
//!
//! **Real programs.** Two programs of the corpus (`experiments/corpus/`, built by `build.sh`
//! through [`corpus::build`]), run through `main` with arguments, their output compared with the
//! corpus's native `-O2` executable: `sqlite` (SQLite's 271,000-line amalgamation with its driver:
//! `N` rows inserted, indexed and queried; 100,000 at O0, 250,000 at O2) and `zstd` (zstd's
//! library, 47,800 lines of `common/`, `compress/`, `decompress/` and headers, with its driver:
//! compression round trips of `KIB` KiB of generated input at levels 1, 3, 9 and 19 and streaming
//! at 5; 3,072 at O0, 16,384 at O2). Each runs about 1 s in the steady state under the JIT
//! uninstrumented (on a 2-core x86-64 VM). Their IR is the corpus's bitcode: at O2 `PROGRAM-O2.bc`
//! (clang `-O2` per file, linked), at O0 `PROGRAM-O0.bc` promoted by the same `opt` passes as the
//! kernels' O0 IR. To bound the run time they run three configurations only ([`PROGRAM_CONFIGS`]:
//! `none`/`none`, `call+loop`/`statepoint` and `call+loop`/`shadow`; compiling what SQLite's run
//! calls takes about 10 s at O2 uninstrumented and 30–40 s instrumented). A program's first run is
//! mostly lazy compilation, which would drown the steady state: so each configuration gets one
//! engine, whose first run of `main` is timed apart (values `first_run_ms`, the CPU time of that
//! run, and `first_run_ratio`, to the baseline's first run: one sample each, mostly what compiling
//! the instrumented module costs), and the repetitions then run `main` again on the same engines,
//! interleaved (the drivers keep no state between runs). Their rows are in the same format, key
//! `kernel` = the program's name, and are in no summary row.
//!
//! **How.** In this process: each kernel is compiled by clang once per level; for each repetition
//! and configuration a fresh [`Engine`] (`EngineOptions { opt_level, instrument }`) is built and
//! compiled (not timed; the programs keep one per configuration, above), the site callback
//! [`SITE_CALLBACK`] (and the guests' `never` hypercall) is a handler that only counts, and only
//! `run_main` (or `call("kernel")`) is timed, by this thread's CPU time ([`cputime::thread`]: the
//! guest runs on it, and the machines these run on are shared, so wall time counts other processes'
//! turns; the wall time is recorded beside it). A fresh engine per repetition because `fasta` and
//! `nbody` mutate their globals.
//! No OSR runtime ([`uppercut_osr::Osr`]) is installed: the handler would only ever see
//! hypercalls that never happen, and the runtime's compiler thread is not metadata. The
//! experiment fails if any site fires. Repetitions are interleaved across the configurations;
//! each row holds the median, and its ratio to the baseline's median.
//!
//! The process makes itself multi-threaded (a thread started and joined) before measuring:
//! glibc's `malloc` takes a slower path for good once a second thread has existed, and every
//! process that runs Uppercut's OSR runtime has its compiler thread; this way every
//! configuration runs with the same allocator (it matters for `binarytrees`: see
//! `exp-tierup`).
//!
//! **O0 input.** Whenever an engine instruments a module, it lifts clang's `optnone` and runs
//! SROA and mem2reg on every function first (sites carry SSA values, not stack slots): the
//! instrumented O0 code is then much faster than clang's `-O0` code, which would show up as a
//! large negative "overhead". To compare like with like, every O0 configuration (the baseline
//! too) runs the same promoted IR: `clang -O0 -Xclang -disable-O0-optnone -S -emit-llvm`, then
//! `opt -passes='function(sroa<modify-cfg>,mem2reg)'` (LLVM 19's `opt`: `$UPPERCUT_OPT`, else
//! `opt-19`, else `opt`). O2 runs clang's `-O2` IR as it is.
//!
//! **Output.** Guest `main`s print (a few lines): around each run, file descriptor 1 is
//! pointed at a temporary file (and stdio flushed before and after), and what the run printed
//! must equal what the native `clang -O2` executable prints with the same arguments, or the
//! experiment fails. `call("kernel")` results must equal the baseline's.
//!
//! Rows: key `kernel`, `opt` (`O0`, `O2`), `sites`, `metadata`; values `median_ms` (CPU
//! time), `wall_ms` (the median wall time), `ratio` (of the CPU-time medians,
//! to the `none`/`none` row of the same kernel and level), `overhead_pct`
//! (`(ratio - 1) * 100`), `spread_pct` (the interquartile range of the per-repetition ratios,
//! each repetition's time over the baseline's in the same round, times 100: the noise),
//! `call_sites_count`, `loop_sites_count`, `compile_ms` (median engine build and compile:
//! in the default lazy mode, loading and instrumenting the module and compiling its globals;
//! the functions compile on their first call, within the kernels' timed runs and the
//! programs' first runs); the programs' rows also `first_run_ms` and `first_run_ratio`.
//! Summary rows `kernel=all` per level and configuration over the suite kernels: `ratio` (the
//! geometric mean), `overhead_pct` (from it), `max_overhead_pct`. A check compares `ratio`
//! within 10% (ignoring differences below 0.03).
//!
//! The suite's `sites=call` rows (zero sites) double as a control: their code differs from
//! the baseline's only by what instrumentation does to a module with nothing to instrument,
//! so what they show beyond the noise comes from that (or from code layout), not from sites.
//!
//! **Quick run** (`--quick`): three suite kernels and two call kernels at their small sizes, and
//! the programs with tiny workloads (`sqlite 300` at O0; `zstd 16` at O0 and O2: SQLite's O2
//! compilation alone would take 20 s) in the first two program configurations; 3 repetitions.
//! `--only NAME[,NAME...]` runs only the named guests (suite kernels, call kernels or programs,
//! at the sizes of the run, quick or full), e.g. `--only nsieve,fib` or `--only sqlite,zstd`;
//! the summary rows then cover the suite kernels that ran.
//!
//! `cargo run --release -p uppercut-experiments --bin exp-overhead -- [--quick] [--out FILE]
//! [--only NAME[,NAME...]]`

use std::ffi::c_void;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uppercut_core::{
    CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, LoopCounters, OptLevel,
    SITE_CALLBACK, SiteKind,
};
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result, Size, corpus, cputime, kernels};

fn main() {
    harness::main(
        "overhead",
        "Never-firing OSR overhead per site kind and metadata strategy",
        run,
    )
}

/// The configurations, in the order they run within a repetition: `(sites, metadata)`. A
/// metadata of `statepoint:T` is `statepoint` with one of the techniques that make readiness
/// cheap turned off ([`TECHNIQUES`]): what that technique buys is its row's overhead beyond
/// the `statepoint` row's.
const CONFIGS: [(&str, &str); 8] = [
    ("none", "none"),
    ("call", "statepoint"),
    ("call+loop", "statepoint"),
    ("call", "shadow"),
    ("call+loop", "shadow"),
    ("call+loop", "statepoint:global-counters"),
    ("call+loop", "statepoint:no-call-graph"),
    ("call+loop", "statepoint:shadow-locals"),
];

/// The techniques a `statepoint:T` configuration turns off, and what `T` means.
const TECHNIQUES: [(&str, &str); 3] = [
    (
        "global-counters",
        "loop sites decrement a global counter at every pass (LoopCounters::Global) instead of \
         counting in a register and charging the global in chunks",
    ),
    (
        "no-call-graph",
        "every indirect call is a site (Instrumentation::call_graph off), not only those that \
         can reach a function that can reach a hypercall",
    ),
    (
        "shadow-locals",
        "every local whose address is taken lives in a shadow-stack frame \
         (Instrumentation::frame_locals off), not only those a site's callee could reach",
    ),
];

/// The instrumentation of a configuration (`None` for the baseline).
fn instrumentation(sites: &str, metadata: &str) -> Option<Instrumentation> {
    if sites == "none" {
        return None;
    }
    let (strategy, off) = metadata.split_once(':').unwrap_or((metadata, ""));
    let mut instrument = Instrumentation {
        loop_sites: sites == "call+loop",
        entry_sites: false,
        store_sites: Vec::new(),
        initial_count: i64::MAX,
        shadow_discovery: strategy == "shadow",
        ..Instrumentation::default()
    };
    match off {
        "global-counters" => instrument.loop_counters = LoopCounters::Global,
        "no-call-graph" => instrument.call_graph = false,
        "shadow-locals" => instrument.frame_locals = false,
        _ => {}
    }
    Some(instrument)
}

/// Arguments of a suite kernel for the full run: `(name, at O0, at O2)`, each about 0.1 s
/// under the JIT on a 2-core x86-64 VM.
const SUITE_FULL: [(&str, &[&str], &[&str]); 9] = [
    ("fannkuch", &["10"], &["10"]),
    ("nbody", &["1000000"], &["2500000"]),
    ("spectralnorm", &["700"], &["1500"]),
    ("mandelbrot", &["800"], &["1400"]),
    ("fasta", &["600000"], &["1000000"]),
    ("binarytrees", &["15"], &["15"]),
    ("nsieve", &["10"], &["10"]),
    ("matmul", &["400"], &["750"]),
    ("interp", &["20000"], &["40000"]),
];

/// The suite kernels of the quick run (at [`Size::Small`]).
const SUITE_QUICK: [&str; 3] = ["nbody", "fannkuch", "interp"];

/// A guest of `osr/benches/kernels/` whose hot calls can reach a hypercall.
struct CallKernel {
    name: &'static str,
    source: &'static str,
    /// The argument of `kernel` at O0, at O2, and in the quick run.
    arg_o0: u64,
    arg_o2: u64,
    arg_quick: u64,
}

const CALL_KERNELS: [CallKernel; 4] = [
    CallKernel {
        name: "fib",
        source: include_str!("../../../osr/benches/kernels/fib.c"),
        arg_o0: 35,
        arg_o2: 37,
        arg_quick: 24,
    },
    CallKernel {
        name: "sum_calls",
        source: include_str!("../../../osr/benches/kernels/sum_calls.c"),
        arg_o0: 12000,
        arg_o2: 15000,
        arg_quick: 500,
    },
    CallKernel {
        name: "fnptr",
        source: include_str!("../../../osr/benches/kernels/fnptr.c"),
        arg_o0: 12000,
        arg_o2: 15000,
        arg_quick: 500,
    },
    CallKernel {
        name: "frame_stores",
        source: include_str!("../../../osr/benches/kernels/frame_stores.c"),
        arg_o0: 350000,
        arg_o2: 400000,
        arg_quick: 1000,
    },
];

/// The call kernels of the quick run.
const CALLS_QUICK: [&str; 2] = ["fib", "sum_calls"];

/// A real program of the corpus (`experiments/corpus/`), run through `main`.
struct Program {
    name: &'static str,
    /// Its arguments at O0 and at O2 in the full run (its steady-state run under the JIT about
    /// 1 s on a 2-core x86-64 VM), and in the quick run.
    args_o0: &'static [&'static str],
    args_o2: &'static [&'static str],
    args_quick: &'static [&'static str],
    /// The levels of the quick run.
    quick_levels: &'static [OptLevel],
}

const PROGRAMS: [Program; 2] = [
    Program {
        name: "sqlite",
        args_o0: &["100000"],
        args_o2: &["250000"],
        args_quick: &["300"],
        quick_levels: &[OptLevel::O0],
    },
    Program {
        name: "zstd",
        args_o0: &["3072"],
        args_o2: &["16384"],
        args_quick: &["16"],
        quick_levels: &[OptLevel::O0, OptLevel::O2],
    },
];

/// The configurations the programs run in (a subset of [`CONFIGS`], to bound the run time:
/// compiling what SQLite's run calls takes about 10 s at O2 uninstrumented, 30–40 s
/// instrumented, once per configuration). Without loop sites no call of theirs can reach a
/// hypercall, so `sites=call` would be the kernels' control again. The quick run takes the
/// first [`PROGRAM_CONFIGS_QUICK`].
const PROGRAM_CONFIGS: [(&str, &str); 3] = [
    ("none", "none"),
    ("call+loop", "statepoint"),
    ("call+loop", "shadow"),
];

/// How many of [`PROGRAM_CONFIGS`] the quick run takes.
const PROGRAM_CONFIGS_QUICK: usize = 2;

/// How a guest is run.
enum Entry {
    /// `main(argc, argv)` with these arguments; its stdout must be `expected`.
    Main { args: Vec<String>, expected: String },
    /// `long kernel(long)` with this argument.
    Kernel { arg: u64 },
}

/// One guest at one level, ready to run.
struct Guest {
    name: &'static str,
    /// Its IR, as text or bitcode.
    ir: Vec<u8>,
    /// Its file name, for errors (`NAME.ll` or `NAME.bc`).
    origin: String,
    entry: Entry,
}

/// Site and `never` hypercalls that fired (none may).
static FIRED: AtomicU64 = AtomicU64::new(0);

fn never(_: &mut Hypercall<'_>) -> std::result::Result<*mut c_void, CallbackError> {
    FIRED.fetch_add(1, Ordering::Relaxed);
    Ok(std::ptr::null_mut())
}

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let reps = if args.quick { 3 } else { 7 };
    let clang = Clang::find()?;
    let opt = find_opt()?;
    report.environment.clang = clang.version().to_owned();
    report.setting("repetitions", reps);
    report.setting("configs", config_names(&CONFIGS));
    report.setting(
        "deopt_values_in_registers",
        uppercut_core::deopt_values_in_registers(),
    );
    report.setting(
        "techniques_off",
        TECHNIQUES
            .iter()
            .map(|(t, what)| format!("statepoint:{t}: {what}"))
            .collect::<Vec<_>>(),
    );
    report.setting(
        "o0_ir",
        "clang -O0 -Xclang -disable-O0-optnone, then opt -passes='function(sroa<modify-cfg>,mem2reg)'",
    );
    report.setting("o2_ir", "clang -O2");
    report.setting("initial_count", i64::MAX);
    report.setting(
        "call_kernels",
        CALL_KERNELS.iter().map(|k| k.name).collect::<Vec<_>>(),
    );
    report.setting("runtime", "no Osr runtime: a counting site handler");

    // `--only` picks guests by name from every kind; otherwise the quick run takes its subset.
    let known: Vec<&str> = kernels::kernels()
        .iter()
        .map(|k| k.name)
        .chain(CALL_KERNELS.iter().map(|k| k.name))
        .chain(PROGRAMS.iter().map(|p| p.name))
        .collect();
    if let Some(unknown) = args.only.iter().find(|n| !known.contains(&n.as_str())) {
        return Err(Error::InvalidConfig {
            reason: format!(
                "--only: no guest named `{unknown}` (guests: {})",
                known.join(", ")
            ),
        });
    }
    let picked = |name: &str, quick_set: bool| {
        if args.only.is_empty() {
            !args.quick || quick_set
        } else {
            args.selects(name)
        }
    };
    let suite: Vec<&kernels::Kernel> = kernels::kernels()
        .iter()
        .filter(|k| picked(k.name, SUITE_QUICK.contains(&k.name)))
        .collect();
    let calls: Vec<&CallKernel> = CALL_KERNELS
        .iter()
        .filter(|k| picked(k.name, CALLS_QUICK.contains(&k.name)))
        .collect();
    let programs: Vec<&Program> = PROGRAMS.iter().filter(|p| picked(p.name, true)).collect();
    if !args.only.is_empty() {
        report.setting("only", &args.only);
    }
    let mut sizes = serde_json::Map::new();
    for k in &suite {
        let (o0, o2) = suite_args(k, args.quick);
        sizes.insert(k.name.to_owned(), serde_json::json!({ "O0": o0, "O2": o2 }));
    }
    for k in &calls {
        let (o0, o2) = if args.quick {
            (k.arg_quick, k.arg_quick)
        } else {
            (k.arg_o0, k.arg_o2)
        };
        sizes.insert(k.name.to_owned(), serde_json::json!({ "O0": o0, "O2": o2 }));
    }
    for p in &programs {
        let mut at = serde_json::Map::new();
        for level in program_levels(p, args.quick) {
            at.insert(
                format!("O{}", level.as_u8()),
                serde_json::json!(program_args(p, level, args.quick)),
            );
        }
        sizes.insert(p.name.to_owned(), serde_json::Value::Object(at));
    }
    report.setting("sizes", &sizes);
    if !programs.is_empty() {
        report.setting(
            "programs",
            "corpus programs (experiments/corpus/build.sh: SQLite from libsqlite3-sys, zstd from \
             zstd-sys): one engine per configuration, its first run of main timed apart \
             (first_run_ms), then the repetitions on the same engines",
        );
        report.setting("program_configs", config_names(program_configs(args.quick)));
    }
    let corpus_dir = if programs.is_empty() {
        corpus::dir()
    } else {
        let names: Vec<&str> = programs.iter().map(|p| p.name).collect();
        corpus::build(&names)?
    };

    // Every configuration with the allocator of a multi-threaded process (see the docs).
    std::thread::spawn(|| {})
        .join()
        .map_err(|_| measurement("a helper thread panicked"))?;

    let levels = [OptLevel::O0, OptLevel::O2];
    let steps = (suite.len() + calls.len()) * levels.len() * reps * CONFIGS.len()
        + programs
            .iter()
            .map(|p| {
                program_levels(p, args.quick).len() * (reps + 1) * program_configs(args.quick).len()
            })
            .sum::<usize>();
    let progress = Progress::new(args, "overhead", steps);
    let mut capture = Capture::new()?;
    let mut no_call_sites = Vec::new();
    for opt_level in levels {
        for k in &suite {
            let (o0, o2) = suite_args(k, args.quick);
            let kargs = if opt_level == OptLevel::O0 { o0 } else { o2 };
            let native = clang.compile_native(k.name, k.source, OptLevel::O2)?;
            let expected = native_stdout(native.path(), &kargs)?;
            let guest = Guest {
                name: k.name,
                ir: guest_ir(&clang, &opt, k.name, k.source, opt_level)?.into_bytes(),
                origin: format!("{}.ll", k.name),
                entry: Entry::Main {
                    args: kargs,
                    expected,
                },
            };
            let rows = measure(&guest, opt_level, reps, &mut capture, &progress)?;
            if rows[1].get("call_sites_count") == Some(0.0) && opt_level == OptLevel::O2 {
                no_call_sites.push(k.name);
            }
            for row in rows {
                report.push(row);
            }
        }
        for k in &calls {
            let arg = match (args.quick, opt_level) {
                (true, _) => k.arg_quick,
                (false, OptLevel::O0) => k.arg_o0,
                (false, _) => k.arg_o2,
            };
            let guest = Guest {
                name: k.name,
                ir: guest_ir(&clang, &opt, k.name, k.source, opt_level)?.into_bytes(),
                origin: format!("{}.ll", k.name),
                entry: Entry::Kernel { arg },
            };
            for row in measure(&guest, opt_level, reps, &mut capture, &progress)? {
                report.push(row);
            }
        }
        let at_level = programs
            .iter()
            .filter(|p| program_levels(p, args.quick).contains(&opt_level));
        for p in at_level {
            let pargs = program_args(p, opt_level, args.quick);
            let expected = native_stdout(&corpus::native(&corpus_dir, p.name), &pargs)?;
            let guest = Guest {
                name: p.name,
                ir: program_ir(&opt, &corpus_dir, p.name, opt_level)?,
                origin: format!("{}-O{}.bc", p.name, opt_level.as_u8()),
                entry: Entry::Main {
                    args: pargs,
                    expected,
                },
            };
            let configs = program_configs(args.quick);
            for row in measure_program(&guest, opt_level, configs, reps, &mut capture, &progress)? {
                report.push(row);
            }
        }
    }
    let fired = FIRED.load(Ordering::Relaxed);
    if fired != 0 {
        return Err(measurement(format!(
            "{fired} never-firing sites or `never` hypercalls fired"
        )));
    }
    summarise(report, &suite);
    if !suite.is_empty() {
        report.note(format!(
            "suite kernels with no call site under sites=call (no call can reach a hypercall \
             without loop sites): {}; their sites=call rows measure instrumentation with \
             nothing to instrument; call-site cost is measured on the call kernels ({})",
            if no_call_sites.is_empty() {
                "none".to_owned()
            } else {
                no_call_sites.join(", ")
            },
            calls.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        ));
    }
    note_extremes(report);
    // On a shared 2-core VM the per-repetition ratios spread by about 5% (interquartile range,
    // median over the rows), a few rows by 20-40%; medians of 7 move less. 10% flags a real
    // change (a loop counter costing 20% or 50%) but not that noise.
    report.check_with_floor("ratio", 0.10, 0.03);
    Ok(())
}

/// `sites=S,metadata=M` for each configuration.
fn config_names(configs: &[(&str, &str)]) -> Vec<String> {
    configs
        .iter()
        .map(|(s, m)| format!("sites={s},metadata={m}"))
        .collect()
}

/// The configurations the programs run in.
fn program_configs(quick: bool) -> &'static [(&'static str, &'static str)] {
    if quick {
        &PROGRAM_CONFIGS[..PROGRAM_CONFIGS_QUICK]
    } else {
        &PROGRAM_CONFIGS
    }
}

/// The levels a program runs at.
fn program_levels(p: &Program, quick: bool) -> Vec<OptLevel> {
    if quick {
        p.quick_levels.to_vec()
    } else {
        vec![OptLevel::O0, OptLevel::O2]
    }
}

/// A program's arguments at `level`.
fn program_args(p: &Program, level: OptLevel, quick: bool) -> Vec<String> {
    let args = match (quick, level) {
        (true, _) => p.args_quick,
        (false, OptLevel::O0) => p.args_o0,
        (false, _) => p.args_o2,
    };
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// A suite kernel's arguments at O0 and at O2.
fn suite_args(k: &kernels::Kernel, quick: bool) -> (Vec<String>, Vec<String>) {
    let strings = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    if quick {
        let small = strings(k.args(Size::Small));
        return (small.clone(), small);
    }
    let (_, o0, o2) = SUITE_FULL
        .iter()
        .find(|(name, _, _)| *name == k.name)
        .copied()
        .unwrap_or((k.name, k.small, k.small));
    (strings(o0), strings(o2))
}

/// Runs one guest at one level in every configuration, a fresh engine per repetition; one row
/// per configuration.
fn measure(
    guest: &Guest,
    opt_level: OptLevel,
    reps: usize,
    capture: &mut Capture,
    progress: &Progress,
) -> Result<Vec<Row>> {
    let level = format!("O{}", opt_level.as_u8());
    let mut m = Measured::new(CONFIGS.len());
    let mut reference: Option<u64> = None;
    // An untimed run of the baseline: warms the allocator and checks the output.
    let warm = build(guest, opt_level, CONFIGS[0])?;
    run_once(guest, &warm, capture, &mut reference)?;
    drop(warm);
    let indices: Vec<usize> = (0..CONFIGS.len()).collect();
    m.cpu_ms = harness::interleave(&indices, reps, |&i| {
        let started = Instant::now();
        let engine = build(guest, opt_level, CONFIGS[i])?;
        m.compile_ms[i].push(ms(started.elapsed()));
        m.sites[i] = site_counts(&engine);
        let (cpu, wall) = run_once(guest, &engine, capture, &mut reference)?;
        m.wall_ms[i].push(ms(wall));
        progress.step(&format!(
            "{} {level} {}/{}",
            guest.name, CONFIGS[i].0, CONFIGS[i].1
        ));
        Ok(ms(cpu))
    })?;
    Ok(m.rows(guest.name, &level, &CONFIGS))
}

/// Runs a corpus program at one level in each of `configs` (the first the baseline): one engine
/// per configuration, each run once first (its lazy compilation: the `first_run_ms` values),
/// then `reps` runs interleaved across the configurations on the same engines (the steady
/// state: `median_ms`). One row per configuration.
fn measure_program(
    guest: &Guest,
    opt_level: OptLevel,
    configs: &[(&str, &str)],
    reps: usize,
    capture: &mut Capture,
    progress: &Progress,
) -> Result<Vec<Row>> {
    let level = format!("O{}", opt_level.as_u8());
    let mut m = Measured::new(configs.len());
    let mut reference: Option<u64> = None;
    let mut engines = Vec::with_capacity(configs.len());
    let mut first_ms = Vec::with_capacity(configs.len());
    for (i, &config) in configs.iter().enumerate() {
        let started = Instant::now();
        let engine = build(guest, opt_level, config)?;
        m.compile_ms[i].push(ms(started.elapsed()));
        m.sites[i] = site_counts(&engine);
        let (cpu, _) = run_once(guest, &engine, capture, &mut reference)?;
        first_ms.push(ms(cpu));
        progress.step(&format!(
            "{} {level} {}/{} (first run)",
            guest.name, config.0, config.1
        ));
        engines.push(engine);
    }
    let indices: Vec<usize> = (0..configs.len()).collect();
    m.cpu_ms = harness::interleave(&indices, reps, |&i| {
        let (cpu, wall) = run_once(guest, &engines[i], capture, &mut reference)?;
        m.wall_ms[i].push(ms(wall));
        progress.step(&format!(
            "{} {level} {}/{}",
            guest.name, configs[i].0, configs[i].1
        ));
        Ok(ms(cpu))
    })?;
    let rows = m.rows(guest.name, &level, configs);
    Ok(rows
        .into_iter()
        .zip(&first_ms)
        .map(|(row, &first)| {
            row.value("first_run_ms", first)
                .value("first_run_ratio", first / first_ms[0])
        })
        .collect())
}

/// What one guest at one level gave, per configuration.
struct Measured {
    /// CPU times of the timed runs.
    cpu_ms: Vec<Vec<f64>>,
    wall_ms: Vec<Vec<f64>>,
    compile_ms: Vec<Vec<f64>>,
    /// `(call, loop)` site counts.
    sites: Vec<(usize, usize)>,
}

impl Measured {
    fn new(configs: usize) -> Measured {
        Measured {
            cpu_ms: vec![Vec::new(); configs],
            wall_ms: vec![Vec::new(); configs],
            compile_ms: vec![Vec::new(); configs],
            sites: vec![(0, 0); configs],
        }
    }

    /// One row per configuration, the first of `configs` being the baseline.
    fn rows(&self, name: &str, level: &str, configs: &[(&str, &str)]) -> Vec<Row> {
        let base = harness::median(&self.cpu_ms[0]);
        let mut rows = Vec::new();
        for (i, (s, m)) in configs.iter().enumerate() {
            let median_ms = harness::median(&self.cpu_ms[i]);
            let ratio = median_ms / base;
            let paired: Vec<f64> = self.cpu_ms[i]
                .iter()
                .zip(&self.cpu_ms[0])
                .map(|(x, b)| x / b)
                .collect();
            rows.push(
                Row::new()
                    .key("kernel", name)
                    .key("opt", level)
                    .key("sites", s)
                    .key("metadata", m)
                    .value("median_ms", median_ms)
                    .value("wall_ms", harness::median(&self.wall_ms[i]))
                    .value("ratio", ratio)
                    .value("overhead_pct", (ratio - 1.0) * 100.0)
                    .value("spread_pct", iqr(&paired) * 100.0)
                    .value("call_sites_count", self.sites[i].0 as f64)
                    .value("loop_sites_count", self.sites[i].1 as f64)
                    .value("compile_ms", harness::median(&self.compile_ms[i])),
            );
        }
        rows
    }
}

/// A duration in milliseconds.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A compiled engine of `guest` in configuration `(sites, metadata)`.
fn build(guest: &Guest, opt_level: OptLevel, (sites, metadata): (&str, &str)) -> Result<Engine> {
    let what = |e: uppercut_core::Error| {
        measurement(format!(
            "{} at O{} with sites={sites},metadata={metadata}: {e}",
            guest.name,
            opt_level.as_u8()
        ))
    };
    let options = EngineOptions {
        opt_level,
        instrument: instrumentation(sites, metadata),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(&guest.ir, &guest.origin, options).map_err(what)?;
    if sites != "none" {
        engine
            .register_callback(SITE_CALLBACK, never)
            .map_err(what)?;
    }
    engine.register_callback("never", never).map_err(what)?;
    engine.compile().map_err(what)?;
    Ok(engine)
}

/// Runs the guest once on this thread; the thread's CPU time and the wall time it took.
/// Checks its output (or result) against `reference`, which the first call of a `Kernel`
/// guest sets.
fn run_once(
    guest: &Guest,
    engine: &Engine,
    capture: &mut Capture,
    reference: &mut Option<u64>,
) -> Result<(Duration, Duration)> {
    match &guest.entry {
        Entry::Main { args, expected } => {
            let (outcome, printed) = capture.run(|| {
                let (cpu, wall) = (cputime::thread(), Instant::now());
                let status = engine.run_main(guest.name, args);
                (status, (cputime::thread() - cpu, wall.elapsed()))
            })?;
            let (status, elapsed) = outcome;
            let status = status.map_err(|e| measurement(format!("{}: {e}", guest.name)))?;
            if status != 0 || printed != *expected {
                return Err(measurement(format!(
                    "{} {} exited {status} and printed {printed:?}, natively {expected:?}",
                    guest.name,
                    args.join(" ")
                )));
            }
            Ok(elapsed)
        }
        Entry::Kernel { arg } => {
            let (cpu, wall) = (cputime::thread(), Instant::now());
            let result = engine
                .call("kernel", &[std::hint::black_box(*arg)])
                .map_err(|e| measurement(format!("{}: {e}", guest.name)))?;
            let elapsed = (cputime::thread() - cpu, wall.elapsed());
            match reference {
                None => *reference = Some(result),
                Some(r) if *r != result => {
                    return Err(measurement(format!(
                        "{}({arg}) returned {result}, the baseline {r}",
                        guest.name
                    )));
                }
                Some(_) => {}
            }
            Ok(elapsed)
        }
    }
}

/// Call sites (that carry state) and loop sites of an engine.
fn site_counts(engine: &Engine) -> (usize, usize) {
    engine.osr().map_or((0, 0), |osr| {
        let sites = osr.sites();
        let calls = sites
            .iter()
            .filter(|s| matches!(s.kind, SiteKind::Call { .. }) && s.refused.is_none())
            .count();
        let loops = sites.iter().filter(|s| s.kind == SiteKind::Loop).count();
        (calls, loops)
    })
}

/// The interquartile range of `samples` (0 for fewer than two).
fn iqr(samples: &[f64]) -> f64 {
    let mut s: Vec<f64> = samples.to_vec();
    if s.len() < 2 {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let x = q * (s.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
    };
    at(0.75) - at(0.25)
}

/// Summary rows over the suite kernels, per level and configuration.
fn summarise(report: &mut Report, suite: &[&kernels::Kernel]) {
    let mut rows = Vec::new();
    for level in ["O0", "O2"] {
        for (s, m) in CONFIGS.iter().skip(1) {
            let ratios: Vec<f64> = suite
                .iter()
                .filter_map(|k| {
                    report.value(
                        &[
                            ("kernel", k.name),
                            ("opt", level),
                            ("sites", s),
                            ("metadata", m),
                        ],
                        "ratio",
                    )
                })
                .collect();
            if ratios.is_empty() {
                continue;
            }
            let geomean = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
            let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            rows.push(
                Row::new()
                    .key("kernel", "all")
                    .key("opt", level)
                    .key("sites", s)
                    .key("metadata", m)
                    .value("ratio", geomean)
                    .value("overhead_pct", (geomean - 1.0) * 100.0)
                    .value("max_overhead_pct", (max - 1.0) * 100.0),
            );
        }
    }
    for row in rows {
        report.push(row);
    }
}

/// Notes the noise observed and the largest overheads.
fn note_extremes(report: &mut Report) {
    let spreads: Vec<f64> = report
        .rows
        .iter()
        .filter(|r| r.key_of("sites") != Some("none"))
        .filter_map(|r| r.get("spread_pct"))
        .collect();
    if !spreads.is_empty() {
        report.note(format!(
            "noise: interquartile range of the per-repetition ratios, median {:.1}% and largest \
             {:.1}% over the instrumented rows",
            harness::median(&spreads),
            spreads.iter().copied().fold(0.0, f64::max)
        ));
    }
    let worst: Vec<String> = report
        .rows
        .iter()
        .filter(|r| r.key_of("kernel") != Some("all") && r.key_of("sites") != Some("none"))
        .filter(|r| r.get("overhead_pct").is_some_and(|p| p > 5.0))
        .map(|r| {
            format!(
                "{} {:+.1}%",
                r.key_text(),
                r.get("overhead_pct").unwrap_or(0.0)
            )
        })
        .collect();
    if !worst.is_empty() {
        report.note(format!("overheads above 5%: {}", worst.join("; ")));
    }
}

/// A [`Error::Measurement`].
fn measurement(reason: impl Into<String>) -> Error {
    Error::Measurement {
        reason: reason.into(),
    }
}

/// An [`Error::Io`].
fn io(context: impl Into<String>, source: std::io::Error) -> Error {
    Error::Io {
        context: context.into(),
        source,
    }
}

/// LLVM 19's `opt`: `$UPPERCUT_OPT`, else the first of `opt-19` and `opt` that reports
/// version 19.
fn find_opt() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("UPPERCUT_OPT") {
        Some(path) => vec![path.into()],
        None => vec!["opt-19".into(), "opt".into()],
    };
    let mut tried = Vec::new();
    for candidate in candidates {
        match Command::new(&candidate).arg("--version").output() {
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("LLVM version 19") => {
                return Ok(candidate);
            }
            Ok(_) => tried.push(format!("`{}`: not LLVM 19", candidate.display())),
            Err(e) => tried.push(format!("`{}`: {e}", candidate.display())),
        }
    }
    Err(Error::MissingProgram {
        reason: format!(
            "exp-overhead needs LLVM 19's `opt` for its O0 input (set UPPERCUT_OPT); tried {}",
            tried.join(", ")
        ),
    })
}

/// The IR a guest runs at `opt_level`: clang's `-O2` IR, or at O0 the promoted IR (see the
/// docs).
fn guest_ir(
    clang: &Clang,
    opt: &Path,
    name: &str,
    source: &str,
    opt_level: OptLevel,
) -> Result<String> {
    if opt_level != OptLevel::O0 {
        let ir = clang.compile_ir(name, source, opt_level)?;
        return std::fs::read_to_string(ir.path())
            .map_err(|e| io(format!("reading {}", ir.path().display()), e));
    }
    let dir = tempfile::Builder::new()
        .prefix(&format!("uppercut-overhead-{name}-"))
        .tempdir()
        .map_err(|e| io("creating a temporary folder", e))?;
    let c = dir.path().join(format!("{name}.c"));
    let raw = dir.path().join(format!("{name}.O0.ll"));
    let promoted = dir.path().join(format!("{name}.promoted.ll"));
    std::fs::write(&c, source).map_err(|e| io(format!("writing {}", c.display()), e))?;
    let mut clang_cmd = Command::new(clang.command());
    clang_cmd
        .args([
            "-O0",
            "-Xclang",
            "-disable-O0-optnone",
            "-pthread",
            "-S",
            "-emit-llvm",
        ])
        .arg(&c)
        .arg("-o")
        .arg(&raw);
    checked(&mut clang_cmd)?;
    let mut opt_cmd = Command::new(opt);
    opt_cmd
        .args(["-passes=function(sroa<modify-cfg>,mem2reg)", "-S"])
        .arg(&raw)
        .arg("-o")
        .arg(&promoted);
    checked(&mut opt_cmd)?;
    std::fs::read_to_string(&promoted).map_err(|e| io(format!("reading {}", promoted.display()), e))
}

/// The bitcode a corpus program runs at `opt_level`: the corpus module at O2, or at O0 the
/// corpus's `-O0` module promoted as the kernels' O0 IR is (see the docs).
fn program_ir(opt: &Path, dir: &Path, name: &str, opt_level: OptLevel) -> Result<Vec<u8>> {
    let level = format!("O{}", opt_level.as_u8());
    let module = corpus::module(dir, name, &level);
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| io(format!("reading {}", path.display()), e));
    if opt_level != OptLevel::O0 {
        return read(&module);
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!("uppercut-overhead-{name}-"))
        .tempdir()
        .map_err(|e| io("creating a temporary folder", e))?;
    let promoted = tmp.path().join(format!("{name}-O0.promoted.bc"));
    let mut opt_cmd = Command::new(opt);
    opt_cmd
        .arg("-passes=function(sroa<modify-cfg>,mem2reg)")
        .arg(&module)
        .arg("-o")
        .arg(&promoted);
    checked(&mut opt_cmd)?;
    read(&promoted)
}

/// Runs a build step; an error with its stderr if it fails.
fn checked(command: &mut Command) -> Result<()> {
    let what = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(measurement(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// What the native executable prints with `args`.
fn native_stdout(exe: &Path, args: &[String]) -> Result<String> {
    let t = harness::run_timed(Command::new(exe).args(args), Duration::from_secs(120))?;
    if !t.status.success() {
        return Err(measurement(format!(
            "{} {} natively: {} ({})",
            exe.display(),
            args.join(" "),
            t.status,
            t.stderr.trim()
        )));
    }
    Ok(t.stdout)
}

/// Standard output (file descriptor 1) pointed at a temporary file while a guest runs.
struct Capture {
    file: File,
}

impl Capture {
    fn new() -> Result<Capture> {
        let file = tempfile::tempfile().map_err(|e| io("creating a temporary file", e))?;
        Ok(Capture { file })
    }

    /// Runs `f` with file descriptor 1 on the capture file; `f`'s result and what was
    /// written to standard output (by the guest's stdio) meanwhile.
    fn run<T>(&mut self, f: impl FnOnce() -> T) -> Result<(T, String)> {
        std::io::stdout()
            .flush()
            .map_err(|e| io("flushing stdout", e))?;
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .map_err(|e| io("clearing the capture file", e))?;
        // SAFETY: `fflush(NULL)` flushes every open stdio stream; `dup(1)` duplicates a
        // descriptor this process owns (or fails, checked). No other thread of this process
        // writes to stdout while a guest runs (the progress bar writes to stderr).
        let saved = unsafe {
            libc::fflush(std::ptr::null_mut());
            libc::dup(1)
        };
        if saved < 0 {
            return Err(io("duplicating stdout", std::io::Error::last_os_error()));
        }
        // SAFETY: both descriptors are open (the capture file is owned by `self`); descriptor 1
        // now refers to the capture file until it is restored below.
        if unsafe { libc::dup2(self.file.as_raw_fd(), 1) } < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: `saved` is the descriptor `dup` returned above, closed once.
            unsafe { libc::close(saved) };
            return Err(io("redirecting stdout", e));
        }
        let result = f();
        // SAFETY: flushes the guest's buffered output into the capture file, then points
        // descriptor 1 back at the original stdout and closes the duplicate, which was opened
        // above and is used nowhere else.
        let restored = unsafe {
            libc::fflush(std::ptr::null_mut());
            let r = libc::dup2(saved, 1);
            libc::close(saved);
            r
        };
        if restored < 0 {
            return Err(io("restoring stdout", std::io::Error::last_os_error()));
        }
        let mut printed = String::new();
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_string(&mut printed))
            .map_err(|e| io("reading the capture file", e))?;
        Ok((result, printed))
    }
}
