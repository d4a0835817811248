//! Frame discovery from the shadow-stack chain against the frame-pointer walk, and what shadow
//! discovery costs when no site fires. Guest kernels (`benches/kernels/*.c`) are compiled with
//! `clang-19 -O2 -S -emit-llvm` at bench start (`$UPPERCUT_CLANG` names another clang 19) and
//! run by O2 engines.
//!
//! 1. `walk/*`: `dive(D)` (`kernels/dive.c`) recurses D frames deep through an OSR call site
//!    and makes a hypercall at the bottom, in an engine instrumented with call sites and shadow
//!    discovery. The hypercall's handler walks the D + 1 frames `iters` times:
//!    - `frame_pointer`: [`Transfers::walk`]: the rbp chain, each return address looked up in
//!      the decoded stack maps.
//!    - `shadow_chain`: [`ShadowDiscovery::walk`]: the shadow-stack chain, each entry's
//!      return-address slot found from its recorded frame and checked against its site.
//!
//!    Throughput is in frames: criterion reports the time per frame.
//! 2. `never_fires/*`: kernels with call sites (never firing) without (`a_off`) and with
//!    (`b_on`) shadow discovery: `fib` (recursive `fib(25)`: discovery gives every call a
//!    shadow-stack frame, so it pays a push and a pop as well as the stores), `sum_calls` (a
//!    non-inlined call per element, the callee gets a frame), and `frame_stores` (a recursion
//!    whose frames have escaping locals, so they have shadow-stack frames either way: the
//!    stores alone).
//!
//! A summary with the ratios (interleaved medians) is printed at the end.
//!
//! `cargo bench -p uppercut-osr --bench discovery -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use uppercut_core::{
    CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel, SITE_CALLBACK,
};
use uppercut_osr::{ShadowDiscovery, Transfers};

const DEPTHS: [u64; 4] = [10, 100, 1000, 10000];

/// Never-firing kernels: name (`benches/kernels/<name>.c`) and the argument of `kernel`.
const KERNELS: [(&str, u64); 3] = [("fib", 25), ("sum_calls", 64), ("frame_stores", 2000)];

/// `clang -O2 -S -emit-llvm` of a kernel, as text.
fn kernel_ir(name: &str) -> String {
    common::ir_of_file("discovery", "-O2", &common::kernel(&format!("{name}.c")))
}

fn engine(ir: &str, name: &str, shadow_discovery: bool) -> Engine {
    let options = EngineOptions {
        opt_level: OptLevel::O2,
        instrument: Some(Instrumentation {
            loop_sites: false,
            entry_sites: false,
            store_sites: Vec::new(),
            initial_count: i64::MAX,
            shadow_discovery,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), &format!("{name}.ll"), options)
        .unwrap_or_else(|e| panic!("{name}: cannot load: {e}"));
    engine
        .register_callback(SITE_CALLBACK, never)
        .expect("register the site callback");
    engine
        .compile()
        .unwrap_or_else(|e| panic!("{name}: cannot compile: {e}"));
    engine
}

/// Hypercalls of never-firing sites that fired (none should).
static FIRED: AtomicU64 = AtomicU64::new(0);

fn never(_: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    FIRED.fetch_add(1, Ordering::Relaxed);
    Ok(std::ptr::null_mut())
}

// ---------------------------------------------------------------------------------------------
// 1. Walks
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walker {
    /// Both walks once, compared.
    Check,
    FramePointer,
    Shadow,
}

/// What the `walk` handler does at the next hypercall, and what it measured.
#[derive(Debug)]
struct Plan {
    walker: Walker,
    iters: u64,
    elapsed: Duration,
    frames: usize,
}

struct Walks {
    engine: Engine,
    plan: Arc<Mutex<Plan>>,
}

impl Walks {
    fn new() -> Walks {
        let engine = engine(&kernel_ir("dive"), "dive", true);
        let plan = Arc::new(Mutex::new(Plan {
            walker: Walker::Check,
            iters: 1,
            elapsed: Duration::ZERO,
            frames: 0,
        }));
        let shared = Arc::clone(&plan);
        let discovery = ShadowDiscovery::new();
        engine
            .register_callback("walk", move |h: &mut Hypercall<'_>| {
                let transfers = Transfers::new(&h.engine());
                let state = h.guest_state();
                let mut plan = shared.lock().unwrap();
                let start = Instant::now();
                match plan.walker {
                    Walker::Check => {
                        let walked = transfers.walk(&state);
                        let found = discovery.walk(&transfers);
                        let found: Vec<_> = found
                            .into_iter()
                            .map(|d| d.frame.map_err(|e| e.to_string()))
                            .collect::<Result<_, _>>()?;
                        if found != walked {
                            return Err("the walks disagree".into());
                        }
                        plan.frames = walked.len();
                    }
                    Walker::FramePointer => {
                        for _ in 0..plan.iters {
                            plan.frames = black_box(transfers.walk(&state)).len();
                        }
                    }
                    Walker::Shadow => {
                        for _ in 0..plan.iters {
                            plan.frames = black_box(discovery.walk(&transfers)).len();
                        }
                    }
                }
                plan.elapsed = start.elapsed();
                Ok(std::ptr::null_mut())
            })
            .expect("register walk");
        let walks = Walks { engine, plan };
        for depth in DEPTHS {
            walks.run(Walker::Check, depth, 1);
            assert_eq!(
                walks.plan.lock().unwrap().frames,
                depth as usize + 1,
                "both walks see every frame of dive({depth})"
            );
        }
        walks
    }

    /// Runs `dive(depth)` with `iters` walks at the bottom; their time.
    fn run(&self, walker: Walker, depth: u64, iters: u64) -> Duration {
        {
            let mut plan = self.plan.lock().unwrap();
            plan.walker = walker;
            plan.iters = iters;
        }
        self.engine.call("dive", &[black_box(depth)]).expect("dive");
        self.plan.lock().unwrap().elapsed
    }
}

