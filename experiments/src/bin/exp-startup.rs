//! Experiment 8, compilation that scales: what lazy compilation and the version cache buy.
//!
//! # Startup (rows with `runner`)
//!
//! The SQLite amalgamation with the driver of `experiments/corpus/` (built by
//! `experiments/corpus/build.sh`, about 270,000 lines, 2,580 functions at clang `-O0`), one
//! trivial session (a five-row table, one aggregate). Each runner is a child process; timed are
//! the wall time from spawn to the first line on its stdout (the driver prints it first thing in
//! `main`): `first_line_ms`, and to its exit: `whole_ms` (medians over the repetitions,
//! interleaved). Runners: `uppercut run -O0|-O2` with `--compile=lazy` (the default) and
//! `--compile=eager`; `lli-19 -jit-kind=mcjit -O0|-O2` (the same JIT, whole module, codegen at
//! that level); `lli-19` (its default ORC JIT, which compiles the whole module with codegen at O2
//! whatever `-O` says). `lli_ratio` is the matching `lli-19 -jit-kind=mcjit` runner's `whole_ms`
//! over this one's (how many times faster than lli), `lli_first_ratio` the same for
//! `first_line_ms`. Inputs: `O0.bc` (clang `-O0 -Xclang -disable-O0-optnone` bitcode); the full
//! configuration adds `O2.bc` and `O0.ll` (text, parsed whole). Every run's output must be the
//! native build's.
//!
//! # Flips (rows with `what=flip`)
//!
//! In process: a guest whose function `work` (about 100 instructions, one loop) reads the global
//! `mode`, on an O2 engine instrumented with store sites on `mode`. One flip is
//! [`Engine::compile_version`] of `work` specialised on `mode` = 0 or 1 in turn, relinked, then
//! a call of `work` that must give the value for that mode. `cache=on` is the default engine
//! (after the first two flips both versions exist: each flip relinks one, `reused` counts them);
//! `cache=off` sets [`EngineOptions::version_cache`] to 0 (each flip compiles). Values:
//! `flip_us` (median of the flips after the first two), `reused`.
//!
//! # Tiers (rows with `what=tier`)
//!
//! The same `work`, compiled unrelinked (so never from the cache) at O0 and at O2: `ir_us`
//! (extraction, specialisation, the pipeline), `codegen_us` (code generation and loading),
//! `total_us` (medians). Interleaved with the O2 compilations, LLVM alone on the same IR (the
//! row `what=llvm-floor`): a fresh context, the module parsed (not timed), `default<O2>`
//! (`ir_us`), code generation into an object in memory with a target machine made once
//! (`codegen_us`), the floor that Uppercut's optimising tier is measured against; the O2 tier
//! row's `llvm_ratio` is its `total_us` over the floor's.
//!
//! # Steady state (rows with `kernel`)
//!
//! Each kernel of the suite (quick: `nbody` and `interp` at their small size), clang -O2 IR,
//! `uppercut run -O2` lazily and eagerly: CPU time of the child, `lazy_s`, `eager_s` (medians),
//! and `ratio` = `lazy_s / eager_s` (lazy compilation must not slow a run down).
//!
//! `cargo run --release -p uppercut-experiments --bin exp-startup -- [--quick] [--out FILE]`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use uppercut_core::{Engine, EngineOptions, Instrumentation, OptLevel, VersionRequest};
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result, Size, corpus, cputime, kernels};

fn main() {
    harness::main(
        "startup",
        "Compilation that scales: lazy startup, version reuse, steady state",
        run,
    )
}

