//! Code memory: one arena of address space per engine, page-granular regions carved out of it,
//! and a W^X state machine per region.
//!
//! RuntimeDyld asks the engine's memory manager for a code section and data sections per compile
//! unit; each becomes a [`CodeRegion`] allocated from a [`CodeArena`]. The arena reserves one
//! contiguous range of address space up front (1 GiB by default, at most [`MAX_SPAN`]), so every
//! region of an engine lies within ±2 GiB of every other: PC-relative relocations between
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
//!
//! # Map
//!
//! | module       | holds                                                                        |
//! |--------------|------------------------------------------------------------------------------|
//! | `error`      | [`CodeMemoryError`], one variant per refusal                                 |
//! | `config`     | [`ArenaConfig`] and its policies; [`RegionRequest`] and its [`Placement`]    |
//! | `arena`      | [`CodeArena`]: the reservation, its shared state and [`ArenaStats`]          |
//! | `allocate`   | [`CodeArena::allocate`]: best fit, placement at or within, outside the arena |
//! | `free`       | the free list (coalescing, decommit, quarantine); dropping a [`CodeRegion`]  |
//! | `region`     | [`CodeRegion`] and [`RegionKind`]: what a region is and holds                |
//! | `state`      | [`RegionState`], publishing, freezing, the scoped writable step              |
//! | `patch`      | patching published code: scoped, checked, and live (one atomic word)         |
//!
//! The system calls (reservation, protection, the memfd and its alias) are in the crate's `sys`
//! module; this module is written without `unsafe`.

mod allocate;
mod arena;
mod config;
mod error;
mod free;
mod patch;
mod region;
mod state;
#[cfg(test)]
mod testing;

pub use crate::maps::{
    Mapping, Permissions, mapping_containing, process_mappings, writable_executable_mappings,
};
pub use arena::{ArenaStats, CodeArena};
pub use config::{ArenaConfig, ArenaPlacement, OutsidePolicy, Placement, RegionRequest};
pub use error::CodeMemoryError;
pub use region::{CodeRegion, RegionKind};
pub use state::RegionState;

/// Default size of an arena's reservation: 1 GiB of address space (no memory until used).
pub const DEFAULT_ARENA_SIZE: usize = 1 << 30;

/// The largest distance, in bytes, between the lowest and the highest address of an engine's
/// code memory for every byte of it to reach every other with a 32-bit signed displacement
/// (`call`/`jmp rel32`, RIP-relative data accesses): 2 GiB. An arena is at most this large, and
/// with [`OutsidePolicy::WithinReach`] regions placed outside it keep the whole span within it.
pub const MAX_SPAN: usize = 1 << 31;