fn bench_walks(c: &mut Criterion, walks: &Walks) {
    let mut group = c.benchmark_group("walk");
    for depth in DEPTHS {
        group.throughput(Throughput::Elements(depth + 1));
        for (walker, name) in [
            (Walker::FramePointer, "frame_pointer"),
            (Walker::Shadow, "shadow_chain"),
        ] {
            group.bench_with_input(BenchmarkId::new(name, depth), &depth, |b, &depth| {
                b.iter_custom(|iters| walks.run(walker, depth, iters))
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Never-firing cost
// ---------------------------------------------------------------------------------------------

struct Kernel {
    name: &'static str,
    arg: u64,
    /// Without, then with shadow discovery.
    engines: [Engine; 2],
}

fn kernels() -> Vec<Kernel> {
    KERNELS
        .iter()
        .map(|&(name, arg)| {
            let ir = kernel_ir(name);
            let engines = [engine(&ir, name, false), engine(&ir, name, true)];
            let off = engines[0].call("kernel", &[arg]).expect("run");
            let on = engines[1].call("kernel", &[arg]).expect("run");
            assert_eq!(on, off, "{name}: shadow discovery changes the result");
            for (engine, label) in engines.iter().zip(["off", "on"]) {
                let osr = engine.osr().expect("instrumented");
                let framed = osr
                    .functions()
                    .filter(|(_, f)| f.shadow_frame_size > 0)
                    .map(|(n, f)| format!("{n} ({} bytes)", f.shadow_frame_size))
                    .collect::<Vec<_>>();
                eprintln!("{name}/{label}: shadow-stack frames: {framed:?}");
            }
            Kernel { name, arg, engines }
        })
        .collect()
}

fn bench_kernels(c: &mut Criterion, kernels: &[Kernel]) {
    let mut group = c.benchmark_group("never_fires");
    group.sample_size(20);
    for kernel in kernels {
        for (engine, label) in kernel.engines.iter().zip(["a_off", "b_on"]) {
            group.bench_function(BenchmarkId::new(kernel.name, label), |b| {
                b.iter(|| engine.call("kernel", &[black_box(kernel.arg)]).unwrap())
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------------------------

/// The median of `rounds` interleaved measurements of each of `runs` (each returns seconds).
fn interleaved(rounds: usize, runs: &mut [&mut dyn FnMut() -> f64]) -> Vec<f64> {
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    for _ in 0..rounds {
        for (run, t) in runs.iter_mut().zip(&mut times) {
            t.push(run());
        }
    }
    times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

fn summary(walks: &Walks, kernels: &[Kernel]) {
    const ROUNDS: usize = 31;
    eprintln!("\nwalk cost per frame (interleaved medians of {ROUNDS} rounds):");
    eprintln!("  depth   frame pointer   shadow chain   shadow / frame pointer");
    for depth in DEPTHS {
        let frames = (depth + 1) as f64;
        // About 2 ms of walking per measurement.
        let iters = (200_000 / (depth + 1)).max(1);
        let per_frame = |walker| {
            move || walks.run(walker, depth, iters).as_secs_f64() / (iters as f64 * frames)
        };
        let mut fp = per_frame(Walker::FramePointer);
        let mut shadow = per_frame(Walker::Shadow);
        let m = interleaved(ROUNDS, &mut [&mut fp, &mut shadow]);
        eprintln!(
            "  {depth:>5}   {:10.2} ns   {:9.2} ns   {:6.2}x",
            m[0] * 1e9,
            m[1] * 1e9,
            m[1] / m[0]
        );
    }
    eprintln!(
        "\nnever-firing cost of shadow discovery, O2 (interleaved medians of {ROUNDS} rounds):"
    );
    for kernel in kernels {
        let once = {
            let start = Instant::now();
            black_box(kernel.engines[0].call("kernel", &[kernel.arg]).unwrap());
            start.elapsed().max(Duration::from_micros(1))
        };
        let calls = (Duration::from_millis(20).as_nanos() / once.as_nanos()).clamp(1, 10_000);
        let timed = |engine: &Engine| {
            let engine = engine.clone();
            let arg = kernel.arg;
            move || {
                let start = Instant::now();
                for _ in 0..calls {
                    black_box(engine.call("kernel", &[black_box(arg)]).unwrap());
                }
                start.elapsed().as_secs_f64() / calls as f64
            }
        };
        let mut off = timed(&kernel.engines[0]);
        let mut on = timed(&kernel.engines[1]);
        let m = interleaved(ROUNDS, &mut [&mut off, &mut on]);
        eprintln!(
            "  {:<13} off {:9.1} µs | on {:9.1} µs | on / off {:6.3}x",
            kernel.name,
            m[0] * 1e6,
            m[1] * 1e6,
            m[1] / m[0]
        );
    }
}

fn main() {
    let walks = Walks::new();
    let kernels = kernels();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_walks(&mut criterion, &walks);
    bench_kernels(&mut criterion, &kernels);
    criterion.final_summary();
    summary(&walks, &kernels);
    assert_eq!(
        FIRED.load(Ordering::Relaxed),
        0,
        "a never-firing site fired"
    );
}
