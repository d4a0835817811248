//! Where instrumentation puts sites (the call graph) and how loop sites count
//! ([`LoopCounters`]), through the engine's API. No OSR runtime: site hypercalls go to handlers
//! of the tests' own.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use uppercut_core::{
    Engine, EngineOptions, Instrumentation, LoopCounters, OptLevel, REGISTER_CHUNK, SITE_CALLBACK,
    SiteKind,
};

/// The calls of `function` that carry a site, by callee (`None`: an indirect call).
fn call_sites(engine: &Engine, function: &str) -> Vec<Option<String>> {
    let osr = engine.osr().unwrap();
    let mut calls: Vec<Option<String>> = osr
        .sites()
        .iter()
        .filter(|s| s.function == function && s.refused.is_none())
        .filter_map(|s| match &s.kind {
            SiteKind::Call { callee } => Some(callee.clone()),
            _ => None,
        })
        .collect();
    calls.sort();
    calls
}

fn engine(ir: &str, instrument: Instrumentation, opt_level: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level,
        instrument: Some(instrument),
        ..EngineOptions::default()
    };
    Engine::from_bytes(ir.as_bytes(), "sites.ll", options).expect("loads")
}

/// `table` holds the address of `CALLBACK` (the only function whose address is taken);
/// `through_pointer` calls through a pointer, `through_library` hands `CALLBACK` to a library
/// that calls it back (`qsort`), `plain` calls a library function that takes no callback, and
/// `direct` calls `reaches`, which makes a hypercall.
fn call_graph_guest(callback_reaches: bool) -> String {
    let body = if callback_reaches {
        "%r = call ptr @PerformCustomCallback(ptr @name, ptr null)\n  ret i32 0"
    } else {
        "ret i32 0"
    };
    format!(
        r#"
@name = private unnamed_addr constant [5 x i8] c"poke\00"
@table = global [1 x ptr] [ptr @callback]
declare ptr @PerformCustomCallback(ptr, ptr)
declare void @qsort(ptr, i64, i64, ptr)
declare i64 @strlen(ptr)

define i32 @callback(ptr %a, ptr %b) {{
  {body}
}}

define void @reaches() {{
  %r = call ptr @PerformCustomCallback(ptr @name, ptr null)
  ret void
}}

define i32 @through_pointer(ptr %f) {{
  %r = call i32 %f(ptr null, ptr null)
  ret i32 %r
}}

define void @through_library(ptr %base) {{
  call void @qsort(ptr %base, i64 2, i64 8, ptr @callback)
  ret void
}}

define i64 @plain(ptr %s) {{
  %n = call i64 @strlen(ptr %s)
  ret i64 %n
}}

define void @direct() {{
  call void @reaches()
  ret void
}}
"#
    )
}

#[test]
fn an_indirect_call_is_a_site_only_when_a_function_whose_address_is_taken_reaches_a_hypercall() {
    for (reaches, expected) in [(false, vec![]), (true, vec![None])] {
        let engine = engine(
            &call_graph_guest(reaches),
            Instrumentation {
                loop_sites: false,
                ..Instrumentation::default()
            },
            OptLevel::O0,
        );
        assert_eq!(
            call_sites(&engine, "through_pointer"),
            expected,
            "callback reaches: {reaches}"
        );
        assert_eq!(
            call_sites(&engine, "direct"),
            vec![Some("reaches".to_owned())]
        );
        // Without shadow discovery a walk stops at a library frame: no library call is a site.
        assert_eq!(
            call_sites(&engine, "through_library"),
            Vec::<Option<String>>::new()
        );
        assert_eq!(call_sites(&engine, "plain"), Vec::<Option<String>>::new());
    }
}

