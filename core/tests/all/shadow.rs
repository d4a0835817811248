//! Shadow-stack frames of instrumented code, and the precise roots they give a collector.

use uppercut_core::shadow::{for_each_root, shadow_frames};
use uppercut_core::{Engine, EngineOptions, Hypercall, Instrumentation};

/// `f` keeps a pointer in a local whose address escapes (to the hypercall): instrumentation
/// moves it to `f`'s shadow-stack frame, where the host finds it as a root and may update it.
const GUEST: &str = r#"
@name = private unnamed_addr constant [6 x i8] c"roots\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @f(i64 %x) {
  %p = alloca ptr
  %n = alloca i64
  %q = inttoptr i64 %x to ptr
  store ptr %q, ptr %p
  store i64 7, ptr %n
  %r = call ptr @PerformCustomCallback(ptr @name, ptr %p)
  %v = load ptr, ptr %p
  %i = ptrtoint ptr %v to i64
  ret i64 %i
}
"#;

#[test]
fn escaping_locals_live_on_the_shadow_stack_and_are_precise_roots() {
    let options = EngineOptions {
        instrument: Some(Instrumentation {
            loop_sites: false,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(GUEST.as_bytes(), "roots.ll", options).unwrap();
    let f = engine.osr().unwrap().function("f").cloned().unwrap();
    assert!(f.excluded.is_none(), "{f:?}");
    assert_eq!(f.shadow_frame_size, 32, "header, one root, one other local");
    engine
        .register_callback("roots", |h: &mut Hypercall<'_>| {
            let frames = shadow_frames();
            assert_eq!(frames.len(), 1, "{frames:?}");
            assert_eq!(frames[0].function, "f");
            // The local whose address the guest passed is the frame's one root slot.
            assert_eq!(frames[0].roots, vec![h.args() as u64]);
            let mut seen = Vec::new();
            for_each_root(|slot| {
                // SAFETY: a root slot of a live guest frame holds one pointer.
                unsafe {
                    seen.push(*slot as u64);
                    *slot = ((*slot as u64) + 8) as *mut std::ffi::c_void;
                }
            });
            assert_eq!(seen, vec![0x1000]);
            Ok(std::ptr::null_mut())
        })
        .unwrap();
    // The "collector" moved the object: the guest sees the updated pointer.
    assert_eq!(engine.call("f", &[0x1000]).unwrap(), 0x1008);
    // The frame was closed on return.
    assert!(shadow_frames().is_empty());
}

/// `g` has no escaping locals but calls a function that makes a hypercall; `h` has one (a
/// root) and loops. With `shadow_discovery`, both open frames that record their machine frame
/// and the site they are at, after the roots. (`noinline`: an inlined callee's frame would
/// record its caller's machine frame.)
const DISCOVERY_GUEST: &str = r#"
@name = private unnamed_addr constant [6 x i8] c"probe\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @leaf(i64 %x) noinline {
  %r = call ptr @PerformCustomCallback(ptr @name, ptr null)
  %y = add i64 %x, 1
  ret i64 %y
}

define i64 @g(i64 %x) noinline {
  %a = call i64 @leaf(i64 %x)
  %b = call i64 @leaf(i64 %a)
  ret i64 %b
}

define i64 @h(i64 %x) {
  %p = alloca ptr
  store ptr null, ptr %p
  %r = call ptr @PerformCustomCallback(ptr @name, ptr %p)
  %v = call i64 @g(i64 %x)
  ret i64 %v
}
"#;

#[test]
fn shadow_discovery_frames_record_the_machine_frame_and_the_site() {
    for opt in [uppercut_core::OptLevel::O0, uppercut_core::OptLevel::O2] {
        discovery_words_at(opt);
    }
}

fn discovery_words_at(opt: uppercut_core::OptLevel) {
    use std::sync::{Arc, Mutex};
    use uppercut_core::{DiscoverySlots, SiteId, SiteKind};

    let options = EngineOptions {
        opt_level: opt,
        instrument: Some(Instrumentation {
            loop_sites: false,
            shadow_discovery: true,
            ..Instrumentation::default()
        }),
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(DISCOVERY_GUEST.as_bytes(), "discovery.ll", options).unwrap();
    let osr = engine.osr().unwrap();
    let g = osr.function("g").unwrap();
    assert_eq!(
        g.shadow_frame_size, 32,
        "header and the two discovery words"
    );
    assert_eq!(
        g.discovery,
        Some(DiscoverySlots {
            frame_address: 16,
            site: 24
        })
    );
    let h = osr.function("h").unwrap();
    assert_eq!(
        h.discovery,
        Some(DiscoverySlots {
            frame_address: 24,
            site: 32
        }),
        "after h's one root"
    );
    assert!(g.frame_map.is_some() && h.frame_map != g.frame_map);
    let site_of = |function: &str, callee: &str| {
        osr.sites()
            .iter()
            .find(|s| {
                s.function == function
                    && s.kind
                        == SiteKind::Call {
                            callee: Some(callee.to_owned()),
                        }
            })
            .map(|s| s.id)
            .unwrap()
    };
    let leaf_site = site_of("leaf", "PerformCustomCallback");
    let g_sites: Vec<SiteId> = osr.function("g").unwrap().sites.clone();
    let h_site = site_of("h", "g");

    // Per hypercall: (function, machine frame, site) of each shadow frame, and the machine
    // frames the frame-pointer walk sees.
    type Seen = (Vec<(String, u64, Option<SiteId>)>, Vec<(String, u64)>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    engine
        .register_callback("probe", move |h: &mut Hypercall<'_>| {
            let shadow = shadow_frames()
                .into_iter()
                .map(|f| {
                    let d = f.discovery.expect("discovery words");
                    (f.function, d.frame_address, d.site)
                })
                .collect();
            let machine = h
                .engine()
                .jit_frames()
                .into_iter()
                .map(|f| (f.version.function, f.frame_pointer))
                .collect();
            sink.lock().unwrap().push((shadow, machine));
            Ok(std::ptr::null_mut())
        })
        .unwrap();
    assert_eq!(engine.call("h", &[5]).unwrap(), 7);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "h's own hypercall, then leaf's twice");
    // h's own hypercall: h's frame alone, at that site.
    let (shadow, machine) = &seen[0];
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0].0, "h");
    assert_eq!(shadow[0].1, machine[0].1, "h's recorded frame is its rbp");
    assert_eq!(shadow[0].2, Some(site_of("h", "PerformCustomCallback")));
    for (n, (shadow, machine)) in seen[1..].iter().enumerate() {
        let names: Vec<&str> = shadow.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(names, ["leaf", "g", "h"]);
        // Every recorded frame address is the frame pointer the machine walk found.
        for (s, m) in shadow.iter().zip(machine) {
            assert_eq!((&s.0, s.1), (&m.0, m.1), "{opt}");
        }
        assert_eq!(shadow[0].2, Some(leaf_site));
        assert_eq!(shadow[1].2, Some(g_sites[n]), "g's {n}th call");
        assert_eq!(shadow[2].2, Some(h_site));
    }
    assert!(shadow_frames().is_empty());
}

