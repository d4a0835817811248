//! Code lifetime at scale: a live function recompiled again and again, its frame moved into
//! each new specialisation, with code memory and RSS flat after warm-up.
//!
//! Each test runs the guest in a child process of its own (this test binary again, filtered to
//! the one test, with [`CHILD`] set), so that the RSS it reports is the guest's alone and not
//! that of the tests running beside it.

use std::ffi::c_void;
use std::process::Command;
use std::sync::{Arc, Mutex};

use uppercut_core::{CallbackError, Engine, EngineOptions, Hypercall, Instrumentation, OptLevel};
use uppercut_osr::policy::Specialise;
use uppercut_osr::{Osr, OsrOptions, Transfers};

use crate::support::{IrFormat, OptLevel as Clang, Scratch, compile_ir};

/// Set in the child: `n modes every cache`.
const CHILD: &str = "UPPERCUT_LIFETIME_CHILD";

/// `step` stores to `mode` in the middle of its body: each store with a new value specialises
/// `step` on it (a new version, relinked, the old one retired), and `step`'s own frame moves
/// into a continuation of the new specialisation, since it reads `mode` again.
const GUEST: &str = r#"
#include <stdio.h>
#include <stdlib.h>
void *PerformCustomCallback(const char *name, void *args);

int mode;

long step(long i, long modes) {
    long before = (long)mode * 3 + i;
    mode = (int)(i % modes);
    long after = (long)mode * 5 + i;
    return before + after;
}

int main(int argc, char **argv) {
    long n = atol(argv[1]), modes = atol(argv[2]), every = atol(argv[3]);
    long sum = 0;
    for (long i = 1; i <= n; i++) {
        sum += step(i, modes);
        if (i % every == 0)
            PerformCustomCallback("probe", (void *)i);
    }
    printf("%ld\n", sum);
    return 0;
}
"#;

/// What the guest prints.
fn expected(n: u64, modes: u64) -> i64 {
    let (mut mode, mut sum) = (0i64, 0i64);
    for i in 1..=n as i64 {
        let before = mode * 3 + i;
        mode = i % modes as i64;
        sum += before + mode * 5 + i;
    }
    sum
}

/// One probe: after `i` iterations.
#[derive(Debug, Clone, Copy)]
struct Probe {
    i: u64,
    /// Bytes of live code and data regions in the engine's arena.
    code: usize,
    units: usize,
    thunks: usize,
    rss: usize,
}

