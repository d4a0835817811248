//! OSR at scale: 100,000 frames in one pass, several threads following relinks made by
//! another, background compilation.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use uppercut_core::{CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel};
use uppercut_osr::policy::TierUp;
use uppercut_osr::{Osr, OsrOptions, TransferMode, Transfers};

use crate::support::{
    IrFormat, OptLevel as Clang, Scratch, compare, compile_ir, compile_native, program_source,
    run_command,
};

/// The `key=value` counts of an `uppercut: osr ...` statistics line on `stderr`.
fn osr_stats(stderr: &[u8]) -> HashMap<String, u64> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rfind(|l| l.starts_with("uppercut: osr "))
        .unwrap_or_else(|| panic!("no statistics line in {text:?}"));
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a count")))
        .collect()
}

/// Takes the statistics line off `stderr`, for comparing the rest with the native run.
fn without_stats(mut outcome: crate::support::Outcome) -> crate::support::Outcome {
    let text = String::from_utf8_lossy(&outcome.stderr).into_owned();
    outcome.stderr = text
        .lines()
        .filter(|l| !l.starts_with("uppercut: osr "))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .into_bytes();
    outcome
}

/// A command whose process may grow its main stack to 256 MiB: 100,000 frames of O0 code
/// under instrumentation need more than the usual 8 MiB (each keeps its deopt spill slots).
fn with_big_stack(mut command: Command) -> Command {
    // SAFETY: `setrlimit` is async-signal-safe and touches nothing of the parent's.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 256 << 20,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_STACK, &limit) != 0 {
                let mut hard = limit;
                libc::getrlimit(libc::RLIMIT_STACK, &mut hard);
                hard.rlim_cur = hard.rlim_max.min(256 << 20);
                libc::setrlimit(libc::RLIMIT_STACK, &hard);
            }
            Ok(())
        });
    }
    command
}

fn uppercut(args: &[&str], ir: &std::path::Path, guest: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_uppercut"));
    command.arg("run").args(args).arg(ir).args(guest);
    command
}

#[test]
fn a_hundred_thousand_frames_move_lazily_and_eagerly() {
    let scratch = Scratch::new("deep");
    let source = program_source("deep_recursion");
    let depth = "100000";
    for clang in [Clang::O0, Clang::O2] {
        let native = compile_native(&source, clang, scratch.path());
        let mut command = with_big_stack(Command::new(&native));
        command.arg(depth);
        let native_run = run_command(command, b"", scratch.path());
        let ir = compile_ir(&source, clang, IrFormat::Text, scratch.path());
        for mode in ["lazy", "eager"] {
            let transfer = format!("--osr-transfer={mode}");
            // The JIT starts at O0 whatever clang did, so tier-up has somewhere to go; waiting
            // for its code, it moves every frame of the recursion at the loop site that fired
            // (in the background, a function entered this often only has later calls
            // relinked). The threshold lets the bottom loop fire, never the entry on the way
            // down: the recursion would go on in the new code.
            let flags = [
                "-O0",
                "--osr=tier",
                "--osr-compile=sync",
                "--osr-threshold=150000",
                &transfer,
                "--osr-stats",
            ];
            let run = run_command(
                with_big_stack(uppercut(&flags, &ir, &[depth])),
                b"",
                scratch.path(),
            );
            let stats = osr_stats(&run.stderr);
            assert!(
                stats["frames"] > 100_000,
                "{clang:?} {mode}: only {} frames moved",
                stats["frames"]
            );
            assert_eq!(stats["transitions"], 1, "{clang:?} {mode}: one pass");
            if let Err(report) = compare(&native_run, &without_stats(run)) {
                panic!("{clang:?} {mode}: differs from native:\n{report}");
            }
        }
    }
}

