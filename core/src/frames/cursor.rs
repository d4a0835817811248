//! The engine's code map (a snapshot of every live version with its unit's frame table) and the
//! one frame cursor that walks JIT frames along the frame-pointer chain.

use std::sync::Arc;

use crate::engine::VersionInfo;
use crate::frames::layout::{
    CALLEE_SAVED, CFA_FROM_FP_OFFSET, FP_ALIGN, NEXT_OLDER_FP_FROM_FP_OFFSET,
    NEXT_OLDER_RA_FROM_FP_OFFSET, NEXT_OLDER_SP_FROM_FP_OFFSET, RA_SLOT_BELOW_SP,
};
use crate::frames::table::{FrameRow, FrameTable};
use crate::types::UnitId;

/// One published unit's code: its versions and its frame table.
#[derive(Debug)]
pub struct UnitCode {
    /// The unit.
    pub unit: UnitId,
    /// Its versions, by entry address.
    versions: Box<[Arc<VersionInfo>]>,
    /// Its frame table.
    pub table: FrameTable,
}

impl UnitCode {
    pub(crate) fn new(unit: UnitId, mut versions: Vec<VersionInfo>, table: FrameTable) -> UnitCode {
        versions.sort_by_key(|v| v.entry);
        UnitCode {
            unit,
            versions: versions.into_iter().map(Arc::new).collect(),
            table,
        }
    }

    /// The version whose code holds `address` strictly after its entry (a return address).
    pub fn version_at(&self, address: u64) -> Option<&Arc<VersionInfo>> {
        let i = self.versions.partition_point(|v| v.entry < address);
        let v = self.versions.get(i.checked_sub(1)?)?;
        v.holds_return_address(address).then_some(v)
    }

    /// Its versions, by entry address.
    pub fn versions(&self) -> &[Arc<VersionInfo>] {
        &self.versions
    }
}

/// A snapshot of the engine's live code: every code section of every published unit (but
/// those whose memory was handed over), with the unit's versions and frame table.
///
/// Immutable: [`Engine::code_map`](crate::Engine::code_map) makes a new one when units come or
/// go, so a walk reads one consistent picture without holding the engine's lock. A unit freed
/// after the snapshot was taken stays in it (its metadata is the snapshot's own), which is why
/// a walk must only read frames that the running thread's own stack holds.
#[derive(Debug, Default)]
pub struct CodeMap {
    /// `(start, end, unit)` of every code section, by start.
    ranges: Box<[(u64, u64, Arc<UnitCode>)]>,
}

impl CodeMap {
    pub(crate) fn new(mut ranges: Vec<(u64, u64, Arc<UnitCode>)>) -> CodeMap {
        ranges.sort_by_key(|r| r.0);
        CodeMap {
            ranges: ranges.into_boxed_slice(),
        }
    }

    /// The unit whose code holds `address`.
    pub fn unit_at(&self, address: u64) -> Option<&Arc<UnitCode>> {
        let i = self.ranges.partition_point(|r| r.0 <= address);
        let (_, end, unit) = self.ranges.get(i.checked_sub(1)?)?;
        (address < *end).then_some(unit)
    }

    /// The version whose code holds `address` strictly after its entry (a return address).
    pub fn version_at(&self, address: u64) -> Option<&Arc<VersionInfo>> {
        self.unit_at(address)?.version_at(address)
    }

    /// Every unit in the map (once each).
    pub fn units(&self) -> impl Iterator<Item = &Arc<UnitCode>> + '_ {
        let mut last: Option<UnitId> = None;
        self.ranges
            .iter()
            .filter_map(move |(_, _, u)| (last.replace(u.unit) != Some(u.unit)).then_some(u))
    }
}

/// Memory a frame cursor reads: a thread's stack, or a fake one in a test.
///
/// # Safety
///
/// `read` must return `Some` only for words that are mapped and may be read while the cursor
/// runs (nothing else writes them meanwhile, or a torn read is harmless): the cursor trusts
/// them as far as its checks go, and its users read frame slots it reports.
pub unsafe trait StackMemory {
    /// Whether `len` bytes at `address` lie inside the memory.
    fn contains(&self, address: u64, len: u64) -> bool;

    /// The aligned word at `address`, if it lies inside the memory.
    fn read(&self, address: u64) -> Option<u64>;
}

