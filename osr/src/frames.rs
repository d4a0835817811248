//! Walking this thread's JIT frames from a running hypercall, along the frame-pointer chain.
//!
//! Every JIT frame keeps a frame pointer (the engine compiles with `"frame-pointer"="all"`), so
//! from the guest state a hypercall trampoline records, the frames chain up:
//!
//! ```text
//!   higher addresses
//!   │ ...                           │
//!   │ return address into frame 2   │ <- slot of frame 2 = fp1 + 8
//!   │ fp2 (frame 2's rbp)           │ <- fp1
//!   │ frame 1's locals, spills      │
//!   ├───────────────────────────────┤ <- sp1 = fp0 + 16 (frame 1's rsp at its return address)
//!   │ return address into frame 1   │ <- slot of frame 1 = fp0 + 8
//!   │ fp1                           │ <- fp0
//!   │ frame 0's locals, spills      │
//!   ├───────────────────────────────┤ <- sp0 = GuestState::rsp
//!   │ return address into frame 0   │ <- slot of frame 0 = sp0 - 8 (the trampoline's)
//!   │ trampoline, host frames ...   │
//! ```
//!
//! The walk is the engine's [`FrameCursor`](uppercut_core::frames::FrameCursor) over its code
//! map, reading patched slots through this crate's thunks: it trusts only what it can check
//! (every word it reads lies between the current stack pointer and the top of this thread's
//! stack, frame pointers are non-null, 16-aligned and strictly grow) and stops at the first
//! return address that is neither JIT code nor one of the transfer thunks (host frames have no
//! frame pointers).

use std::sync::Arc;

use uppercut_core::frames::{CursorFrame, SavedAt};
use uppercut_core::{SiteId, VersionInfo};

/// One JIT frame of this thread, suspended at a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Where the frame is suspended: the return address of its call, the original one even when
    /// its slot already points at a transfer thunk.
    pub return_address: u64,
    /// The stack word that holds the return address (in the callee's frame, or the hypercall
    /// trampoline's for the innermost frame): what [`Transfers::patch`](crate::Transfers::patch)
    /// writes.
    pub return_address_slot: u64,
    /// The frame's `rsp` at its return address (`return_address_slot + 8`).
    pub stack_pointer: u64,
    /// The frame's `rbp`.
    pub frame_pointer: u64,
    /// The function version the return address lies in (shared by the frames of one walk that
    /// run the same version).
    pub version: Arc<VersionInfo>,
    /// The site of the record at the return address (its deopt location 0); `None` when there
    /// is no record there or it is not an OSR site.
    pub site: Option<SiteId>,
    /// `Some(continuation)` when the frame's return address already points at a transfer thunk:
    /// it moves into that continuation when its callee returns.
    pub pending: Option<u64>,
    /// Where the frame's callee-saved registers (`rbx`, `r12`-`r15`) are as of its return
    /// address, as the walk found them: a value a record puts in one is read there.
    pub saved: [SavedAt; 5],
}

impl Frame {
    /// The frame the cursor found; `pending` the continuation its slot's thunk leads to.
    pub(crate) fn of(frame: &CursorFrame<'_>, pending: Option<u64>) -> Frame {
        Frame {
            return_address: frame.return_address,
            return_address_slot: frame.slot,
            stack_pointer: frame.sp,
            frame_pointer: frame.fp,
            version: Arc::clone(frame.version),
            site: frame.row.and_then(|r| r.site),
            pending,
            saved: frame.saved,
        }
    }
}