#[test]
fn without_the_call_graph_every_indirect_call_is_a_site() {
    let engine = engine(
        &call_graph_guest(false),
        Instrumentation {
            loop_sites: false,
            call_graph: false,
            ..Instrumentation::default()
        },
        OptLevel::O0,
    );
    assert_eq!(call_sites(&engine, "through_pointer"), vec![None]);
    assert_eq!(call_sites(&engine, "plain"), Vec::<Option<String>>::new());
}

#[test]
fn with_shadow_discovery_a_library_call_is_a_site_when_a_callback_can_reach_a_hypercall() {
    for (reaches, library, indirect) in [
        (false, vec![], vec![]),
        (true, vec![Some("qsort".to_owned())], vec![None]),
    ] {
        let engine = engine(
            &call_graph_guest(reaches),
            Instrumentation {
                loop_sites: false,
                shadow_discovery: true,
                ..Instrumentation::default()
            },
            OptLevel::O0,
        );
        assert_eq!(call_sites(&engine, "through_library"), library);
        assert_eq!(call_sites(&engine, "through_pointer"), indirect);
        // A library that is handed no callback can still call back a function whose address
        // escaped earlier: with a reaching callback, it is a site too.
        let plain: Vec<Option<String>> = if reaches {
            vec![Some("strlen".to_owned())]
        } else {
            vec![]
        };
        assert_eq!(call_sites(&engine, "plain"), plain);
    }
}

/// `spin(n)` runs its loop `n` times; each pass adds one to `passes` after the loop header
/// (where the site counts), and calls `poke(passes)`, which makes a hypercall.
const SPIN: &str = r#"
@passes = global i64 0
@name = private unnamed_addr constant [5 x i8] c"poke\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define void @poke(i64 %pass) {
  %p = inttoptr i64 %pass to ptr
  %r = call ptr @PerformCustomCallback(ptr @name, ptr %p)
  ret void
}

define i64 @spin(i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %p = load i64, ptr @passes
  %p1 = add i64 %p, 1
  store i64 %p1, ptr @passes
  call void @poke(i64 %p1)
  %i1 = add i64 %i, 1
  %c = icmp ult i64 %i1, %n
  br i1 %c, label %loop, label %exit
exit:
  ret i64 %p1
}
"#;

/// A `SPIN` engine whose loop site starts at `count`; the value of `passes` each time the
/// site fires (the passes completed before the one that fired), and the counter's address.
struct Spin {
    engine: Engine,
    fired: Arc<Mutex<Vec<i64>>>,
    counter: u64,
}

fn spin(counters: LoopCounters, opt_level: OptLevel, count: i64, poke_at: Option<i64>) -> Spin {
    let engine = engine(
        SPIN,
        Instrumentation {
            initial_count: count,
            loop_counters: counters,
            ..Instrumentation::default()
        },
        opt_level,
    );
    let osr = engine.osr().unwrap();
    let site = osr
        .sites()
        .iter()
        .find(|s| s.function == "spin" && s.kind == SiteKind::Loop)
        .expect("spin's loop has a site");
    let counter = engine
        .global_address(site.counter.as_deref().unwrap())
        .unwrap();
    let passes = engine.global_address("passes").unwrap();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&fired);
    let counter_at = Arc::new(AtomicU64::new(counter));
    engine
        .register_callback(
            SITE_CALLBACK,
            move |_: &mut uppercut_core::Hypercall<'_>| {
                // SAFETY: `passes` is the address of the guest's `i64` global, which the guest
                // thread (this one) is not writing while it is in a hypercall.
                let value = unsafe { std::ptr::read_volatile(passes as *const i64) };
                recorded.lock().unwrap().push(value);
                Ok(std::ptr::null_mut())
            },
        )
        .unwrap();
    let poke = AtomicI64::new(poke_at.unwrap_or(-1));
    engine
        .register_callback("poke", move |h: &mut uppercut_core::Hypercall<'_>| {
            if h.args() as i64 == poke.load(Ordering::Relaxed) {
                // What a runtime does to make a running loop reach its site soon.
                let at = counter_at.load(Ordering::Relaxed);
                // SAFETY: the counter global's address; loops read it only at their syncs.
                unsafe { std::ptr::write_volatile(at as *mut i64, 1) };
            }
            Ok(std::ptr::null_mut())
        })
        .unwrap();
    Spin {
        engine,
        fired,
        counter,
    }
}

