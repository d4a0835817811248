//! The engine end to end: loading, linking, hypercalls, recompile-and-relink.

use std::ffi::{CStr, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use uppercut_core::{
    CallbackError, CompileMode, Engine, EngineOptions, Error, Hypercall, OptLevel, VersionRequest,
};

fn engine(ir: &str) -> Engine {
    Engine::from_bytes(ir.as_bytes(), "test.ll", EngineOptions::default()).expect("loads")
}

fn engine_at(ir: &str, opt_level: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level,
        ..EngineOptions::default()
    };
    Engine::from_bytes(ir.as_bytes(), "test.ll", options).expect("loads")
}

/// An engine that compiles the whole guest before it starts: for tests of the base unit's own
/// shape (every function's first version in it, relinks counted from its entries).
fn eager_at(ir: &str, opt_level: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level,
        compile: CompileMode::Eager,
        ..EngineOptions::default()
    };
    Engine::from_bytes(ir.as_bytes(), "test.ll", options).expect("loads")
}

const ADD: &str = r#"
define i64 @add(i64 %a, i64 %b) {
  %s = add i64 %a, %b
  ret i64 %s
}
define i32 @main(i32 %argc, ptr %argv) {
  %r = call i64 @add(i64 40, i64 2)
  %t = trunc i64 %r to i32
  ret i32 %t
}
"#;

#[test]
fn runs_main_and_calls_functions() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        let e = engine_at(ADD, opt);
        assert_eq!(e.run_main("test", &[]).unwrap(), 42);
        assert_eq!(e.call("add", &[5, 6]).unwrap(), 11);
    }
}

#[test]
fn main_gets_argc_and_argv() {
    let ir = r#"
declare i64 @strlen(ptr)
define i32 @main(i32 %argc, ptr %argv) {
  %p = getelementptr ptr, ptr %argv, i64 2
  %s = load ptr, ptr %p
  %n = call i64 @strlen(ptr %s)
  %n32 = trunc i64 %n to i32
  %x = mul i32 %argc, 100
  %r = add i32 %x, %n32
  ret i32 %r
}
"#;
    let e = engine(ir);
    let args = vec!["a".to_owned(), "hello".to_owned()];
    assert_eq!(e.run_main("prog", &args).unwrap(), 305);
}

#[test]
fn bad_input_gets_typed_errors() {
    let garbage = Engine::from_bytes(b"this is not IR", "bad.ll", EngineOptions::default());
    assert!(
        matches!(garbage, Err(Error::InvalidIr { .. })),
        "{garbage:?}"
    );
    let bitcode_garbage =
        Engine::from_bytes(b"BC\xc0\xde\x00\x01", "bad.bc", EngineOptions::default());
    assert!(matches!(bitcode_garbage, Err(Error::InvalidIr { .. })));
    let missing = Engine::from_file("/nonexistent/x.ll", EngineOptions::default());
    assert!(matches!(missing, Err(Error::Read { .. })));

    let no_main = engine("define i32 @f() {\n ret i32 1\n}\n");
    assert!(matches!(no_main.run_main("p", &[]), Err(Error::NoMain)));

    let odd_main = engine("define i32 @main(double %x) {\n ret i32 1\n}\n");
    assert!(matches!(
        odd_main.run_main("p", &[]),
        Err(Error::BadMainSignature(_))
    ));
}

#[test]
fn unresolved_symbols_fail_before_codegen() {
    let ir = r#"
declare i32 @uppercut_test_no_such_function(i32)
define i32 @main() {
  %r = call i32 @uppercut_test_no_such_function(i32 1)
  ret i32 %r
}
"#;
    let e = engine(ir);
    match e.run_main("p", &[]) {
        Err(Error::UnresolvedSymbol(name)) => assert_eq!(name, "uppercut_test_no_such_function"),
        other => panic!("expected an unresolved symbol, got {other:?}"),
    }
    let data = r#"
@uppercut_test_no_such_global = external global i32
define i32 @main() {
  %r = load i32, ptr @uppercut_test_no_such_global
  ret i32 %r
}
"#;
    let e = engine(data);
    assert!(
        matches!(e.run_main("p", &[]), Err(Error::UnresolvedSymbol(n)) if n == "uppercut_test_no_such_global")
    );
}

