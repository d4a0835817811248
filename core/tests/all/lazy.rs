//! Lazy compilation: functions compiled on their first call, through stubs that are their
//! never-freed base entries; the version cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::engine::COMPUTED_GOTO;
use uppercut_core::{CompileMode, Engine, EngineOptions, Error, OptLevel, VersionRequest};

fn lazy(ir: &str, opt_level: OptLevel) -> Engine {
    let options = EngineOptions {
        opt_level,
        compile: CompileMode::Lazy,
        ..EngineOptions::default()
    };
    Engine::from_bytes(ir.as_bytes(), "lazy.ll", options).expect("loads")
}

const CALLS: &str = r#"
@fp = global ptr @square
@count = global i64 0
define i64 @square(i64 %x) {
  %c = load i64, ptr @count
  %c1 = add i64 %c, 1
  store i64 %c1, ptr @count
  %r = mul i64 %x, %x
  ret i64 %r
}
define i64 @through_pointer(i64 %x) {
  %f = load ptr, ptr @fp
  %r = call i64 %f(i64 %x)
  ret i64 %r
}
define i64 @many(i64 %a, i64 %b, i64 %c, i64 %d, i64 %e, i64 %f, i64 %g, i64 %h, double %x, double %y) {
  %s1 = add i64 %a, %b
  %s2 = add i64 %s1, %c
  %s3 = add i64 %s2, %d
  %s4 = add i64 %s3, %e
  %s5 = add i64 %s4, %f
  %s6 = add i64 %s5, %g
  %s7 = add i64 %s6, %h
  %xy = fadd double %x, %y
  %xi = fptosi double %xy to i64
  %r = add i64 %s7, %xi
  ret i64 %r
}
define i64 @calls_many() {
  %r = call i64 @many(i64 1, i64 2, i64 3, i64 4, i64 5, i64 6, i64 7, i64 8, double 1.5, double 2.5)
  ret i64 %r
}
define i64 @never_called() {
  %r = call i64 @square(i64 3)
  ret i64 %r
}
"#;

#[test]
fn loading_compiles_no_function_and_first_calls_compile_each_once() {
    let e = lazy(CALLS, OptLevel::O0);
    e.compile().unwrap();
    for f in [
        "square",
        "through_pointer",
        "many",
        "calls_many",
        "never_called",
    ] {
        assert!(!e.is_compiled(f), "{f} compiled before its first call");
    }
    // A pointer the guest's data took before anything was compiled (the stub) works.
    assert_eq!(e.call("through_pointer", &[7]).unwrap(), 49);
    assert!(e.is_compiled("through_pointer") && e.is_compiled("square"));
    assert!(!e.is_compiled("never_called"));
    // Eight integer arguments (two on the stack) and two doubles pass through the resolver.
    assert_eq!(e.call("calls_many", &[]).unwrap(), 36 + 4);
    assert_eq!(e.versions("square").len(), 1);
    assert_eq!(e.call("through_pointer", &[5]).unwrap(), 25);
    assert_eq!(e.versions("square").len(), 1, "compiled once");
    // The function pointer the guest holds is the stub, which the recompilation relinks.
    e.recompile("square", OptLevel::O2).unwrap();
    assert_eq!(e.call("through_pointer", &[6]).unwrap(), 36);
    assert!(e.grouped_with_globals().is_empty());
}

