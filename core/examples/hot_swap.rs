//! A guest asks the host, by hypercall, to recompile its own hot function at -O2; the host
//! does it and the guest's next calls run the new version.
//!
//! `cargo run -p uppercut-core --example hot_swap`

use std::ffi::c_void;

use uppercut_core::{CallbackError, Engine, EngineOptions, Hypercall, OptLevel};

const GUEST: &str = r#"
@.tier_up = private unnamed_addr constant [8 x i8] c"tier_up\00"
declare ptr @PerformCustomCallback(ptr, ptr)

define i64 @hot(i64 %n) noinline {
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

define i64 @main_loop() {
entry:
  br label %loop
loop:
  %round = phi i64 [ 0, %entry ], [ %round1, %next ]
  %sum = phi i64 [ 0, %entry ], [ %sum1, %next ]
  %r = call i64 @hot(i64 100000)
  %sum1 = add i64 %sum, %r
  %round1 = add i64 %round, 1
  %halfway = icmp eq i64 %round1, 5
  br i1 %halfway, label %ask, label %next
ask:
  %ignored = call ptr @PerformCustomCallback(ptr @.tier_up, ptr null)
  br label %next
next:
  %done = icmp eq i64 %round1, 10
  br i1 %done, label %exit, label %loop
exit:
  ret i64 %sum1
}
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = EngineOptions {
        opt_level: OptLevel::O0,
        ..EngineOptions::default()
    };
    let engine = Engine::from_bytes(GUEST.as_bytes(), "guest.ll", options)?;
    engine.register_callback("tier_up", |h: &mut Hypercall<'_>| {
        let done = h
            .engine()
            .recompile("hot", OptLevel::O2)
            .map_err(CallbackError::from)?;
        println!(
            "host: `hot` recompiled at O2 as {} in {:?} (IR) + {:?} (codegen) + {:?} (relink)",
            done.version.id, done.times.ir, done.times.codegen, done.times.link
        );
        Ok(std::ptr::null_mut::<c_void>())
    })?;
    let sum = engine.call("main_loop", &[])?;
    println!("guest: sum = {sum}");
    for v in engine.versions("hot") {
        println!(
            "  {} {} at {:#x}, {} bytes",
            v.id, v.opt_level, v.entry, v.size
        );
    }
    Ok(())
}