extern "C" fn host_seven() -> i64 {
    7
}

extern "C" fn host_nine() -> i64 {
    9
}

const USES_HOST: &str = r#"
declare i64 @host_value()
; Calls are redirected; copies that the optimiser inlined are not (OSR handles those).
define i64 @f() noinline {
  %v = call i64 @host_value()
  %r = add i64 %v, 100
  ret i64 %r
}
define ptr @f_address() {
  ret ptr @f
}
define i64 @call_f() {
  %r = call i64 @f()
  ret i64 %r
}
define i64 @call_through(ptr %fp) {
  %r = call i64 %fp()
  ret i64 %r
}
"#;

#[test]
fn bindings_resolve_declarations() {
    let e = engine(USES_HOST);
    e.bind("host_value", host_seven as *const () as u64)
        .unwrap();
    assert_eq!(e.call("f", &[]).unwrap(), 107);
    assert!(matches!(e.bind("x", 0), Err(Error::NullBinding(_))));
}

#[test]
fn recompile_reaches_old_callers_new_callers_and_old_function_pointers() {
    for opt in [OptLevel::O0, OptLevel::O2] {
        let e = eager_at(USES_HOST, opt);
        e.bind("host_value", host_seven as *const () as u64)
            .unwrap();
        let old_pointer = e.call("f_address", &[]).unwrap();
        let old_entry = e.entry("f").unwrap();
        assert_eq!(e.call("call_f", &[]).unwrap(), 107);

        // A new version of `f` links `host_value` to another address: seeing 109 proves the
        // call went to the new code.
        e.bind("host_value", host_nine as *const () as u64).unwrap();
        let done = e.recompile("f", OptLevel::O2).unwrap();
        assert_eq!(done.redirected, 1);
        assert_ne!(done.version.entry, old_entry);
        assert_eq!(e.entry("f").unwrap(), done.version.entry);
        assert_eq!(e.versions("f").len(), 2);

        assert_eq!(e.call("call_f", &[]).unwrap(), 109, "old caller");
        assert_eq!(
            e.call("call_through", &[old_pointer]).unwrap(),
            109,
            "old function pointer"
        );
        assert_eq!(e.call("f", &[]).unwrap(), 109, "new entry");

        // Again: every older entry now jumps straight to the newest version.
        e.bind("host_value", host_seven as *const () as u64)
            .unwrap();
        let again = e.recompile("f", OptLevel::O0).unwrap();
        assert_eq!(again.redirected, 2);
        assert_eq!(e.call("call_through", &[old_pointer]).unwrap(), 107);
        assert_eq!(e.call("call_f", &[]).unwrap(), 107);
    }
}

#[test]
fn recompiling_an_unknown_function_is_an_error() {
    let e = engine(ADD);
    assert!(matches!(
        e.recompile("nope", OptLevel::O2),
        Err(Error::NoSuchFunction(_))
    ));
}

const HYPERCALLS: &str = r#"
@.name = private unnamed_addr constant [7 x i8] c"double\00"
@.unknown = private unnamed_addr constant [8 x i8] c"nowhere\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @constant_name(i64 %x) {
  %p = inttoptr i64 %x to ptr
  %r = notail call ptr @PerformCustomCallback(ptr @.name, ptr %p)
  %i = ptrtoint ptr %r to i64
  ret i64 %i
}
define i64 @dynamic_name(ptr %name, i64 %x) {
  %p = inttoptr i64 %x to ptr
  %r = call ptr @PerformCustomCallback(ptr %name, ptr %p)
  %i = ptrtoint ptr %r to i64
  ret i64 %i
}
define i64 @unknown() {
  %r = call ptr @PerformCustomCallback(ptr @.unknown, ptr null)
  %i = ptrtoint ptr %r to i64
  ret i64 %i
}
define i64 @plus_one(i64 %x) {
  %r = add i64 %x, 1
  ret i64 %r
}
"#;