#[test]
fn a_loop_site_fires_on_the_pass_that_brings_its_count_to_zero() {
    for counters in [LoopCounters::Global, LoopCounters::Register] {
        for opt in [OptLevel::O0, OptLevel::O2] {
            let what = format!("{counters:?} at {opt:?}");
            // One long run of the loop: the count is exact.
            let s = spin(counters, opt, 300, None);
            s.engine.call("spin", &[1000]).unwrap();
            let fired = s.fired.lock().unwrap().clone();
            // The 300th pass fires, and every pass after it while nobody refills the count.
            assert_eq!(fired.first(), Some(&299), "{what}");
            assert_eq!(fired.len(), 1000 - 299, "{what}");
            assert!(fired.windows(2).all(|w| w[1] == w[0] + 1), "{what}");

            // Many short runs: a run that leaves the loop uses every pass it was charged for
            // here (10 passes are chunks of 1 + 2 + 4 plus their syncs), so still exact.
            let s = spin(counters, opt, 25, None);
            for _ in 0..3 {
                s.engine.call("spin", &[10]).unwrap();
            }
            let fired = s.fired.lock().unwrap().clone();
            assert_eq!(fired.first(), Some(&24), "{what}: {fired:?}");

            // Short runs that leave chunks unused: the site fires early, never late, and never
            // before half the count (a chunk is never larger than the passes before it, plus 1).
            let s = spin(counters, opt, 60, None);
            for _ in 0..20 {
                s.engine.call("spin", &[4]).unwrap();
            }
            let first = *s.fired.lock().unwrap().first().expect("fired");
            assert!((29..60).contains(&first), "{what}: fired after {first}");
            // SAFETY: the counter global's address; no guest thread runs.
            let left = unsafe { std::ptr::read_volatile(s.counter as *const i64) };
            assert!(left <= 0, "{what}: {left} left after firing");
        }
    }
}

#[test]
fn a_count_stored_into_a_running_loops_counter_is_seen_within_a_chunk() {
    for counters in [LoopCounters::Global, LoopCounters::Register] {
        for opt in [OptLevel::O0, OptLevel::O2] {
            let s = spin(counters, opt, i64::MAX, Some(5000));
            s.engine.call("spin", &[10_000]).unwrap();
            let first = *s.fired.lock().unwrap().first().expect("fired");
            let bound = match counters {
                LoopCounters::Global => 1,
                LoopCounters::Register => REGISTER_CHUNK,
            };
            // Poked during pass 5000 (after the header): the next pass is 5001.
            assert!(
                (5000..=5000 + bound).contains(&first),
                "{counters:?} at {opt:?}: fired after {first} passes"
            );
        }
    }
}

/// `walk`'s `cell` has its address taken only by `touch`, which loads and stores through it and
/// reaches no hypercall; `park`'s `spot` is handed to `keep`, which stores the pointer away.
const LOCALS: &str = r#"
@name = private unnamed_addr constant [5 x i8] c"poke\00"
@kept = global ptr null
declare ptr @PerformCustomCallback(ptr, ptr)

define void @touch(ptr %cell) {
  %v = load i64, ptr %cell
  %w = mul i64 %v, 5
  store i64 %w, ptr %cell
  ret void
}

define void @keep(ptr %p) {
  store ptr %p, ptr @kept
  ret void
}

define i64 @walk(i64 %n) {
  %cell = alloca i64
  store i64 %n, ptr %cell
  call void @touch(ptr %cell)
  %r = call ptr @PerformCustomCallback(ptr @name, ptr null)
  call void @touch(ptr %cell)
  %v = load i64, ptr %cell
  ret i64 %v
}

