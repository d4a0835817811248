//! What OSR instrumentation costs when no site ever fires, on loop kernels at O2.
//!
//! Each kernel in `benches/kernels/*.c` is compiled with `clang-19 -O2 -S -emit-llvm` at bench
//! start (`$UPPERCUT_CLANG` names another clang 19) and run through an O2 engine in three
//! configurations, measured in the same run:
//!
//! - `a_plain`: no instrumentation.
//! - `b_call_sites`: call sites only: every call that can reach a hypercall carries a
//!   `"deopt"` bundle and becomes a statepoint with a stack-map record.
//! - `c_loop_sites`: call sites and a counter at every loop header, started at `i64::MAX` so
//!   it never runs out.
//!
//! Kernels (each has a guest function that can make a hypercall, on a path that never runs):
//!
//! - `sum_calls`: a sum over an array with a non-inlined call per element.
//! - `matmul`: a naive 96×96 matrix multiply; no call in its loops.
//! - `fib`: recursive `fib(25)`.
//! - `fnptr`: a loop over an array of function pointers (one indirect call per element).
//!
//! Criterion groups by kernel, with the configurations as its functions. A summary with the
//! overheads (interleaved medians of the three configurations) is printed at the end. With
//! `UPPERCUT_BENCH_DUMP=DIR`, each configuration's code of every guest function is written to
//! `DIR/<kernel>.<config>.<function>.bin` for `objdump -D -b binary -m i386:x86-64`, and its
//! instrumented IR to `DIR/<kernel>.<config>.ll`.
//!
//! `cargo bench -p uppercut-osr --bench site_overhead -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::ffi::c_void;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::Criterion;
use uppercut_core::{
    CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel, SITE_CALLBACK,
    SiteKind,
};

/// Kernels: name (`benches/kernels/<name>.c`) and the argument of `kernel`.
const KERNELS: [(&str, u64); 4] = [
    ("sum_calls", 64),
    ("matmul", 96),
    ("fib", 25),
    ("fnptr", 64),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Config {
    Plain,
    CallSites,
    LoopSites,
}

const CONFIGS: [(Config, &str); 3] = [
    (Config::Plain, "a_plain"),
    (Config::CallSites, "b_call_sites"),
    (Config::LoopSites, "c_loop_sites"),
];

impl Config {
    fn instrumentation(self) -> Option<Instrumentation> {
        let sites = |loop_sites| Instrumentation {
            loop_sites,
            entry_sites: false,
            store_sites: Vec::new(),
            initial_count: i64::MAX,
            ..Instrumentation::default()
        };
        match self {
            Config::Plain => None,
            Config::CallSites => Some(sites(false)),
            Config::LoopSites => Some(sites(true)),
        }
    }
}

/// Site hypercalls that fired (none should).
static FIRED: AtomicU64 = AtomicU64::new(0);

/// The site callback of (b) and (c): a no-op that counts.
fn never(_: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    FIRED.fetch_add(1, Ordering::Relaxed);
    Ok(std::ptr::null_mut())
}

fn engine(ir: &str, name: &str, config: Config) -> Engine {
    let options = EngineOptions {
        opt_level: OptLevel::O2,
        instrument: config.instrumentation(),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), &format!("{name}.ll"), options)
        .unwrap_or_else(|e| panic!("{name}: cannot load: {e}"));
    if config != Config::Plain {
        engine
            .register_callback(SITE_CALLBACK, never)
            .expect("register the site callback");
    }
    engine
        .compile()
        .unwrap_or_else(|e| panic!("{name}: cannot compile: {e}"));
    engine
}

/// Call and loop sites of an instrumented engine.
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

