//! Regions: whole pages of code or data, what they hold, and what can be asked of them in any
//! state. Changing their protection is in `state`, changing their bytes in `patch`, giving them
//! back in `free`.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use super::arena::Shared;
use super::{CodeArena, CodeMemoryError, RegionState};
use crate::sys::Pages;

/// What a region holds, which decides the states it may enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegionKind {
    /// Machine code: written, then published executable.
    Code,
    /// Data: read-write, or frozen read-only (RuntimeDyld's read-only data sections).
    Data,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::Code => "code",
            RegionKind::Data => "data",
        })
    }
}

/// Whole pages of code or data owned by one holder, freed when dropped.
///
/// See the [module documentation](super) for the state machine. Every operation that needs a
/// particular state checks it and fails with [`CodeMemoryError::WrongState`] or
/// [`CodeMemoryError::WrongKind`] rather than guessing.
///
/// **Patching and running threads.** While a code region is in the scoped writable step of
/// [`with_writable`](Self::with_writable), [`patch`](Self::patch) or
/// [`replace`](Self::replace), its pages are not executable: a thread executing them at that
/// moment faults. Use those only while no thread can be running in the region (for example
/// while the guest is stopped in a hypercall), and [`patch_live`](Self::patch_live) otherwise:
/// it changes one aligned 8-byte word with one atomic store while the region stays executable.
///
/// **Reading while guest code runs.** [`as_slice`](Self::as_slice) borrows the bytes as
/// immutable; guest code that stores into a read-write data region while such a borrow is live
/// is a data race. Read guest-written data only while the guest cannot run (running JIT code is
/// `unsafe` for this reason among others).
///
/// **Instruction cache.** x86-64 keeps instruction fetch coherent with stores, and the
/// `mprotect` that publishes a region is a serialising system call, so no explicit cache flush is
/// done; on an architecture without that guarantee, [`publish`](Self::publish) and the end of
/// the scoped writable step are where an instruction-cache flush would go.
pub struct CodeRegion {
    /// Always `Some` until dropped.
    pub(super) pages: Option<Pages>,
    pub(super) len: usize,
    pub(super) kind: RegionKind,
    pub(super) state: RegionState,
    pub(super) arena: Arc<Shared>,
}

impl CodeRegion {
    pub(super) fn pages(&self) -> &Pages {
        self.pages.as_ref().expect("a live region has its pages")
    }

    pub(super) fn pages_mut(&mut self) -> &mut Pages {
        self.pages.as_mut().expect("a live region has its pages")
    }

    /// The region's first address.
    pub fn addr(&self) -> usize {
        self.pages().addr()
    }

    /// The region's first address as a pointer (for an entry point, or to hand to RuntimeDyld).
    pub fn as_ptr(&self) -> *const u8 {
        self.addr() as *const u8
    }

    /// The region's first address as a mutable pointer, for RuntimeDyld to write the section into.
    ///
    /// Writing through it is only valid while the region is [`RegionState::Writable`] and no
    /// slice borrowed from the region is live; the pages fault otherwise.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.addr() as *mut u8
    }

    /// The size that was requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the requested size was zero (the region still has one page of its own).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size actually mapped: [`len`](Self::len) rounded up to whole pages (at least one).
    pub fn mapped_len(&self) -> usize {
        self.pages().len()
    }

    /// The requested bytes' address range, `addr()..addr() + len()`.
    pub fn range(&self) -> Range<usize> {
        self.addr()..self.addr() + self.len
    }

    /// Whether `addr` lies in the region's requested bytes.
    pub fn contains(&self, addr: usize) -> bool {
        self.range().contains(&addr)
    }

    /// What the region holds.
    pub fn kind(&self) -> RegionKind {
        self.kind
    }

    /// The region's protection state.
    pub fn state(&self) -> RegionState {
        self.state
    }

    /// A handle to the arena the region belongs to.
    pub fn arena(&self) -> CodeArena {
        CodeArena {
            shared: Arc::clone(&self.arena),
        }
    }

    /// The region's bytes (readable in every state).
    pub fn as_slice(&self) -> &[u8] {
        match self.pages().as_slice() {
            Some(bytes) => &bytes[..self.len],
            None => &[],
        }
    }

    /// The region's bytes, mutably: only while [`RegionState::Writable`], before publication or
    /// for read-write data. To change published code, use [`with_writable`](Self::with_writable).
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8], CodeMemoryError> {
        self.expect_state(RegionState::Writable)?;
        let len = self.len;
        let addr = self.addr();
        match self.pages_mut().as_mut_slice() {
            Some(bytes) => Ok(&mut bytes[..len]),
            None => Err(CodeMemoryError::WrongState {
                addr,
                state: RegionState::Writable,
                expected: RegionState::Writable,
            }),
        }
    }

    pub(super) fn expect_state(&self, expected: RegionState) -> Result<(), CodeMemoryError> {
        if self.state == expected {
            Ok(())
        } else {
            Err(CodeMemoryError::WrongState {
                addr: self.addr(),
                state: self.state,
                expected,
            })
        }
    }

    pub(super) fn expect_kind(
        &self,
        kind: RegionKind,
        operation: &'static str,
    ) -> Result<(), CodeMemoryError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(CodeMemoryError::WrongKind {
                addr: self.addr(),
                kind: self.kind,
                operation,
            })
        }
    }
}

impl fmt::Debug for CodeRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeRegion")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .field("kind", &self.kind)
            .field("state", &self.state)
            .finish()
    }
}