define i64 @park(i64 %n) {
  %spot = alloca i64
  store i64 %n, ptr %spot
  call void @keep(ptr %spot)
  %r = call ptr @PerformCustomCallback(ptr @name, ptr null)
  %v = load i64, ptr %spot
  ret i64 %v
}
"#;

#[test]
fn a_local_no_callee_can_keep_stays_in_the_machine_frame_and_its_contents_are_state() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        for frame_locals in [true, false] {
            let engine = engine(
                LOCALS,
                Instrumentation {
                    loop_sites: false,
                    frame_locals,
                    ..Instrumentation::default()
                },
                opt,
            );
            let osr = engine.osr().unwrap();
            let walk = osr.function("walk").unwrap();
            let site = osr
                .sites()
                .iter()
                .find(|s| s.function == "walk" && s.refused.is_none())
                .expect("walk's hypercall is a site");
            if frame_locals {
                assert_eq!(walk.shadow_frame_size, 0, "{opt:?}");
                // The state: `cell`'s contents, an `i64`.
                assert_eq!(site.values, vec![uppercut_core::ValueKind::I64], "{opt:?}");
            } else {
                assert!(walk.shadow_frame_size > 0, "{opt:?}");
                assert_eq!(site.shadow_frame, Some(0), "{opt:?}");
            }
            // A local whose address is kept by a callee lives in a shadow-stack frame.
            assert!(osr.function("park").unwrap().shadow_frame_size > 0);
            engine
                .register_callback("poke", |_: &mut uppercut_core::Hypercall<'_>| {
                    Ok(std::ptr::null_mut())
                })
                .unwrap();
            assert_eq!(engine.call("walk", &[3]).unwrap(), 75);
            assert_eq!(engine.call("park", &[4]).unwrap(), 4);
        }
    }
}

/// `work` loops, calls `leaf` at every pass and stores into the watched `mode` every 100th;
/// `leaf` loops too.
const FINAL: &str = r#"
@mode = global i64 0
@acc = global i64 0

define void @leaf(i64 %x) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %a = load i64, ptr @acc
  %a1 = add i64 %a, %i
  store i64 %a1, ptr @acc
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %x
  br i1 %more, label %loop, label %exit
exit:
  ret void
}

define i64 @work(i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %next ]
  %small = and i64 %i, 3
  call void @leaf(i64 %small)
  %r = urem i64 %i, 100
  %store = icmp eq i64 %r, 0
  br i1 %store, label %set, label %next
set:
  store i64 %i, ptr @mode
  br label %next
next:
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  %a = load i64, ptr @acc
  ret i64 %a
}
"#;

