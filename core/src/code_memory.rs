//! Code memory: one arena of address space per engine, page-granular regions carved out of it,
//! and a W^X state machine per region.
//!
//! MCJIT asks the engine's memory manager for a code section and data sections per compile unit;
//! each becomes a [`CodeRegion`] allocated from a [`CodeArena`]. The arena reserves one
//! contiguous range of address space up front (1 GiB by default, at most [`MAX_SPAN`]), so every
//! region of an engine lies within ±2 GiB of every other: MCJIT's PC-relative relocations between
//! a unit's code and data resolve, and a `jmp rel32` written over an old function's entry reaches
//! its new version.
//!
//! ```text
//!  arena: one reservation, PROT_NONE (no memory) until a region is allocated; by default a
//!  MAP_SHARED view of a memfd of the arena's size (offset = address - range.start)
//!
//!  range.start                                                               range.end
//!  ├────────┬────────┬──────────┬────────┬─────────────────────────────────────────┤
//!  │ code   │ data   │ free     │ code   │ free, never touched                     │
//!  │ r-x    │ rw-    │ ---      │ rw-    │ ---                                     │
//!  └───┬────┴────────┴──────────┴────────┴─────────────────────────────────────────┘
//!  ◄───┼──────────── high water ─────────►
//!      │ patch_live: the word's page mapped again, rw-, elsewhere (the alias), for
//!      ▼ one atomic 8-byte store, then unmapped; the code stays r-x throughout
//!    ┌─────┐
//!    │ rw- │  alias: same memfd page, exists only during the store
//!    └─────┘
//!
//!  free list: coalesced blocks, indexed by address (merging neighbours on free)
//!             and by (size, address) (best fit, lowest address first)
//!  a region:  whole pages; committed (made accessible) when allocated; on free made
//!             PROT_NONE again and its memory released (a hole punched in the memfd,
//!             or MADV_DONTNEED for private memory), then merged with its free
//!             neighbours, so endless recompilation stays bounded
//! ```
//!
//! A region is a state machine. It is never writable and executable at once: the system-call
//! layer below this module cannot even express that protection.
//!
//! ```text
//!                     allocate
//!                        │
//!                        ▼
//!          ┌───── Writable (rw-) ──────┐
//!   code:  │ publish()                 │ make_read_only()  :data
//!          ▼                           ▼
//!   Executable (r-x)             ReadOnly (r--)
//!       │     ▲                      │     ▲
//!       ▼     │ with_writable(f),    ▼     │   the scoped step: rw- while f runs,
//!   (Writable)│ patch, replace   (Writable)│   back to the previous state after it,
//!       └─────┘                      └─────┘   even if f fails or panics
//!
//!   patch_live(offset, bytes), in any state: state and protection stay as they are (r-x stays
//!   r-x); at most 8 bytes within one aligned word, one atomic store through a temporary alias
//!   drop, in any state: ---, memory released, pages back to the free list
//! ```
//!
//! Two ways to change published code, then: the scoped writable step, during which the whole
//! region is not executable (so no thread may be running it), and
//! [`CodeRegion::patch_live`], which changes at most one aligned 8-byte word while other
//! threads keep running the region. The second needs the arena's dual mapping
//! ([`ArenaConfig::dual_mapping`], on by default): the arena is a shared mapping of a memfd,
//! so a second, writable view of any of its pages can be made for a moment. No mapping is ever
//! writable and executable; what the dual mapping gives up is that published code has no
//! writable view at all, and it gives that up only for the length of one store. A forked child
//! gets its own copy of every dual-mapped arena before `fork` returns in it (see the `sys`
//! module), so it never writes its parent's code. Regions placed outside the arena are private
//! anonymous memory and cannot be patched live.
//!
//! A caller may place a region at a chosen address or within a range ([`Placement`]): inside the
//! arena it is carved out if free; outside the arena the kernel is asked for exactly that address
//! (`MAP_FIXED_NOREPLACE`, never replacing anything), subject to the arena's [`OutsidePolicy`].
//! Every refusal is a typed [`CodeMemoryError`] that says why.
//!
//! Ownership: a [`CodeRegion`] owns its pages and frees them when dropped; it holds a reference
//! to the arena's shared state, so the arena's reservation outlives every region, whichever is
//! dropped first. Regions are `Send` and `Sync`; a [`CodeArena`] is a cheap, cloneable handle.
//!
//! ```
//! use uppercut_core::code_memory::{CodeArena, RegionRequest};
//!
//! let arena = CodeArena::new()?;
//! let mut code = arena.allocate(RegionRequest::code(6).align(16))?;
//! code.as_mut_slice()?.copy_from_slice(&[0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3]); // mov eax, 42; ret
//! code.publish()?; // r-x from now on
//! code.patch(1, &[7, 0, 0, 0])?; // rw- for the copy, then r-x again
//! assert_eq!(code.as_slice(), &[0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3]);
//! assert_eq!(arena.stats().live_regions, 1);
//! drop(code);
//! assert_eq!(arena.stats().committed_bytes, 0);
//! # Ok::<(), uppercut_core::code_memory::CodeMemoryError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use crate::maps::{
    Mapping, Permissions, mapping_containing, process_mappings, writable_executable_mappings,
};
use crate::sys::{self, Backing, Pages, Prot, SharedFile};

/// Default size of an arena's reservation: 1 GiB of address space (no memory until used).
pub const DEFAULT_ARENA_SIZE: usize = 1 << 30;

/// The largest distance, in bytes, between the lowest and the highest address of an engine's
/// code memory for every byte of it to reach every other with a 32-bit signed displacement
/// (`call`/`jmp rel32`, RIP-relative data accesses): 2 GiB. An arena is at most this large, and
/// with [`OutsidePolicy::WithinReach`] regions placed outside it keep the whole span within it.
pub const MAX_SPAN: usize = 1 << 31;

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

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

struct Hex<'a>(&'a Range<usize>);

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

// ---------------------------------------------------------------------------------------------
// Configuration and requests
// ---------------------------------------------------------------------------------------------

/// Where an arena's reservation goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArenaPlacement {
    /// Wherever the kernel likes.
    #[default]
    Anywhere,
    /// Near this address if the kernel agrees (a hint; the kernel may place it elsewhere).
    Near(usize),
    /// Exactly at this page-aligned address, or fail (never replacing another mapping).
    At(usize),
}

/// What an arena does with a request for a range outside its reservation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutsidePolicy {
    /// Refuse it ([`CodeMemoryError::OutsideArena`]).
    Refuse,
    /// Map it if the engine's code memory (the arena and every live region) then still spans at
    /// most [`MAX_SPAN`], so all of it stays within rel32 reach; otherwise
    /// [`CodeMemoryError::OutOfReach`].
    #[default]
    WithinReach,
    /// Map it wherever it is. Such a region may be out of rel32 reach of the rest.
    Anywhere,
}

/// How to build a [`CodeArena`].
///
/// ```
/// use uppercut_core::code_memory::{ArenaConfig, CodeArena, OutsidePolicy};
///
/// let arena = CodeArena::with_config(
///     ArenaConfig::new().size(64 << 20).outside(OutsidePolicy::Refuse),
/// )?;
/// assert_eq!(arena.range().len(), 64 << 20);
/// # Ok::<(), uppercut_core::code_memory::CodeMemoryError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaConfig {
    size: usize,
    placement: ArenaPlacement,
    outside: OutsidePolicy,
    dual_mapping: bool,
}

impl Default for ArenaConfig {
    fn default() -> Self {
        ArenaConfig {
            size: DEFAULT_ARENA_SIZE,
            placement: ArenaPlacement::Anywhere,
            outside: OutsidePolicy::WithinReach,
            dual_mapping: true,
        }
    }
}

impl ArenaConfig {
    /// The default: [`DEFAULT_ARENA_SIZE`] bytes anywhere, [`OutsidePolicy::WithinReach`],
    /// dual-mapped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Size of the reservation: a non-zero multiple of the page size, at most [`MAX_SPAN`].
    pub fn size(mut self, bytes: usize) -> Self {
        self.size = bytes;
        self
    }

    /// Where the reservation goes.
    pub fn placement(mut self, placement: ArenaPlacement) -> Self {
        self.placement = placement;
        self
    }

    /// What to do with requests for ranges outside the reservation.
    pub fn outside(mut self, policy: OutsidePolicy) -> Self {
        self.outside = policy;
        self
    }

    /// Whether the reservation is backed by shared memory (a memfd) whose pages a second,
    /// temporary, writable mapping can reach, so that published code can be patched while it
    /// stays executable ([`CodeRegion::patch_live`]). On by default; off, the arena is private
    /// anonymous memory, needs no file descriptor, and `patch_live` fails with
    /// [`CodeMemoryError::NotAliasable`].
    pub fn dual_mapping(mut self, on: bool) -> Self {
        self.dual_mapping = on;
        self
    }

    /// Whether [`ArenaConfig::dual_mapping`] is on.
    pub fn is_dual_mapped(&self) -> bool {
        self.dual_mapping
    }
}

/// What a region holds, which decides the states it may enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegionKind {
    /// Machine code: written, then published executable.
    Code,
    /// Data: read-write, or frozen read-only (MCJIT's read-only data sections).
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

/// The protection state of a region. None is both writable and executable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegionState {
    /// `rw-`: being filled (or patched), or read-write data.
    Writable,
    /// `r-x`: published code.
    Executable,
    /// `r--`: frozen data.
    ReadOnly,
}

impl RegionState {
    fn prot(self) -> Prot {
        match self {
            RegionState::Writable => Prot::ReadWrite,
            RegionState::Executable => Prot::ReadExec,
            RegionState::ReadOnly => Prot::Read,
        }
    }
}

impl fmt::Display for RegionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionState::Writable => "writable (rw-)",
            RegionState::Executable => "executable (r-x)",
            RegionState::ReadOnly => "read-only (r--)",
        })
    }
}

