//! C++ guests under OSR, beyond the differential corpus: a `throw` below a frame that a transfer
//! set to move (its return address patched to a transfer thunk) unwinds through the thunk's
//! unwind information to the `catch` above, in both transfer modes, at O0 and O2.

use uppercut_core::{Engine, EngineOptions, Instrumentation, OptLevel as Level};
use uppercut_osr::policy::Policy;
use uppercut_osr::{Cx, Osr, OsrOptions, TransferMode, VersionSpec};

use crate::support::{IrFormat, OptLevel, Scratch, compile_ir};

/// `main` catches what `leaf` throws after its loop (whose site hypercall is where the policy
/// moves `mid`, suspended in its call of `leaf`): the exception crosses `mid`'s patched return
/// address. `main` returns 0 only when it caught the value `leaf` threw.
const GUEST: &str = r#"
#include <cstdio>
extern "C" {
__attribute__((noinline)) long leaf(long n) {
  long s = 0;
  for (long i = 0; i < n; i++) s += i * i % 7;
  if (s > 0) throw s;
  return s;
}
__attribute__((noinline)) long mid(long n) {
  long a = n * 3;
  long r = leaf(n);
  return a + r;
}
}
int main() {
  long caught = -1;
  try {
    std::printf("mid returned %ld\n", mid(2000));
  } catch (long s) {
    caught = s;
  }
  long expected = 0;
  for (long i = 0; i < 2000; i++) expected += i * i % 7;
  return caught == expected ? 0 : 1;
}
"#;

/// Moves the first frame of `mid` it sees (once) into its O2 continuation.
struct MoveMid {
    moved: bool,
}

impl Policy for MoveMid {
    fn name(&self) -> &str {
        "move-mid"
    }

    fn on_site(&mut self, cx: &mut Cx<'_>) -> Result<(), String> {
        if self.moved {
            return Ok(());
        }
        let Some(index) = cx.frames().iter().position(|f| f.version.function == "mid") else {
            return Ok(());
        };
        cx.transfer(index, &VersionSpec::at(Level::O2))?;
        self.moved = true;
        Ok(())
    }
}

#[test]
fn a_throw_unwinds_through_a_frame_set_to_move() {
    let scratch = Scratch::new("cxx-throw-through-thunk");
    let source = scratch.path().join("throw_through.cpp");
    std::fs::write(&source, GUEST).expect("write the guest");
    for opt in [OptLevel::O0, OptLevel::O2] {
        let ir = compile_ir(&source, opt, IrFormat::Text, scratch.path());
        for mode in [TransferMode::Lazy, TransferMode::Eager] {
            let options = EngineOptions {
                opt_level: match opt {
                    OptLevel::O0 => Level::O0,
                    OptLevel::O2 => Level::O2,
                },
                instrument: Some(Instrumentation {
                    initial_count: 10,
                    ..Instrumentation::default()
                }),
                ..EngineOptions::default()
            };
            let engine = Engine::from_file(&ir, options).expect("load");
            let osr_options = OsrOptions {
                transfer: mode,
                ..OsrOptions::default()
            };
            let osr =
                Osr::install_with(&engine, MoveMid { moved: false }, osr_options).expect("install");
            let status = engine.run_main("throw_through", &[]).expect("run");
            let stats = osr.stats();
            let what = format!("{opt:?} {mode:?}: {stats:?}");
            assert_eq!(status, 0, "main did not catch leaf's exception: {what}");
            // `mid` was set to move, and never entered its new code: the throw went through its
            // thunk instead of a return.
            assert_eq!(stats.patched, 1, "{what}");
            assert_eq!(stats.frames, 0, "{what}");
        }
    }
}
