//! Tier-up latency: from a hypercall to running in new code, for a function of about 100 LLVM
//! instructions at O2.
//!
//! The guest (`GUEST`, compiled with `clang-19 -O0 -S -emit-llvm` at bench start;
//! `$UPPERCUT_CLANG` names another clang 19) runs on an O0 engine with a loop-header site that
//! fires on the loop's first pass. A policy then compiles a relinked O2 version of the function
//! (`Cx::version`) and moves frame 0 into an O2 continuation (`Cx::transfer`), which runs on
//! when the handler returns. The guest makes a hypercall `t0` just before the loop and `t1` at
//! the top of the loop's first iteration, which runs in the continuation:
//!
//! ```text
//!  O0 work():  t0 ──> loop header: counter hits 0 ──> site hypercall ─┐
//!                                                                     │ walk frame 0
//!              policy: cx.version(work, O2, relink) ── cx.transfer(0, O2) (continuation
//!                                                                     │ compile, prepare, patch)
//!  O2 continuation: <── return through the patched frame <────────────┘
//!              loop body, i == 0: t1
//! ```
//!
//! Measured with a fresh engine per iteration (nothing cached); only `t1 - t0` is timed:
//!
//! - `tier_latency/hypercall_to_new_code`: `t1 - t0`.
//! - `tier_latency/direct_compiles`: on a fresh O0 engine, `Engine::compile_version` (O2,
//!   relinked) and `Engine::compile_continuation` (O2, at the loop site) called directly, for
//!   their `CompileTimes` (IR, codegen, link).
//!
//! A one-line summary of the split (means per phase) is printed to stderr at the end.
//!
//! `cargo bench -p uppercut-osr --bench tier_latency -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::ffi::c_void;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode};
use uppercut_core::{
    CallbackError, CompileTimes, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel,
    SiteInfo, SiteKind, VersionRequest,
};
use uppercut_osr::Osr;
use uppercut_osr::policy::Policy;
use uppercut_osr::{Cx, VersionSpec};

/// The guest: `work` has one loop of about 100 instructions at O2 (clang's `-O2` gives 115).
const GUEST: &str = include_str!("kernels/tier_work.c");

/// The function that tiers up, and its argument.
const FUNCTION: &str = "work";
const N: u64 = 1000;