/// Where a region goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Anywhere in the arena (best fit, lowest address first).
    #[default]
    Anywhere,
    /// Exactly at this address: inside the arena if that range is free, or outside it if the
    /// kernel grants it and the arena's [`OutsidePolicy`] allows it.
    At(usize),
    /// Anywhere in this range: its part inside the arena first (lowest address first), then the
    /// free address space of the process in its part outside the arena, if the policy allows.
    Within(Range<usize>),
}

/// A request for a region: kind, size, alignment and placement.
///
/// The size is rounded up to whole pages (a zero size gets one page, so every region has an
/// address of its own); alignments up to the page size are always met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionRequest {
    kind: RegionKind,
    len: usize,
    align: usize,
    placement: Placement,
}

impl RegionRequest {
    /// A request for `len` bytes of the given kind, anywhere, page-aligned.
    pub fn new(kind: RegionKind, len: usize) -> Self {
        RegionRequest {
            kind,
            len,
            align: 1,
            placement: Placement::Anywhere,
        }
    }

    /// A request for `len` bytes of code.
    pub fn code(len: usize) -> Self {
        Self::new(RegionKind::Code, len)
    }

    /// A request for `len` bytes of data.
    pub fn data(len: usize) -> Self {
        Self::new(RegionKind::Data, len)
    }

    /// Alignment of the region's start: a power of two (0 means no requirement).
    pub fn align(mut self, align: usize) -> Self {
        self.align = align;
        self
    }

    /// Where the region goes.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }

    /// Exactly at `addr` ([`Placement::At`]).
    pub fn at(self, addr: usize) -> Self {
        self.placement(Placement::At(addr))
    }

    /// Anywhere in `range` ([`Placement::Within`]).
    pub fn within(self, range: Range<usize>) -> Self {
        self.placement(Placement::Within(range))
    }
}

// ---------------------------------------------------------------------------------------------
// The arena
// ---------------------------------------------------------------------------------------------

/// Counters of an arena, from [`CodeArena::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArenaStats {
    /// Address space reserved: the arena plus the regions mapped outside it.
    pub reserved_bytes: usize,
    /// Memory made accessible: the whole pages of every live region.
    pub committed_bytes: usize,
    /// Bytes requested by live regions (before rounding up to pages).
    pub in_use_bytes: usize,
    /// Live regions, inside and outside the arena.
    pub live_regions: usize,
    /// Live regions outside the arena.
    pub outside_regions: usize,
    /// Blocks in the free list (1 when the arena is empty: free blocks are always coalesced).
    pub free_blocks: usize,
    /// Size of the largest free block.
    pub largest_free_block: usize,
    /// Highest offset from the arena's start ever allocated: how much of the arena has been used.
    pub high_water_bytes: usize,
    /// Bytes set aside because giving them back failed (a failed `mprotect`, hole punch or
    /// `madvise`); never reused.
    pub quarantined_bytes: usize,
    /// Regions allocated since the arena was created.
    pub allocations: u64,
    /// Regions freed since the arena was created.
    pub frees: u64,
}

/// One reservation of address space from which an engine's code and data regions are carved.
///
/// A cheap handle: clones share the arena. The reservation is unmapped once the last handle and
/// the last region are gone.
#[derive(Clone)]
pub struct CodeArena {
    shared: Arc<Shared>,
}

struct Shared {
    range: Range<usize>,
    page: usize,
    outside: OutsidePolicy,
    state: Mutex<ArenaState>,
}

#[derive(Default)]
struct ArenaState {
    /// Free blocks of the arena by address; neighbours are always merged.
    free: BTreeMap<usize, Pages>,
    /// The same blocks by (size, address).
    by_size: BTreeSet<(usize, usize)>,
    /// Live regions, inside and outside the arena: address to mapped size.
    live: BTreeMap<usize, usize>,
    /// Pages whose decommit failed: kept out of the free list for good.
    quarantine: Vec<Pages>,
    committed: usize,
    in_use: usize,
    outside_reserved: usize,
    outside_regions: usize,
    high_water: usize,
    allocations: u64,
    frees: u64,
}

fn align_up(x: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

impl ArenaState {
    fn insert_free(&mut self, block: Pages) {
        self.by_size.insert((block.len(), block.addr()));
        self.free.insert(block.addr(), block);
    }

    fn take_free(&mut self, addr: usize) -> Option<Pages> {
        let block = self.free.remove(&addr)?;
        self.by_size.remove(&(block.len(), addr));
        Some(block)
    }

    /// Returns decommitted pages to the free list, merging them with free neighbours.
    fn release(&mut self, mut pages: Pages) {
        let left = self
            .free
            .range(..pages.addr())
            .next_back()
            .filter(|(_, left)| left.end() == pages.addr())
            .map(|(&addr, _)| addr);
        if let Some(mut left) = left.and_then(|addr| self.take_free(addr)) {
            match left.merge(pages) {
                Ok(()) => pages = left,
                Err(back) => {
                    self.insert_free(left);
                    pages = back;
                }
            }
        }
        if let Some(right) = self.take_free(pages.end()) {
            if let Err(right) = pages.merge(right) {
                self.insert_free(right);
            }
        }
        self.insert_free(pages);
    }

    /// Gives back arena pages whose protection may be anything: decommit, then free them, or
    /// set them aside for good if the kernel would not take them back.
    fn retire(&mut self, mut pages: Pages) {
        match pages.decommit() {
            Ok(()) => self.release(pages),
            Err(_) => self.quarantine.push(pages),
        }
    }

    /// Takes `[start, start + len)` out of the free block at `block`, returning the slack on
    /// either side to the free list (its neighbours are live, so there is nothing to merge).
    fn carve(&mut self, block: usize, start: usize, len: usize) -> Option<Pages> {
        let mut pages = self.take_free(block)?;
        if start > pages.addr() {
            let rest = pages.split_off(start - pages.addr());
            self.insert_free(pages);
            pages = rest;
        }
        if pages.len() > len {
            let tail = pages.split_off(len);
            self.insert_free(tail);
        }
        Some(pages)
    }

    /// The live region overlapping `[addr, end)`, if any.
    fn live_overlapping(&self, addr: usize, end: usize) -> Option<Range<usize>> {
        let (&start, &len) = self.live.range(..end).next_back()?;
        (start + len > addr).then_some(start..start + len)
    }

    fn quarantined_overlapping(&self, addr: usize, end: usize) -> Option<Range<usize>> {
        self.quarantine
            .iter()
            .find(|q| q.addr() < end && addr < q.end())
            .map(|q| q.addr()..q.end())
    }

    fn largest_free(&self) -> usize {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ArenaState> {
        // Nothing panics while holding the lock; should it ever, the state is still consistent
        // between the statements that touch it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn in_arena(&self, addr: usize) -> bool {
        self.range.contains(&addr)
    }

    /// The span of the engine's code memory if `[addr, end)` were added to it.
    fn span_with(&self, state: &ArenaState, addr: usize, end: usize) -> Range<usize> {
        let mut lo = self.range.start.min(addr);
        let mut hi = self.range.end.max(end);
        if let Some((&first, _)) = state.live.first_key_value() {
            lo = lo.min(first);
        }
        if let Some((&last, &len)) = state.live.last_key_value() {
            hi = hi.max(last + len);
        }
        lo..hi
    }

    /// Whether the policy lets `[addr, end)`, outside the arena, be mapped.
    fn check_outside(
        &self,
        state: &ArenaState,
        addr: usize,
        end: usize,
    ) -> Result<(), CodeMemoryError> {
        let len = end - addr;
        match self.outside {
            OutsidePolicy::Refuse => Err(CodeMemoryError::OutsideArena {
                addr,
                len,
                arena: self.range.clone(),
            }),
            OutsidePolicy::WithinReach => {
                let span = self.span_with(state, addr, end);
                if span.end - span.start > MAX_SPAN {
                    Err(CodeMemoryError::OutOfReach { addr, len, span })
                } else {
                    Ok(())
                }
            }
            OutsidePolicy::Anywhere => Ok(()),
        }
    }

    fn alloc_anywhere(
        &self,
        state: &mut ArenaState,
        len: usize,
        align: usize,
    ) -> Result<Pages, CodeMemoryError> {
        let found = state.by_size.range((len, 0)..).find_map(|&(size, addr)| {
            let start = align_up(addr, align)?;
            (start.checked_add(len)? <= addr + size).then_some((addr, start))
        });
        found
            .and_then(|(block, start)| state.carve(block, start, len))
            .ok_or(CodeMemoryError::ArenaExhausted {
                len,
                align,
                largest_free: state.largest_free(),
            })
    }

    fn alloc_at(
        &self,
        state: &mut ArenaState,
        addr: usize,
        len: usize,
        align: usize,
    ) -> Result<Pages, CodeMemoryError> {
        if addr % align != 0 {
            return Err(CodeMemoryError::Misaligned {
                addr,
                required: align,
            });
        }
        let end = addr
            .checked_add(len)
            .ok_or(CodeMemoryError::SizeOverflow { addr, len })?;
        if let Some(existing) = state.live_overlapping(addr, end) {
            return Err(CodeMemoryError::Overlaps {
                addr,
                len,
                existing,
            });
        }
        let arena = &self.range;
        if arena.start <= addr && end <= arena.end {
            let block = state
                .free
                .range(..=addr)
                .next_back()
                .filter(|(_, block)| block.end() >= end)
                .map(|(&block, _)| block);
            if let Some(pages) = block.and_then(|block| state.carve(block, addr, len)) {
                return Ok(pages);
            }
            // Neither free nor live: set aside after a failed decommit.
            let existing = state
                .quarantined_overlapping(addr, end)
                .unwrap_or(addr..end);
            return Err(CodeMemoryError::Overlaps {
                addr,
                len,
                existing,
            });
        }
        if addr < arena.end && end > arena.start {
            return Err(CodeMemoryError::StraddlesArena {
                addr,
                len,
                arena: arena.clone(),
            });
        }
        self.check_outside(state, addr, end)?;
        Pages::reserve_at(addr, len).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                CodeMemoryError::AddressInUse { addr, len }
            } else {
                CodeMemoryError::KernelRefused { addr, len, source }
            }
        })
    }

    fn alloc_within(
        &self,
        state: &mut ArenaState,
        range: Range<usize>,
        len: usize,
        align: usize,
    ) -> Result<Pages, CodeMemoryError> {
        let too_small = || CodeMemoryError::RangeTooSmall {
            range: range.clone(),
            len,
        };
        let lo = align_up(range.start, align).ok_or_else(too_small)?;
        let hi = range.end;
        if lo >= hi || hi - lo < len {
            return Err(too_small());
        }

        // The part of the range inside the arena, lowest address first.
        let arena = &self.range;
        let (a_lo, a_hi) = (lo.max(arena.start), hi.min(arena.end));
        if a_lo < a_hi {
            let first = state
                .free
                .range(..=a_lo)
                .next_back()
                .map_or(a_lo, |(&addr, _)| addr);
            let found = state.free.range(first..a_hi).find_map(|(&addr, block)| {
                let start = align_up(block.addr().max(a_lo), align)?;
                (start.checked_add(len)? <= block.end().min(a_hi)).then_some((addr, start))
            });
            if let Some(pages) = found.and_then(|(block, start)| state.carve(block, start, len)) {
                return Ok(pages);
            }
        }

        // The parts outside the arena: the holes between the process's mappings.
        let outside_part = lo < arena.start || hi > arena.end;
        if outside_part && self.outside != OutsidePolicy::Refuse {
            let maps = process_mappings().map_err(|source| CodeMemoryError::System {
                what: "reading /proc/self/maps",
                source,
            })?;
            for gap in gaps(&maps, lo..hi) {
                // The lowest and the highest aligned place in the hole: one of them is the
                // closest to the arena, for the reach check.
                let Some(first) = align_up(gap.start, align) else {
                    continue;
                };
                if first.checked_add(len).is_none_or(|end| end > gap.end) {
                    continue;
                }
                let last = (gap.end - len) & !(align - 1);
                for start in [first, last] {
                    if self.check_outside(state, start, start + len).is_err() {
                        continue;
                    }
                    // A failure here (a racing mapping, an address the kernel will not give)
                    // just moves on to the next place.
                    if let Ok(pages) = Pages::reserve_at(start, len) {
                        return Ok(pages);
                    }
                }
            }
        } else if outside_part && a_lo >= a_hi {
            return Err(CodeMemoryError::OutsideArena {
                addr: lo,
                len,
                arena: arena.clone(),
            });
        }
        Err(CodeMemoryError::NoSpaceInRange { range, len })
    }
}

