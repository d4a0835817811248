//! LLVM's shadow-stack GC frame layout (`ShadowStackGCLowering.cpp`) as data, with safe readers.
//!
//! A function compiled with `gc "shadow-stack"` links a [`StackEntry`] into the chain headed by
//! `llvm_gc_root_chain` on entry and unlinks it on exit; its `map` points at a constant
//! [`FrameMap`] saying how many roots follow the entry.
//!
//! ```text
//!  llvm_gc_root_chain ──► StackEntry (8-aligned)          FrameMap (8-aligned, constant)
//!                         +0  next ──► caller's entry      +0  i32 num_roots
//!                         +8  map ───────────────────────► +4  i32 num_meta  (<= num_roots)
//!                         +16 roots[0]: *mut u8            +8  meta[0]: *const u8
//!                         +24 roots[1]                     +16 meta[1]
//!                         ... num_roots roots              ... num_meta entries
//! ```
//!
//! Reading goes through [`MemoryReader`], so the caller decides how memory is reached: a byte
//! slice standing for memory at some address ([`SliceMemory`]), or live memory through the one
//! `unsafe` reader a stack walker provides. Pointers come back as `u64` addresses; nothing here
//! dereferences anything.

use std::collections::HashSet;

use crate::error::{Error, Result};

/// Size of a pointer in the frame layouts (x86-64).
pub const POINTER_SIZE: u64 = 8;
/// Offset of [`FrameMap`]'s `meta` array from the map's start.
pub const FRAME_MAP_META_OFFSET: u64 = 8;
/// Offset of [`StackEntry`]'s `map` field from the entry's start.
pub const STACK_ENTRY_MAP_OFFSET: u64 = 8;
/// Offset of [`StackEntry`]'s `roots` array from the entry's start.
pub const STACK_ENTRY_ROOTS_OFFSET: u64 = 16;
/// The largest `num_roots` or `num_meta` the readers accept, against reading garbage for long.
pub const FRAME_MAP_MAX_COUNT: u64 = 1 << 16;

/// Reads memory for the shadow-stack readers.
pub trait MemoryReader {
    /// Fills `buf` with the bytes at `address`, or fails with [`Error::Unreadable`] (or another
    /// error) without reading anything it should not.
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<()>;

    /// A little-endian `u64` at `address`.
    fn read_u64(&self, address: u64) -> Result<u64> {
        let mut buf = [0; 8];
        self.read(address, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// A little-endian `i32` at `address`.
    fn read_i32(&self, address: u64) -> Result<i32> {
        let mut buf = [0; 4];
        self.read(address, &mut buf)?;
        Ok(i32::from_le_bytes(buf))
    }
}

impl<M: MemoryReader + ?Sized> MemoryReader for &M {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<()> {
        (**self).read(address, buf)
    }
}

/// A byte slice standing for the memory at `base..base + bytes.len()`.
#[derive(Clone, Copy, Debug)]
pub struct SliceMemory<'a> {
    base: u64,
    bytes: &'a [u8],
}

impl<'a> SliceMemory<'a> {
    /// Memory holding `bytes` at address `base`.
    pub fn new(base: u64, bytes: &'a [u8]) -> Self {
        SliceMemory { base, bytes }
    }
}

impl MemoryReader for SliceMemory<'_> {
    fn read(&self, address: u64, buf: &mut [u8]) -> Result<()> {
        let unreadable = Error::Unreadable {
            address,
            len: buf.len() as u64,
        };
        let start = address
            .checked_sub(self.base)
            .and_then(|start| usize::try_from(start).ok())
            .ok_or(unreadable.clone())?;
        let source = start
            .checked_add(buf.len())
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(unreadable)?;
        buf.copy_from_slice(source);
        Ok(())
    }
}

/// A shadow-stack frame map: `{ i32 NumRoots, i32 NumMeta, const void *Meta[NumMeta] }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameMap {
    /// Where it was read.
    pub address: u64,
    /// Number of roots in frames that use this map.
    pub num_roots: u32,
    /// The metadata pointers (`NumMeta` of them; roots past the end have none).
    pub meta: Vec<u64>,
}

impl FrameMap {
    /// Reads the frame map at `address`: it must be non-null and 8-aligned, and its counts
    /// non-negative and at most [`FRAME_MAP_MAX_COUNT`].
    pub fn read(memory: &(impl MemoryReader + ?Sized), address: u64) -> Result<Self> {
        check_pointer("frame map", address, address)?;
        let num_roots = read_count(memory, "number of roots", address)?;
        let num_meta = read_count(memory, "number of metadata entries", field(address, 4)?)?;
        let meta = read_pointers(memory, field(address, FRAME_MAP_META_OFFSET)?, num_meta)?;
        Ok(FrameMap {
            address,
            num_roots,
            meta,
        })
    }

    /// The metadata of root `index`, if it has some.
    pub fn meta(&self, index: u32) -> Option<u64> {
        self.meta.get(index as usize).copied()
    }
}