/// `rounds` calls `setjmp` (so it is never instrumented and has no frame) and `dive` longjmps
/// back to it from 11 frames deep, each with a shadow-stack frame that never closes itself.
const LONGJMP_GUEST: &str = r#"
@name = private unnamed_addr constant [6 x i8] c"depth\00"
@buf = global [200 x i8] zeroinitializer, align 16
@count = global i64 0
declare i32 @_setjmp(ptr) returns_twice
declare void @longjmp(ptr, i32) noreturn
declare ptr @PerformCustomCallback(ptr, ptr)

define void @dive(i64 %n) {
  %a = alloca i64
  store i64 %n, ptr %a
  %c = icmp eq i64 %n, 0
  br i1 %c, label %jump, label %deeper
jump:
  %r = call ptr @PerformCustomCallback(ptr @name, ptr %a)
  call void @longjmp(ptr @buf, i32 1)
  unreachable
deeper:
  %m = sub i64 %n, 1
  call void @dive(i64 %m)
  ret void
}

define i64 @rounds(i64 %k) {
entry:
  br label %loop
loop:
  %r = call i32 @_setjmp(ptr @buf)
  %z = icmp eq i32 %r, 0
  br i1 %z, label %go, label %again
go:
  call void @dive(i64 10)
  br label %again
again:
  %i = load volatile i64, ptr @count
  %i1 = add i64 %i, 1
  store volatile i64 %i1, ptr @count
  %done = icmp sge i64 %i1, %k
  br i1 %done, label %out, label %loop
out:
  ret i64 %i1
}
"#;