fn double(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    Ok((h.args() as usize * 2) as *mut c_void)
}

#[test]
fn hypercalls_by_constant_and_dynamic_name() {
    let e = engine(HYPERCALLS);
    e.register_callback("double", double).unwrap();
    assert_eq!(e.call("constant_name", &[21]).unwrap(), 42);
    let name = c"double";
    assert_eq!(
        e.call("dynamic_name", &[name.as_ptr() as u64, 5]).unwrap(),
        10
    );
}

#[test]
fn unknown_callbacks_stop_the_guest_with_an_error() {
    let e = engine(HYPERCALLS);
    match e.call("unknown", &[]) {
        Err(Error::UnknownCallback(name)) => assert_eq!(name, "nowhere"),
        other => panic!("expected an unknown callback, got {other:?}"),
    }
    let bad = c"no-such-name";
    assert!(matches!(
        e.call("dynamic_name", &[bad.as_ptr() as u64, 1]),
        Err(Error::UnknownCallback(n)) if n == "no-such-name"
    ));
    // The engine is still usable, and a handler registered later is found.
    e.register_callback("nowhere", |_: &mut Hypercall<'_>| Ok(77 as *mut c_void))
        .unwrap();
    assert_eq!(e.call("unknown", &[]).unwrap(), 77);
}

#[test]
fn panicking_and_failing_handlers_stop_the_guest_cleanly() {
    let e = engine(HYPERCALLS);
    e.register_callback(
        "double",
        |_: &mut Hypercall<'_>| -> Result<*mut c_void, CallbackError> {
            panic!("handler exploded")
        },
    )
    .unwrap();
    match e.call("constant_name", &[1]) {
        Err(Error::CallbackPanicked { name, message }) => {
            assert_eq!(name, "double");
            assert_eq!(message, "handler exploded");
        }
        other => panic!("expected a panic report, got {other:?}"),
    }
    e.register_callback("double", |_: &mut Hypercall<'_>| Err("refused".into()))
        .unwrap();
    assert!(matches!(
        e.call("constant_name", &[1]),
        Err(Error::CallbackFailed { message, .. }) if message == "refused"
    ));
    // The guest can run again afterwards.
    assert_eq!(e.call("plus_one", &[1]).unwrap(), 2);
}

#[test]
fn handlers_may_call_guest_functions_and_see_the_guest_state() {
    let e = engine(HYPERCALLS);
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    e.register_callback("double", move |h: &mut Hypercall<'_>| {
        let state = h.guest_state();
        let version = h
            .engine()
            .version_at(state.return_address)
            .ok_or("return address not in JIT code")?;
        assert_eq!(version.function, "constant_name");
        assert!(state.rsp != 0 && state.rbp >= state.rsp);
        seen2.fetch_add(1, Ordering::SeqCst);
        let inner = h.engine().call("plus_one", &[h.args() as u64])?;
        Ok(inner as *mut c_void)
    })
    .unwrap();
    assert_eq!(e.call("constant_name", &[41]).unwrap(), 42);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn nested_failures_return_to_the_innermost_entry() {
    let e = engine(HYPERCALLS);
    // The outer handler calls the guest, whose hypercall fails; the outer handler sees the
    // error and recovers.
    e.register_callback("double", |h: &mut Hypercall<'_>| {
        let inner = h.engine().call("unknown", &[]);
        assert!(matches!(inner, Err(Error::UnknownCallback(_))));
        Ok(5 as *mut c_void)
    })
    .unwrap();
    assert_eq!(e.call("constant_name", &[0]).unwrap(), 5);
}

