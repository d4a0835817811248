//! On-stack replacement for LLVM-JITted code, and the `uppercut` command line.
//!
//! Frame transfer: from inside a hypercall, [`Transfers::walk`] lists this thread's JIT frames,
//! [`Transfers::prepare`] checks a frame's stack-map record and call-frame information against
//! Uppercut's OSR-site convention (see [`Transfers`] and [`Target`]), and
//! [`Transfers::patch`] points its return address at a thunk: when its callee returns, the frame
//! moves into the site's continuation, which returns to the frame's caller.
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
//! The OSR policies (instrumentation, continuations built from IR, tier-up, deoptimisation)
//! build on this; the crate also hosts the command line, whose `run` verb drives
//! [`uppercut_core::Engine`].

mod arch;
pub mod cli;
mod error;
mod frames;
pub mod policy;
mod runtime;
mod transfer;

pub use error::{Error, Result};
pub use frames::Frame;
pub use runtime::{Cx, MAX_EVENTS, Osr, OsrEvent, OsrStats, VersionSpec};
pub use transfer::{KEEPALIVE_CALLBACK, Prepared, Target, Transfers};
