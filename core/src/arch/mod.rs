//! The few machine-level primitives, per architecture.
//!
//! Each architecture provides: the two hypercall entry trampolines (`PerformCustomCallback` and
//! its constant-name fast path), and `guest_call`/`guest_abort`, the entry into guest code that
//! a failing hypercall can return to without unwinding through JIT frames.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub(crate) use x86_64::*;

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "Uppercut's JIT engine supports x86-64 only: the hypercall trampolines and the frame transfer are written for it"
);
