//! Experiment 4, time to transfer: where the time between "decide to transfer" and "running the
//! new code" goes, for a new version of a function, per-site continuations and one multi-entry
//! continuation per function, compiled while the guest waits or in the background.
//!
//! # Guests
//!
//! C compiled with `clang-19 -O0 -S -emit-llvm` (`optnone` is lifted by instrumentation), loaded
//! on an O0 engine with OSR instrumentation (loop sites; calls that can reach a hypercall):
//!
//! - `spin`: the hot loop of `osr/benches/stall.rs` (function `spin`, one loop site);
//! - `tier`: the function of about 100 instructions of `osr/benches/tier_latency.rs` (`work`);
//! - `many_sites`: `osr/benches/kernels/many_sites.c` of `osr/benches/continuations.rs`
//!   (`kernel`, 13 sites: loops and calls);
//! - every kernel of the suite (`experiments/kernels/*.c`; quick: `nbody` and `interp`), with
//!   its largest function (in IR instructions) that has a site that carries state.
//!
//! # Direct compiles (rows without `compile`)
//!
//! Each sample is one compilation (or one per site) on a fresh engine (loading and the base
//! unit are not timed), through [`Engine`]'s API, whose [`CompileTimes`] split it into IR work
//! (clone, trim, build the continuation, optimise), codegen (code generation, RuntimeDyld's relocation, finalisation)
//! and linking (redirecting the old entries):
//!
//! - `what=version`: [`Engine::compile_version`] of the function, relinked.
//! - `what=continuation-per-site`: [`Engine::compile_continuation`] of each site of the function
//!   (at most [`MAX_PER_SITE`], spread over them); values are per continuation (the mean over
//!   the sites of a sample), comparable with OSRKit's 76 to 811 µs of IR work per continuation
//!   (CGO 2016, codegen excluded): `ir_us`. `all_sites_us` is the time to build them all
//!   (`total_us` × `sites`).
//! - `what=continuation-multi`: [`Engine::compile_multi_continuation`], once for all sites.
//!
//! at `opt` O0 and O2. Values: `ir_us`, `codegen_us`, `link_us`, `total_us` (medians), `sites`,
//! `code_bytes` (the new code: the version's function, one continuation's function, or every
//! function of the multi-entry unit), `ir_fraction` (`ir_us / total_us`), and on multi rows
//! `ratio_to_one_site` (its `total_us` over one per-site continuation's at the same level).
//!
//! # Foreground against background (rows with `compile`)
//!
//! The guests `spin`, `tier` and `many_sites` run their hot loop on a fresh engine under
//! [`TierUp`] (the loop site fires after 1000 passes; the policy compiles a relinked O2
//! version and moves the frame into an O2 continuation, per site or multi-entry by
//! `what`): with `compile=foreground` the site hypercall waits for both; with
//! `compile=background` it queues them and the loop runs on in O0 code until they are ready
//! and the frame catches up at a later pass. Values: `stall_us` (the longest site hypercall,
//! [`OsrStats::max_stall`]: how long the guest was paused), `total_stall_us` (all site
//! hypercalls), `run_ms` (the guest's whole call), `moved` (frames that entered a
//! continuation), `compile_us` (the direct compiles' O2 `total_us` of the version plus one
//! continuation of that kind, for comparison), and on background rows `stall_ratio`
//! (background `stall_us` over foreground).
//!
//! `cargo run --release -p uppercut-experiments --bin exp-compile -- [--quick] [--out FILE]`

use std::collections::HashMap;
use std::ffi::c_void;
use std::time::{Duration, Instant};

use uppercut_core::{
    CompileTimes, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel, SITE_CALLBACK,
    SiteInfo, UnitId, VersionRequest,
};
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result, kernels};
use uppercut_osr::policy::TierUp;
use uppercut_osr::{ContinuationKind, Osr, OsrOptions, OsrStats, Transfers};

