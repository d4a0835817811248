//! Per-site continuations against one multi-entry continuation, for a function with 13 sites:
//! what compiling them costs, and how fast the code they resume runs.
//!
//! The guest (`benches/kernels/many_sites.c`, compiled with `clang-19 -O0 -S -emit-llvm` at
//! bench start; `$UPPERCUT_CLANG` names another clang 19) has `kernel(n, k)`: five loops of `n`
//! passes, then a hot loop of `k` passes, and seven calls that can reach a hypercall; every loop
//! header is a loop site (counters start at `i64::MAX`: they fire only when armed).
//!
//! - `continuations/compile_O{0,2}/per_site_all`: `Engine::compile_continuation` for every
//!   site of `kernel`, one after the other (what resuming after any site costs per site).
//! - `.../per_site_one`: one of them (the hot loop's site).
//! - `.../multi`: `Engine::compile_multi_continuation`, once.
//!
//!   Each sample compiles on a fresh O0 engine (loading and the base unit are not timed).
//! - `continuations/resumed_loop/{original,per_site,multi}` (O2 engine, O2 continuations): the
//!   hot loop's site is armed to fire on its first pass; its handler moves the frame into the
//!   hot site's per-site continuation, into the multi-entry continuation's entry for that site,
//!   or nowhere (`original`: the loop runs on in the O2 function). Timed from the end of the
//!   handler to the `t1` hypercall after the loop: `k` passes of the loop in that code, plus one
//!   transfer and one hypercall (tens of nanoseconds against hundreds of microseconds).
//!   Throughput is in loop passes.
//!
//! A summary is printed to stderr at the end: compile times split into IR and codegen
//! ([`CompileTimes`]), code sizes (the bytes of each continuation's functions, and of the code
//! sections of their units), and nanoseconds per loop pass (medians of interleaved runs) with
//! the ratios. With `UPPERCUT_BENCH_DUMP=DIR`, the code of the O2 function and of both kinds of
//! continuation is written to `DIR/*.bin` for `objdump -D -b binary -m i386:x86-64`.
//!
//! `cargo bench -p uppercut-osr --bench continuations -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::ffi::c_void;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use uppercut_core::{
    CompileTimes, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel, SITE_CALLBACK,
    SiteId, SiteInfo, SiteKind, UnitId, VersionKind,
};
use uppercut_osr::{Target, Transfers};

/// The function, and its arguments: passes of the first loops, passes of the hot loop.
const FUNCTION: &str = "kernel";
const N: u64 = 64;
const K: u64 = 200_000;

fn null() -> Result<*mut c_void, uppercut_core::CallbackError> {
    Ok(std::ptr::null_mut())
}

