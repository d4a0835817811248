//! Experiment 1, the kernel suite: every kernel natively (clang -O2) and under `uppercut run -O2`
//! from the same clang -O2 IR, with and without OSR instrumentation (`--osr=tier`; the IR is
//! already O2, so its sites never move a frame). Each run's stdout and exit status must equal
//! the native run's, or the experiment fails. Repetitions are interleaved across the three
//! configurations; each row holds the median wall time and its ratio to native.
//!
//! `cargo run --release -p uppercut-experiments --bin exp-kernels -- [--quick] [--out FILE]`

use std::process::Command;
use std::time::Duration;

use uppercut_core::OptLevel;
use uppercut_experiments::harness::{self, Args, Progress, Timed};
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result, Size, kernels};

/// The configurations, in the order they run within a repetition.
const CONFIGS: [&str; 3] = ["native", "uppercut", "uppercut-sites"];

/// The time limit of one run.
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() {
    harness::main("kernels", "The kernel suite: native vs Uppercut's JIT", run)
}

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let (size, reps) = if args.quick {
        (Size::Small, 1)
    } else {
        (Size::Full, 3)
    };
    let clang = Clang::find()?;
    let uppercut = harness::uppercut()?;
    report.environment.clang = clang.version().to_owned();
    report.setting("size", format!("{size:?}").to_lowercase());
    report.setting("repetitions", reps);
    report.setting("configs", CONFIGS);
    report.setting("opt", "clang -O2; uppercut run -O2");
    let progress = Progress::new(
        args,
        "kernels",
        kernels::kernels().len() * reps * CONFIGS.len(),
    );
    for k in kernels::kernels() {
        let native = clang.compile_native(k.name, k.source, OptLevel::O2)?;
        let ir = clang.compile_ir(k.name, k.source, OptLevel::O2)?;
        let kargs = k.args(size);
        let mut expected: Option<Timed> = None;
        let samples = harness::interleave(&CONFIGS, reps, |config| {
            let mut command = match *config {
                "native" => Command::new(native.path()),
                other => {
                    let mut c = Command::new(&uppercut);
                    c.args(["run", "-O2"]);
                    if other == "uppercut-sites" {
                        c.arg("--osr=tier");
                    }
                    c.arg(ir.path());
                    c
                }
            };
            command.args(kargs);
            let t = harness::run_timed(&mut command, TIMEOUT)?;
            progress.step(&format!("{} {config}", k.name));
            match &expected {
                None if *config == "native" => {
                    if !t.status.success() {
                        return Err(Error::Measurement {
                            reason: format!(
                                "{} natively: {} ({})",
                                k.name,
                                t.status,
                                t.stderr.trim()
                            ),
                        });
                    }
                    expected = Some(t.clone());
                }
                Some(e) if e.stdout != t.stdout || e.status.code() != t.status.code() => {
                    return Err(Error::Measurement {
                        reason: format!(
                            "{} under {config} printed something else than natively ({}; {})",
                            k.name,
                            t.status,
                            t.stderr.trim()
                        ),
                    });
                }
                _ => {}
            }
            Ok(t.wall.as_secs_f64() * 1e3)
        })?;
        let native_ms = harness::median(&samples[0]);
        for (config, s) in CONFIGS.iter().zip(&samples) {
            let ms = harness::median(s);
            report.push(
                Row::new()
                    .key("kernel", k.name)
                    .key("config", config)
                    .value("median_ms", ms)
                    .value("min_ms", s.iter().copied().fold(f64::INFINITY, f64::min))
                    .value("ratio", ms / native_ms),
            );
        }
    }
    report.check_with_floor("ratio", 0.25, 0.05);
    Ok(())
}