/// The part of this thread's stack that holds live frames older than the caller's: from the
/// caller's stack pointer to the top of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadStack {
    low: u64,
    high: u64,
}

impl ThreadStack {
    /// The window above the calling function's frame. `None` when the thread's stack bounds
    /// are unknown.
    #[inline(always)]
    pub fn current() -> Option<ThreadStack> {
        let marker = 0u8;
        let low = std::hint::black_box(&marker) as *const u8 as u64;
        let high = crate::sys::cached_stack_top()?;
        (low < high).then_some(ThreadStack { low, high })
    }

    /// A window over `[low, high)`, for tests over fake stacks.
    ///
    /// # Safety
    ///
    /// The range must be readable memory that nothing writes while the window is used.
    pub unsafe fn from_range(low: u64, high: u64) -> ThreadStack {
        ThreadStack { low, high }
    }

    /// Writes the aligned word at `address`, if it lies inside the window.
    ///
    /// # Safety
    ///
    /// The word must belong to a live frame older than the caller's and be one the frame's
    /// code does not rely on any more than a return-address slot is relied on (the callee's
    /// `ret` reads it).
    pub unsafe fn write(&self, address: u64, value: u64) -> bool {
        if address % 8 != 0 || !self.contains(address, 8) {
            return false;
        }
        // SAFETY: inside this thread's live stack (checked); the caller vouches for the word.
        unsafe { std::ptr::write_volatile(address as *mut u64, value) };
        true
    }
}

// SAFETY: the window lies in this thread's stack above the current frame (or a range the
// creator vouched for), which is mapped and holds live frames; only this thread writes it, and
// it is walking.
unsafe impl StackMemory for ThreadStack {
    #[inline(always)]
    fn contains(&self, address: u64, len: u64) -> bool {
        address > self.low && address.checked_add(len).is_some_and(|end| end <= self.high)
    }

    #[inline(always)]
    fn read(&self, address: u64) -> Option<u64> {
        if address % 8 != 0 || !self.contains(address, 8) {
            return None;
        }
        // SAFETY: checked above to lie in the window (see the impl's safety comment).
        Some(unsafe { std::ptr::read_volatile(address as *const u64) })
    }
}

/// Where a frame's callee-saved register is, as of the frame's return address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedAt {
    /// Still in the register the walk started from (no inner frame saved it).
    Register,
    /// In the stack slot at this address (an inner frame's prologue saved it there).
    Slot(u64),
    /// Unknown: an inner frame's call-frame information was missing or did not fit.
    Unknown,
}

/// Where a walk starts: the state a hypercall trampoline records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalkStart {
    /// The innermost JIT frame's stack pointer at its call (the trampoline's return address
    /// is right below it).
    pub sp: u64,
    /// Its frame pointer.
    pub fp: u64,
    /// The return address into it the trampoline recorded.
    pub return_address: u64,
    /// Where the innermost frame's callee-saved registers are (besides `rbp`, in
    /// [`CALLEE_SAVED`] order).
    pub saved: [SavedAt; 5],
}

impl WalkStart {
    /// The start of a walk from a hypercall: the guest's stack pointer, frame pointer and
    /// return address as the hypercall trampoline recorded them (see
    /// [`GuestState`](crate::GuestState)). The trampoline also pushed the guest's callee-saved
    /// registers below its own frame pointer (`sp - 16`): there the innermost frame's are.
    pub fn at_hypercall(sp: u64, fp: u64, return_address: u64) -> WalkStart {
        WalkStart {
            sp,
            fp,
            return_address,
            saved: crate::arch::trampoline_saves(sp.wrapping_sub(16)).map(SavedAt::Slot),
        }
    }
}

/// One JIT frame the cursor found, suspended at a call.
#[derive(Debug, Clone, Copy)]
pub struct CursorFrame<'m> {
    /// Where the frame is suspended (the original return address, also when the slot holds a
    /// patched one).
    pub return_address: u64,
    /// What the return-address slot holds now (the return address, or what it was patched to).
    pub word: u64,
    /// The stack word that holds the return address.
    pub slot: u64,
    /// `rsp` at the return address (`slot + 8`).
    pub sp: u64,
    /// `rbp`.
    pub fp: u64,
    /// The unit the return address lies in.
    pub unit: &'m Arc<UnitCode>,
    /// The version it lies in.
    pub version: &'m Arc<VersionInfo>,
    /// The frame-table row at the return address (`None`: no record there; ask the unit's
    /// table for why).
    pub row: Option<&'m FrameRow>,
    /// Where each callee-saved register besides `rbp` ([`CALLEE_SAVED`] order) is as of the
    /// return address.
    pub saved: [SavedAt; 5],
}