/// A compiled engine at `opt` over the guest, with sites that never fire until armed and
/// callbacks that do nothing.
fn fresh_engine(ir: &str, opt: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level: opt,
        instrument: Some(Instrumentation {
            initial_count: i64::MAX,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine =
        Engine::from_bytes(ir.as_bytes(), "many_sites.ll", options).expect("load the guest");
    for name in ["probe", "t1", SITE_CALLBACK] {
        engine
            .register_callback(name, |_: &mut Hypercall<'_>| null())
            .expect("register a callback");
    }
    engine.compile().expect("compile the base unit");
    engine
}

/// The sites of `kernel` that carry state, by id.
fn sites(engine: &Engine) -> Vec<SiteInfo> {
    let osr = engine.osr().expect("instrumented");
    osr.sites()
        .iter()
        .filter(|s| s.function == FUNCTION && s.refused.is_none())
        .cloned()
        .collect()
}

/// The address of a loop site's counter.
fn counter(engine: &Engine, site: &SiteInfo) -> *mut i64 {
    let name = site.counter.as_ref().expect("a loop site has a counter");
    engine.global_address(name).expect("the counter exists") as *mut i64
}

/// A loop site's counter now.
fn read_counter(engine: &Engine, site: &SiteInfo) -> i64 {
    // SAFETY: the counter is an `i64` global of the base unit, alive as long as the engine;
    // no guest code runs while the bench reads it.
    unsafe { counter(engine, site).read_volatile() }
}

/// The hot loop's site: the loop site whose counter `kernel(N, K)` runs down by more than `K`.
fn hot_site(engine: &Engine) -> SiteInfo {
    let loops: Vec<SiteInfo> = sites(engine)
        .into_iter()
        .filter(|s| s.kind == SiteKind::Loop)
        .collect();
    let before: Vec<i64> = loops.iter().map(|s| read_counter(engine, s)).collect();
    engine.call(FUNCTION, &[N, K]).expect("run the kernel");
    let mut hot = loops
        .iter()
        .zip(before)
        .filter(|(s, before)| (before - read_counter(engine, s)) as u64 > K);
    let (site, _) = hot.next().expect("a loop site runs K times");
    assert!(hot.next().is_none(), "one loop runs K times");
    site.clone()
}

/// Where a run of the hot loop goes when its site fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Original,
    PerSite,
    Multi,
}

/// An O2 engine whose hot loop site moves frame 0 into a chosen continuation.
struct Runner {
    engine: Engine,
    /// The hot loop site's counter.
    counter: *mut i64,
    /// The continuation the next run enters (0: none).
    target: Arc<Mutex<u64>>,
    /// End of the site handler, and the `t1` hypercall.
    stamps: Arc<Mutex<(Option<Instant>, Option<Instant>)>>,
    /// The hot loop's site.
    hot: SiteId,
    per_site: u64,
    multi: u64,
}

impl Runner {
    fn new(ir: &str) -> Runner {
        let engine = fresh_engine(ir, OptLevel::O2);
        let hot = hot_site(&engine);
        let per_site = engine
            .compile_continuation(FUNCTION, hot.id, OptLevel::O2, &[])
            .expect("compile the per-site continuation")
            .version
            .entry;
        let multi = engine
            .compile_multi_continuation(FUNCTION, OptLevel::O2, &[])
            .expect("compile the multi-entry continuation")
            .entry(hot.id)
            .expect("the hot site has an entry");
        let target: Arc<Mutex<u64>> = Arc::default();
        let stamps: Arc<Mutex<(Option<Instant>, Option<Instant>)>> = Arc::default();
        let counter = counter(&engine, &hot);
        let hot_id = hot.id;
        let (into, at) = (Arc::clone(&target), Arc::clone(&stamps));
        let address = counter as u64;
        engine
            .register_callback(SITE_CALLBACK, move |h: &mut Hypercall<'_>| {
                if h.args() as u64 != u64::from(hot.id.0) {
                    return Err("another loop site fired".into());
                }
                // SAFETY: the hot site's counter, an `i64` global of the base unit that the
                // guest reads and writes with plain accesses.
                unsafe { (address as *mut i64).write_volatile(i64::MAX) };
                let continuation = *into.lock().unwrap();
                if continuation != 0 {
                    let transfers = Transfers::new(&h.engine());
                    let frames = transfers.walk_limit(&h.guest_state(), 1);
                    let frame = frames.first().ok_or("no frame")?;
                    let target = Target {
                        site: hot.id,
                        continuation,
                        values: hot.values.clone(),
                        result: hot.result,
                    };
                    let prepared = transfers
                        .prepare(frame, &target)
                        .map_err(|e| e.to_string())?;
                    transfers
                        .patch(frame, &prepared)
                        .map_err(|e| e.to_string())?;
                }
                at.lock().unwrap().0 = Some(Instant::now());
                null()
            })
            .expect("register the site callback");
        let at = Arc::clone(&stamps);
        engine
            .register_callback("t1", move |_: &mut Hypercall<'_>| {
                at.lock().unwrap().1 = Some(Instant::now());
                null()
            })
            .expect("register t1");
        Runner {
            engine,
            counter,
            hot: hot_id,
            target,
            stamps,
            per_site,
            multi,
        }
    }

    /// One `kernel(N, K)` whose hot loop resumes as `resume`: its result, and the time from the
    /// handler's end to `t1`.
    fn run(&self, resume: Resume) -> (u64, Duration) {
        *self.target.lock().unwrap() = match resume {
            Resume::Original => 0,
            Resume::PerSite => self.per_site,
            Resume::Multi => self.multi,
        };
        *self.stamps.lock().unwrap() = (None, None);
        // SAFETY: the hot site's counter (see `Runner::new`); no guest code runs now.
        unsafe { self.counter.write_volatile(1) };
        let transfers = Transfers::new(&self.engine);
        let before = transfers.frames_transferred();
        let result = self.engine.call(FUNCTION, &[N, K]).expect("run the kernel");
        let moved = transfers.frames_transferred() - before;
        assert_eq!(moved, u64::from(resume != Resume::Original), "{resume:?}");
        let (t0, t1) = *self.stamps.lock().unwrap();
        (
            result,
            t1.expect("t1 fired") - t0.expect("the hot site fired"),
        )
    }
}

