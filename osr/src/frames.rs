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
//! The walk trusts only what it can check: every word it reads lies between the current
//! stack pointer and the top of this thread's stack, frame pointers are non-null, 16-aligned and
//! strictly grow, and it stops at the first return address that is neither JIT code nor one of
//! the transfer thunks (host frames have no frame pointers).

use std::cell::Cell;
use std::sync::Arc;

use uppercut_core::{GuestState, SiteId, VersionInfo};

use crate::arch::{
    FP_ALIGN, NEXT_OLDER_FP_FROM_FP_OFFSET, NEXT_OLDER_RA_FROM_FP_OFFSET,
    NEXT_OLDER_SP_FROM_FP_OFFSET, RA_SLOT_BELOW_SP,
};

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
}

/// A frame as read from the stack, before anyone looked at what its return address means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawFrame {
    /// The stack word holding the return address.
    pub(crate) slot: u64,
    /// What that word holds now: a return address into JIT code, or a thunk.
    pub(crate) word: u64,
    /// `rsp` at the return address.
    pub(crate) sp: u64,
    /// `rbp`.
    pub(crate) fp: u64,
}

/// The part of this thread's stack that holds live frames older than the caller's: from the
/// caller's stack pointer to the top of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackWindow {
    low: u64,
    high: u64,
}

impl StackWindow {
    /// The window above the calling function's frame. `None` when the thread's stack bounds
    /// are unknown.
    #[inline(always)]
    pub(crate) fn current() -> Option<StackWindow> {
        let marker = 0u8;
        let low = std::hint::black_box(&marker) as *const u8 as u64;
        let high = stack_top()?;
        (low < high).then_some(StackWindow { low, high })
    }

    /// Whether `len` bytes at `address` lie inside the window.
    pub(crate) fn contains(&self, address: u64, len: u64) -> bool {
        address > self.low && address.checked_add(len).is_some_and(|end| end <= self.high)
    }

    /// The aligned word at `address`, if it lies inside the window.
    pub(crate) fn read(&self, address: u64) -> Option<u64> {
        if address % 8 != 0 || !self.contains(address, 8) {
            return None;
        }
        // SAFETY: the word lies in this thread's stack above the current frame (checked), which
        // is mapped and holds live frames; reading it races with nothing (only this thread
        // writes its stack, and it is here).
        Some(unsafe { std::ptr::read_volatile(address as *const u64) })
    }

    /// Writes the aligned word at `address`, if it lies inside the window.
    ///
    /// # Safety
    ///
    /// The word must belong to a live frame older than the caller's and be one the frame's
    /// code does not rely on any more than a return-address slot is relied on (the callee's
    /// `ret` reads it).
    pub(crate) unsafe fn write(&self, address: u64, value: u64) -> bool {
        if address % 8 != 0 || !self.contains(address, 8) {
            return false;
        }
        // SAFETY: inside this thread's live stack (checked); the caller vouches for the word.
        unsafe { std::ptr::write_volatile(address as *mut u64, value) };
        true
    }
}

thread_local! {
    /// The top (highest address) of this thread's stack, 0 until asked.
    static STACK_TOP: Cell<u64> = const { Cell::new(0) };
}

/// Asks this thread's stack bounds now, so that its first walk does not. On the main thread
/// that costs a read of `/proc/self/maps` (hundreds of microseconds).
pub(crate) fn prime_stack_bounds() {
    let _ = stack_top();
}

/// The highest address of this thread's stack, asked once per thread.
fn stack_top() -> Option<u64> {
    let cached = STACK_TOP.with(Cell::get);
    if cached != 0 {
        return Some(cached);
    }
    let top = query_stack_top()?;
    STACK_TOP.with(|t| t.set(top));
    Some(top)
}

fn query_stack_top() -> Option<u64> {
    uppercut_core::stack_top()
}

/// The innermost JIT frame of a hypercall: the one that called the trampoline.
pub(crate) fn innermost(window: &StackWindow, state: &GuestState) -> Option<RawFrame> {
    let sp = state.rsp;
    let slot = sp.checked_sub(RA_SLOT_BELOW_SP)?;
    let word = window.read(slot)?;
    let frame = RawFrame {
        slot,
        word,
        sp,
        fp: state.rbp,
    };
    well_formed(window, &frame).then_some(frame)
}

/// The next older frame, read through `frame`'s frame pointer; `None` when the chain does not
/// go on sensibly (the caller then stops the walk).
pub(crate) fn older(window: &StackWindow, frame: &RawFrame) -> Option<RawFrame> {
    let fp = window.read(frame.fp + NEXT_OLDER_FP_FROM_FP_OFFSET)?;
    let slot = frame.fp + NEXT_OLDER_RA_FROM_FP_OFFSET;
    let word = window.read(slot)?;
    let next = RawFrame {
        slot,
        word,
        sp: frame.fp + NEXT_OLDER_SP_FROM_FP_OFFSET,
        fp,
    };
    (fp > frame.fp && well_formed(window, &next)).then_some(next)
}

/// A frame pointer that can be a frame's: non-null, aligned, at or above the frame's stack
/// pointer, with its two words inside the window.
fn well_formed(window: &StackWindow, frame: &RawFrame) -> bool {
    frame.fp != 0
        && frame.fp % FP_ALIGN == 0
        && frame.fp >= frame.sp
        && window.contains(frame.fp, NEXT_OLDER_SP_FROM_FP_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_top_is_above_us() {
        let window = StackWindow::current().expect("stack bounds");
        let local = 7u64;
        let here = &local as *const u64 as u64;
        // Our own frame is below the window's low end only when inlined into `current`'s
        // caller frame; either way the top is above it.
        assert!(stack_top().unwrap() > here);
        assert!(!window.contains(0, 8));
        assert!(!window.contains(u64::MAX - 4, 8));
        assert_eq!(window.read(stack_top().unwrap()), None);
    }

    #[test]
    fn frames_are_followed_through_frame_pointers() {
        // A fake chain in a buffer on this stack, older than the walker's frame.
        #[repr(C, align(16))]
        struct Fake([u64; 16]);
        let mut fake = Fake([0; 16]);
        let base = fake.0.as_mut_ptr() as u64;
        // frame 0: sp = base + 16, fp = base + 32; [fp] = base + 64, [fp + 8] = 0xAAA
        fake.0[1] = 0x111; // the innermost return address, at sp - 8
        fake.0[4] = base + 64;
        fake.0[5] = 0xAAA;
        fake.0[8] = base + 32; // going down: refused
        fake.0[9] = 0xBBB;
        let state = GuestState {
            rsp: base + 16,
            rbp: base + 32,
            return_address: 0x111,
        };
        let window = StackWindow {
            low: base - 8,
            high: base + 16 * 8,
        };
        let f0 = innermost(&window, &state).unwrap();
        assert_eq!(
            f0,
            RawFrame {
                slot: base + 8,
                word: 0x111,
                sp: base + 16,
                fp: base + 32
            }
        );
        let f1 = older(&window, &f0).unwrap();
        assert_eq!(
            f1,
            RawFrame {
                slot: base + 40,
                word: 0xAAA,
                sp: base + 48,
                fp: base + 64
            }
        );
        assert_eq!(older(&window, &f1), None, "frame pointers must grow");
        std::hint::black_box(&mut fake);
    }
}