/// A shadow-stack frame entry: `{ StackEntry *Next, const FrameMap *Map, void *Roots[] }`, with
/// the map it points to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackEntry {
    /// Where it was read.
    pub address: u64,
    /// The caller's entry; 0 at the end of the chain.
    pub next: u64,
    /// The frame map, read through the entry's `map` pointer.
    pub map: FrameMap,
    /// The roots' values (`map.num_roots` of them).
    pub roots: Vec<u64>,
}

impl StackEntry {
    /// Reads the entry at `address` and its frame map: the entry and the map must be non-null
    /// and 8-aligned.
    pub fn read(memory: &(impl MemoryReader + ?Sized), address: u64) -> Result<Self> {
        check_pointer("stack entry", address, address)?;
        let next = memory.read_u64(address)?;
        if next % POINTER_SIZE != 0 {
            return Err(Error::Misaligned {
                offset: next,
                align: POINTER_SIZE,
            });
        }
        let map_field = field(address, STACK_ENTRY_MAP_OFFSET)?;
        let map_address = memory.read_u64(map_field)?;
        check_pointer("frame map", map_address, map_field)?;
        let map = FrameMap::read(memory, map_address)?;
        let roots = read_pointers(
            memory,
            field(address, STACK_ENTRY_ROOTS_OFFSET)?,
            map.num_roots,
        )?;
        Ok(StackEntry {
            address,
            next,
            map,
            roots,
        })
    }

    /// Address of root `index`'s slot in the entry (where a moving GC or a frame transfer would
    /// write it).
    pub fn root_slot(&self, index: u32) -> u64 {
        self.address
            .wrapping_add(STACK_ENTRY_ROOTS_OFFSET)
            .wrapping_add(u64::from(index) * POINTER_SIZE)
    }
}

/// Walks a shadow-stack chain from its head (the value of `llvm_gc_root_chain`), innermost frame
/// first, reading at most `limit` entries. A loop in the chain, or more than `limit` entries, is
/// [`Error::ChainTooLong`]. The iterator stops after the first error.
pub fn walk_chain<M: MemoryReader>(memory: M, head: u64, limit: usize) -> ChainWalk<M> {
    ChainWalk {
        memory,
        next: head,
        limit,
        seen: HashSet::new(),
        failed: false,
    }
}

/// Iterator over a shadow-stack chain; see [`walk_chain`].
#[derive(Debug)]
pub struct ChainWalk<M> {
    memory: M,
    next: u64,
    limit: usize,
    seen: HashSet<u64>,
    failed: bool,
}

