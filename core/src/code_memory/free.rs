//! Freeing: the free list (coalesced blocks by address and by size), giving pages back to the
//! kernel (or setting them aside when it refuses), and dropping a region.

use std::sync::Arc;

use super::CodeRegion;
use super::arena::ArenaState;
use crate::sys::Pages;

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

impl ArenaState {
    pub(super) fn insert_free(&mut self, block: Pages) {
        self.by_size.insert((block.len(), block.addr()));
        self.free.insert(block.addr(), block);
    }

    pub(super) fn take_free(&mut self, addr: usize) -> Option<Pages> {
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
    pub(super) fn retire(&mut self, mut pages: Pages) {
        match pages.decommit() {
            Ok(()) => self.release(pages),
            Err(_) => self.quarantine.push(pages),
        }
    }

    pub(super) fn largest_free(&self) -> usize {
        self.by_size.last().map_or(0, |&(len, _)| len)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use crate::code_memory::testing::*;
    use crate::code_memory::*;

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
}
