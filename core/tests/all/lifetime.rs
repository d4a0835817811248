//! Code lifetime: superseded versions are retired, stay mapped while a thread can reach them,
//! and are freed after; what the guest keeps of a version (its address, its string literals)
//! points into the base unit.

use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use uppercut_core::{
    CallbackError, CompileMode, Engine, EngineOptions, Hypercall, OptLevel, UnitId, VersionRequest,
};

/// An eager engine without a version cache: every superseded version is retired at once, and
/// the base unit holds every function's first version.
fn engine(ir: &str) -> Engine {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        compile: CompileMode::Eager,
        version_cache: 0,
        ..EngineOptions::default()
    };
    Engine::from_bytes(ir.as_bytes(), "lifetime.ll", options).expect("loads")
}

fn ok() -> Result<*mut c_void, CallbackError> {
    Ok(std::ptr::null_mut())
}

const SWAPPED: &str = r#"
declare ptr @PerformCustomCallback(ptr, ptr)
@swap = private unnamed_addr constant [5 x i8] c"swap\00"
@look = private unnamed_addr constant [5 x i8] c"look\00"
@tick = private unnamed_addr constant [5 x i8] c"tick\00"
@greeting = private unnamed_addr constant [6 x i8] c"hello\00"
@kept = global ptr null
@name = global ptr null

; Keeps its own address and a string literal, then (when %n is 0) has itself recompiled while
; it runs, and looks around.
define i64 @f(i64 %n) noinline {
entry:
  store ptr @f, ptr @kept
  store ptr @greeting, ptr @name
  %c = icmp eq i64 %n, 0
  br i1 %c, label %swap, label %done
swap:
  call ptr @PerformCustomCallback(ptr @swap, ptr null)
  call ptr @PerformCustomCallback(ptr @look, ptr null)
  br label %done
done:
  %r = add i64 %n, 1
  ret i64 %r
}

define i64 @run(i64 %ticks) {
entry:
  %a = call i64 @f(i64 0)
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  call ptr @PerformCustomCallback(ptr @tick, ptr null)
  %i1 = add i64 %i, 1
  %more = icmp ult i64 %i1, %ticks
  br i1 %more, label %loop, label %exit
exit:
  ret i64 %a
}

define i64 @call_kept(i64 %x) {
  %p = load ptr, ptr @kept
  %r = call i64 %p(i64 %x)
  ret i64 %r
}
"#;

#[derive(Default)]
struct Seen {
    running: Option<UnitId>,
    live_while_inside: Option<bool>,
    retired_while_inside: Option<bool>,
}

#[test]
fn a_superseded_version_lives_while_a_frame_runs_it_and_is_freed_after() {
    let e = engine(SWAPPED);
    let first = e.recompile("f", OptLevel::O1).unwrap().version;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = Arc::clone(&seen);
    e.register_callback("swap", move |h: &mut Hypercall<'_>| {
        let engine = h.engine();
        let running = engine
            .version_at(h.guest_state().return_address)
            .ok_or_else(|| CallbackError::from("the caller is not a version"))?;
        s.lock().unwrap().running = Some(running.unit);
        engine.recompile("f", OptLevel::O2)?;
        ok()
    })
    .unwrap();
    let s = Arc::clone(&seen);
    e.register_callback("look", move |h: &mut Hypercall<'_>| {
        let engine = h.engine();
        let mut s = s.lock().unwrap();
        let unit = s.running.expect("swap ran");
        s.live_while_inside = Some(engine.is_live_unit(unit));
        s.retired_while_inside = Some(engine.is_retired(unit));
        ok()
    })
    .unwrap();
    e.register_callback("tick", |_: &mut Hypercall<'_>| ok())
        .unwrap();

    assert_eq!(e.call("run", &[16]).unwrap(), 1);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.running, Some(first.unit), "f ran its first version");
    // Inside the frame that runs it, the superseded version is retired but mapped.
    assert_eq!(seen.retired_while_inside, Some(true));
    assert_eq!(seen.live_while_inside, Some(true));
    // Once the frame returned, a few safepoints later, it is gone.
    assert!(!e.is_live_unit(first.unit), "{:?}", e.units());
    assert!(e.version_at(first.entry + 1).is_none());
    let versions = e.versions("f");
    assert_eq!(versions.len(), 2, "the base version and the current one");

    // What `f` kept of itself while running versions that are gone now leads into the base unit.
    let base = versions[0].clone();
    let kept = e.global_address("kept").unwrap();
    let name = e.global_address("name").unwrap();
    // SAFETY: both are `ptr` globals of the guest, written by `f`.
    let (kept, name) = unsafe { (*(kept as *const u64), *(name as *const u64)) };
    assert_eq!(kept, base.entry, "the address `f` takes is its base entry");
    assert_eq!(
        e.unit_at(name),
        Some(base.unit),
        "string literals are the base unit's"
    );
    // SAFETY: the literal is six bytes in the base unit's data.
    let text = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
    assert_eq!(text.to_str().unwrap(), "hello");
    assert_eq!(e.call("call_kept", &[41]).unwrap(), 42);

    // With no thread inside guest code, a superseded version is freed at once.
    let current = versions[1].clone();
    e.recompile("f", OptLevel::O1).unwrap();
    assert!(!e.is_live_unit(current.unit));
    assert_eq!(e.call("call_kept", &[1]).unwrap(), 2);
}