const RECOMPILE_FROM_GUEST: &str = r#"
@.recompile = private unnamed_addr constant [19 x i8] c"uppercut.recompile\00"
@.frames = private unnamed_addr constant [22 x i8] c"uppercut.print_frames\00"
@.info = private unnamed_addr constant [19 x i8] c"uppercut.code_info\00"
@.work = private unnamed_addr constant [5 x i8] c"work\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @work(i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %loop ]
  %sq = mul i64 %i, %i
  %acc1 = add i64 %acc, %sq
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %acc1
}

define i64 @recompile_work() {
  %args = alloca { ptr, i64 }
  store ptr @.work, ptr %args
  %level = getelementptr { ptr, i64 }, ptr %args, i32 0, i32 1
  store i64 2, ptr %level
  %r = call ptr @PerformCustomCallback(ptr @.recompile, ptr %args)
  %i = ptrtoint ptr %r to i64
  ret i64 %i
}

define i64 @depth(i64 %n) {
  %z = icmp eq i64 %n, 0
  br i1 %z, label %base, label %rec
base:
  %r = call ptr @PerformCustomCallback(ptr @.frames, ptr null)
  %i = ptrtoint ptr %r to i64
  ret i64 %i
rec:
  %m = sub i64 %n, 1
  %d = call i64 @depth(i64 %m)
  ret i64 %d
}

define ptr @info() {
  %r = call ptr @PerformCustomCallback(ptr @.info, ptr @.work)
  ret ptr %r
}
"#;

#[test]
fn builtin_recompile_replaces_a_function_from_inside_the_guest() {
    let e = engine_at(RECOMPILE_FROM_GUEST, OptLevel::O0);
    assert_eq!(e.call("work", &[1000]).unwrap(), 332_833_500);
    let status = e.call("recompile_work", &[]).unwrap();
    // SAFETY: the built-in returns a NUL-terminated status that lives until the next built-in
    // hypercall on this thread.
    let status = unsafe { CStr::from_ptr(status as *const CChar) }
        .to_str()
        .unwrap()
        .to_owned();
    assert!(status.starts_with("recompiled work at O2 as v"), "{status}");
    let versions = e.versions("work");
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[1].opt_level, OptLevel::O2);
    assert_eq!(e.call("work", &[1000]).unwrap(), 332_833_500);

    let info = e.call("info", &[]).unwrap();
    // SAFETY: as above.
    let info = unsafe { CStr::from_ptr(info as *const CChar) }
        .to_str()
        .unwrap();
    assert_eq!(info.lines().count(), 2, "{info}");
    assert!(info.lines().all(|l| l.starts_with("work v")), "{info}");
}

#[test]
fn builtin_print_frames_walks_every_jit_frame() {
    let e = engine_at(RECOMPILE_FROM_GUEST, OptLevel::O0);
    // depth(5) makes six frames of `depth`; the walk stops at the host's frame.
    assert_eq!(e.call("depth", &[5]).unwrap(), 6);
}

type CChar = std::ffi::c_char;

#[test]
fn no_page_is_writable_and_executable_while_guest_code_runs() {
    let e = engine(HYPERCALLS);
    let checked = Arc::new(AtomicUsize::new(0));
    let checked2 = Arc::clone(&checked);
    e.register_callback("double", move |h: &mut Hypercall<'_>| {
        // The guest is live below us on the stack, in code the engine compiled.
        assert!(
            h.engine()
                .version_at(h.guest_state().return_address)
                .is_some()
        );
        let wx = uppercut_core::code_memory::writable_executable_mappings()
            .map_err(|e| e.to_string())?;
        assert!(wx.is_empty(), "writable and executable: {wx:?}");
        checked2.fetch_add(1, Ordering::SeqCst);
        Ok(std::ptr::null_mut())
    })
    .unwrap();
    e.call("constant_name", &[1]).unwrap();
    // After a relink too: patching is a scoped step that ends executable again.
    e.recompile("constant_name", OptLevel::O0).unwrap();
    e.call("constant_name", &[1]).unwrap();
    assert_eq!(checked.load(Ordering::SeqCst), 2);
}

