//! The arena: one reservation of address space, the state its regions share (free list, live
//! regions, counters), and what can be asked of it besides allocation.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::error::Hex;
use super::{ArenaConfig, ArenaPlacement, CodeMemoryError, MAX_SPAN, OutsidePolicy};
use crate::sys::{self, Pages, SharedFile};

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
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    pub(super) range: Range<usize>,
    pub(super) page: usize,
    pub(super) outside: OutsidePolicy,
    pub(super) state: Mutex<ArenaState>,
}

#[derive(Default)]
pub(super) struct ArenaState {
    /// Free blocks of the arena by address; neighbours are always merged.
    pub(super) free: BTreeMap<usize, Pages>,
    /// The same blocks by (size, address).
    pub(super) by_size: BTreeSet<(usize, usize)>,
    /// Live regions, inside and outside the arena: address to mapped size.
    pub(super) live: BTreeMap<usize, usize>,
    /// Pages whose decommit failed: kept out of the free list for good.
    pub(super) quarantine: Vec<Pages>,
    pub(super) committed: usize,
    pub(super) in_use: usize,
    pub(super) outside_reserved: usize,
    pub(super) outside_regions: usize,
    pub(super) high_water: usize,
    pub(super) allocations: u64,
    pub(super) frees: u64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, ArenaState> {
        // Nothing panics while holding the lock; should it ever, the state is still consistent
        // between the statements that touch it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn in_arena(&self, addr: usize) -> bool {
        self.range.contains(&addr)
    }
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;
    use crate::code_memory::testing::*;
    use crate::code_memory::*;

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
}