fn main() {
    harness::main(
        "compile",
        "Time to transfer: compiling versions and continuations, foreground and background",
        run,
    )
}

/// At most this many per-site continuations per sample.
const MAX_PER_SITE: usize = 8;

/// `osr/benches/stall.rs`'s guest: loops until the host says its frame moved.
const SPIN: &str = include_str!("../../../osr/benches/kernels/spin.c");

/// `osr/benches/tier_latency.rs`'s guest: `work` has one loop of about 100 instructions.
const TIER: &str = include_str!("../../../osr/benches/kernels/tier_work.c");

/// `osr/benches/continuations.rs`'s guest.
const MANY_SITES: &str = include_str!("../../../osr/benches/kernels/many_sites.c");

/// Hypercall names the guests make besides the site callback (all do nothing here, except
/// `stop`).
const CALLBACKS: [&str; 4] = ["t0", "t1", "probe", "stop"];

/// How a guest runs in the foreground/background comparison.
#[derive(Debug, Clone, Copy)]
struct Driver {
    /// The arguments of its call of the function.
    args: &'static [u64],
}

/// A guest: its name, source, the function compiled, and how to run it (if it is run).
struct Guest {
    name: String,
    source: String,
    /// Filled in once loaded (for the kernels: the function with the most sites).
    function: Option<String>,
    driver: Option<Driver>,
}

/// The configurations of the direct compiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum What {
    Version,
    PerSite,
    Multi,
}

impl What {
    fn name(self) -> &'static str {
        match self {
            What::Version => "version",
            What::PerSite => "continuation-per-site",
            What::Multi => "continuation-multi",
        }
    }
}

fn measurement(reason: impl std::fmt::Display) -> Error {
    Error::Measurement {
        reason: reason.to_string(),
    }
}

/// A fresh O0 engine over `ir`, instrumented, with the guests' callbacks doing nothing, its base
/// unit compiled. Sites fire after `count` passes.
fn engine(name: &str, ir: &str, count: i64) -> Result<Engine> {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        instrument: Some(Instrumentation {
            initial_count: count,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), &format!("{name}.ll"), options)
        .map_err(|e| measurement(format!("{name}: {e}")))?;
    for callback in CALLBACKS.iter().chain([&SITE_CALLBACK]) {
        engine
            .register_callback(callback, |_: &mut Hypercall<'_>| {
                Ok(std::ptr::null_mut::<c_void>())
            })
            .map_err(measurement)?;
    }
    engine
        .compile()
        .map_err(|e| measurement(format!("{name}: {e}")))?;
    Ok(engine)
}

/// The sites of `function` that carry state.
fn sites(engine: &Engine, function: &str) -> Vec<SiteInfo> {
    engine.osr().map_or_else(Vec::new, |osr| {
        osr.sites()
            .iter()
            .filter(|s| s.function == function && s.refused.is_none())
            .cloned()
            .collect()
    })
}

/// The largest guest function (in IR instructions) with a site that carries state (the first
/// in module order on a tie).
fn largest_function(engine: &Engine, ir: &str) -> Option<String> {
    let mut best: Option<(usize, String)> = None;
    for f in engine.function_names() {
        if sites(engine, &f).is_empty() {
            continue;
        }
        let n = instructions(ir, &f);
        if best.as_ref().is_none_or(|(m, _)| n > *m) {
            best = Some((n, f));
        }
    }
    best.map(|(_, f)| f)
}

/// Instructions of `function` in textual IR (the lines that define a value or are a
/// terminator, store, call or fence), as `osr/benches/tier_latency.rs` counts them.
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

/// Bytes of the functions of the engine's versions in `units`.
fn code_bytes(engine: &Engine, units: &[UnitId]) -> u64 {
    engine
        .all_versions()
        .iter()
        .filter(|v| units.contains(&v.unit))
        .map(|v| v.size)
        .sum()
}