/// Four threads run `work` while the main thread flips the flag it reads, 64 times: each flip
/// relinks `work` specialised on the new value, and threads' frames of `work` follow at their
/// next loop site (caught up), with the results of the native run.
///
/// A relink brings other threads to a site by storing 1 into the shared loop counter they
/// decrement; a thread's own pending decrement can overwrite that store, so whether a given
/// relink is caught up mid-round depends on timing (a frame that is not keeps running its old
/// code, which is correct). Over the four runs (256 relinks), some frame must catch up.
#[test]
fn every_thread_follows_relinks_made_by_another() {
    let scratch = Scratch::new("threads-shared");
    let source = program_source("threads_shared");
    let mut caught_up = Vec::new();
    for clang in [Clang::O0, Clang::O2] {
        let native = compile_native(&source, clang, scratch.path());
        let native_run = run_command(Command::new(&native), b"", scratch.path());
        let ir = compile_ir(&source, clang, IrFormat::Text, scratch.path());
        for mode in ["lazy", "eager"] {
            let transfer = format!("--osr-transfer={mode}");
            let flags = [
                "-O0",
                "--osr=tier",
                "--osr-threshold=50",
                "--osr-specialize=extended",
                &transfer,
                "--osr-stats",
            ];
            let run = run_command(uppercut(&flags, &ir, &[]), b"", scratch.path());
            let stats = osr_stats(&run.stderr);
            if let Err(report) = compare(&native_run, &without_stats(run)) {
                panic!("{clang:?} {mode}: differs from native:\n{report}");
            }
            assert!(
                stats["recompiles"] >= 32,
                "{clang:?} {mode}: {stats:?}: every flip should recompile `work`"
            );
            caught_up.push(stats);
        }
    }
    assert!(
        caught_up.iter().any(|stats| stats["caught_up"] > 0),
        "no thread caught up with a relink in any run: {caught_up:?}"
    );
}

/// The guest: a loop that asks the host, every 2^16 passes, whether it may stop; it returns the
/// passes it made and its hash.
const SPIN: &str = r#"
void *PerformCustomCallback(const char *name, void *args);
unsigned long passes;
unsigned long spin(unsigned long seed) {
  unsigned long h = seed;
  for (unsigned long i = 1;; i++) {
    h = h * 6364136223846793005ul + (i ^ (h >> 31));
    if ((i & 0xffff) == 0 && PerformCustomCallback("stop", (void *)i)) {
      passes = i;
      return h;
    }
  }
}
"#;

fn spin_natively(seed: u64, passes: u64) -> u64 {
    let mut h = seed;
    for i in 1..=passes {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(i ^ (h >> 31));
    }
    h
}

/// With background compilation the hot loop's site hypercall does not wait for LLVM: the loop
/// goes on in O0 code, and moves into O2 code at a later pass once the version and its
/// continuation are ready. The loop stops (through the `stop` hypercall) once its frame moved.
#[test]
fn a_background_compilation_moves_the_loop_once_ready() {
    let scratch = Scratch::new("background");
    let source = scratch.path().join("spin.c");
    std::fs::write(&source, SPIN).unwrap();
    for (mode, transfer) in [("lazy", TransferMode::Lazy), ("eager", TransferMode::Eager)] {
        let ir = compile_ir(&source, Clang::O0, IrFormat::Text, scratch.path());
        let options = EngineOptions {
            opt_level: OptLevel::O0,
            instrument: Some(Instrumentation {
                initial_count: 1000,
                ..Instrumentation::default()
            }),
            ..EngineOptions::default()
        };
        let engine = Engine::from_file(&ir, options).unwrap();
        let started = Instant::now();
        engine
            .register_callback("stop", move |h: &mut Hypercall<'_>| {
                let moved = Transfers::new(&h.engine()).frames_transferred() > 0;
                if !moved && started.elapsed() > Duration::from_secs(120) {
                    return Err(CallbackError::from("the loop never moved"));
                }
                Ok(usize::from(moved) as *mut std::ffi::c_void)
            })
            .unwrap();
        let policy = TierUp::new(OptLevel::O2, true);
        let options = OsrOptions {
            transfer,
            scrub: true,
            ..OsrOptions::default()
        };
        let osr = Osr::install_with(&engine, policy, options).unwrap();
        let h = engine.call("spin", &[42]).unwrap();
        let passes = engine.global_address("passes").unwrap();
        // SAFETY: `passes` is the guest's `unsigned long`, written before `spin` returned.
        let passes = unsafe { *(passes as *const u64) };
        assert_eq!(
            h,
            spin_natively(42, passes),
            "{mode}: after {passes} passes"
        );
        let stats = osr.stats();
        assert_eq!(stats.background, 1, "{mode}: {stats:?}");
        assert!(stats.frames >= 1, "{mode}: {stats:?}");
        // Every compilation ran on the compiler thread while the loop went on: the site
        // hypercalls only queued it and, later, moved the frame.
        assert!(
            stats.recompiles >= 2,
            "{mode}: the version and the continuation: {stats:?}"
        );
    }
}