/// The holes of `range` not covered by any of `maps` (sorted by address).
fn gaps(maps: &[Mapping], range: Range<usize>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut cursor = range.start;
    for m in maps {
        if m.range.end <= cursor {
            continue;
        }
        if m.range.start >= range.end {
            break;
        }
        if m.range.start > cursor {
            out.push(cursor..m.range.start);
        }
        cursor = cursor.max(m.range.end);
    }
    if cursor < range.end {
        out.push(cursor..range.end);
    }
    out
}

impl CodeArena {
    /// Reserves an arena with the default configuration ([`ArenaConfig::new`]).
    pub fn new() -> Result<Self, CodeMemoryError> {
        Self::with_config(ArenaConfig::new())
    }

    /// Reserves an arena as configured.
    pub fn with_config(config: ArenaConfig) -> Result<Self, CodeMemoryError> {
        let page = sys::page_size();
        let size = config.size;
        if size == 0 || size % page != 0 || size > MAX_SPAN {
            return Err(CodeMemoryError::InvalidArenaSize {
                size,
                page_size: page,
            });
        }
        let (addr, exact) = match config.placement {
            ArenaPlacement::Anywhere => (None, false),
            ArenaPlacement::Near(addr) => (Some(addr), false),
            ArenaPlacement::At(addr) => {
                if addr % page != 0 {
                    return Err(CodeMemoryError::Misaligned {
                        addr,
                        required: page,
                    });
                }
                (Some(addr), true)
            }
        };
        let reserved = if config.dual_mapping {
            let file = SharedFile::new(size)
                .map_err(|source| CodeMemoryError::SharedMemory { size, source })?;
            Pages::reserve_shared(file, size, addr.unwrap_or(0), exact)
        } else if exact {
            Pages::reserve_at(addr.unwrap_or(0), size)
        } else {
            Pages::reserve(size, addr)
        };
        let pages = reserved.map_err(|source| CodeMemoryError::Reserve { size, addr, source })?;
        let range = pages.addr()..pages.end();
        let mut state = ArenaState::default();
        state.insert_free(pages);
        Ok(CodeArena {
            shared: Arc::new(Shared {
                range,
                page,
                outside: config.outside,
                state: Mutex::new(state),
            }),
        })
    }

    /// The arena's reserved address range.
    pub fn range(&self) -> Range<usize> {
        self.shared.range.clone()
    }

    /// Whether `addr` lies in the arena's reserved range (allocated or not).
    pub fn contains(&self, addr: usize) -> bool {
        self.shared.in_arena(addr)
    }

    /// The page size, the granularity of every region.
    pub fn page_size(&self) -> usize {
        self.shared.page
    }

    /// The mapped range (whole pages) of the live region of this arena that contains `addr`,
    /// inside the arena or outside it.
    pub fn region_containing(&self, addr: usize) -> Option<Range<usize>> {
        self.shared
            .lock()
            .live_overlapping(addr, addr.checked_add(1)?)
    }

    /// Allocates a region: whole pages, committed and writable (`rw-`), in state
    /// [`RegionState::Writable`]. Fresh pages read as zeros.
    ///
    /// ```
    /// use uppercut_core::code_memory::{CodeArena, CodeMemoryError, RegionRequest};
    ///
    /// let arena = CodeArena::new()?;
    /// let code = arena.allocate(RegionRequest::code(100))?;
    /// let near = arena.allocate(RegionRequest::data(10).at(code.addr() + (1 << 20)))?;
    /// assert_eq!(near.addr(), code.addr() + (1 << 20));
    /// let taken = arena.allocate(RegionRequest::data(10).at(code.addr()));
    /// assert!(matches!(taken, Err(CodeMemoryError::Overlaps { .. })));
    /// # Ok::<(), CodeMemoryError>(())
    /// ```
    pub fn allocate(&self, request: RegionRequest) -> Result<CodeRegion, CodeMemoryError> {
        let RegionRequest {
            kind,
            len,
            align,
            placement,
        } = request;
        let shared = &self.shared;
        let page = shared.page;
        let align = match align {
            0 => page,
            a if a.is_power_of_two() => a.max(page),
            a => return Err(CodeMemoryError::InvalidAlignment { align: a }),
        };
        let addr = match placement {
            Placement::At(addr) => addr,
            _ => 0,
        };
        let mapped =
            align_up(len.max(1), page).ok_or(CodeMemoryError::SizeOverflow { addr, len })?;

        let mut state = shared.lock();
        let mut pages = match placement {
            Placement::Anywhere => shared.alloc_anywhere(&mut state, mapped, align)?,
            Placement::At(addr) => shared.alloc_at(&mut state, addr, mapped, align)?,
            Placement::Within(range) => shared.alloc_within(&mut state, range, mapped, align)?,
        };
        let inside = shared.in_arena(pages.addr());
        if let Err(source) = pages.protect(Prot::ReadWrite) {
            let addr = pages.addr();
            if inside {
                state.retire(pages);
            }
            return Err(CodeMemoryError::Protect {
                addr,
                len: mapped,
                to: RegionState::Writable,
                source,
            });
        }
        state.live.insert(pages.addr(), mapped);
        state.committed += mapped;
        state.in_use += len;
        state.allocations += 1;
        if inside {
            state.high_water = state.high_water.max(pages.end() - shared.range.start);
        } else {
            state.outside_reserved += mapped;
            state.outside_regions += 1;
        }
        drop(state);
        Ok(CodeRegion {
            pages: Some(pages),
            len,
            kind,
            state: RegionState::Writable,
            arena: Arc::clone(shared),
        })
    }

    /// The arena's counters.
    pub fn stats(&self) -> ArenaStats {
        let state = self.shared.lock();
        ArenaStats {
            reserved_bytes: self.shared.range.len() + state.outside_reserved,
            committed_bytes: state.committed,
            in_use_bytes: state.in_use,
            live_regions: state.live.len(),
            outside_regions: state.outside_regions,
            free_blocks: state.free.len(),
            largest_free_block: state.largest_free(),
            high_water_bytes: state.high_water,
            quarantined_bytes: state.quarantine.iter().map(Pages::len).sum(),
            allocations: state.allocations,
            frees: state.frees,
        }
    }

    /// Bytes of the arena (up to its high-water mark) that the kernel holds in memory right now
    /// (`mincore`): the check that freed regions really gave their memory back.
    pub fn resident_bytes(&self) -> Result<usize, CodeMemoryError> {
        let high_water = self.shared.lock().high_water;
        if high_water == 0 {
            return Ok(0);
        }
        let pages = sys::resident_pages(self.shared.range.start, high_water).map_err(|source| {
            CodeMemoryError::System {
                what: "mincore over the code arena",
                source,
            }
        })?;
        Ok(pages * self.shared.page)
    }
}

impl fmt::Debug for CodeArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeArena")
            .field("range", &Hex(&self.shared.range).to_string())
            .field("outside", &self.shared.outside)
            .field("stats", &self.stats())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Regions
// ---------------------------------------------------------------------------------------------

/// Whole pages of code or data owned by one holder, freed when dropped.
///
/// See the [module documentation](self) for the state machine. Every operation that needs a
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
    pages: Option<Pages>,
    len: usize,
    kind: RegionKind,
    state: RegionState,
    arena: Arc<Shared>,
}