#[test]
fn a_function_first_called_from_many_threads_at_once_is_compiled_once() {
    let e = lazy(CALLS, OptLevel::O2);
    e.compile().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let wrong = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (e, barrier, wrong) = (e.clone(), Arc::clone(&barrier), Arc::clone(&wrong));
            std::thread::spawn(move || {
                barrier.wait();
                for x in 0..50u64 {
                    if e.call("square", &[x + i]).unwrap() != (x + i) * (x + i) {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert_eq!(e.versions("square").len(), 1, "{:?}", e.versions("square"));
}

#[test]
fn an_unresolved_symbol_in_a_function_never_called_fails_at_load() {
    let ir = r#"
declare i64 @uppercut_no_such_symbol(i64)
define i64 @unused(i64 %x) {
  %r = call i64 @uppercut_no_such_symbol(i64 %x)
  ret i64 %r
}
define i32 @main() {
  ret i32 0
}
"#;
    let e = lazy(ir, OptLevel::O0);
    match e.compile() {
        Err(Error::UnresolvedSymbol(name)) => assert_eq!(name, "uppercut_no_such_symbol"),
        other => panic!("expected an unresolved symbol, got {other:?}"),
    }
    // Declared and never used: let through, as compiling the whole program would.
    let unused =
        "declare i64 @uppercut_no_such_symbol(i64)\ndefine i32 @main() {\n  ret i32 0\n}\n";
    lazy(unused, OptLevel::O0).compile().unwrap();
}

#[test]
fn a_computed_goto_function_is_compiled_with_the_globals_and_still_works() {
    let ir = format!(
        "{COMPUTED_GOTO}
define i32 @caller(i32 %n) {{
  %r = call i32 @run(i32 %n)
  ret i32 %r
}}
"
    );
    let e = lazy(&ir, OptLevel::O2);
    e.compile().unwrap();
    let grouped = e.grouped_with_globals();
    assert_eq!(grouped.len(), 1, "{grouped:?}");
    assert_eq!(grouped[0].0, "run");
    assert!(grouped[0].1.contains("computed-goto"), "{grouped:?}");
    assert!(e.is_compiled("run") && !e.is_compiled("caller"));
    assert_eq!(e.call("caller", &[10]).unwrap(), 45);
}

#[test]
fn bitcode_loads_lazily_and_truncated_bitcode_is_one_error() {
    let e = lazy(CALLS, OptLevel::O0);
    let ctx = inkwell::context::Context::create();
    let buffer = inkwell::memory_buffer::MemoryBuffer::create_from_memory_range_copy(
        CALLS.as_bytes(),
        "calls",
    );
    let module = ctx.create_module_from_ir(buffer).unwrap();
    let bitcode = module.write_bitcode_to_memory().as_slice().to_vec();
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        ..EngineOptions::default()
    };
    let from_bitcode = Engine::from_bytes(&bitcode, "calls.bc", options).unwrap();
    assert_eq!(from_bitcode.call("through_pointer", &[9]).unwrap(), 81);
    assert_eq!(e.call("through_pointer", &[9]).unwrap(), 81);
    // The pristine module is still there, whole.
    let text = from_bitcode.pristine_ir().unwrap();
    assert!(text.contains("define i64 @never_called()"), "{text}");
    // Truncated bitcode is one error, never a crash.
    let options = EngineOptions::default();
    let broken = Engine::from_bytes(&bitcode[..bitcode.len() / 2], "broken.bc", options);
    assert!(matches!(broken, Err(Error::InvalidIr { .. })), "{broken:?}");
}

#[test]
fn a_flip_back_to_a_version_compiled_before_reuses_it() {
    let e = lazy(CALLS, OptLevel::O0);
    assert_eq!(e.call("square", &[3]).unwrap(), 9);
    let first = e.current_version("square").unwrap();
    let o2 = e.recompile("square", OptLevel::O2).unwrap();
    assert!(!o2.reused);
    assert_eq!(e.call("through_pointer", &[4]).unwrap(), 16);
    // Back to the first tier: the version compiled on the first call, relinked again.
    let back = e
        .compile_version(&VersionRequest::new("square", OptLevel::O0))
        .unwrap();
    assert!(back.reused, "{back:?}");
    assert_eq!(back.version.id, first.id);
    assert_eq!(e.current_version("square").unwrap().id, first.id);
    assert_eq!(e.call("through_pointer", &[5]).unwrap(), 25);
    assert_eq!(e.call("square", &[6]).unwrap(), 36);
    // And forth: the O2 version again, which now runs its own body (its entry no longer jumps).
    let again = e.recompile("square", OptLevel::O2).unwrap();
    assert!(
        again.reused && again.version.id == o2.version.id,
        "{again:?}"
    );
    assert_eq!(e.call("through_pointer", &[7]).unwrap(), 49);
    assert_eq!(e.entry("square").unwrap(), o2.version.entry);
    // Asking for the current one is free.
    let same = e.recompile("square", OptLevel::O2).unwrap();
    assert!(same.reused && same.redirected == 0);
}

/// A function whose inline assembly does not assemble: code generation reports an error.
const BAD_ASM: &str = r#"
define i64 @bad(i64 %x) {
  call void asm sideeffect "uppercut_no_such_instruction %rax", "~{dirflag},~{fpsr},~{flags}"()
  ret i64 %x
}
define i64 @good(i64 %x) {
  %r = add i64 %x, 1
  ret i64 %r
}
"#;

#[test]
fn a_code_generation_error_is_an_error_of_that_unit_not_an_exit() {
    for opt_level in [OptLevel::O0, OptLevel::O2] {
        let e = lazy(BAD_ASM, opt_level);
        let mut request = VersionRequest::new("bad", opt_level);
        request.relink = false;
        match e.compile_version(&request) {
            Err(Error::Codegen { message, .. }) => {
                assert!(
                    message.contains("uppercut_no_such_instruction"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A first call stops the guest at that call with the same error.
        match e.call("bad", &[1]) {
            Err(Error::LazyCompile { function, source }) => {
                assert_eq!(function, "bad");
                assert!(matches!(*source, Error::Codegen { .. }), "{source:?}");
            }
            other => panic!("{other:?}"),
        }
        // The engine goes on.
        assert_eq!(e.call("good", &[1]).unwrap(), 2);
    }
}
