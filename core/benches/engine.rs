//! Criterion benchmarks of the engine's two hot paths: a hypercall round trip (against a plain
//! indirect call from guest code, measured in the same run) and compile-and-relink latency.
//!
//! `cargo bench -p uppercut-core --bench engine`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::ffi::c_void;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use uppercut_core::{CallbackError, Engine, EngineOptions, Hypercall, OptLevel};

const GUEST: &str = r#"
@.noop = private unnamed_addr constant [5 x i8] c"noop\00"
declare ptr @PerformCustomCallback(ptr, ptr)

; n hypercalls with a constant name.
define i64 @hypercalls(i64 %n) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %loop ]
  %p = inttoptr i64 %i to ptr
  %r = call ptr @PerformCustomCallback(ptr @.noop, ptr %p)
  %ri = ptrtoint ptr %r to i64
  %acc1 = add i64 %acc, %ri
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %acc1
}

; n indirect calls to a host function with the handler's signature: the floor.
define i64 @indirect_calls(i64 %n, ptr %fp) {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %acc = phi i64 [ 0, %entry ], [ %acc1, %loop ]
  %p = inttoptr i64 %i to ptr
  %r = call ptr %fp(ptr %p, ptr null)
  %ri = ptrtoint ptr %r to i64
  %acc1 = add i64 %acc, %ri
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, %n
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %acc1
}

; A small function (about 100 instructions at O0) to recompile.
define i64 @small(i64 %x) noinline {
entry:
  br label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %a = phi i64 [ %x, %entry ], [ %a3, %loop ]
  %a1 = mul i64 %a, 6364136223846793005
  %a2 = add i64 %a1, 1442695040888963407
  %s = lshr i64 %a2, 33
  %a3 = xor i64 %a2, %s
  %i1 = add i64 %i, 1
  %done = icmp eq i64 %i1, 16
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %a3
}
"#;

extern "C" fn host_noop(args: *mut c_void, _ctx: *mut c_void) -> *mut c_void {
    args
}

fn noop(h: &mut Hypercall<'_>) -> Result<*mut c_void, CallbackError> {
    Ok(h.args())
}

fn hypercall_round_trip(c: &mut Criterion) {
    let engine = Engine::from_bytes(GUEST.as_bytes(), "bench.ll", EngineOptions::default())
        .expect("guest loads");
    engine.register_callback("noop", noop).expect("registers");
    engine.compile().expect("compiles");
    const N: u64 = 1000;
    let mut group = c.benchmark_group("hypercall_vs_indirect_call");
    group.throughput(criterion::Throughput::Elements(N));
    group.bench_function("indirect_call", |b| {
        b.iter(|| {
            engine
                .call(
                    "indirect_calls",
                    &[black_box(N), host_noop as *const () as u64],
                )
                .unwrap()
        })
    });
    group.bench_function("hypercall", |b| {
        b.iter(|| engine.call("hypercalls", &[black_box(N)]).unwrap())
    });
    group.finish();
}

fn compile_and_relink(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_and_relink");
    let fresh = || {
        let engine = Engine::from_bytes(GUEST.as_bytes(), "bench.ll", EngineOptions::default())
            .expect("guest loads");
        engine.compile().expect("compiles");
        engine
    };
    for opt in [OptLevel::O0, OptLevel::O2] {
        // From the request to the new code callable, on an engine whose `small` has one version
        // (so one older entry to redirect), as a hypercall handler would see it.
        group.bench_with_input(BenchmarkId::from_parameter(opt), &opt, |b, &opt| {
            b.iter_batched(
                fresh,
                |engine| {
                    let done = engine.recompile("small", opt).unwrap();
                    black_box(engine.call("small", &[3]).unwrap());
                    (engine, done)
                },
                BatchSize::PerIteration,
            )
        });
        // The split between phases, as a mean over 50 fresh engines.
        let (mut ir, mut codegen, mut link) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for _ in 0..50 {
            let t = fresh().recompile("small", opt).unwrap().times;
            ir += t.ir;
            codegen += t.codegen;
            link += t.link;
        }
        eprintln!(
            "compile_and_relink/{opt} split (mean of 50): IR {:?}, codegen {:?}, link {:?}",
            ir / 50,
            codegen / 50,
            link / 50
        );
    }
    group.finish();
}

criterion_group!(benches, hypercall_round_trip, compile_and_relink);
criterion_main!(benches);