#[test]
fn constant_names_take_the_fast_path() {
    let e = eager_at(HYPERCALLS, OptLevel::O2);
    e.compile().unwrap();
    let fast: usize = e.units().iter().map(|u| u.fast_hypercalls).sum();
    // `constant_name` and `unknown` name a constant; `dynamic_name` does not.
    assert_eq!(fast, 2);
}

const STATEPOINTS: &str = r#"
declare i64 @g(i64)
declare token @llvm.experimental.gc.statepoint.p0(i64, i32, ptr, i32, i32, ...)
declare i64 @llvm.experimental.gc.result.i64(token)

define i64 @g_impl(i64 %x) noinline {
  %r = add i64 %x, 1
  ret i64 %r
}

define i64 @loop(i64 %n, i64 %m) gc "shadow-stack" {
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i1, %loop]
  %acc = phi i64 [%n, %entry], [%acc1, %loop]
  %x = mul i64 %i, %m
  %tok = call token (i64, i32, ptr, i32, i32, ...) @llvm.experimental.gc.statepoint.p0(i64 7, i32 0, ptr elementtype(i64 (i64)) @g_impl, i32 1, i32 0, i64 %x, i32 0, i32 0) [ "deopt"(i64 %i, i64 %acc, i64 %m, i64 %n) ]
  %r = call i64 @llvm.experimental.gc.result.i64(token %tok)
  %acc1 = add i64 %acc, %r
  %i1 = add i64 %i, 1
  %c = icmp ult i64 %i1, %n
  br i1 %c, label %loop, label %exit
exit:
  ret i64 %acc1
}
"#;

#[test]
fn units_register_their_stackmaps_and_cfi() {
    use uppercut_core::stackmaps::{DwarfReg, ReturnAddress};
    for opt in [OptLevel::O0, OptLevel::O2] {
        let e = engine_at(STATEPOINTS, opt);
        // sum over i < 4 of (i*2 + 1), plus n = 4
        assert_eq!(e.call("loop", &[4, 2]).unwrap(), 4 + 1 + 3 + 5 + 7);
        let version = e.versions("loop").pop().unwrap();
        let checked = e
            .with_unit_metadata(version.unit, |map, cfi| {
                let map = map.expect("the unit has a stack map");
                let cfi = cfi.expect("the unit has an .eh_frame");
                let records: Vec<_> = map.records().filter(|r| r.id().0 == 7).collect();
                assert!(!records.is_empty());
                for record in records {
                    let ra = record.return_address().0;
                    assert!(ra > version.entry && ra < version.entry + version.size);
                    assert_eq!(
                        map.lookup(ReturnAddress(ra)).map(|r| r.index()),
                        Some(record.index())
                    );
                    // Frame pointers everywhere: the CFA is rbp + 16.
                    let frame = cfi
                        .frame_info_for_return_address(ReturnAddress(ra))
                        .unwrap();
                    assert_eq!(frame.cfa.register, DwarfReg(6));
                    assert_eq!(frame.cfa.offset, 16);
                }
                true
            })
            .unwrap();
        assert!(checked);
    }
}

/// `run(n)` sums 0..n in a loop whose branches go through a table of its labels' addresses in
/// a global (a computed goto).
pub(super) const COMPUTED_GOTO: &str = r#"
@table = internal constant [2 x ptr] [ptr blockaddress(@run, %a), ptr blockaddress(@run, %b)]
define i32 @run(i32 %n) {
entry:
  %first = load ptr, ptr @table
  indirectbr ptr %first, [label %a, label %b]
a:
  %x = phi i32 [ 0, %entry ], [ %x1, %a ]
  %i = phi i32 [ 0, %entry ], [ %i1, %a ]
  %x1 = add i32 %x, %i
  %i1 = add i32 %i, 1
  %done = icmp sge i32 %i1, %n
  %idx = zext i1 %done to i64
  %p = getelementptr [2 x ptr], ptr @table, i64 0, i64 %idx
  %next = load ptr, ptr %p
  indirectbr ptr %next, [label %a, label %b]
b:
  %r = phi i32 [ 0, %entry ], [ %x1, %a ]
  ret i32 %r
}
"#;