/// Instructions of `function` in textual IR (lines that define a value or are a terminator,
/// store, call or fence).
fn instructions(ir: &str, function: &str) -> usize {
    let head = format!("@{function}(");
    let mut lines = ir
        .lines()
        .skip_while(|l| !(l.starts_with("define") && l.contains(&head)));
    lines.next();
    lines
        .take_while(|l| *l != "}")
        .map(str::trim_start)
        .filter(|l| {
            (l.starts_with('%') && l.contains(" = "))
                || [
                    "store ",
                    "br ",
                    "ret ",
                    "call ",
                    "tail call ",
                    "switch ",
                    "unreachable",
                    "fence ",
                ]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .count()
}

/// A fresh O0 engine over the guest, with a loop site that fires on its first pass, compiled.
fn fresh_engine(ir: &str) -> Engine {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        instrument: Some(Instrumentation {
            loop_sites: true,
            entry_sites: false,
            store_sites: Vec::new(),
            initial_count: 1,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), "tier.ll", options).expect("load the guest");
    engine.compile().expect("compile the base unit");
    engine
}

/// The loop site of `work`.
fn loop_site(engine: &Engine) -> SiteInfo {
    let osr = engine.osr().expect("instrumented");
    let mut loops = osr
        .sites()
        .iter()
        .filter(|s| s.function == FUNCTION && s.kind == SiteKind::Loop);
    let site = loops.next().expect("`work` has a loop site").clone();
    assert!(loops.next().is_none(), "`work` has one loop");
    site
}

/// What one tier-up took.
#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    /// `t0` to `t1`: hypercall to running in the continuation.
    total: Duration,
    /// The policy's `on_site`, start to end.
    handler: Duration,
    /// `Cx::version` (O2, relinked).
    version: Duration,
    /// `Cx::transfer` of frame 0 (continuation compile, prepare, patch).
    transfer: Duration,
}

/// Timestamps of one run on one engine.
#[derive(Debug, Default)]
struct Stamps {
    t0: Option<Instant>,
    t1: Option<Instant>,
    /// Start and end of the handler, and its version and transfer times.
    handler: Option<(Instant, Instant, Duration, Duration)>,
}

/// Tier-up of the loop that fired, timed: a relinked O2 version, then frame 0 into its O2
/// continuation.
struct TimedTierUp {
    stamps: Arc<Mutex<Stamps>>,
}

impl Policy for TimedTierUp {
    fn name(&self) -> &str {
        "timed-tier-up"
    }

    fn frames_wanted(&self, _: &SiteInfo) -> Option<usize> {
        Some(1)
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        let start = Instant::now();
        let site = cx.site().clone();
        if site.kind != SiteKind::Loop {
            return Ok(());
        }
        cx.set_counter(site.id, i64::MAX)
            .map_err(|e| e.to_string())?;
        let spec = VersionSpec::at(OptLevel::O2);
        cx.version(&site.function, &spec, true)
            .map_err(|e| format!("version: {e}"))?;
        let versioned = Instant::now();
        cx.transfer(0, &spec)?;
        let end = Instant::now();
        self.stamps.lock().unwrap().handler =
            Some((start, end, versioned - start, end - versioned));
        Ok(())
    }
}

/// One tier-up on a fresh engine: what it took.
fn tier_up_once(ir: &str, expected: u64) -> Sample {
    let engine = fresh_engine(ir);
    let stamps = Arc::new(Mutex::new(Stamps::default()));
    for name in ["t0", "t1"] {
        let stamps = Arc::clone(&stamps);
        engine
            .register_callback(name, move |h: &mut Hypercall<'_>| {
                let now = Instant::now();
                let mut stamps = stamps.lock().unwrap();
                let slot = if h.name() == "t0" {
                    &mut stamps.t0
                } else {
                    &mut stamps.t1
                };
                if slot.is_some() {
                    return Err(CallbackError::from("a stamp hypercall fired twice"));
                }
                *slot = Some(now);
                Ok(std::ptr::null_mut::<c_void>())
            })
            .expect("register a stamp callback");
    }
    let osr = Osr::install(
        &engine,
        TimedTierUp {
            stamps: Arc::clone(&stamps),
        },
    )
    .expect("install OSR");
    let result = engine.call(FUNCTION, &[N]).expect("run work");
    assert_eq!(
        result, expected,
        "work computes another result after tier-up"
    );
    let stats = osr.stats();
    assert_eq!(
        (stats.sites, stats.frames),
        (1, 1),
        "one site fired and one frame moved: {stats:?}"
    );
    let stamps = stamps.lock().unwrap();
    let (t0, t1) = (stamps.t0.expect("t0 fired"), stamps.t1.expect("t1 fired"));
    let (start, end, version, transfer) = stamps.handler.expect("the site fired");
    assert!(
        t0 <= start && end <= t1,
        "t1 must run after the handler (in the continuation)"
    );
    Sample {
        total: t1 - t0,
        handler: end - start,
        version,
        transfer,
    }
}

/// The direct compiles of one tier-up on a fresh engine, with their wall times.
fn direct_compiles_once(ir: &str) -> (CompileTimes, CompileTimes, Duration) {
    let engine = fresh_engine(ir);
    let site = loop_site(&engine);
    let start = Instant::now();
    let version = engine
        .compile_version(&VersionRequest::new(FUNCTION, OptLevel::O2))
        .expect("compile the O2 version");
    let continuation = engine
        .compile_continuation(FUNCTION, site.id, OptLevel::O2, &[])
        .expect("compile the O2 continuation");
    let wall = start.elapsed();
    (version.times, continuation.times, wall)
}