/// The guest of the flip and tier rows: `work` reads `mode` in its loop.
const FLIP: &str = r#"
int mode;
unsigned long work(unsigned long n) {
    unsigned long a = n, b = 0x9e3779b97f4a7c15ul, c = 0xbf58476d1ce4e5b9ul;
    unsigned long d = 0x94d049bb133111ebul, e = 1, f = 3, g = 5, h = 7;
    for (unsigned long i = 0; i < n; i++) {
        a += b ^ (c >> 7);
        b = (b << 13 | b >> 51) * 5 + i;
        c ^= a * 0x2545f4914f6cdd1dul;
        d += (c >> 29) ^ (a << 3);
        e = e * 6364136223846793005ul + 1442695040888963407ul;
        f ^= e >> 33;
        if (mode)
            g += (f * 0xff51afd7ed558ccdul) >> 17;
        else
            g ^= f;
        h = (h ^ g) * 0xc4ceb9fe1a85ec53ul;
        a ^= h >> 31;
        b += d ^ (g << 11);
        c = (c << 17 | c >> 47) + f;
        if ((a & 255) == 17)
            e += d;
        else
            f -= c;
        h += (a ^ b ^ c ^ d) >> 3;
    }
    return a ^ b ^ c ^ d ^ e ^ f ^ g ^ h;
}
"#;

/// A startup runner: a label and the command line before the input file.
struct Runner {
    name: &'static str,
    program: Program,
    args: &'static [&'static str],
    /// The `lli-19 -jit-kind=mcjit` runner at the same codegen level, for the ratios.
    lli: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    Uppercut,
    Lli,
}

const RUNNERS: [Runner; 7] = [
    Runner {
        name: "uppercut-O0-lazy",
        program: Program::Uppercut,
        args: &["run", "-O0", "--compile=lazy"],
        lli: Some("lli-mcjit-O0"),
    },
    Runner {
        name: "uppercut-O0-eager",
        program: Program::Uppercut,
        args: &["run", "-O0", "--compile=eager"],
        lli: Some("lli-mcjit-O0"),
    },
    Runner {
        name: "lli-mcjit-O0",
        program: Program::Lli,
        args: &["-jit-kind=mcjit", "-O0"],
        lli: None,
    },
    Runner {
        name: "uppercut-O2-lazy",
        program: Program::Uppercut,
        args: &["run", "-O2", "--compile=lazy"],
        lli: Some("lli-mcjit-O2"),
    },
    Runner {
        name: "uppercut-O2-eager",
        program: Program::Uppercut,
        args: &["run", "-O2", "--compile=eager"],
        lli: Some("lli-mcjit-O2"),
    },
    Runner {
        name: "lli-mcjit-O2",
        program: Program::Lli,
        args: &["-jit-kind=mcjit", "-O2"],
        lli: None,
    },
    Runner {
        name: "lli-orc",
        program: Program::Lli,
        args: &[],
        lli: None,
    },
];

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let clang = Clang::find()?;
    report.environment.clang = clang.version().to_owned();
    // Comparable between runs on one machine: whether flips reuse versions (exactly), and
    // lazy against eager steady state (ratios of CPU times).
    report.check("reused", 0.0);
    report.check("ratio", 0.25);
    startup(args, report)?;
    flips(args, report, &clang)?;
    steady_state(args, report, &clang)
}

fn measurement(reason: impl Into<String>) -> Error {
    Error::Measurement {
        reason: reason.into(),
    }
}

