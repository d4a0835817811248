//! Uppercut's JIT engine.
//!
//! A guest program (LLVM IR or bitcode) is loaded once and kept pristine; every compiled version
//! of a function is built from it by MCJIT into the engine's own code memory, with each unit's
//! `.llvm_stackmaps` and `.eh_frame` captured. By default ([`CompileMode::Lazy`]) loading
//! compiles only the guest's globals: each function starts as a stub that compiles it on its
//! first call (bitcode bodies are even read on demand), and every unit holds the functions
//! extracted for it, not a copy of the program. A relink to a version built the same way as one
//! still compiled reuses it ([`EngineOptions::version_cache`]). The guest calls the host by name with
//! `PerformCustomCallback(name, args)` (a *hypercall*); a callback can recompile a function,
//! and every later call reaches the new version.
//!
//! With [`EngineOptions::instrument`], the module is instrumented for on-stack replacement once
//! at load ([`OsrModule`]: sites whose statepoint records describe each version's frames,
//! shadow-stack frames for escaping locals, see [`shadow`]); [`Engine::compile_continuation`]
//! then builds code that resumes a function right after one of its sites,
//! [`Engine::compile_multi_continuation`] one body that resumes it after any of them (with an
//! entry per site), and [`Engine::compile_version`] versions specialised on global values. The
//! `uppercut-osr` crate moves live frames into them.
//!
//! The engine owns every unit's frame metadata ([`frames`]): its stack map and call-frame
//! information are decoded once, when the unit is published, into a frame table, and
//! [`Engine::code_map`] hands out an immutable snapshot of every live version with its table,
//! which the one frame cursor ([`frames::FrameCursor`]) walks without holding the engine's lock.
//!
//! Code that a relink supersedes, or that its owner retires ([`Engine::retire_unit`]), is freed
//! once no guest thread can reach it: see [`reclaim`].
//!
//! ```no_run
//! use uppercut_core::{Engine, EngineOptions, OptLevel};
//!
//! let engine = Engine::from_file("program.ll", EngineOptions::default())?;
//! engine.register_callback("log", |h: &mut uppercut_core::Hypercall<'_>| {
//!     eprintln!("the guest called {}", h.name());
//!     Ok(std::ptr::null_mut())
//! })?;
//! let status = engine.run_main("program", &[])?;
//! engine.recompile("hot_function", OptLevel::O3)?;
//! # Ok::<(), uppercut_core::Error>(())
//! ```

mod arch;
pub mod builtins;
pub mod code_memory;
mod dump;
mod engine;
mod error;
pub mod frames;
mod hypercall;
mod ir;
mod lazy;
mod maps;
pub mod perf;
mod plugin;
pub mod reclaim;
pub mod shadow;
mod sites;
mod sys;
mod threads;
mod types;
pub mod unwind;

pub use engine::{
    CompileMode, CompileTimes, Continuation, Engine, EngineOptions, JitFrame, MultiContinuation,
    Recompiled, UnitInfo, UnitMemory, VersionInfo, VersionKind, VersionRequest, WeakEngine,
    specialisation_text, version_label,
};
pub use error::{Error, Result};
pub use hypercall::{
    CHandler, Callback, CallbackError, GuestState, Hypercall, registerCustomCallback,
};
pub use ir::{
    DEOPT_IN_REGISTERS_ENV, deopt_values_in_registers, llvm_version,
    prefer_deopt_values_in_registers,
};
pub use perf::PerfMode;
pub use plugin::load_plugin;
pub use sites::{
    DiscoverySlots, FunctionOsr, GlobalOsr, Instrumentation, LoopCounters, OsrModule,
    REGISTER_CHUNK, SITE_CALLBACK, SIZE_UNIT, SiteInfo, SiteKind,
};
pub use sys::stack_top;
pub use threads::before_exit;
pub use types::{Address, OptLevel, Readiness, SiteId, UnitId, ValueKind, VersionId};
/// The frame-metadata reader the engine uses, for [`Engine::with_unit_metadata`].
pub use uppercut_stackmaps as stackmaps;