/// One direct-compile sample: times (per continuation for per-site), sites, code bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Compiled {
    times: [f64; 3],
    sites: usize,
    code_bytes: f64,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn split(t: &CompileTimes) -> [f64; 3] {
    [us(t.ir), us(t.codegen), us(t.link)]
}

/// At most `max` of `all`, spread evenly.
fn spread<T: Clone>(all: &[T], max: usize) -> Vec<T> {
    if all.len() <= max {
        return all.to_vec();
    }
    (0..max).map(|i| all[i * all.len() / max].clone()).collect()
}

/// Compiles what `what` says at `opt` on a fresh engine.
fn compile_once(
    name: &str,
    ir: &str,
    function: &str,
    what: What,
    opt: OptLevel,
) -> Result<Compiled> {
    let engine = engine(name, ir, i64::MAX)?;
    let all = sites(&engine, function);
    let fail = |e: uppercut_core::Error| {
        measurement(format!(
            "{name}: {} of `{function}` at {opt}: {e}",
            what.name()
        ))
    };
    match what {
        What::Version => {
            let made = engine
                .compile_version(&VersionRequest {
                    relink: true,
                    ..VersionRequest::new(function, opt)
                })
                .map_err(fail)?;
            Ok(Compiled {
                times: split(&made.times),
                sites: all.len(),
                code_bytes: made.version.size as f64,
            })
        }
        What::PerSite => {
            let chosen = spread(&all, MAX_PER_SITE);
            let mut sum = [0.0; 3];
            let mut bytes = 0.0;
            for site in &chosen {
                let made = engine
                    .compile_continuation(function, site.id, opt, &[])
                    .map_err(fail)?;
                for (s, t) in sum.iter_mut().zip(split(&made.times)) {
                    *s += t;
                }
                bytes += made.version.size as f64;
            }
            let n = chosen.len().max(1) as f64;
            Ok(Compiled {
                times: sum.map(|s| s / n),
                sites: all.len(),
                code_bytes: bytes / n,
            })
        }
        What::Multi => {
            let made = engine
                .compile_multi_continuation(function, opt, &[])
                .map_err(fail)?;
            Ok(Compiled {
                times: split(&made.times),
                sites: made.entries.len(),
                code_bytes: code_bytes(&engine, &[made.version.unit]) as f64,
            })
        }
    }
}

/// One tier-up run: the stats, and the wall time of the guest's call.
fn tier_up_once(
    name: &str,
    ir: &str,
    function: &str,
    driver: Driver,
    kind: ContinuationKind,
    background: bool,
) -> Result<(OsrStats, Duration)> {
    let engine = engine(name, ir, 1000)?;
    engine
        .register_callback("stop", |h: &mut Hypercall<'_>| {
            let moved = Transfers::new(&h.engine()).frames_transferred() > 0;
            Ok(usize::from(moved) as *mut c_void)
        })
        .map_err(measurement)?;
    let policy = TierUp::new(OptLevel::O2, background);
    let options = OsrOptions {
        continuations: kind,
        ..OsrOptions::default()
    };
    let osr = Osr::install_with(&engine, policy, options).map_err(measurement)?;
    let start = Instant::now();
    engine
        .call(function, driver.args)
        .map_err(|e| measurement(format!("{name}: {function}: {e}")))?;
    let wall = start.elapsed();
    Ok((osr.stats(), wall))
}

fn guests(args: &Args) -> Vec<Guest> {
    let mut guests = vec![
        Guest {
            name: "spin".to_owned(),
            source: SPIN.to_owned(),
            function: Some("spin".to_owned()),
            driver: Some(Driver { args: &[42] }),
        },
        Guest {
            name: "tier".to_owned(),
            source: TIER.to_owned(),
            function: Some("work".to_owned()),
            driver: Some(Driver {
                args: &[10_000_000],
            }),
        },
        Guest {
            name: "many_sites".to_owned(),
            source: MANY_SITES.to_owned(),
            function: Some("kernel".to_owned()),
            driver: Some(Driver {
                args: &[64, 20_000_000],
            }),
        },
    ];
    for k in kernels::kernels() {
        if args.quick && !["nbody", "interp"].contains(&k.name) {
            continue;
        }
        guests.push(Guest {
            name: k.name.to_owned(),
            source: k.source.to_owned(),
            function: None,
            driver: None,
        });
    }
    guests
}