fn startup(args: &Args, report: &mut Report) -> Result<()> {
    let dir = corpus::build(&["sqlite"])?;
    let uppercut = harness::uppercut()?;
    let inputs: &[&str] = if args.quick {
        &["O0.bc"]
    } else {
        &["O0.bc", "O2.bc", "O0.ll"]
    };
    let runners: Vec<&Runner> = RUNNERS
        .iter()
        .filter(|r| !args.quick || !r.name.contains("O2") || r.name == "uppercut-O2-lazy")
        .collect();
    let reps = if args.quick { 1 } else { 3 };
    report.setting("startup_inputs", inputs);
    report.setting(
        "startup_runners",
        runners.iter().map(|r| r.name).collect::<Vec<_>>(),
    );
    report.setting("startup_repetitions", reps);
    report.setting(
        "startup_guest",
        "SQLite (libsqlite3-sys 0.40.0's amalgamation) + experiments/corpus/sqlite/driver.c, \
         trivial run, built by experiments/corpus/build.sh",
    );
    let native =
        harness::run_to_first_line(&mut Command::new(corpus::native(&dir, "sqlite")))?.stdout;
    let progress = Progress::new(args, "startup", inputs.len() * runners.len() * reps);
    for input in inputs {
        let file = dir.join(format!("sqlite-{input}"));
        let indices: Vec<usize> = (0..runners.len()).collect();
        let mut firsts = vec![Vec::new(); runners.len()];
        let wholes = harness::interleave(&indices, reps, |&i| {
            let runner = runners[i];
            let mut command = match runner.program {
                Program::Uppercut => Command::new(&uppercut),
                Program::Lli => Command::new("lli-19"),
            };
            command.args(runner.args).arg(&file);
            let run = harness::run_to_first_line(&mut command)?;
            let (first, whole, out) = (run.first_line, run.wall, run.stdout);
            if out != native {
                return Err(measurement(format!(
                    "{} on {input} printed {out:?}, natively {native:?}",
                    runner.name
                )));
            }
            progress.step(runner.name);
            firsts[i].push(first.as_secs_f64() * 1000.0);
            Ok(whole.as_secs_f64() * 1000.0)
        })?;
        let medians: Vec<(f64, f64)> = firsts
            .iter()
            .zip(&wholes)
            .map(|(f, w)| (harness::median(f), harness::median(w)))
            .collect();
        let of = |name: &str| {
            runners
                .iter()
                .position(|r| r.name == name)
                .map(|i| medians[i])
        };
        for (runner, &(first_ms, whole_ms)) in runners.iter().zip(&medians) {
            let mut row = Row::new()
                .key("program", "sqlite")
                .key("input", input)
                .key("runner", runner.name)
                .value("first_line_ms", first_ms)
                .value("whole_ms", whole_ms);
            if let Some((lli_first, lli_whole)) = runner.lli.and_then(of) {
                row = row
                    .value("lli_ratio", lli_whole / whole_ms)
                    .value("lli_first_ratio", lli_first / first_ms);
            }
            report.push(row);
        }
    }
    Ok(())
}

fn flip_engine(ir: &Path, cache: bool) -> Result<Engine> {
    let options = EngineOptions {
        opt_level: OptLevel::O2,
        instrument: Some(Instrumentation {
            loop_sites: false,
            entry_sites: false,
            store_sites: vec!["mode".to_owned()],
            initial_count: i64::MAX,
            ..Instrumentation::default()
        }),
        version_cache: if cache { 64 } else { 0 },
        ..EngineOptions::default()
    };
    Engine::from_file(ir, options).map_err(|e| measurement(format!("the flip guest: {e}")))
}