#[test]
fn continuations_and_unrelinked_versions_are_the_callers_to_retire() {
    let e = engine(SWAPPED);
    let spare = e
        .compile_version(&VersionRequest {
            relink: false,
            ..VersionRequest::new("f", OptLevel::O2)
        })
        .unwrap()
        .version;
    e.recompile("f", OptLevel::O1).unwrap();
    e.recompile("f", OptLevel::O2).unwrap();
    // Relinks retire what they supersede, never a version that was not linked.
    assert!(e.is_live_unit(spare.unit) && !e.is_retired(spare.unit));
    assert!(e.pin_unit(spare.unit));
    e.retire_unit(spare.unit).unwrap();
    e.retire_unit(spare.unit).unwrap();
    // Pinned: retired, no thread reaches it, but kept.
    assert!(e.is_live_unit(spare.unit) && e.is_retired(spare.unit));
    e.unpin_unit(spare.unit);
    assert!(!e.is_live_unit(spare.unit));
    // The base unit cannot go, nor a unit twice over.
    let base = e.versions("f")[0].unit;
    let refused = e.retire_unit(base).unwrap_err().to_string();
    assert!(refused.contains("base unit"), "{refused}");
    assert!(e.retire_unit(spare.unit).is_err());
}

const JOINED: &str = r#"
declare ptr @PerformCustomCallback(ptr, ptr)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_join(i64, ptr)
@swap = private unnamed_addr constant [5 x i8] c"swap\00"
@look = private unnamed_addr constant [5 x i8] c"look\00"

define i64 @leaf(i64 %x) noinline {
  %r = mul i64 %x, 3
  ret i64 %r
}

define ptr @worker(ptr %arg) {
  call ptr @PerformCustomCallback(ptr @swap, ptr null)
  call ptr @PerformCustomCallback(ptr @look, ptr null)
  ret ptr null
}

; Starts `worker` and waits for it: this frame stays in whatever version ran it.
define i64 @spawn_and_join() noinline {
  %t = alloca i64
  %rc = call i32 @pthread_create(ptr %t, ptr null, ptr @worker, ptr null)
  %id = load i64, ptr %t
  %j = call i32 @pthread_join(i64 %id, ptr null)
  %x = call i64 @leaf(i64 %id)
  %y = sext i32 %j to i64
  %z = add i64 %y, 7
  ret i64 %z
}
"#;

#[derive(Default)]
struct Joined {
    outer: Option<UnitId>,
    leaf: Option<UnitId>,
    /// (the joining frame's version live, the old `leaf` version live), seen by the worker.
    seen: Option<(bool, bool)>,
}

/// A thread blocked in `pthread_join` is parked: what its frozen stack reaches stays, and what
/// it does not is freed without waiting for it.
#[test]
fn a_thread_waiting_in_pthread_join_keeps_only_what_its_stack_reaches() {
    let e = engine(JOINED);
    let outer = e.recompile("spawn_and_join", OptLevel::O1).unwrap().version;
    let leaf = e.recompile("leaf", OptLevel::O1).unwrap().version;
    let state = Arc::new(Mutex::new(Joined {
        outer: Some(outer.unit),
        leaf: Some(leaf.unit),
        seen: None,
    }));
    e.register_callback("swap", |h: &mut Hypercall<'_>| {
        // The joining thread parks on its way into `pthread_join`: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while uppercut_core::reclaim::stats().parked == 0 {
            if std::time::Instant::now() > deadline {
                return Err(CallbackError::from("the joining thread never parked"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let engine = h.engine();
        engine.recompile("spawn_and_join", OptLevel::O2)?;
        engine.recompile("leaf", OptLevel::O2)?;
        ok()
    })
    .unwrap();
    let s = Arc::clone(&state);
    e.register_callback("look", move |h: &mut Hypercall<'_>| {
        let engine = h.engine();
        let mut s = s.lock().unwrap();
        let (outer, leaf) = (s.outer.unwrap(), s.leaf.unwrap());
        s.seen = Some((engine.is_live_unit(outer), engine.is_live_unit(leaf)));
        ok()
    })
    .unwrap();
    assert_eq!(e.call("spawn_and_join", &[]).unwrap(), 7);
    let state = state.lock().unwrap();
    // The worker's safepoint after `swap` cleared it; the joining thread, parked, was scanned
    // at retirement: its stack returns into the old `spawn_and_join`, not into the old `leaf`.
    assert_eq!(state.seen, Some((true, false)));
    // Now that the call returned, a relink frees the rest.
    e.recompile("leaf", OptLevel::O0).unwrap();
    assert!(!e.is_live_unit(outer.unit));
}
