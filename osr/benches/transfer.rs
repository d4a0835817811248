//! What a lazy frame transfer costs per frame, against a plain return.
//!
//! `rec(D)` (tests/ir/recursion.ll) recurses D frames deep through an OSR site and makes a
//! hypercall at the bottom. Variants of the hypercall's handler:
//!
//! - `plain`: does nothing; every frame returns normally (`add; ret`).
//! - `walk`: walks the D frames.
//! - `transfer`: walks, prepares (once per return address) and patches every frame; each then
//!   returns into its thunk, the stub and `rec_double`.
//! - `repatch`: patches the frames the first walk found (every call stacks them at the same
//!   addresses; `patch` checks each slot still holds its return address), without walking:
//!   the patch and the run-time part of a transfer (thunk, stub, resume, continuation instead of
//!   `add; ret`).
//!
//! Per-frame costs are differences divided by D: `transfer - plain` is the whole lazy transfer,
//! `repatch - plain` its part after the walk. A summary with those numbers is printed at the
//! end.

mod common;

use std::collections::HashMap;
use std::ffi::c_void;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use std::sync::Mutex;
use uppercut_core::{CallbackError, Engine, Hypercall, SiteId};

use uppercut_osr::{Frame, Prepared, Transfers};

fn failed(e: uppercut_osr::Error) -> CallbackError {
    CallbackError(e.to_string())
}

const DEPTHS: [u64; 2] = [100, 1000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Walk,
    Repatch,
    Transfer,
}

const MODES: [(Mode, &str); 4] = [
    (Mode::Plain, "plain"),
    (Mode::Walk, "walk"),
    (Mode::Repatch, "repatch"),
    (Mode::Transfer, "transfer"),
];

fn engine(mode: Mode) -> Engine {
    let (engine, target) = common::recursion();
    let cached: Mutex<Vec<(Frame, Prepared)>> = Mutex::new(Vec::new());
    engine
        .register_callback("osr", move |h: &mut Hypercall<'_>| {
            if mode == Mode::Plain {
                return Ok(std::ptr::null_mut::<c_void>());
            }
            let transfers = Transfers::new(&h.engine());
            let mut cached = cached.lock().unwrap();
            if mode == Mode::Repatch && !cached.is_empty() {
                if cached.iter().all(|(f, p)| transfers.patch(f, p).is_ok()) {
                    return Ok(std::ptr::null_mut());
                }
                cached.clear();
            }
            let frames = transfers.walk(&h.guest_state());
            if mode == Mode::Walk {
                black_box(&frames);
                return Ok(std::ptr::null_mut());
            }
            let mut prepared: HashMap<u64, Prepared> = HashMap::new();
            for frame in frames.iter().filter(|f| f.site == Some(SiteId(1))) {
                let p = match prepared.get(&frame.return_address) {
                    Some(p) => p,
                    None => {
                        let p = transfers.prepare(frame, &target).map_err(failed)?;
                        prepared.entry(frame.return_address).or_insert(p)
                    }
                };
                transfers.patch(frame, p).map_err(failed)?;
                if mode == Mode::Repatch {
                    cached.push((frame.clone(), p.clone()));
                }
            }
            Ok(std::ptr::null_mut())
        })
        .expect("register osr");
    engine
        .register_callback("again", |_: &mut Hypercall<'_>| {
            Ok(std::ptr::null_mut::<c_void>())
        })
        .expect("register again");
    engine
}

fn expected(mode: Mode, depth: u64) -> u64 {
    match mode {
        Mode::Transfer | Mode::Repatch => depth * (depth + 1),
        _ => depth * (depth + 1) / 2,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lazy_transfer");
    for (mode, name) in MODES {
        let engine = engine(mode);
        for depth in DEPTHS {
            assert_eq!(engine.call("rec", &[depth]).unwrap(), expected(mode, depth));
            group.throughput(Throughput::Elements(depth));
            group.bench_with_input(BenchmarkId::new(name, depth), &depth, |b, &depth| {
                b.iter(|| engine.call("rec", &[black_box(depth)]).unwrap())
            });
        }
    }
    group.finish();
}

/// Median time of one `rec(depth)` call under `mode`, over `rounds` rounds.
fn median(engine: &Engine, depth: u64, rounds: usize) -> Duration {
    let calls = 200;
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(engine.call("rec", &[black_box(depth)]).unwrap());
            }
            start.elapsed() / calls
        })
        .collect();
    times.sort();
    times[rounds / 2]
}

fn summary() {
    let depth = 1000;
    let engines: Vec<(Mode, Engine)> = MODES.iter().map(|&(m, _)| (m, engine(m))).collect();
    for (_, engine) in &engines {
        median(engine, depth, 5);
    }
    let ns = |mode: Mode| {
        let engine = &engines.iter().find(|(m, _)| *m == mode).unwrap().1;
        median(engine, depth, 31).as_secs_f64() * 1e9 / depth as f64
    };
    let (plain, walk, repatch, transfer) = (
        ns(Mode::Plain),
        ns(Mode::Walk),
        ns(Mode::Repatch),
        ns(Mode::Transfer),
    );
    println!("\nper frame, rec({depth}), medians:");
    println!("  plain call + return                  {plain:7.2} ns");
    println!(
        "  walk                                 {:7.2} ns",
        walk - plain
    );
    println!(
        "  patch + transfer at run time         {:7.2} ns",
        repatch - plain
    );
    println!(
        "  whole lazy transfer (walk, prepare,  {:7.2} ns",
        transfer - plain
    );
    println!("    patch, run time)");
    println!(
        "  transfer / plain                     {:7.2}x",
        transfer / plain
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    summary();
}
