//! The built-in policies through the Rust API, on real clang output: what moved where.

use uppercut_core::{Engine, EngineOptions, Instrumentation, OptLevel as Level, SiteKind};
use uppercut_osr::policy::{Specialise, TierUp};
use uppercut_osr::{Osr, OsrEvent, VersionSpec};

use crate::support::{IrFormat, OptLevel, Scratch, compile_ir, program_source};

const GLOBAL: &str = "extended_status";

/// Global values a version assumes.
type Specialisation = Vec<(String, u64)>;

fn engine(program: &str, opt: OptLevel, instrument: Instrumentation) -> (Engine, Scratch) {
    let scratch = Scratch::new(program);
    let ir = compile_ir(
        &program_source(program),
        opt,
        IrFormat::Text,
        scratch.path(),
    );
    let level = match opt {
        OptLevel::O0 => Level::O0,
        OptLevel::O2 => Level::O2,
    };
    let options = EngineOptions {
        opt_level: level,
        instrument: Some(instrument),
        ..EngineOptions::default()
    };
    (Engine::from_file(&ir, options).expect("load"), scratch)
}

/// The design note's scenario: a store inside the running loop specialises the loop's function
/// on the stored value and moves the running frame into it; the next store deoptimises that
/// frame into a specialisation on the new value; the result is right.
#[test]
fn a_store_specialises_the_running_loop_and_the_next_one_deoptimises_it() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        let instrument = Instrumentation {
            loop_sites: false,
            entry_sites: false,
            store_sites: vec![GLOBAL.to_owned()],
            initial_count: i64::MAX,
            ..Instrumentation::default()
        };
        let (engine, _scratch) = engine("config_loop", opt, instrument);
        let osr_module = engine.osr().unwrap();
        let global = osr_module.global(GLOBAL).unwrap();
        assert!(global.specialisable.is_ok(), "{:?}", global.specialisable);
        assert!(
            global.readers.contains(&"serve".to_owned()),
            "{:?}",
            global.readers
        );
        let osr = Osr::install(&engine, Specialise::new(vec![GLOBAL.to_owned()])).unwrap();
        let status = engine
            .run_main("config_loop", &["4000".to_owned()])
            .unwrap();
        assert_eq!(status, 0, "{opt:?}: serve() computed a wrong total");

        let moves: Vec<(Specialisation, Specialisation)> = osr
            .events()
            .into_iter()
            .filter_map(|e| match e {
                OsrEvent::Transfer {
                    function, from, to, ..
                } if function == "serve" => Some((from.specialisation, to.specialisation)),
                _ => None,
            })
            .collect();
        let spec = |v: u64| vec![(GLOBAL.to_owned(), v)];
        assert_eq!(
            moves,
            vec![(vec![], spec(1)), (spec(1), spec(2)), (spec(2), spec(0))],
            "{opt:?}: the running loop of serve() should move generic → 1 → 2 → 0"
        );
        let versions: Vec<VersionSpec> = osr
            .events()
            .into_iter()
            .filter_map(|e| match e {
                OsrEvent::Version { function, spec, .. } if function == "account" => Some(spec),
                _ => None,
            })
            .collect();
        assert_eq!(
            versions.len(),
            3,
            "{opt:?}: account() is specialised at each store"
        );
        let stats = osr.stats();
        assert!(stats.frames >= 3, "{opt:?}: {stats:?}");
        // The specialised versions are the entries every later call reaches.
        let newest = engine.versions("account").last().cloned().unwrap();
        assert_eq!(newest.specialisation, spec(0));
    }
}

/// Stores to a global whose address escapes are refused up front, with the reason.
#[test]
fn a_global_whose_address_escapes_cannot_be_specialised() {
    let instrument = Instrumentation {
        loop_sites: false,
        store_sites: vec!["counter".to_owned()],
        ..Instrumentation::default()
    };
    let scratch = Scratch::new("escaping-global");
    let source = scratch.path().join("escape.c");
    std::fs::write(
        &source,
        "int counter; int *where(void) { return &counter; }\n\
         int main(void) { *where() = 3; return counter - 3; }\n",
    )
    .unwrap();
    let ir = compile_ir(&source, OptLevel::O0, IrFormat::Text, scratch.path());
    let options = EngineOptions {
        instrument: Some(instrument),
        ..EngineOptions::default()
    };
    let engine = Engine::from_file(&ir, options).unwrap();
    let why = engine
        .osr()
        .unwrap()
        .global("counter")
        .unwrap()
        .specialisable
        .clone();
    assert!(why.unwrap_err().contains("address is taken"));
    let refused = engine
        .compile_version(&uppercut_core::VersionRequest {
            function: "main".to_owned(),
            opt_level: Level::O2,
            specialisation: vec![("counter".to_owned(), 3)],
            relink: false,
            readiness: uppercut_core::Readiness::Sites,
        })
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("cannot specialise on `counter`"),
        "{refused}"
    );
}