/// Compile times of one kind of compilation, summed over samples.
#[derive(Default)]
struct Totals {
    times: CompileTimes,
    /// Compilations (continuations built).
    compilations: u32,
    /// Samples (each one or more compilations).
    samples: u32,
}

impl Totals {
    fn add(&mut self, times: &CompileTimes) {
        self.times.ir += times.ir;
        self.times.codegen += times.codegen;
        self.compilations += 1;
    }

    /// Mean milliseconds per sample: (IR, codegen).
    fn per_sample(&self) -> (f64, f64) {
        let n = f64::from(self.samples.max(1));
        (
            self.times.ir.as_secs_f64() * 1e3 / n,
            self.times.codegen.as_secs_f64() * 1e3 / n,
        )
    }
}

/// Compiles what `which` names on a fresh O0 engine; returns the wall time of the compiles.
fn compile_once(
    ir: &str,
    opt: OptLevel,
    which: &str,
    hot: SiteId,
    totals: &mut Totals,
) -> Duration {
    let engine = fresh_engine(ir, OptLevel::O0);
    let all = sites(&engine);
    let start = Instant::now();
    match which {
        "per_site_all" => {
            for site in &all {
                let made = engine
                    .compile_continuation(FUNCTION, site.id, opt, &[])
                    .expect("compile a per-site continuation");
                totals.add(&made.times);
            }
        }
        "per_site_one" => {
            let made = engine
                .compile_continuation(FUNCTION, hot, opt, &[])
                .expect("compile a per-site continuation");
            totals.add(&made.times);
        }
        _ => {
            let made = engine
                .compile_multi_continuation(FUNCTION, opt, &[])
                .expect("compile the multi-entry continuation");
            totals.add(&made.times);
        }
    }
    let wall = start.elapsed();
    totals.samples += 1;
    wall
}

/// Bytes of code: `(functions, code sections)`. Functions count each version's code and
/// padding to the next symbol; sections count whole code sections of the units.
fn code_bytes(engine: &Engine, units: &[UnitId]) -> (u64, u64) {
    let functions = engine
        .all_versions()
        .iter()
        .filter(|v| units.contains(&v.unit))
        .map(|v| v.size)
        .sum();
    let sections = engine
        .units()
        .iter()
        .filter(|u| units.contains(&u.id))
        .flat_map(|u| u.code.iter().map(|c| c.1))
        .sum();
    (functions, sections)
}

/// Code sizes of every per-site continuation and of the multi-entry continuation at `opt`, and
/// the site count.
fn code_sizes(ir: &str, opt: OptLevel) -> ((u64, u64), (u64, u64), usize) {
    let engine = fresh_engine(ir, OptLevel::O0);
    let all = sites(&engine);
    let per_site: Vec<UnitId> = all
        .iter()
        .map(|s| {
            engine
                .compile_continuation(FUNCTION, s.id, opt, &[])
                .expect("compile a per-site continuation")
                .version
                .unit
        })
        .collect();
    let multi = engine
        .compile_multi_continuation(FUNCTION, opt, &[])
        .expect("compile the multi-entry continuation");
    assert_eq!(multi.entries.len(), all.len());
    let multi_unit = [multi.version.unit];
    (
        code_bytes(&engine, &per_site),
        code_bytes(&engine, &multi_unit),
        all.len(),
    )
}