fn flips(args: &Args, report: &mut Report, clang: &Clang) -> Result<()> {
    let ir = clang.compile_ir("flip", FLIP, OptLevel::O2)?;
    let flips = if args.quick { 20 } else { 200 };
    let tiers = if args.quick { 5 } else { 31 };
    report.setting("flips", flips);
    report.setting("tier_compiles", tiers);
    let progress = Progress::new(args, "flips", 2 * flips + 2 * tiers);
    let core = |e: uppercut_core::Error| measurement(format!("the flip guest: {e}"));
    // The value `work(100)` returns with `mode` at 0 and at 1, unspecialised.
    let plain = flip_engine(ir.path(), true)?;
    let mode = plain.global_address("mode").map_err(core)? as *mut i32;
    let mut expected = [0u64; 2];
    for (value, slot) in expected.iter_mut().enumerate() {
        // SAFETY: `mode` is the guest's `int`, which no guest code runs against meanwhile.
        unsafe { mode.write(value as i32) };
        *slot = plain.call("work", &[100]).map_err(core)?;
    }
    for cache in [true, false] {
        let e = flip_engine(ir.path(), cache)?;
        let mode = e.global_address("mode").map_err(core)? as *mut i32;
        let mut times = Vec::new();
        let mut reused = 0usize;
        for i in 0..flips {
            let value = i % 2;
            // SAFETY: as above: the store the guest would have made, before the hypercall.
            unsafe { mode.write(value as i32) };
            let mut request = VersionRequest::new("work", OptLevel::O2);
            request.specialisation = vec![("mode".to_owned(), value as u64)];
            let started = Instant::now();
            let done = e.compile_version(&request).map_err(core)?;
            let took = started.elapsed();
            if e.call("work", &[100]).map_err(core)? != expected[value] {
                return Err(measurement(format!(
                    "work(100) with mode={value} gave a wrong result after flip {i}"
                )));
            }
            if i >= 2 {
                times.push(took.as_secs_f64() * 1e6);
                reused += usize::from(done.reused);
            }
            progress.step(if cache {
                "flip cached"
            } else {
                "flip recompiled"
            });
        }
        report.push(
            Row::new()
                .key("what", "flip")
                .key("function", "work")
                .key("cache", if cache { "on" } else { "off" })
                .value("flip_us", harness::median(&times))
                .value("reused", reused as f64),
        );
    }
    let e = flip_engine(ir.path(), false)?;
    let floor = LlvmFloor::new(ir.path())?;
    let (mut floor_ir_us, mut floor_codegen_us, mut floor_total_us) =
        (Vec::new(), Vec::new(), Vec::new());
    for opt in [OptLevel::O0, OptLevel::O2] {
        let (mut ir_us, mut codegen_us, mut total_us) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..tiers {
            if opt == OptLevel::O2 {
                let (ir, codegen) = floor.compile()?;
                floor_ir_us.push(ir.as_secs_f64() * 1e6);
                floor_codegen_us.push(codegen.as_secs_f64() * 1e6);
                floor_total_us.push((ir + codegen).as_secs_f64() * 1e6);
            }
            let mut request = VersionRequest::new("work", opt);
            request.relink = false;
            let done = e.compile_version(&request).map_err(core)?;
            e.retire_unit(done.version.unit).map_err(core)?;
            ir_us.push(done.times.ir.as_secs_f64() * 1e6);
            codegen_us.push(done.times.codegen.as_secs_f64() * 1e6);
            total_us.push((done.times.ir + done.times.codegen).as_secs_f64() * 1e6);
            progress.step("tier");
        }
        let total = harness::median(&total_us);
        let mut row = Row::new()
            .key("what", "tier")
            .key("function", "work")
            .key("opt", opt)
            .value("ir_us", harness::median(&ir_us))
            .value("codegen_us", harness::median(&codegen_us))
            .value("total_us", total);
        if opt == OptLevel::O2 {
            row = row.value("llvm_ratio", total / harness::median(&floor_total_us));
        }
        report.push(row);
    }
    report.push(
        Row::new()
            .key("what", "llvm-floor")
            .key("function", "work")
            .key("opt", OptLevel::O2)
            .value("ir_us", harness::median(&floor_ir_us))
            .value("codegen_us", harness::median(&floor_codegen_us))
            .value("total_us", harness::median(&floor_total_us)),
    );
    Ok(())
}

/// LLVM on its own, for the floor of the optimising tier: `default<O2>` and code generation of
/// a guest module, each time in a fresh context, with one target machine made as Uppercut makes
/// its own (the process's triple, each function's CPU from its attributes, the JIT code model).
struct LlvmFloor {
    ir: Vec<u8>,
    machine: TargetMachine,
}