/// Medians of the direct compiles, by (guest, what, opt): `[ir, codegen, link, total]` in µs.
type Direct = HashMap<(String, What, OptLevel), [f64; 4]>;

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let (reps, tier_reps) = if args.quick { (3, 2) } else { (11, 7) };
    let clang = Clang::find()?;
    report.environment.clang = clang.version().to_owned();
    report.setting("repetitions", reps);
    report.setting("tier_up_repetitions", tier_reps);
    report.setting(
        "guest_ir",
        "clang -O0 -S -emit-llvm; O0 engine with loop sites",
    );
    report.setting("max_per_site", MAX_PER_SITE);
    report.setting("tier_up_count", 1000);
    let mut guests = guests(args);
    let levels = [OptLevel::O0, OptLevel::O2];
    let whats = [What::Version, What::PerSite, What::Multi];
    let configs: Vec<(What, OptLevel)> = whats
        .iter()
        .flat_map(|&w| levels.iter().map(move |&o| (w, o)))
        .collect();
    let runs = guests.iter().filter(|g| g.driver.is_some()).count();
    let progress = Progress::new(
        args,
        "compile",
        guests.len() * reps * configs.len() + runs * tier_reps * 4,
    );
    let mut direct: Direct = HashMap::new();
    let mut irs: Vec<String> = Vec::new();
    for guest in &mut guests {
        let ir = std::fs::read_to_string(
            clang
                .compile_ir(&guest.name, &guest.source, OptLevel::O0)?
                .path(),
        )
        .map_err(|e| measurement(format!("reading {}'s IR: {e}", guest.name)))?;
        let probe = engine(&guest.name, &ir, i64::MAX)?;
        let function = match &guest.function {
            Some(f) => f.clone(),
            None => largest_function(&probe, &ir)
                .ok_or_else(|| measurement(format!("{} has no function with sites", guest.name)))?,
        };
        guest.function = Some(function.clone());
        let instrs = instructions(&ir, &function);
        drop(probe);
        let mut samples: Vec<Vec<Compiled>> = vec![Vec::new(); configs.len()];
        let mut round = 0;
        harness::interleave(&configs, reps, |&(what, opt)| {
            let c = compile_once(&guest.name, &ir, &function, what, opt)?;
            let i = configs.iter().position(|x| *x == (what, opt)).unwrap_or(0);
            samples[i].push(c);
            round += 1;
            progress.step(&format!("{} {} {opt}", guest.name, what.name()));
            Ok(c.times.iter().sum())
        })?;
        let _ = round;
        for (i, &(what, opt)) in configs.iter().enumerate() {
            let s = &samples[i];
            let med = |f: &dyn Fn(&Compiled) -> f64| {
                harness::median(&s.iter().map(f).collect::<Vec<_>>())
            };
            let ir_us = med(&|c| c.times[0]);
            let codegen_us = med(&|c| c.times[1]);
            let link_us = med(&|c| c.times[2]);
            let total_us = med(&|c| c.times.iter().sum());
            let sites = s.first().map_or(0, |c| c.sites);
            direct.insert(
                (guest.name.clone(), what, opt),
                [ir_us, codegen_us, link_us, total_us],
            );
            let mut row = Row::new()
                .key("guest", &guest.name)
                .key("what", what.name())
                .key("opt", opt)
                .value("ir_us", ir_us)
                .value("codegen_us", codegen_us)
                .value("link_us", link_us)
                .value("total_us", total_us)
                .value("ir_fraction", ir_us / total_us)
                .value("sites", sites as f64)
                .value("code_bytes", med(&|c| c.code_bytes))
                .value("function_instructions", instrs as f64);
            match what {
                What::PerSite => row = row.value("all_sites_us", total_us * sites as f64),
                What::Multi => {
                    if let Some(one) = direct.get(&(guest.name.clone(), What::PerSite, opt)) {
                        row = row.value("ratio_to_one_site", total_us / one[3]);
                    }
                }
                What::Version => {}
            }
            report.push(row);
        }
        irs.push(ir);
    }
    for opt in levels {
        let ir: Vec<f64> = report
            .rows
            .iter()
            .filter(|r| {
                r.matches(&[("what", What::PerSite.name()), ("opt", &opt.to_string())])
                    && r.key_of("compile").is_none()
            })
            .filter_map(|r| r.get("ir_us"))
            .collect();
        let (lo, hi) = ir.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        });
        report.note(format!(
            "OSRKit (CGO 2016) builds a continuation in 76-811 us of IR work (codegen \
             excluded); here one per-site continuation at {opt} takes {lo:.0}-{hi:.0} us of IR \
             work (clone and trim of the instrumented module, continuation, {opt} pipeline) \
             across the guests"
        ));
    }
    report.check_with_floor("ir_fraction", 0.25, 0.05);
    report.check_with_floor("ratio_to_one_site", 0.3, 0.2);

    for (guest, ir) in guests.iter().zip(&irs) {
        let (Some(driver), Some(function)) = (guest.driver, guest.function.as_deref()) else {
            continue;
        };
        let modes = [
            (ContinuationKind::PerSite, What::PerSite),
            (ContinuationKind::MultiEntry, What::Multi),
        ];
        for (kind, what) in modes {
            let mut fg_stall = f64::NAN;
            for background in [false, true] {
                let mut stats = Vec::new();
                for _ in 0..tier_reps {
                    let (s, wall) =
                        tier_up_once(&guest.name, ir, function, driver, kind, background)?;
                    stats.push((s, wall));
                    progress.step(&format!(
                        "{} tier-up {} {}",
                        guest.name,
                        what.name(),
                        if background {
                            "background"
                        } else {
                            "foreground"
                        }
                    ));
                }
                let med = |f: &dyn Fn(&(OsrStats, Duration)) -> f64| {
                    harness::median(&stats.iter().map(f).collect::<Vec<_>>())
                };
                let stall_us = med(&|(s, _)| us(s.max_stall));
                let compile_us = direct
                    .get(&(guest.name.clone(), What::Version, OptLevel::O2))
                    .zip(direct.get(&(guest.name.clone(), what, OptLevel::O2)))
                    .map_or(f64::NAN, |(v, c)| v[3] + c[3]);
                let unmoved = stats.iter().filter(|(s, _)| s.frames == 0).count();
                if unmoved > 0 {
                    report.note(format!(
                        "{}: tier-up with {} continuations, {} compilation: in {unmoved} of \
                         {tier_reps} runs no frame moved before the guest returned",
                        guest.name,
                        what.name(),
                        if background {
                            "background"
                        } else {
                            "foreground"
                        }
                    ));
                }
                let mut row = Row::new()
                    .key("guest", &guest.name)
                    .key("what", what.name())
                    .key("opt", OptLevel::O2)
                    .key(
                        "compile",
                        if background {
                            "background"
                        } else {
                            "foreground"
                        },
                    )
                    .value("stall_us", stall_us)
                    .value("total_stall_us", med(&|(s, _)| us(s.total_stall)))
                    .value("run_ms", med(&|(_, w)| w.as_secs_f64() * 1e3))
                    .value("moved", med(&|(s, _)| s.frames as f64))
                    .value("recompiles", med(&|(s, _)| s.recompiles as f64))
                    .value("compile_us", compile_us);
                if background {
                    row = row.value("stall_ratio", stall_us / fg_stall);
                } else {
                    fg_stall = stall_us;
                }
                report.push(row);
            }
        }
    }
    report.check_with_floor("stall_ratio", 0.5, 0.25);
    Ok(())
}