/// Walks JIT frames innermost first along the frame-pointer chain, with each frame's unit,
/// version and frame-table row.
///
/// It trusts only what it can check, as wasmtime's unwinder does: every word it reads lies in
/// the [`StackMemory`], frame pointers are non-null, 16-aligned, at or above their frame's
/// stack pointer and strictly growing; it stops at the first return address that is not in a
/// version of the [`CodeMap`] (host frames have no frame pointers), or, for the innermost
/// frame, that is not the one the trampoline recorded. A slot patched by a frame transfer is
/// read through `resolve` (patched word → original return address).
pub struct FrameCursor<'m, M: StackMemory, R: Fn(u64) -> Option<u64>> {
    map: &'m CodeMap,
    memory: M,
    resolve: R,
    next: Option<(u64, u64, u64, u64)>,
    expect: Option<u64>,
    unit: Option<&'m Arc<UnitCode>>,
    version: Option<&'m Arc<VersionInfo>>,
    row: Option<(u64, Option<&'m FrameRow>)>,
    saved: [SavedAt; 5],
}

/// A `resolve` for walks that see no patched return addresses.
pub fn no_patches(_: u64) -> Option<u64> {
    None
}

impl<'m, M: StackMemory, R: Fn(u64) -> Option<u64>> FrameCursor<'m, M, R> {
    /// A cursor at the innermost frame of a hypercall; `resolve` reads patched slots (use
    /// [`no_patches`] when there are none).
    pub fn new(map: &'m CodeMap, memory: M, start: WalkStart, resolve: R) -> Self {
        let next = start.sp.checked_sub(RA_SLOT_BELOW_SP).and_then(|slot| {
            let word = memory.read(slot)?;
            well_formed(&memory, start.sp, start.fp).then_some((slot, word, start.sp, start.fp))
        });
        FrameCursor {
            map,
            memory,
            resolve,
            next,
            expect: Some(start.return_address),
            unit: None,
            version: None,
            row: None,
            saved: start.saved,
        }
    }

    /// The memory it reads.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    #[inline]
    fn describe(
        &mut self,
        return_address: u64,
    ) -> Option<(&'m Arc<UnitCode>, &'m Arc<VersionInfo>)> {
        if let (Some(u), Some(v)) = (self.unit, self.version)
            && v.holds_return_address(return_address)
        {
            return Some((u, v));
        }
        let unit = self.map.unit_at(return_address)?;
        let version = unit.version_at(return_address)?;
        self.unit = Some(unit);
        self.version = Some(version);
        Some((unit, version))
    }
}

impl<'m, M: StackMemory, R: Fn(u64) -> Option<u64>> Iterator for FrameCursor<'m, M, R> {
    type Item = CursorFrame<'m>;

    #[inline]
    fn next(&mut self) -> Option<CursorFrame<'m>> {
        let (slot, word, sp, fp) = self.next.take()?;
        let cached = self.version.is_some_and(|v| v.holds_return_address(word));
        let return_address = if cached {
            word
        } else {
            (self.resolve)(word).unwrap_or(word)
        };
        if let Some(expected) = self.expect.take()
            && expected != return_address
        {
            // The trampoline's slot does not hold what it recorded: not this hypercall.
            return None;
        }
        let (unit, version) = self.describe(return_address)?;
        let row = match self.row {
            Some((ra, row)) if ra == return_address => row,
            _ => {
                let row = unit.table.row(return_address).ok();
                self.row = Some((return_address, row));
                row
            }
        };
        let frame = CursorFrame {
            return_address,
            word,
            slot,
            sp,
            fp,
            unit,
            version,
            row,
            saved: self.saved,
        };
        // The older frame sees this frame's save slots (from the CFI when no record is here).
        let unrecorded;
        let saves = match row {
            Some(r) => r.saves.as_ref().ok(),
            None => {
                unrecorded = unit.table.saves_at(return_address).ok();
                unrecorded.as_ref()
            }
        };
        match saves {
            Some(saves) => {
                let cfa = fp + CFA_FROM_FP_OFFSET;
                for (at, &offset) in self.saved.iter_mut().zip(&saves.0) {
                    if offset != 0 {
                        *at = SavedAt::Slot(cfa.wrapping_add_signed(i64::from(offset)));
                    }
                }
            }
            None => self.saved = [SavedAt::Unknown; CALLEE_SAVED.len()],
        }
        self.next = older(&self.memory, fp);
        Some(frame)
    }
}

