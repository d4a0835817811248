//! A unit's frame table: what its stack map and call-frame information say about each return
//! address, decoded once when the unit is published.

use std::fmt;

use uppercut_stackmaps::{
    EH_FRAME_SECTION, EhFrameSection, Location, ReturnAddress, STACKMAP_SECTION, StackMap,
};

use crate::frames::convention::{RecordValue, SiteState};
use crate::frames::layout::CalleeSaves;
use crate::types::SiteId;

/// Why a frame suspended at a return address cannot be described (and so must keep running
/// its old code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The unit has no such section (its code has no call-site records, or no CFI).
    NoMetadata {
        /// `.llvm_stackmaps` or `.eh_frame`.
        section: &'static str,
    },
    /// The unit's stack map has no record at the return address.
    NoRecord,
    /// Several records sit at the return address and disagree.
    DoubtfulRecord,
    /// The record is not a statepoint that follows Uppercut's site convention.
    NotASite {
        /// What does not fit.
        reason: &'static str,
    },
    /// A live value is somewhere a transfer cannot read it from.
    UnsupportedLocation {
        /// The site.
        site: SiteId,
        /// The value's index (after the site id).
        index: usize,
        /// The location, as text.
        location: String,
    },
    /// The frame's call-frame information does not have the shape a transfer relies on.
    UnsupportedFrame {
        /// What does not fit.
        reason: String,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoMetadata { section } => write!(f, "its unit has no {section} section"),
            Refusal::NoRecord => write!(f, "there is no stack-map record at it"),
            Refusal::DoubtfulRecord => write!(
                f,
                "several records sit at it with different locations (doubtful metadata)"
            ),
            Refusal::NotASite { reason } => write!(f, "its record is not an OSR site: {reason}"),
            Refusal::UnsupportedLocation {
                site,
                index,
                location,
            } => write!(
                f,
                "value {index} of {site} is at {location}, which a transfer cannot read"
            ),
            Refusal::UnsupportedFrame { reason } => {
                write!(f, "its call-frame information does not fit: {reason}")
            }
        }
    }
}

impl std::error::Error for Refusal {}

/// What one return address of a unit means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameRow {
    /// The return address.
    pub return_address: u64,
    /// Deopt location 0 when the record is a statepoint whose first deopt value is a constant
    /// (and the records at the address agree).
    pub site: Option<SiteId>,
    /// The site's live values, or why the record cannot be used.
    pub state: Result<SiteState<RecordValue>, Refusal>,
    /// Where the frame saved its callee-saved registers, or why its CFI does not fit.
    pub saves: Result<CalleeSaves, Refusal>,
    /// The frame's fixed size from the stack map's function record (`rsp` at the call is
    /// `CFA - 8 - size`); `None` when the function's frame size is not fixed.
    pub frame_size: Option<u64>,
}

/// A unit's rows, sorted by return address. Built once, when the unit is published, from its
/// `.llvm_stackmaps` and `.eh_frame`; immutable afterwards and shared by every reader.
#[derive(Clone, Default)]
pub struct FrameTable {
    has_stack_map: bool,
    has_eh_frame: bool,
    rows: Box<[FrameRow]>,
    /// The unit's call-frame information, for the save slots at return addresses that have no
    /// record (calls that cannot reach a hypercall, but that a walk passes through).
    cfi: Option<EhFrameSection<'static>>,
}

impl std::fmt::Debug for FrameTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameTable")
            .field("has_stack_map", &self.has_stack_map)
            .field("has_eh_frame", &self.has_eh_frame)
            .field("rows", &self.rows.len())
            .finish()
    }
}

/// LLVM's stack-map frame size for a frame whose size is not fixed.
const DYNAMIC_FRAME: u64 = u64::MAX;

impl FrameTable {
    /// Decodes every record of a unit and the CFI row at each record's return address, and
    /// keeps the CFI (`cfi`) for the return addresses that have no record.
    pub fn build(map: Option<&StackMap<'_>>, cfi: Option<EhFrameSection<'static>>) -> FrameTable {
        let table = Self::decode(map, cfi.as_ref());
        FrameTable { cfi, ..table }
    }

    fn decode(map: Option<&StackMap<'_>>, cfi: Option<&EhFrameSection<'_>>) -> FrameTable {
        let mut rows: Vec<FrameRow> = Vec::new();
        for record in map.into_iter().flat_map(|m| m.records_by_address()) {
            let return_address = record.return_address().0;
            if rows
                .last()
                .is_some_and(|r| r.return_address == return_address)
            {
                continue;
            }
            let locations: Vec<Location> = record.locations().collect();
            let agree = map
                .into_iter()
                .flat_map(|m| m.lookup_all(ReturnAddress(return_address)))
                .all(|other| other.locations().eq(locations.iter().copied()));
            let (site, mut state) = SiteState::decode(&locations);
            if !agree {
                state = Err(Refusal::DoubtfulRecord);
            }
            let saves = saves_in(cfi, return_address);
            let size = record.function().stack_size();
            rows.push(FrameRow {
                return_address,
                site: if agree { site } else { None },
                state,
                saves,
                frame_size: (size != DYNAMIC_FRAME).then_some(size),
            });
        }
        FrameTable {
            has_stack_map: map.is_some(),
            has_eh_frame: cfi.is_some(),
            rows: rows.into_boxed_slice(),
            cfi: None,
        }
    }