fn main() {
    let ir = common::ir_of_file("continuations", "-O0", &common::kernel("many_sites.c"));
    let probe = fresh_engine(&ir, OptLevel::O0);
    let all = sites(&probe);
    let loops = all.iter().filter(|s| s.kind == SiteKind::Loop).count();
    eprintln!(
        "{FUNCTION}: {} sites that carry state ({loops} loop sites, {} call sites)",
        all.len(),
        all.len() - loops
    );
    drop(probe);

    let levels = [OptLevel::O0, OptLevel::O2];
    let kinds = ["per_site_all", "per_site_one", "multi"];
    let totals: Vec<Vec<Mutex<Totals>>> = levels
        .iter()
        .map(|_| kinds.iter().map(|_| Mutex::default()).collect())
        .collect();
    let runner = Runner::new(&ir);
    let (expected, _) = runner.run(Resume::Original);
    let resumes = [
        (Resume::Original, "original"),
        (Resume::PerSite, "per_site"),
        (Resume::Multi, "multi"),
    ];
    for (resume, _) in resumes {
        assert_eq!(
            runner.run(resume).0,
            expected,
            "{resume:?} computes another result"
        );
    }

    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    for (l, &opt) in levels.iter().enumerate() {
        let mut group = criterion.benchmark_group(format!("continuations/compile_{opt}"));
        group.sampling_mode(SamplingMode::Flat);
        for (k, kind) in kinds.iter().enumerate() {
            group.bench_function(*kind, |b| {
                b.iter_custom(|iters| {
                    let mut totals = totals[l][k].lock().unwrap();
                    (0..iters)
                        .map(|_| compile_once(&ir, opt, kind, runner.hot, &mut totals))
                        .sum()
                })
            });
        }
        group.finish();
    }
    {
        let mut group = criterion.benchmark_group("continuations/resumed_loop");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Elements(K));
        for &(resume, label) in &resumes {
            group.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let mut sum = Duration::ZERO;
                    for _ in 0..iters {
                        let (result, took) = runner.run(resume);
                        assert_eq!(result, expected);
                        sum += took;
                    }
                    sum
                })
            });
        }
        group.finish();
    }
    criterion.final_summary();

    eprintln!("\ncontinuations of `{FUNCTION}` (means per sample, ms: IR + codegen = total):");
    for (l, opt) in levels.iter().enumerate() {
        for (k, kind) in kinds.iter().enumerate() {
            let t = totals[l][k].lock().unwrap();
            let (ir_ms, codegen_ms) = t.per_sample();
            eprintln!(
                "  {opt} {kind:<13} {ir_ms:8.3} + {codegen_ms:8.3} = {:8.3}  ({} compilations in {} samples)",
                ir_ms + codegen_ms,
                t.compilations,
                t.samples
            );
        }
        let total = |k: usize| {
            let (a, b) = totals[l][k].lock().unwrap().per_sample();
            a + b
        };
        eprintln!(
            "  {opt} per-site all / multi = {:.2}; multi / per-site one = {:.2}",
            total(0) / total(2),
            total(2) / total(1)
        );
    }
    for opt in levels {
        let ((ps_fn, ps_sec), (m_fn, m_sec), n) = code_sizes(&ir, opt);
        eprintln!(
            "  {opt} code bytes: {n} per-site continuations {ps_fn} (sections {ps_sec}); \
             multi-entry body + {n} entries {m_fn} (section {m_sec}); ratio {:.2}",
            ps_fn as f64 / m_fn as f64
        );
    }
    // Interleaved rounds, so that drift (other load, frequency) hits all three alike.
    const ROUNDS: usize = 41;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); resumes.len()];
    for _ in 0..ROUNDS {
        for (i, &(resume, _)) in resumes.iter().enumerate() {
            times[i].push(runner.run(resume).1);
        }
    }
    let medians: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_unstable();
            t[t.len() / 2].as_secs_f64() * 1e9 / K as f64
        })
        .collect();
    eprintln!(
        "  resumed hot loop, O2 (interleaved medians of {ROUNDS} runs, ns per pass): original {:.3}, \
         per-site {:.3}, multi {:.3}; multi / per-site = {:.3}, per-site / original = {:.3}",
        medians[0],
        medians[1],
        medians[2],
        medians[2] / medians[1],
        medians[1] / medians[0]
    );
    if let Some(dir) = std::env::var_os("UPPERCUT_BENCH_DUMP") {
        dump(&runner, Path::new(&dir));
    }
}

/// Writes the code of every version of the runner's engine (the O2 function, the hot site's
/// per-site continuation, the multi-entry body and its entries) to `dir`.
fn dump(runner: &Runner, dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the dump folder");
    for version in runner.engine.all_versions() {
        // SAFETY: `entry..entry + size` is the version's code (and padding) in the engine's
        // arena, mapped readable and alive as long as the engine; nothing rewrites it here.
        let code = unsafe {
            std::slice::from_raw_parts(version.entry as *const u8, version.size as usize)
        };
        let kind = match version.kind {
            VersionKind::Function => "function".to_owned(),
            VersionKind::Continuation(site) => format!("continuation.{}", site.0),
            VersionKind::MultiContinuation => "multi".to_owned(),
        };
        let file = dir.join(format!(
            "{}.u{}.{kind}.bin",
            version.function, version.unit.0
        ));
        std::fs::write(&file, code).expect("write code");
        eprintln!(
            "  {}: {} bytes (objdump -D -b binary -m i386:x86-64 --adjust-vma={:#x} {})",
            file.display(),
            version.size,
            version.entry,
            file.display()
        );
    }
}