/// Puts a region back into its previous state at the end of a scoped writable step, even when
/// the step panics.
struct Restore<'a> {
    region: &'a mut CodeRegion,
    to: RegionState,
    armed: bool,
}

impl Restore<'_> {
    fn finish(mut self) -> Result<(), CodeMemoryError> {
        self.armed = false;
        self.region.set_state(self.to)
    }
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Unwinding from the closure: nowhere to report a failure, and the region's state
            // stays truthful (`Writable`) if the kernel refuses.
            let _ = self.region.set_state(self.to);
        }
    }
}

impl CodeRegion {
    fn pages(&self) -> &Pages {
        self.pages.as_ref().expect("a live region has its pages")
    }

    fn pages_mut(&mut self) -> &mut Pages {
        self.pages.as_mut().expect("a live region has its pages")
    }

    /// The region's first address.
    pub fn addr(&self) -> usize {
        self.pages().addr()
    }

    /// The region's first address as a pointer (for an entry point, or to hand to MCJIT).
    pub fn as_ptr(&self) -> *const u8 {
        self.addr() as *const u8
    }

    /// The region's first address as a mutable pointer, for MCJIT to write the section into.
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

    /// Publishes a code region: writable (`rw-`) to executable (`r-x`).
    ///
    /// No cache maintenance is needed on x86-64 (see the type's documentation).
    pub fn publish(&mut self) -> Result<(), CodeMemoryError> {
        self.expect_kind(RegionKind::Code, "publish")?;
        self.expect_state(RegionState::Writable)?;
        self.set_state(RegionState::Executable)
    }

    /// Freezes a data region: writable (`rw-`) to read-only (`r--`).
    pub fn make_read_only(&mut self) -> Result<(), CodeMemoryError> {
        self.expect_kind(RegionKind::Data, "make read-only")?;
        self.expect_state(RegionState::Writable)?;
        self.set_state(RegionState::ReadOnly)
    }

