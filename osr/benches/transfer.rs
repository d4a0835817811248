//! What a lazy frame transfer costs per frame, against a plain return.
//!
//! `rec(D)` (tests/ir/recursion.ll) recurses D frames deep through an OSR site and makes a
//! hypercall at the bottom. Variants of the hypercall's handler:
//!
//! - `plain`: does nothing; every frame returns normally (`add; ret`).
//! - `walk`: walks the D frames.
//! - `patch_unpatch`: walks, prepares (once per return address), patches every frame and undoes
//!   the patches: everything a transfer costs on the host side, without the transfer.
//! - `transfer`: walks, prepares, patches; every frame then returns into its thunk, the stub
//!   and `rec_double`.
//!
//! Per-frame costs are differences divided by D: `transfer - plain` is the whole lazy transfer,
//! `transfer - patch_unpatch` about the run-time part (thunk, stub, resume, continuation
//! instead of `add; ret`). A summary with those numbers is printed at the end.

use std::collections::HashMap;
use std::ffi::c_void;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use uppercut_core::{CallbackError, Engine, EngineOptions, Hypercall, OptLevel, SiteId, ValueKind};
use uppercut_osr::{Prepared, Target, Transfers};

const DEPTHS: [u64; 2] = [100, 1000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Walk,
    PatchUnpatch,
    Transfer,
}

const MODES: [(Mode, &str); 4] = [
    (Mode::Plain, "plain"),
    (Mode::Walk, "walk"),
    (Mode::PatchUnpatch, "patch_unpatch"),
    (Mode::Transfer, "transfer"),
];

fn engine(mode: Mode) -> Engine {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ir/recursion.ll");
    let text = std::fs::read_to_string(path).expect("read recursion.ll");
    let options = EngineOptions {
        opt_level: OptLevel::O2,
        ..Default::default()
    };
    let engine = Engine::from_bytes(text.as_bytes(), "recursion.ll", options).expect("load");
    let target = Target {
        site: SiteId(1),
        continuation: engine.entry("rec_double").expect("rec_double"),
        values: vec![ValueKind::I64],
        result: Some(ValueKind::I64),
    };
    engine
        .register_callback("osr", move |h: &mut Hypercall<'_>| {
            if mode == Mode::Plain {
                return Ok(std::ptr::null_mut::<c_void>());
            }
            let transfers = Transfers::new(&h.engine());
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
                        let p = transfers
                            .prepare(frame, &target)
                            .map_err(|e| CallbackError(e.to_string()))?;
                        prepared.entry(frame.return_address).or_insert(p)
                    }
                };
                transfers
                    .patch(frame, p)
                    .map_err(|e| CallbackError(e.to_string()))?;
            }
            if mode == Mode::PatchUnpatch {
                for frame in frames.iter().filter(|f| f.site == Some(SiteId(1))) {
                    transfers
                        .unpatch(frame)
                        .map_err(|e| CallbackError(e.to_string()))?;
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
        Mode::Transfer => depth * (depth + 1),
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
    let (plain, walk, unpatch, transfer) = (
        ns(Mode::Plain),
        ns(Mode::Walk),
        ns(Mode::PatchUnpatch),
        ns(Mode::Transfer),
    );
    println!("\nper frame, rec({depth}), medians:");
    println!("  plain call + return            {plain:7.2} ns");
    println!("  + walk                         {:7.2} ns", walk - plain);
    println!("  + prepare, patch, unpatch      {:7.2} ns", unpatch - walk);
    println!(
        "  transfer at run time           {:7.2} ns",
        transfer - unpatch
    );
    println!(
        "  whole lazy transfer            {:7.2} ns",
        transfer - plain
    );
    println!("  transfer / plain               {:7.2}x", transfer / plain);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
