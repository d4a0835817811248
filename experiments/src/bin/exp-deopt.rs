//! Experiment 7, deoptimisation on redefinition: a function is redefined while a deep recursion
//! through code specialised on its old definition is live (the 2009 design note's `eval` /
//! `define_method` case), and what that costs by depth.
//!
//! The guest (`experiments/guests/deopt.c`, clang -O2 IR) keeps the definition of `op` in a
//! global, `definition`, which the recursive `rec(d)` reads on its way down and again on its way
//! up. Under `uppercut run --osr-specialize=definition`, a store of 0 first makes `rec` run code
//! with the first body of `op` folded in; `rec(DEPTH)` recurses, and at the bottom the guest
//! stores the new definition (1): the store's hypercall rebuilds `rec` for it and deoptimises
//! every one of the DEPTH + 1 live frames of `rec` (`rec(DEPTH)` down to `rec(0)`, whose call of
//! `bottom` made the store), which then finish in code for the new definition. The
//! guest checks nothing itself: it prints `rec(DEPTH)` and the experiment compares it with the
//! value computed here (a frame left in its old code would give another result), and fails on
//! any difference. The guest times itself with `clock_gettime` around the store and the unwind;
//! it runs the recursion on a thread with a 1 GiB stack, so depth 100,000 needs no `ulimit`.
//!
//! Configurations, each a fresh `uppercut run` per depth, repeating the recursion `reps` times:
//!
//! - `osr-lazy`: the redefinition with `--osr-transfer=lazy` (return addresses patched; each
//!   frame's state is read when its callee returns);
//! - `osr-eager`: the same with `--osr-transfer=eager` (every frame's state read at the store);
//! - `osr-same`: the baseline: under OSR, the bottom stores the definition already assumed, so
//!   the hypercall finds nothing to do and the unwind runs the specialised code;
//! - `plain`: `uppercut run` without OSR: the redefinition is a plain store, and the code reads
//!   the global at every level (the generic code's own cost).
//!
//! Rows, key `{depth, config}` (times are medians over the repetitions after the first):
//!
//! - `redefine_us`: the store at the bottom, its hypercall included (rebuilding `rec` for the
//!   new definition, walking the stack, preparing and patching or reading every frame);
//! - `redefine_first_us`: the same in the first repetition (the continuations are compiled then;
//!   later ones come from the runtime's cache, while `rec`'s specialisations are rebuilt at every
//!   store of a new value);
//! - `unwind_us`: from just after the store until `rec(DEPTH)` returned; `descend_us`: from the
//!   call of `rec(DEPTH)` to the store;
//! - `unwind_ns_per_frame`: `unwind_us` per live frame of `rec` (DEPTH + 1 of them);
//! - `ns_per_frame` (OSR redefinitions): `redefine_us + unwind_us` minus the same sum for
//!   `osr-same` at this depth, per frame: what a redefinition costs per live frame, compilation
//!   included;
//! - `redefine_shallow_us`: the same store made earlier in the repetition, with no frame of
//!   `rec` live (the guest's step 1): the fixed cost of a redefinition, chiefly rebuilding `rec`
//!   for the new definition;
//! - `transfer_ns_per_frame` (OSR): the median over the repetitions after the first of
//!   `(store - shallow store) / (depth + 1)`: the redefinition's cost per live frame, the
//!   fixed part taken out (at small depths it is within the compile time's noise); for
//!   `osr-same`, the cost per frame of the stack walk that finds nothing to move;
//! - `unwind_ratio` (OSR redefinitions, depth >= 1000): `unwind_us` over `osr-same`'s:
//!   unwinding through deoptimised frames against unwinding through the specialised ones;
//! - `frames_moved` (OSR): `--osr-stats` frames per repetition (frames that entered new code:
//!   `depth + 1` when every frame of `rec` was deoptimised; 0 for `osr-same`); `recompiles_count`: versions
//!   and continuations compiled in the whole run; `max_stall_us`: the longest hypercall.
//!
//! Checked by `reproduce --check`: `frames_moved` (exactly) and `unwind_ratio` (within 50%).
//! Every run must return the expected result at every repetition, or the experiment fails.
//!
//! `cargo run --release -p uppercut-experiments --bin exp-deopt -- [--quick] [--out FILE]`