#[test]
fn functions_whose_label_addresses_escape_are_not_recompiled() {
    let e = engine(COMPUTED_GOTO);
    assert_eq!(e.call("run", &[10]).unwrap(), 45);
    assert!(matches!(
        e.recompile("run", OptLevel::O0),
        Err(Error::Relink { .. })
    ));
    assert_eq!(e.call("run", &[10]).unwrap(), 45);
}

#[test]
fn code_goes_where_the_caller_asks_or_the_engine_says_why_not() {
    use uppercut_core::code_memory::{ArenaConfig, ArenaPlacement};
    // Far from where Linux puts executables, heaps, libraries and stacks on x86-64.
    let wanted: usize = 0x2000_0000_0000;
    let options = EngineOptions {
        arena: ArenaConfig::new()
            .size(64 << 20)
            .placement(ArenaPlacement::At(wanted)),
        ..EngineOptions::default()
    };
    let e = Engine::from_bytes(ADD.as_bytes(), "placed.ll", options).unwrap();
    assert_eq!(e.run_main("p", &[]).unwrap(), 42);
    let entry = e.entry("add").unwrap() as usize;
    assert!(
        (wanted..wanted + (64 << 20)).contains(&entry),
        "{entry:#x} not at {wanted:#x}"
    );

    // The same spot again is taken: a clear error, not a silent move.
    let again = EngineOptions {
        arena: ArenaConfig::new()
            .size(64 << 20)
            .placement(ArenaPlacement::At(wanted)),
        ..EngineOptions::default()
    };
    let refused = Engine::from_bytes(ADD.as_bytes(), "placed.ll", again);
    assert!(matches!(refused, Err(Error::CodeMemory(_))), "{refused:?}");
    let message = refused.unwrap_err().to_string();
    assert!(message.starts_with("code memory: "), "{message}");
}

#[test]
fn unit_memory_can_be_handed_to_the_caller() {
    let e = engine(USES_HOST);
    e.bind("host_value", host_seven as *const () as u64)
        .unwrap();
    // A version compiled without relinking is the caller's (a relinked one is retired, and
    // freed, by the engine once a later relink supersedes it).
    let middle = e
        .compile_version(&VersionRequest {
            relink: false,
            ..VersionRequest::new("f", OptLevel::O0)
        })
        .unwrap();
    let newest = e.recompile("f", OptLevel::O2).unwrap();
    let before = e.arena().stats();
    let memory = e.take_unit_memory(middle.version.unit).unwrap();
    assert!(!memory.code.is_empty());
    assert!(
        memory
            .code
            .iter()
            .any(|r| r.contains(middle.version.entry as usize))
    );
    // The engine no longer walks, reads or patches that memory.
    assert!(e.version_at(middle.version.entry + 1).is_none());
    assert!(e.take_unit_memory(middle.version.unit).is_err());
    // The caller frees it: nothing reaches it any more, since every older entry of `f` jumps
    // straight to the newest version.
    drop(memory);
    let after = e.arena().stats();
    assert!(after.live_regions < before.live_regions);
    assert_eq!(e.call("call_f", &[]).unwrap(), 107);
    assert_eq!(e.entry("f").unwrap(), newest.version.entry);
    // A later recompilation redirects the entries the engine still owns: the base entry and
    // the newest version's.
    let third = e.recompile("f", OptLevel::O1).unwrap();
    assert_eq!(third.redirected, 2);
    assert_eq!(e.call("call_f", &[]).unwrap(), 107);
}

