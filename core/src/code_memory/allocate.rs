//! Allocation: a region anywhere in the arena (best fit, lowest address first), at an address,
//! or within a range, inside the arena or, as its [`OutsidePolicy`] allows, outside it.

use std::io;
use std::ops::Range;
use std::sync::Arc;

use super::arena::{ArenaState, Shared};
use super::{
    CodeArena, CodeMemoryError, CodeRegion, MAX_SPAN, Mapping, OutsidePolicy, Placement,
    RegionRequest, RegionState, process_mappings,
};
use crate::sys::{Pages, Prot};

impl CodeArena {
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
}

impl Shared {
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

impl ArenaState {
    /// Takes `[start, start + len)` out of the free block at `block`, returning the slack on
    /// either side to the free list (its neighbours are live, so there is nothing to merge).
    pub(super) fn carve(&mut self, block: usize, start: usize, len: usize) -> Option<Pages> {
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
    pub(super) fn live_overlapping(&self, addr: usize, end: usize) -> Option<Range<usize>> {
        let (&start, &len) = self.live.range(..end).next_back()?;
        (start + len > addr).then_some(start..start + len)
    }

    fn quarantined_overlapping(&self, addr: usize, end: usize) -> Option<Range<usize>> {
        self.quarantine
            .iter()
            .find(|q| q.addr() < end && addr < q.end())
            .map(|q| q.addr()..q.end())
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

fn align_up(x: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    Some(x.checked_add(align - 1)? & !(align - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code_memory::testing::*;
    use crate::code_memory::*;

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