use std::process::Command;
use std::time::Duration;

use uppercut_core::OptLevel;
use uppercut_experiments::harness::{self, Args, Progress};
use uppercut_experiments::osr_stats::OsrCounts;
use uppercut_experiments::report::{Report, Row};
use uppercut_experiments::{Clang, Error, Result};

/// The guest.
const SOURCE: &str = include_str!("../../guests/deopt.c");

/// The global holding the definition.
const GLOBAL: &str = "definition";

/// The time limit of one run.
const TIMEOUT: Duration = Duration::from_secs(180);

/// One configuration.
struct Config {
    name: &'static str,
    /// `--osr-transfer=` mode, or `None` for no OSR at all.
    transfer: Option<&'static str>,
    /// Whether the bottom stores a new definition.
    redefine: bool,
}

const CONFIGS: [Config; 4] = [
    Config {
        name: "osr-lazy",
        transfer: Some("lazy"),
        redefine: true,
    },
    Config {
        name: "osr-eager",
        transfer: Some("eager"),
        redefine: true,
    },
    Config {
        name: "osr-same",
        transfer: Some("lazy"),
        redefine: false,
    },
    Config {
        name: "plain",
        transfer: None,
        redefine: true,
    },
];

/// The baseline configuration for `ns_per_frame` and `unwind_ratio`.
const BASELINE: &str = "osr-same";

fn main() {
    harness::main(
        "deopt",
        "Deoptimisation on redefinition under deep recursion",
        run,
    )
}

/// `op` of the guest.
fn op(definition: u64, x: u64) -> u64 {
    match definition {
        0 => x.wrapping_mul(3).wrapping_add(1),
        1 => (x ^ 0x9e37_79b9_7f4a_7c15).wrapping_add(7),
        _ => x.wrapping_sub(1),
    }
}

/// What `rec(depth)` returns when the bottom stores `bottom` (the way down used 0).
fn expected(depth: u64, bottom: u64) -> u64 {
    (1..=depth).fold(1, |r, d| op(bottom, r) ^ op(0, d))
}

/// One repetition, as the guest printed it.
#[derive(Debug, Clone, Copy)]
struct Rep {
    shallow_ns: f64,
    descend_ns: f64,
    store_ns: f64,
    unwind_ns: f64,
    result: u64,
}

fn parse_reps(stdout: &str) -> Result<Vec<Rep>> {
    stdout
        .lines()
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let field = |name: &str| {
                words
                    .iter()
                    .position(|w| *w == name)
                    .and_then(|i| words.get(i + 1))
                    .ok_or_else(|| bad(format!("no `{name}` in the guest's line {line:?}")))
            };
            let number = |name: &str| -> Result<f64> {
                field(name)?
                    .parse::<f64>()
                    .map_err(|_| bad(format!("`{name}` is not a number in {line:?}")))
            };
            Ok(Rep {
                shallow_ns: number("shallow_ns")?,
                descend_ns: number("descend_ns")?,
                store_ns: number("store_ns")?,
                unwind_ns: number("unwind_ns")?,
                result: field("result")?
                    .parse()
                    .map_err(|_| bad(format!("`result` is not a u64 in {line:?}")))?,
            })
        })
        .collect()
}

fn bad(reason: String) -> Error {
    Error::Measurement { reason }
}

/// What one run measured.
struct Measured {
    redefine_us: f64,
    redefine_first_us: f64,
    redefine_shallow_us: f64,
    transfer_ns_per_frame: f64,
    unwind_us: f64,
    descend_us: f64,
    stats: Option<OsrCounts>,
    reps: usize,
}