    /// Where the frame suspended at `return_address` saved the callee-saved registers: its
    /// row's, or for a return address without a record, from the unit's CFI.
    pub fn saves_at(&self, return_address: u64) -> Result<CalleeSaves, Refusal> {
        match self.row(return_address) {
            Ok(row) => row.saves.clone(),
            Err(_) => saves_in(self.cfi.as_ref(), return_address),
        }
    }

    /// A table of these rows (sorted here), with both sections present: for tests of code
    /// that reads tables.
    pub fn from_rows(mut rows: Vec<FrameRow>) -> FrameTable {
        rows.sort_by_key(|r| r.return_address);
        FrameTable {
            has_stack_map: true,
            has_eh_frame: true,
            rows: rows.into_boxed_slice(),
            cfi: None,
        }
    }

    /// The row at `return_address`, or why there is none.
    pub fn row(&self, return_address: u64) -> Result<&FrameRow, Refusal> {
        if !self.has_stack_map {
            return Err(Refusal::NoMetadata {
                section: STACKMAP_SECTION,
            });
        }
        self.rows
            .binary_search_by_key(&return_address, |r| r.return_address)
            .map(|i| &self.rows[i])
            .map_err(|_| Refusal::NoRecord)
    }

    /// Every row, by return address.
    pub fn rows(&self) -> &[FrameRow] {
        &self.rows
    }

    /// The rows whose return addresses lie in `[start, end)`.
    pub fn rows_in(&self, start: u64, end: u64) -> &[FrameRow] {
        let from = self.rows.partition_point(|r| r.return_address < start);
        let to = self.rows.partition_point(|r| r.return_address < end);
        &self.rows[from..to.max(from)]
    }

    /// Whether the unit has a `.llvm_stackmaps` section.
    pub fn has_stack_map(&self) -> bool {
        self.has_stack_map
    }

    /// Whether the unit has an `.eh_frame` section.
    pub fn has_eh_frame(&self) -> bool {
        self.has_eh_frame
    }
}

/// The save slots at `return_address` by `cfi`.
fn saves_in(cfi: Option<&EhFrameSection<'_>>, return_address: u64) -> Result<CalleeSaves, Refusal> {
    match cfi {
        None => Err(Refusal::NoMetadata {
            section: EH_FRAME_SECTION,
        }),
        Some(cfi) => cfi
            .frame_info_for_return_address(ReturnAddress(return_address))
            .map_err(|e| e.to_string())
            .and_then(|info| CalleeSaves::from_cfi(&info))
            .map_err(|reason| Refusal::UnsupportedFrame { reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::convention::tests::header;
    use uppercut_stackmaps::{CodeOffset, DwarfReg, PatchpointId, StackMapBuilder};

    fn spill(offset: i32) -> Location {
        Location::Indirect {
            reg: DwarfReg::RSP,
            offset,
            size: 8,
        }
    }

    #[test]
    fn rows_say_what_each_return_address_means() {
        let mut site = header(2);
        site.extend([Location::Constant { value: 4, size: 8 }, spill(0)]);
        let mut other = site.clone();
        other[4] = spill(8);
        let plain = [
            Location::Register {
                reg: DwarfReg::RBX,
                size: 8,
            },
            spill(0),
        ];
        let mut builder = StackMapBuilder::new();
        builder.function(0x1000, 32);
        builder.record(PatchpointId(0), CodeOffset(0x40), &site, &[]);
        builder.record(PatchpointId(0), CodeOffset(0x40), &site, &[]);
        builder.record(PatchpointId(0), CodeOffset(0x60), &site, &[]);
        builder.record(PatchpointId(0), CodeOffset(0x60), &other, &[]);
        builder.record(PatchpointId(0), CodeOffset(0x80), &plain, &[]);
        let bytes = builder.build();
        let map = StackMap::parse(&bytes).unwrap();
        let table = FrameTable::build(Some(&map), None);
        assert_eq!(table.rows().len(), 3);

        let agreed = table.row(0x1040).unwrap();
        assert_eq!(agreed.site, Some(SiteId(4)));
        assert_eq!(agreed.state.as_ref().unwrap().values.len(), 1);
        assert_eq!(agreed.frame_size, Some(32));
        assert_eq!(
            agreed.saves,
            Err(Refusal::NoMetadata {
                section: EH_FRAME_SECTION
            })
        );

        let doubtful = table.row(0x1060).unwrap();
        assert_eq!(doubtful.site, None);
        assert_eq!(doubtful.state, Err(Refusal::DoubtfulRecord));

        let not_a_site = table.row(0x1080).unwrap();
        assert_eq!(not_a_site.site, None);
        assert!(matches!(not_a_site.state, Err(Refusal::NotASite { .. })));

        assert_eq!(table.row(0x1050), Err(Refusal::NoRecord));
        assert_eq!(table.rows_in(0x1041, 0x1081).len(), 2);
        assert_eq!(
            FrameTable::build(None, None).row(0x1040),
            Err(Refusal::NoMetadata {
                section: STACKMAP_SECTION
            })
        );
    }
}
