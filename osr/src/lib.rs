//! On-stack replacement for LLVM-JITted code, and the `uppercut` command line.
//!
//! An engine created with [`EngineOptions::instrument`](uppercut_core::EngineOptions::instrument)
//! carries OSR sites (see [`uppercut_core::OsrModule`]): every call that can reach a hypercall
//! records, in each compiled version, where the base program's live values are; loop headers
//! (and, if asked, function entries and stores to watched globals) make a site hypercall. This
//! crate handles those hypercalls:
//!
//! ```text
//!   site hypercall ──> Osr (runtime.rs) ──> Policy::on_site(cx)          (policy.rs)
//!                         │                    cx.version(f, spec)       new version, relinked
//!                         │                    cx.transfer(frame, spec)  continuation of f at the
//!                         │                                              frame's site, then:
//!   Transfers (transfer.rs, frames.rs, arch/):
//!     walk    the engine's FrameCursor over its CodeMap (uppercut_core::frames): each return
//!             address → version + frame-table row (decoded once, when the unit was published)
//!     prepare the row's site state (deopt values in [rsp+off] slots) and callee-saved slots
//!             checked against the target → a descriptor and a thunk, cached per return address
//!     patch   the callee's return-address slot := thunk
//!             (transfer_frames: walk, prepare once per run of frames, patch, in one pass)
//!
//!   callee returns ──> thunk ──> stub: values + result → transfer buffer, callee-saved registers
//!                               restored, old frame popped ──> continuation(buffer) ──> caller
//! ```
//!
//! A transfer is lazy (the frame's state is read when its callee returns) or eager
//! ([`TransferMode::Eager`], [`Transfers::transfer_now`]: every moved frame's state is read at
//! the safepoint, in the same pass, and its old slots are never read again). Versions and
//! continuations are compiled on a compiler thread of the runtime, never on the guest's stack,
//! either while the guest waits or in the background ([`Cx::version_in_background`]; the
//! compiler thread starts at the first). After a relink, every thread's frames of the function
//! move at that thread's next site hypercall, unless the relink leaves them where they are (a
//! function entered often: later calls enter the new code).
//! Continuations are per site or one multi-entry continuation per function and spec
//! ([`ContinuationKind`]).
//!
//! With [`Instrumentation::shadow_discovery`](uppercut_core::Instrumentation::shadow_discovery),
//! [`ShadowDiscovery`] (discovery.rs) finds the same [`Frame`]s from this thread's
//! shadow-stack chain alone, through frames of code that has no frame pointers or metadata
//! (a libc `qsort` calling a guest comparator), as the 2009 design note proposes.
//!
//! A frame whose metadata is missing or doubtful is never moved: it keeps running its old code.
//! Built-in policies: [`policy::TierUp`], [`policy::Specialise`] (the design note's
//! specialise-on-store with deoptimisation), [`policy::Stress`] (seeded random moves for
//! differential testing).
//!
//! ```no_run
//! use uppercut_core::{Engine, EngineOptions, Instrumentation};
//! use uppercut_osr::{Osr, policy::TierUp};
//!
//! let options = EngineOptions {
//!     instrument: Some(Instrumentation::default()),
//!     ..EngineOptions::default()
//! };
//! let engine = Engine::from_file("loop.ll", options)?;
//! let osr = Osr::install(&engine, TierUp::default())?;
//! let status = engine.run_main("loop", &[])?;
//! println!("{status}: {:?}", osr.stats());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The transfer primitives work on any JIT code with Uppercut's site convention (hand-written
//! statepoints and continuations included):
//!
//! ```no_run
//! use uppercut_core::{Engine, EngineOptions, Hypercall, SiteId, ValueKind};
//! use uppercut_osr::{Target, Transfers};
//!
//! let engine = Engine::from_file("loop.ll", EngineOptions::default())?;
//! let continuation = engine.entry("sum.cont")?;
//! engine.register_callback("osr", move |h: &mut Hypercall<'_>| {
//!     let transfers = Transfers::new(&h.engine());
//!     let target = Target {
//!         site: SiteId(1),
//!         continuation,
//!         values: vec![ValueKind::I64, ValueKind::I64],
//!         result: None,
//!     };
//!     for frame in transfers.walk(&h.guest_state()) {
//!         if frame.site == Some(target.site) {
//!             let prepared = transfers.prepare(&frame, &target)?;
//!             transfers.patch(&frame, &prepared)?;
//!         }
//!     }
//!     Ok(std::ptr::null_mut())
//! })?;
//! let sum = engine.call("sum", &[100])?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate also hosts the command line ([`cli`]), whose `run` verb drives
//! [`uppercut_core::Engine`] and installs [`Osr`] for `--osr` and `--osr-specialize`.

mod arch;
pub mod cli;
mod compiler;
mod discovery;
mod eager;
mod error;
mod frames;
pub mod log;
pub mod policy;
mod runtime;
mod transfer;

pub use discovery::{DiscoveredFrame, ShadowDiscovery};
pub use error::{Error, Result};
pub use frames::Frame;
pub use runtime::{
    CONTINUATION_CACHE, ContinuationKind, Cx, MAX_EVENTS, Osr, OsrEvent, OsrOptions, OsrStats,
    TransferMode, VersionSpec,
};
pub use transfer::{KEEPALIVE_CALLBACK, PassReport, Prepared, SCRUB_BYTE, Target, Transfers};
