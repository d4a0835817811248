//! Transfer cost by stack depth: every frame of `rec(D)` (tests/ir/recursion.ll) moved, lazily
//! and eagerly, for D = 10 … 100,000, against plain calls and returns of the same depth measured
//! in the same run.
//!
//! Handlers of the hypercall at the bottom of the recursion:
//!
//! - `plain`: nothing; D frames return normally.
//! - `lazy`: walk, prepare (once per return address), patch every frame; each moves when its
//!   callee returns.
//! - `eager`: walk, prepare, and capture + patch every frame in the same pass
//!   ([`Transfers::transfer_now`]).
//!
//! Printed per depth: the median time of a whole call under each handler, the per-frame extra
//! cost `(mode - plain) / D`, and the time of the handler's own pass (walk + prepare + patch or
//! capture): the eager rewrite of the whole stack. Runs on a thread with a 512 MiB stack.
//!
//! `cargo bench -p uppercut-osr --bench depth` (`-- --quick`: fewer rounds).

mod common;

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uppercut_core::{CallbackError, Engine, Hypercall, SiteId};
use uppercut_osr::{Prepared, Transfers};

const DEPTHS: [u64; 5] = [10, 100, 1_000, 10_000, 100_000];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Lazy,
    Eager,
}

/// An engine whose `osr` hypercall moves every `rec` frame as `mode` says; the handler's own
/// time of the last call goes to `pass`.
fn engine(mode: Mode, pass: Arc<AtomicU64>) -> Engine {
    let (engine, target) = common::recursion();
    engine
        .register_callback("osr", move |h: &mut Hypercall<'_>| {
            if mode == Mode::Plain {
                return Ok(std::ptr::null_mut::<c_void>());
            }
            let started = Instant::now();
            let transfers = Transfers::new(&h.engine());
            let mut prepared: Option<Prepared> = None;
            for frame in transfers.walk(&h.guest_state()) {
                if frame.site != Some(SiteId(1)) {
                    continue;
                }
                let p = match &prepared {
                    Some(p) if p.return_address() == frame.return_address => p.clone(),
                    _ => {
                        let p = transfers
                            .prepare(&frame, &target)
                            .map_err(|e| CallbackError(e.to_string()))?;
                        prepared = Some(p.clone());
                        p
                    }
                };
                match mode {
                    Mode::Lazy => transfers.patch(&frame, &p),
                    _ => transfers.transfer_now(&frame, &p),
                }
                .map_err(|e| CallbackError(e.to_string()))?;
            }
            pass.store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
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

/// Median of `rounds` timings of `rec(depth)` (each the mean of `calls` calls), and the median
/// of the handler's pass.
fn median(
    engine: &Engine,
    pass: &AtomicU64,
    depth: u64,
    rounds: usize,
    mode: Mode,
) -> (Duration, Duration) {
    let calls = (200_000 / depth).clamp(1, 200) as u32;
    let expected = match mode {
        Mode::Plain => depth * (depth + 1) / 2,
        _ => depth * (depth + 1),
    };
    let mut times = Vec::with_capacity(rounds);
    let mut passes = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..calls {
            let got = engine.call("rec", &[black_box(depth)]).unwrap();
            assert_eq!(got, expected, "{mode:?} rec({depth})");
        }
        times.push(start.elapsed() / calls);
        passes.push(Duration::from_nanos(pass.load(Ordering::Relaxed)));
    }
    times.sort();
    passes.sort();
    (times[rounds / 2], passes[rounds / 2])
}

fn run(rounds: usize) {
    let modes = [Mode::Plain, Mode::Lazy, Mode::Eager];
    let engines: Vec<(Mode, Engine, Arc<AtomicU64>)> = modes
        .iter()
        .map(|&m| {
            let pass = Arc::new(AtomicU64::new(0));
            (m, engine(m, Arc::clone(&pass)), pass)
        })
        .collect();
    println!("transfer of every frame of rec(D), O2, medians of {rounds} rounds");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "depth", "plain", "lazy", "eager", "lazy/fr", "eager/fr", "lazy pass", "eager pass"
    );
    for depth in DEPTHS {
        let mut row = Vec::new();
        for (mode, engine, pass) in &engines {
            // Warm up: compile, decode, thunks.
            median(engine, pass, depth, 1, *mode);
            row.push(median(engine, pass, depth, rounds, *mode));
        }
        let per_frame =
            |t: Duration| (t.as_secs_f64() - row[0].0.as_secs_f64()) * 1e9 / depth as f64;
        println!(
            "{depth:>8} {:>12.3?} {:>12.3?} {:>12.3?} {:>8.1}ns {:>8.1}ns {:>12.3?} {:>12.3?}",
            row[0].0,
            row[1].0,
            row[2].0,
            per_frame(row[1].0),
            per_frame(row[2].0),
            row[1].1,
            row[2].1,
        );
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let rounds = if quick { 3 } else { 15 };
    let worker = std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(move || run(rounds))
        .expect("spawn the bench thread");
    worker.join().expect("the bench thread");
}