    /// The scoped writable step: makes the region writable and not executable (`rw-`), runs `f`
    /// on its bytes, and puts it back into the state it was in (`r-x` or `r--`), whatever `f`
    /// returns and even if it panics. A region already writable stays so.
    ///
    /// `f`'s own errors travel in `T`; the outer error is about the protection changes.
    pub fn with_writable<T>(
        &mut self,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, CodeMemoryError> {
        let back = self.state;
        if back != RegionState::Writable {
            self.set_state(RegionState::Writable)?;
        }
        let guard = Restore {
            region: self,
            to: back,
            armed: back != RegionState::Writable,
        };
        let out = f(guard.region.as_mut_slice()?);
        guard.finish()?;
        Ok(out)
    }

    /// Writes `bytes` at `offset` in the scoped writable step. The patch must lie entirely
    /// within the region's requested bytes ([`CodeMemoryError::PatchOutOfBounds`]).
    pub fn patch(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = self.check_bounds(offset, bytes.len())?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.with_writable(|buf| buf[offset..end].copy_from_slice(bytes))
    }

    /// Replaces the bytes `expected` at `offset` by `new` in the scoped writable step, after
    /// checking that both have exactly the same length ([`CodeMemoryError::PatchLengthMismatch`])
    /// and that the region holds `expected` there ([`CodeMemoryError::PatchContentsMismatch`]):
    /// a patch of the wrong size or over the wrong instruction writes nothing.
    pub fn replace(
        &mut self,
        offset: usize,
        expected: &[u8],
        new: &[u8],
    ) -> Result<(), CodeMemoryError> {
        if expected.len() != new.len() {
            return Err(CodeMemoryError::PatchLengthMismatch {
                addr: self.addr(),
                offset,
                expected: expected.len(),
                actual: new.len(),
            });
        }
        let end = self.check_bounds(offset, new.len())?;
        if &self.as_slice()[offset..end] != expected {
            return Err(CodeMemoryError::PatchContentsMismatch {
                addr: self.addr(),
                offset,
                len: new.len(),
            });
        }
        self.patch(offset, new)
    }

    /// Whether [`patch_live`](Self::patch_live) can write this region: it lies in a
    /// dual-mapped arena, so its pages have a second, writable view.
    pub fn can_patch_live(&self) -> bool {
        self.pages().backing() == Backing::Shared
    }

    /// Writes `bytes` at `offset` while the region keeps its state and protection (`r-x` for
    /// published code), with one atomic 8-byte store.
    ///
    /// The bytes must lie inside the region's requested bytes
    /// ([`CodeMemoryError::PatchOutOfBounds`]) and within one naturally aligned 8-byte word
    /// ([`CodeMemoryError::PatchNotAtomic`]; the region starts on a page, so the alignment of
    /// `offset` is that of the address). The word, holding the new bytes and its other bytes
    /// as they are, is stored through a writable alias of its page that exists only during
    /// this call; a region without one (outside the arena, or in an arena without
    /// [`ArenaConfig::dual_mapping`]) gets [`CodeMemoryError::NotAliasable`] and is left as it
    /// is. The region may be in any state.
    ///
    /// **Threads running the region meanwhile.** Unlike [`patch`](Self::patch), no page of the
    /// region stops being executable, so other threads may run it, the patched bytes included:
    ///
    /// - The store is one naturally aligned 8-byte access, which x86-64 performs atomically
    ///   (Intel SDM vol. 3A, §9.1.1), and such a word never straddles a cache line. Instruction
    ///   fetch is coherent with stores on x86-64, including another processor's stores through
    ///   another virtual address of the same physical memory (caches are physically tagged).
    ///   A processor fetching the word gets all of it from before the store or all of it from
    ///   after: it decodes the old bytes or the new ones, never a mix.
    /// - A processor that decoded the old bytes just before the store may still execute the old
    ///   instruction once more. The old code must therefore stay correct to run for a while
    ///   (a relinked entry's no-op, or its earlier jump, still leads to a live version).
    /// - The new bytes should replace whole instructions by whole instructions, starting where
    ///   the old ones started (a 5-byte no-op by a 5-byte `jmp rel32`): a thread may be about
    ///   to execute any instruction that begins in the word, and must find one there.
    /// - Intel's cross-modifying-code recipe (SDM vol. 3A, §9.1.3) further has the executing
    ///   processors serialise before running modified code. Nothing here makes them; as JITs
    ///   that patch entries with one aligned atomic store do, this relies on the first point.
    ///
    /// No data-cache or instruction-cache flush is needed on x86-64.
    ///
    /// ```
    /// use uppercut_core::code_memory::{CodeArena, CodeMemoryError, RegionRequest, RegionState};
    ///
    /// let arena = CodeArena::new()?;
    /// let mut code = arena.allocate(RegionRequest::code(6))?;
    /// code.as_mut_slice()?.copy_from_slice(&[0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3]); // mov eax, 42; ret
    /// code.publish()?;
    /// code.patch_live(1, &[7, 0, 0, 0])?; // r-x all along
    /// assert_eq!(code.as_slice(), &[0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3]);
    /// assert_eq!(code.state(), RegionState::Executable);
    /// // Bytes 6..10 straddle the aligned words 0..8 and 8..16.
    /// let mut long = arena.allocate(RegionRequest::code(16))?;
    /// long.publish()?;
    /// assert!(matches!(long.patch_live(6, &[0x90; 4]), Err(CodeMemoryError::PatchNotAtomic { .. })));
    /// # Ok::<(), CodeMemoryError>(())
    /// ```
    pub fn patch_live(&mut self, offset: usize, bytes: &[u8]) -> Result<(), CodeMemoryError> {
        let end = self.check_bounds(offset, bytes.len())?;
        if bytes.is_empty() {
            return Ok(());
        }
        let addr = self.addr();
        let word = offset & !7;
        if end - word > 8 {
            return Err(CodeMemoryError::PatchNotAtomic {
                addr,
                offset,
                len: bytes.len(),
            });
        }
        let pages = self.pages_mut();
        // The word lies in the region's pages (which are whole, aligned pages), and a live
        // region is always readable.
        let Some(old) = pages.as_slice().and_then(|b| b.get(word..word + 8)) else {
            return Err(CodeMemoryError::NotAliasable { addr });
        };
        let mut new = [0u8; 8];
        new.copy_from_slice(old);
        new[offset - word..end - word].copy_from_slice(bytes);
        match pages.store_live(word, u64::from_le_bytes(new)) {
            Ok(true) => Ok(()),
            Ok(false) => Err(CodeMemoryError::NotAliasable { addr }),
            Err(source) => Err(CodeMemoryError::Alias {
                addr: addr + word,
                source,
            }),
        }
    }

    fn check_bounds(&self, offset: usize, len: usize) -> Result<usize, CodeMemoryError> {
        offset
            .checked_add(len)
            .filter(|&end| end <= self.len)
            .ok_or(CodeMemoryError::PatchOutOfBounds {
                addr: self.addr(),
                offset,
                len,
                region_len: self.len,
            })
    }

    fn expect_state(&self, expected: RegionState) -> Result<(), CodeMemoryError> {
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

    fn expect_kind(
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

    /// The one place a region's protection changes. The state is updated only once the kernel
    /// has agreed, so it always tells the truth.
    fn set_state(&mut self, to: RegionState) -> Result<(), CodeMemoryError> {
        let prot = to.prot();
        debug_assert!(
            !(self.kind == RegionKind::Data && to == RegionState::Executable),
            "data made executable"
        );
        let pages = self.pages_mut();
        if pages.prot() == prot {
            self.state = to;
            return Ok(());
        }
        pages
            .protect(prot)
            .map_err(|source| CodeMemoryError::Protect {
                addr: pages.addr(),
                len: pages.len(),
                to,
                source,
            })?;
        self.state = to;
        Ok(())
    }
}

impl Drop for CodeRegion {
    fn drop(&mut self) {
        let Some(pages) = self.pages.take() else {
            return;
        };
        let (addr, mapped) = (pages.addr(), pages.len());
        let shared = Arc::clone(&self.arena);
        let mut state = shared.lock();
        state.live.remove(&addr);
        state.committed -= mapped;
        state.in_use -= self.len;
        state.frees += 1;
        if shared.in_arena(addr) {
            state.retire(pages);
        } else {
            state.outside_reserved -= mapped;
            state.outside_regions -= 1;
            // The region is its own reservation: dropping it unmaps it.
            drop(pages);
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    /// `mov eax, 42; ret`
    const MOV_EAX_42_RET: [u8; 6] = [0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3];

    /// How the pages of a (dual-mapped) arena show in `/proc/self/maps`: shared mappings of its
    /// memfd, with the protections of the state machine.
    const ARENA_NONE: Permissions = Permissions {
        shared: true,
        ..Permissions::NONE
    };
    const ARENA_R: Permissions = Permissions {
        shared: true,
        ..Permissions::READ
    };
    const ARENA_RW: Permissions = Permissions {
        shared: true,
        ..Permissions::READ_WRITE
    };
    const ARENA_RX: Permissions = Permissions {
        shared: true,
        ..Permissions::READ_EXECUTE
    };

    fn page() -> usize {
        sys::page_size()
    }

    /// A small arena, so that parallel tests do not each reserve a gigabyte.
    fn arena(size: usize) -> CodeArena {
        CodeArena::with_config(ArenaConfig::new().size(size)).unwrap()
    }

    fn arena_with(size: usize, outside: OutsidePolicy) -> CodeArena {
        CodeArena::with_config(ArenaConfig::new().size(size).outside(outside)).unwrap()
    }

    /// The permissions of every mapping that overlaps `range`.
    /// The protections across `range`, in address order. Neighbouring mappings with the same
    /// protection count once: the kernel does not always merge them (it keeps two areas apart
    /// when their pages were faulted in separately), and that is not the arena's doing.
    fn perms_of(range: Range<usize>) -> Vec<Permissions> {
        let mut perms: Vec<Permissions> = process_mappings()
            .unwrap()
            .into_iter()
            .filter(|m| m.range.start < range.end && range.start < m.range.end)
            .map(|m| m.perms)
            .collect();
        perms.dedup();
        perms
    }

    fn pages_of(region: &CodeRegion) -> Range<usize> {
        region.addr()..region.addr() + region.mapped_len()
    }

    /// Every page of `region` has `expected`, and no mapping of the process is `rwx`.
    fn assert_perms(region: &CodeRegion, expected: Permissions) {
        let found = perms_of(pages_of(region));
        assert!(!found.is_empty(), "{region:?} is not mapped");
        assert!(
            found.iter().all(|p| *p == expected),
            "{region:?}: {found:?}, expected {expected}"
        );
        assert_eq!(writable_executable_mappings().unwrap(), vec![]);
    }

    fn call(region: &CodeRegion) -> i32 {
        assert_eq!(region.state(), RegionState::Executable);
        // SAFETY: the region is published (r-x), stays mapped while borrowed, and holds at its
        // start a complete x86-64 C-ABI function without arguments returning an i32 in eax.
        let f =
            unsafe { std::mem::transmute::<*const u8, extern "C" fn() -> i32>(region.as_ptr()) };
        f()
    }

    /// `mov eax, value; ret`
    fn returning(value: i32) -> [u8; 6] {
        let mut code = MOV_EAX_42_RET;
        code[1..5].copy_from_slice(&value.to_le_bytes());
        code
    }

    fn code(arena: &CodeArena, bytes: &[u8]) -> CodeRegion {
        let mut region = arena.allocate(RegionRequest::code(bytes.len())).unwrap();
        region.as_mut_slice().unwrap().copy_from_slice(bytes);
        region.publish().unwrap();
        region
    }

    #[test]
    fn allocates_page_aligned_zeroed_regions_inside_the_arena() {
        let arena = arena(64 << 20);
        let range = arena.range();
        let cases = [
            (1, 0),
            (100, 16),
            (page(), 1),
            (page() + 1, 64 << 10),
            (10, 2 << 20),
        ];
        let mut regions = Vec::new();
        for (len, align) in cases {
            let region = arena
                .allocate(RegionRequest::data(len).align(align))
                .unwrap();
            assert_eq!(region.addr() % align.max(page()), 0, "{len} {align}");
            assert_eq!(region.len(), len);
            assert_eq!(region.mapped_len(), len.div_ceil(page()) * page());
            assert!(range.start <= region.addr() && pages_of(&region).end <= range.end);
            assert!(region.as_slice().iter().all(|&b| b == 0));
            assert_eq!(region.state(), RegionState::Writable);
            assert_eq!(
                arena.region_containing(region.addr() + len - 1),
                Some(pages_of(&region))
            );
            assert!(region.contains(region.addr()) && !region.contains(region.addr() + len));
            regions.push(region);
        }
        // A zero-sized request still gets a page, and an address, of its own.
        let a = arena.allocate(RegionRequest::code(0)).unwrap();
        let b = arena.allocate(RegionRequest::code(0)).unwrap();
        assert!(a.is_empty() && a.mapped_len() == page() && a.addr() != b.addr());
        assert_eq!(a.as_slice(), &[] as &[u8]);

        assert!(matches!(
            arena.allocate(RegionRequest::code(8).align(24)),
            Err(CodeMemoryError::InvalidAlignment { align: 24 })
        ));
        assert!(matches!(
            arena.allocate(RegionRequest::code(usize::MAX)),
            Err(CodeMemoryError::SizeOverflow { .. })
        ));
        let too_big = arena.allocate(RegionRequest::code(64 << 20));
        assert!(
            matches!(too_big, Err(CodeMemoryError::ArenaExhausted { largest_free, .. }) if largest_free < 64 << 20),
            "{too_big:?}"
        );
    }

    #[test]
    fn arena_sizes_and_placement_are_checked() {
        for size in [0, page() + 1, MAX_SPAN + page()] {
            assert!(matches!(
                CodeArena::with_config(ArenaConfig::new().size(size)),
                Err(CodeMemoryError::InvalidArenaSize { .. })
            ));
        }
        let arena = CodeArena::new().unwrap();
        assert_eq!(arena.range().len(), DEFAULT_ARENA_SIZE);
        assert_eq!(arena.stats().reserved_bytes, DEFAULT_ARENA_SIZE);
        assert_eq!(perms_of(arena.range()), vec![ARENA_NONE]);
        // Another arena exactly where this one is: refused, nothing replaced.
        let start = arena.range().start;
        let taken = CodeArena::with_config(
            ArenaConfig::new()
                .size(page())
                .placement(ArenaPlacement::At(start)),
        );
        assert!(
            matches!(&taken, Err(CodeMemoryError::Reserve { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists),
            "{taken:?}"
        );
        assert!(matches!(
            CodeArena::with_config(ArenaConfig::new().placement(ArenaPlacement::At(start + 1))),
            Err(CodeMemoryError::Misaligned { .. })
        ));
        assert_eq!(perms_of(arena.range()), vec![ARENA_NONE]);
        // A hint is only a hint, but the arena is usable wherever it lands.
        let near = CodeArena::with_config(
            ArenaConfig::new()
                .size(page() * 16)
                .placement(ArenaPlacement::Near(arena.range().end + (64 << 20))),
        )
        .unwrap();
        assert!(near.allocate(RegionRequest::code(1)).is_ok());
    }

    #[test]
    fn code_region_is_never_writable_and_executable() {
        let arena = arena(16 << 20);
        let mut region = arena.allocate(RegionRequest::code(3 * page())).unwrap();
        assert_perms(&region, ARENA_RW);
        region.as_mut_slice().unwrap()[..6].copy_from_slice(&MOV_EAX_42_RET);

        region.publish().unwrap();
        assert_eq!(region.state(), RegionState::Executable);
        assert_perms(&region, ARENA_RX);

        let pages = pages_of(&region);
        let during = region
            .with_writable(|buf| {
                buf[1] = 7;
                (
                    perms_of(pages.clone()),
                    writable_executable_mappings().unwrap(),
                )
            })
            .unwrap();
        assert!(during.0.iter().all(|p| *p == ARENA_RW), "{during:?}");
        assert_eq!(during.1, vec![]);
        assert_eq!(region.state(), RegionState::Executable);
        assert_perms(&region, ARENA_RX);
        assert_eq!(region.as_slice()[1], 7);

        drop(region);
        assert_eq!(perms_of(pages), vec![ARENA_NONE]);
        assert_eq!(writable_executable_mappings().unwrap(), vec![]);
    }

    #[test]
    fn data_regions_are_read_write_or_read_only() {
        let arena = arena(16 << 20);
        let mut rw = arena.allocate(RegionRequest::data(100)).unwrap();
        rw.as_mut_slice().unwrap()[0] = 1;
        assert_perms(&rw, ARENA_RW);
        // Scoped step on a writable region: nothing changes.
        rw.with_writable(|buf| buf[1] = 2).unwrap();
        assert_eq!(rw.state(), RegionState::Writable);
        assert_perms(&rw, ARENA_RW);

        let mut ro = arena.allocate(RegionRequest::data(100)).unwrap();
        ro.as_mut_slice().unwrap()[..3].copy_from_slice(b"abc");
        ro.make_read_only().unwrap();
        assert_eq!(ro.state(), RegionState::ReadOnly);
        assert_perms(&ro, ARENA_R);
        ro.patch(1, b"B").unwrap();
        assert_eq!(&ro.as_slice()[..3], b"aBc");
        assert_eq!(ro.state(), RegionState::ReadOnly);
        assert_perms(&ro, ARENA_R);
    }

    #[test]
    fn state_machine_rejects_wrong_steps() {
        let arena = arena(16 << 20);
        let mut code = arena.allocate(RegionRequest::code(16)).unwrap();
        assert!(matches!(
            code.make_read_only(),
            Err(CodeMemoryError::WrongKind {
                kind: RegionKind::Code,
                ..
            })
        ));
        code.publish().unwrap();
        assert!(matches!(
            code.publish(),
            Err(CodeMemoryError::WrongState {
                state: RegionState::Executable,
                expected: RegionState::Writable,
                ..
            })
        ));
        assert!(matches!(
            code.as_mut_slice(),
            Err(CodeMemoryError::WrongState { .. })
        ));
        assert_perms(&code, ARENA_RX);

        let mut data = arena.allocate(RegionRequest::data(16)).unwrap();
        let err = data.publish().unwrap_err();
        assert!(matches!(err, CodeMemoryError::WrongKind { .. }));
        assert!(
            err.to_string().contains("cannot publish the data region"),
            "{err}"
        );
        assert_perms(&data, ARENA_RW);
        data.make_read_only().unwrap();
        assert!(matches!(
            data.make_read_only(),
            Err(CodeMemoryError::WrongState { .. })
        ));
        assert!(data.as_mut_slice().is_err());
        assert_perms(&data, ARENA_R);
    }

    #[test]
    fn runs_patches_and_relinks_machine_code() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert_eq!(call(&f), 42);

        f.patch(1, &7i32.to_le_bytes()).unwrap();
        assert_eq!(call(&f), 7);
        f.replace(1, &7i32.to_le_bytes(), &42i32.to_le_bytes())
            .unwrap();
        assert_eq!(call(&f), 42);

        // Relink: overwrite f's `mov eax, 42` (5 bytes) with `jmp rel32` to a new version g.
        let g = code(&arena, &returning(-3));
        let rel = i32::try_from(g.addr() as i64 - (f.addr() as i64 + 5)).unwrap();
        let mut jmp = [0xe9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        f.replace(0, &MOV_EAX_42_RET[..5], &jmp).unwrap();
        assert_eq!(call(&f), -3);
        assert_perms(&f, ARENA_RX);
    }

    #[test]
    fn patches_are_bounds_and_length_checked() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert!(matches!(
            f.patch(5, &[0xc3, 0x90]),
            Err(CodeMemoryError::PatchOutOfBounds {
                offset: 5,
                len: 2,
                region_len: 6,
                ..
            })
        ));
        assert!(matches!(
            f.patch(usize::MAX, &[1]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        f.patch(6, &[]).unwrap();
        assert!(matches!(
            f.replace(1, &[0x2a], &[7, 0]),
            Err(CodeMemoryError::PatchLengthMismatch {
                expected: 1,
                actual: 2,
                ..
            })
        ));
        assert!(matches!(
            f.replace(1, &[0x2b], &[0x07]),
            Err(CodeMemoryError::PatchContentsMismatch {
                offset: 1,
                len: 1,
                ..
            })
        ));
        assert!(matches!(
            f.replace(4, &[0, 0xc3, 0], &[0, 0xc3, 0]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        assert_eq!(f.as_slice(), &MOV_EAX_42_RET);
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 42);
    }

    #[test]
    fn scoped_writable_step_restores_after_error_and_panic() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);

        let out = f
            .with_writable(|buf| -> Result<(), &str> {
                buf[1] = 1;
                Err("half-written patch")
            })
            .unwrap();
        assert_eq!(out, Err("half-written patch"));
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 1);

        let caught = catch_unwind(AssertUnwindSafe(|| {
            f.with_writable(|buf| {
                buf[1] = 2;
                panic!("patcher panicked");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);
        assert_eq!(call(&f), 2);
    }

    #[test]
    fn placement_inside_the_arena_is_honoured() {
        let arena = arena(16 << 20);
        let start = arena.range().start;
        let at = start + 10 * page();
        let a = arena.allocate(RegionRequest::code(100).at(at)).unwrap();
        assert_eq!(a.addr(), at);
        // Anywhere still takes the lowest best fit, before the placed region.
        let b = arena.allocate(RegionRequest::code(page())).unwrap();
        assert_eq!(b.addr(), start);

        let window = start + 100 * page()..start + 200 * page();
        let c = arena
            .allocate(RegionRequest::data(3 * page()).within(window.clone()))
            .unwrap();
        assert_eq!(c.addr(), window.start);
        let d = arena
            .allocate(
                RegionRequest::data(1)
                    .align(64 << 10)
                    .within(window.clone()),
            )
            .unwrap();
        assert!(window.contains(&d.addr()) && d.addr() % (64 << 10) == 0);
        assert!(d.addr() >= c.addr() + c.mapped_len());
        // The pages of a placed region at the very end of the arena.
        let e = arena
            .allocate(RegionRequest::code(page()).at(arena.range().end - page()))
            .unwrap();
        assert_eq!(e.addr() + e.mapped_len(), arena.range().end);
        assert_eq!(arena.stats().live_regions, 5);
    }

    #[test]
    fn placement_refusals_say_why() {
        let p = page();
        let arena = arena(16 << 20);
        let range = arena.range();
        let held = arena
            .allocate(RegionRequest::code(2 * p).at(range.start + 4 * p))
            .unwrap();

        let err = arena.allocate(RegionRequest::code(1).at(range.start + 1));
        assert!(
            matches!(err, Err(CodeMemoryError::Misaligned { required, .. }) if required == p),
            "{err:?}"
        );
        let odd = align_up(range.start, 64 << 10).unwrap() + p;
        assert!(matches!(
            arena.allocate(RegionRequest::code(1).align(64 << 10).at(odd)),
            Err(CodeMemoryError::Misaligned { required, .. }) if required == 64 << 10
        ));
        let err = arena.allocate(RegionRequest::code(p).at(held.addr() + p));
        assert!(
            matches!(&err, Err(CodeMemoryError::Overlaps { existing, .. }) if *existing == pages_of(&held)),
            "{err:?}"
        );
        assert!(matches!(
            arena.allocate(RegionRequest::code(2 * p).at(range.end - p)),
            Err(CodeMemoryError::StraddlesArena { .. })
        ));
        assert!(matches!(
            arena.allocate(RegionRequest::code(p).at(usize::MAX & !(p - 1))),
            Err(CodeMemoryError::SizeOverflow { .. })
        ));
        let far = range.end + MAX_SPAN;
        let err = arena.allocate(RegionRequest::code(p).at(far));
        assert!(
            matches!(&err, Err(CodeMemoryError::OutOfReach { span, .. }) if span.len() > MAX_SPAN),
            "{err:?}"
        );
        let window = held.addr()..held.addr() + 2 * p;
        assert!(matches!(
            arena.allocate(RegionRequest::code(1).within(window)),
            Err(CodeMemoryError::NoSpaceInRange { .. })
        ));
        for small in [range.start..range.start + p, range.start..range.start] {
            assert!(matches!(
                arena.allocate(RegionRequest::code(2 * p).within(small)),
                Err(CodeMemoryError::RangeTooSmall { .. })
            ));
        }

        let closed = arena_with(16 << 20, OutsidePolicy::Refuse);
        let outside = closed.range().end + p;
        assert!(matches!(
            closed.allocate(RegionRequest::code(1).at(outside)),
            Err(CodeMemoryError::OutsideArena { .. })
        ));
        assert!(matches!(
            closed.allocate(RegionRequest::code(1).within(outside..outside + 16 * p)),
            Err(CodeMemoryError::OutsideArena { .. })
        ));

        // Another mapping of the process (here: another arena's reservation) is never replaced.
        let open = arena_with(16 << 20, OutsidePolicy::Anywhere);
        let other = arena.range().start + 8 * p;
        let err = open.allocate(RegionRequest::code(p).at(other));
        assert!(
            matches!(err, Err(CodeMemoryError::AddressInUse { addr, .. }) if addr == other),
            "{err:?}"
        );
        assert_eq!(perms_of(other..other + p), vec![ARENA_NONE]);
        // Beyond the user address space: the kernel says no.
        let err = open.allocate(RegionRequest::code(p).at(usize::MAX - (1 << 20) + 1));
        assert!(
            matches!(&err, Err(CodeMemoryError::KernelRefused { source, .. }) if source.raw_os_error().is_some()),
            "{err:?}"
        );
        assert!(err.unwrap_err().to_string().contains("the kernel refused"));

        for a in [&arena, &closed, &open] {
            assert_eq!(a.stats().outside_regions, 0);
        }
        assert_eq!(arena.stats().live_regions, 1);
    }

    #[test]
    fn placement_outside_the_arena_uses_free_address_space_within_reach() {
        let p = page();
        let arena = arena(16 << 20);
        let range = arena.range();
        let below = range.start.saturating_sub(1 << 30)..range.start;
        let mut placed = None;
        for _ in 0..10 {
            // Find a hole below the arena, let it go, and ask for exactly that address: another
            // thread of the test process may take it in between, hence the retries.
            let found = arena
                .allocate(RegionRequest::code(2 * p).within(below.clone()))
                .unwrap();
            assert!(!arena.contains(found.addr()) && below.contains(&found.addr()));
            let addr = found.addr();
            drop(found);
            match arena.allocate(RegionRequest::code(2 * p).at(addr)) {
                Ok(region) => {
                    placed = Some(region);
                    break;
                }
                Err(CodeMemoryError::AddressInUse { .. }) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        let mut region = placed.expect("a hole below the arena");
        let stats = arena.stats();
        assert_eq!(stats.outside_regions, 1);
        assert_eq!(stats.reserved_bytes, range.len() + 2 * p);
        assert_eq!(stats.high_water_bytes, 0);
        assert_eq!(
            arena.region_containing(region.addr() + p),
            Some(pages_of(&region))
        );
        assert_perms(&region, Permissions::READ_WRITE);
        region.as_mut_slice().unwrap()[..6].copy_from_slice(&returning(5));
        region.publish().unwrap();
        assert_perms(&region, Permissions::READ_EXECUTE);
        assert_eq!(call(&region), 5);
        // Private anonymous memory: no second view to patch it live through.
        assert!(!region.can_patch_live());
        assert!(matches!(
            region.patch_live(1, &[6]),
            Err(CodeMemoryError::NotAliasable { .. })
        ));
        assert_eq!(call(&region), 5);
        // The span now includes the outside region: the highest page that the arena alone
        // would keep within reach is now out of it.
        let other_side = range.start + MAX_SPAN - p;
        assert!(matches!(
            arena.allocate(RegionRequest::code(p).at(other_side)),
            Err(CodeMemoryError::OutOfReach { .. })
        ));
        drop(region);
        let stats = arena.stats();
        assert_eq!(
            (
                stats.outside_regions,
                stats.reserved_bytes,
                stats.live_regions
            ),
            (0, range.len(), 0)
        );
    }

    #[test]
    fn freed_regions_are_reused_and_coalesced() {
        let p = page();
        let arena = arena(16 << 20);
        let size = arena.range().len();
        let start = arena.range().start;
        let mut regions: Vec<_> = (0..4)
            .map(|_| arena.allocate(RegionRequest::code(p)).unwrap())
            .collect();
        let addrs: Vec<_> = regions.iter().map(CodeRegion::addr).collect();
        assert_eq!(addrs, vec![start, start + p, start + 2 * p, start + 3 * p]);
        assert_eq!(arena.stats().free_blocks, 1);

        regions[0].as_mut_slice().unwrap().fill(0xaa);
        let d = regions.remove(3);
        let c = regions.remove(2);
        let b = regions.remove(1);
        let a = regions.remove(0);
        drop(a); // [free] b c d [tail]
        assert_eq!(arena.stats().free_blocks, 2);
        drop(c); // [free] b [free] d [tail]
        assert_eq!(arena.stats().free_blocks, 3);
        drop(b); // left and right neighbours merge: [free x3] d [tail]
        assert_eq!(arena.stats().free_blocks, 2);
        assert_eq!(arena.stats().largest_free_block, size - 4 * p);

        // Best fit: the three-page hole, not the tail; reused pages read as zeros.
        let reused = arena.allocate(RegionRequest::code(2 * p)).unwrap();
        assert_eq!(reused.addr(), start);
        assert!(reused.as_slice().iter().all(|&x| x == 0));
        let one = arena.allocate(RegionRequest::data(1)).unwrap();
        assert_eq!(one.addr(), start + 2 * p);
        drop((reused, one, d));
        let stats = arena.stats();
        assert_eq!((stats.free_blocks, stats.largest_free_block), (1, size));
        assert_eq!((stats.live_regions, stats.committed_bytes), (0, 0));
        assert_eq!(perms_of(arena.range()), vec![ARENA_NONE]);
    }

    #[test]
    fn stats_account_reserved_committed_and_in_use() {
        let p = page();
        let arena = arena(16 << 20);
        let empty = arena.stats();
        assert_eq!(empty.reserved_bytes, 16 << 20);
        assert_eq!(
            (
                empty.committed_bytes,
                empty.in_use_bytes,
                empty.live_regions
            ),
            (0, 0, 0)
        );
        assert_eq!((empty.free_blocks, empty.largest_free_block), (1, 16 << 20));

        let a = arena.allocate(RegionRequest::code(10)).unwrap();
        let b = arena.allocate(RegionRequest::data(2 * p + 1)).unwrap();
        let s = arena.stats();
        assert_eq!(s.committed_bytes, 4 * p);
        assert_eq!(s.in_use_bytes, 10 + 2 * p + 1);
        assert_eq!((s.live_regions, s.allocations, s.frees), (2, 2, 0));
        assert_eq!(s.high_water_bytes, 4 * p);
        drop(a);
        let s = arena.stats();
        assert_eq!((s.committed_bytes, s.in_use_bytes), (3 * p, 2 * p + 1));
        assert_eq!((s.live_regions, s.allocations, s.frees), (1, 2, 1));
        assert_eq!(s.quarantined_bytes, 0);
        drop(b);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
        assert!(format!("{arena:?}").contains("CodeArena"));
    }

    #[test]
    fn memory_stays_bounded_over_100_000_recompilations() {
        const CYCLES: usize = 100_000;
        const WINDOW: usize = 16;
        const MAX_PAGES: usize = 5;
        let p = page();
        let arena = arena(64 << 20);
        let bound = (WINDOW + 1) * MAX_PAGES * p;
        let mut live = VecDeque::new();
        let mut peak_committed = 0;
        let mut high_water_early = 0;
        for i in 0..CYCLES {
            let len = (i * 7919) % (MAX_PAGES * p - 6) + 6;
            let kind = if i % 3 == 0 {
                RegionKind::Data
            } else {
                RegionKind::Code
            };
            let mut region = arena.allocate(RegionRequest::new(kind, len)).unwrap();
            region.as_mut_slice().unwrap()[..6].copy_from_slice(&returning(i as i32));
            match kind {
                RegionKind::Code => region.publish().unwrap(),
                _ => region.make_read_only().unwrap(),
            }
            if kind == RegionKind::Code && i % 1000 == 1 {
                assert_eq!(call(&region), i as i32);
            }
            live.push_back(region);
            if live.len() > WINDOW {
                live.pop_front();
            }
            let stats = arena.stats();
            peak_committed = peak_committed.max(stats.committed_bytes);
            if i == CYCLES / 100 {
                high_water_early = stats.high_water_bytes;
            }
        }
        let stats = arena.stats();
        assert!(peak_committed <= bound, "{peak_committed:#x} > {bound:#x}");
        assert!(
            stats.high_water_bytes <= 4 * bound,
            "high water {:#x} (at 1%: {high_water_early:#x})",
            stats.high_water_bytes
        );
        assert_eq!(stats.allocations, CYCLES as u64);
        assert_eq!(stats.frees, (CYCLES - WINDOW) as u64);
        assert_eq!(stats.live_regions, WINDOW);
        assert!(stats.free_blocks <= WINDOW + 1, "{stats:?}");
        let resident = arena.resident_bytes().unwrap();
        assert!(resident <= stats.committed_bytes, "{resident:#x} {stats:?}");

        drop(live);
        let stats = arena.stats();
        assert_eq!((stats.committed_bytes, stats.live_regions), (0, 0));
        assert_eq!(stats.free_blocks, 1);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
        assert_eq!(stats.quarantined_bytes, 0);
    }

    #[test]
    fn a_region_handed_over_outlives_the_arena_handle() {
        struct CompiledUnit {
            code: CodeRegion,
        }
        let p = page();
        let size = (8 << 20) + 7 * p;
        let arena = arena(size);
        let range = arena.range();
        let unit = CompiledUnit {
            code: code(&arena, &MOV_EAX_42_RET),
        };
        assert_eq!(unit.code.addr(), range.start);
        drop(arena);
        assert_eq!(call(&unit.code), 42);
        assert_eq!(unit.code.arena().stats().live_regions, 1);
        let tail = range.start + p..range.end;
        let maps = process_mappings().unwrap();
        assert!(
            maps.iter()
                .any(|m| m.range == tail && m.perms == ARENA_NONE)
        );

        // The holder decides when the memory goes; the last owner unmaps the reservation.
        drop(unit);
        let maps = process_mappings().unwrap();
        assert!(!maps.iter().any(|m| m.range == tail || m.range == range));
    }

    #[test]
    fn regions_and_arenas_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<CodeRegion>();
        send_sync::<CodeArena>();

        let arena = arena(64 << 20);
        let region = code(&arena, &MOV_EAX_42_RET);
        let result = std::thread::spawn(move || {
            let mut region = region;
            assert_eq!(call(&region), 42);
            region.patch(1, &9i32.to_le_bytes()).unwrap();
            call(&region)
        })
        .join()
        .unwrap();
        assert_eq!(result, 9);

        let threads: Vec<_> = (0..4)
            .map(|t| {
                let arena = arena.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let value = t * 1000 + i;
                        let f = code(&arena, &returning(value));
                        assert_eq!(call(&f), value);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let stats = arena.stats();
        assert_eq!((stats.live_regions, stats.committed_bytes), (0, 0));
        assert_eq!((stats.allocations, stats.frees), (2001, 2001));
        assert_eq!(stats.free_blocks, 1);
    }

    #[test]
    fn live_patches_store_one_word_and_keep_the_region_as_it_is() {
        let arena = arena(16 << 20);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert!(f.can_patch_live());
        f.patch_live(1, &7i32.to_le_bytes()).unwrap();
        assert_eq!(f.as_slice(), &returning(7));
        assert_eq!(call(&f), 7);
        assert_eq!(f.state(), RegionState::Executable);
        assert_perms(&f, ARENA_RX);

        // Relink as the engine does: the 5-byte `mov` becomes a `jmp rel32` to g, written with
        // the byte after it (`ret`, unchanged) as one word.
        let g = code(&arena, &returning(-3));
        let rel = i32::try_from(g.addr() as i64 - (f.addr() as i64 + 5)).unwrap();
        let mut jmp = [0xe9, 0, 0, 0, 0];
        jmp[1..].copy_from_slice(&rel.to_le_bytes());
        f.patch_live(0, &jmp).unwrap();
        assert_eq!(call(&f), -3);
        assert_eq!(f.as_slice()[5], 0xc3);
        f.patch_live(0, &MOV_EAX_42_RET[..5]).unwrap();
        assert_eq!(call(&f), 42);
        f.patch_live(6, &[]).unwrap();

        // Any state, and the state stays.
        let mut rw = arena.allocate(RegionRequest::data(16)).unwrap();
        rw.patch_live(8, &[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        assert_eq!(&rw.as_slice()[8..], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(rw.state(), RegionState::Writable);
        rw.make_read_only().unwrap();
        rw.patch_live(3, &[9]).unwrap();
        assert_eq!(rw.as_slice()[..4], [0, 0, 0, 9]);
        assert_eq!(rw.state(), RegionState::ReadOnly);
        assert_perms(&rw, ARENA_R);
    }

    #[test]
    fn live_patches_must_fit_one_aligned_word() {
        let arena = arena(16 << 20);
        let mut f = arena.allocate(RegionRequest::code(20)).unwrap();
        f.as_mut_slice().unwrap().fill(0x90);
        f.publish().unwrap();
        for (offset, len) in [(6, 4), (7, 2), (0, 9), (4, 8), (15, 2)] {
            let err = f.patch_live(offset, &vec![0xcc; len]).unwrap_err();
            assert!(
                matches!(err, CodeMemoryError::PatchNotAtomic { offset: o, len: l, .. } if o == offset && l == len),
                "{offset} {len}: {err:?}"
            );
            assert!(err.to_string().contains("one atomic store"), "{err}");
        }
        assert!(matches!(
            f.patch_live(18, &[0xcc; 4]),
            Err(CodeMemoryError::PatchOutOfBounds { .. })
        ));
        assert!(f.as_slice().iter().all(|&b| b == 0x90));
        // Whole words, and any part of one, are fine.
        for (offset, len) in [(0, 8), (8, 8), (5, 3), (16, 4), (7, 1)] {
            f.patch_live(offset, &vec![0xc3; len]).unwrap();
        }
        assert!(f.as_slice().iter().all(|&b| b == 0xc3));
    }

    #[test]
    fn arenas_without_dual_mapping_cannot_patch_live() {
        let arena =
            CodeArena::with_config(ArenaConfig::new().size(16 << 20).dual_mapping(false)).unwrap();
        assert_eq!(perms_of(arena.range()), vec![Permissions::NONE]);
        let mut f = code(&arena, &MOV_EAX_42_RET);
        assert_perms(&f, Permissions::READ_EXECUTE);
        assert!(!f.can_patch_live());
        let err = f.patch_live(1, &[7]).unwrap_err();
        assert!(matches!(err, CodeMemoryError::NotAliasable { addr } if addr == f.addr()));
        assert!(err.to_string().contains("cannot be patched live"), "{err}");
        assert_eq!(call(&f), 42);
        // The scoped step still works, and freeing still gives the memory back.
        f.patch(1, &[7]).unwrap();
        assert_eq!(call(&f), 7);
        drop(f);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
    }

    #[test]
    fn live_patches_while_other_threads_run_the_region() {
        use std::sync::atomic::{AtomicBool, Ordering};
        const VALUES: [i32; 2] = [0x1111_1111, 0x2222_2222];
        let arena = arena(16 << 20);
        // `mov eax, imm32; ret` at offset 0: the immediate is bytes 1..5, inside word 0..8.
        let mut f = code(&arena, &returning(VALUES[0]));
        let entry = f.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let runners: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    // SAFETY: the region stays mapped and executable until the threads are
                    // joined, and holds a complete function returning an i32 whatever the patch.
                    let f = unsafe { std::mem::transmute::<usize, extern "C" fn() -> i32>(entry) };
                    let mut seen = [0u64; 2];
                    while !stop.load(Ordering::Relaxed) {
                        match f() {
                            v if v == VALUES[0] => seen[0] += 1,
                            v if v == VALUES[1] => seen[1] += 1,
                            v => panic!("torn patch: {v:#x}"),
                        }
                    }
                    seen
                })
            })
            .collect();
        for i in 0..20_000 {
            f.patch_live(1, &VALUES[(i + 1) % 2].to_le_bytes()).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for runner in runners {
            let seen = runner.join().expect("a runner failed");
            assert!(seen[0] + seen[1] > 0);
        }
        assert_eq!(call(&f), VALUES[0]);
        assert_perms(&f, ARENA_RX);
    }

    #[test]
    fn freed_dual_mapped_regions_give_their_memory_back() {
        let p = page();
        let arena = arena(16 << 20);
        let mut a = arena.allocate(RegionRequest::data(4 * p)).unwrap();
        a.as_mut_slice().unwrap().fill(0xaa);
        a.make_read_only().unwrap();
        a.patch_live(8, &[0x55; 8]).unwrap();
        assert_eq!(arena.resident_bytes().unwrap(), 4 * p);
        let addr = a.addr();
        drop(a);
        // MADV_DONTNEED would leave the memfd holding the pages; the punched hole does not.
        assert_eq!(arena.resident_bytes().unwrap(), 0);
        assert_eq!(arena.stats().committed_bytes, 0);
        let again = arena.allocate(RegionRequest::data(4 * p).at(addr)).unwrap();
        assert!(again.as_slice().iter().all(|&b| b == 0));
        // Unlike private anonymous memory, shared memory has no zero page to map for a read:
        // reading the hole gave it memory again, which freeing gives back again.
        drop(again);
        assert_eq!(arena.resident_bytes().unwrap(), 0);
    }

    /// Runs `child` in a forked child process and returns its exit code: 0 when it returned
    /// `Ok`, its own code for `Err`, 99 when it panicked.
    fn in_child(child: impl FnOnce() -> Result<(), i32>) -> i32 {
        // SAFETY: fork in a multi-threaded test process: the child only runs `child`, which
        // uses an arena of its own test (whose lock no other thread holds) and malloc (usable
        // after fork in glibc), then leaves with `_exit`, running no destructor and no harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = match catch_unwind(AssertUnwindSafe(child)) {
                Ok(Ok(())) => 0,
                Ok(Err(code)) => code,
                Err(_) => 99,
            };
            // SAFETY: ends the child at once, as planned.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is a valid place for its status.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(got, pid, "waitpid: {}", io::Error::last_os_error());
        assert!(
            libc::WIFEXITED(status),
            "the child died: status {status:#x}"
        );
        libc::WEXITSTATUS(status)
    }

    /// What the fork tests leave in the parent: a function, data, and a free page.
    struct Forked {
        arena: CodeArena,
        f: CodeRegion,
        data: CodeRegion,
        free: usize,
    }

    fn before_fork() -> Forked {
        let arena = arena(16 << 20);
        let f = code(&arena, &MOV_EAX_42_RET);
        let mut data = arena.allocate(RegionRequest::data(100)).unwrap();
        data.as_mut_slice().unwrap()[..3].copy_from_slice(b"abc");
        let spare = arena.allocate(RegionRequest::code(1)).unwrap();
        let free = spare.addr();
        drop(spare);
        Forked {
            arena,
            f,
            data,
            free,
        }
    }

    /// What a child may do with the code memory it inherited, checked step by step.
    fn child_writes(forked: &mut Forked, live: bool) -> Result<(), i32> {
        let check = |ok: bool, code: i32| if ok { Ok(()) } else { Err(code) };
        check(call(&forked.f) == 42, 10)?;
        check(&forked.data.as_slice()[..3] == b"abc", 11)?;
        check(forked.f.can_patch_live() == live, 12)?;
        if live {
            forked
                .f
                .patch_live(1, &7i32.to_le_bytes())
                .map_err(|_| 13)?;
        } else {
            let refused = forked.f.patch_live(1, &[7]);
            check(
                matches!(refused, Err(CodeMemoryError::NotAliasable { .. })),
                14,
            )?;
            forked.f.patch(1, &7i32.to_le_bytes()).map_err(|_| 15)?;
        }
        check(call(&forked.f) == 7, 16)?;
        let expected = if live {
            ARENA_RX
        } else {
            Permissions::READ_EXECUTE
        };
        let pages = pages_of(&forked.f);
        check(perms_of(pages).iter().all(|p| *p == expected), 17)?;
        check(
            writable_executable_mappings().is_ok_and(|wx| wx.is_empty()),
            18,
        )?;
        forked.data.as_mut_slice().map_err(|_| 19)?[0] = b'X';
        let mut new = forked
            .arena
            .allocate(RegionRequest::code(6).at(forked.free))
            .map_err(|_| 20)?;
        new.as_mut_slice()
            .map_err(|_| 21)?
            .copy_from_slice(&returning(5));
        new.publish().map_err(|_| 22)?;
        check(call(&new) == 5, 23)?;
        Ok(())
    }

    /// After the child is gone, the parent's code memory is as it was, and still works.
    fn parent_unchanged(mut forked: Forked) {
        assert_eq!(call(&forked.f), 42);
        assert_eq!(forked.f.as_slice(), &MOV_EAX_42_RET);
        assert_eq!(&forked.data.as_slice()[..3], b"abc");
        let free = forked
            .arena
            .allocate(RegionRequest::code(6).at(forked.free))
            .unwrap();
        assert!(free.as_slice().iter().all(|&b| b == 0));
        assert_perms(&forked.f, ARENA_RX);
        forked.f.patch_live(1, &9i32.to_le_bytes()).unwrap();
        assert_eq!(call(&forked.f), 9);
    }

    #[test]
    fn a_forked_child_gets_code_memory_of_its_own() {
        let mut forked = before_fork();
        assert_eq!(in_child(|| child_writes(&mut forked, true)), 0);
        parent_unchanged(forked);
    }

    #[test]
    fn a_forked_child_without_shared_memory_gets_private_code_memory() {
        let mut forked = before_fork();
        sys::set_child_copies_private(true);
        let code = in_child(|| child_writes(&mut forked, false));
        sys::set_child_copies_private(false);
        assert_eq!(code, 0);
        parent_unchanged(forked);
    }

    #[test]
    fn gaps_are_the_holes_between_mappings() {
        let m = |range: Range<usize>| Mapping {
            range,
            perms: Permissions::NONE,
            offset: 0,
            path: None,
        };
        let maps = [m(10..20), m(30..40)];
        assert_eq!(gaps(&maps, 0..50), vec![0..10, 20..30, 40..50]);
        assert_eq!(gaps(&maps, 15..35), vec![20..30]);
        assert_eq!(gaps(&maps, 12..18), vec![]);
    }
}