impl<M: MemoryReader> Iterator for ChainWalk<M> {
    type Item = Result<StackEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next == 0 {
            return None;
        }
        let address = self.next;
        if self.seen.len() >= self.limit || !self.seen.insert(address) {
            self.failed = true;
            return Some(Err(Error::ChainTooLong {
                address,
                limit: self.limit,
            }));
        }
        match StackEntry::read(&self.memory, address) {
            Ok(entry) => {
                self.next = entry.next;
                Some(Ok(entry))
            }
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// The address of a field `offset` bytes into a structure at `address`.
fn field(address: u64, offset: u64) -> Result<u64> {
    address.checked_add(offset).ok_or(Error::Unreadable {
        address,
        len: offset.saturating_add(POINTER_SIZE),
    })
}

fn check_pointer(what: &'static str, pointer: u64, field: u64) -> Result<()> {
    if pointer == 0 {
        return Err(Error::NullPointer {
            what,
            address: field,
        });
    }
    if pointer % POINTER_SIZE != 0 {
        return Err(Error::Misaligned {
            offset: pointer,
            align: POINTER_SIZE,
        });
    }
    Ok(())
}

fn read_count(
    memory: &(impl MemoryReader + ?Sized),
    what: &'static str,
    address: u64,
) -> Result<u32> {
    let value = memory.read_i32(address)?;
    if value < 0 {
        return Err(Error::NegativeCount {
            what,
            address,
            value,
        });
    }
    let value = value as u32;
    if u64::from(value) > FRAME_MAP_MAX_COUNT {
        return Err(Error::CountTooLarge {
            what,
            address,
            value: value.into(),
            max: FRAME_MAP_MAX_COUNT,
        });
    }
    Ok(value)
}

/// Reads `count` pointers from `address` on, one at a time, so that nothing is allocated for
/// memory that cannot be read.
fn read_pointers(
    memory: &(impl MemoryReader + ?Sized),
    address: u64,
    count: u32,
) -> Result<Vec<u64>> {
    let mut pointers = Vec::new();
    for i in 0..u64::from(count) {
        let at = address
            .checked_add(i * POINTER_SIZE)
            .ok_or(Error::Unreadable {
                address,
                len: u64::from(count) * POINTER_SIZE,
            })?;
        pointers.push(memory.read_u64(at)?);
    }
    Ok(pointers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x1000;

    /// Little memory image: a frame map at BASE, two chained entries after it.
    fn image() -> Vec<u8> {
        let mut m = vec![0u8; 0x80];
        let mut put = |at: u64, bytes: &[u8]| {
            let at = (at - BASE) as usize;
            m[at..at + bytes.len()].copy_from_slice(bytes);
        };
        // FrameMap at 0x1000: 2 roots, 1 meta = 0xabc.
        put(0x1000, &2i32.to_le_bytes());
        put(0x1004, &1i32.to_le_bytes());
        put(0x1008, &0xabcu64.to_le_bytes());
        // Inner entry at 0x1020 -> outer at 0x1040.
        put(0x1020, &0x1040u64.to_le_bytes());
        put(0x1028, &0x1000u64.to_le_bytes());
        put(0x1030, &0x11u64.to_le_bytes());
        put(0x1038, &0x22u64.to_le_bytes());
        // Outer entry at 0x1040, end of chain.
        put(0x1040, &0u64.to_le_bytes());
        put(0x1048, &0x1000u64.to_le_bytes());
        put(0x1050, &0x33u64.to_le_bytes());
        put(0x1058, &0x44u64.to_le_bytes());
        m
    }

    #[test]
    fn reads_a_frame_map_and_entries() {
        let bytes = image();
        let memory = SliceMemory::new(BASE, &bytes);
        let map = FrameMap::read(&memory, 0x1000).unwrap();
        assert_eq!(map.num_roots, 2);
        assert_eq!(map.meta, vec![0xabc]);
        assert_eq!(map.meta(1), None);

        let entries: Vec<StackEntry> = walk_chain(memory, 0x1020, 16)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].roots, vec![0x11, 0x22]);
        assert_eq!(entries[0].next, 0x1040);
        assert_eq!(entries[1].roots, vec![0x33, 0x44]);
        assert_eq!(entries[1].root_slot(1), 0x1058);
        assert_eq!(walk_chain(memory, 0, 16).count(), 0);
    }

    #[test]
    fn rejects_negative_counts_null_and_misaligned_pointers() {
        let mut bytes = image();
        bytes[0..4].copy_from_slice(&(-1i32).to_le_bytes());
        let memory = SliceMemory::new(BASE, &bytes);
        assert_eq!(
            FrameMap::read(&memory, 0x1000),
            Err(Error::NegativeCount {
                what: "number of roots",
                address: 0x1000,
                value: -1
            })
        );
        assert!(matches!(
            FrameMap::read(&memory, 0),
            Err(Error::NullPointer { .. })
        ));
        assert_eq!(
            StackEntry::read(&memory, 0x1024),
            Err(Error::Misaligned {
                offset: 0x1024,
                align: 8
            })
        );

        let mut bytes = image();
        bytes[0x28..0x30].fill(0); // inner entry's map pointer
        let memory = SliceMemory::new(BASE, &bytes);
        assert_eq!(
            StackEntry::read(&memory, 0x1020),
            Err(Error::NullPointer {
                what: "frame map",
                address: 0x1028
            })
        );
    }

    #[test]
    fn rejects_huge_counts_and_unreadable_memory() {
        let mut bytes = image();
        bytes[4..8].copy_from_slice(&i32::MAX.to_le_bytes());
        let memory = SliceMemory::new(BASE, &bytes);
        assert!(matches!(
            FrameMap::read(&memory, 0x1000),
            Err(Error::CountTooLarge { .. })
        ));

        let mut bytes = image();
        bytes[0..4].copy_from_slice(&1000i32.to_le_bytes());
        let memory = SliceMemory::new(BASE, &bytes);
        // The roots run past the end of the image.
        assert!(matches!(
            StackEntry::read(&memory, 0x1020),
            Err(Error::Unreadable { .. })
        ));
        assert!(matches!(
            StackEntry::read(&memory, 0x8),
            Err(Error::Unreadable { .. })
        ));
        assert!(matches!(
            StackEntry::read(&memory, u64::MAX - 7),
            Err(Error::Unreadable { .. })
        ));
    }

    #[test]
    fn stops_on_loops_and_long_chains() {
        let mut bytes = image();
        bytes[0x40..0x48].copy_from_slice(&0x1020u64.to_le_bytes()); // outer -> inner
        let memory = SliceMemory::new(BASE, &bytes);
        let results: Vec<_> = walk_chain(memory, 0x1020, 16).collect();
        assert_eq!(results.len(), 3);
        assert!(matches!(
            results[2],
            Err(Error::ChainTooLong {
                address: 0x1020,
                ..
            })
        ));

        let bytes = image();
        let results: Vec<_> = walk_chain(SliceMemory::new(BASE, &bytes), 0x1020, 1).collect();
        assert_eq!(results.len(), 2);
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(Error::ChainTooLong { limit: 1, .. })
        ));
    }
}