impl Probe {
    fn parse(line: &str) -> Option<Probe> {
        let mut words = line.strip_prefix("probe ")?.split_whitespace();
        let mut next = || words.next()?.parse::<u64>().ok();
        Some(Probe {
            i: next()?,
            code: next()? as usize,
            units: next()? as usize,
            thunks: next()? as usize,
            rss: next()? as usize,
        })
    }
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// The child: runs the guest, printing a probe line every `every` iterations and the guest's
/// output, then the totals.
fn child(spec: &str) {
    let numbers: Vec<u64> = spec
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    let [n, modes, every, cache] = numbers[..] else {
        panic!("{CHILD}={spec:?}");
    };
    let scratch = Scratch::new("lifetime");
    let source = scratch.path().join("step.c");
    std::fs::write(&source, GUEST).unwrap();
    let ir = compile_ir(&source, Clang::O0, IrFormat::Text, scratch.path());
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        instrument: Some(Instrumentation {
            loop_sites: false,
            entry_sites: false,
            store_sites: vec!["mode".to_owned()],
            initial_count: i64::MAX,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(&ir, options).unwrap();
    let probes = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&probes);
    engine
        .register_callback("probe", move |h: &mut Hypercall<'_>| {
            let engine = h.engine();
            recorded.lock().unwrap().push(Probe {
                i: h.args() as u64,
                code: engine.arena().stats().in_use_bytes,
                units: engine.units().len(),
                thunks: Transfers::new(&engine).thunks_in_use(),
                rss: rss_bytes(),
            });
            Ok::<*mut c_void, CallbackError>(std::ptr::null_mut())
        })
        .unwrap();
    let mut policy = Specialise::new(vec!["mode".to_owned()]);
    // O0 versions: the point is how many, not how fast.
    policy.level = OptLevel::O0;
    // Every change specialises again: no storm guard.
    policy.max_changes = u32::MAX;
    let options = OsrOptions {
        continuation_cache: cache as usize,
        ..OsrOptions::default()
    };
    let osr = Osr::install_with(&engine, policy, options).unwrap();
    let args = [n.to_string(), modes.to_string(), every.to_string()];
    // The guest's `printf` goes to this process's stdout, which the parent reads.
    let status = engine.run_main("step", &args).unwrap();
    assert_eq!(status, 0);
    for p in probes.lock().unwrap().iter() {
        println!(
            "probe {} {} {} {} {}",
            p.i, p.code, p.units, p.thunks, p.rss
        );
    }
    let stats = osr.stats();
    let reclaim = uppercut_core::reclaim::stats();
    println!(
        "totals recompiles={} frames={} retired={} freed={}",
        stats.recompiles, stats.frames, reclaim.retired, reclaim.freed
    );
}

/// Runs `test` in a child with `n modes every cache`; returns the guest's result line, the
/// probes and the totals line.
fn run_child(
    test: &str,
    n: u64,
    modes: u64,
    every: u64,
    cache: u64,
) -> (String, Vec<Probe>, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            test,
            "--exact",
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(CHILD, format!("{n} {modes} {every} {cache}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let probes: Vec<Probe> = stdout.lines().filter_map(Probe::parse).collect();
    let result = stdout
        .lines()
        .find(|l| l.parse::<i64>().is_ok())
        .unwrap_or_default()
        .to_owned();
    let totals = stdout
        .lines()
        .find(|l| l.starts_with("totals "))
        .unwrap_or_default()
        .to_owned();
    (result, probes, totals)
}

fn total(totals: &str, key: &str) -> u64 {
    totals
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {totals:?}"))
}

/// Checks that code memory, units and thunks stay flat after the first quarter of the run, and
/// RSS within `rss_slack` bytes of its level then.
fn assert_flat(probes: &[Probe], rss_slack: usize, what: &str) {
    assert!(probes.len() >= 8, "{what}: {probes:?}");
    let warm = probes[probes.len() / 4];
    let later = &probes[probes.len() / 4..];
    let max = |f: fn(&Probe) -> usize| later.iter().map(f).max().unwrap();
    // A few retired units may wait for the next safepoint: slack of a few pages.
    assert!(
        max(|p| p.code) <= warm.code + 64 * 1024,
        "{what}: code memory grew from {} to {} bytes: {later:?}",
        warm.code,
        max(|p| p.code)
    );
    assert!(
        max(|p| p.units) <= warm.units + 4,
        "{what}: units grew: {later:?}"
    );
    assert!(
        max(|p| p.thunks) <= warm.thunks + 4,
        "{what}: thunks grew: {later:?}"
    );
    assert!(
        max(|p| p.rss) <= warm.rss + rss_slack,
        "{what}: RSS grew from {} to {} bytes: {later:?}",
        warm.rss,
        max(|p| p.rss)
    );
}

fn recompile_live_function(test: &str, n: u64, modes: u64, cache: u64, rss_slack: usize) {
    if let Ok(spec) = std::env::var(CHILD) {
        child(&spec);
        return;
    }
    let every = (n / 20).max(1);
    let (result, probes, totals) = run_child(test, n, modes, every, cache);
    assert_eq!(result, expected(n, modes).to_string(), "{totals}");
    // Every iteration stores a new value: one relinked version each, and `step`'s frame moves.
    assert!(total(&totals, "recompiles") >= n, "{totals}");
    assert!(total(&totals, "frames") >= n, "{totals}");
    let (retired, freed) = (total(&totals, "retired"), total(&totals, "freed"));
    if modes <= 64 {
        // As many versions as values, kept by the engine's version cache (64 by default) and
        // relinked again at each flip: nothing to retire but evicted continuations.
        assert!(freed <= retired, "{totals}");
    } else {
        assert!(retired >= n && freed + 64 >= retired, "{totals}");
    }
    assert_flat(&probes, rss_slack, test);
}

/// Four values in turn: four versions, relinked again from the engine's version cache at each
/// flip, and continuations from the runtime's cache.
#[test]
fn recompiling_a_live_function_a_thousand_times_keeps_memory_flat() {
    recompile_live_function(
        "lifetime::recompiling_a_live_function_a_thousand_times_keeps_memory_flat",
        1000,
        4,
        256,
        4 << 20,
    );
}

/// A new value every time, with a cache of 8 continuations: continuations are evicted and
/// retired too, and the thunks of frames moved into them recycled.
#[test]
fn evicted_continuations_are_freed_and_their_thunks_recycled() {
    recompile_live_function(
        "lifetime::evicted_continuations_are_freed_and_their_thunks_recycled",
        600,
        1 << 40,
        8,
        4 << 20,
    );
}

/// The issue's figure: 100,000 recompilations (several minutes; `cargo test --release -p
/// uppercut-osr --test all lifetime -- --ignored`).
#[test]
#[ignore = "100,000 recompilations take several minutes"]
fn a_hundred_thousand_recompilations_keep_memory_flat() {
    recompile_live_function(
        "lifetime::a_hundred_thousand_recompilations_keep_memory_flat",
        100_000,
        4,
        256,
        16 << 20,
    );
}
