//! The machine-level half of frame transfer, per architecture.
//!
//! Each architecture provides the thunk a patched return address points at and the transfer
//! stub with its Rust half; the frame layout and the shape of the call-frame information a
//! transfer accepts are the engine's (`uppercut_core::frames::layout`). The engine, and with it
//! this crate, supports x86-64 only.

mod x86_64;
pub(crate) use x86_64::*;