impl LlvmFloor {
    fn new(path: &Path) -> Result<LlvmFloor> {
        let fail = |what: &str, e: String| measurement(format!("LLVM alone: {what}: {e}"));
        Target::initialize_native(&InitializationConfig::default())
            .map_err(|e| fail("the native target", e))?;
        let triple = TargetMachine::get_default_triple();
        let target = Target::from_triple(&triple).map_err(|e| fail("the target", e.to_string()))?;
        let machine = target
            .create_target_machine(
                &triple,
                "",
                "",
                inkwell::OptimizationLevel::Default,
                RelocMode::Default,
                CodeModel::JITDefault,
            )
            .ok_or_else(|| fail("the target machine", "none for the host".to_owned()))?;
        let ir = std::fs::read(path).map_err(|e| fail("reading the guest", e.to_string()))?;
        Ok(LlvmFloor { ir, machine })
    }

    /// One compilation: the time of `default<O2>` and of code generation.
    fn compile(&self) -> Result<(Duration, Duration)> {
        let fail = |what: &str, e: String| measurement(format!("LLVM alone: {what}: {e}"));
        let context = Context::create();
        let buffer = MemoryBuffer::create_from_memory_range_copy(&self.ir, "floor");
        let module = context
            .create_module_from_ir(buffer)
            .map_err(|e| fail("parsing", e.to_string()))?;
        let started = Instant::now();
        module
            .run_passes("default<O2>", &self.machine, PassBuilderOptions::create())
            .map_err(|e| fail("default<O2>", e.to_string()))?;
        let optimised = Instant::now();
        let object = self
            .machine
            .write_to_memory_buffer(&module, FileType::Object)
            .map_err(|e| fail("code generation", e.to_string()))?;
        let generated = Instant::now();
        if object.get_size() == 0 {
            return Err(fail("code generation", "an empty object".to_owned()));
        }
        Ok((optimised - started, generated - optimised))
    }
}

fn steady_state(args: &Args, report: &mut Report, clang: &Clang) -> Result<()> {
    let uppercut = harness::uppercut()?;
    let (chosen, size, reps): (Vec<_>, Size, usize) = if args.quick {
        let pick = kernels::kernels()
            .iter()
            .filter(|k| ["nbody", "interp"].contains(&k.name))
            .collect();
        (pick, Size::Small, 1)
    } else {
        (kernels::kernels().iter().collect(), Size::Full, 3)
    };
    report.setting(
        "steady_kernels",
        chosen.iter().map(|k| k.name).collect::<Vec<_>>(),
    );
    report.setting("steady_repetitions", reps);
    let progress = Progress::new(args, "steady", chosen.len() * reps * 2);
    for kernel in chosen {
        let ir = clang.compile_ir(kernel.name, kernel.source, OptLevel::O2)?;
        let modes = ["--compile=lazy", "--compile=eager"];
        let mut outputs: Vec<String> = Vec::new();
        let samples = harness::interleave(&modes, reps, |mode| {
            let before = cputime::children();
            let timed = harness::run_timed(
                Command::new(&uppercut)
                    .args(["run", "-O2", mode])
                    .arg(ir.path())
                    .args(kernel.args(size)),
                Duration::from_secs(600),
            )?;
            let cpu = cputime::children().saturating_sub(before);
            if !timed.status.success() {
                return Err(measurement(format!(
                    "{} {mode} failed: {}",
                    kernel.name, timed.stderr
                )));
            }
            outputs.push(timed.stdout);
            progress.step(kernel.name);
            Ok(cpu.as_secs_f64())
        })?;
        if outputs.windows(2).any(|w| w[0] != w[1]) {
            return Err(measurement(format!(
                "{}: lazy and eager runs printed different output",
                kernel.name
            )));
        }
        let (lazy, eager) = (harness::median(&samples[0]), harness::median(&samples[1]));
        report.push(
            Row::new()
                .key("kernel", kernel.name)
                .value("lazy_s", lazy)
                .value("eager_s", eager)
                .value("ratio", lazy / eager),
        );
    }
    Ok(())
}
