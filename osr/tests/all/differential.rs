//! Differential tests: every C program in `tests/programs/` is compiled by clang-19 at -O0 and
//! -O2, once into a native executable and once into LLVM IR (`.ll`, and `.bc` for some), and the
//! IR is run by `uppercut run` at the same level. For every case the program declares, the
//! native run and the JIT run must print the same bytes on stdout and stderr and end the same
//! way (exit status or signal); the native run must also end as the case declares, which is how
//! the self-checking programs report their own failures.
//!
//! One `#[test]` per program and runner variant, named `differential::VARIANT::PROGRAM`.
//! `UPPERCUT_DIFF_RUNNER="lli-19 --jit-kind=mcjit"` runs the IR with LLVM's lli instead, to
//! check the corpus and this harness independently of uppercut (see the programs' README).

use std::path::{Path, PathBuf};

use crate::support::{
    End, IrFormat, OptLevel, Runner, Scratch, compare, compile_ir, compile_native,
    corpus_program_names, describe_command, parse_cases, program_cases, program_source, run,
    run_build_step, run_command,
};

/// The optimisation levels of the matrix: clang compiles at this level, and the JIT runs the IR
/// at the same level.
const OPT_LEVELS: [OptLevel; 2] = [OptLevel::O0, OptLevel::O2];

/// Programs whose IR is also given to the runner as bitcode (`.bc`), not only as text.
const BITCODE_TOO: &[&str] = &["exit_deep", "globals", "structs", "wide_values"];

/// Calls `$callback!([$arg] program...)` with the name of every program of the matrix: the one
/// list of programs (a test checks it matches the `.c` and `.cpp` files in `tests/programs/`).
macro_rules! programs {
    ($callback:ident $(, $arg:expr)?) => {
        $callback! { [$($arg)?]
            address_taken
            argv
            bintree
            callbacks
            config_loop
            ctors_dtors
            cxx_exceptions
            cxx_statics
            cxx_stl
            cxx_threads
            deep_recursion
            exit_code
            exit_deep
            flip_storm
            floats
            globals
            goto_irreducible
            interpreter
            linkage
            many_live
            mutual_recursion
            quick_exit
            recursion
            setjmp_longjmp
            signals
            stack_save
            stdin_sum
            strings
            structs
            threads
            threads_shared
            varargs
            wide_values
        }
    };
}

macro_rules! program_tests {
    ([$extra:expr] $($name:ident)*) => {
        $(
            #[test]
            fn $name() {
                super::run_matrix(stringify!($name), $extra);
            }
        )*
    };
}

macro_rules! program_names {
    ([] $($name:ident)*) => {
        &[$(stringify!($name)),*]
    };
}

/// A module of one test per program, each running the whole matrix with `$extra` as additional
/// `uppercut run` options. A new runner variant is one line below.
macro_rules! variant {
    ($variant:ident, $extra:expr) => {
        mod $variant {
            programs!(program_tests, $extra);
        }
    };
}

variant!(plain, &[]);
// The whole program compiled before `main`, as lli does (the others compile each function on
// its first call).
variant!(eager_compile, &["--compile=eager"]);
variant!(
    eager_compile_stress_1,
    &["--compile=eager", "--osr=stress=1", "--osr-stats"]
);
variant!(
    eager_compile_tier,
    &[
        "--compile=eager",
        "--osr=tier",
        "--osr-threshold=50",
        "--osr-stats"
    ]
);
// OSR forced at random sites: same output, same end, and frames really moved (the runs give
// `--osr-stats`, whose line is checked and taken off stderr before comparing).
variant!(osr_stress_1, &["--osr=stress=1", "--osr-stats"]);
variant!(osr_stress_2, &["--osr=stress=2", "--osr-stats"]);
variant!(osr_stress_3, &["--osr=stress=3", "--osr-stats"]);
variant!(
    osr_tier,
    &["--osr=tier", "--osr-threshold=50", "--osr-stats"]
);
// Tier-up waiting for its code: hot frames move into final O2 code at the site that fired.
variant!(
    osr_tier_sync,
    &[
        "--osr=tier",
        "--osr-compile=sync",
        "--osr-threshold=50",
        "--osr-stats"
    ]
);
// The same with eager transfers (whose captured slots are poisoned).
variant!(
    osr_eager_stress_1,
    &["--osr=stress=1", "--osr-transfer=eager", "--osr-stats"]
);
variant!(
    osr_eager_stress_2,
    &["--osr=stress=2", "--osr-transfer=eager", "--osr-stats"]
);
variant!(
    osr_multi_stress_1,
    &["--osr=stress=1", "--osr-continuations=multi", "--osr-stats"]
);
variant!(
    osr_eager_tier,
    &[
        "--osr=tier",
        "--osr-threshold=50",
        "--osr-transfer=eager",
        "--osr-stats"
    ]
);

/// Programs that may finish without any frame moving under `--osr`: no loop runs long enough
/// and no function is entered often enough (with the reason).
const NO_TRANSITIONS_EXPECTED: &[(&str, &str)] = &[(
    "threads",
    "every function that loops uses a `_Thread_local`, and a unit other than the base one \
     cannot reach thread-local storage: no continuation can be built (the frames keep running)",
)];