/// The next older frame, read through the frame pointer `fp`.
#[inline(always)]
fn older<M: StackMemory>(memory: &M, fp: u64) -> Option<(u64, u64, u64, u64)> {
    let next_fp = memory.read(fp + NEXT_OLDER_FP_FROM_FP_OFFSET)?;
    let slot = fp + NEXT_OLDER_RA_FROM_FP_OFFSET;
    let word = memory.read(slot)?;
    let sp = fp + NEXT_OLDER_SP_FROM_FP_OFFSET;
    (next_fp > fp && well_formed(memory, sp, next_fp)).then_some((slot, word, sp, next_fp))
}

/// A frame pointer that can be a frame's: non-null, aligned, at or above the frame's stack
/// pointer, with its two words inside the memory.
#[inline(always)]
fn well_formed<M: StackMemory>(memory: &M, sp: u64, fp: u64) -> bool {
    fp != 0 && fp % FP_ALIGN == 0 && fp >= sp && memory.contains(fp, NEXT_OLDER_SP_FROM_FP_OFFSET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::VersionKind;
    use crate::frames::layout::CalleeSaves;
    use crate::types::{OptLevel, VersionId};
    use uppercut_stackmaps::{CodeOffset, Location, PatchpointId, StackMap, StackMapBuilder};

    /// A code map of one unit with one version at `0x1000..0x1100` and a site record at
    /// `0x1040`.
    fn map() -> CodeMap {
        let site = [0, 0, 1, 7]
            .into_iter()
            .map(|value| Location::Constant { value, size: 8 })
            .collect::<Vec<_>>();
        let mut builder = StackMapBuilder::new();
        builder.function(0x1000, 32);
        builder.record(PatchpointId(0), CodeOffset(0x40), &site, &[]);
        let bytes = builder.build();
        let stack_map = StackMap::parse(&bytes).unwrap();
        let table = FrameTable::build(Some(&stack_map), None);
        let version = VersionInfo {
            id: VersionId(0),
            function: "f".to_owned(),
            unit: UnitId(0),
            entry: 0x1000,
            size: 0x100,
            opt_level: OptLevel::O2,
            kind: VersionKind::Function,
            specialisation: Vec::new(),
            readiness: crate::Readiness::Sites,
        };
        let unit = Arc::new(UnitCode::new(UnitId(0), vec![version], table));
        CodeMap::new(vec![(0x1000, 0x1100, unit)])
    }

    /// A fake stack: 32 words at an aligned address, with the window over all of them.
    #[repr(C, align(16))]
    struct Fake([u64; 32]);

    impl Fake {
        fn base(&self) -> u64 {
            self.0.as_ptr() as u64
        }
        fn window(&self) -> ThreadStack {
            // SAFETY: the words are this test's, alive and unwritten while the window is used.
            unsafe { ThreadStack::from_range(self.base() - 8, self.base() + 32 * 8) }
        }
        /// Lays out a chain of frames: `(fp word index, return address into it)`, innermost
        /// first; returns the walk's start.
        fn chain(&mut self, frames: &[(usize, u64)]) -> WalkStart {
            let base = self.base();
            let at = |i: usize| base + 8 * i as u64;
            // The innermost frame's return address sits right below its stack pointer, at word 1.
            self.0[1] = frames[0].1;
            for (k, &(fp, _)) in frames.iter().enumerate() {
                let (next_fp, next_ra) = frames.get(k + 1).map_or((0, 0), |&(f, r)| (at(f), r));
                self.0[fp] = next_fp;
                self.0[fp + 1] = next_ra;
            }
            WalkStart {
                sp: at(2),
                fp: at(frames[0].0),
                return_address: frames[0].1,
                saved: [SavedAt::Register; 5],
            }
        }
    }

    #[test]
    fn the_cursor_follows_frame_pointers_through_jit_code() {
        let map = map();
        let mut fake = Fake([0; 32]);
        let start = fake.chain(&[(4, 0x1040), (10, 0x1040), (16, 0x1080), (22, 0x9999)]);
        let frames: Vec<_> = FrameCursor::new(&map, fake.window(), start, no_patches).collect();
        // The fourth return address is not JIT code: the walk stops before it.
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].slot, fake.base() + 8);
        assert_eq!(frames[0].sp, fake.base() + 16);
        assert_eq!(frames[1].sp, fake.base() + 8 * 4 + 16);
        assert_eq!(frames[1].fp, fake.base() + 8 * 10);
        assert_eq!(frames[0].row.and_then(|r| r.site), Some(crate::SiteId(7)));
        assert!(frames[2].row.is_none(), "no record at 0x1080");
        assert_eq!(frames[2].version.function, "f");
        // No CFI in this unit: callee-saved registers are unknown past the innermost frame.
        assert_eq!(frames[0].saved, [SavedAt::Register; 5]);
        assert_eq!(frames[1].saved, [SavedAt::Unknown; 5]);
        std::hint::black_box(&mut fake);
    }

    #[test]
    fn malformed_chains_stop_the_walk() {
        let map = map();
        // Frame pointers that go down.
        let mut fake = Fake([0; 32]);
        let start = fake.chain(&[(10, 0x1040), (4, 0x1040)]);
        assert_eq!(
            FrameCursor::new(&map, fake.window(), start, no_patches).count(),
            1
        );
        // A misaligned frame pointer.
        let mut fake = Fake([0; 32]);
        let start = fake.chain(&[(4, 0x1040), (10, 0x1040)]);
        fake.0[4] += 8;
        assert_eq!(
            FrameCursor::new(&map, fake.window(), start, no_patches).count(),
            1
        );
        // A frame pointer outside the stack.
        let mut fake = Fake([0; 32]);
        let start = fake.chain(&[(4, 0x1040), (10, 0x1040)]);
        fake.0[4] = u64::MAX - 15;
        assert_eq!(
            FrameCursor::new(&map, fake.window(), start, no_patches).count(),
            1
        );
        // The trampoline's slot does not hold the return address it recorded.
        let mut fake = Fake([0; 32]);
        let mut start = fake.chain(&[(4, 0x1040)]);
        start.return_address = 0x1041;
        assert_eq!(
            FrameCursor::new(&map, fake.window(), start, no_patches).count(),
            0
        );
        // A null frame pointer to start from.
        let mut fake = Fake([0; 32]);
        let mut start = fake.chain(&[(4, 0x1040)]);
        start.fp = 0;
        assert_eq!(
            FrameCursor::new(&map, fake.window(), start, no_patches).count(),
            0
        );
        std::hint::black_box(&mut fake);
    }

    #[test]
    fn patched_slots_read_through_the_resolver_and_saves_are_tracked() {
        let mut rows = map();
        // Give the site row save slots: rbx at CFA - 24, r14 at CFA - 32.
        {
            let unit = Arc::get_mut(&mut rows.ranges[0].2).unwrap();
            let mut table = unit.table.clone();
            let mut all: Vec<FrameRow> = table.rows().to_vec();
            all[0].saves = Ok(CalleeSaves([-24, 0, 0, -32, 0]));
            table = FrameTable::from_rows(all);
            unit.table = table;
        }
        let mut fake = Fake([0; 32]);
        let start = fake.chain(&[(4, 0x1040), (10, 0xdead0), (16, 0x1040)]);
        let resolve = |word: u64| (word == 0xdead0).then_some(0x1040);
        let frames: Vec<_> = FrameCursor::new(&rows, fake.window(), start, resolve).collect();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[1].return_address, 0x1040);
        assert_eq!(frames[1].word, 0xdead0);
        let cfa0 = fake.base() + 8 * 4 + 16;
        assert_eq!(frames[1].saved[0], SavedAt::Slot(cfa0 - 24));
        assert_eq!(frames[1].saved[1], SavedAt::Register);
        assert_eq!(frames[1].saved[3], SavedAt::Slot(cfa0 - 32));
        let cfa1 = fake.base() + 8 * 10 + 16;
        assert_eq!(frames[2].saved[0], SavedAt::Slot(cfa1 - 24));
        std::hint::black_box(&mut fake);
    }
}