/// For comparison: `Engine::recompile` of the same function at O2 on a fresh O0 engine without
/// instrumentation.
fn uninstrumented_recompile_once(ir: &str) -> CompileTimes {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), "tier-plain.ll", options).expect("load");
    engine.compile().expect("compile the base unit");
    engine
        .recompile(FUNCTION, OptLevel::O2)
        .expect("recompile at O2")
        .times
}

fn add(sum: &mut CompileTimes, t: &CompileTimes) {
    sum.ir += t.ir;
    sum.codegen += t.codegen;
    sum.link += t.link;
}

fn ms(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e3 / n.max(1) as f64
}

fn main() {
    let o0 = common::ir_of_source("tier_latency", "-O0", GUEST);
    let o2 = common::ir_of_source("tier_latency", "-O2", GUEST);
    let plain = Engine::from_bytes(o2.as_bytes(), "tier-plain.ll", EngineOptions::default())
        .expect("load the plain guest");
    for name in ["t0", "t1"] {
        plain
            .register_callback(name, |_: &mut Hypercall<'_>| {
                Ok(std::ptr::null_mut::<c_void>())
            })
            .expect("register a stamp callback");
    }
    let expected = plain.call(FUNCTION, &[N]).expect("run the plain guest");
    let probe = fresh_engine(&o0);
    eprintln!(
        "{FUNCTION}: {} IR instructions at clang -O2, {} at clang -O0, {} in the instrumented module",
        instructions(&o2, FUNCTION),
        instructions(&o0, FUNCTION),
        instructions(&probe.instrumented_ir(), FUNCTION),
    );
    drop(probe);

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let direct: Arc<Mutex<Vec<(CompileTimes, CompileTimes, Duration)>>> = Arc::default();
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    {
        let mut group = criterion.benchmark_group("tier_latency");
        group.sampling_mode(SamplingMode::Flat);
        group.bench_function("hypercall_to_new_code", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let sample = tier_up_once(&o0, expected);
                    total += sample.total;
                    samples.lock().unwrap().push(sample);
                }
                total
            })
        });
        group.bench_function("direct_compiles", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let run = direct_compiles_once(&o0);
                    total += run.2;
                    direct.lock().unwrap().push(run);
                }
                total
            })
        });
        group.finish();
    }
    criterion.final_summary();

    let samples = samples.lock().unwrap();
    let n = samples.len();
    let sum = |f: fn(&Sample) -> Duration| samples.iter().map(f).sum::<Duration>();
    let (total, handler, version, transfer) = (
        sum(|s| s.total),
        sum(|s| s.handler),
        sum(|s| s.version),
        sum(|s| s.transfer),
    );
    let direct = direct.lock().unwrap();
    let m = direct.len();
    let (mut v, mut c) = (CompileTimes::default(), CompileTimes::default());
    for (vt, ct, _) in direct.iter() {
        add(&mut v, vt);
        add(&mut c, ct);
    }
    const BASELINE_RUNS: usize = 20;
    let mut plain_times = CompileTimes::default();
    for _ in 0..BASELINE_RUNS {
        add(&mut plain_times, &uninstrumented_recompile_once(&o0));
    }
    eprintln!(
        "tier_latency means (ms): hypercall to new code {:.3} (n={n}) = handler {:.3} \
         [version {:.3} + transfer {:.3}] + outside the handler {:.3} | direct (n={m}): \
         version IR {:.3} codegen {:.3} link {:.3}, continuation IR {:.3} codegen {:.3} link {:.3} | uninstrumented O2 \
         recompile (n={BASELINE_RUNS}): IR {:.3} codegen {:.3}",
        ms(total, n),
        ms(handler, n),
        ms(version, n),
        ms(transfer, n),
        ms(total.saturating_sub(handler), n),
        ms(v.ir, m),
        ms(v.codegen, m),
        ms(v.link, m),
        ms(c.ir, m),
        ms(c.codegen, m),
        ms(c.link, m),
        ms(plain_times.ir, BASELINE_RUNS),
        ms(plain_times.codegen, BASELINE_RUNS),
    );
}
