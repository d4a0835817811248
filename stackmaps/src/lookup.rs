//! Finding records by absolute return address.
//!
//! A stack walk finds return addresses; the record for one is the record whose function address
//! plus instruction offset equals it. IDs are not unique (unrolling and inlining copy call sites),
//! so the return address is the key. The table is built once, when the map is parsed, sorted by
//! address and searched with a binary search.

use crate::error::{Error, Result};
use crate::ids::{PatchpointId, RecordIndex, ReturnAddress};
use crate::parse::{Record, StackMap};

/// Record indices sorted by return address (ties in section order).
#[derive(Clone, Debug, Default)]
pub(crate) struct AddressTable {
    /// Sorted return addresses; kept apart from `records` so the search touches only these.
    addresses: Vec<u64>,
    /// `records[i]` is the index of the record at `addresses[i]`.
    records: Vec<u32>,
}

impl AddressTable {
    pub(crate) fn build(map: &StackMap<'_>) -> Result<Self> {
        let mut pairs = Vec::with_capacity(map.num_records() as usize);
        for record in map.records() {
            let function_address = record.function().address();
            let instruction_offset = record.instruction_offset().0;
            let address = function_address
                .checked_add(u64::from(instruction_offset))
                .ok_or(Error::AddressOverflow {
                    function_address,
                    instruction_offset,
                })?;
            pairs.push((address, record.index().0));
        }
        // Records come grouped by function and, within one, by offset: nearly sorted already.
        pairs.sort_unstable();
        let (addresses, records) = pairs.into_iter().unzip();
        Ok(AddressTable { addresses, records })
    }

    /// Positions in the table of the records at `address`.
    fn positions(&self, address: u64) -> std::ops::Range<usize> {
        let start = self.addresses.partition_point(|&a| a < address);
        let len = self
            .addresses
            .get(start..)
            .unwrap_or_default()
            .partition_point(|&a| a == address);
        start..start + len
    }
}

impl<'data> StackMap<'data> {
    /// The record for an absolute return address; `None` if no record is there.
    ///
    /// If several records share the address (two stack maps with nothing between them, or
    /// functions whose addresses overlap in an unrelocated object), this is the first in section
    /// order; [`StackMap::lookup_all`] gives them all.
    pub fn lookup(&self, address: ReturnAddress) -> Option<Record<'_, 'data>> {
        let table = self.by_address();
        let first = table.addresses.partition_point(|&a| a < address.0);
        if table.addresses.get(first) != Some(&address.0) {
            return None;
        }
        self.record(RecordIndex(*table.records.get(first)?))
    }

    /// Every record at an absolute return address, in section order.
    pub fn lookup_all(
        &self,
        address: ReturnAddress,
    ) -> impl Iterator<Item = Record<'_, 'data>> + '_ {
        let table = self.by_address();
        let positions = table.positions(address.0);
        table
            .records
            .get(positions)
            .unwrap_or_default()
            .iter()
            .filter_map(move |&index| self.record(RecordIndex(index)))
    }

    /// Every record with this patchpoint ID, in section order (a linear scan: IDs are not keys).
    pub fn records_with_id(
        &self,
        id: PatchpointId,
    ) -> impl Iterator<Item = Record<'_, 'data>> + '_ {
        self.records().filter(move |record| record.id() == id)
    }

    /// All records sorted by return address (ties in section order).
    pub fn records_by_address(&self) -> impl Iterator<Item = Record<'_, 'data>> + '_ {
        self.by_address()
            .records
            .iter()
            .filter_map(move |&index| self.record(RecordIndex(index)))
    }
}

#[cfg(test)]
mod tests {
    use crate::build::StackMapBuilder;
    use crate::ids::{CodeOffset, PatchpointId, RecordIndex, ReturnAddress};
    use crate::parse::{Location, StackMap};

    #[test]
    fn shared_ids_are_told_apart_by_return_address() {
        let mut b = StackMapBuilder::new();
        b.function(0x100, 0);
        b.record(PatchpointId(7), CodeOffset(0x10), &[], &[]);
        b.record(PatchpointId(7), CodeOffset(0x20), &[], &[]);
        b.function(0x200, 0);
        b.record(PatchpointId(7), CodeOffset(0x10), &[], &[]);
        let bytes = b.build();
        let map = StackMap::parse(&bytes).unwrap();
        assert_eq!(map.records_with_id(PatchpointId(7)).count(), 3);
        assert_eq!(map.records_with_id(PatchpointId(8)).count(), 0);
        let at = |ra| map.lookup(ReturnAddress(ra)).map(|r| r.index().0);
        assert_eq!(at(0x110), Some(0));
        assert_eq!(at(0x120), Some(1));
        assert_eq!(at(0x210), Some(2));
        for miss in [0, 0x10f, 0x111, 0x200, 0x211, u64::MAX] {
            assert_eq!(at(miss), None, "{miss:#x}");
        }
    }

    #[test]
    fn records_at_one_address_come_in_section_order() {
        let mut b = StackMapBuilder::new();
        b.function(0x100, 0);
        b.record(PatchpointId(1), CodeOffset(8), &[], &[]);
        b.record(PatchpointId(2), CodeOffset(8), &[], &[]);
        b.record(PatchpointId(3), CodeOffset(4), &[], &[]);
        let bytes = b.build();
        let map = StackMap::parse(&bytes).unwrap();
        let ids: Vec<u64> = map
            .lookup_all(ReturnAddress(0x108))
            .map(|r| r.id().0)
            .collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!(map.lookup(ReturnAddress(0x108)).map(|r| r.id().0), Some(1));
        let sorted: Vec<u32> = map.records_by_address().map(|r| r.index().0).collect();
        assert_eq!(sorted, [2, 0, 1]);
    }

    #[test]
    fn many_records_in_unsorted_functions() {
        // 100 functions laid out in reverse address order, 100 records each.
        let mut b = StackMapBuilder::new();
        for f in 0..100u64 {
            b.function(0x10_0000 - f * 0x1000, 64);
            for r in 0..100u32 {
                b.record(
                    PatchpointId(u64::from(r % 7)),
                    CodeOffset(r * 16 + 5),
                    &[Location::Constant {
                        value: r as i32,
                        size: 8,
                    }],
                    &[],
                );
            }
        }
        let bytes = b.build();
        let map = StackMap::parse(&bytes).unwrap();
        assert_eq!(map.num_records(), 10_000);
        for record in map.records() {
            let found = map.lookup(record.return_address()).unwrap();
            assert_eq!(found.index(), record.index());
            assert!(
                map.lookup(ReturnAddress(record.return_address().0 + 1))
                    .is_none()
            );
        }
        let addresses: Vec<u64> = map
            .records_by_address()
            .map(|r| r.return_address().0)
            .collect();
        assert!(addresses.windows(2).all(|w| w[0] < w[1]));
        let last = map.record(RecordIndex(9_999)).unwrap();
        assert_eq!(
            last.return_address(),
            ReturnAddress(0x10_0000 - 99 * 0x1000 + 99 * 16 + 5)
        );
    }
}