/// Tier-up: a hot loop of O0 code moves to O2 mid-loop, and its function's entries reach O2.
#[test]
fn tier_up_moves_a_hot_loop_to_o2() {
    let instrument = Instrumentation {
        initial_count: 100,
        ..Instrumentation::default()
    };
    let (engine, _scratch) = engine("config_loop", OptLevel::O0, instrument);
    let loops = engine
        .osr()
        .unwrap()
        .sites()
        .iter()
        .filter(|s| s.kind == SiteKind::Loop && s.function == "serve")
        .count();
    assert!(loops >= 1);
    // In the foreground: the loop waits for its code and moves at once.
    let osr = Osr::install(&engine, TierUp::new(Level::O2, false)).unwrap();
    assert_eq!(
        engine
            .run_main("config_loop", &["5000".to_owned()])
            .unwrap(),
        0
    );
    let moved = osr.events().into_iter().any(|e| {
        matches!(e, OsrEvent::Transfer { function, from, to, .. }
            if function == "serve" && from.opt_level == Level::O0 && to.opt_level == Level::O2
                && to.readiness == uppercut_core::Readiness::Final)
    });
    assert!(moved, "{:?}", osr.events());
    assert_eq!(
        engine.versions("serve").last().unwrap().opt_level,
        Level::O2
    );
    assert!(osr.stats().frames >= 1);
}

/// Specialisation and stress together, through the command line: same output as native.
#[test]
fn specialise_under_stress_matches_native() {
    use crate::support::{Runner, compare, compile_native, run, run_command};
    let runner = Runner::from_env();
    if runner.is_lli {
        return;
    }
    let scratch = Scratch::new("config-loop-stress");
    let source = program_source("config_loop");
    for opt in [OptLevel::O0, OptLevel::O2] {
        let native = compile_native(&source, opt, scratch.path());
        let ir = compile_ir(&source, opt, IrFormat::Text, scratch.path());
        let args = vec!["6000".into()];
        let expected = run(&native, &args, b"", scratch.path());
        for seed in ["1", "2", "3"] {
            let stress = format!("--osr=stress={seed}");
            let specialise = format!("--osr-specialize={GLOBAL}");
            let extra = [stress.as_str(), specialise.as_str()];
            let jitted = run_command(runner.command(opt, &extra, &ir, &args), b"", scratch.path());
            if let Err(report) = compare(&expected, &jitted) {
                panic!("{opt:?} seed {seed}:\n{report}");
            }
        }
    }
}

/// The storm guard: a global flipped every third pass of the loop that reads it stops being
/// specialised on after `SPECIALISE_MAX_CHANGES` changes, and the output stays native.
#[test]
fn a_global_that_keeps_changing_stops_being_specialised() {
    use crate::support::{Runner, compile_native, run, run_command};
    let runner = Runner::from_env();
    if runner.is_lli {
        return;
    }
    let scratch = Scratch::new("flip-storm");
    let source = program_source("flip_storm");
    for opt in [OptLevel::O0, OptLevel::O2] {
        let native = compile_native(&source, opt, scratch.path());
        let ir = compile_ir(&source, opt, IrFormat::Text, scratch.path());
        let args = vec!["3000".into()];
        let expected = run(&native, &args, b"", scratch.path());
        let extra = ["--osr-specialize=mode", "--osr-stats=json"];
        let jitted = run_command(runner.command(opt, &extra, &ir, &args), b"", scratch.path());
        assert_eq!(jitted.stdout, expected.stdout, "{opt:?}");
        assert_eq!(jitted.end(), expected.end(), "{opt:?}");
        let stderr = String::from_utf8_lossy(&jitted.stderr);
        let json = stderr
            .lines()
            .find_map(|l| l.strip_prefix("uppercut: osr "))
            .unwrap_or_else(|| panic!("{opt:?}: no stats in {stderr}"));
        let stats: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(stats["storms"], 1, "{opt:?}: {json}");
        // Every change deoptimised until the guard (about 1,000 changes happen in all).
        let transitions = stats["transitions"].as_u64().unwrap();
        let bound = u64::from(uppercut_osr::policy::SPECIALISE_MAX_CHANGES) + 1;
        assert!(
            transitions > 10 && transitions <= bound,
            "{opt:?}: {transitions} transitions: {json}"
        );
    }
}