#[test]
fn functions_using_thread_locals_are_not_recompiled() {
    let ir = r#"
@counter = internal thread_local global i64 0
define i64 @bump() {
  %v = load i64, ptr @counter
  %n = add i64 %v, 1
  store i64 %n, ptr @counter
  ret i64 %n
}
"#;
    let e = engine(ir);
    assert_eq!(e.call("bump", &[]).unwrap(), 1);
    assert!(
        matches!(e.recompile("bump", OptLevel::O2), Err(Error::Relink { reason, .. }) if reason.contains("counter"))
    );
    assert_eq!(e.call("bump", &[]).unwrap(), 2);
}

#[test]
fn versions_above_o0_optimise_functions_clang_marked_optnone() {
    // What `clang -O0` emits: `noinline optnone` on every function.
    let ir = r#"
define i64 @sum() noinline optnone {
entry:
  %acc = alloca i64
  %i = alloca i64
  store i64 0, ptr %acc
  store i64 0, ptr %i
  br label %loop
loop:
  %iv = load i64, ptr %i
  %a = load i64, ptr %acc
  %a1 = add i64 %a, %iv
  store i64 %a1, ptr %acc
  %iv1 = add i64 %iv, 1
  store i64 %iv1, ptr %i
  %done = icmp eq i64 %iv1, 1000
  br i1 %done, label %exit, label %loop
exit:
  %r = load i64, ptr %acc
  ret i64 %r
}
"#;
    let e = engine_at(ir, OptLevel::O0);
    assert_eq!(e.call("sum", &[]).unwrap(), 499_500);
    let o0 = e.versions("sum").pop().unwrap();
    let o2 = e.recompile("sum", OptLevel::O2).unwrap().version;
    assert_eq!(e.call("sum", &[]).unwrap(), 499_500);
    // At O2 the loop folds to a constant: far less code than the O0 loop.
    assert!(
        o2.size < o0.size,
        "O2 {} bytes, O0 {} bytes",
        o2.size,
        o0.size
    );
    assert!(o2.size <= 32, "O2 {} bytes", o2.size);
}

const RELINKED_WHILE_RUNNING: &str = r#"
declare i64 @host_value()
define i64 @f() noinline {
  %v = call i64 @host_value()
  %r = add i64 %v, 100
  ret i64 %r
}
; Calls `f` through its first entry %n times; returns how many results were neither 107 nor
; 109 (the results of the versions the host compiles).
define i64 @spin(i64 %n) noinline {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %bad = phi i64 [ 0, %entry ], [ %bad1, %loop ]
  %r = call i64 @f()
  %is7 = icmp eq i64 %r, 107
  %is9 = icmp eq i64 %r, 109
  %ok = or i1 %is7, %is9
  %b = select i1 %ok, i64 0, i64 1
  %bad1 = add i64 %bad, %b
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %bad1
}
define ptr @f_address() {
  ret ptr @f
}
define i64 @call_through(ptr %fp) {
  %r = call i64 %fp()
  ret i64 %r
}
"#;

