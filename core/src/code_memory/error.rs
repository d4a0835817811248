//! Errors: why a code-memory operation failed.

use std::fmt;
use std::io;
use std::ops::Range;

#[cfg(doc)]
use super::{ArenaConfig, OutsidePolicy};
use super::{MAX_SPAN, RegionKind, RegionState};

/// Why a code-memory operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CodeMemoryError {
    /// The arena size is zero, not a multiple of the page size, or larger than [`MAX_SPAN`].
    InvalidArenaSize {
        /// The size asked for.
        size: usize,
        /// The page size it must be a multiple of.
        page_size: usize,
    },
    /// The kernel refused to reserve the arena's address range.
    Reserve {
        /// Size of the reservation.
        size: usize,
        /// The address asked for or hinted at, if any.
        addr: Option<usize>,
        /// What the kernel said.
        source: io::Error,
    },
    /// The shared-memory file behind a dual-mapped arena could not be created (too many open
    /// files, or a `vm.memfd_noexec` setting that forbids executable memfds);
    /// [`ArenaConfig::dual_mapping`] turns dual mapping off.
    SharedMemory {
        /// Size of the file.
        size: usize,
        /// What the kernel said.
        source: io::Error,
    },
    /// An alignment that is not a power of two.
    InvalidAlignment {
        /// The alignment asked for.
        align: usize,
    },
    /// A size that overflows once rounded up to whole pages or added to its address.
    SizeOverflow {
        /// The requested address (0 when none was requested).
        addr: usize,
        /// The requested size.
        len: usize,
    },
    /// A requested address that is not aligned to the page size or to the requested alignment.
    Misaligned {
        /// The requested address.
        addr: usize,
        /// The alignment it lacks.
        required: usize,
    },
    /// No free block of the arena can hold the request.
    ArenaExhausted {
        /// Size asked for, rounded up to pages.
        len: usize,
        /// Alignment asked for (at least the page size).
        align: usize,
        /// The largest free block left.
        largest_free: usize,
    },
    /// The requested range overlaps a live region of this arena.
    Overlaps {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
        /// The range of the region in the way.
        existing: Range<usize>,
    },
    /// The requested range lies partly inside the arena and partly outside it.
    StraddlesArena {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
        /// The arena's reserved range.
        arena: Range<usize>,
    },
    /// The requested range is outside the arena, and the arena's [`OutsidePolicy`] is
    /// [`OutsidePolicy::Refuse`].
    OutsideArena {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
        /// The arena's reserved range.
        arena: Range<usize>,
    },
    /// The requested range is outside the arena and so far from it that the engine's code memory
    /// would span more than [`MAX_SPAN`] (policy [`OutsidePolicy::WithinReach`]).
    OutOfReach {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
        /// The span the engine's code memory would cover.
        span: Range<usize>,
    },
    /// Outside the arena, something else (another mapping of the process) already occupies
    /// part of the requested range.
    AddressInUse {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
    },
    /// Outside the arena, the kernel refused to map the requested range for another reason
    /// (for example an address beyond the user address space).
    KernelRefused {
        /// The requested address.
        addr: usize,
        /// The requested size, rounded up to pages.
        len: usize,
        /// What the kernel said.
        source: io::Error,
    },
    /// The requested range, once its start is aligned, is smaller than the request.
    RangeTooSmall {
        /// The requested range.
        range: Range<usize>,
        /// The requested size, rounded up to pages.
        len: usize,
    },
    /// No free space of the requested size was found in the requested range.
    NoSpaceInRange {
        /// The requested range.
        range: Range<usize>,
        /// The requested size, rounded up to pages.
        len: usize,
    },
    /// Changing the protection of a region failed.
    Protect {
        /// The region's address.
        addr: usize,
        /// The region's mapped size.
        len: usize,
        /// The state the region was to enter.
        to: RegionState,
        /// What the kernel said.
        source: io::Error,
    },
    /// The operation is not allowed in the region's current state.
    WrongState {
        /// The region's address.
        addr: usize,
        /// The state it is in.
        state: RegionState,
        /// The state the operation needs.
        expected: RegionState,
    },
    /// The operation does not apply to this kind of region (publishing data, freezing code).
    WrongKind {
        /// The region's address.
        addr: usize,
        /// The region's kind.
        kind: RegionKind,
        /// The operation attempted.
        operation: &'static str,
    },
    /// A patch that does not lie entirely inside the region.
    PatchOutOfBounds {
        /// The region's address.
        addr: usize,
        /// Offset of the patch in the region.
        offset: usize,
        /// Length of the patch.
        len: usize,
        /// The region's length.
        region_len: usize,
    },
    /// A replacement whose new bytes are not exactly as long as the bytes they replace.
    PatchLengthMismatch {
        /// The region's address.
        addr: usize,
        /// Offset of the patch in the region.
        offset: usize,
        /// Length of the bytes expected at the patch site.
        expected: usize,
        /// Length of the new bytes.
        actual: usize,
    },
    /// A replacement whose expected bytes are not the ones at the patch site; nothing was written.
    PatchContentsMismatch {
        /// The region's address.
        addr: usize,
        /// Offset of the patch in the region.
        offset: usize,
        /// Length of the patch.
        len: usize,
    },
    /// A live patch whose bytes do not lie within one naturally aligned 8-byte word (or that is
    /// longer than 8 bytes): it cannot be written with one atomic store.
    PatchNotAtomic {
        /// The region's address.
        addr: usize,
        /// Offset of the patch in the region.
        offset: usize,
        /// Length of the patch.
        len: usize,
    },
    /// A live patch of a region that has no second, writable view: it lies outside the arena,
    /// or the arena is not dual-mapped ([`ArenaConfig::dual_mapping`], or a forked child that
    /// could not get shared memory of its own).
    NotAliasable {
        /// The region's address.
        addr: usize,
    },
    /// The kernel refused to map the writable alias of a page for a live patch.
    Alias {
        /// The address of the word being patched.
        addr: usize,
        /// What the kernel said.
        source: io::Error,
    },
    /// A query of the process's memory (`/proc/self/maps`, `mincore`) failed.
    System {
        /// What was being done.
        what: &'static str,
        /// What the system said.
        source: io::Error,
    },
}