#[test]
fn a_final_version_keeps_only_store_sites() {
    use uppercut_core::{Readiness, VersionRequest};
    for opt in [OptLevel::O0, OptLevel::O2] {
        let e = engine(
            FINAL,
            Instrumentation {
                initial_count: 1,
                entry_sites: true,
                store_sites: vec!["mode".to_owned()],
                ..Instrumentation::default()
            },
            opt,
        );
        let osr = e.osr().unwrap();
        let fired: Arc<Mutex<Vec<SiteKind>>> = Arc::default();
        let seen = Arc::clone(&fired);
        let kinds: Vec<(uppercut_core::SiteId, SiteKind)> =
            osr.sites().iter().map(|s| (s.id, s.kind.clone())).collect();
        e.register_callback(
            SITE_CALLBACK,
            move |h: &mut uppercut_core::Hypercall<'_>| {
                let id = uppercut_core::SiteId(h.args() as usize as u32);
                let kind = kinds.iter().find(|(s, _)| *s == id).unwrap().1.clone();
                seen.lock().unwrap().push(kind);
                Ok(std::ptr::null_mut())
            },
        )
        .unwrap();
        let expected = e.call("work", &[1000]).unwrap();
        let counting = fired
            .lock()
            .unwrap()
            .iter()
            .filter(|k| !matches!(k, SiteKind::Store { .. }))
            .count();
        assert!(counting > 0, "{opt:?}: counters that start at 1 fire");

        let request = VersionRequest {
            readiness: Readiness::Final,
            ..VersionRequest::new("work", OptLevel::O2)
        };
        let made = e.compile_version(&request).unwrap();
        assert_eq!(made.version.readiness, Readiness::Final);
        assert!(
            made.version.label().contains("final"),
            "{}",
            made.version.label()
        );
        // Its unit keeps records for the store sites only.
        let code = e.unit_code(made.version.unit).unwrap();
        let sites: Vec<_> = code.table.rows().iter().filter_map(|r| r.site).collect();
        assert!(
            !sites.is_empty(),
            "{opt:?}: the store site keeps its record"
        );
        for site in &sites {
            let kind = &osr.site(*site).unwrap().kind;
            assert!(
                matches!(kind, SiteKind::Store { .. }),
                "{opt:?}: {site} is {kind:?}"
            );
        }
        // Run again through the final version (its loop and entry count nothing; `leaf` is
        // still its own, with sites): the same result, store sites still fire.
        fired.lock().unwrap().clear();
        // SAFETY: the guest's `i64` global; no guest code runs.
        unsafe { std::ptr::write_volatile(e.global_address("acc").unwrap() as *mut i64, 0) };
        assert_eq!(e.call("work", &[1000]).unwrap(), expected, "{opt:?}");
        let fired = fired.lock().unwrap().clone();
        let stores = fired
            .iter()
            .filter(|k| matches!(k, SiteKind::Store { .. }))
            .count();
        assert_eq!(stores, 10, "{opt:?}: every store still makes its hypercall");

        // A final version assumes nothing: it cannot be specialised.
        let specialised = VersionRequest {
            readiness: Readiness::Final,
            specialisation: vec![("mode".to_owned(), 3)],
            ..VersionRequest::new("work", OptLevel::O2)
        };
        assert!(e.compile_version(&specialised).is_err(), "{opt:?}");
    }
}

#[test]
fn a_loop_site_knows_how_deeply_its_loop_is_nested() {
    // for i { for j { for k {} } ; for m {} }
    let ir = r#"
define i64 @nest(i64 %n) {
entry:
  br label %i.head
i.head:
  %i = phi i64 [ 0, %entry ], [ %i1, %i.latch ]
  br label %j.head
j.head:
  %j = phi i64 [ 0, %i.head ], [ %j1, %j.latch ]
  br label %k.head
k.head:
  %k = phi i64 [ 0, %j.head ], [ %k1, %k.head ]
  %k1 = add i64 %k, 1
  %k.more = icmp ult i64 %k1, %n
  br i1 %k.more, label %k.head, label %j.latch
j.latch:
  %j1 = add i64 %j, 1
  %j.more = icmp ult i64 %j1, %n
  br i1 %j.more, label %j.head, label %m.head
m.head:
  %m = phi i64 [ 0, %j.latch ], [ %m1, %m.head ]
  %m1 = add i64 %m, 1
  %m.more = icmp ult i64 %m1, %n
  br i1 %m.more, label %m.head, label %i.latch
i.latch:
  %i1 = add i64 %i, 1
  %i.more = icmp ult i64 %i1, %n
  br i1 %i.more, label %i.head, label %exit
exit:
  ret i64 %i1
}
"#;
    let e = engine(ir, Instrumentation::default(), OptLevel::O0);
    let mut depths: Vec<u32> = e
        .osr()
        .unwrap()
        .sites()
        .iter()
        .filter(|s| s.kind == SiteKind::Loop)
        .map(|s| s.loop_depth.expect("a loop site has a depth"))
        .collect();
    depths.sort_unstable();
    assert_eq!(depths, [1, 2, 2, 3]);
    assert_eq!(e.call("nest", &[3]).unwrap(), 3);
}
