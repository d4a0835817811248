//! Lazy compilation: a guest function is compiled on its first call.
//!
//! ```text
//!  load: every function gets a stub, its base entry (what function pointers, global
//!        initialisers and other units link to):   nop5 · movabs r11, record · jmp resolver
//!  first call ──> stub ──> resolver (arch: keeps every argument register)
//!        └─ compile_on_first_call(record): the function compiled at the engine's level, in a
//!           unit of its own, then relinked as any recompilation is: the stub's nop5 becomes
//!           `jmp <code>` ──> the call goes on into the new code
//!  later calls ──> stub: jmp <code>   (one direct jump, as for a relinked entry)
//! ```
//!
//! Stubs live in a code region of their own that lives as long as the engine, so a function
//! pointer the guest took before the function was compiled keeps working, and so does one it
//! takes after every recompilation. First calls of the same function from several threads
//! compile it once: the engine serialises lazy compilation, and a thread that finds the
//! function compiled when its turn comes takes the code that is there.
//!
//! A function whose compilation fails stops the guest at that call with
//! [`Error::LazyCompile`], as a failing hypercall does: the engine's `call` (and `uppercut run`,
//! with one line and exit status 2) reports it.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Weak;

use crate::arch;
use crate::code_memory::{CodeArena, CodeRegion, RegionRequest};
use crate::engine::{Engine, EngineInner};
use crate::error::{Error, Result};

/// What a stub hands the resolver: which function of which engine.
pub(crate) struct LazyRecord {
    engine: Weak<EngineInner>,
    function: String,
}

/// An engine's stubs: the records they point to (boxed: their addresses are in the code), and
/// each function's stub address. The code is in a region of the engine's stub unit.
pub(crate) struct Stubs {
    _records: Box<[LazyRecord]>,
    pub(crate) entries: HashMap<String, u64>,
}

impl Stubs {
    /// Writes one stub per function into a new executable region of `arena`, which it returns.
    pub(crate) fn new(
        arena: &CodeArena,
        engine: Weak<EngineInner>,
        functions: &[String],
    ) -> Result<(Stubs, CodeRegion)> {
        let records: Box<[LazyRecord]> = functions
            .iter()
            .map(|f| LazyRecord {
                engine: engine.clone(),
                function: f.clone(),
            })
            .collect();
        let len = (functions.len() * arch::LAZY_STUB_BYTES).max(arch::LAZY_STUB_BYTES);
        let mut region = arena.allocate(RegionRequest::code(len).align(arch::LAZY_STUB_BYTES))?;
        let base = region.addr() as u64;
        let mut entries = HashMap::with_capacity(functions.len());
        {
            let bytes = region.as_mut_slice()?;
            for (i, record) in records.iter().enumerate() {
                let at = i * arch::LAZY_STUB_BYTES;
                let stub = arch::lazy_stub(record as *const LazyRecord as u64);
                bytes[at..at + arch::LAZY_STUB_BYTES].copy_from_slice(&stub);
                entries.insert(record.function.clone(), base + at as u64);
            }
        }
        region.publish()?;
        let stubs = Stubs {
            _records: records,
            entries,
        };
        Ok((stubs, region))
    }
}

/// Called by the resolver with the stub's record: compiles the function (once) and returns the
/// address its call goes on to. Stops the guest when it cannot be compiled.
pub(crate) extern "C" fn compile_on_first_call(record: *const LazyRecord) -> u64 {
    // SAFETY: `record` was written into a stub by `Stubs::new` and points into the records the
    // engine keeps as long as its stubs, which run only while the engine lives.
    let record = unsafe { &*record };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let inner = record
            .engine
            .upgrade()
            .ok_or_else(|| Error::Osr("the engine that owns this function is gone".to_owned()))?;
        Engine::from_inner(inner).compile_lazily(&record.function)
    }));
    let error = match outcome {
        Ok(Ok(entry)) => return entry,
        Ok(Err(e)) => e,
        Err(panic) => Error::Codegen {
            unit: record.function.clone(),
            message: format!(
                "the compiler panicked: {}",
                crate::hypercall::panic_message(panic.as_ref())
            ),
        },
    };
    crate::hypercall::stop_guest(Error::LazyCompile {
        function: record.function.clone(),
        source: Box::new(error),
    })
}