pub(super) struct Hex<'a>(pub(super) &'a Range<usize>);

/// `addr..addr + len`, saturating (an error value may come from anywhere).
fn addr_range(addr: usize, len: usize) -> Range<usize> {
    addr..addr.saturating_add(len)
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.0.start, self.0.end)
    }
}

impl fmt::Display for CodeMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use CodeMemoryError::*;
        match self {
            InvalidArenaSize { size, page_size } => write!(
                f,
                "invalid arena size {size:#x}: must be a non-zero multiple of the page size \
                 {page_size:#x} and at most {MAX_SPAN:#x}"
            ),
            Reserve {
                size,
                addr: Some(addr),
                source,
            } => write!(
                f,
                "cannot reserve {size:#x} bytes of address space at {addr:#x}: {source}"
            ),
            Reserve {
                size,
                addr: None,
                source,
            } => write!(
                f,
                "cannot reserve {size:#x} bytes of address space: {source}"
            ),
            SharedMemory { size, source } => write!(
                f,
                "cannot create the {size:#x}-byte shared memory behind a dual-mapped code arena: \
                 {source}"
            ),
            InvalidAlignment { align } => {
                write!(f, "alignment {align:#x} is not a power of two")
            }
            SizeOverflow { addr, len } => {
                write!(f, "size {len:#x} at {addr:#x} overflows the address space")
            }
            Misaligned { addr, required } => {
                write!(f, "address {addr:#x} is not aligned to {required:#x}")
            }
            ArenaExhausted {
                len,
                align,
                largest_free,
            } => write!(
                f,
                "code arena exhausted: no free block for {len:#x} bytes aligned to {align:#x} \
                 (largest free block {largest_free:#x})"
            ),
            Overlaps {
                addr,
                len,
                existing,
            } => write!(
                f,
                "{} overlaps the live region {}",
                Hex(&addr_range(*addr, *len)),
                Hex(existing)
            ),
            StraddlesArena { addr, len, arena } => write!(
                f,
                "{} lies partly inside and partly outside the code arena {}",
                Hex(&addr_range(*addr, *len)),
                Hex(arena)
            ),
            OutsideArena { addr, len, arena } => write!(
                f,
                "{} is outside the code arena {} and the arena places nothing outside itself",
                Hex(&addr_range(*addr, *len)),
                Hex(arena)
            ),
            OutOfReach { addr, len, span } => write!(
                f,
                "{} is out of reach: code memory would span {} ({:#x} bytes, more than {MAX_SPAN:#x})",
                Hex(&addr_range(*addr, *len)),
                Hex(span),
                span.end - span.start
            ),
            AddressInUse { addr, len } => write!(
                f,
                "{} is already in use by another mapping of the process",
                Hex(&addr_range(*addr, *len))
            ),
            KernelRefused { addr, len, source } => write!(
                f,
                "the kernel refused to map {}: {source}",
                Hex(&addr_range(*addr, *len))
            ),
            RangeTooSmall { range, len } => {
                write!(f, "range {} is too small for {len:#x} bytes", Hex(range))
            }
            NoSpaceInRange { range, len } => write!(
                f,
                "no free space for {len:#x} bytes in range {}",
                Hex(range)
            ),
            Protect {
                addr,
                len,
                to,
                source,
            } => write!(
                f,
                "cannot make region {} {to}: {source}",
                Hex(&addr_range(*addr, *len))
            ),
            WrongState {
                addr,
                state,
                expected,
            } => write!(
                f,
                "region at {addr:#x} is {state}, the operation needs it {expected}"
            ),
            WrongKind {
                addr,
                kind,
                operation,
            } => write!(f, "cannot {operation} the {kind} region at {addr:#x}"),
            PatchOutOfBounds {
                addr,
                offset,
                len,
                region_len,
            } => write!(
                f,
                "patch of {len} bytes at offset {offset:#x} is outside the region at {addr:#x} \
                 ({region_len:#x} bytes)"
            ),
            PatchLengthMismatch {
                addr,
                offset,
                expected,
                actual,
            } => write!(
                f,
                "patch at {addr:#x}+{offset:#x} replaces {expected} bytes with {actual}"
            ),
            PatchContentsMismatch { addr, offset, len } => write!(
                f,
                "the {len} bytes at {addr:#x}+{offset:#x} are not the ones the patch expects"
            ),
            PatchNotAtomic { addr, offset, len } => write!(
                f,
                "live patch of {len} bytes at {addr:#x}+{offset:#x} does not lie within one \
                 aligned 8-byte word: it cannot be written with one atomic store"
            ),
            NotAliasable { addr } => write!(
                f,
                "the region at {addr:#x} has no writable alias (it is not in a dual-mapped \
                 arena): it cannot be patched live"
            ),
            Alias { addr, source } => write!(
                f,
                "cannot map a writable alias of the page at {addr:#x}: {source}"
            ),
            System { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for CodeMemoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CodeMemoryError::Reserve { source, .. }
            | CodeMemoryError::SharedMemory { source, .. }
            | CodeMemoryError::Alias { source, .. }
            | CodeMemoryError::KernelRefused { source, .. }
            | CodeMemoryError::Protect { source, .. }
            | CodeMemoryError::System { source, .. } => Some(source),
            _ => None,
        }
    }
}
