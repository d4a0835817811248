//! Configuration and requests: how an arena is built, and what a region asks for.

use std::ops::Range;

#[cfg(doc)]
use super::{CodeArena, CodeMemoryError, CodeRegion, MAX_SPAN};
use super::{DEFAULT_ARENA_SIZE, RegionKind};

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
    pub(super) size: usize,
    pub(super) placement: ArenaPlacement,
    pub(super) outside: OutsidePolicy,
    pub(super) dual_mapping: bool,
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
    pub(super) kind: RegionKind,
    pub(super) len: usize,
    pub(super) align: usize,
    pub(super) placement: Placement,
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
