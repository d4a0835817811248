//! The stall of tier-up: how long the site hypercalls of a hot loop keep the guest waiting,
//! with synchronous compilation (the hypercall waits for the O2 version and continuation) and
//! with background compilation (the hypercall queues them; a later pass moves the frame).
//!
//! The guest (`GUEST`, compiled with `clang-19 -O0` at bench start) loops until the host says
//! its frame has moved (a `stop` hypercall every 2^16 passes). Each round uses a fresh O0
//! engine with `TierUp` (loop sites fire after 1000 passes) and reads `OsrStats::max_stall`
//! (the longest site hypercall) and `total_stall`. Medians over the rounds, both modes
//! interleaved in one run.
//!
//! `cargo bench -p uppercut-osr --bench stall` (`-- --quick`: fewer rounds).

mod common;

use std::ffi::c_void;
use std::time::Duration;

use uppercut_core::{Engine, EngineOptions, Hypercall, Instrumentation, OptLevel};
use uppercut_osr::policy::TierUp;
use uppercut_osr::{Osr, OsrStats, Transfers};

const GUEST: &str = include_str!("kernels/spin.c");

fn round(ir: &str, background: bool) -> OsrStats {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        instrument: Some(Instrumentation {
            initial_count: 1000,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(ir.as_bytes(), "spin.ll", options).expect("load");
    engine
        .register_callback("stop", |h: &mut Hypercall<'_>| {
            let moved = Transfers::new(&h.engine()).frames_transferred() > 0;
            Ok(usize::from(moved) as *mut c_void)
        })
        .expect("register stop");
    let policy = TierUp::new(OptLevel::O2, background);
    let osr = Osr::install(&engine, policy).expect("install");
    engine.call("spin", &[42]).expect("spin");
    osr.stats()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let rounds = if quick { 3 } else { 15 };
    let ir = common::ir_of_source("stall", "-O0", GUEST);
    let mut max = [Vec::new(), Vec::new()];
    let mut total = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, background) in [false, true].into_iter().enumerate() {
            let stats = round(&ir, background);
            assert!(stats.frames >= 1, "the loop never moved: {stats:?}");
            max[i].push(stats.max_stall);
            total[i].push(stats.total_stall);
        }
    }
    println!("tier-up stall of a hot O0 loop, medians of {rounds} rounds (fresh engine each)");
    println!(
        "{:<12} {:>16} {:>16}",
        "compile", "longest hypercall", "all hypercalls"
    );
    for (i, name) in ["sync", "background"].iter().enumerate() {
        println!(
            "{name:<12} {:>16.1?} {:>16.1?}",
            median(max[i].clone()),
            median(total[i].clone())
        );
    }
    let ratio = median(max[0].clone()).as_secs_f64() / median(max[1].clone()).as_secs_f64();
    println!("longest stall, sync / background: {ratio:.0}x");
}