/// Frames a `longjmp` skipped are closed when `setjmp` returns in the function that called it,
/// even though that function has no frame of its own: the chain does not grow round after
/// round.
#[test]
fn frames_a_longjmp_skipped_are_closed_when_setjmp_returns() {
    use std::sync::{Arc, Mutex};
    for opt in [uppercut_core::OptLevel::O0, uppercut_core::OptLevel::O2] {
        for shadow_discovery in [false, true] {
            let options = EngineOptions {
                opt_level: opt,
                instrument: Some(Instrumentation {
                    shadow_discovery,
                    ..Instrumentation::default()
                }),
                ..EngineOptions::default()
            };
            let engine =
                Engine::from_bytes(LONGJMP_GUEST.as_bytes(), "longjmp.ll", options).expect("load");
            let osr = engine.osr().unwrap();
            assert!(osr.function("rounds").unwrap().excluded.is_some());
            assert!(osr.function("dive").unwrap().shadow_frame_size > 0);
            let depths: Arc<Mutex<Vec<usize>>> = Arc::default();
            let sink = Arc::clone(&depths);
            engine
                .register_callback("depth", move |_: &mut Hypercall<'_>| {
                    sink.lock().unwrap().push(shadow_frames().len());
                    Ok(std::ptr::null_mut())
                })
                .unwrap();
            assert_eq!(engine.call("rounds", &[50]).unwrap(), 50);
            let depths = depths.lock().unwrap();
            assert_eq!(
                *depths,
                vec![11; 50],
                "{opt}, shadow discovery {shadow_discovery}"
            );
            assert!(shadow_frames().is_empty());
        }
    }
}

/// `cb` can reach a hypercall and its address escapes (to `sort`, a library function that may
/// call it back): with shadow discovery, library calls are sites; one that a site cannot carry
/// (it returns a pair) is described but does not make `f` incomplete.
const LIBRARY_GUEST: &str = r#"
@name = private unnamed_addr constant [6 x i8] c"probe\00"
declare ptr @PerformCustomCallback(ptr, ptr)
declare void @sort(ptr, ptr)
declare { double, double } @pair(double)
declare i32 @printf(ptr, ...)

define i32 @cb(ptr %a, ptr %b) {
  %r = call ptr @PerformCustomCallback(ptr @name, ptr null)
  ret i32 0
}

define double @f(ptr %v) {
  call void @sort(ptr %v, ptr @cb)
  %p = call { double, double } @pair(double 1.0)
  %x = extractvalue { double, double } %p, 0
  %n = call i32 (ptr, ...) @printf(ptr @name)
  ret double %x
}
"#;

#[test]
fn with_shadow_discovery_library_calls_that_may_call_back_are_sites() {
    use uppercut_core::SiteKind;
    let sites_of = |shadow_discovery: bool| {
        let options = EngineOptions {
            instrument: Some(Instrumentation {
                loop_sites: false,
                shadow_discovery,
                ..Instrumentation::default()
            }),
            ..EngineOptions::default()
        };
        let engine = Engine::from_bytes(LIBRARY_GUEST.as_bytes(), "library.ll", options).unwrap();
        let osr = engine.osr().unwrap();
        let f = osr.function("f").cloned().unwrap();
        let calls: Vec<(String, bool)> = osr
            .sites()
            .iter()
            .filter(|s| s.function == "f")
            .map(|s| match &s.kind {
                SiteKind::Call { callee: Some(c) } => (c.clone(), s.refused.is_some()),
                other => panic!("{other:?}"),
            })
            .collect();
        (f, calls)
    };
    let (f, calls) = sites_of(false);
    assert!(calls.is_empty(), "{calls:?}");
    assert_eq!(f.shadow_frame_size, 0);
    let (f, calls) = sites_of(true);
    assert_eq!(
        calls,
        [("sort".to_owned(), false), ("pair".to_owned(), true)],
        "printf is variadic: no site"
    );
    assert!(f.complete(), "{:?}", f.refused);
    assert!(f.discovery.is_some());
}
