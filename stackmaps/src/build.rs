//! Writing version-3 stack maps: synthetic sections for tests, benchmarks and fuzz seeds, laid
//! out exactly as LLVM's `StackMaps::serializeToStackMapSection` lays them out.

use crate::ids::{CodeOffset, ConstantIndex, PatchpointId};
use crate::parse::{LiveOut, Location};
use crate::raw;

/// Builds the bytes of a version-3 stack map.
///
/// ```
/// use uppercut_stackmaps::{CodeOffset, DwarfReg, Location, PatchpointId, ReturnAddress};
/// use uppercut_stackmaps::{StackMap, StackMapBuilder};
///
/// let mut builder = StackMapBuilder::new();
/// builder.function(0x1000, 16);
/// builder.record(
///     PatchpointId(7),
///     CodeOffset(0x20),
///     &[Location::Indirect { reg: DwarfReg::RSP, offset: 8, size: 8 }],
///     &[],
/// );
/// let bytes = builder.build();
/// let map = StackMap::parse(&bytes)?;
/// assert_eq!(map.lookup(ReturnAddress(0x1020)).map(|r| r.id()), Some(PatchpointId(7)));
/// # Ok::<(), uppercut_stackmaps::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct StackMapBuilder {
    functions: Vec<FunctionSpec>,
    constants: Vec<u64>,
}

#[derive(Clone, Debug)]
struct FunctionSpec {
    address: u64,
    stack_size: u64,
    records: Vec<RecordSpec>,
}

#[derive(Clone, Debug)]
struct RecordSpec {
    id: PatchpointId,
    offset: CodeOffset,
    locations: Vec<Location>,
    live_outs: Vec<LiveOut>,
}

impl StackMapBuilder {
    /// An empty map: no functions, constants or records.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a function; the records added next belong to it.
    pub fn function(&mut self, address: u64, stack_size: u64) -> &mut Self {
        self.functions.push(FunctionSpec {
            address,
            stack_size,
            records: Vec::new(),
        });
        self
    }

    /// Adds a large constant to the pool (reusing an equal one, as LLVM does) and returns its
    /// index, for a [`Location::ConstantIndex`].
    pub fn constant(&mut self, value: u64) -> ConstantIndex {
        let index = match self.constants.iter().position(|&c| c == value) {
            Some(index) => index,
            None => {
                self.constants.push(value);
                self.constants.len() - 1
            }
        };
        ConstantIndex(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Adds a record to the current function (starting a function at address 0 if there is
    /// none). For a `ConstantIndex` location only the index is written.
    pub fn record(
        &mut self,
        id: PatchpointId,
        offset: CodeOffset,
        locations: &[Location],
        live_outs: &[LiveOut],
    ) -> &mut Self {
        if self.functions.is_empty() {
            self.function(0, 0);
        }
        if let Some(function) = self.functions.last_mut() {
            function.records.push(RecordSpec {
                id,
                offset,
                locations: locations.to_vec(),
                live_outs: live_outs.to_vec(),
            });
        }
        self
    }

    /// The section bytes. Counts that do not fit their fields are truncated, as the fields are.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let num_records: usize = self.functions.iter().map(|f| f.records.len()).sum();
        out.push(raw::VERSION);
        out.push(0);
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.functions.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.constants.len() as u32).to_le_bytes());
        out.extend_from_slice(&(num_records as u32).to_le_bytes());
        for function in &self.functions {
            out.extend_from_slice(&function.address.to_le_bytes());
            out.extend_from_slice(&function.stack_size.to_le_bytes());
            out.extend_from_slice(&(function.records.len() as u64).to_le_bytes());
        }
        for constant in &self.constants {
            out.extend_from_slice(&constant.to_le_bytes());
        }
        for record in self.functions.iter().flat_map(|f| &f.records) {
            write_record(&mut out, record);
        }
        out
    }
}

fn write_record(out: &mut Vec<u8>, record: &RecordSpec) {
    out.extend_from_slice(&record.id.0.to_le_bytes());
    out.extend_from_slice(&record.offset.0.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(record.locations.len() as u16).to_le_bytes());
    for location in &record.locations {
        let (kind, reg, value) = match *location {
            Location::Register { reg, .. } => (raw::kind::REGISTER, reg.0, 0),
            Location::Direct { reg, offset, .. } => (raw::kind::DIRECT, reg.0, offset),
            Location::Indirect { reg, offset, .. } => (raw::kind::INDIRECT, reg.0, offset),
            Location::Constant { value, .. } => (raw::kind::CONSTANT, 0, value),
            Location::ConstantIndex { index, .. } => (raw::kind::CONSTANT_INDEX, 0, index.0 as i32),
        };
        out.push(kind);
        out.push(0);
        out.extend_from_slice(&location.size().to_le_bytes());
        out.extend_from_slice(&reg.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    pad(out);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(record.live_outs.len() as u16).to_le_bytes());
    for live_out in &record.live_outs {
        out.extend_from_slice(&live_out.reg.0.to_le_bytes());
        out.push(0);
        out.push(live_out.size);
    }
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while out.len() % raw::ALIGN != 0 {
        out.push(0);
    }
}
