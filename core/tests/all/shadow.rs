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