/// Writes every guest function's code, and the instrumented IR, to `dir`.
fn dump(dir: &Path, kernel: &str, config: &str, engine: &Engine) {
    std::fs::create_dir_all(dir).expect("create the dump folder");
    std::fs::write(
        dir.join(format!("{kernel}.{config}.ll")),
        engine.instrumented_ir(),
    )
    .expect("write IR");
    for version in engine.all_versions() {
        // SAFETY: `entry..entry + size` is the version's code (and padding) in the engine's
        // arena, mapped readable and alive as long as the engine; nothing rewrites it here.
        let code = unsafe {
            std::slice::from_raw_parts(version.entry as *const u8, version.size as usize)
        };
        let file = dir.join(format!("{kernel}.{config}.{}.bin", version.function));
        std::fs::write(&file, code).expect("write code");
        eprintln!(
            "  {}: {} bytes at {:#x} (objdump -D -b binary -m i386:x86-64 --adjust-vma={:#x} {})",
            version.function,
            version.size,
            version.entry,
            version.entry,
            file.display()
        );
    }
}

struct Kernel {
    name: &'static str,
    arg: u64,
    engines: Vec<(Config, &'static str, Engine)>,
}

fn kernels() -> Vec<Kernel> {
    let dump_dir = std::env::var_os("UPPERCUT_BENCH_DUMP").map(PathBuf::from);
    KERNELS
        .iter()
        .map(|&(name, arg)| {
            let ir = common::ir_of_file(
                "site_overhead",
                "-O2",
                &common::kernel(&format!("{name}.c")),
            );
            let engines: Vec<(Config, &'static str, Engine)> = CONFIGS
                .iter()
                .map(|&(config, label)| (config, label, engine(&ir, name, config)))
                .collect();
            let expected = engines[0].2.call("kernel", &[arg]).expect("plain run");
            for (_, label, engine) in &engines {
                let got = engine.call("kernel", &[arg]).expect("run");
                assert_eq!(got, expected, "{name}/{label} computes another result");
                let (calls, loops) = site_counts(engine);
                eprintln!("{name}/{label}: {calls} call sites, {loops} loop sites");
                if let Some(dir) = &dump_dir {
                    dump(dir, name, label, engine);
                }
            }
            Kernel { name, arg, engines }
        })
        .collect()
}

fn bench(c: &mut Criterion, kernels: &[Kernel]) {
    for kernel in kernels {
        let mut group = c.benchmark_group(kernel.name);
        group.sample_size(20);
        for (_, label, engine) in &kernel.engines {
            group.bench_function(*label, |b| {
                b.iter(|| engine.call("kernel", &[black_box(kernel.arg)]).unwrap())
            });
        }
        group.finish();
    }
}

/// Medians of one call per configuration, measured in interleaved rounds so that drift (other
/// load, frequency) hits all three alike.
fn summary(kernels: &[Kernel]) {
    const ROUNDS: usize = 41;
    eprintln!("\nsite overhead (interleaved medians of {ROUNDS} rounds per configuration):");
    for kernel in kernels {
        // About 20 ms per configuration and round.
        let once = {
            let start = Instant::now();
            black_box(kernel.engines[0].2.call("kernel", &[kernel.arg]).unwrap());
            start.elapsed().max(Duration::from_micros(1))
        };
        let calls = (Duration::from_millis(20).as_nanos() / once.as_nanos()).clamp(1, 10_000);
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); kernel.engines.len()];
        for _ in 0..ROUNDS {
            for (i, (_, _, engine)) in kernel.engines.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..calls {
                    black_box(engine.call("kernel", &[black_box(kernel.arg)]).unwrap());
                }
                times[i].push(start.elapsed().as_secs_f64() / calls as f64);
            }
        }
        let medians: Vec<f64> = times
            .iter_mut()
            .map(|t| {
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            })
            .collect();
        let percent = |x: f64| (x / medians[0] - 1.0) * 100.0;
        eprintln!(
            "  {:<10} a {:9.1} µs | b {:9.1} µs ({:+6.2}%) | c {:9.1} µs ({:+6.2}%)",
            kernel.name,
            medians[0] * 1e6,
            medians[1] * 1e6,
            percent(medians[1]),
            medians[2] * 1e6,
            percent(medians[2]),
        );
    }
}

fn main() {
    let kernels = kernels();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench(&mut criterion, &kernels);
    criterion.final_summary();
    summary(&kernels);
    assert_eq!(
        FIRED.load(Ordering::Relaxed),
        0,
        "a never-firing site fired"
    );
}