/// Relinking patches entries that other threads are executing through right now: the code
/// stays executable the whole time (each entry changes with one atomic store), so the callers
/// never fault and every call reaches one complete version or another.
#[test]
fn relinking_while_other_threads_run_the_old_code() {
    use std::sync::atomic::AtomicBool;
    const THREADS: usize = 3;
    const RECOMPILES: usize = 300;

    // Eager and without a version cache: superseded versions are freed once no thread is in
    // them, and the base unit holds the first.
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        compile: CompileMode::Eager,
        version_cache: 0,
        ..EngineOptions::default()
    };
    let e = Engine::from_bytes(RELINKED_WHILE_RUNNING.as_bytes(), "test.ll", options).unwrap();
    e.bind("host_value", host_seven as *const () as u64)
        .unwrap();
    let old_pointer = e.call("f_address", &[]).unwrap();
    assert_eq!(e.call("spin", &[10]).unwrap(), 0);

    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(THREADS + 1));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, stop, started) = (e.clone(), Arc::clone(&stop), Arc::clone(&started));
            std::thread::spawn(move || {
                started.wait();
                let (mut calls, mut seen) = (0u64, [0u64; 2]);
                while !stop.load(Ordering::Relaxed) {
                    // `spin` was compiled with the first unit: it calls `f`'s first entry, the
                    // one every relink patches, from the same code section.
                    assert_eq!(e.call("spin", &[20_000]).unwrap(), 0, "thread {t}");
                    let r = if t % 2 == 0 {
                        e.call("call_through", &[old_pointer]).unwrap()
                    } else {
                        e.call("f", &[]).unwrap()
                    };
                    match r {
                        107 => seen[0] += 1,
                        109 => seen[1] += 1,
                        other => panic!("thread {t}: `f` returned {other}"),
                    }
                    calls += 20_001;
                }
                (calls, seen)
            })
        })
        .collect();

    started.wait();
    for i in 0..RECOMPILES {
        let (host, opt) = if i % 2 == 0 {
            (host_nine as *const () as u64, OptLevel::O2)
        } else {
            (host_seven as *const () as u64, OptLevel::O0)
        };
        e.bind("host_value", host).unwrap();
        let done = e.recompile("f", opt).unwrap();
        // The base entry and the previous version's at least; superseded versions that no
        // worker is inside any more are freed, so not every older one.
        assert!(
            (2.min(i + 1)..=i + 1).contains(&done.redirected),
            "{i}: {done:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = [0u64; 2];
    for worker in workers {
        let (calls, s) = worker.join().expect("a worker failed");
        assert!(calls > 0);
        seen[0] += s[0];
        seen[1] += s[1];
    }
    // The workers ran across the relinks: they saw both versions' results.
    assert!(seen[0] > 0 && seen[1] > 0, "{seen:?}");
    // The last version (an odd count of recompiles ends on host_seven) is what runs now.
    assert_eq!(e.call("call_through", &[old_pointer]).unwrap(), 107);
    assert_eq!(e.call("spin", &[10]).unwrap(), 0);
    // No thread runs guest code now: one more relink frees every superseded version, and the
    // arena takes their memory back. (At O2: asking again for the current O0 version would
    // reuse it, relinking nothing.)
    e.recompile("f", OptLevel::O2).unwrap();
    let live: Vec<_> = e.versions("f");
    assert_eq!(
        live.len(),
        2,
        "the base version and the current one: {live:?}"
    );
    assert_eq!(
        e.units().len(),
        2,
        "the base unit and the current version's"
    );
    assert_eq!(e.call("call_through", &[old_pointer]).unwrap(), 107);
}

/// LLVM does not align functions optimised for size; the engine asks for 16 bytes anyway, so
/// that every entry's patchable bytes lie in one aligned word and can be relinked live.
#[test]
fn functions_optimised_for_size_can_be_relinked_live() {
    let ir = r#"
define i64 @a(i64 %x) minsize optsize noinline {
  %r = add i64 %x, 1
  ret i64 %r
}
define i64 @b(i64 %x) minsize optsize noinline {
  %r = mul i64 %x, 3
  ret i64 %r
}
define i64 @c(i64 %x) optsize {
  %r = call i64 @b(i64 %x)
  ret i64 %r
}
"#;
    let e = eager_at(ir, OptLevel::O2);
    assert_eq!(e.call("c", &[5]).unwrap(), 15);
    for f in ["a", "b", "c"] {
        let done = e.recompile(f, OptLevel::O0).unwrap();
        assert_eq!(done.redirected, 1);
    }
    for v in e.all_versions() {
        assert_eq!(v.entry % 16, 0, "{v:?}");
    }
    assert_eq!(e.call("c", &[5]).unwrap(), 15);
    assert_eq!(e.call("a", &[5]).unwrap(), 6);
}