/// The counts of an `uppercut: osr transitions=N frames=M recompiles=K` line, taken off the
/// end of `stderr`.
fn take_osr_stats(stderr: &mut Vec<u8>) -> Option<(u64, u64, u64)> {
    let text = String::from_utf8_lossy(stderr).into_owned();
    let start = text.rfind("uppercut: osr transitions=")?;
    let line = text[start..].lines().next()?.to_owned();
    let mut counts = line
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(_, v)| v.parse::<u64>().ok());
    let parsed = (counts.next()??, counts.next()??, counts.next()??);
    let mut rest = text[..start].to_owned();
    rest.push_str(text[start + line.len()..].trim_start_matches('\n'));
    *stderr = rest.into_bytes();
    Some(parsed)
}

/// Every program of the matrix.
const PROGRAMS: &[&str] = programs!(program_names);

/// Runs `program` through the whole matrix (opt levels × IR formats × its cases) with
/// `extra_uppercut_args` given to `uppercut run` before the file, and panics with a report of
/// every run that differs from native.
pub(crate) fn run_matrix(program: &str, extra_uppercut_args: &[&str]) {
    let runner = Runner::from_env();
    let source = program_source(program);
    let file = source.file_name().unwrap().to_string_lossy().into_owned();
    let cases = program_cases(program);
    let scratch = Scratch::new(program);
    let formats: &[IrFormat] = if BITCODE_TOO.contains(&program) {
        &[IrFormat::Text, IrFormat::Bitcode]
    } else {
        &[IrFormat::Text]
    };

    let mut failures = Vec::new();
    let mut compared = 0usize;
    let stats_expected = extra_uppercut_args.contains(&"--osr-stats");
    // Stress must move frames in every program; other modes only where the program is hot.
    let moves_expected = extra_uppercut_args
        .iter()
        .any(|a| a.starts_with("--osr=stress"));
    let mut transitions = 0u64;
    let mut frames = 0u64;
    let mut stats_runs = 0usize;
    for opt in OPT_LEVELS {
        let native = compile_native(&source, opt, scratch.path());
        let irs: Vec<PathBuf> = formats
            .iter()
            .map(|format| compile_ir(&source, opt, *format, scratch.path()))
            .collect();
        for case in &cases {
            let native_run = run(&native, &case.args, &case.stdin, scratch.path());
            if native_run.timed_out || native_run.end() != Some(case.end) {
                failures.push(format!(
                    "{file} {} native, {}: ends with {}, but the case declares {}\n  \
                     stdout:\n{}  stderr:\n{}",
                    opt.flag(),
                    case.describe(),
                    native_run.describe_end(),
                    case.end,
                    indent(&native_run.stdout),
                    indent(&native_run.stderr),
                ));
                continue;
            }
            for ir in &irs {
                if let (true, Some(reason)) = (runner.is_lli, &case.lli_differs) {
                    eprintln!(
                        "skipped under lli: {file} {} {}: {reason}",
                        opt.flag(),
                        case.describe()
                    );
                    continue;
                }
                let command = runner.command(opt, extra_uppercut_args, ir, &case.args);
                let mut jitted = run_command(command, &case.stdin, scratch.path());
                compared += 1;
                // A run that ends by a signal or `_exit` prints no statistics.
                if stats_expected
                    && !runner.is_lli
                    && let Some((t, f, _)) = take_osr_stats(&mut jitted.stderr)
                {
                    stats_runs += 1;
                    transitions += t;
                    frames += f;
                }
                if let Err(report) = compare(&native_run, &jitted) {
                    failures.push(format!(
                        "{file} {} .{}, {}:\n{report}",
                        opt.flag(),
                        extension(ir),
                        case.describe()
                    ));
                }
            }
        }
    }
    let exempt = NO_TRANSITIONS_EXPECTED.iter().any(|(p, _)| *p == program);
    if stats_expected && !runner.is_lli && stats_runs == 0 {
        failures.push(format!(
            "{file}: no run printed an `uppercut: osr` statistics line"
        ));
    }
    if moves_expected && !runner.is_lli && !exempt && (transitions == 0 || frames == 0) {
        failures.push(format!(
            "{file}: no frame moved under {extra_uppercut_args:?} in any run \
             (transitions={transitions}, frames={frames})"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of the runs of {file} under `{}` differ from native \
         ({compared} compared; set UPPERCUT_DIFF_KEEP=1 to keep the artefacts):\n\n{}",
        failures.len(),
        runner.name(),
        failures.join("\n")
    );
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Output indented for a report, with a marker when it is empty.
fn indent(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "    (empty)\n".into();
    }
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| format!("    {line}\n"))
        .collect()
}

#[test]
fn every_program_is_in_the_matrix() {
    let mut listed: Vec<&str> = PROGRAMS.to_vec();
    listed.sort_unstable();
    assert_eq!(
        corpus_program_names(),
        listed,
        "the `programs!` list in differential.rs must name every .c and .cpp file in \
         tests/programs/"
    );
    for name in BITCODE_TOO {
        assert!(PROGRAMS.contains(name), "BITCODE_TOO names unknown {name}");
    }
}

#[test]
fn every_program_declares_valid_cases() {
    for name in corpus_program_names() {
        let cases = program_cases(&name);
        assert!(!cases.is_empty(), "{name} has no case");
        for case in &cases {
            assert!(
                case.line > 0,
                "{name}: declare its run with an `// uppercut-test:` line"
            );
        }
    }
}

#[test]
fn the_setjmp_program_is_tagged() {
    let cases = program_cases("setjmp_longjmp");
    assert!(
        cases
            .iter()
            .all(|case| case.tags.iter().any(|tag| tag == "setjmp"))
    );
}

// ---------------------------------------------------------------------------------------------
// The hot-swap demo (tests/programs/demo/hotswap.c), outside the matrix.
// ---------------------------------------------------------------------------------------------

/// A stand-in for the engine's hypercall, linked with the demo to run it natively.
const STUB_ENGINE: &str = r#"
#include <stdio.h>
#include <string.h>
struct recompile_request { const char *function; long opt_level; };
void *PerformCustomCallback(const char *name, void *args) {
  static char status[160];
  const struct recompile_request *r = args;
  if (strcmp(name, "uppercut.recompile") != 0)
    return NULL;
  snprintf(status, sizeof status, "stub recompiles %s at O%ld", r->function, r->opt_level);
  return status;
}
"#;

fn demo_source() -> PathBuf {
    program_source("demo/hotswap")
}

/// Builds the demo natively with the stub engine and runs it.
fn run_demo_with_stub(scratch: &Scratch) -> crate::support::Outcome {
    let stub = scratch.path().join("stub_engine.c");
    std::fs::write(&stub, STUB_ENGINE).expect("write the stub engine");
    let exe = scratch.path().join("hotswap.native");
    run_build_step(
        std::process::Command::new(crate::support::clang())
            .arg("-O0")
            .arg(demo_source())
            .arg(&stub)
            .arg("-o")
            .arg(&exe),
    );
    run(&exe, &[], b"", scratch.path())
}

/// The demo's output without the `engine:` lines, the only ones allowed to differ.
fn deterministic_lines(stdout: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|line| !line.starts_with("engine:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn demo_hotswap_runs_natively_with_a_stub_engine() {
    let scratch = Scratch::new("hotswap-stub");
    let out = run_demo_with_stub(&scratch);
    assert_eq!(out.end(), Some(End::Code(0)), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for request in ["hot_kernel", "hot_loop"] {
        assert!(
            text.contains(&format!("requesting recompilation of {request} at O2\n"))
                && text.contains(&format!("engine: stub recompiles {request} at O2\n")),
            "the demo must ask for {request} and print the answer:\n{text}"
        );
    }
    assert_eq!(text.matches(" checksum ").count(), 16, "{text}");
    assert!(text.contains("phase checksums agree"), "{text}");
    assert!(
        text.ends_with("0 mismatches against the reference\nhotswap: ok\n"),
        "{text}"
    );
}

#[test]
fn demo_hotswap_under_uppercut_matches_the_stub_run() {
    let scratch = Scratch::new("hotswap");
    let native = run_demo_with_stub(&scratch);
    let ll = scratch.path().join("hotswap.ll");
    run_build_step(
        std::process::Command::new(crate::support::clang())
            .args(["-O0", "-Xclang", "-disable-O0-optnone", "-S", "-emit-llvm"])
            .arg(demo_source())
            .arg("-o")
            .arg(&ll),
    );
    let command = Runner::uppercut().command(OptLevel::O0, &[], &ll, &[]);
    let described = describe_command(&command);
    let jitted = run_command(command, b"", scratch.path());
    assert_eq!(
        jitted.end(),
        Some(End::Code(0)),
        "{described}: {}\n{}",
        jitted.describe_end(),
        String::from_utf8_lossy(&jitted.stderr)
    );
    assert_eq!(
        deterministic_lines(&jitted.stdout),
        deterministic_lines(&native.stdout),
        "{described}: the demo's output (engine: lines aside) differs from the native stub run"
    );
    // The engine answered each request: a status line right after it, naming the function.
    let text = String::from_utf8_lossy(&jitted.stdout);
    let lines: Vec<&str> = text.lines().collect();
    for function in ["hot_kernel", "hot_loop"] {
        let request = format!("requesting recompilation of {function} at O2");
        let at = lines.iter().position(|l| *l == request);
        let answer = at.and_then(|i| lines.get(i + 1)).copied().unwrap_or("");
        assert!(
            answer.starts_with("engine: ") && answer.contains(function),
            "{described}: no engine status naming {function} after its request:\n{text}"
        );
    }
}

#[test]
fn demo_output_filter_keeps_all_but_engine_lines() {
    let lines = deterministic_lines(b"a\nengine: done\nb\n");
    assert_eq!(lines, ["a", "b"]);
    // The parser sees no directive in the demo: it is not a matrix program.
    let source = std::fs::read_to_string(demo_source()).unwrap();
    assert_eq!(parse_cases(&source).unwrap()[0].line, 0);
}