fn run(args: &Args, report: &mut Report) -> Result<()> {
    let depths: &[u64] = if args.quick {
        &[1, 10, 100, 1000]
    } else {
        &[1, 10, 100, 1000, 10_000, 100_000]
    };
    let reps_for = |depth: u64| -> usize {
        match (args.quick, depth) {
            (true, _) => 6,
            (false, d) if d >= 100_000 => 9,
            (false, _) => 31,
        }
    };
    let clang = Clang::find()?;
    let uppercut = harness::uppercut()?;
    report.environment.clang = clang.version().to_owned();
    let ir = clang.compile_ir("deopt", SOURCE, OptLevel::O2)?;
    report.setting("depths", depths);
    report.setting(
        "repetitions",
        depths
            .iter()
            .map(|&d| (d.to_string(), reps_for(d)))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    report.setting(
        "configs",
        CONFIGS.iter().map(|c| c.name).collect::<Vec<_>>(),
    );
    report.setting(
        "guest",
        "experiments/guests/deopt.c, clang -O2 IR; uppercut run -O2 \
         [--osr-specialize=definition --osr-stats --osr-transfer=MODE]",
    );
    let progress = Progress::new(args, "deopt", depths.len() * CONFIGS.len());
    for &depth in depths {
        let reps = reps_for(depth);
        let mut measured = Vec::with_capacity(CONFIGS.len());
        for config in &CONFIGS {
            let mut command = Command::new(&uppercut);
            command.arg("run");
            if let Some(transfer) = config.transfer {
                command
                    .arg(format!("--osr-specialize={GLOBAL}"))
                    .arg("--osr-stats=json")
                    .arg(format!("--osr-transfer={transfer}"));
            }
            command.arg(ir.path()).args([
                depth.to_string(),
                reps.to_string(),
                if config.redefine { "redefine" } else { "same" }.to_owned(),
            ]);
            let t = harness::run_timed(&mut command, TIMEOUT)?;
            progress.step(&format!("depth {depth} {}", config.name));
            if !t.status.success() {
                return Err(bad(format!(
                    "depth {depth}, {}: the guest failed ({}): {}",
                    config.name,
                    t.status,
                    t.stderr.trim_end()
                )));
            }
            let rows = parse_reps(&t.stdout)?;
            if rows.len() != reps {
                return Err(bad(format!(
                    "depth {depth}, {}: {} repetitions printed, {reps} expected",
                    config.name,
                    rows.len()
                )));
            }
            let want = expected(depth, u64::from(config.redefine));
            if let Some(wrong) = rows.iter().find(|r| r.result != want) {
                return Err(bad(format!(
                    "depth {depth}, {}: rec returned {} instead of {want}: a frame did not \
                     finish with the new definition",
                    config.name, wrong.result
                )));
            }
            let stats = if config.transfer.is_some() {
                Some(OsrCounts::parse(&t.stderr).ok_or_else(|| {
                    bad(format!(
                        "depth {depth}, {}: no --osr-stats line in {:?}",
                        config.name, t.stderr
                    ))
                })?)
            } else {
                None
            };
            let warm = &rows[1.min(rows.len() - 1)..];
            let med = |f: fn(&Rep) -> f64| harness::median(&warm.iter().map(f).collect::<Vec<_>>());
            let frames = depth as f64 + 1.0;
            let per_frame: Vec<f64> = warm
                .iter()
                .map(|r| (r.store_ns - r.shallow_ns) / frames)
                .collect();
            measured.push(Measured {
                redefine_us: med(|r| r.store_ns) / 1e3,
                redefine_first_us: rows[0].store_ns / 1e3,
                redefine_shallow_us: med(|r| r.shallow_ns) / 1e3,
                transfer_ns_per_frame: harness::median(&per_frame),
                unwind_us: med(|r| r.unwind_ns) / 1e3,
                descend_us: med(|r| r.descend_ns) / 1e3,
                stats,
                reps,
            });
        }
        let base = CONFIGS
            .iter()
            .position(|c| c.name == BASELINE)
            .map(|i| &measured[i])
            .expect("the baseline is a configuration");
        let (base_cost, base_unwind) = (base.redefine_us + base.unwind_us, base.unwind_us);
        for (config, m) in CONFIGS.iter().zip(&measured) {
            let cost = m.redefine_us + m.unwind_us;
            // rec(depth) down to rec(0).
            let frames = depth as f64 + 1.0;
            let mut row = Row::new()
                .key("depth", depth)
                .key("config", config.name)
                .value("redefine_us", m.redefine_us)
                .value("redefine_first_us", m.redefine_first_us)
                .value("redefine_shallow_us", m.redefine_shallow_us)
                .value("unwind_us", m.unwind_us)
                .value("descend_us", m.descend_us)
                .value("unwind_ns_per_frame", m.unwind_us * 1e3 / frames)
                .value("repetitions_count", m.reps as f64);
            if config.transfer.is_some() && config.redefine {
                row = row.value("ns_per_frame", (cost - base_cost) * 1e3 / frames);
                // Shallower unwinds take tens of nanoseconds: their ratio is mostly noise.
                if depth >= 1000 {
                    row = row.value("unwind_ratio", m.unwind_us / base_unwind);
                }
            }
            if let Some(stats) = &m.stats {
                let per_rep = |name: &str| stats.get(name).unwrap_or(0) as f64 / m.reps as f64;
                row = row
                    .value("transfer_ns_per_frame", m.transfer_ns_per_frame)
                    .value("frames_moved", per_rep("frames"))
                    .value(
                        "recompiles_count",
                        stats.get("recompiles").unwrap_or(0) as f64,
                    )
                    .value(
                        "max_stall_us",
                        stats.get("max_stall_us").unwrap_or(0) as f64,
                    );
                let moved = per_rep("frames");
                let want = if config.redefine { frames } else { 0.0 };
                if moved != want {
                    report.note(format!(
                        "depth {depth}, {}: {moved} frames moved per repetition, {want} expected",
                        config.name
                    ));
                }
            }
            report.push(row);
        }
    }
    notes(report, depths[depths.len() - 1]);
    report.check_with_floor("frames_moved", 0.0, 0.5);
    report.check_with_floor("unwind_ratio", 0.5, 0.5);
    Ok(())
}

/// Notes on the deepest recursion measured.
fn notes(report: &mut Report, depth: u64) {
    let get = |config: &str, value: &str| {
        report
            .rows
            .iter()
            .find(|r| r.matches(&[("depth", &depth.to_string()), ("config", config)]))
            .and_then(|r| r.get(value))
            .unwrap_or(f64::NAN)
    };
    let frames = depth + 1;
    let text = format!(
        "depth {depth} ({frames} live frames of rec): the redefinition stalls the guest \
         {:.1} ms lazily ({:.0} ns per frame beyond the {:.1} ms it takes with no frame live), \
         {:.1} ms eagerly ({:.0} ns per frame); the unwind then takes {:.1} ns per frame lazily \
         and {:.1} ns eagerly, against {:.1} ns through the specialised code (osr-same) and \
         {:.1} ns through the generic code (plain); a store of the definition already assumed \
         still walks every frame: {:.0} us ({:.0} ns per frame)",
        get("osr-lazy", "redefine_us") / 1e3,
        get("osr-lazy", "transfer_ns_per_frame"),
        get("osr-lazy", "redefine_shallow_us") / 1e3,
        get("osr-eager", "redefine_us") / 1e3,
        get("osr-eager", "transfer_ns_per_frame"),
        get("osr-lazy", "unwind_ns_per_frame"),
        get("osr-eager", "unwind_ns_per_frame"),
        get("osr-same", "unwind_ns_per_frame"),
        get("plain", "unwind_ns_per_frame"),
        get("osr-same", "redefine_us"),
        get("osr-same", "transfer_ns_per_frame"),
    );
    report.note(text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_results_are_those_of_the_native_guest() {
        // `clang-19 -O2 deopt.c && ./a.out 10 1 redefine` prints `result 94`.
        assert_eq!(expected(10, 1), 94);
        assert_eq!(expected(0, 1), 1);
        assert_ne!(expected(1000, 1), expected(1000, 0));
    }

    #[test]
    fn guest_lines_parse() {
        let reps = parse_reps(
            "rep 0 shallow_ns 3 descend_ns 5 store_ns 7 unwind_ns 9 result 18446744073709551615\n",
        )
        .unwrap();
        assert_eq!((reps[0].store_ns, reps[0].result), (7.0, u64::MAX));
        assert!(parse_reps("rep 0 store_ns x\n").is_err());
    }
}
